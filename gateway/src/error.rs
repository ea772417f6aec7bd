//! The crate's one error type, and how each error reads over HTTP: the pod's shape,
//! `{"error": {"code", "message"}}`, so that clients cannot tell the gateway answered.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use matte_common::queue;
use matte_serve::{BodyError, RouteError};

/// The code of [`Error::UpstreamFailed`], and the outcome of a pod's answer that broke
/// off on its way to the client.
pub const UPSTREAM_FAILED_CODE: &str = "upstream_failed";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- start-up ---------------------------------------------------------------------
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("upstream `{0}` is not HOST:PORT")]
    UpstreamAddress(String),
    #[error("service `{0}` is not a Service name (lower-case letters, digits and `-`, at most 63)")]
    ServiceName(String),
    #[error("pod discovery: {0}")]
    Discovery(String),
    #[error("{task} stopped: {cause}")]
    TaskStopped { task: &'static str, cause: String },

    // --- requests ---------------------------------------------------------------------
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("the gateway holds as many request bodies as it may ({limit} bytes); retry in {} s", retry_after.as_secs())]
    BuffersFull { limit: usize, retry_after: Duration },
    #[error(
        "this request needs {needed} bytes of the gateway's buffers (its body, and a form's copies while it is read), \
         more than all {limit} of them: send a smaller image, or the image alone to /v1/remove"
    )]
    OverBuffers { needed: usize, limit: usize },
    #[error(
        "the answer to this image takes at least {needed} bytes of the gateway's buffers to be translated, more \
         than all {limit} of them: send a smaller image, or the image alone to /v1/remove"
    )]
    AnswerOverBuffers { needed: usize, limit: usize },
    #[error(
        "the body was arriving too slowly to be served within this request's budget of {budget:.1} s, and its \
         room in the gateway's buffers went to requests that could be; retry in {} s",
        retry_after.as_secs()
    )]
    BuffersReclaimed { budget: f64, retry_after: Duration },
    #[error(
        "the expected wait of {expected:.1} s is over this request's budget of {budget:.1} s; retry in {} s",
        retry_after.as_secs()
    )]
    QueueFull { expected: f64, budget: f64, retry_after: Duration },
    #[error("no inference pod took the request within its budget of {budget:.1} s; retry in {} s", retry_after.as_secs())]
    NoCapacity { budget: f64, retry_after: Duration },
    #[error("the gateway is shutting down and takes no new work")]
    Draining,
    #[error("upstream {upstream} failed: {cause}")]
    UpstreamFailed { upstream: String, cause: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Body(error) => error.status(),
            Error::OverBuffers { .. } | Error::AnswerOverBuffers { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Route(error) => error.status(),
            Error::BuffersFull { .. } | Error::BuffersReclaimed { .. } | Error::QueueFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::NoCapacity { .. } | Error::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Error::Listen { .. }
            | Error::UpstreamAddress(_)
            | Error::ServiceName(_)
            | Error::Discovery(_)
            | Error::TaskStopped { .. }
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, machine-readable name; also the `outcome` label of
    /// `matte_gateway_requests_total`. Codes the pod also uses mean the same here.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Body(error) => error.code(),
            Error::BadRequest(_) => "bad_request",
            Error::Route(error) => error.code(),
            Error::BuffersFull { .. } => "buffers_full",
            Error::OverBuffers { .. } => "body_too_large",
            Error::AnswerOverBuffers { .. } => "answer_too_large",
            Error::BuffersReclaimed { .. } => "buffers_reclaimed",
            Error::QueueFull { .. } => "queue_full",
            Error::NoCapacity { .. } => "no_capacity",
            Error::Draining => "draining",
            Error::UpstreamFailed { .. } => UPSTREAM_FAILED_CODE,
            Error::Listen { .. }
            | Error::UpstreamAddress(_)
            | Error::ServiceName(_)
            | Error::Discovery(_)
            | Error::TaskStopped { .. }
            | Error::Internal(_) => "internal",
        }
    }

    /// Whether the error happened inside the gateway or on a pod: its details are for
    /// the operator's log, not for clients.
    fn is_internal(&self) -> bool {
        matches!(self.status(), StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY)
    }

    /// What a client is told.
    pub fn public_message(&self) -> String {
        if self.is_internal() {
            "the request could not be served; the gateway's log has the details".to_owned()
        } else {
            self.to_string()
        }
    }

    /// How long the client is told to stay away, for the refusals that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::BuffersFull { retry_after, .. }
            | Error::BuffersReclaimed { retry_after, .. }
            | Error::QueueFull { retry_after, .. }
            | Error::NoCapacity { retry_after, .. } => Some(*retry_after),
            Error::Draining => Some(queue::DRAINING_RETRY_AFTER),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if self.is_internal() {
            tracing::error!(error = %self, "request failed");
        }
        let message = self.public_message();
        let body = serde_json::json!({ "error": { "code": self.code(), "message": message } });
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
        }
        if let Error::Draining = &self {
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
    fn refusals_carry_retry_after() {
        let queue_full = Error::QueueFull { expected: 9.0, budget: 1.0, retry_after: Duration::from_secs(9) };
        let response = queue_full.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "9");
        let response = Error::NoCapacity { budget: 30.0, retry_after: Duration::from_secs(5) }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = Error::Draining.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1", "another replica takes the retry");
    }

    #[tokio::test]
    async fn upstream_details_stay_out_of_the_response() {
        let error = Error::UpstreamFailed { upstream: "10.1.2.3:8080".into(), cause: "connection reset".into() };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("10.1.2.3"), "{text}");
        assert!(text.contains("\"upstream_failed\""), "{text}");
    }
}
