//! The result as bytes: PNG, lossless WebP or JPEG.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder};

use crate::Error;

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// RGBA PNG, or RGB PNG when composited on a background colour.
    Png,
    /// Lossless WebP, RGBA or RGB like `Png`.
    Webp,
    /// JPEG (quality `JPEG_QUALITY`); only for a composite onto a background colour,
    /// as JPEG has no alpha.
    Jpeg,
    /// The mask alone as an 8-bit greyscale PNG.
    Mask,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png | OutputFormat::Mask => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Jpeg => "image/jpeg",
        }
    }
}

/// PNG compression: fdeflate's single fast mode. On the 2048×1536 cut-out of a 12 MP
/// photo (the pipeline bench) it takes ~25 ms where zlib level 1 takes ~145 ms and the
/// default level 6 ~1.5 s, for files within 10 % of theirs: the pod's CPU is better
/// spent on the next image than on a few percent of bytes.
pub const PNG_COMPRESSION: CompressionType = CompressionType::Fast;
/// PNG row filter: Up, the cheapest that compresses (the same cut-out: ~24 ms and
/// 6.7 MB, against ~33 ms and 6.2 MB trying every filter on each row, and 12.3 MB
/// unfiltered).
pub const PNG_FILTER: FilterType = FilterType::Up;
/// JPEG quality for composites: visually lossless for photos at a fraction of PNG's
/// size.
pub const JPEG_QUALITY: u8 = 90;

/// Encodes the result in `format`.
pub fn encode(image: &DynamicImage, format: OutputFormat) -> Result<Vec<u8>, Error> {
    match format {
        OutputFormat::Png | OutputFormat::Mask => encode_png(image, PNG_COMPRESSION, PNG_FILTER),
        OutputFormat::Webp => {
            let mut bytes = Vec::new();
            WebPEncoder::new_lossless(&mut bytes)
                .write_image(image.as_bytes(), image.width(), image.height(), image.color().into())
                .map_err(|e| Error::Encode(e.to_string()))?;
            Ok(bytes)
        }
        OutputFormat::Jpeg => encode_jpeg(image),
    }
}

/// PNG with the given compression and filter; [`encode`] uses the measured choice.
pub fn encode_png(image: &DynamicImage, compression: CompressionType, filter: FilterType) -> Result<Vec<u8>, Error> {
    let colour: ExtendedColorType = image.color().into();
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, compression, filter)
        .write_image(image.as_bytes(), image.width(), image.height(), colour)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(bytes)
}

fn encode_jpeg(image: &DynamicImage) -> Result<Vec<u8>, Error> {
    let colour = match image {
        DynamicImage::ImageRgb8(_) => jpeg_encoder::ColorType::Rgb,
        DynamicImage::ImageLuma8(_) => jpeg_encoder::ColorType::Luma,
        other => return Err(Error::Encode(format!("JPEG takes RGB or greyscale, not {:?}", other.color()))),
    };
    let side =
        |length: u32| u16::try_from(length).map_err(|_| Error::Encode(format!("{length} px is past JPEG's sides")));
    let (width, height) = (side(image.width())?, side(image.height())?);
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY)
        .encode(image.as_bytes(), width, height, colour)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, RgbaImage};

    #[test]
    fn each_format_decodes_back() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(7, 5, image::Rgba([10, 200, 30, 128])));
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_pixel(7, 5, Rgb([10, 200, 30])));
        for (image, format, expected) in [
            (&rgba, OutputFormat::Png, image::ImageFormat::Png),
            (&rgba, OutputFormat::Webp, image::ImageFormat::WebP),
            (&rgb, OutputFormat::Jpeg, image::ImageFormat::Jpeg),
        ] {
            let bytes = encode(image, format).unwrap();
            let back = image::load_from_memory_with_format(&bytes, expected).unwrap();
            assert_eq!((back.width(), back.height()), (7, 5), "{format:?}");
            assert_eq!(back.color().has_alpha(), image.color().has_alpha(), "{format:?}");
        }
    }

    #[test]
    fn jpeg_refuses_alpha() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::new(2, 2));
        assert!(matches!(encode(&rgba, OutputFormat::Jpeg), Err(Error::Encode(_))));
    }
}
