//! Reading the uploaded image off the wire, raw or as the multipart field `image`,
//! within the body limit and at a minimum pace.
//!
//! A request holds its place while it uploads, so an upload that stalls or trickles
//! must lose that place within seconds, not when the client gives up: after a grace
//! period, the bytes received must keep up a minimum rate, with at most the grace in
//! hand (see [`matte_serve::pace`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};

use matte_serve::{BodyError, UploadPace, paced_chunks};

use crate::Error;

/// How the image travels in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Raw,
    /// `multipart/form-data` with this boundary.
    Multipart {
        boundary: String,
    },
}

/// Reads the image: the whole raw body, or the bytes of the multipart field `image`.
/// `expected` is the declared `Content-Length`, used to size the buffer once.
pub async fn read_image(
    body: Body,
    kind: &BodyKind,
    expected: Option<u64>,
    limit: usize,
    pace: UploadPace,
    started: Instant,
) -> Result<Bytes, Error> {
    let chunks = paced_chunks(body, limit, pace, started);
    let capacity = expected.map_or(0, |length| length.min(limit as u64) as usize);
    match kind {
        BodyKind::Raw => collect(chunks, capacity, limit, Error::Body).await,
        BodyKind::Multipart { boundary } => {
            let framing = Arc::new(FramingGauge::default());
            let chunks = OneChunkAtATime::new(chunks).map({
                let framing = framing.clone();
                move |chunk| framing.hand(chunk?)
            });
            let mut multipart = multer::Multipart::new(chunks, boundary.clone());
            let mut image = None;
            // Read to the end, the fields after the image too (skipped, not held): a
            // client still sending them when the answer goes out would see its
            // connection reset instead of the answer.
            loop {
                framing.begin();
                let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? else { break };
                framing.end();
                if field.name() == Some("image") && image.is_none() {
                    // The field is the body less its framing: the body's length bounds it.
                    image = Some(collect(field, capacity, limit, multipart_error).await?);
                } else {
                    while field.chunk().await.map_err(multipart_error)?.is_some() {}
                }
            }
            image.ok_or_else(|| Error::BadRequest("the multipart body has no field named `image`".into()))
        }
    }
}

/// The bytes of `chunks` in one buffer of `capacity` (the declared length), so that
/// they are held once: a buffer grown as they come holds its old and new allocations
/// at once while it grows. Without a declared length it grows, but never past `limit`,
/// the most the body may hold.
async fn collect<E>(
    chunks: impl Stream<Item = Result<Bytes, E>>,
    capacity: usize,
    limit: usize,
    error: impl Fn(E) -> Error,
) -> Result<Bytes, Error> {
    let mut collected = Vec::with_capacity(capacity);
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(&error)?;
        make_room(&mut collected, chunk.len(), limit);
        collected.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(collected))
}

/// Room in `buffer` for `more` bytes: twice what it holds, as a `Vec` grows, but no
/// more than `limit` unless the bytes themselves need it (a `Vec` left to itself took
/// 32 MiB for a body of 16 MiB and a byte, against a 32 MiB limit, and held 48 MiB
/// while it moved).
fn make_room(buffer: &mut Vec<u8>, more: usize, limit: usize) {
    let needed = buffer.len().saturating_add(more);
    if needed > buffer.capacity() {
        let room = buffer.len().saturating_mul(2).min(limit).max(needed);
        buffer.reserve_exact(room - buffer.len());
    }
}

/// The body handed to the multipart parser one chunk per poll, each chunk at least
/// [`PARSER_CHUNK_BYTES`] but the last. The parser copies every chunk that is ready into
/// one buffer, grown as it fills, before the field's bytes are taken out of it: a client
/// sending faster than the image was copied out had its form held in that buffer and in
/// the image at once (a 20 MiB image peaked at 52 MiB). Handed one at a time, each chunk
/// is taken out before the next is read. And while it looks for a boundary or the end
/// of a part's headers, the parser searches all it holds again at every chunk: a form
/// that never frames its parts, sent in segments of a few hundred bytes, had it search
/// megabytes tens of thousands of times on the runtime's threads.
struct OneChunkAtATime<S> {
    chunks: Pin<Box<S>>,
    just_handed: bool,
    /// Bytes read but not yet handed, fewer than `PARSER_CHUNK_BYTES`.
    gathered: Vec<u8>,
    /// The body has ended: it is not polled again.
    ended: bool,
}

/// The least a chunk handed to the multipart parser holds, but the body's last.
const PARSER_CHUNK_BYTES: usize = 64 * 1024;

impl<S> OneChunkAtATime<S> {
    fn new(chunks: S) -> Self {
        OneChunkAtATime { chunks: Box::pin(chunks), just_handed: false, gathered: Vec::new(), ended: false }
    }

