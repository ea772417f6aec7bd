//! JPEG specifics: where a JPEG ends, and shrink-on-load. A JPEG stores 8×8 blocks of
//! DCT coefficients, so a decoder can produce the image at 1/2, 1/4 or 1/8 of its size
//! by running a smaller inverse DCT on each block (as libjpeg's `scale_denom` and
//! libvips' `shrink` do): the pixels the output would throw away are never made.

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{CodingProcess, PixelFormat};

use crate::Error;

/// The DCT scalings a decoder offers, as divisors of each side, largest first.
const SHRINKS: [u32; 4] = [8, 4, 2, 1];

/// The largest DCT shrink (1, 2, 4 or 8) at which a `width`×`height` JPEG still
/// decodes to at least `output` on both sides, so that the output is made by scaling
/// down only, never up.
pub fn shrink_for(width: u32, height: u32, output: (u32, u32)) -> u32 {
    SHRINKS
        .into_iter()
        .find(|&shrink| {
            let (shrunk_width, shrunk_height) = shrunk_size(width, height, shrink);
            shrunk_width >= output.0 && shrunk_height >= output.1
        })
        .unwrap_or(1)
}

/// The size a `width`×`height` JPEG decodes to at `shrink`: a partial block still
/// yields a pixel.
pub fn shrunk_size(width: u32, height: u32, shrink: u32) -> (u32, u32) {
    (width.div_ceil(shrink), height.div_ceil(shrink))
}

/// A JPEG's header as the shrinking decoder read it: enough to check the limits and
/// choose a shrink before any pixel buffer exists.
pub struct Header<'a> {
    decoder: jpeg_decoder::Decoder<&'a [u8]>,
    pub width: u32,
    pub height: u32,
    /// Whether the shrinking decoder can produce this JPEG's pixels (8-bit greyscale
    /// or colour); CMYK and 12-bit JPEGs are left to the full decoder.
    pub shrinkable: bool,
}

/// Reads the header of `jpeg` (a whole JPEG, ending at its end-of-image marker), and
/// refuses a lossless one (`SOF3`, a medical imaging format no camera or browser
/// writes): it has no DCT blocks to shrink, and the shrinking decoder took it for one
/// that has, decoded it in full at about 24 bytes a pixel, far over what a decode may
/// hold, and returned rows of it as the shrunk image; the full decoder cannot read it.
pub fn read_header(jpeg: &[u8]) -> Result<Header<'_>, Error> {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    decoder.read_info().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| Error::CorruptImage("the JPEG has no frame header".into()))?;
    if info.coding_process == CodingProcess::Lossless {
        return Err(Error::UnsupportedJpeg("lossless (SOF3)"));
    }
    let shrinkable = matches!(info.pixel_format, PixelFormat::L8 | PixelFormat::RGB24);
    Ok(Header { decoder, width: u32::from(info.width), height: u32::from(info.height), shrinkable })
}

impl Header<'_> {
    /// Decodes at `shrink` (2, 4 or 8), allocating at most `max_alloc` bytes for the
    /// pixels, with the orientation its EXIF block gives. `None` when the decoder
    /// would not produce exactly the size [`shrunk_size`] promises: the caller then
    /// decodes in full rather than risk an output smaller than asked.
    pub fn decode_shrunk(
        mut self,
        shrink: u32,
        max_alloc: usize,
    ) -> Result<Option<(DynamicImage, Orientation)>, Error> {
        let expected = shrunk_size(self.width, self.height, shrink);
        // Both sides fit in u16: they were read from a JPEG header.
        let requested = (expected.0 as u16, expected.1 as u16);
        let scaled = self.decoder.scale(requested.0, requested.1).map_err(corrupt)?;
        if (u32::from(scaled.0), u32::from(scaled.1)) != expected {
            return Ok(None);
        }
        self.decoder.set_max_decoding_buffer_size(max_alloc);
        let pixels = self.decoder.decode().map_err(corrupt)?;
        let (width, height) = expected;
        let short = || Error::CorruptImage("the JPEG decoded to fewer pixels than its header declares".into());
        let image = match self.decoder.info().map(|info| info.pixel_format) {
            Some(PixelFormat::RGB24) => {
                DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels).ok_or_else(short)?)
            }
            Some(PixelFormat::L8) => {
                DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, pixels).ok_or_else(short)?)
            }
            _ => return Ok(None),
        };
        // A broken EXIF block is no reason to refuse an image that decodes.
        let orientation =
            self.decoder.exif_data().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
        Ok(Some((image, orientation)))
    }
}

fn corrupt(error: jpeg_decoder::Error) -> Error {
    Error::CorruptImage(error.to_string())
}

/// Where a JPEG ends, and how many scans it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Its length up to and including its end-of-image marker.
    pub length: usize,
    /// Its start-of-scan markers: a progressive JPEG's decoder walks every block of the
    /// image once per scan, however few bytes the scan holds.
    pub scans: u32,
}

