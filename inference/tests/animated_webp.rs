//! An animated WebP's frames hold what their `ANMF` chunks declare: a lossy frame with
//! alpha is an `ALPH` chunk and a `VP8 ` bitstream of the frame's size. A file whose
//! bitstream is larger than its frame, or hides under another name after the alpha, is
//! refused before any decoder reads it, and the decoder itself refuses it rather than
//! write past the frame's buffer (a panic) or decode it past the pixel limit.

use std::io::Cursor;

use matte_inference::Error;
use matte_inference::imaging::{Upright, decode};

/// 32×32 RGBA in two frames, written by libwebp through Pillow (`save_all=True`, lossy
/// with alpha): the first frame an `ANMF` holding `ALPH` and `VP8 `, its left half
/// green at half opacity, its right half opaque red.
const ANIMATED: &[u8] = include_bytes!("fixtures/pillow-animated-alpha.webp");

/// Where the first `ANMF` chunk's payload begins: after the RIFF header, `VP8X` (10
/// bytes) and `ANIM` (6), each behind an 8-byte chunk header.
const FIRST_FRAME: usize = 12 + 8 + 10 + 8 + 6 + 8;

/// `ANIMATED` with the first frame's declared size set to `width`×`height`.
fn frame_declared(width: u32, height: u32) -> Vec<u8> {
    let mut file = ANIMATED.to_vec();
    assert_eq!(&file[FIRST_FRAME - 8..FIRST_FRAME - 4], b"ANMF", "the fixture's layout");
    file[FIRST_FRAME + 6..FIRST_FRAME + 9].copy_from_slice(&(width - 1).to_le_bytes()[..3]);
    file[FIRST_FRAME + 9..FIRST_FRAME + 12].copy_from_slice(&(height - 1).to_le_bytes()[..3]);
    file
}

/// `ANIMATED` with its first frame declared 16×16 and given an uncompressed alpha of
/// that size, its 32×32 bitstream kept: consistent up to the bitstream, which the
/// released decoder decoded and wrote into the 16×16 frame's buffer (and panicked).
fn bitstream_larger_than_a_consistent_frame() -> Vec<u8> {
    let file = frame_declared(16, 16);
    let anmf_size = u32::from_le_bytes(file[FIRST_FRAME - 4..FIRST_FRAME].try_into().unwrap()) as usize;
    let alpha = FIRST_FRAME + 16;
    let alpha_size = u32::from_le_bytes(file[alpha + 4..alpha + 8].try_into().unwrap()) as usize;
    let bitstream = alpha + 8 + alpha_size + alpha_size % 2;
    // Compression 0 (none), no filter, no pre-processing: one byte a pixel, padded.
    let raw_alpha = [&b"ALPH"[..], &257u32.to_le_bytes(), &[0], &[128; 256], &[0]].concat();
    let frame = [&file[FIRST_FRAME..alpha], &raw_alpha, &file[bitstream..FIRST_FRAME + anmf_size]].concat();
    let anmf = [&b"ANMF"[..], &(frame.len() as u32).to_le_bytes(), &frame].concat();
    let chunks = [&file[12..FIRST_FRAME - 8], &anmf, &file[FIRST_FRAME + anmf_size..]].concat();
    [&b"RIFF"[..], &(4 + chunks.len() as u32).to_le_bytes(), b"WEBP", &chunks].concat()
}

/// `ANIMATED` with the chunk after the first frame's `ALPH` renamed `fourcc`.
fn bitstream_named(fourcc: &[u8; 4]) -> Vec<u8> {
    let mut file = ANIMATED.to_vec();
    let alpha = FIRST_FRAME + 16;
    assert_eq!(&file[alpha..alpha + 4], b"ALPH", "the fixture's layout");
    let alpha_size = u32::from_le_bytes(file[alpha + 4..alpha + 8].try_into().unwrap()) as usize;
    let bitstream = alpha + 8 + alpha_size + alpha_size % 2;
    assert_eq!(&file[bitstream..bitstream + 4], b"VP8 ", "the fixture's layout");
    file[bitstream..bitstream + 4].copy_from_slice(fourcc);
    file
}

fn assert_refused_as_malformed(result: Result<impl std::fmt::Debug, Error>, words: &str) {
    assert!(
        matches!(&result, Err(Error::CorruptImage(message)) if message.contains(words)),
        "expected a malformed WebP ({words}): {result:?}"
    );
}

#[test]
fn the_first_frame_of_an_animation_with_alpha_decodes() {
    let Upright::Rgba(image) = decode(ANIMATED, 1_000_000, 4096).expect("decodes").into_upright() else {
        panic!("a frame with alpha decodes to RGBA")
    };
    assert_eq!(image.dimensions(), (32, 32));
    let (left, right) = (image.get_pixel(4, 16).0, image.get_pixel(28, 16).0);
    assert!(left[3].abs_diff(128) <= 4 && left[1] > 150, "half-transparent green: {left:?}");
    assert!(right[3] == 255 && right[0] > 150, "opaque red: {right:?}");
}

#[test]
fn a_bitstream_larger_than_its_frame_is_refused_before_decoding() {
    for file in [frame_declared(16, 16), bitstream_larger_than_a_consistent_frame()] {
        assert_refused_as_malformed(decode(&file, 1_000_000, 4096), "of 16x16 holds a bitstream of 32x32");
    }
}

#[test]
fn a_bitstream_under_another_name_after_the_alpha_is_refused_before_decoding() {
    assert_refused_as_malformed(
        decode(&bitstream_named(b"XXXX"), 1_000_000, 4096),
        "alpha is followed by no VP8 bitstream",
    );
}

/// The decoder on its own, as the pod's check would not stop it: it refuses both files
/// rather than panic or decode the stray chunk.
#[test]
fn the_decoder_refuses_them_too() {
    for file in [bitstream_larger_than_a_consistent_frame(), bitstream_named(b"XXXX")] {
        let mut decoder = image_webp::WebPDecoder::new(Cursor::new(&file)).expect("the header reads");
        let mut pixels = vec![0; decoder.output_buffer_size().expect("a small canvas")];
        let read = std::panic::catch_unwind(move || decoder.read_image(&mut pixels));
        assert!(matches!(read, Ok(Err(_))), "an error, not a panic or an image: {read:?}");
    }
}
