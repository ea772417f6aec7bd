//! EXIF orientation applied to the upright image. The four orientations that swap
//! width and height (portrait phone photos are stored sideways) are done here in
//! tiles, copying whole pixels; `image`'s own per-pixel rotation costs several times
//! as much at 3 MP. Flips and 180° keep `image`'s.

use image::DynamicImage;
use image::metadata::Orientation;

use super::Upright;

/// Pixels per side of a tile: reads and writes of one tile stay in the L1 cache.
const TILE: usize = 32;

/// `image` turned by `orientation`.
pub fn oriented(image: Upright, orientation: Orientation) -> Upright {
    match image {
        Upright::Rgb(rgb) => {
            let (width, height) = rgb.dimensions();
            match turned::<3>(rgb.as_raw(), width as usize, height as usize, orientation) {
                Some(pixels) => Upright::Rgb(image::RgbImage::from_raw(height, width, pixels).expect("same size")),
                None => {
                    let mut image = DynamicImage::ImageRgb8(rgb);
                    image.apply_orientation(orientation);
                    Upright::Rgb(image.into_rgb8())
                }
            }
        }
        Upright::Rgba(rgba) => {
            let (width, height) = rgba.dimensions();
            match turned::<4>(rgba.as_raw(), width as usize, height as usize, orientation) {
                Some(pixels) => Upright::Rgba(image::RgbaImage::from_raw(height, width, pixels).expect("same size")),
                None => {
                    let mut image = DynamicImage::ImageRgba8(rgba);
                    image.apply_orientation(orientation);
                    Upright::Rgba(image.into_rgba8())
                }
            }
        }
    }
}

/// `pixels` (`width`×`height`, `N` bytes a pixel) turned by one of the orientations
/// that swap the sides, as a `height`×`width` image; `None` for the others.
fn turned<const N: usize>(pixels: &[u8], width: usize, height: usize, orientation: Orientation) -> Option<Vec<u8>> {
    // Where the result's pixel (x, y) comes from.
    Some(match orientation {
        Orientation::Rotate90 => turn::<N>(pixels, width, height, |x, y| (y, height - 1 - x)),
        Orientation::Rotate270 => turn::<N>(pixels, width, height, |x, y| (width - 1 - y, x)),
        Orientation::Rotate90FlipH => turn::<N>(pixels, width, height, |x, y| (y, x)),
        Orientation::Rotate270FlipH => turn::<N>(pixels, width, height, |x, y| (width - 1 - y, height - 1 - x)),
        _ => return None,
    })
}

fn turn<const N: usize>(
    pixels: &[u8],
    width: usize,
    height: usize,
    source: impl Fn(usize, usize) -> (usize, usize),
) -> Vec<u8> {
    let (out_width, out_height) = (height, width);
    let mut out = vec![0u8; pixels.len()];
    for tile_y in (0..out_height).step_by(TILE) {
        for tile_x in (0..out_width).step_by(TILE) {
            for y in tile_y..(tile_y + TILE).min(out_height) {
                for x in tile_x..(tile_x + TILE).min(out_width) {
                    let (from_x, from_y) = source(x, y);
                    let from = (from_y * width + from_x) * N;
                    let to = (y * out_width + x) * N;
                    out[to..to + N].copy_from_slice(&pixels[from..from + N]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{RgbImage, RgbaImage};

    #[test]
    fn every_orientation_matches_image_s_own() {
        // Odd sizes, more than a tile, every pixel different.
        let rgba = RgbaImage::from_fn(37, 71, |x, y| image::Rgba([x as u8, y as u8, (x * y) as u8, (x + y) as u8]));
        let rgb = DynamicImage::ImageRgba8(rgba.clone()).into_rgb8();
        for exif in 1..=8 {
            let orientation = Orientation::from_exif(exif).unwrap();
            let mut expected = DynamicImage::ImageRgba8(rgba.clone());
            expected.apply_orientation(orientation);
            let Upright::Rgba(turned) = oriented(Upright::Rgba(rgba.clone()), orientation) else { panic!() };
            assert_eq!(turned, expected.to_rgba8(), "RGBA, EXIF orientation {exif}");
            let Upright::Rgb(turned) = oriented(Upright::Rgb(rgb.clone()), orientation) else { panic!() };
            let expected: RgbImage = expected.into_rgb8();
            assert_eq!(turned, expected, "RGB, EXIF orientation {exif}");
        }
    }
}
