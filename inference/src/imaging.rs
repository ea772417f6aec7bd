//! The image half of the pipeline, as pure functions: bytes in, tensor out; mask in,
//! bytes out. Nothing here knows about HTTP, queues or ONNX Runtime, so every step is
//! unit-tested on its own.

use std::io::Cursor;

use crate::Error;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::png::FilterType as PngFilter;
use image::codecs::png::{CompressionType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::metadata::Orientation;
use image::{
    DynamicImage, ExtendedColorType, GrayImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits, RgbImage,
    RgbaImage,
};

/// How the model wants its input: square side and per-channel normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    /// Subtracted from each channel after scaling it to [0, 1].
    pub mean: [f32; 3],
    /// Divides each channel after the mean is subtracted.
    pub std: [f32; 3],
}

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// RGBA PNG, or RGB PNG when composited on a background colour.
    Png,
    /// Lossless WebP, RGBA or RGB like `Png`.
    Webp,
    /// The mask alone as an 8-bit greyscale PNG.
    Mask,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png | OutputFormat::Mask => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }
}

/// The longest side accepted, whatever the pixel count: resizing needs memory in
/// proportion to the longer side (its filter tables), so a 40 000 000 × 1 image would
/// cost gigabytes though it has few pixels. JPEG cannot exceed it anyway.
pub const MAX_SIDE: u32 = 65_535;

/// What a PNG decoder may allocate for itself before and beside the pixels: row
/// buffers and metadata such as an ICC profile, which is compressed and could
/// otherwise inflate to hundreds of megabytes from a few kilobytes.
const PNG_DECODER_BUDGET: u64 = 16 * 1024 * 1024;

/// A decoded image, not yet turned upright.
pub struct Decoded {
    image: DynamicImage,
    orientation: Orientation,
}

/// Decodes JPEG, PNG or WebP, refusing before any pixel buffer is allocated an image
/// whose header declares more than `max_pixels` or a side over [`MAX_SIDE`]. Data
/// after a JPEG's end-of-image marker (Motion Photos, appended thumbnails) is ignored.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded, Error> {
    if bytes.is_empty() {
        return Err(Error::EmptyBody);
    }
    let format = image::guess_format(bytes).map_err(|_| Error::NotAnImage)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(Error::UnsupportedImageFormat(format.extensions_str()[0]));
    }
    let bytes = match format {
        ImageFormat::Jpeg => {
            &bytes[..jpeg_length(bytes).ok_or_else(|| {
                Error::CorruptImage("the JPEG is truncated: no end-of-image marker after its last scan".into())
            })?]
        }
        _ => bytes,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_budget = Limits::default();
    decoder_budget.max_alloc = Some(PNG_DECODER_BUDGET);
    reader.limits(decoder_budget);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::TooManyPixels { width, height, pixels, limit: max_pixels });
    }
    if width.max(height) > MAX_SIDE {
        return Err(Error::SideTooLong { width, height, limit: MAX_SIDE });
    }
    // The pixel check above is the user-facing limit; this one also bounds what a
    // decoder may allocate for itself (16 bytes a pixel covers 16-bit RGBA).
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    decoder.set_limits(limits).map_err(decode_error)?;
    // A broken EXIF block is no reason to refuse an image that decodes.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    Ok(Decoded { image, orientation })
}

impl Decoded {
    /// The image as RGBA, its longer side at most `max_side`, turned upright. It is
    /// scaled first, in its own pixel type, so that no other full-size copy is made.
    pub fn into_upright_rgba(self, max_side: u32) -> RgbaImage {
        let mut upright = fit_within(self.image, max_side);
        upright.apply_orientation(self.orientation);
        upright.into_rgba8()
    }
}

/// The length of a JPEG up to and including its end-of-image marker, found by walking
/// its segments (entropy-coded data cannot hold a marker: 0xFF is escaped there);
/// `None` when the stream ends first. The decoder fills a truncated scan with grey
/// rather than failing, so this is also the truncation check.
fn jpeg_length(bytes: &[u8]) -> Option<usize> {
    let mut at = 2; // after SOI
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at + 1)? == 0xFF {
            at += 1; // fill bytes
        }
        let marker = bytes[at + 1];
        match marker {
            0xD9 => return Some(at + 2),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let length = usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]));
                at += 2 + length;
                if marker == 0xDA {
                    at = next_marker_after_scan(bytes, at)?;
                }
            }
        }
    }
}

