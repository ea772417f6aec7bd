//! Bytes to pixels: format check, the limits, JPEG shrink-on-load, and the decoded
//! image turned into what the rest of the pipeline works on ([`Upright`]).

use std::io::Cursor;

use fast_image_resize::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::{Upright, jpeg, output_size, resize, webp};
use crate::Error;

/// The longest side accepted, whatever the pixel count: resizing needs memory in
/// proportion to the longer side (its filter tables), so a 40 000 000 × 1 image would
/// cost gigabytes though it has few pixels. JPEG cannot exceed it anyway.
pub const MAX_SIDE: u32 = 65_535;

/// What a PNG decoder may allocate for itself before and beside the pixels: row
/// buffers and metadata such as an ICC profile, which is compressed and could
/// otherwise inflate to hundreds of megabytes from a few kilobytes.
const PNG_DECODER_BUDGET: u64 = 16 * 1024 * 1024;

/// Bytes a decoder may allocate per pixel of `max_pixels`: 16 covers 16-bit RGBA.
const DECODER_BYTES_PER_PIXEL: u64 = 16;

/// Bytes a WebP's prefix codes may take per pixel of `max_pixels`: what the decoder's
/// own buffers leave (a real file's codes take a few hundred kilobytes in all).
pub const WEBP_CODES_BYTES_PER_PIXEL: u64 = DECODER_BYTES_PER_PIXEL - webp::PIXEL_BYTES;

/// A decoded image, not yet at its output size nor upright.
#[derive(Debug)]
pub struct Decoded {
    image: DynamicImage,
    orientation: Orientation,
    /// The output size, before orientation: computed from the size the file declares,
    /// so a shrunk decode yields exactly what a full one would.
    output: (u32, u32),
}

/// Decodes JPEG, PNG or WebP for an output whose longer side is at most `max_side`,
/// refusing before any pixel buffer is allocated an image whose header declares more
/// than `max_pixels` or a side over [`MAX_SIDE`]. A JPEG larger than the output is
/// decoded at the smallest DCT scale that still covers it ([`jpeg::shrink_for`]).
/// Data after a JPEG's end-of-image marker (Motion Photos, appended thumbnails) is
/// ignored.
pub fn decode(bytes: &[u8], max_pixels: u64, max_side: u32) -> Result<Decoded, Error> {
    if bytes.is_empty() {
        return Err(Error::EmptyBody);
    }
    let format = image::guess_format(bytes).map_err(|_| Error::NotAnImage)?;
    match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, max_pixels, max_side),
        ImageFormat::Png => decode_in_full(bytes, format, max_pixels, max_side),
        ImageFormat::WebP => decode_webp(bytes, max_pixels, max_side),
        _ => Err(Error::UnsupportedImageFormat(format.extensions_str()[0])),
    }
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64, max_side: u32) -> Result<Decoded, Error> {
    let extent = jpeg::jpeg_extent(bytes).ok_or_else(|| {
        Error::CorruptImage(
            "the JPEG is truncated or malformed: its segments do not lead to an end-of-image marker".into(),
        )
    })?;
    let jpeg_bytes = &bytes[..extent.length];
    let header = jpeg::read_header(jpeg_bytes)?;
    check_size(header.width, header.height, max_pixels)?;
    check_scans(extent.scans, header.width, header.height, max_pixels)?;
    let output = output_size(header.width, header.height, max_side);
    let shrink = jpeg::shrink_for(header.width, header.height, output);
    if shrink > 1 && header.shrinkable {
        let max_alloc = usize::try_from(max_pixels.saturating_mul(DECODER_BYTES_PER_PIXEL)).unwrap_or(usize::MAX);
        if let Some((image, orientation)) = header.decode_shrunk(shrink, max_alloc)? {
            return Ok(Decoded { image, orientation, output });
        }
    }
    // In full, zune-jpeg (through `image`) is the faster decoder; see the pipeline bench.
    decode_in_full(jpeg_bytes, ImageFormat::Jpeg, max_pixels, max_side)
}

