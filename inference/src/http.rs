//! The HTTP face of the pod: `POST /v1/remove`, health, readiness and metrics.
//!
//! A removal request goes: parse the query → check the content type and declared
//! length → take a place in the queue (or 429) → read the body at a minimum pace →
//! decode and prepare on a CPU worker → wait for the inference loop (or 504 at the
//! deadline) → compose and encode on a CPU worker. Every refusal before the body is
//! read is answered without asking for the body (no `100 Continue`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use image::DynamicImage;
use matte_common::metrics::CLIENT_GONE_OUTCOME;
use matte_common::paths;
use matte_serve::{BodyError, RouteError, declared_length, exposition, refuse_unread};
use tokio::sync::oneshot;

use crate::Error;
use crate::imaging::{self, OutputFormat};
use crate::metrics::Metrics;
use crate::place::{Place, PlacedAnswer};
use crate::queue::{Claim, Inferred, Job, JobId, JobQueue};
use crate::state::AppState;
use crate::upload::{self, BodyKind};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::REMOVE, post(remove))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// What the client asked for in the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveOptions {
    pub format: OutputFormat,
    pub max_dimension: u32,
    pub background: Option<[u8; 3]>,
}

/// The query's parameters by name, refusing one given twice: which value was meant
/// cannot be known.
fn query_parameters(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, Error> {
    let mut parameters = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if parameters.contains_key(&name) {
            return Err(Error::BadRequest(format!("query parameter `{name}` is given more than once")));
        }
        parameters.insert(name, value);
    }
    Ok(parameters)
}

/// Parses `format`, `max_dimension` and `bg_color`; a `max_dimension` above the
/// server's is lowered to it, anything unknown or malformed is refused by name.
pub fn parse_options(query: &HashMap<String, String>, server_max_dimension: u32) -> Result<RemoveOptions, Error> {
    if let Some(unknown) = query.keys().find(|key| !["format", "max_dimension", "bg_color"].contains(&key.as_str())) {
        return Err(Error::BadRequest(format!(
            "unknown query parameter `{unknown}`; expected format, max_dimension or bg_color"
        )));
    }
    let format = match query.get("format").map(String::as_str) {
        None | Some("png") => OutputFormat::Png,
        Some("webp") => OutputFormat::Webp,
        Some("jpeg") => OutputFormat::Jpeg,
        Some("mask") => OutputFormat::Mask,
        Some(other) => {
            return Err(Error::BadRequest(format!("format `{other}` is not one of png, webp, jpeg, mask")));
        }
    };
    let max_dimension = match query.get("max_dimension") {
        None => server_max_dimension,
        Some(text) => match text.parse::<u32>() {
            Ok(value) if value > 0 => value.min(server_max_dimension),
            _ => {
                return Err(Error::BadRequest(format!(
                    "max_dimension `{text}` is not a whole number of pixels above 0"
                )));
            }
        },
    };
    let background = match query.get("bg_color") {
        None => None,
        Some(text) => Some(imaging::parse_hex_colour(text).ok_or_else(|| {
            Error::BadRequest(format!("bg_color `{text}` is not a hex colour like ff8800 or #ff8800"))
        })?),
    };
    if background.is_some() && format == OutputFormat::Mask {
        return Err(Error::BadRequest("bg_color cannot be combined with format=mask".into()));
    }
    if background.is_none() && format == OutputFormat::Jpeg {
        // Filling the transparency with a colour nobody chose would hide the cut-out.
        return Err(Error::BadRequest(
            "format=jpeg has no transparency, so it needs bg_color, the colour to composite onto \
             (for example bg_color=ffffff); use png or webp for a transparent cut-out"
                .into(),
        ));
    }
    Ok(RemoveOptions { format, max_dimension, background })
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, Error> {
    let declared = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let mime = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" | "image/png" | "image/webp" => Ok(BodyKind::Raw),
        "multipart/form-data" => match multer::parse_boundary(declared) {
            Ok(boundary) => Ok(BodyKind::Multipart { boundary }),
            Err(_) => Err(Error::BadRequest("the multipart Content-Type has no boundary".into())),
        },
        "" => Err(Error::UnsupportedContentType("(none)".into())),
        _ => Err(Error::UnsupportedContentType(declared.to_owned())),
    }
}

