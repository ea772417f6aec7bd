//! WebP specifics: the frames a file holds, checked before any decoder reads them. A
//! WebP file is a RIFF container of chunks; its canvas size (the `VP8X` chunk's, or the
//! only frame's) is what a decoder reports first, and what the pixel limit is held to.
//! But the decoder decodes each frame (`VP8 `, `VP8L`, or one inside an `ANMF`) at the
//! size the frame's own header gives, before it compares that with the canvas: a 1×1
//! canvas holding a 16383×16383 frame passed the limit and had a gigabyte allocated.
//! And it reads an `EXIF` chunk into a buffer of the length the chunk declares, up to
//! 4 GiB whatever the file holds.
//!
//! Then the decoding, held to a memory limit. A lossless frame's pixels are coded with
//! groups of prefix codes, each up to tens of kilobytes once built, and the stream names
//! as many groups as it likes, up to 65,536: a few megabytes of them declared a gigabyte
//! and more of tables, in a file of one pixel. The decoder (patched: see
//! `vendor/image-webp/PATCHED.md`) builds only the groups a frame uses and stops once
//! those exceed its limit.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage, RgbaImage};
use image_webp::{DecodingError, WebPDecoder};

use crate::Error;

/// Bytes a decode holds per pixel of its frame beside the prefix codes. The most is a
/// lossy frame with alpha: its RGBA output, the frame's YUV planes and the alpha plane
/// decoded as ARGB at once, 10.5 bytes a pixel measured (`tests/decode_memory.rs`,
/// without scaling); a lossless one holds 4. Counted at 8, the codes' budget had such a
/// frame whose alpha declared many groups of codes reach 18.
pub const PIXEL_BYTES: u64 = 12;

/// A decoder of `bytes` whose prefix codes may hold at most `codes_budget` bytes.
pub fn open(bytes: &[u8], codes_budget: u64) -> Result<WebPDecoder<Cursor<&[u8]>>, Error> {
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|error| decode_error(error, codes_budget))?;
    decoder.set_memory_limit(usize::try_from(codes_budget).unwrap_or(usize::MAX));
    Ok(decoder)
}

/// The orientation the file's EXIF gives; upright when it has none or a broken one,
/// which is no reason to refuse an image that decodes.
pub fn orientation(decoder: &mut WebPDecoder<Cursor<&[u8]>>) -> Orientation {
    decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| Orientation::from_exif_chunk(&exif))
        .unwrap_or(Orientation::NoTransforms)
}

/// The image (its first frame when animated), RGBA when the file has alpha.
pub fn read_image(mut decoder: WebPDecoder<Cursor<&[u8]>>, codes_budget: u64) -> Result<DynamicImage, Error> {
    let (width, height) = decoder.dimensions();
    let length = decoder.output_buffer_size().ok_or_else(|| corrupt("its canvas is too large to address"))?;
    let mut pixels = vec![0; length];
    decoder.read_image(&mut pixels).map_err(|error| decode_error(error, codes_budget))?;
    let image = if decoder.has_alpha() {
        RgbaImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| corrupt("its pixels do not fill its canvas"))
}

fn decode_error(error: DecodingError, codes_budget: u64) -> Error {
    match error {
        DecodingError::MemoryLimitExceeded => Error::DecoderLimit(format!(
            "the WebP's lossless prefix codes need more than the {codes_budget} bytes a decode may hold"
        )),
        other => corrupt(&other.to_string()),
    }
}

/// A frame's size as its own header gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameSize {
    width: u32,
    height: u32,
}

/// Refuses a WebP file whose chunks run past its end, or one of whose frames is larger
/// than its canvas or holds more than `max_pixels`.
pub fn check_frames(bytes: &[u8], max_pixels: u64) -> Result<(), Error> {
    let chunks = bytes.get(12..).ok_or_else(|| corrupt("its RIFF header is cut short"))?;
    let mut canvas = None;
    for (fourcc, payload) in chunks_of(chunks)? {
        match &fourcc {
            b"VP8X" => canvas = Some(canvas_size(payload)?),
            b"ANMF" => check_animation_frame(payload, canvas, max_pixels)?,
            _ => check_frame(&fourcc, payload, canvas, max_pixels)?,
        }
    }
    Ok(())
}