fn decode_in_full(bytes: &[u8], format: ImageFormat, max_pixels: u64, max_side: u32) -> Result<Decoded, Error> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_budget = Limits::default();
    decoder_budget.max_alloc = Some(PNG_DECODER_BUDGET);
    reader.limits(decoder_budget);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    // The pixel check above is the user-facing limit; this one also bounds what a
    // decoder may allocate for itself.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(DECODER_BYTES_PER_PIXEL));
    decoder.set_limits(limits).map_err(decode_error)?;
    // A broken EXIF block is no reason to refuse an image that decodes.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    Ok(Decoded { image, orientation, output: output_size(width, height, max_side) })
}

/// Decodes a WebP through its own decoder, which `image` gives no memory limit: a
/// lossless one's prefix codes may take what a worker's budget leaves beside the pixels.
fn decode_webp(bytes: &[u8], max_pixels: u64, max_side: u32) -> Result<Decoded, Error> {
    webp::check_frames(bytes, max_pixels)?;
    let codes_budget = max_pixels.saturating_mul(WEBP_CODES_BYTES_PER_PIXEL);
    let mut decoder = webp::open(bytes, codes_budget)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let orientation = webp::orientation(&mut decoder);
    let image = webp::read_image(decoder, codes_budget)?;
    Ok(Decoded { image, orientation, output: output_size(width, height, max_side) })
}

/// The most scans a JPEG may have: zune-jpeg's own bound, ten times what encoders
/// write (libjpeg's progressive script has 10 for colour, 6 for grey).
const MAX_JPEG_SCANS: u32 = 100;

/// The most pixels a JPEG's scans may walk together, as a multiple of the largest image
/// taken: each scan of a progressive JPEG walks the whole image again, however few
/// bytes it holds, so that a file of a few kilobytes with thousands of empty scans would
/// hold a CPU worker for hours. At the default 50 MP, 16 scans (about 1.5 s); a 12 MP
/// photo may have 66.
const MAX_SCANNED_IMAGES: u64 = 16;

/// Refuses a JPEG whose scans would take far more decoding than its size.
fn check_scans(scans: u32, width: u32, height: u32, max_pixels: u64) -> Result<(), Error> {
    let scanned = u64::from(scans) * u64::from(width) * u64::from(height);
    if scans > MAX_JPEG_SCANS || scanned > MAX_SCANNED_IMAGES.saturating_mul(max_pixels) {
        return Err(Error::DecoderLimit(format!(
            "the JPEG has {scans} scans of {width}x{height} pixels: at most {MAX_JPEG_SCANS} scans, and \
             {MAX_SCANNED_IMAGES} of the largest image taken ({max_pixels} pixels), are decoded"
        )));
    }
    Ok(())
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), Error> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::TooManyPixels { width, height, pixels, limit: max_pixels });
    }
    if width.max(height) > MAX_SIDE {
        return Err(Error::SideTooLong { width, height, limit: MAX_SIDE });
    }
    Ok(())
}

fn decode_error(error: image::ImageError) -> Error {
    match error {
        image::ImageError::Limits(limit) => Error::DecoderLimit(limit.to_string()),
        other => Error::CorruptImage(other.to_string()),
    }
}

impl Decoded {
    /// The size the decoder produced (smaller than the file's when shrunk on load).
    pub fn decoded_size(&self) -> (u32, u32) {
        (self.image.width(), self.image.height())
    }

    /// The image at its output size, turned upright, as 8-bit RGB or RGBA. It is
    /// scaled first, in its own pixel type, so that rotation and conversion touch
    /// output-sized pixels only.
    pub fn into_upright(self) -> Upright {
        let Decoded { image, orientation, output } = self;
        let mut scaled = scale_to(to_8_bit(image), output);
        scaled.apply_orientation(orientation);
        match scaled {
            DynamicImage::ImageRgb8(rgb) => Upright::Rgb(rgb),
            DynamicImage::ImageRgba8(rgba) => Upright::Rgba(rgba),
            other if other.color().has_alpha() => Upright::Rgba(other.into_rgba8()),
            other => Upright::Rgb(other.into_rgb8()),
        }
    }
}