/// Counts every removal request exactly once, by outcome, even when the client goes
/// away mid-request and the handler is dropped. An image is counted as it reaches the
/// client ([`crate::metrics::Delivery`]).
struct RequestRecord<'a> {
    metrics: &'a Metrics,
    started: Instant,
    /// `None` once the count is left to the answer's delivery.
    outcome: Option<&'static str>,
    admitted: bool,
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome {
            self.metrics.count_outcome(outcome);
        }
        // Requests turned away at the door would drown the latency of real work.
        if self.admitted {
            self.metrics.request_duration.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// A request let in: what it asked for, how its body travels, and its place.
struct Admitted {
    options: RemoveOptions,
    kind: BodyKind,
    declared_length: Option<u64>,
    place: Place,
}

async fn remove(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut record = RequestRecord {
        metrics: &state.metrics,
        started: Instant::now(),
        outcome: Some(CLIENT_GONE_OUTCOME),
        admitted: false,
    };
    let (parts, body) = request.into_parts();
    let outcome = match admit(&state, &parts) {
        Ok(admitted) => {
            record.admitted = true;
            remove_background(&state, admitted, body, record.started).await
        }
        Err(refusal) => {
            record.outcome = Some(refusal.code());
            if let Error::QueueFull { retry_after, .. } = &refusal {
                state.metrics.count_sent_away(*retry_after);
            }
            return refuse_unread(refusal.into_response(), &parts.headers, body).await;
        }
    };
    match outcome {
        Ok(response) => {
            record.outcome = None;
            response
        }
        Err(error) => {
            record.outcome = Some(error.code());
            error.into_response()
        }
    }
}

/// Everything decided from the request line and headers alone, in the order that
/// costs the client least: malformed query, unsupported type, declared length over
/// the limit, no place.
fn admit(state: &AppState, parts: &Parts) -> Result<Admitted, Error> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map_err(|e| Error::BadRequest(format!("malformed query string: {e}")))?;
    let options = parse_options(&query_parameters(pairs)?, state.limits.max_dimension)?;
    let kind = body_kind(&parts.headers)?;
    let declared_length = declared_length(&parts.headers, state.limits.max_body_bytes)?;
    let place = state.admit()?;
    Ok(Admitted { options, kind, declared_length, place })
}

async fn remove_background(
    state: &AppState,
    admitted: Admitted,
    body: Body,
    arrived: Instant,
) -> Result<Response, Error> {
    let Admitted { options, kind, declared_length, place } = admitted;
    let limits = state.limits;
    let deadline = arrived + limits.request_timeout;
    // An upload at the minimum pace may go on far longer than the request may: one still
    // arriving at the deadline could only be answered 504, and holds a place until then.
    let read = upload::read_image(body, &kind, declared_length, limits.max_body_bytes, limits.upload_pace, arrived);
    let bytes = tokio::time::timeout_at(deadline.into(), read)
        .await
        .map_err(|_| Error::Body(BodyError::PastDeadline { seconds: limits.request_timeout.as_secs_f64() }))??;
    let preprocess = *state.preprocess.get().ok_or(Error::NotReady)?;
    let max_pixels = limits.max_input_pixels;
    let working = place.clone();
    let decoding = state.on_cpu(move || -> Result<_, Error> {
        // The place stays taken until the work is done, whether or not anyone waits.
        let _place = working;
        let decoded = imaging::decode(&bytes, max_pixels, options.max_dimension)?;
        // The body is no use once decoded: gone before scaling makes its copies.
        drop(bytes);
        let image = decoded.into_upright();
        let tensor = imaging::to_model_input(&image, &preprocess);
        Ok((image, tensor))
    });
    let past_deadline = || Error::DeadlineExceeded {
        waited: arrived.elapsed().as_secs_f64(),
        deadline: limits.request_timeout.as_secs_f64(),
    };
    // Waiting for a CPU worker counts too: an image decoded after its deadline could
    // only be answered 504.
    let (image, tensor) =
        tokio::time::timeout_at(deadline.into(), decoding).await.map_err(|_| past_deadline())???;

    let (reply, mut result) = oneshot::channel();
    let claim = Arc::new(Claim::default());
    let job =
        Job { tensor, arrived, queued: Instant::now(), deadline, reply, claim: claim.clone(), place: place.clone() };
    // Closed: by a drain, or by a loop that is gone.
    let closed = |_| state.unready_reason().unwrap_or(Error::InferenceUnhealthy);
    let queued = Queued { queue: &state.queue, id: state.queue.push(job).map_err(closed)? };
    let answer = match tokio::time::timeout_at(deadline.into(), &mut result).await {
        Ok(answer) => answer,
        // Still waiting: answer now, and take the job out of the queue.
        Err(_) if claim.give_up() => return Err(past_deadline()),
        // Its run began in time: see it through.
        Err(_) => result.await,
    };
    drop(queued);
    let inferred: Inferred = answer.map_err(|_| Error::InferenceLoopStopped)??;

    let queue_wait = inferred.queue_wait;
    let inference = inferred.inference;
    let working = place.clone();
    let body = state
        .on_cpu(move || -> Result<Vec<u8>, Error> {
            let _place = working;
            let (width, height) = image.dimensions();
            let mask = &inferred.mask;
            let mask = imaging::mask_to_image(&mask.values, mask.width, mask.height, width, height);
            let result = match options.format {
                OutputFormat::Mask => DynamicImage::ImageLuma8(mask),
                OutputFormat::Png | OutputFormat::Webp | OutputFormat::Jpeg => {
                    imaging::compose(image, &mask, options.background)
                }
            };
            imaging::encode(&result, options.format)
        })
        .await??;

    let timing = format!(
        "queue;dur={:.1}, inference;dur={:.1}, total;dur={:.1}",
        queue_wait.as_secs_f64() * 1e3,
        inference.as_secs_f64() * 1e3,
        arrived.elapsed().as_secs_f64() * 1e3
    );
    let mut response = Response::new(Body::new(PlacedAnswer::body(body, place, state.metrics.delivery())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(options.format.content_type()));
    headers.insert(matte_common::headers::QUEUE_WAIT_SECONDS, seconds_header(queue_wait.as_secs_f64()));
    headers.insert(matte_common::headers::INFERENCE_SECONDS, seconds_header(inference.as_secs_f64()));
    if let Ok(value) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", value);
    }
    Ok(response)
}

