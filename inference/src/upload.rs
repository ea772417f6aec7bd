//! Reading the uploaded image off the wire, raw or as the multipart field `image`,
//! within the body limit and at a minimum pace.
//!
//! A request holds its place while it uploads, so an upload that stalls or trickles
//! must lose that place within seconds, not when the client gives up: after a grace
//! period, the bytes received must keep up a minimum average rate (see
//! [`UploadPace::deadline`]).

use std::time::Instant;

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};

use matte_serve::UploadPace;

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
    let chunks = guarded(body, limit, pace, started);
    match kind {
        BodyKind::Raw => {
            let capacity = expected.map_or(0, |length| length.min(limit as u64) as usize);
            let mut collected = Vec::with_capacity(capacity);
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                collected.extend_from_slice(&chunk?);
            }
            Ok(Bytes::from(collected))
        }
        BodyKind::Multipart { boundary } => {
            let mut multipart = multer::Multipart::new(chunks, boundary.clone());
            while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                if field.name() == Some("image") {
                    return field.bytes().await.map_err(multipart_error);
                }
            }
            Err(Error::BadRequest("the multipart body has no field named `image`".into()))
        }
    }
}

/// The body's chunks, ending in an error once more than `limit` bytes arrived or the
/// upload falls behind `pace`.
fn guarded(
    body: Body,
    limit: usize,
    pace: UploadPace,
    started: Instant,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
    let state = (body.into_data_stream(), 0usize, false);
    futures_util::stream::unfold(state, move |(mut stream, received, finished)| async move {
        if finished {
            return None;
        }
        let next = tokio::time::timeout_at(pace.deadline(started, received).into(), stream.next()).await;
        let item = match next {
            Err(_) => Err(Error::UploadTooSlow {
                received,
                seconds: started.elapsed().as_secs_f64(),
                min_bytes_per_second: pace.min_bytes_per_second,
            }),
            Ok(None) => return None,
            Ok(Some(Err(error))) => Err(Error::BodyRead(error.to_string())),
            Ok(Some(Ok(chunk))) if received + chunk.len() > limit => Err(Error::BodyTooLarge { limit }),
            Ok(Some(Ok(chunk))) => {
                let received = received + chunk.len();
                return Some((Ok(chunk), (stream, received, false)));
            }
        };
        Some((item, (stream, received, true)))
    })
}

/// Our own error when the body stream failed (too large, too slow), else a 400 naming
/// what is malformed.
fn multipart_error(error: multer::Error) -> Error {
    match error {
        multer::Error::StreamReadFailed(source) => match source.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::BodyRead(other.to_string()),
        },
        other => Error::BadRequest(format!("malformed multipart body: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        assert!(matches!(read.await, Err(Error::BodyTooLarge { limit: 6 })));
    }

    #[tokio::test]
    async fn a_stalled_upload_is_cut_off_after_the_grace() {
        let pace = UploadPace { grace: Duration::from_millis(50), min_bytes_per_second: 1000 };
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))])
            .chain(futures_util::stream::pending());
        let read = read_image(Body::from_stream(stalled), &BodyKind::Raw, None, 100, pace, Instant::now());
        let outcome = tokio::time::timeout(Duration::from_secs(5), read).await.expect("cut off in time");
        assert!(matches!(outcome, Err(Error::UploadTooSlow { received: 2, .. })), "{outcome:?}");
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
        assert!(matches!(read.await, Err(Error::BodyTooLarge { limit: 50 })));
    }
}
