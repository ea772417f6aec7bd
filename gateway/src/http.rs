//! The HTTP face of the gateway: the pod's `POST /v1/remove`, health, readiness and
//! metrics.
//!
//! A removal request goes: read its budget → check the declared length → refuse at
//! once if its expected wait is over its budget → reserve room for its body (or 429) →
//! read the body at a minimum pace → take a place on a pod, waiting in the queue
//! within the budget → send it; a pod's 429 or 503, or a connection that fails before
//! an answer, sends it back to the head of the queue while the budget lasts, and once
//! it is spent to a place free at once, if one is. Every other answer of the pod goes
//! to the client unchanged. The gateway does not look inside the request: the pod
//! judges the image and the query.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use matte_common::headers::MAX_WAIT_SECONDS;
use matte_common::metrics::CLIENT_GONE_OUTCOME;
use matte_common::paths;
use matte_serve::pieces::Pieces;
use matte_serve::{RouteError, declared_length, exposition, refuse_unread};

use crate::Error;
use crate::body::{self, ReadFailure};
use crate::budget::Reservation;
use crate::compat::{self, Dialect, Encoding};
use crate::dispatcher::{AttemptOutcome, Lease};
use crate::metrics::{Delivery, Metrics, Relay, RetryReason};
use crate::state::AppState;
use crate::upstream::{self, Attempt, Forward};
use matte_common::admission::Admission;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::REMOVE, post(remove))
        .route(compat::REMBG_PATH, post(remove_for_rembg))
        .route(compat::REMOVE_BG_PATH, post(remove_for_remove_bg))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The request's budget: the gateway's `--max-wait-seconds`, or less if the client
/// asks for less in `x-matte-max-wait-seconds`.
pub fn budget(headers: &HeaderMap, max_wait: Duration) -> Result<Duration, Error> {
    let Some(value) = headers.get(MAX_WAIT_SECONDS) else { return Ok(max_wait) };
    let text = value.to_str().unwrap_or("(not text)");
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Ok(max_wait.min(Duration::from_secs_f64(seconds.min(86_400.0))))
        }
        _ => Err(Error::BadRequest(format!("{MAX_WAIT_SECONDS} `{text}` is not a number of seconds of 0 or more"))),
    }
}

/// How a pod's attempt counts for the pod, and whether the request goes elsewhere.
pub fn judge(attempt: &Attempt) -> (AttemptOutcome, Option<RetryReason>) {
    match attempt {
        Attempt::Answered(response) => judge_answer(response.status()),
        // Its status is the pod's word on the request and on itself, whatever its body:
        // a busy pod's request still goes elsewhere, and one refused for what it is
        // would be refused again.
        Attempt::OversizedError { status, .. } => judge_answer(*status),
        Attempt::Refused(_) => (AttemptOutcome::Refused, Some(RetryReason::ConnectionRefused)),
        Attempt::Failed(_) => (AttemptOutcome::Failed, Some(RetryReason::ConnectionFailed)),
    }
}

fn judge_answer(status: StatusCode) -> (AttemptOutcome, Option<RetryReason>) {
    match status {
        StatusCode::TOO_MANY_REQUESTS => (AttemptOutcome::Busy, Some(RetryReason::PodBusy)),
        StatusCode::SERVICE_UNAVAILABLE => (AttemptOutcome::Unavailable, Some(RetryReason::PodUnavailable)),
        status if status.is_success() => (AttemptOutcome::Served, None),
        status if status.is_server_error() => (AttemptOutcome::Failed, None),
        _ => (AttemptOutcome::Answered, None),
    }
}

/// The `outcome` label of a pod's error answer passed to the client.
fn answered_outcome(status: StatusCode) -> String {
    format!("pod_{}", status.as_u16())
}

/// Counts every removal request exactly once, by outcome, even when the client goes
/// away mid-request and the handler is dropped, and each client sent away with a
/// `Retry-After`. A pod's image is counted as it reaches the client ([`Delivery`]).
struct RequestRecord<'a> {
    metrics: &'a Metrics,
    /// `None` once the count is left to the answer's delivery.
    outcome: Option<String>,
    sent_away_for: Option<Duration>,
}

