//! Sending one request to one pod over a pool of kept-alive HTTP/1 connections, and
//! saying how it went in the terms retries need: an answer, a refused connection, or a
//! failure before any answer.
//!
//! The pod closes a connection idle for its header timeout (10 s), so a pooled
//! connection may be closed under us. The pool drops idle connections sooner than
//! that, and hyper retries a request on a connection found closed before it was sent;
//! what remains (closed while the request was on its way, or with the pod gone while it
//! worked on it) is a failure before any response, which the caller sends to another
//! pod, but not to pod after pod: the request itself may be what broke the pod.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, Response, StatusCode, Uri, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use matte_common::headers::MAX_WAIT_SECONDS;
use matte_common::memory;

/// Idle pooled connections are closed after this, well before the pod's 10 s header
/// timeout closes them from its side.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pod on the same network accepts a connection in milliseconds; one that does not
/// within this is as good as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a connection to a pod reads ahead of the client the answer is for: a
/// piece of the answer at a time (each copied on, [`PodAnswer`]). At hyper's
/// default (about 400 KiB) the buffer grew as the pod kept sending, and each answer in
/// flight held it on its way to a client that read slowly
/// (`memory::GATEWAY_CONNECTION_BYTES`). An answer's head is a few hundred bytes.
const UPSTREAM_READ_BUFFER_BYTES: usize = memory::ANSWER_PIECE_BYTES as usize;
/// The largest response taken from a pod: an RGBA PNG of the largest output (2048²)
/// is at most 16 MiB and change; anything far bigger is not a pod's answer.
pub const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;
/// The largest error answer read whole: a pod's JSON error is a few hundred bytes, and
/// one is held until its client has read it, within the piece of an answer a
/// connection is counted for (`memory::GATEWAY_CONNECTION_BYTES`).
pub const ERROR_ANSWER_LIMIT: usize = memory::ANSWER_PIECE_BYTES as usize;

/// Headers that describe one connection, not the request, and are not passed on
/// (RFC 9110 §7.6.1), plus the gateway's own budget header.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
];

/// Not in `http::header`, but hop-by-hop all the same (RFC 9112 §9.3).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Takes off `headers` those that describe one connection: the fixed ones, and those the
/// sender named in its `Connection` header (RFC 9110 §7.6.1), which a client or a pod
/// may use for what it means only for the next hop.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain([&KEEP_ALIVE]).chain(&named) {
        headers.remove(name);
    }
}

/// A request as it is sent to a pod, held so it can be sent again.
#[derive(Debug, Clone)]
pub struct Forward {
    pub method: Method,
    /// Path and query, e.g. `/v1/remove?format=mask`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Forward {
    /// The end-to-end headers of a client's request (its `Expect` was answered by the
    /// gateway, its length is the body's).
    pub fn headers_from(client_headers: &HeaderMap) -> HeaderMap {
        let mut headers = client_headers.clone();
        remove_hop_by_hop(&mut headers);
        headers.remove(header::EXPECT);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(MAX_WAIT_SECONDS);
        headers
    }
}

/// How one attempt on a pod went.
#[derive(Debug)]
pub enum Attempt {
    /// The pod answered. An error's body is read whole (it is small, and a 429 or 503
    /// is dropped for a retry); a success's comes as the pod sends it, to be taken off
    /// the pod whole within the buffers, or streamed to the client, so that the gateway
    /// holds no image beyond its buffers, whatever the number of pods behind it.
    Answered(Response<Body>),
    /// The connection was refused or could not be made: nothing listens there.
    Refused(String),
    /// The connection failed or timed out before a complete answer.
    Failed(String),
    /// The pod answered `status` with an error body over [`ERROR_ANSWER_LIMIT`]: it
    /// cannot be passed on, but the pod did answer.
    OversizedError { status: StatusCode, cause: String },
}