    /// Hands what was gathered.
    fn hand_gathered<E>(&mut self) -> Poll<Option<Result<Bytes, E>>> {
        self.just_handed = true;
        Poll::Ready(Some(Ok(Bytes::from(std::mem::take(&mut self.gathered)))))
    }
}

impl<S: Stream<Item = Result<Bytes, E>>, E> Stream for OneChunkAtATime<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if std::mem::take(&mut self.just_handed) {
            // Not waiting for anything: polled again at once, after the parser has taken
            // in the chunk it was just handed.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while !self.ended {
            match self.chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) if self.gathered.is_empty() && chunk.len() >= PARSER_CHUNK_BYTES => {
                    self.just_handed = true;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    self.gathered.extend_from_slice(&chunk);
                    if self.gathered.len() >= PARSER_CHUNK_BYTES {
                        return self.hand_gathered();
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if !self.gathered.is_empty() {
                        return self.hand_gathered();
                    }
                }
                // The body's error (the request fails: what was gathered goes with it),
                // or nothing yet.
                other => return other,
            }
        }
        Poll::Ready(None)
    }
}

/// The most of a multipart body handed to the parser while it looks for the first
/// boundary or the end of a part's headers, before the chunk that completes them: as a
/// request's head is bounded. The parser searches all it holds again at every chunk
/// until it finds them: a form of 32 MiB that never framed its first part had it search
/// gigabytes, chunk after chunk.
const MAX_FRAMING_BYTES: usize = 64 * 1024;

/// Why the multipart body could not be read, beside the parser's own reasons.
#[derive(Debug, thiserror::Error)]
enum FormError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(
        "the multipart body's framing (the text before its first part, or a part's headers) runs past {MAX_FRAMING_BYTES} bytes"
    )]
    FramingTooLong,
}

/// The bytes handed to the parser while it reads framing rather than a field's data.
#[derive(Debug, Default)]
struct FramingGauge {
    framing: AtomicBool,
    handed: AtomicUsize,
}

impl FramingGauge {
    /// The parser looks for the next part: what it is handed from now on is framing.
    fn begin(&self) {
        self.handed.store(0, Ordering::SeqCst);
        self.framing.store(true, Ordering::SeqCst);
    }

    /// The parser found a part: what follows is its data.
    fn end(&self) {
        self.framing.store(false, Ordering::SeqCst);
    }

    /// Hands `chunk` to the parser, unless it is still reading framing past the bound.
    fn hand(&self, chunk: Bytes) -> Result<Bytes, FormError> {
        if self.framing.load(Ordering::SeqCst) {
            let before = self.handed.fetch_add(chunk.len(), Ordering::SeqCst);
            if before >= MAX_FRAMING_BYTES {
                return Err(FormError::FramingTooLong);
            }
        }
        Ok(chunk)
    }
}