/// `image` in 8 bits a channel, as the output is, before it is scaled: the scaler's
/// premultiplied copy of a 16-bit RGBA image takes another 8 bytes a pixel, and its
/// intermediate rows twice what 8-bit ones do, so that one took 25 bytes a pixel at
/// the peak against the 16 that the memory bound counts (`decode_memory`), and 13 once
/// converted first.
fn to_8_bit(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(image.into_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(image.into_luma_alpha8()),
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgb32F(_) => DynamicImage::ImageRgb8(image.into_rgb8()),
        DynamicImage::ImageRgba16(_) | DynamicImage::ImageRgba32F(_) => DynamicImage::ImageRgba8(image.into_rgba8()),
        other => other,
    }
}

/// `image` scaled down to `size` (Lanczos3), or as it is when already that size.
fn scale_to(image: DynamicImage, size: (u32, u32)) -> DynamicImage {
    if (image.width(), image.height()) == size {
        return image;
    }
    // Premultiplying alpha costs a full-size copy; an opaque image does not need it.
    let use_alpha = match &image {
        DynamicImage::ImageRgba8(rgba) => rgba.pixels().any(|pixel| pixel[3] != u8::MAX),
        other => other.color().has_alpha(),
    };
    let mut resized = DynamicImage::new(size.0, size.1, image.color());
    resize(&image, &mut resized, FilterType::Lanczos3, use_alpha);
    resized
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{OutputFormat, compose, encode, mask_to_image, to_model_input};
    use image::{GrayImage, ImageBuffer, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

    fn upright(bytes: &[u8], max_pixels: u64) -> Result<Upright, Error> {
        decode(bytes, max_pixels, u32::MAX).map(Decoded::into_upright)
    }

    fn rgba(image: Upright) -> RgbaImage {
        match image {
            Upright::Rgb(rgb) => DynamicImage::ImageRgb8(rgb).into_rgba8(),
            Upright::Rgba(rgba) => rgba,
        }
    }

    fn jpeg_of(image: &RgbImage, progressive: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 95);
        encoder.set_progressive(progressive);
        let (width, height) = (image.width() as u16, image.height() as u16);
        encoder.encode(image.as_raw(), width, height, jpeg_encoder::ColorType::Rgb).unwrap();
        bytes
    }

    /// `jpeg` with an EXIF block whose orientation tag says "rotate 90° clockwise".
    fn rotated_90(jpeg: &[u8]) -> Vec<u8> {
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

    /// A greyscale progressive JPEG of `side`×`side` whose first scan is followed by
    /// `empty_scans` AC scans of no data: a few bytes each, a walk of the whole image each.
    fn scan_bomb(side: u16, empty_scans: usize) -> Vec<u8> {
        let segment =
            |marker: u8, body: &[u8]| [&[0xFF, marker][..], &((body.len() + 2) as u16).to_be_bytes(), body].concat();
        let size = [side.to_be_bytes(), side.to_be_bytes()].concat();
        let huffman = [&[0x00, 1][..], &[0; 15], &[0], &[0x10, 1], &[0; 15], &[0xE0]].concat();
        [
            vec![0xFF, 0xD8],
            segment(0xDB, &[&[0][..], &[1; 64]].concat()),
            segment(0xC2, &[&[8][..], &size, &[1, 1, 0x11, 0]].concat()),
            segment(0xC4, &huffman),
            segment(0xDA, &[1, 1, 0, 0, 0, 0]),
            segment(0xDA, &[1, 1, 0, 1, 63, 1]).repeat(empty_scans),
            vec![0xFF, 0xD9],
        ]
        .concat()
    }

    /// [`scan_bomb`]'s scans hidden from a walk by segment lengths: behind `FF 00` and a
    /// length that spans them, then a comment, where a decoder looking for the next
    /// marker byte by byte finds every one.
    fn hidden_scan_bomb(side: u16, empty_scans: usize) -> Vec<u8> {
        let bomb = scan_bomb(side, empty_scans);
        let first_scan = bomb.windows(2).position(|pair| pair == [0xFF, 0xDA]).unwrap();
        let scans = &bomb[first_scan..bomb.len() - 2];
        let hidden = [&[0xFF, 0x00][..], &((scans.len() + 2) as u16).to_be_bytes(), scans].concat();
        [&bomb[..first_scan], &hidden, &[0xFF, 0xFE, 0x00, 0x02, 0xFF, 0xD9]].concat()
    }

    #[test]
    fn scans_hidden_from_a_walk_by_segment_lengths_are_found() {
        let hidden = hidden_scan_bomb(7000, 2000);
        assert!(hidden.len() < 25_000);
        assert_eq!(jpeg::jpeg_extent(&hidden), None, "no segment begins with FF 00");
        let started = std::time::Instant::now();
        let refused = decode(&hidden, 50_000_000, 1024).map(|_| ());
        assert!(matches!(&refused, Err(Error::CorruptImage(_))), "{refused:?}");
        // Decoded, it would take minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "refused before decoding");
        // Start-of-scan pairs inside a segment a walk skips count as scans too.
        let mut in_a_comment = scan_bomb(64, 0);
        let comment = [&[0xFF, 0xFE][..], &(2u16 + 2 * 200).to_be_bytes(), &[0xFF, 0xDA].repeat(200)].concat();
        in_a_comment.splice(2..2, comment);
        assert_eq!(jpeg::jpeg_extent(&in_a_comment).map(|extent| extent.scans), Some(201));
    }

    #[test]
    fn a_jpeg_whose_scans_would_take_far_more_decoding_than_its_size_is_refused_unread() {
        // 2,000 scans of 49 MP in 20 kB: minutes of decoding, were it decoded.
        let bomb = scan_bomb(7000, 2000);
        assert!(bomb.len() < 25_000);
        let started = std::time::Instant::now();
        let refused = decode(&bomb, 50_000_000, 1024).map(|_| ());
        assert!(matches!(&refused, Err(Error::DecoderLimit(message)) if message.contains("2001 scans")), "{refused:?}");
        // Decoded, it would take minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "refused before decoding");
        // As many scans of a small image are still too many for any encoder to write.
        assert!(matches!(decode(&scan_bomb(64, 200), 50_000_000, 1024), Err(Error::DecoderLimit(_))));
        // A few scans of it are walked like any progressive JPEG's.
        assert!(!matches!(decode(&scan_bomb(64, 9), 50_000_000, 1024), Err(Error::DecoderLimit(_))));
        let progressive = jpeg_of(&photo_like(640, 480), true);
        assert!(decode(&progressive, 50_000_000, 1024).is_ok(), "an encoder's progressive JPEG decodes");
    }

    /// Left half red, right half blue.
    fn red_then_blue(width: u32, height: u32) -> RgbImage {
        ImageBuffer::from_fn(width, height, |x, _| if x < width / 2 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) })
    }

    /// Something like a photo: smooth gradients, a disc and fine stripes.
    fn photo_like(width: u32, height: u32) -> RgbImage {
        ImageBuffer::from_fn(width, height, |x, y| {
            let (dx, dy) = (x as f32 - width as f32 / 2.0, y as f32 - height as f32 / 2.0);
            let disc = dx * dx + dy * dy < (height as f32 / 3.0).powi(2);
            let stripe = if (x / 3) % 2 == 0 { 40 } else { 0 };
            if disc {
                Rgb([200, (120 + stripe) as u8, (y * 255 / height) as u8])
            } else {
                Rgb([(x * 255 / width) as u8, 60, (180 - stripe) as u8])
            }
        })
    }

    fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(&x, &y)| f64::from(x.abs_diff(y))).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn decodes_png_jpeg_and_webp() {
        let image = RgbaImage::from_pixel(7, 5, Rgba([10, 200, 30, 255]));
        let png = encode(&DynamicImage::ImageRgba8(image.clone()), OutputFormat::Png).unwrap();
        assert_eq!(upright(&png, 1_000).unwrap().dimensions(), (7, 5));
        let rgb = DynamicImage::ImageRgba8(image.clone()).into_rgb8();
        assert_eq!(upright(&jpeg_of(&rgb, false), 1_000).unwrap().dimensions(), (7, 5));
        let webp = encode(&DynamicImage::ImageRgba8(image), OutputFormat::Webp).unwrap();
        let decoded = rgba(upright(&webp, 1_000).unwrap());
        assert_eq!(decoded.get_pixel(3, 3), &Rgba([10, 200, 30, 255]));
    }

    #[test]
    fn applies_exif_orientation() {
        // 4 wide, 2 high, left half red; rotated 90° clockwise it is 2 wide, 4 high,
        // with the red half on top.
        let decoded = rgba(upright(&rotated_90(&jpeg_of(&red_then_blue(4, 2), false)), 1_000).unwrap());
        assert_eq!(decoded.dimensions(), (2, 4));
        assert!(decoded.get_pixel(0, 0)[0] > 200, "top should be red: {:?}", decoded.get_pixel(0, 0));
        assert!(decoded.get_pixel(0, 3)[2] > 200, "bottom should be blue: {:?}", decoded.get_pixel(0, 3));
    }

    #[test]
    fn a_shrunk_jpeg_is_still_turned_upright() {
        for progressive in [false, true] {
            let jpeg = rotated_90(&jpeg_of(&red_then_blue(640, 320), progressive));
            let decoded = decode(&jpeg, 1_000_000, 160).unwrap();
            assert_eq!(decoded.decoded_size(), (160, 80), "shrunk by 4 while decoding");
            let upright = rgba(decoded.into_upright());
            assert_eq!(upright.dimensions(), (80, 160));
            assert!(upright.get_pixel(40, 10)[0] > 200, "top should be red: {:?}", upright.get_pixel(40, 10));
            assert!(upright.get_pixel(40, 150)[2] > 200, "bottom should be blue: {:?}", upright.get_pixel(40, 150));
        }
    }

    #[test]
    fn a_jpeg_decodes_at_the_smallest_scale_that_covers_the_output() {
        let jpeg = jpeg_of(&photo_like(1000, 750), false);
        for (max_side, decoded, output) in [
            (2048, (1000, 750), (1000, 750)), // nothing to scale down
            (600, (1000, 750), (600, 450)),   // half would be 500: too small
            (500, (500, 375), (500, 375)),    // half is exactly the output
            (256, (500, 375), (256, 192)),    // a quarter would be 250
            (100, (125, 94), (100, 75)),      // an eighth, partial blocks rounded up
        ] {
            let image = decode(&jpeg, 1_000_000, max_side).unwrap();
            assert_eq!(image.decoded_size(), decoded, "at {max_side}");
            assert_eq!(image.into_upright().dimensions(), output, "at {max_side}");
        }
        let grey = {
            let mut bytes = Vec::new();
            let encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
            encoder.encode(&[128u8; 64 * 48], 64, 48, jpeg_encoder::ColorType::Luma).unwrap();
            bytes
        };
        let image = decode(&grey, 10_000, 16).unwrap();
        assert_eq!(image.decoded_size(), (16, 12));
        assert!(matches!(image.into_upright(), Upright::Rgb(rgb) if rgb.dimensions() == (16, 12)));
    }

    #[test]
    fn a_shrunk_decode_gives_the_cut_out_a_full_decode_gives() {
        let (width, height, max_side) = (1200, 900, 296);
        for progressive in [false, true] {
            let jpeg = jpeg_of(&photo_like(width, height), progressive);
            let shrunk = decode(&jpeg, 10_000_000, max_side).unwrap();
            assert_eq!(shrunk.decoded_size(), (300, 225), "an eighth would be 150");
            let shrunk = shrunk.into_upright();
            let full = decode(&jpeg, 10_000_000, u32::MAX).unwrap();
            assert_eq!(full.decoded_size(), (width, height));
            let full = Decoded { output: output_size(width, height, max_side), ..full }.into_upright();
            assert_eq!(shrunk.dimensions(), full.dimensions());
            let (Upright::Rgb(a), Upright::Rgb(b)) = (&shrunk, &full) else { panic!("a JPEG decodes to RGB") };
            let pixels = mean_difference(a.as_raw(), b.as_raw());
            assert!(pixels < 2.0, "mean difference {pixels:.2} levels (progressive: {progressive})");

            let preprocess = crate::imaging::Preprocess { width: 64, height: 64, mean: [0.5; 3], std: [1.0; 3] };
            let tensors = (to_model_input(&shrunk, &preprocess), to_model_input(&full, &preprocess));
            let tensor = tensors.0.iter().zip(&tensors.1).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(tensor < 0.05, "model inputs differ by up to {tensor}");

            let (out_width, out_height) = shrunk.dimensions();
            let mask_values: Vec<f32> = (0..64 * 64).map(|i| (i % 64) as f32 / 63.0).collect();
            let mask = mask_to_image(&mask_values, 64, 64, out_width, out_height);
            let cut = |image: Upright| compose(image, &mask, None).into_rgba8();
            let cut_outs = mean_difference(cut(shrunk).as_raw(), cut(full).as_raw());
            assert!(cut_outs < 2.0, "cut-outs differ by {cut_outs:.2} levels on average");
        }
    }

    #[test]
    fn refuses_what_is_not_a_supported_image() {
        assert!(matches!(upright(b"", 10), Err(Error::EmptyBody)));
        assert!(matches!(upright(b"hello, world", 10), Err(Error::NotAnImage)));
        assert!(matches!(upright(b"GIF89a\x01\0\x01\0\0\0\0;", 10), Err(Error::UnsupportedImageFormat("gif"))));
        let jpeg = jpeg_of(&RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])), false);
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(upright(truncated, 1_000_000), Err(Error::CorruptImage(_))));
    }

    #[test]
    fn the_limits_hold_from_the_header_before_a_shrunk_decode() {
        // The frame header says 60000×50000: refused from it, whether or not the
        // output would let the decoder shrink it.
        let mut jpeg = jpeg_of(&RgbImage::new(16, 16), false);
        let frame = jpeg.windows(2).position(|pair| pair == [0xFF, 0xC0]).unwrap();
        jpeg[frame + 5..frame + 9].copy_from_slice(&[0xC3, 0x50, 0xEA, 0x60]);
        for max_side in [64, u32::MAX] {
            let refused = decode(&jpeg, 50_000_000, max_side).unwrap_err();
            assert!(matches!(refused, Error::TooManyPixels { width: 60_000, height: 50_000, .. }), "{refused}");
        }
    }

    #[test]
    fn data_after_the_end_of_a_jpeg_is_ignored() {
        let jpeg = jpeg_of(&RgbImage::from_pixel(64, 32, Rgb([9, 99, 199])), true);
        let trailer = [b"\0\0\0\x18ftypmp42".as_slice(), &[0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD8], &jpeg[..40]].concat();
        let with_trailer = [jpeg.as_slice(), &trailer].concat();
        assert_eq!(upright(&with_trailer, 10_000).unwrap().dimensions(), (64, 32));
        let shrunk = decode(&with_trailer, 10_000, 16).unwrap();
        assert_eq!(shrunk.decoded_size(), (16, 8));
    }

    #[test]
    fn an_image_with_a_side_past_the_limit_is_refused() {
        let long = GrayImage::new(MAX_SIDE + 1, 1);
        let mut png = Vec::new();
        DynamicImage::ImageLuma8(long).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        assert!(matches!(upright(&png, u64::MAX), Err(Error::SideTooLong { width, .. }) if width == MAX_SIDE + 1));
    }

    #[test]
    fn the_output_keeps_aspect_and_transparency() {
        let mut png = Vec::new();
        let translucent = RgbaImage::from_pixel(400, 100, Rgba([50, 100, 150, 100]));
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(translucent.as_raw(), 400, 100, image::ExtendedColorType::Rgba8)
            .unwrap();
        let Upright::Rgba(scaled) = decode(&png, 1_000_000, 200).unwrap().into_upright() else { panic!("alpha kept") };
        assert_eq!(scaled.dimensions(), (200, 50));
        let centre = scaled.get_pixel(100, 25);
        assert!(centre.0.iter().zip([50, 100, 150, 100]).all(|(&got, want)| got.abs_diff(want) <= 1), "{centre:?}");
    }
}