/// Checks an `ANMF` chunk: after 16 bytes of position, size (24-bit sides less one),
/// duration and flags, its bitstream (`VP8 ` or `VP8L`), behind an `ALPH` chunk for a
/// lossy one with alpha, whose size must be the frame's. The decoder takes whatever chunk
/// follows an `ALPH` for a `VP8 ` one, and decodes a frame before it compares sizes,
/// if it does: a 1×1 frame holding a 16383×16383 bitstream under another name had it
/// decoded past the pixel limit, and a bitstream larger than its frame wrote past the
/// frame's buffer (a panic).
fn check_animation_frame(payload: &[u8], canvas: Option<FrameSize>, max_pixels: u64) -> Result<(), Error> {
    let cut_short = || corrupt("an ANMF chunk is cut short");
    let declared = FrameSize {
        width: side_at(payload, 6).ok_or_else(cut_short)?,
        height: side_at(payload, 9).ok_or_else(cut_short)?,
    };
    let chunks = chunks_of(payload.get(16..).ok_or_else(cut_short)?)?;
    let named: Vec<(&[u8; 4], &[u8])> = chunks.iter().map(|(fourcc, payload)| (fourcc, *payload)).collect();
    let bitstream = match named.as_slice() {
        [(b"ALPH", _), (b"VP8 ", bitstream), ..] | [(b"VP8 ", bitstream), ..] => lossy_frame_size(bitstream)?,
        [(b"ALPH", _), ..] => return Err(corrupt("an animation frame's alpha is followed by no VP8 bitstream")),
        [(b"VP8L", bitstream), ..] => lossless_frame_size(bitstream)?,
        _ => return Err(corrupt("an animation frame holds no VP8 or VP8L bitstream")),
    };
    if bitstream != declared {
        return Err(corrupt(&format!(
            "an animation frame of {}x{} holds a bitstream of {}x{}",
            declared.width, declared.height, bitstream.width, bitstream.height
        )));
    }
    for (fourcc, payload) in chunks {
        check_frame(&fourcc, payload, canvas, max_pixels)?;
    }
    Ok(())
}

/// A chunk: its four-character code and its payload.
type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The chunks of `bytes`; an error if one runs past the end.
fn chunks_of(mut bytes: &[u8]) -> Result<Vec<Chunk<'_>>, Error> {
    let mut chunks = Vec::new();
    while bytes.len() >= 8 {
        let fourcc: [u8; 4] = bytes[..4].try_into().map_err(|_| corrupt("a chunk is cut short"))?;
        let size = u32::from_le_bytes(bytes[4..8].try_into().map_err(|_| corrupt("a chunk is cut short"))?);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let payload = bytes.get(8..8usize.saturating_add(size)).ok_or_else(|| {
            corrupt(&format!(
                "its {} chunk declares {size} bytes, more than the file holds",
                String::from_utf8_lossy(&fourcc)
            ))
        })?;
        chunks.push((fourcc, payload));
        // Chunks are padded to an even length.
        let next = 8 + size + size % 2;
        bytes = bytes.get(next..).unwrap_or_default();
    }
    Ok(chunks)
}

/// The canvas of a `VP8X` chunk: its two sides after 4 bytes of flags.
fn canvas_size(payload: &[u8]) -> Result<FrameSize, Error> {
    let cut_short = || corrupt("its VP8X chunk is cut short");
    Ok(FrameSize {
        width: side_at(payload, 4).ok_or_else(cut_short)?,
        height: side_at(payload, 7).ok_or_else(cut_short)?,
    })
}

/// A side as the extended format writes it, at `at` in `bytes`: 24 bits, less one.
fn side_at(bytes: &[u8], at: usize) -> Option<u32> {
    let side = bytes.get(at..at + 3)?;
    Some(1 + (u32::from(side[0]) | u32::from(side[1]) << 8 | u32::from(side[2]) << 16))
}

/// Checks a frame chunk (`VP8 ` or `VP8L`) against the canvas and the pixel limit;
/// other chunks pass.
fn check_frame(fourcc: &[u8; 4], payload: &[u8], canvas: Option<FrameSize>, max_pixels: u64) -> Result<(), Error> {
    let frame = match fourcc {
        b"VP8 " => lossy_frame_size(payload)?,
        b"VP8L" => lossless_frame_size(payload)?,
        _ => return Ok(()),
    };
    let pixels = u64::from(frame.width) * u64::from(frame.height);
    if pixels > max_pixels {
        return Err(Error::TooManyPixels { width: frame.width, height: frame.height, pixels, limit: max_pixels });
    }
    match canvas {
        Some(canvas) if frame.width > canvas.width || frame.height > canvas.height => Err(corrupt(&format!(
            "a frame of {}x{} does not fit its canvas of {}x{}",
            frame.width, frame.height, canvas.width, canvas.height
        ))),
        _ => Ok(()),
    }
}