/// A job in the queue on behalf of a handler: if the handler ends before the loop
/// took the job (client gone, deadline passed), the job leaves the queue with it and
/// its place is freed.
struct Queued<'a> {
    queue: &'a JobQueue,
    id: JobId,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        drop(self.queue.remove(self.id));
    }
}

fn seconds_header(seconds: f64) -> HeaderValue {
    HeaderValue::from_str(&format!("{seconds:.4}")).expect("a number is a valid header value")
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_live() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "live" }))).into_response()
    } else {
        Error::NotLive.into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.unready_reason() {
        None => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response(),
        Some(reason) => reason.into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.refresh_gauges();
    exposition::response(state.metrics.render())
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

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_a_transparent_png_at_the_server_limit() {
        let options = parse_options(&query(&[]), 2048).unwrap();
        assert_eq!(options, RemoveOptions { format: OutputFormat::Png, max_dimension: 2048, background: None });
    }

    #[test]
    fn options_are_parsed_and_clamped() {
        let options =
            parse_options(&query(&[("format", "webp"), ("max_dimension", "4096"), ("bg_color", "#102030")]), 2048)
                .unwrap();
        assert_eq!(options.format, OutputFormat::Webp);
        assert_eq!(options.max_dimension, 2048, "never above the server's limit");
        assert_eq!(options.background, Some([0x10, 0x20, 0x30]));
        assert_eq!(parse_options(&query(&[("max_dimension", "640")]), 2048).unwrap().max_dimension, 640);
        let jpeg = parse_options(&query(&[("format", "jpeg"), ("bg_color", "ffffff")]), 2048).unwrap();
        assert_eq!((jpeg.format, jpeg.background), (OutputFormat::Jpeg, Some([255; 3])));
    }

    #[test]
    fn malformed_options_name_the_parameter() {
        for (pairs, named) in [
            (vec![("format", "gif")], "format"),
            (vec![("max_dimension", "0")], "max_dimension"),
            (vec![("max_dimension", "-5")], "max_dimension"),
            (vec![("bg_color", "red")], "bg_color"),
            (vec![("bg_color", "ffffff"), ("format", "mask")], "bg_color"),
            (vec![("format", "jpeg")], "bg_color"),
            (vec![("fromat", "png")], "fromat"),
        ] {
            let error = parse_options(&query(&pairs), 2048).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert!(error.to_string().contains(named), "`{error}` should name {named}");
        }
    }

    #[test]
    fn a_repeated_parameter_is_refused_by_name() {
        let pairs = vec![("format".to_owned(), "png".to_owned()), ("format".to_owned(), "mask".to_owned())];
        let error = query_parameters(pairs).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("`format`"), "{error}");
    }

    #[test]
    fn content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            body_kind(&headers)
        };
        assert_eq!(with("image/jpeg").unwrap(), BodyKind::Raw);
        assert_eq!(with("IMAGE/PNG; charset=binary").unwrap(), BodyKind::Raw);
        assert_eq!(with("multipart/form-data; boundary=x").unwrap(), BodyKind::Multipart { boundary: "x".into() });
        assert_eq!(with("multipart/form-data").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(with("text/plain").unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(with("image/gif").unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body_kind(&HeaderMap::new()).unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
