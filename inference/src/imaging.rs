//! The image half of the pipeline, as pure functions: bytes in, tensor out; mask in,
//! bytes out. Nothing here knows about HTTP, queues or ONNX Runtime, so every step is
//! unit-tested on its own.

use std::io::Cursor;

use crate::Error;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::png::FilterType as PngFilter;
use image::codecs::png::{CompressionType, PngEncoder};
use image::codecs::webp::WebPEncoder;
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

/// Decodes JPEG, PNG or WebP with its EXIF orientation applied, refusing before any
/// pixel buffer is allocated an image whose header declares more than `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbaImage, Error> {
    if bytes.is_empty() {
        return Err(Error::EmptyBody);
    }
    let format = image::guess_format(bytes).map_err(|_| Error::NotAnImage)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(Error::UnsupportedImageFormat(format.extensions_str()[0]));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::CorruptImage("the JPEG is truncated: no end-of-image marker after its last scan".into()));
    }
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::TooManyPixels { width, height, pixels, limit: max_pixels });
    }
    // The pixel check above is the user-facing limit; this one also bounds what a
    // decoder may allocate for itself (16 bytes a pixel covers 16-bit RGBA).
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    decoder.set_limits(limits).map_err(corrupt)?;
    // A broken EXIF block is no reason to refuse an image that decodes.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgba8())
}

/// The JPEG decoder fills a truncated scan with grey rather than failing, so check the
/// stream itself: the end-of-image marker must follow the last start-of-scan. Neither
/// marker can occur inside entropy-coded data, where 0xFF is always escaped.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|pair| pair == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

fn corrupt(error: image::ImageError) -> Error {
    Error::CorruptImage(error.to_string())
}

/// Scales `image` down so that its longer side is at most `max_side`; never up.
pub fn fit_within(image: RgbaImage, max_side: u32) -> RgbaImage {
    let (width, height) = image.dimensions();
    let longer = width.max(height);
    if longer <= max_side || max_side == 0 {
        return image;
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let new_width = ((f64::from(width) * scale).round() as u32).max(1);
    let new_height = ((f64::from(height) * scale).round() as u32).max(1);
    let mut resized = RgbaImage::new(new_width, new_height);
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
    result.map_err(|e| Error::Internal(format!("encoding the result: {e}")))?;
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
    use image::{ImageBuffer, Rgba};

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
        assert_eq!(decode(&png_of(&image), 1_000).unwrap().dimensions(), (7, 5));
        let rgb = DynamicImage::ImageRgba8(image.clone()).into_rgb8();
        assert_eq!(decode(&jpeg_of(&rgb), 1_000).unwrap().dimensions(), (7, 5));
        let webp = encode(&DynamicImage::ImageRgba8(image), OutputFormat::Webp).unwrap();
        let decoded = decode(&webp, 1_000).unwrap();
        assert_eq!(decoded.get_pixel(3, 3), &Rgba([10, 200, 30, 255]));
    }

    #[test]
    fn applies_exif_orientation() {
        // 4 wide, 2 high, left half red; rotated 90° clockwise it is 2 wide, 4 high,
        // with the red half on top.
        let image: RgbImage =
            ImageBuffer::from_fn(4, 2, |x, _| if x < 2 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let decoded = decode(&jpeg_rotated_90(&image), 1_000).unwrap();
        assert_eq!(decoded.dimensions(), (2, 4));
        assert!(decoded.get_pixel(0, 0)[0] > 200, "top should be red: {:?}", decoded.get_pixel(0, 0));
        assert!(decoded.get_pixel(0, 3)[2] > 200, "bottom should be blue: {:?}", decoded.get_pixel(0, 3));
    }

    #[test]
    fn refuses_what_is_not_a_supported_image() {
        assert!(matches!(decode(b"", 10), Err(Error::EmptyBody)));
        assert!(matches!(decode(b"hello, world", 10), Err(Error::NotAnImage)));
        assert!(matches!(decode(b"GIF89a\x01\0\x01\0\0\0\0;", 10), Err(Error::UnsupportedImageFormat("gif"))));
        let jpeg = jpeg_of(&RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3])));
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(decode(truncated, 1_000_000), Err(Error::CorruptImage(_))));
    }

    #[test]
    fn fits_within_keeps_aspect_and_never_upscales() {
        let wide = RgbaImage::new(4000, 1000);
        assert_eq!(fit_within(wide, 2048).dimensions(), (2048, 512));
        let tall = RgbaImage::new(300, 900);
        assert_eq!(fit_within(tall, 450).dimensions(), (150, 450));
        let small = RgbaImage::new(100, 50);
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