/// A lossy frame's size: after a 3-byte frame tag and the start code `9d 01 2a`, two
/// 14-bit sides (the top two bits of each are a scale).
fn lossy_frame_size(payload: &[u8]) -> Result<FrameSize, Error> {
    let header = payload.get(3..10).ok_or_else(|| corrupt("a VP8 frame header is cut short"))?;
    if header[..3] != [0x9d, 0x01, 0x2a] {
        return Err(corrupt("a VP8 frame lacks its start code"));
    }
    let side = |low: u8, high: u8| u32::from(u16::from_le_bytes([low, high]) & 0x3fff);
    Ok(FrameSize { width: side(header[3], header[4]), height: side(header[5], header[6]) })
}

/// A lossless frame's size: after the signature byte `2f`, two 14-bit sides less one.
fn lossless_frame_size(payload: &[u8]) -> Result<FrameSize, Error> {
    let header = payload.get(..5).ok_or_else(|| corrupt("a VP8L frame header is cut short"))?;
    if header[0] != 0x2f {
        return Err(corrupt("a VP8L frame lacks its signature"));
    }
    let bits = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    Ok(FrameSize { width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) })
}

fn corrupt(what: &str) -> Error {
    Error::CorruptImage(format!("the WebP file is malformed: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lossless WebP of `width`×`height` grey pixels, as `image` encodes it (a simple
    /// file: RIFF header and one `VP8L` chunk).
    fn lossless(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::GrayImage::new(width, height)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::WebP)
            .unwrap();
        bytes
    }

    /// `simple`'s frame behind a `VP8X` chunk declaring a canvas of `width`×`height`.
    fn extended(simple: &[u8], width: u32, height: u32) -> Vec<u8> {
        let side = |value: u32| (value - 1).to_le_bytes()[..3].to_vec();
        let vp8x = [&b"VP8X"[..], &10u32.to_le_bytes(), &[0; 4], &side(width), &side(height)].concat();
        let chunks = [&vp8x[..], &simple[12..]].concat();
        [&b"RIFF"[..], &(4 + chunks.len() as u32).to_le_bytes(), b"WEBP", &chunks].concat()
    }

    #[test]
    fn a_frame_larger_than_its_canvas_is_refused_before_decoding() {
        let frame = lossless(64, 64);
        assert!(check_frames(&frame, 10_000).is_ok());
        assert!(check_frames(&extended(&frame, 64, 64), 10_000).is_ok());
        let hidden = extended(&frame, 8, 8);
        assert!(
            matches!(check_frames(&hidden, 10_000), Err(Error::CorruptImage(message)) if message.contains("64x64 does not fit its canvas of 8x8")),
            "{:?}",
            check_frames(&hidden, 10_000)
        );
        // The canvas passes the pixel limit; the frame does not.
        assert!(matches!(check_frames(&extended(&frame, 8, 8), 100), Err(Error::TooManyPixels { pixels: 4096, .. })));
        assert!(matches!(crate::imaging::decode(&hidden, 100, 64), Err(Error::TooManyPixels { .. })));
    }

    #[test]
    fn the_orientation_its_exif_gives_turns_it_upright() {
        // "Rotate 90° clockwise", big-endian TIFF: one IFD entry, Orientation = 6.
        let tiff = [&b"MM\0\x2a\0\0\0\x08"[..], &[0, 1], &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], &[0; 4]].concat();
        let exif = [&b"EXIF"[..], &(tiff.len() as u32).to_le_bytes(), &tiff].concat();
        let mut file = extended(&lossless(4, 2), 4, 2);
        file[20] |= 0x08; // the VP8X flag: EXIF follows
        file.extend_from_slice(&exif);
        let riff_size = (file.len() - 8) as u32;
        file[4..8].copy_from_slice(&riff_size.to_le_bytes());
        let upright = crate::imaging::decode(&file, 100, 64).unwrap().into_upright();
        let crate::imaging::Upright::Rgb(image) = upright else { panic!("an opaque frame decodes to RGB") };
        assert_eq!(image.dimensions(), (2, 4));
    }

    #[test]
    fn a_chunk_declaring_more_than_the_file_holds_is_refused() {
        let mut frame = lossless(16, 16);
        // An EXIF chunk of 4 GiB, as its header says, in 8 bytes.
        frame.extend_from_slice(&[&b"EXIF"[..], &u32::MAX.to_le_bytes()].concat());
        let refused = check_frames(&frame, 10_000);
        assert!(
            matches!(&refused, Err(Error::CorruptImage(message)) if message.contains("EXIF chunk declares 4294967295 bytes")),
            "{refused:?}"
        );
    }
}
