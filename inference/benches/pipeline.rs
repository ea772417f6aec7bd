//! CPU cost of each image step per request, on the sample photographs, so the price
//! of the HTTP pipeline around the model is known. Prints milliseconds per step.
//!
//!   cargo bench -p matte-inference --bench pipeline
//! (needs MATTE_SAMPLE_IMAGES from scripts/setup.sh)

use std::time::Instant;

use image::DynamicImage;
use matte_inference::imaging::{self, OutputFormat, Preprocess};

const ROUNDS: u32 = 20;

fn time_ms<T>(mut step: impl FnMut() -> T) -> (f64, T) {
    let mut last = step();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        last = step();
    }
    (started.elapsed().as_secs_f64() * 1e3 / f64::from(ROUNDS), last)
}

fn main() {
    let Some(dir) = std::env::var_os("MATTE_SAMPLE_IMAGES") else {
        eprintln!("MATTE_SAMPLE_IMAGES is not set: source ~/.cache/matte/env.sh after scripts/setup.sh");
        std::process::exit(2);
    };
    let preprocess = Preprocess { width: 1024, height: 1024, mean: [0.5; 3], std: [1.0; 3] };
    println!(
        "{:<15}{:>11}{:>9}{:>9}{:>10}{:>9}{:>9}{:>10}{:>9}",
        "image", "size", "decode", "to-model", "mask-back", "compose", "png", "webp", "total"
    );
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"] {
        let bytes = std::fs::read(std::path::Path::new(&dir).join(name)).expect("sample image");
        let (decode, image) = time_ms(|| imaging::decode(&bytes, 50_000_000).unwrap().into_upright_rgba(2048));
        let (to_model, _) = time_ms(|| imaging::to_model_input(&image, &preprocess));
        let (width, height) = image.dimensions();
        let model_mask: Vec<f32> = (0..1024 * 1024).map(|i| (i % 1024) as f32 / 1024.0).collect();
        let (mask_back, mask) = time_ms(|| imaging::mask_to_image(&model_mask, 1024, 1024, width, height));
        let (compose, cut_out) = time_ms(|| imaging::compose(image.clone(), &mask, None));
        let (png, _) = time_ms(|| imaging::encode(&cut_out, OutputFormat::Png).unwrap());
        let (webp, _) = time_ms(|| imaging::encode(&cut_out, OutputFormat::Webp).unwrap());
        let total = decode + to_model + mask_back + compose + png;
        println!(
            "{name:<15}{:>11}{decode:>9.1}{to_model:>9.1}{mask_back:>10.1}{compose:>9.1}{png:>9.1}{webp:>10.1}{total:>9.1}",
            format!("{width}x{height}")
        );
        let _: &DynamicImage = &cut_out;
    }
}