/// A JPEG's [`Extent`], found by walking its segments (entropy-coded data cannot hold a
/// marker: 0xFF is escaped there); `None` when the stream ends first, or a segment
/// begins with a byte pair that is no marker. Decoders fill a truncated scan with grey
/// rather than failing, so this is also the truncation check.
///
/// Its scans are the most of those the walk met and of every start-of-scan byte pair
/// up to the end: a decoder that meets something it does not expect between segments
/// (jpeg-decoder) looks for the next marker byte by byte, and finds scans inside what a
/// walk by lengths skipped (a payload behind `FF 00` and a length, thousands of empty
/// scans of a few bytes each). No decoder can find a scan that is not such a pair.
pub fn jpeg_extent(bytes: &[u8]) -> Option<Extent> {
    let mut at = 2; // after SOI
    let mut scans = 0u32;
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at + 1)? == 0xFF {
            at += 1; // fill bytes
        }
        let marker = bytes[at + 1];
        match marker {
            0xD9 => {
                let length = at + 2;
                let scan_markers = bytes[..length].windows(2).filter(|pair| pair == &[0xFF, 0xDA]).count();
                let scans = scans.max(u32::try_from(scan_markers).unwrap_or(u32::MAX));
                return Some(Extent { length, scans });
            }
            0x01 | 0xD0..=0xD7 => at += 2,
            // Stuffing or a reserved code: no segment begins so.
            0x00 | 0x02..=0xBF => return None,
            _ => {
                let length = usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]));
                at += 2 + length;
                if marker == 0xDA {
                    scans = scans.saturating_add(1);
                    at = next_marker_after_scan(bytes, at)?;
                }
            }
        }
    }
}

/// The position of the first marker after entropy-coded data starting at `from`,
/// skipping stuffed bytes (FF 00) and restart markers.
fn next_marker_after_scan(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let offset = bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        at += offset;
        match *bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::output_size;

    #[test]
    fn the_shrink_is_the_largest_that_still_covers_the_output() {
        // 12 MP at 2048: half would be 2000 wide, under 2048, so the whole image is needed.
        assert_eq!(shrink_for(4000, 3000, output_size(4000, 3000, 2048)), 1);
        // 24 MP at 2048: half is 3000×2000, still above 2048×1365.
        assert_eq!(shrink_for(6000, 4000, output_size(6000, 4000, 2048)), 2);
        // 12 MP at 1024: a quarter is exactly 1000 wide, under 1024; half is enough.
        assert_eq!(shrink_for(4000, 3000, output_size(4000, 3000, 1024)), 2);
        assert_eq!(shrink_for(4096, 3072, output_size(4096, 3072, 1024)), 4, "a quarter fits exactly");
        assert_eq!(shrink_for(8000, 6000, output_size(8000, 6000, 640)), 8);
        // Nothing to scale down: no shrink.
        assert_eq!(shrink_for(640, 480, output_size(640, 480, 2048)), 1);
    }

    #[test]
    fn a_shrunk_decode_is_never_smaller_than_the_output() {
        for width in (1..3000).step_by(37) {
            for height in [1, 7, 8, 9, 500, 1999, 4001, 65_535] {
                for max_side in [1, 100, 640, 1024, 2048] {
                    let output = output_size(width, height, max_side);
                    let shrink = shrink_for(width, height, output);
                    let (shrunk_width, shrunk_height) = shrunk_size(width, height, shrink);
                    assert!(
                        shrunk_width >= output.0 && shrunk_height >= output.1,
                        "{width}×{height} at {max_side}: shrink {shrink} gives {shrunk_width}×{shrunk_height} < {output:?}"
                    );
                    if shrink < 8 {
                        let (next_width, next_height) = shrunk_size(width, height, shrink * 2);
                        assert!(
                            next_width < output.0 || next_height < output.1,
                            "{width}×{height} at {max_side}: shrink {} would also do",
                            shrink * 2
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_block_still_yields_a_pixel() {
        assert_eq!(shrunk_size(4001, 3000, 2), (2001, 1500));
        assert_eq!(shrunk_size(9, 7, 8), (2, 1));
    }

    #[test]
    fn data_after_the_end_of_a_jpeg_is_not_part_of_it() {
        let mut jpeg = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut jpeg, 90);
        encoder.encode(&[9u8; 16 * 8 * 3], 16, 8, jpeg_encoder::ColorType::Rgb).unwrap();
        // A trailer as a Motion Photo has one: another stream, markers and all.
        let trailer = [b"\0\0\0\x18ftypmp42".as_slice(), &[0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD8], &jpeg[..40]].concat();
        let with_trailer = [jpeg.as_slice(), &trailer].concat();
        assert_eq!(jpeg_extent(&with_trailer), Some(Extent { length: jpeg.len(), scans: 1 }));
        assert_eq!(jpeg_extent(&jpeg[..jpeg.len() - 1]), None);
    }

    /// A lossless (`SOF3`) RGB JPEG of `width`×`height`: one prefix code (`0` for a
    /// difference of 0), one scan with predictor 1, every pixel predicted exactly.
    fn lossless_jpeg(width: u16, height: u16) -> Vec<u8> {
        let huffman = [&[0xFF, 0xC4, 0, 20, 0x00, 1][..], &[0; 15], &[0x00]].concat();
        let [w1, w0] = width.to_be_bytes();
        let [h1, h0] = height.to_be_bytes();
        let frame = [0xFF, 0xC3, 0, 17, 8, h1, h0, w1, w0, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0];
        let scan = [0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x00, 3, 0x00, 1, 0, 0];
        [&[0xFF, 0xD8][..], &huffman, &frame, &scan, &[0; 8], &[0xFF, 0xD9]].concat()
    }

    #[test]
    fn a_lossless_jpeg_is_refused_as_unsupported() {
        // Large enough to be shrunk: the shrinking decoder took it for a DCT JPEG.
        let jpeg = lossless_jpeg(64, 64);
        assert_eq!(jpeg_extent(&jpeg).map(|extent| extent.scans), Some(1), "a well-formed stream");
        let refused = crate::imaging::decode(&jpeg, 1_000_000, 16).map(|decoded| decoded.into_upright().dimensions());
        assert!(matches!(refused, Err(Error::UnsupportedJpeg("lossless (SOF3)"))), "{refused:?}");
        let error = refused.unwrap_err();
        assert_eq!((error.status().as_u16(), error.code()), (415, "unsupported_image_format"));
    }
}