impl RequestRecord<'_> {
    /// The request ends in `error`.
    fn failed(&mut self, error: &Error) {
        self.outcome = Some(error.code().to_owned());
        self.sent_away_for = error.retry_after();
    }

    /// The request ends in `response`: a pod's image is counted `ok` once it has reached
    /// the client whole, not when its head has (the pod may die or fall silent on the
    /// way, the client may leave); any other answer is counted now.
    fn answered(&mut self, response: Response) -> Response {
        if !response.status().is_success() {
            self.outcome = Some(answered_outcome(response.status()));
            return response;
        }
        self.outcome = None;
        let mut delivery = self.metrics.delivery();
        let body = response.body();
        // Of no length, it is whole as it is handed over: the connection never asks it
        // for a frame.
        if Delivered::is_whole(body) {
            delivery.arrived();
        }
        response.map(|body| axum::body::Body::new(Delivered { body, delivery: Some(delivery) }))
    }
}

/// An answer's body that makes its [`Delivery`]'s count as it ends: once its last
/// frame is handed to the connection, or it breaks off, or is dropped unsent. Its
/// length and end are the body's own, so that an answer of known length keeps its
/// `Content-Length`.
struct Delivered {
    body: axum::body::Body,
    delivery: Option<Delivery>,
}

impl Delivered {
    /// Whether all of `body` has been handed over. An answer of known length is, once
    /// none of it is left, though it may not say it has ended (`upstream::holding`), and
    /// the connection, having written that length, asks it for nothing more.
    fn is_whole(body: &axum::body::Body) -> bool {
        use axum::body::HttpBody;
        body.is_end_stream() || body.size_hint().exact() == Some(0)
    }
}

impl http_body::Body for Delivered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Err(_))) => Some(false),
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Ok(_))) if Delivered::is_whole(&self.body) => Some(true),
            _ => None,
        };
        if let Some(whole) = ended
            && let Some(mut delivery) = self.delivery.take()
        {
            if whole { delivery.arrived() } else { delivery.broken() }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = &self.outcome {
            self.metrics.count_outcome(outcome);
        }
        if let Some(retry_after) = self.sent_away_for {
            self.metrics.count_sent_away(retry_after);
        }
    }
}

async fn remove(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, None).await
}

async fn remove_for_rembg(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Some(Dialect::Rembg)).await
}

async fn remove_for_remove_bg(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Some(Dialect::RemoveBg)).await
}

/// Serves a removal request in the pods' API, or in a drop-in `dialect` translated to
/// it and back.
async fn serve(state: &AppState, request: Request, dialect: Option<Dialect>) -> Response {
    let arrived = Instant::now();
    state.metrics.count_received();
    let mut record =
        RequestRecord { metrics: &state.metrics, outcome: Some(CLIENT_GONE_OUTCOME.to_owned()), sent_away_for: None };
    let (parts, body) = request.into_parts();
    let in_dialect = |error: Error| match dialect {
        None => error.into_response(),
        Some(dialect) => compat::error_answer(dialect, error),
    };
    let (budget, declared, mut reservation) = match admit(state, &parts, arrived) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            record.failed(&refusal);
            return refuse_unread(in_dialect(refusal), &parts.headers, body).await;
        }
    };
    let limits = state.limits;
    let read = body::read(body, declared, limits.max_body_bytes, limits.upload_pace, arrived, &mut reservation).await;
    let prepared = match read {
        Ok(body) => prepare(state, &parts, body, dialect).await,
        Err(ReadFailure::Request(error)) => Err(error),
        // Counted as the client gone, as the record has it from the start: a connection
        // closed mid-upload is no malformed request.
        Err(ReadFailure::ClientGone(error)) => return in_dialect(error),
        Err(ReadFailure::BudgetSpent) => Err(buffers_full(state)),
        Err(ReadFailure::Overtaken) => Err(Error::BuffersReclaimed {
            budget: budget.as_secs_f64(),
            retry_after: state.dispatcher.retry_after(state.limits.max_wait),
        }),
    };
    let (forward, encoding) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            record.failed(&error);
            return in_dialect(error);
        }
    };
    // An answer to translate is read whole there, at the pod's pace, its place held
    // only as long.
    let result = send(state, &forward, arrived, arrived + budget, dialect.is_none()).await;
    drop(forward);
    drop(reservation);
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            record.failed(&error);
            return in_dialect(error);
        }
    };
    let Some(dialect) = dialect else {
        return record.answered(response);
    };
    // Counted as the client is answered: a 429 here sends it away like any other.
    match translate_answer(state, dialect, encoding, response).await {
        Ok(translated) => record.answered(translated),
        Err(error) => {
            record.failed(&error);
            compat::error_answer(dialect, error)
        }
    }
}

