//! Reading a request body off the wire within a size limit and at the minimum pace
//! ([`UploadPace`]), with the errors a client is told when it does not: the same
//! limits, codes and messages whether it talks to a pod or to the gateway; and
//! refusing a request before its body is read, so that the client still sees the
//! answer.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt};

use crate::UploadPace;

/// Why a body could not be read: each the client's doing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the upload fell below {min_bytes_per_second} bytes/s: {received} bytes in {seconds:.1} s")]
    TooSlow { received: usize, seconds: f64, min_bytes_per_second: u64 },
    #[error("the upload was still arriving when the request's deadline of {seconds:.0} s passed")]
    PastDeadline { seconds: f64 },
    #[error("the body could not be read: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow { .. } | BodyError::PastDeadline { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable, machine-readable name; also the `outcome` label of the servers'
    /// request counters.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::TooSlow { .. } | BodyError::PastDeadline { .. } => "upload_too_slow",
            BodyError::Read(_) => "body_read_failed",
        }
    }
}

/// The body's chunks, ending in an error once more than `limit` bytes have arrived (the
/// rest read and dropped first, within a bound) or the upload, begun at `started`,
/// falls behind `pace`.
pub fn paced_chunks(
    body: Body,
    limit: usize,
    pace: UploadPace,
    started: Instant,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    let state = (body.into_data_stream(), 0usize, pace.credit(started), false);
    futures_util::stream::unfold(state, move |(mut stream, received, mut credit, finished)| async move {
        if finished {
            return None;
        }
        let next = tokio::time::timeout_at(credit.deadline(), stream.next()).await;
        let item = match next {
            Err(_) => Err(BodyError::TooSlow {
                received,
                seconds: started.elapsed().as_secs_f64(),
                min_bytes_per_second: pace.min_bytes_per_second,
            }),
            Ok(None) => return None,
            Ok(Some(Err(error))) => Err(BodyError::Read(error.to_string())),
            Ok(Some(Ok(chunk))) if received + chunk.len() > limit => {
                // The client is still sending: the rest is taken off the wire (within a
                // bound) before the 413 goes out, or it would see a reset instead.
                discard_rest(&mut stream).await;
                Err(BodyError::TooLarge { limit })
            }
            Ok(Some(Ok(chunk))) => {
                credit.moved(chunk.len(), tokio::time::Instant::now());
                let received = received + chunk.len();
                return Some((Ok(chunk), (stream, received, credit, false)));
            }
        };
        Some((item, (stream, received, credit, true)))
    })
}

/// The declared `Content-Length`, if any and well-formed; a body declared larger than
/// `limit` is refused before a byte of it is read.
pub fn declared_length(headers: &HeaderMap, limit: usize) -> Result<Option<u64>, BodyError> {
    let declared: Option<u64> = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(BodyError::TooLarge { limit }),
        _ => Ok(declared),
    }
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
}

/// Sends a refusal whose body was never read. A client waiting for `100 Continue`
/// is answered at once and the connection closed, so it never sends the body; any
/// other client is already sending, so a bounded part of the upload is taken off the
/// wire first, or closing the socket on unread data resets it and the client never
/// sees this answer.
pub async fn refuse_unread(mut response: Response, headers: &HeaderMap, body: Body) -> Response {
    if expects_continue(headers) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else {
        discard(body).await;
    }
    response
}

/// The most a refused request's upload is read for nothing before the connection is
/// simply closed.
const DISCARD_LIMIT: usize = 64 * 1024 * 1024;

/// How long a refused request's upload is read for nothing at most: a slow client
/// must not hold the handler.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to [`DISCARD_LIMIT`] bytes of a body nobody will use, for at
/// most [`DISCARD_TIME`].
async fn discard(body: Body) {
    discard_rest(body.into_data_stream()).await;
}