pub struct UpstreamClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl UpstreamClient {
    /// `timeout` bounds one attempt, from sending to the answer's head (and an error
    /// answer's last byte); a success's body then streams at the client's pace, which
    /// the pod's write timeout bounds.
    pub fn new(timeout: Duration) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http1_max_buf_size(UPSTREAM_READ_BUFFER_BYTES)
            .build(connector);
        UpstreamClient { client, timeout }
    }

    pub async fn send(&self, address: &str, forward: &Forward) -> Attempt {
        let uri = match format!("http://{address}{}", forward.path_and_query).parse::<Uri>() {
            Ok(uri) => uri,
            Err(error) => return Attempt::Refused(format!("bad address {address}: {error}")),
        };
        let mut request = hyper::Request::new(Full::new(forward.body.clone()));
        *request.method_mut() = forward.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = forward.headers.clone();
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Failed(format!("no complete answer within {:?}", self.timeout)),
        }
    }

    /// The answer, a success's body streamed as long as the pod keeps sending: one whose
    /// node is cut off mid-answer sends nothing more and no reset, and the client (and a
    /// drain) would wait on it for ever. Its silence is what is bounded, not the whole
    /// body's time, which a slow client's reading sets.
    async fn exchange(&self, request: hyper::Request<Full<Bytes>>) -> Attempt {
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Attempt::Refused(error_chain(&error)),
            Err(error) => return Attempt::Failed(error_chain(&error)),
        };
        let (parts, body) = response.into_parts();
        if parts.status.is_success() {
            let answer = PodAnswer::new(Limited::new(body, RESPONSE_LIMIT), self.timeout);
            return Attempt::Answered(Response::from_parts(parts, Body::new(answer)));
        }
        match Limited::new(body, ERROR_ANSWER_LIMIT).collect().await {
            Ok(collected) => Attempt::Answered(Response::from_parts(parts, Body::from(collected.to_bytes()))),
            // Not a broken connection: the pod reached its verdict on the request, so
            // sending it to another pod would repeat the inference to the same end, and
            // counting it a failure would eject a working pod for a client's bad image.
            // Its body is not passed on (held whole, it would be outside the memory a
            // connection is counted for): the client gets 502.
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Attempt::OversizedError {
                status: parts.status,
                cause: format!("its {} answer has a body over {ERROR_ANSWER_LIMIT} bytes", parts.status),
            },
            Err(error) => Attempt::Failed(format!("reading the answer failed: {error}")),
        }
    }
}

/// A success's body as the pod sends it, each piece a copy, ending in an error once the
/// client has waited on it for longer than `silence` with nothing coming. A piece is a
/// slice of the pod connection's read buffer: queued for a client that reads slowly,
/// each kept that buffer's whole allocation while the connection read on into a new
/// one, up to a connection's 16 queued pieces. Its length is the pod's body's, exact
/// when the pod declared it, so that the client's answer keeps its `Content-Length`:
/// without it every answer went chunked, and an HTTP/1.0 client's connection was
/// closed after each.
struct PodAnswer<B> {
    body: B,
    silence: Duration,
    /// When the wait for the next piece runs out; set when that wait begins (the client
    /// asked for a piece and none had come), so that the time a slow client takes to ask
    /// is not counted against the pod.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether that wait has begun: the last piece asked for has not come yet.
    waiting: bool,
    /// The pod fell silent for `silence`: the answer has ended, in an error.
    broken: bool,
}

impl<B> PodAnswer<B> {
    fn new(body: B, silence: Duration) -> PodAnswer<B> {
        PodAnswer { body, silence, stalled: None, waiting: false, broken: false }
    }
}