/// A pod's answer in a drop-in dialect. Its image is held whole to be translated, so
/// it takes its share of the buffers as request bodies do, with the memory its
/// translation works in, and what is sent keeps its share until the client has taken
/// it: when none is left, 429.
async fn translate_answer(
    state: &AppState,
    dialect: Dialect,
    encoding: Encoding,
    response: Response,
) -> Result<Response, Error> {
    let (parts, body) = response.into_parts();
    let mut reservation = state.buffers.reserve(0).ok_or_else(|| buffers_full(state))?;
    let declared = parts.extensions.get::<upstream::PodContentLength>().map(|length| length.0);
    let body::HeldAnswer { bytes, allocated } =
        match body::read_answer(body, declared, upstream::RESPONSE_LIMIT, &mut reservation).await {
            Ok(held) => held,
            Err(ReadFailure::BudgetSpent | ReadFailure::Overtaken) => return Err(buffers_full(state)),
            Err(ReadFailure::Request(error) | ReadFailure::ClientGone(error)) => return Err(error),
        };
    if parts.status.is_success() {
        state.metrics.count_answer(Relay::TakeOffThePod);
    }
    // The answer's buffer as allocated (its capacity, which the bytes keep), and what
    // translating it takes beside it.
    let working = allocated.saturating_add(compat::translation_room(parts.status, encoding, &bytes)?);
    let all_buffers = state.buffers.limit();
    if working > all_buffers {
        // A mask of a large image, made JPEG: decoded, it would never fit, and a client
        // sent away would be refused again.
        return Err(Error::AnswerOverBuffers { needed: working, limit: all_buffers });
    }
    reservation.cover(working).map_err(|_| buffers_full(state))?;
    // Re-encoding an image (a mask to JPEG) is a few hundred milliseconds of work that
    // must not hold a runtime thread the other connections are served on. The work
    // holds its share of the buffers until it is done, whether or not the client is
    // still there to take its result: a blocking task runs to its end once started.
    let (translated, mut reservation) =
        tokio::task::spawn_blocking(move || (compat::answer(dialect, encoding, parts, bytes), reservation))
            .await
            .map_err(|error| Error::Internal(format!("translating the answer failed: {error}")))?;
    let (parts, body) = translated?.into_parts();
    // In memory already: collecting it takes nothing but its own bytes.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|error| Error::Internal(format!("the translated answer could not be read: {error}")))?;
    reservation.shrink_to(bytes.len());
    // A piece at a time, as an answer taken off its pod, its room kept until the last.
    Ok(Response::from_parts(parts, axum::body::Body::new(Pieces::new(bytes, reservation))))
}

/// What reading a drop-in form holds beyond the body, as a multiple of the body: the
/// parser's copy of it, and a file field gathered from its chunks (or a base64 field's
/// text and the image decoded from it).
const FORM_COPIES: usize = 2;

/// The request as it goes to the pods: the body and query as they came, or a drop-in
/// form translated to them, the copies that takes held within the buffers too.
async fn prepare(
    state: &AppState,
    parts: &Parts,
    body: Bytes,
    dialect: Option<Dialect>,
) -> Result<(Forward, Encoding), Error> {
    let Some(dialect) = dialect else {
        let forward = Forward {
            method: parts.method.clone(),
            path_and_query: parts.uri.path_and_query().map_or(paths::REMOVE, |p| p.as_str()).to_owned(),
            headers: Forward::headers_from(&parts.headers),
            body,
        };
        return Ok((forward, Encoding::Png));
    };
    let copies = FORM_COPIES.saturating_mul(body.len());
    fits_the_buffers(state, body.len().saturating_add(copies))?;
    let copies = state.buffers.reserve(copies).ok_or_else(|| buffers_full(state))?;
    let form = compat::parse_form(&parts.headers, body).await?;
    let translated = match dialect {
        Dialect::Rembg => compat::rembg(form)?,
        Dialect::RemoveBg => compat::remove_bg(form)?,
    };
    // What is left is the image, within the body's own room.
    drop(copies);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(compat::sniff_content_type(&translated.image)));
    let forward = Forward {
        method: axum::http::Method::POST,
        path_and_query: translated.path_and_query,
        headers,
        body: translated.image,
    };
    Ok((forward, translated.encoding))
}

