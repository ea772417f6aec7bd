//! The crate's one error type, and how each error reads over HTTP.
//!
//! Start-up errors (library, provider, model) end the process with their message;
//! request errors become `{"error": {"code", "message"}}` with a fitting status.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use matte_common::{admission, metrics, queue};
use matte_serve::{BodyError, RouteError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- start-up ---------------------------------------------------------------------
    #[error(
        "no ONNX Runtime library given: set ORT_DYLIB_PATH to libonnxruntime.so \
         from the onnxruntime wheel (onnxruntime-gpu for CUDA)"
    )]
    NoRuntimeLibrary,
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    RuntimeLibrary { path: PathBuf, reason: String },
    #[error(
        "execution provider `{provider}` could not be registered (is this the GPU build of ONNX Runtime, with CUDA and cuDNN on the library path?): {reason}"
    )]
    Provider { provider: &'static str, reason: String },
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("model {path} does not look like a background-removal model: {reason}")]
    ModelShape { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the inference thread: {0}")]
    InferenceThread(std::io::Error),
    #[error("loading the model panicked: {0}")]
    LoadPanicked(String),
    #[error("the CPU worker pool is closed")]
    CpuPoolClosed,
    #[error("an image worker failed: {0}")]
    CpuWorkerFailed(String),
    #[error("the inference loop stopped")]
    InferenceLoopStopped,
    #[error("encoding the result failed: {0}")]
    Encode(String),

    // --- requests ---------------------------------------------------------------------
    #[error("the body is empty")]
    EmptyBody,
    #[error("the body is not a JPEG, PNG or WebP image")]
    NotAnImage,
    #[error("{0} images are not supported; send JPEG, PNG or WebP")]
    UnsupportedImageFormat(&'static str),
    #[error("{0} JPEGs are not supported; send a baseline or progressive JPEG, a PNG or a WebP")]
    UnsupportedJpeg(&'static str),
    #[error(
        "Content-Type `{0}` is not supported; send image/jpeg, image/png, image/webp or multipart/form-data with a field `image`"
    )]
    UnsupportedContentType(String),
    #[error("the image is {width}×{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("the image is {width}×{height}: its longer side is over the limit of {limit} pixels")]
    SideTooLong { width: u32, height: u32, limit: u32 },
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the image could not be decoded: {0}")]
    CorruptImage(String),
    #[error("the image needs more memory to decode than allowed: {0}")]
    DecoderLimit(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("the queue is full ({capacity} requests); retry in {} s", retry_after.as_secs())]
    QueueFull { capacity: u32, retry_after: Duration },
    #[error("the model is still loading")]
    NotReady,
    #[error("the server is shutting down and takes no new work")]
    Draining,
    #[error("inference is failing or stuck; the pod takes no new work")]
    InferenceUnhealthy,
    #[error("the inference loop has stopped, is stuck or keeps failing")]
    NotLive,
    #[error("the request waited {waited:.1} s for inference, past its deadline of {deadline:.1} s")]
    DeadlineExceeded { waited: f64, deadline: f64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::EmptyBody | Error::NotAnImage | Error::CorruptImage(_) | Error::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::TooManyPixels { .. } | Error::SideTooLong { .. } | Error::DecoderLimit(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::Body(error) => error.status(),
            Error::Route(error) => error.status(),
            Error::UnsupportedImageFormat(_) | Error::UnsupportedJpeg(_) | Error::UnsupportedContentType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotReady | Error::Draining | Error::InferenceUnhealthy | Error::NotLive => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long the client is told to stay away: every refusal of work the pod could
    /// do later says when to try again, so that no client retries in a tight loop.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::QueueFull { retry_after, .. } => Some(*retry_after),
            Error::Draining => Some(queue::DRAINING_RETRY_AFTER),
            // Loading the model, or a loop that fails or is stuck: how long it lasts the
            // pod cannot tell, and a few seconds is what a small model takes to load.
            Error::NotReady | Error::InferenceUnhealthy | Error::NotLive => Some(admission::UNKNOWN_WAIT_RETRY_AFTER),
            _ => None,
        }
    }

    /// Stable, machine-readable name; also the `outcome` label of `matte_requests_total`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyBody => "empty_body",
            Error::NotAnImage => "not_an_image",
            Error::UnsupportedImageFormat(_) | Error::UnsupportedJpeg(_) => "unsupported_image_format",
            Error::UnsupportedContentType(_) => "unsupported_content_type",
            Error::TooManyPixels { .. } => "image_too_large",
            Error::SideTooLong { .. } => "side_too_long",
            Error::Body(error) => error.code(),
            Error::CorruptImage(_) => "corrupt_image",
            Error::DecoderLimit(_) => "decoder_limit",
            Error::BadRequest(_) => "bad_request",
            Error::Route(error) => error.code(),
            Error::QueueFull { .. } => metrics::QUEUE_FULL_OUTCOME,
            Error::NotReady => "not_ready",
            Error::Draining => "draining",
            Error::InferenceUnhealthy => "unhealthy",
            Error::NotLive => "not_live",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            _ => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // What went wrong inside is for the operator's log, not for clients.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
            "internal error; the server's log has the details".to_owned()
        } else {
            self.to_string()
        };
        let body = serde_json::json!({ "error": { "code": self.code(), "message": message } });
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
        }
        if matches!(self, Error::Draining | Error::NotReady | Error::InferenceUnhealthy) {
            // Tell clients and proxies not to reuse this connection for the retry.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_of_work_says_when_to_retry() {
        let response = Error::QueueFull { capacity: 4, retry_after: Duration::from_secs(3) }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let draining = Error::Draining.into_response();
        assert_eq!(draining.headers()[header::RETRY_AFTER], "1", "another pod takes the retry");
        for unavailable in [Error::NotReady, Error::InferenceUnhealthy] {
            let response = unavailable.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        }
        let invalid = Error::EmptyBody.into_response();
        assert!(invalid.headers().get(header::RETRY_AFTER).is_none(), "the same request fails again");
    }

    #[tokio::test]
    async fn internal_error_text_stays_out_of_the_response() {
        let response = Error::Inference("CUDA error 700 at 0xdeadbeef".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("deadbeef"), "{text}");
        assert!(text.contains("\"internal\""), "{text}");
    }

    #[test]
    fn statuses_fit_the_contract() {
        let cases = [
            (Error::EmptyBody, 400),
            (Error::CorruptImage("x".into()), 400),
            (Error::TooManyPixels { width: 1, height: 1, pixels: 1, limit: 0 }, 413),
            (Error::Body(BodyError::TooLarge { limit: 1 }), 413),
            (Error::UnsupportedContentType("text/plain".into()), 415),
            (Error::UnsupportedImageFormat("gif"), 415),
            (Error::Draining, 503),
            (Error::DeadlineExceeded { waited: 2.0, deadline: 1.0 }, 504),
            (Error::Inference("x".into()), 500),
            (Error::Body(BodyError::TooSlow { received: 1, seconds: 9.0, min_bytes_per_second: 100 }), 408),
            (Error::Route(RouteError::MethodNotAllowed { method: "GET".into(), path: "/v1/remove".into() }), 405),
            (Error::DecoderLimit("x".into()), 413),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
        }
    }
}
