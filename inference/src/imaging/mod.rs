//! The image half of the pipeline, as pure functions: bytes in, tensor out; mask in,
//! bytes out. Nothing here knows about HTTP, queues or ONNX Runtime, so every step is
//! unit-tested on its own.
//!
//! Reading order: [`decode`] (bytes to pixels, no more of them than the output keeps:
//! JPEGs shrink while decoding, see [`jpeg`]), [`Decoded::into_upright`] (output size,
//! EXIF orientation), `model_input` (the tensor), `cut_out` (mask back to size and
//! composed in place), [`encode`] (PNG, WebP, JPEG).

mod cut_out;
mod decode;
mod encode;
pub mod jpeg;
mod model_input;
mod webp;

pub use cut_out::{compose, mask_to_image};
pub use decode::{Decoded, MAX_SIDE, WEBP_CODES_BYTES_PER_PIXEL, decode};
pub use encode::{OutputFormat, PNG_COMPRESSION, PNG_FILTER, encode, encode_png};
pub use model_input::to_model_input;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{RgbImage, RgbaImage};

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

impl Preprocess {
    /// The values of one image's model input: three planes of width × height.
    pub fn input_values(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The pixels of one image's model input: the most its mask may have.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// An image at its output size and turned upright: RGB, or RGBA when the input had an
/// alpha channel. Keeping RGB inputs in three channels spares a full-size RGBA copy
/// until the cut-out itself needs one.
#[derive(Debug, Clone, PartialEq)]
pub enum Upright {
    Rgb(RgbImage),
    Rgba(RgbaImage),
}

impl Upright {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Upright::Rgb(image) => image.dimensions(),
            Upright::Rgba(image) => image.dimensions(),
        }
    }
}

/// The size an image of `width`×`height` is returned at: its longer side at most
/// `max_side`, aspect kept, never scaled up.
pub fn output_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= max_side || max_side == 0 {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let new_width = ((f64::from(width) * scale).round() as u32).max(1);
    let new_height = ((f64::from(height) * scale).round() as u32).max(1);
    (new_width, new_height)
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

/// Resizes `source` into `destination` (SIMD, fast_image_resize). `use_alpha` false
/// treats a fourth channel as plain data: it skips the premultiplied full-size copy
/// that resizing with alpha needs, which is exact when every pixel is opaque and is
/// what the model wants anyway (it never sees alpha).
fn resize<S, D>(source: &S, destination: &mut D, filter: FilterType, use_alpha: bool)
where
    S: fast_image_resize::IntoImageView,
    D: fast_image_resize::IntoImageViewMut,
{
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)).use_alpha(use_alpha);
    Resizer::new()
        .resize(source, destination, &options)
        .expect("source and destination are image buffers of the same pixel type");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_keeps_aspect_and_never_upscales() {
        assert_eq!(output_size(4000, 1000, 2048), (2048, 512));
        assert_eq!(output_size(300, 900, 450), (150, 450));
        assert_eq!(output_size(100, 50, 2048), (100, 50));
        assert_eq!(output_size(40_000, 1, 2048), (2048, 1), "a side never rounds to zero");
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