/// Everything decided from the request line and headers alone, in the order that
/// costs the client least: malformed budget, declared length over the limit, a wait
/// over the budget, no room for the body.
fn admit(state: &AppState, parts: &Parts, arrived: Instant) -> Result<(Duration, Option<u64>, Reservation), Error> {
    let budget = budget(&parts.headers, state.limits.max_wait)?;
    let declared = declared_length(&parts.headers, state.limits.max_body_bytes)?;
    if let Admission::Refuse { expected, retry_after } = state.dispatcher.admission(budget) {
        return Err(Error::QueueFull { expected: expected.as_secs_f64(), budget: budget.as_secs_f64(), retry_after });
    }
    let wanted = declared.map_or(0, |length| length as usize);
    fits_the_buffers(state, wanted)?;
    // Its upload is due by the end of its budget, and is given at least the grace a
    // stalled upload has: a client that will not wait in the queue (a budget of 0) is
    // still served when a place is free once its body is in.
    let due = arrived + budget.max(state.limits.upload_pace.grace);
    let reservation = state.buffers.reserve_upload(wanted, due).ok_or_else(|| buffers_full(state))?;
    Ok((budget, declared, reservation))
}

/// 413 for a request that needs more of the buffers than they hold in all: told to come
/// back (429), it would be refused again on every try, each counted among the clients
/// the autoscaler sees waiting.
fn fits_the_buffers(state: &AppState, needed: usize) -> Result<(), Error> {
    let limit = state.buffers.limit();
    if needed > limit { Err(Error::OverBuffers { needed, limit }) } else { Ok(()) }
}

/// Bodies are freed as the queue moves, so a client comes back when it expects to.
fn buffers_full(state: &AppState) -> Error {
    Error::BuffersFull {
        limit: state.buffers.limit(),
        retry_after: state.dispatcher.retry_after(state.limits.max_wait),
    }
}

/// Pods a request may break the connection of, before an answer, and still be sent to
/// another: a pod lost with requests on it (scaled down, its node gone) needs one more.
/// A request that breaks the pod itself (an image that crashes its decoder) would take
/// down pod after pod within its budget, each then a GPU start-up away from serving;
/// after this many it is answered 502.
const BROKEN_CONNECTIONS_PER_REQUEST: u32 = 2;

/// A request sent away for want of a place, told the whole `budget` its client gave it
/// and a `Retry-After` for that (never over it), not what was left of it when it last
/// joined the queue: turned away by a full pod late in a 30 s budget, it was told
/// "within its budget of 0.2 s" and to come back at once, to a queue still full.
fn sent_away(state: &AppState, budget: Duration) -> Error {
    Error::NoCapacity { budget: budget.as_secs_f64(), retry_after: state.dispatcher.retry_after(budget) }
}

/// Sends the request to a pod, and again to another (or the same, later) while the
/// pods turn it away and the budget lasts; once it is spent, only to a place free at once.
async fn send(
    state: &AppState,
    forward: &Forward,
    arrived: Instant,
    deadline: Instant,
    take_off_the_pod: bool,
) -> Result<Response, Error> {
    // Its wait for a place counts from here, its body read: the client's upload is
    // none of the pods' doing (`matte_gateway_queue_wait_seconds`, the oldest age).
    let queued_since = Instant::now();
    // Why the request is being sent again, counted once it is: a pod's place found for it.
    let mut again: Option<RetryReason> = None;
    // A place found at once for a request turned away after its budget was spent: once.
    // Two gateways share the pods, and a second turn-away says they are full; the client
    // is better sent away with a `Retry-After` than its body sent from pod to pod.
    let mut found: Option<Lease> = None;
    let mut sent_after_budget = false;
    let mut broken_connections = 0;
    loop {
        let lease = match found.take() {
            Some(lease) => lease,
            None => state.dispatcher.acquire(queued_since, deadline, again.is_some()).await.map_err(
                |error| match error {
                    Error::NoCapacity { .. } => sent_away(state, deadline.saturating_duration_since(arrived)),
                    other => other,
                },
            )?,
        };
        match again.take() {
            Some(reason) => state.metrics.count_retry(reason),
            None => state.metrics.queue_wait.observe(lease.granted().duration_since(queued_since).as_secs_f64()),
        }
        let address = lease.address().to_owned();
        let attempt = state.client.send(&address, forward).await;
        let (outcome, retry) = judge(&attempt);
        if retry == Some(RetryReason::ConnectionFailed) {
            broken_connections += 1;
        }
        match retry {
            Some(RetryReason::ConnectionFailed) if broken_connections >= BROKEN_CONNECTIONS_PER_REQUEST => {
                tracing::warn!(
                    upstream = address,
                    pods = broken_connections,
                    "a request's connection broke on this many pods, the last named: answered 502, not sent to \
                     another (an image that crashes the pod would take down the fleet)"
                );
            }
            Some(reason) => {
                lease.end(outcome);
                if Instant::now() < deadline {
                    tracing::debug!(upstream = address, reason = reason.label(), "sending the request again");
                    again = Some(reason);
                    continue;
                }
                // The budget is what the request may wait, not what it may be served in: a
                // place free now costs it no wait, and sending it away instead would make
                // its client wait a `Retry-After` and send its body again.
                let at_once = if sent_after_budget { None } else { state.dispatcher.place_now() };
                if let Some(lease) = at_once {
                    tracing::debug!(upstream = address, reason = reason.label(), "sending the request again at once");
                    again = Some(reason);
                    found = Some(lease);
                    sent_after_budget = true;
                    continue;
                }
                // Turned away with the budget spent and no place free: the client is the
                // gateway's to send away, with its `Retry-After` (never over the budget)
                // and counted among those away, not handed the pod's answer (a full pod's
                // `Retry-After` is the time its queue holds, up to minutes). A broken
                // connection is sent away alike: within the budget it would have waited
                // for a place, and ended so.
                return Err(sent_away(state, deadline.saturating_duration_since(arrived)));
            }
            None => {}
        }
        return match attempt {
            Attempt::Answered(answer) => relay_answer(state, answer, lease, outcome, take_off_the_pod).await,
            // A connection broken on too many pods, or an error answer too large to pass on
            // within the memory a connection is counted for: no answer to relay.
            Attempt::Refused(cause) | Attempt::Failed(cause) | Attempt::OversizedError { cause, .. } => {
                lease.end(outcome);
                Err(Error::UpstreamFailed { upstream: address, cause })
            }
        };
    }
}