impl<B> http_body::Body for PodAnswer<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.broken {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            let copied = |frame: Frame<Bytes>| frame.map_data(|piece| Bytes::copy_from_slice(&piece));
            return Poll::Ready(frame.map(|frame| frame.map(copied)));
        }
        let silence = this.silence;
        let stalled = this.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(silence)));
        if !this.waiting {
            this.waiting = true;
            stalled.as_mut().reset(tokio::time::Instant::now() + silence);
        }
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.broken = true;
                Poll::Ready(Some(Err(BoxError::from(format!("the pod's answer stopped for {silence:?}")))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.broken || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The pod's answer as the client's: the same status, headers and body, less what
/// described the pod's connection, with `held` kept until the body has been sent or
/// dropped. Its `Content-Length` is the body's own length, which hyper sends: the pod's,
/// when it declared one, and never a length the bytes that follow do not have.
pub fn to_client_response<H: Send + 'static>(answer: Response<Body>, held: H) -> axum::response::Response {
    let (mut parts, body) = answer.into_parts();
    if let Ok(Some(length)) = matte_serve::declared_length(&parts.headers, usize::MAX) {
        parts.extensions.insert(PodContentLength(length));
    }
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, holding(body, held))
}

/// `body`, holding `held` (a pod's place, a room in the buffers) until it has been sent
/// whole or dropped with its connection: a client that reads its answer slowly holds
/// them, not the gateway's other clients.
pub fn holding<H: Send + 'static>(body: Body, held: H) -> Body {
    Body::new(Holding { body, _held: held })
}

/// A body and what it holds: its frames and length are the body's own, but not its end.
/// Told that a frame is the last, the connection drops the body, and what it holds, as
/// it takes that frame, before writing it out: a translated answer is one frame of
/// megabytes, whose room in the buffers would be given back while it waits for a client
/// that reads slowly. Never told, it drops the body once it has written out all but its
/// own buffer's worth of the body's length, or been given the body's end.
struct Holding<H> {
    body: Body,
    _held: H,
}

// What is held is never polled, so it is never pinned: moving it is harmless.
impl<H> Unpin for Holding<H> {}

impl<H> http_body::Body for Holding<H> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The `Content-Length` a pod's answer came with, kept as an extension of the answer
/// passed on, whose header is gone (its body is streamed): an answer read whole to be
/// translated gets a buffer of that length at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodContentLength(pub u64);

/// Whether a pod's status asks for the request to go elsewhere.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// An error with its causes, which hyper keeps apart ("client error (Connect)" alone
/// says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn connection_headers_and_the_budget_stay_behind() {
        let mut client = HeaderMap::new();
        client.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        client.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Hop"));
        client.insert("x-hop", HeaderValue::from_static("for the gateway alone"));
        client.insert(header::HOST, HeaderValue::from_static("gateway"));
        client.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        client.insert(MAX_WAIT_SECONDS, HeaderValue::from_static("3"));
        client.insert("x-request-id", HeaderValue::from_static("abc"));
        let forwarded = Forward::headers_from(&client);
        let mut names: Vec<&str> = forwarded.keys().map(|name| name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }

    #[test]
    fn headers_a_pod_names_in_connection_stay_behind() {
        let answer = Response::builder()
            .header(header::CONNECTION, "x-pod-internal")
            .header("x-pod-internal", "1")
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::CONTENT_LENGTH, "3")
            .body(Body::from("png"))
            .unwrap();
        let passed = to_client_response(answer, ());
        let names: Vec<&str> = passed.headers().keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["content-type"]);
        assert_eq!(passed.extensions().get::<PodContentLength>(), Some(&PodContentLength(3)));
    }

    /// A pod that sends its answer's head and a few bytes of its body, then nothing more
    /// and no reset (its node cut off).
    async fn stalling_pod() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 1000\r\n\r\nPNG")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        address
    }

    #[tokio::test]
    async fn an_answer_that_stalls_mid_body_ends_after_the_upstream_timeout_of_silence() {
        let address = stalling_pod().await;
        let forward = Forward {
            method: Method::POST,
            path_and_query: "/v1/remove".into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let started = std::time::Instant::now();
        let Attempt::Answered(answer) = UpstreamClient::new(Duration::from_millis(500)).send(&address, &forward).await
        else {
            panic!("the head came");
        };
        let read = answer.into_body().collect().await;
        assert!(read.is_err(), "the body cannot be whole");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cut at the timeout, not left hanging: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn only_busy_and_unavailable_are_retried() {
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        for status in [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::GATEWAY_TIMEOUT] {
            assert!(!is_retryable(status), "{status}");
        }
    }
}