/// Reads and drops what is left of an upload that is refused part-way (up to 64 MiB,
/// for at most 5 s), so that the client, still sending, sees the refusal rather than a
/// reset connection.
pub async fn discard_rest<E>(stream: impl Stream<Item = Result<Bytes, E>>) {
    let mut stream = std::pin::pin!(stream);
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn body_of(chunks: Vec<&'static [u8]>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(|chunk| Ok::<_, std::io::Error>(Bytes::from_static(chunk))),
        ))
    }

    async fn collect(chunks: impl Stream<Item = Result<Bytes, BodyError>>) -> Vec<Result<Bytes, BodyError>> {
        chunks.collect().await
    }

    #[tokio::test]
    async fn chunks_pass_until_the_limit_is_crossed_and_then_the_stream_ends() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let read = collect(paced_chunks(body_of(vec![b"abc", b"def"]), 6, pace, Instant::now())).await;
        assert_eq!(read, vec![Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"def"))]);
        let read = collect(paced_chunks(body_of(vec![b"abc", b"defg", b"h"]), 6, pace, Instant::now())).await;
        assert_eq!(read, vec![Ok(Bytes::from_static(b"abc")), Err(BodyError::TooLarge { limit: 6 })]);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_taken_off_the_wire_before_its_error() {
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1 };
        let (body, taken) = counted_body();
        let read = collect(paced_chunks(body, 3, pace, Instant::now())).await;
        assert_eq!(read, vec![Ok(Bytes::from_static(b"ab")), Err(BodyError::TooLarge { limit: 3 })]);
        assert_eq!(taken.load(Ordering::SeqCst), 3, "the third chunk was read and dropped too");
    }

    #[tokio::test]
    async fn a_stalled_upload_is_cut_off_after_the_grace() {
        let pace = UploadPace { grace: Duration::from_millis(50), min_bytes_per_second: 1000 };
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))])
            .chain(futures_util::stream::pending());
        let read = collect(paced_chunks(Body::from_stream(stalled), 100, pace, Instant::now()));
        let outcome = tokio::time::timeout(Duration::from_secs(5), read).await.expect("cut off in time");
        assert_eq!(outcome.len(), 2, "{outcome:?}");
        assert!(matches!(outcome[1], Err(BodyError::TooSlow { received: 2, min_bytes_per_second: 1000, .. })));
    }

    #[tokio::test]
    async fn an_upload_that_sent_much_at_once_and_stalls_is_cut_off_after_the_grace() {
        // 100 kB at once would have earned 100 s at the rate averaged since the start.
        let pace = UploadPace { grace: Duration::from_millis(50), min_bytes_per_second: 1000 };
        let front_loaded = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 100_000]))])
            .chain(futures_util::stream::pending());
        let started = Instant::now();
        let read = collect(paced_chunks(Body::from_stream(front_loaded), 200_000, pace, started));
        let outcome = tokio::time::timeout(Duration::from_secs(5), read).await.expect("cut off in time");
        assert!(matches!(outcome[1], Err(BodyError::TooSlow { received: 100_000, .. })), "{outcome:?}");
        // At the rate averaged since the start, 100 s.
        assert!(started.elapsed() < Duration::from_secs(4), "cut after {:?}", started.elapsed());
    }

    #[test]
    fn each_error_has_its_status_and_code() {
        let cases = [
            (BodyError::TooLarge { limit: 1 }, 413, "body_too_large"),
            (BodyError::TooSlow { received: 1, seconds: 9.0, min_bytes_per_second: 100 }, 408, "upload_too_slow"),
            (BodyError::Read("connection reset".into()), 400, "body_read_failed"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status().as_u16(), error.code()), (status, code), "{error}");
        }
    }

    #[test]
    fn the_declared_length_is_read_only_when_well_formed_and_refused_over_the_limit() {
        let with_length = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(declared_length(&with_length("1024"), 1024), Ok(Some(1024)));
        assert_eq!(declared_length(&with_length("1025"), 1024), Err(BodyError::TooLarge { limit: 1024 }));
        assert_eq!(declared_length(&with_length("-1"), 1024), Ok(None));
        assert_eq!(declared_length(&with_length("ten"), 1024), Ok(None));
        assert_eq!(declared_length(&HeaderMap::new(), 1024), Ok(None));
    }

    /// A body of three chunks that counts how many were taken off it.
    fn counted_body() -> (Body, Arc<AtomicUsize>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&taken);
        let chunks = futures_util::stream::iter([b"ab", b"cd", b"ef"]).map(move |chunk| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from_static(chunk))
        });
        (Body::from_stream(chunks), taken)
    }

    #[tokio::test]
    async fn a_refusal_takes_the_body_off_the_wire_unless_the_client_waits_to_send_it() {
        let refusal = || Response::builder().status(StatusCode::TOO_MANY_REQUESTS).body(Body::empty()).expect("valid");

        let (body, taken) = counted_body();
        let answer = refuse_unread(refusal(), &HeaderMap::new(), body).await;
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(taken.load(Ordering::SeqCst), 3, "the upload under way is read to its end");
        assert!(answer.headers().get(header::CONNECTION).is_none());

        let mut waiting = HeaderMap::new();
        waiting.insert(header::EXPECT, HeaderValue::from_static("100-Continue"));
        let (body, taken) = counted_body();
        let answer = refuse_unread(refusal(), &waiting, body).await;
        assert_eq!(taken.load(Ordering::SeqCst), 0, "a client waiting for 100 Continue sends nothing");
        assert_eq!(answer.headers().get(header::CONNECTION).map(HeaderValue::as_bytes), Some(&b"close"[..]));
    }
}