/// The part of `--max-buffered-bytes` that answers taken off their pods may fill, all
/// held counted: the rest stays the uploads', which clients that read slowly must not
/// crowd out.
const ANSWERS_SHARE_OF_BUFFERS: f64 = 0.5;

/// A pod's answer on its way to the client, and the pod's place given back as soon as
/// the pod has sent it. The pod holds a request's place until its answer has left it,
/// and the gateway the place with it: passed on at the client's pace, an answer kept
/// its place for as long as the client took to read it (17 MB at the minimum pace is
/// minutes), and a few clients that read slowly left the GPU idle behind a full queue.
/// So an image whose length the pod declared is taken off the pod whole into the
/// buffers (at the pod's pace, bounded by the attempt's silence), when they have room
/// for it within the answers' share ([`ANSWERS_SHARE_OF_BUFFERS`]), and the place goes
/// back before the client reads a byte. Without that room it is passed on as the pod
/// sends it, holding the place. Not `take_off_the_pod`, it is left to the caller as it
/// comes (to be read whole and translated). An error answer is whole already: its
/// place goes back at once. The attempt's `outcome` is told once the image is whole in
/// the gateway, or as its head came when it is passed on; a pod that breaks off while
/// its image is taken off it has failed the attempt.
async fn relay_answer(
    state: &AppState,
    answer: axum::http::Response<axum::body::Body>,
    mut lease: Lease,
    outcome: AttemptOutcome,
    take_off_the_pod: bool,
) -> Result<Response, Error> {
    if !answer.status().is_success() {
        lease.end(outcome);
        return Ok(upstream::to_client_response(answer, ()));
    }
    if !take_off_the_pod {
        lease.record(outcome);
        return Ok(upstream::to_client_response(answer, lease));
    }
    let declared = declared_length(answer.headers(), upstream::RESPONSE_LIMIT).ok().flatten();
    let answers_room = (state.buffers.limit() as f64 * ANSWERS_SHARE_OF_BUFFERS) as usize;
    let room = declared
        .and_then(|length| usize::try_from(length).ok())
        .and_then(|length| state.buffers.reserve_below(length, answers_room).map(|room| (room, length)));
    let Some((room, length)) = room else {
        state.metrics.count_answer(Relay::Stream);
        lease.record(outcome);
        return Ok(upstream::to_client_response(answer, lease));
    };
    let (parts, body) = answer.into_parts();
    let image = match take_whole(body, length).await {
        Ok(image) => image,
        Err(cause) => {
            let upstream = lease.address().to_owned();
            lease.end(AttemptOutcome::Failed);
            return Err(Error::UpstreamFailed { upstream, cause });
        }
    };
    lease.end(outcome);
    state.metrics.count_answer(Relay::TakeOffThePod);
    // Handed to the client's connection a piece at a time, its room kept until the
    // last: as one frame, the connection would queue it whole and give the room back
    // while the image waited for a client that reads slowly.
    let answer = axum::http::Response::from_parts(parts, axum::body::Body::new(Pieces::new(image, room)));
    Ok(upstream::to_client_response(answer, ()))
}

