//! Reading a request body off the wire within a size limit and at the minimum pace
//! ([`UploadPace`]), with the errors a client is told when it does not: the same
//! limits, codes and messages whether it talks to a pod or to the gateway.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures_util::{Stream, StreamExt};

use crate::UploadPace;

/// Why a body could not be read: each the client's doing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the upload fell below {min_bytes_per_second} bytes/s: {received} bytes in {seconds:.1} s")]
    TooSlow { received: usize, seconds: f64, min_bytes_per_second: u64 },
    #[error("the body could not be read: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable, machine-readable name; also the `outcome` label of the servers'
    /// request counters.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::TooSlow { .. } => "upload_too_slow",
            BodyError::Read(_) => "body_read_failed",
        }
    }
}

/// The body's chunks, ending in an error once more than `limit` bytes have arrived or
/// the upload, begun at `started`, falls behind `pace`.
pub fn paced_chunks(
    body: Body,
    limit: usize,
    pace: UploadPace,
    started: Instant,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    let state = (body.into_data_stream(), 0usize, false);
    futures_util::stream::unfold(state, move |(mut stream, received, finished)| async move {
        if finished {
            return None;
        }
        let next = tokio::time::timeout_at(pace.deadline(started, received).into(), stream.next()).await;
        let item = match next {
            Err(_) => Err(BodyError::TooSlow {
                received,
                seconds: started.elapsed().as_secs_f64(),
                min_bytes_per_second: pace.min_bytes_per_second,
            }),
            Ok(None) => return None,
            Ok(Some(Err(error))) => Err(BodyError::Read(error.to_string())),
            Ok(Some(Ok(chunk))) if received + chunk.len() > limit => Err(BodyError::TooLarge { limit }),
            Ok(Some(Ok(chunk))) => {
                let received = received + chunk.len();
                return Some((Ok(chunk), (stream, received, false)));
            }
        };
        Some((item, (stream, received, true)))
    })
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
    async fn a_stalled_upload_is_cut_off_after_the_grace() {
        let pace = UploadPace { grace: Duration::from_millis(50), min_bytes_per_second: 1000 };
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))])
            .chain(futures_util::stream::pending());
        let read = collect(paced_chunks(Body::from_stream(stalled), 100, pace, Instant::now()));
        let outcome = tokio::time::timeout(Duration::from_secs(5), read).await.expect("cut off in time");
        assert_eq!(outcome.len(), 2, "{outcome:?}");
        assert!(matches!(outcome[1], Err(BodyError::TooSlow { received: 2, min_bytes_per_second: 1000, .. })));
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
}
