//! An upload is held once: the image read from a body, raw or as the multipart field
//! `image`, peaks at little more than the body's own size in allocations, so that the
//! memory bound (`matte_common::memory`, one body per place) holds for forms too.
//! Counted by this test binary's allocator, which records the most bytes allocated at
//! once while a body is read.

mod support;

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use matte_inference::upload::{BodyKind, read_image};
use matte_serve::UploadPace;
use support::counting_allocator::{Counting, peak_while};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Not a power of two: a buffer grown by doubling would show its slack.
const IMAGE_BYTES: usize = (20 << 20) + 12_345;
const CHUNK_BYTES: usize = 64 << 10;

/// The most bytes allocated at once, beyond those allocated before, while the body of
/// `kind` made of `parts` is read, each chunk made only when the reader asks for it, as
/// bytes come off the wire. Returns the image's length and that peak.
fn peak_while_reading(parts: Vec<Part>, kind: BodyKind) -> (usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let declared: usize = parts.iter().map(Part::len).sum();
    let chunks = futures_util::stream::iter(parts.into_iter().flat_map(Part::chunks)).map(Ok::<_, std::io::Error>);
    let pace = UploadPace { grace: Duration::from_secs(60), min_bytes_per_second: 1 };
    let (image, peak) = peak_while(|| {
        runtime.block_on(async move {
            let body = Body::from_stream(chunks);
            read_image(body, &kind, Some(declared as u64), 32 << 20, pace, Instant::now()).await
        })
    });
    (image.expect("the image is read").len(), peak)
}

/// A stretch of the body: given bytes, or `length` bytes of the image made on demand.
enum Part {
    Text(&'static [u8]),
    Image(usize),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Text(text) => text.len(),
            Part::Image(length) => *length,
        }
    }

    fn chunks(self) -> Box<dyn Iterator<Item = Bytes> + Send> {
        match self {
            Part::Text(text) => Box::new(std::iter::once(Bytes::from_static(text))),
            Part::Image(length) => Box::new(
                (0..length.div_ceil(CHUNK_BYTES))
                    .map(move |i| Bytes::from(vec![7u8; CHUNK_BYTES.min(length - i * CHUNK_BYTES)])),
            ),
        }
    }
}

fn form() -> Vec<Part> {
    vec![
        Part::Text(b"--XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"),
        Part::Image(IMAGE_BYTES),
        Part::Text(b"\r\n--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XX--\r\n"),
    ]
}

#[test]
fn an_upload_is_held_once_whether_raw_or_in_a_form() {
    let (raw_length, raw_peak) = peak_while_reading(vec![Part::Image(IMAGE_BYTES)], BodyKind::Raw);
    let (form_length, form_peak) = peak_while_reading(form(), BodyKind::Multipart { boundary: "XX".into() });
    let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
    println!(
        "reading a {:.1} MiB image: a raw body peaks at {:.1} MiB allocated, a multipart form at {:.1} MiB",
        mib(IMAGE_BYTES),
        mib(raw_peak),
        mib(form_peak)
    );
    assert_eq!((raw_length, form_length), (IMAGE_BYTES, IMAGE_BYTES));
    // The image itself and a few chunks in flight; a second copy, or a buffer grown by
    // doubling, would be far more.
    let bound = IMAGE_BYTES + 16 * CHUNK_BYTES;
    assert!(raw_peak <= bound, "raw: {:.1} MiB", mib(raw_peak));
    assert!(form_peak <= bound, "multipart: {:.1} MiB", mib(form_peak));
}
