//! The model's mask back at the output size, and the cut-out composed in place.

use fast_image_resize::FilterType;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};

use super::{Upright, resize};

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
    resize(&small, &mut full, FilterType::Bilinear, false);
    full
}

/// The cut-out: the image with the mask as its alpha (times any alpha it had), or, with
/// a background colour, the image composited onto that colour (RGB). Composed in the
/// image's own buffer where its layout allows; an RGB image becomes RGBA in one pass.
pub fn compose(image: Upright, mask: &GrayImage, background: Option<[u8; 3]>) -> DynamicImage {
    debug_assert_eq!(image.dimensions(), mask.dimensions());
    let alphas = mask.as_raw();
    match (image, background) {
        (Upright::Rgba(mut rgba), None) => {
            for (pixel, &alpha) in rgba.chunks_exact_mut(4).zip(alphas) {
                pixel[3] = times(pixel[3], alpha);
            }
            DynamicImage::ImageRgba8(rgba)
        }
        (Upright::Rgb(rgb), None) => {
            let (width, height) = rgb.dimensions();
            let mut rgba = Vec::with_capacity(alphas.len() * 4);
            for (pixel, &alpha) in rgb.chunks_exact(3).zip(alphas) {
                rgba.extend_from_slice(&[pixel[0], pixel[1], pixel[2], alpha]);
            }
            DynamicImage::ImageRgba8(RgbaImage::from_raw(width, height, rgba).expect("four bytes a pixel"))
        }
        (Upright::Rgb(mut rgb), Some(colour)) => {
            for (pixel, &alpha) in rgb.chunks_exact_mut(3).zip(alphas) {
                blend(pixel, u32::from(alpha) * 255, colour);
            }
            DynamicImage::ImageRgb8(rgb)
        }
        (Upright::Rgba(rgba), Some(colour)) => {
            // Blended and packed to three bytes a pixel in the same buffer: pixel i is
            // written at 3i, never past 4i where it was read.
            let (width, height) = rgba.dimensions();
            let mut bytes = rgba.into_raw();
            for (i, &alpha) in alphas.iter().enumerate() {
                let mut pixel = [bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2]];
                blend(&mut pixel, u32::from(bytes[4 * i + 3]) * u32::from(alpha), colour);
                bytes[3 * i..3 * i + 3].copy_from_slice(&pixel);
            }
            bytes.truncate(alphas.len() * 3);
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, bytes).expect("three bytes a pixel"))
        }
    }
}

/// `a × b / 255`, rounded.
fn times(a: u8, b: u8) -> u8 {
    ((u16::from(a) * u16::from(b) + 127) / 255) as u8
}

/// `pixel` over `colour` with coverage `coverage` out of 255².
fn blend(pixel: &mut [u8], coverage: u32, colour: [u8; 3]) {
    for c in 0..3 {
        let blended = u32::from(pixel[c]) * coverage + u32::from(colour[c]) * (255 * 255 - coverage);
        pixel[c] = ((blended + 255 * 255 / 2) / (255 * 255)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, Rgba};

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
        let rgba = RgbaImage::from_pixel(2, 1, Rgba([200, 100, 0, 255]));
        let rgb = RgbImage::from_pixel(2, 1, Rgb([200, 100, 0]));
        let mask = GrayImage::from_raw(2, 1, vec![255, 0]).unwrap();
        for image in [Upright::Rgba(rgba), Upright::Rgb(rgb)] {
            let DynamicImage::ImageRgba8(cut) = compose(image.clone(), &mask, None) else { panic!("expected RGBA") };
            assert_eq!(cut.get_pixel(0, 0), &Rgba([200, 100, 0, 255]));
            assert_eq!(cut.get_pixel(1, 0)[3], 0);

            let DynamicImage::ImageRgb8(flat) = compose(image, &mask, Some([0, 0, 255])) else {
                panic!("expected RGB")
            };
            assert_eq!(flat.get_pixel(0, 0), &Rgb([200, 100, 0]));
            assert_eq!(flat.get_pixel(1, 0), &Rgb([0, 0, 255]));
        }
    }

    #[test]
    fn existing_transparency_is_kept() {
        let image = RgbaImage::from_pixel(1, 1, Rgba([9, 9, 9, 128]));
        let mask = GrayImage::from_raw(1, 1, vec![255]).unwrap();
        let DynamicImage::ImageRgba8(cut) = compose(Upright::Rgba(image.clone()), &mask, None) else { panic!() };
        assert_eq!(cut.get_pixel(0, 0)[3], 128);
        // Half transparent black over white: mid grey.
        let DynamicImage::ImageRgb8(flat) = compose(Upright::Rgba(image), &mask, Some([255; 3])) else { panic!() };
        assert_eq!(flat.get_pixel(0, 0), &Rgb([132, 132, 132]));
    }
}
