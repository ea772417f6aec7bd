//! Memory is bounded by the flags: the worst inputs known (a PNG whose colour profile
//! inflates to 400 MiB, a 40 000 000 × 1 PNG, a 42 MP progressive JPEG turned by
//! EXIF, a lossless WebP of one pixel declaring 65,536 groups of prefix codes, 1.25 GiB
//! once built), sent at once and again,
//! raise the process's peak resident memory by no more than the bound that
//! `matte_common::memory` states for the server's flags, and the memory comes back
//! once they are answered. Figures are printed for the README.

mod support;

use std::time::Duration;

use matte_common::memory::Sizing;
use support::bitstreams::{Bits, lossless_webp};
use support::{Server, TinyModel, blocking_client};

const WORKERS: u64 = 2;
const CAPACITY: u64 = 4;
const MAX_PIXELS: u64 = 45_000_000;

/// A 16×16 PNG whose iCCP chunk inflates to `inflated` bytes of zeros.
fn iccp_bomb(inflated: usize) -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::new(16, 16).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let mut data = b"bomb\0\0".to_vec(); // profile name, compression method 0
    data.extend(zlib_zeros(inflated));
    let typed = [b"iCCP".as_slice(), &data].concat();
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    // After the signature (8 bytes) and IHDR (25), before the pixels.
    [&png[..33], &chunk, &png[33..]].concat()
}

/// A zlib stream of `length` zero bytes: one fixed-Huffman block of a literal zero
/// and copies of 258 bytes at distance 1 (13 bits each).
fn zlib_zeros(length: usize) -> Vec<u8> {
    let mut bits = Bits::after(vec![0x78, 0x01]);
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let mut written = 1;
    while written + 258 <= length {
        bits.code(0b1100_0101, 8); // length 258
        bits.code(0, 5); // distance 1
        written += 258;
    }
    for _ in written..length {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block
    let mut stream = bits.into_bytes();
    let adler = ((length % 65_521) as u32) << 16 | 1;
    stream.extend_from_slice(&adler.to_be_bytes());
    stream
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A greyscale PNG `width` pixels wide and one high: few pixels, a very long side.
fn long_png(width: u32) -> Vec<u8> {
    let mut png = Vec::new();
    image::GrayImage::new(width, 1).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

/// A progressive JPEG of `width`×`height` whose EXIF says "rotate 90° clockwise".
fn rotated_progressive_jpeg(width: u16, height: u16) -> Vec<u8> {
    let pixels: Vec<u8> = (0..u32::from(height))
        .flat_map(|y| {
            (0..u32::from(width)).flat_map(move |x| [(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
        })
        .collect();
    let mut jpeg = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 85);
    encoder.set_progressive(true);
    encoder.encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb).unwrap();
    let tiff: Vec<u8> = [
        b"MM\0\x2a\0\0\0\x08".as_slice(),
        &[0, 1],
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], // Orientation = 6
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    [&jpeg[..2], &app1, &jpeg[2..]].concat()
}

/// The statuses an input may be answered with, each with the error code it names.
type Answers = &'static [(u16, &'static str)];

#[test]
fn the_worst_inputs_stay_within_the_memory_bound_of_the_flags() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(
        &model.path,
        &[
            "--cpu-workers",
            &WORKERS.to_string(),
            "--queue-capacity",
            &CAPACITY.to_string(),
            "--max-input-pixels",
            &MAX_PIXELS.to_string(),
        ],
    );
    let sizing = Sizing {
        cpu_workers: WORKERS,
        queue_capacity: CAPACITY,
        max_input_pixels: MAX_PIXELS,
        max_body_bytes: matte_common::memory::DEFAULT_MAX_BODY_BYTES,
        max_dimension: 2048,
        input_size: 32,
        max_batch_size: 1,
        max_connections: matte_common::memory::DEFAULT_POD_MAX_CONNECTIONS,
    };
    let bomb = iccp_bomb(400 * 1024 * 1024);
    let long = long_png(40_000_000);
    let photo = rotated_progressive_jpeg(7952, 5304); // 42 MP
    let codes = lossless_webp(1, 1, 65_536);
    eprintln!(
        "inputs: iCCP bomb {} KiB, long PNG {} KiB, JPEG {} KiB, WebP of many prefix codes {} KiB",
        bomb.len() >> 10,
        long.len() >> 10,
        photo.len() >> 10,
        codes.len() >> 10
    );

    let client = blocking_client();
    // One round first so that the baseline includes the server's steady state.
    let warm = client.post(server.url("/v1/remove")).header("content-type", "image/png");
    assert_eq!(warm.body(support::sample_image("coffee.png")).send().unwrap().status(), 200);
    let baseline = server.memory();

    // What each may be answered; a full queue (429) is an honest answer for any.
    let cases: [(&str, &Vec<u8>, Answers); 4] = [
        // The profile is inflated only up to the PNG decoder's budget: past it the
        // image is refused, or the profile dropped (the decoder decides which).
        ("image/png", &bomb, &[(413, "decoder_limit"), (200, "")]),
        // Refused from its header, by its side or by the decoder's row budget.
        ("image/png", &long, &[(413, "side_too_long"), (413, "decoder_limit")]),
        ("image/jpeg", &photo, &[(200, "")]),
        // Only the one group its pixel uses is built.
        ("image/webp", &codes, &[(200, "")]),
    ];
    for round in 0..2 {
        let requests: Vec<_> = cases
            .iter()
            .flat_map(|case| [case, case])
            .map(|&(content_type, body, allowed)| {
                let request =
                    client.post(server.url("/v1/remove")).header("content-type", content_type).body(body.clone());
                std::thread::spawn(move || {
                    let response = request.send().unwrap();
                    let status = response.status().as_u16();
                    let text = if status == 200 { String::new() } else { response.text().unwrap() };
                    (allowed, status, text)
                })
            })
            .collect();
        for request in requests {
            let (allowed, status, text) = request.join().unwrap();
            let expected = status == 429 || allowed.iter().any(|&(s, code)| s == status && text.contains(code));
            assert!(expected, "round {round}: {status} {text}, expected one of {allowed:?}");
        }
    }
    let bound_mib = sizing.image_work_bytes() as f64 / (1024.0 * 1024.0);
    // Every request is answered; what their work held is given back within moments,
    // however long a loaded machine takes.
    let given_back_by = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = server.memory();
    while after.resident_mib - baseline.resident_mib > bound_mib / 4.0 && std::time::Instant::now() < given_back_by {
        std::thread::sleep(Duration::from_millis(200));
        after = server.memory();
    }
    let grew = after.peak_mib - baseline.resident_mib;
    let kept = after.resident_mib - baseline.resident_mib;
    eprintln!(
        "baseline RSS {:.0} MiB; peak {:.0} MiB (+{grew:.0} MiB, bound +{bound_mib:.0} MiB); after {:.0} MiB (+{kept:.0} MiB)",
        baseline.resident_mib, after.peak_mib, after.resident_mib
    );
    assert!(grew <= bound_mib, "peak grew by {grew:.0} MiB, over the bound of {bound_mib:.0} MiB");
    assert!(kept <= bound_mib / 4.0, "{kept:.0} MiB stayed resident after the burst");
}