/// Our own error when the body stream failed (too large, too slow), else a 400 naming
/// what is malformed.
fn multipart_error(error: multer::Error) -> Error {
    match error {
        multer::Error::StreamReadFailed(source) => match source.downcast::<FormError>() {
            Ok(form) => match *form {
                FormError::Body(ours) => Error::Body(ours),
                framing @ FormError::FramingTooLong => Error::BadRequest(framing.to_string()),
            },
            Err(other) => Error::Body(BodyError::Read(other.to_string())),
        },
        other => Error::BadRequest(format!("malformed multipart body: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_body_of_no_declared_length_grows_its_buffer_no_larger_than_the_limit() {
        let limit = 1000;
        let mut buffer = Vec::new();
        for chunk in [64, 64, 200, 300, 371] {
            make_room(&mut buffer, chunk, limit);
            assert!(buffer.capacity() >= buffer.len() + chunk);
            buffer.extend(std::iter::repeat_n(0u8, chunk));
            assert!(buffer.capacity() <= limit, "{} bytes taken for {}", buffer.capacity(), buffer.len());
        }
        assert_eq!(buffer.len(), 999);
        // Growing still doubles: a body of many small chunks is not copied at each one.
        let mut buffer = vec![0u8; 100];
        buffer.shrink_to_fit();
        make_room(&mut buffer, 1, limit);
        assert!(buffer.capacity() >= 200, "{}", buffer.capacity());
    }

    fn body_of(chunks: Vec<&'static [u8]>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(|chunk| Ok::<_, std::io::Error>(Bytes::from_static(chunk))),
        ))
    }

    #[tokio::test]
    async fn raw_bodies_are_read_within_the_limit() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let read = read_image(body_of(vec![b"abc", b"def"]), &BodyKind::Raw, Some(6), 6, pace, Instant::now());
        assert_eq!(read.await.unwrap(), Bytes::from_static(b"abcdef"));
        let read = read_image(body_of(vec![b"abc", b"defg"]), &BodyKind::Raw, None, 6, pace, Instant::now());
        assert!(matches!(read.await, Err(Error::Body(BodyError::TooLarge { limit: 6 }))));
    }

    #[tokio::test]
    async fn the_parser_is_handed_chunks_of_at_least_its_least_but_the_last() {
        let small = futures_util::stream::iter((0..100).map(|_| Ok::<_, BodyError>(Bytes::from(vec![b'-'; 1024]))));
        let handed: Vec<usize> =
            OneChunkAtATime::new(small).map(|chunk| chunk.map(|bytes| bytes.len()).unwrap_or(0)).collect().await;
        assert_eq!(handed, [PARSER_CHUNK_BYTES, 100 * 1024 - PARSER_CHUNK_BYTES]);
        let large = futures_util::stream::iter((0..3).map(|_| Ok::<_, BodyError>(Bytes::from(vec![0u8; 100_000]))));
        let handed: Vec<usize> =
            OneChunkAtATime::new(large).map(|chunk| chunk.map(|bytes| bytes.len()).unwrap_or(0)).collect().await;
        assert_eq!(handed, [100_000; 3], "large chunks go as they come");
    }

    #[tokio::test]
    async fn multipart_finds_the_image_field_and_keeps_the_limit() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let form: &'static [u8] = b"--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
            --XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
            Content-Type: image/png\r\n\r\nPIXELS\r\n--XX--\r\n";
        let kind = BodyKind::Multipart { boundary: "XX".into() };
        let read = read_image(body_of(vec![form]), &kind, None, 1000, pace, Instant::now());
        assert_eq!(read.await.unwrap(), Bytes::from_static(b"PIXELS"));
        let read = read_image(body_of(vec![form]), &kind, None, 50, pace, Instant::now());
        assert!(matches!(read.await, Err(Error::Body(BodyError::TooLarge { limit: 50 }))));
    }

    #[tokio::test]
    async fn a_form_whose_framing_never_ends_is_refused_after_a_bounded_read() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let kind = BodyKind::Multipart { boundary: "XX".into() };
        let near_misses: &'static [u8] = [b'x', b'\r', b'\n', b'\r'].repeat(4096).leak();
        let chunks_read = Arc::new(AtomicUsize::new(0));
        // 32 MiB that never holds the first boundary, or a part's headers that never end.
        for form_start in [&b""[..], b"--XX\r\nContent-Disposition: form-data; name=\"image\"\r\n"] {
            chunks_read.store(0, Ordering::SeqCst);
            let counted = chunks_read.clone();
            let chunks =
                futures_util::stream::iter(std::iter::once(form_start).chain(std::iter::repeat_n(near_misses, 2048)))
                    .map(move |chunk| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(Bytes::from_static(chunk))
                    });
            let read = read_image(Body::from_stream(chunks), &kind, None, 64 << 20, pace, Instant::now()).await;
            assert!(matches!(&read, Err(Error::BadRequest(message)) if message.contains("framing")), "{read:?}");
            let read_chunks = chunks_read.load(Ordering::SeqCst);
            assert!(read_chunks < 64, "refused after {read_chunks} chunks of 16 KiB, not the 32 MiB");
        }
    }

    #[tokio::test]
    async fn the_fields_after_the_image_are_read_to_the_end_of_the_body() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let image: &'static [u8] = b"--XX\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nPIXELS\r\n";
        let next: &'static [u8] = b"--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n";
        let filler: &'static [u8] = b"a later note, ";
        // Only the field after the image needs this one, several chunks further.
        let after: &'static [u8] = b"its end\r\n--XX--\r\n";
        let read_after = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = read_after.clone();
        // Each chunk after a pause, as from a network: the parser cannot read ahead.
        let chunks = futures_util::stream::iter([image, next, filler, filler, filler, after]).then(move |chunk| {
            let seen = seen.clone();
            async move {
                tokio::task::yield_now().await;
                if std::ptr::eq(chunk, after) {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok::<_, std::io::Error>(Bytes::from_static(chunk))
            }
        });
        let kind = BodyKind::Multipart { boundary: "XX".into() };
        let read = read_image(Body::from_stream(chunks), &kind, None, 1000, pace, Instant::now()).await;
        assert_eq!(read.unwrap(), Bytes::from_static(b"PIXELS"));
        assert!(read_after.load(std::sync::atomic::Ordering::SeqCst), "the body was read to its end");
    }
}
