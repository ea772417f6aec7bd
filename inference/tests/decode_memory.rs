//! A CPU worker decoding an image and scaling it to the output holds no more than
//! `DECODE_BYTES_PER_PIXEL` bytes per pixel of it, the figure the pod's memory bound
//! (`matte_common::memory`) counts for every worker at `--max-input-pixels`. The worst
//! formats are measured here, each decoded and scaled as a worker does, counted by this
//! test binary's allocator. The figures are printed.

mod support;

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgba};
use matte_common::memory::DECODE_BYTES_PER_PIXEL;
use matte_inference::imaging::decode;
use support::counting_allocator::{Counting, peak_while};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WIDTH: u32 = 3000;
const HEIGHT: u32 = 2000;
/// The output's longer side, the server's default `--max-dimension`.
const OUTPUT_SIDE: u32 = 2048;

/// Varied colours and alpha, so that no decoder or scaler takes an opaque shortcut.
fn pattern(x: u32, y: u32) -> [u8; 4] {
    [(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8, ((x + y) % 200) as u8 + 40]
}

fn png_16_bit_rgba() -> Vec<u8> {
    let image = ImageBuffer::from_fn(WIDTH, HEIGHT, |x, y| Rgba(pattern(x, y).map(|value| u16::from(value) * 257)));
    encoded(DynamicImage::ImageRgba16(image), ImageFormat::Png)
}

fn rgba8(format: ImageFormat) -> Vec<u8> {
    let image = ImageBuffer::from_fn(WIDTH, HEIGHT, |x, y| Rgba(pattern(x, y)));
    encoded(DynamicImage::ImageRgba8(image), format)
}

fn progressive_jpeg() -> Vec<u8> {
    let pixels: Vec<u8> = (0..HEIGHT).flat_map(|y| (0..WIDTH).flat_map(move |x| pattern(x, y)[..3].to_vec())).collect();
    let mut jpeg = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 85);
    encoder.set_progressive(true);
    encoder.encode(&pixels, WIDTH as u16, HEIGHT as u16, jpeg_encoder::ColorType::Rgb).unwrap();
    jpeg
}

fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

#[test]
fn a_worker_holds_no_more_per_pixel_than_the_memory_bound_counts() {
    let inputs = [
        ("16-bit RGBA PNG", png_16_bit_rgba()),
        ("RGBA PNG", rgba8(ImageFormat::Png)),
        ("lossless RGBA WebP", rgba8(ImageFormat::WebP)),
        ("progressive JPEG", progressive_jpeg()),
        // Written by libwebp through Pillow (lossy, its alpha lossless): gradients, so
        // that the file is small; a decoder holds the same buffers for any content.
        ("lossy WebP with alpha", include_bytes!("fixtures/pillow-lossy-alpha-3000x2000.webp").to_vec()),
    ];
    let pixels = f64::from(WIDTH) * f64::from(HEIGHT);
    let mut over = Vec::new();
    for (name, bytes) in inputs {
        let (upright, peak) = peak_while(|| {
            let decoded = decode(&bytes, u64::from(WIDTH * HEIGHT), OUTPUT_SIDE).expect("decodes");
            decoded.into_upright()
        });
        drop(upright);
        let per_pixel = peak as f64 / pixels;
        println!("{name}: {per_pixel:.1} bytes a pixel at the peak of decoding and scaling");
        if per_pixel > DECODE_BYTES_PER_PIXEL as f64 {
            over.push(format!("{name}: {per_pixel:.1}"));
        }
    }
    assert!(over.is_empty(), "over {DECODE_BYTES_PER_PIXEL} bytes a pixel: {over:?}");
}
