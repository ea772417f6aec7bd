//! A lossless WebP's prefix codes are held to what a decode may hold beside its pixels:
//! a stream may declare up to 65,536 groups of codes, tens of kilobytes each once
//! built, in a few bytes each. Only the groups its frame uses are built, and those
//! beyond the budget refuse the image. And a file libwebp wrote, whose frame uses several
//! groups, decodes to exactly its pixels.

mod support;

use matte_inference::Error;
use matte_inference::imaging::{Upright, WEBP_CODES_BYTES_PER_PIXEL, decode};
use support::bitstreams::{GROUP_BYTES, LOSSLESS_RGB, lossless_webp};

/// What a decode of `max_pixels` may hold in prefix codes.
fn codes_budget(max_pixels: u64) -> usize {
    usize::try_from(max_pixels * WEBP_CODES_BYTES_PER_PIXEL).unwrap()
}

#[test]
fn only_the_groups_a_frame_uses_are_built() {
    // 4,096 groups declared, 80 MiB once built; the frame uses the last.
    let file = lossless_webp(4, 4, 4096);
    let max_pixels = 10_000;
    assert!(GROUP_BYTES <= codes_budget(max_pixels) && 4096 * GROUP_BYTES > codes_budget(max_pixels));
    let decoded = decode(&file, max_pixels, 64).expect("the one group used fits the budget");
    let Upright::Rgb(image) = decoded.into_upright() else { panic!("an opaque frame decodes to RGB") };
    assert_eq!(image.dimensions(), (4, 4));
    assert!(image.pixels().all(|pixel| pixel.0 == LOSSLESS_RGB), "{:?}", image.get_pixel(0, 0));
}

#[test]
fn groups_used_beyond_the_budget_refuse_the_image() {
    let file = lossless_webp(4, 4, 1);
    assert!(GROUP_BYTES > codes_budget(4096) && GROUP_BYTES <= codes_budget(8192));
    decode(&file, 8192, 64).expect("within the budget");
    let refused = decode(&file, 4096, 64);
    assert!(
        matches!(&refused, Err(Error::DecoderLimit(message)) if message.contains("lossless prefix codes need more than the 16384 bytes")),
        "{refused:?}"
    );
}

#[test]
fn a_file_libwebp_wrote_with_several_groups_decodes_to_exactly_its_pixels() {
    // 160×120 RGBA from a photograph, written by libwebp 1.6 (Pillow's `lossless=True,
    // method=6, exact=True`): six groups of prefix codes. The PNG holds the same pixels.
    let webp = include_bytes!("fixtures/libwebp-lossless.webp");
    let png = include_bytes!("fixtures/libwebp-lossless.png");
    let expected = image::load_from_memory(png).expect("the PNG decodes").into_rgba8();
    let Upright::Rgba(decoded) = decode(webp, 1_000_000, 4096).expect("decodes").into_upright() else {
        panic!("a frame with alpha decodes to RGBA")
    };
    assert_eq!(decoded.dimensions(), (160, 120));
    assert!(decoded == expected, "the pixels differ from the PNG's");
}