/// A pod's image of the `length` it declared, read whole; why not, if it broke off or
/// was not that long.
async fn take_whole(body: axum::body::Body, length: usize) -> Result<Vec<u8>, String> {
    let mut image = Vec::with_capacity(length);
    let mut pieces = body.into_data_stream();
    while let Some(piece) = futures_util::StreamExt::next(&mut pieces).await {
        let piece = piece.map_err(|error| format!("its answer broke off: {error}"))?;
        if image.len() + piece.len() > length {
            return Err(format!("its answer is longer than the {length} bytes it declared"));
        }
        image.extend_from_slice(&piece);
    }
    if image.len() < length {
        return Err(format!("its answer ended at {} of the {length} bytes it declared", image.len()));
    }
    Ok(image)
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "status": "live" }))).into_response()
}

/// Ready from the start, with or without pods: the gateway holds requests while the
/// first pod starts, which is how a service scales from zero.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        Error::Draining.into_response()
    } else {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    exposition::response(state.metrics.render(&state.dispatcher.snapshot()))
}

async fn not_found(request: Request) -> Response {
    Error::from(RouteError::not_found(&request)).into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    Error::from(RouteError::method_not_allowed(&request)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_budget(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(MAX_WAIT_SECONDS, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_client_may_lower_its_budget_but_not_raise_it() {
        let max = Duration::from_secs(30);
        assert_eq!(budget(&HeaderMap::new(), max).unwrap(), max);
        assert_eq!(budget(&with_budget("1.5"), max).unwrap(), Duration::from_millis(1500));
        assert_eq!(budget(&with_budget("0"), max).unwrap(), Duration::ZERO);
        assert_eq!(budget(&with_budget("600"), max).unwrap(), max);
        for bad in ["-1", "soon", "NaN", "inf"] {
            let error = budget(&with_budget(bad), max).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(error.to_string().contains(MAX_WAIT_SECONDS), "{error}");
        }
    }

    fn answer(status: u16) -> Attempt {
        let mut response = axum::http::Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        Attempt::Answered(response)
    }

    #[test]
    fn busy_unavailable_and_lost_attempts_go_elsewhere_client_errors_do_not() {
        assert_eq!(judge(&answer(200)), (AttemptOutcome::Served, None));
        assert_eq!(judge(&answer(429)), (AttemptOutcome::Busy, Some(RetryReason::PodBusy)));
        assert_eq!(judge(&answer(503)), (AttemptOutcome::Unavailable, Some(RetryReason::PodUnavailable)));
        assert_eq!(judge(&answer(400)), (AttemptOutcome::Answered, None));
        assert_eq!(judge(&answer(415)), (AttemptOutcome::Answered, None));
        assert_eq!(judge(&answer(500)), (AttemptOutcome::Failed, None));
        assert_eq!(judge(&answer(504)), (AttemptOutcome::Failed, None));
        assert_eq!(
            judge(&Attempt::Refused("refused".into())),
            (AttemptOutcome::Refused, Some(RetryReason::ConnectionRefused))
        );
        assert_eq!(
            judge(&Attempt::Failed("reset".into())),
            (AttemptOutcome::Failed, Some(RetryReason::ConnectionFailed))
        );
    }

    fn oversized(status: u16) -> Attempt {
        Attempt::OversizedError { status: StatusCode::from_u16(status).unwrap(), cause: "over the limit".into() }
    }

    #[test]
    fn an_error_answer_too_large_to_pass_on_is_judged_by_its_status_not_as_a_broken_connection() {
        assert_eq!(judge(&oversized(400)), (AttemptOutcome::Answered, None));
        assert_eq!(judge(&oversized(500)), (AttemptOutcome::Failed, None));
        assert_eq!(judge(&oversized(429)), (AttemptOutcome::Busy, Some(RetryReason::PodBusy)));
    }

    #[test]
    fn outcomes_name_the_pods_status() {
        assert_eq!(answered_outcome(StatusCode::UNSUPPORTED_MEDIA_TYPE), "pod_415");
    }
}
