//! The model's input tensor, made from the upright image.

use fast_image_resize::FilterType;
use image::{Pixel, RgbImage, RgbaImage};

use super::{Preprocess, Upright, resize};

/// The model input for one image: resized to the model's side (aspect ratio is not
/// kept, as ISNet-class models were trained), normalised, in CHW order. Alpha is not
/// part of it: an RGBA image is resized as four plain channels, sparing the
/// premultiplied copy, and its colour channels are read as they are.
pub fn to_model_input(image: &Upright, preprocess: &Preprocess) -> Vec<f32> {
    let (width, height) = (preprocess.width, preprocess.height);
    match image {
        Upright::Rgb(rgb) => {
            let mut resized = RgbImage::new(width, height);
            resize(rgb, &mut resized, FilterType::Bilinear, false);
            normalised_chw(resized.pixels().map(|pixel| pixel.0), preprocess)
        }
        Upright::Rgba(rgba) => {
            let mut resized = RgbaImage::new(width, height);
            resize(rgba, &mut resized, FilterType::Bilinear, false);
            normalised_chw(resized.pixels().map(|pixel| pixel.to_rgb().0), preprocess)
        }
    }
}

/// One pass from model-sized pixels to the normalised planes.
fn normalised_chw(pixels: impl Iterator<Item = [u8; 3]>, preprocess: &Preprocess) -> Vec<f32> {
    let plane = (preprocess.width * preprocess.height) as usize;
    let mut tensor = vec![0.0f32; preprocess.input_values()];
    let (red, rest) = tensor.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * preprocess.std[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| preprocess.mean[c] / preprocess.std[c]);
    for (i, [r, g, b]) in pixels.enumerate() {
        red[i] = f32::from(r) * scale[0] - offset[0];
        green[i] = f32::from(g) * scale[1] - offset[1];
        blue[i] = f32::from(b) * scale[2] - offset[2];
    }
    tensor
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn model_input_is_normalised_chw() {
        let preprocess = Preprocess { width: 2, height: 2, mean: [0.5, 0.5, 0.0], std: [1.0, 1.0, 0.5] };
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        let rgba = RgbaImage::from_pixel(3, 3, Rgba([255, 0, 51, 255]));
        let rgb = Upright::Rgb(image::DynamicImage::ImageRgba8(rgba.clone()).into_rgb8());
        for image in [Upright::Rgba(rgba), rgb] {
            let tensor = to_model_input(&image, &preprocess);
            assert_eq!(tensor.len(), 3 * 2 * 2);
            assert!(tensor[..4].iter().all(|&v| close(v, 0.5)), "red plane {:?}", &tensor[..4]);
            assert!(tensor[4..8].iter().all(|&v| close(v, -0.5)), "green plane {:?}", &tensor[4..8]);
            assert!(tensor[8..].iter().all(|&v| close(v, 0.4)), "blue plane {:?}", &tensor[8..]);
        }
    }

    #[test]
    fn transparent_pixels_keep_their_colour_for_the_model() {
        let preprocess = Preprocess { width: 1, height: 1, mean: [0.0; 3], std: [1.0; 3] };
        let image = Upright::Rgba(RgbaImage::from_pixel(4, 4, Rgba([255, 255, 255, 0])));
        let tensor = to_model_input(&image, &preprocess);
        assert!(tensor.iter().all(|&v| (v - 1.0).abs() < 1e-3), "{tensor:?}");
    }
}
