//! The real model on a real photograph, over HTTP: NASA's portrait of Eileen Collins
//! (scikit-image's `astronaut.png`, 512×512): a person in an orange suit in front of a
//! flag and a plain studio backdrop.

mod support;

use image::{GenericImageView, ImageFormat};
use reqwest::blocking::multipart;
use support::{Server, blocking_client, sample_image};

/// Mean of channel `c` over a square patch.
fn patch_mean(image: &image::DynamicImage, (x0, y0): (u32, u32), side: u32, c: usize) -> f64 {
    let mut sum = 0.0;
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            sum += f64::from(image.get_pixel(x, y)[c]);
        }
    }
    sum / f64::from(side * side)
}

const FACE: (u32, u32) = (205, 95);
const BACKDROP_TOP_RIGHT: (u32, u32) = (470, 5);
const FLAG_TOP_LEFT: (u32, u32) = (5, 5);

#[test]
fn removes_the_background_of_a_photograph() {
    let server = Server::start(&[]);
    let input = sample_image("astronaut.png");
    let response = blocking_client()
        .post(server.url("/v1/remove"))
        .header("content-type", "image/png")
        .body(input.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let queue_wait: f64 = response.headers()["x-matte-queue-wait-seconds"].to_str().unwrap().parse().unwrap();
    let inference: f64 = response.headers()["x-matte-inference-seconds"].to_str().unwrap().parse().unwrap();
    assert!(queue_wait >= 0.0 && inference > 0.0, "timing headers: {queue_wait} {inference}");
    let output = image::load_from_memory_with_format(&response.bytes().unwrap(), ImageFormat::Png).unwrap();
    let original = image::load_from_memory(&input).unwrap();

    assert_eq!(output.dimensions(), (512, 512));
    assert!(output.color().has_alpha(), "a cut-out needs an alpha channel");
    assert!(patch_mean(&output, FACE, 30, 3) > 230.0, "the face is foreground");
    assert!(patch_mean(&output, BACKDROP_TOP_RIGHT, 35, 3) < 25.0, "the backdrop is removed");
    assert!(patch_mean(&output, FLAG_TOP_LEFT, 35, 3) < 25.0, "the flag is removed");
    for c in 0..3 {
        let kept = (patch_mean(&output, FACE, 30, c) - patch_mean(&original, FACE, 30, c)).abs();
        assert!(kept < 2.0, "foreground colours are kept (channel {c} moved by {kept})");
    }
}

#[test]
fn output_options_shape_the_result() {
    let server = Server::start(&[]);
    let astronaut = image::load_from_memory(&sample_image("astronaut.png")).unwrap();
    let mut jpeg = Vec::new();
    astronaut.to_rgb8().write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
    let client = blocking_client();

    // multipart JPEG in, smaller WebP out
    let form = multipart::Form::new()
        .part("image", multipart::Part::bytes(jpeg.clone()).file_name("a.jpg").mime_str("image/jpeg").unwrap());
    let response = client.post(server.url("/v1/remove?format=webp&max_dimension=256")).multipart(form).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/webp");
    let webp = image::load_from_memory_with_format(&response.bytes().unwrap(), ImageFormat::WebP).unwrap();
    assert_eq!(webp.dimensions(), (256, 256));
    assert!(webp.color().has_alpha());

    // the mask alone
    let response = client
        .post(server.url("/v1/remove?format=mask"))
        .header("content-type", "image/jpeg")
        .body(jpeg.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mask = image::load_from_memory(&response.bytes().unwrap()).unwrap();
    assert_eq!(mask.color(), image::ColorType::L8);
    assert!(patch_mean(&mask, FACE, 30, 0) > 230.0);
    assert!(patch_mean(&mask, BACKDROP_TOP_RIGHT, 35, 0) < 25.0);

    // composited onto a solid colour: opaque, and the backdrop takes that colour
    let response = client
        .post(server.url("/v1/remove?bg_color=%2300ff00"))
        .header("content-type", "image/jpeg")
        .body(jpeg.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let flat = image::load_from_memory(&response.bytes().unwrap()).unwrap();
    assert!(!flat.color().has_alpha());
    assert!(patch_mean(&flat, BACKDROP_TOP_RIGHT, 35, 1) > 225.0, "green backdrop");
    assert!(patch_mean(&flat, BACKDROP_TOP_RIGHT, 35, 0) < 30.0, "green backdrop");

    // the same composite as a JPEG
    let response = client
        .post(server.url("/v1/remove?bg_color=00ff00&format=jpeg"))
        .header("content-type", "image/jpeg")
        .body(jpeg)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let flat = image::load_from_memory_with_format(&response.bytes().unwrap(), ImageFormat::Jpeg).unwrap();
    assert_eq!(flat.dimensions(), (512, 512));
    assert!(patch_mean(&flat, BACKDROP_TOP_RIGHT, 35, 1) > 220.0, "green backdrop");
    assert!(patch_mean(&flat, BACKDROP_TOP_RIGHT, 35, 0) < 35.0, "green backdrop");
    assert!(patch_mean(&flat, FACE, 30, 0) > 100.0, "the face is kept");
}