/// The position of the first marker after entropy-coded data starting at `from`,
/// skipping stuffed bytes (FF 00) and restart markers.
fn next_marker_after_scan(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let offset = bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        at += offset;
        match *bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

fn decode_error(error: image::ImageError) -> Error {
    match error {
        image::ImageError::Limits(limit) => Error::DecoderLimit(limit.to_string()),
        other => Error::CorruptImage(other.to_string()),
    }
}

/// Scales `image` down so that its longer side is at most `max_side`; never up.
pub fn fit_within(image: DynamicImage, max_side: u32) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    let longer = width.max(height);
    if longer <= max_side || max_side == 0 {
        return image;
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let new_width = ((f64::from(width) * scale).round() as u32).max(1);
    let new_height = ((f64::from(height) * scale).round() as u32).max(1);
    let mut resized = DynamicImage::new(new_width, new_height, image.color());
    resize(&image, &mut resized, FilterType::Lanczos3);
    resized
}

/// The model input for one image: resized to the model's side (aspect ratio is not
/// kept, as ISNet-class models were trained), normalised, in CHW order.
pub fn to_model_input(image: &RgbaImage, preprocess: &Preprocess) -> Vec<f32> {
    let mut resized = RgbaImage::new(preprocess.width, preprocess.height);
    resize(image, &mut resized, FilterType::Bilinear);

    let plane = (preprocess.width * preprocess.height) as usize;
    let mut tensor = vec![0.0f32; 3 * plane];
    let (red, rest) = tensor.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * preprocess.std[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| preprocess.mean[c] / preprocess.std[c]);
    for (i, pixel) in resized.pixels().enumerate() {
        red[i] = f32::from(pixel[0]) * scale[0] - offset[0];
        green[i] = f32::from(pixel[1]) * scale[1] - offset[1];
        blue[i] = f32::from(pixel[2]) * scale[2] - offset[2];
    }
    tensor
}

/// The model's mask (values in [0, 1], `mask_width`×`mask_height`) as an 8-bit image
/// of the output's size.
pub fn mask_to_image(mask: &[f32], mask_width: u32, mask_height: u32, width: u32, height: u32) -> GrayImage {
    let quantised: Vec<u8> = mask.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let small = GrayImage::from_raw(mask_width, mask_height, quantised)
        .expect("the model returned mask_width × mask_height values");
    if (mask_width, mask_height) == (width, height) {
        return small;
    }
    let mut full = GrayImage::new(width, height);
    resize(&small, &mut full, FilterType::Bilinear);
    full
}

/// The cut-out: the image with the mask as its alpha (times any alpha it had), or, with
/// a background colour, the image composited onto that colour.
pub fn compose(image: RgbaImage, mask: &GrayImage, background: Option<[u8; 3]>) -> DynamicImage {
    debug_assert_eq!(image.dimensions(), mask.dimensions());
    match background {
        None => {
            let mut cut_out = image;
            for (pixel, alpha) in cut_out.pixels_mut().zip(mask.pixels()) {
                pixel[3] = ((u16::from(pixel[3]) * u16::from(alpha[0]) + 127) / 255) as u8;
            }
            DynamicImage::ImageRgba8(cut_out)
        }
        Some(colour) => {
            let (width, height) = image.dimensions();
            let mut flat = RgbImage::new(width, height);
            for ((out, pixel), alpha) in flat.pixels_mut().zip(image.pixels()).zip(mask.pixels()) {
                let a = u32::from(pixel[3]) * u32::from(alpha[0]); // 0..=255²
                for c in 0..3 {
                    let blended = u32::from(pixel[c]) * a + u32::from(colour[c]) * (255 * 255 - a);
                    out[c] = ((blended + 255 * 255 / 2) / (255 * 255)) as u8;
                }
            }
            DynamicImage::ImageRgb8(flat)
        }
    }
}

/// Encodes the result: PNG with fast compression (the pod's CPU is better spent on the
/// next image than on a few percent of bytes), or lossless WebP.
pub fn encode(image: &DynamicImage, format: OutputFormat) -> Result<Vec<u8>, Error> {
    let colour: ExtendedColorType = image.color().into();
    let mut bytes = Vec::new();
    let result = match format {
        OutputFormat::Png | OutputFormat::Mask => PngEncoder::new_with_quality(
            &mut bytes,
            CompressionType::Fast,
            PngFilter::Adaptive,
        )
        .write_image(image.as_bytes(), image.width(), image.height(), colour),
        OutputFormat::Webp => {
            WebPEncoder::new_lossless(&mut bytes).write_image(image.as_bytes(), image.width(), image.height(), colour)
        }
    };
    result.map_err(|e| Error::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Parses a `bg_color` value: `RRGGBB`, with or without a leading `#`.
pub fn parse_hex_colour(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#').unwrap_or(text);
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

fn resize<S, D>(source: &S, destination: &mut D, filter: FilterType)
where
    S: fast_image_resize::IntoImageView,
    D: fast_image_resize::IntoImageViewMut,
{
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    Resizer::new()
        .resize(source, destination, &options)
        .expect("source and destination are image buffers of the same pixel type");
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, ImageBuffer, Rgba};

    fn upright(bytes: &[u8], max_pixels: u64) -> Result<RgbaImage, Error> {
        decode(bytes, max_pixels).map(|decoded| decoded.into_upright_rgba(u32::MAX))
    }

    fn png_of(image: &RgbaImage) -> Vec<u8> {
        encode(&DynamicImage::ImageRgba8(image.clone()), OutputFormat::Png).unwrap()
    }

    fn jpeg_of(image: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .write_image(image.as_raw(), image.width(), image.height(), ExtendedColorType::Rgb8)
            .unwrap();
        bytes
    }

    /// A JPEG with an EXIF block whose orientation tag says "rotate 90° clockwise".
    fn jpeg_rotated_90(image: &RgbImage) -> Vec<u8> {
        let jpeg = jpeg_of(image);
        let tiff: Vec<u8> = [
            b"MM\0\x2a\0\0\0\x08".as_slice(),            // big-endian TIFF header, first IFD at 8
            &[0, 1],                                     // one entry
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], // Orientation, SHORT, 1, value 6
            &[0, 0, 0, 0],                               // no next IFD
        ]
        .concat();
        let mut app1 = vec![0xFF, 0xE1];
        let length = (2 + 6 + tiff.len()) as u16;
        app1.extend_from_slice(&length.to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        [&jpeg[..2], &app1, &jpeg[2..]].concat()
    }

    #[test]
    fn decodes_png_jpeg_and_webp() {
        let image = RgbaImage::from_pixel(7, 5, Rgba([10, 200, 30, 255]));
        assert_eq!(upright(&png_of(&image), 1_000).unwrap().dimensions(), (7, 5));
        let rgb = DynamicImage::ImageRgba8(image.clone()).into_rgb8();
        assert_eq!(upright(&jpeg_of(&rgb), 1_000).unwrap().dimensions(), (7, 5));
        let webp = encode(&DynamicImage::ImageRgba8(image), OutputFormat::Webp).unwrap();
        let decoded = upright(&webp, 1_000).unwrap();
        assert_eq!(decoded.get_pixel(3, 3), &Rgba([10, 200, 30, 255]));
    }

    #[test]
    fn applies_exif_orientation() {
        // 4 wide, 2 high, left half red; rotated 90° clockwise it is 2 wide, 4 high,
        // with the red half on top.
        let image: RgbImage =
            ImageBuffer::from_fn(4, 2, |x, _| if x < 2 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let decoded = upright(&jpeg_rotated_90(&image), 1_000).unwrap();
        assert_eq!(decoded.dimensions(), (2, 4));
        assert!(decoded.get_pixel(0, 0)[0] > 200, "top should be red: {:?}", decoded.get_pixel(0, 0));
        assert!(decoded.get_pixel(0, 3)[2] > 200, "bottom should be blue: {:?}", decoded.get_pixel(0, 3));
    }

    #[test]
    fn refuses_what_is_not_a_supported_image() {
        assert!(matches!(upright(b"", 10), Err(Error::EmptyBody)));
        assert!(matches!(upright(b"hello, world", 10), Err(Error::NotAnImage)));
        assert!(matches!(upright(b"GIF89a\x01\0\x01\0\0\0\0;", 10), Err(Error::UnsupportedImageFormat("gif"))));
        let jpeg = jpeg_of(&RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3])));
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(upright(truncated, 1_000_000), Err(Error::CorruptImage(_))));
    }

    #[test]
    fn data_after_the_end_of_a_jpeg_is_ignored() {
        let jpeg = jpeg_of(&RgbImage::from_pixel(16, 8, image::Rgb([9, 99, 199])));
        // A trailer as a Motion Photo has one: another stream, markers and all.
        let trailer = [b"\0\0\0\x18ftypmp42".as_slice(), &[0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD8], &jpeg[..40]].concat();
        let with_trailer = [jpeg.as_slice(), &trailer].concat();
        assert_eq!(jpeg_length(&with_trailer), Some(jpeg.len()));
        assert_eq!(upright(&with_trailer, 1_000).unwrap().dimensions(), (16, 8));
    }

    #[test]
    fn an_image_with_a_side_past_the_limit_is_refused() {
        let long = GrayImage::new(MAX_SIDE + 1, 1);
        let mut png = Vec::new();
        DynamicImage::ImageLuma8(long).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        assert!(matches!(upright(&png, u64::MAX), Err(Error::SideTooLong { width, .. }) if width == MAX_SIDE + 1));
    }

    #[test]
    fn fits_within_keeps_aspect_and_never_upscales() {
        let wide = DynamicImage::ImageRgba8(RgbaImage::new(4000, 1000));
        assert_eq!(fit_within(wide, 2048).dimensions(), (2048, 512));
        let tall = DynamicImage::ImageRgb8(RgbImage::new(300, 900));
        assert_eq!(fit_within(tall, 450).dimensions(), (150, 450));
        let small = DynamicImage::ImageLuma8(GrayImage::new(100, 50));
        assert_eq!(fit_within(small, 2048).dimensions(), (100, 50));
    }

    #[test]
    fn model_input_is_normalised_chw() {
        let image = RgbaImage::from_pixel(3, 3, Rgba([255, 0, 51, 255]));
        let preprocess = Preprocess { width: 2, height: 2, mean: [0.5, 0.5, 0.0], std: [1.0, 1.0, 0.5] };
        let tensor = to_model_input(&image, &preprocess);
        assert_eq!(tensor.len(), 3 * 2 * 2);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        assert!(tensor[..4].iter().all(|&v| close(v, 0.5)), "red plane {:?}", &tensor[..4]);
        assert!(tensor[4..8].iter().all(|&v| close(v, -0.5)), "green plane {:?}", &tensor[4..8]);
        assert!(tensor[8..].iter().all(|&v| close(v, 0.4)), "blue plane {:?}", &tensor[8..]);
    }

    #[test]
    fn mask_is_scaled_to_the_output() {
        let mask = [0.0, 1.0, 0.0, 1.0];
        let image = mask_to_image(&mask, 2, 2, 8, 8);
        assert_eq!(image.dimensions(), (8, 8));
        assert!(image.get_pixel(0, 4)[0] < 64);
        assert!(image.get_pixel(7, 4)[0] > 192);
        // values outside [0, 1] are clamped, not wrapped
        let clamped = mask_to_image(&[-3.0, 7.0], 2, 1, 2, 1);
        assert_eq!(clamped.as_raw(), &vec![0, 255]);
    }

    #[test]
    fn compose_sets_alpha_or_blends_onto_a_background() {
        let image = RgbaImage::from_pixel(2, 1, Rgba([200, 100, 0, 255]));
        let mask = GrayImage::from_raw(2, 1, vec![255, 0]).unwrap();
        let DynamicImage::ImageRgba8(cut) = compose(image.clone(), &mask, None) else { panic!("expected RGBA") };
        assert_eq!(cut.get_pixel(0, 0), &Rgba([200, 100, 0, 255]));
        assert_eq!(cut.get_pixel(1, 0)[3], 0);

        let DynamicImage::ImageRgb8(flat) = compose(image, &mask, Some([0, 0, 255])) else { panic!("expected RGB") };
        assert_eq!(flat.get_pixel(0, 0), &image::Rgb([200, 100, 0]));
        assert_eq!(flat.get_pixel(1, 0), &image::Rgb([0, 0, 255]));
    }

    #[test]
    fn existing_transparency_is_kept() {
        let image = RgbaImage::from_pixel(1, 1, Rgba([9, 9, 9, 128]));
        let mask = GrayImage::from_raw(1, 1, vec![255]).unwrap();
        let DynamicImage::ImageRgba8(cut) = compose(image, &mask, None) else { panic!() };
        assert_eq!(cut.get_pixel(0, 0)[3], 128);
    }

    #[test]
    fn hex_colours() {
        assert_eq!(parse_hex_colour("ff8000"), Some([255, 128, 0]));
        assert_eq!(parse_hex_colour("#00FF7f"), Some([0, 255, 127]));
        for bad in ["", "fff", "gg0000", "#12345", "1234567", "+12345"] {
            assert_eq!(parse_hex_colour(bad), None, "{bad}");
        }
    }
}
