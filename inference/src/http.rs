//! The HTTP face of the pod: `POST /v1/remove`, health, readiness and metrics.
//!
//! A removal request goes: parse the query → check the content type → take a place in
//! the queue (or 429) → read the body → decode and prepare on a CPU worker → wait for
//! the inference loop (or 504 at the deadline) → compose and encode on a CPU worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use image::DynamicImage;
use matte_common::paths;
use tokio::sync::oneshot;

use crate::Error;
use crate::imaging::{self, OutputFormat};
use crate::metrics::Metrics;
use crate::queue::{Inferred, Job};
use crate::server::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::REMOVE, post(remove))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .fallback(not_found)
        // Applies to multipart bodies; raw bodies are limited where they are read.
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// What the client asked for in the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveOptions {
    pub format: OutputFormat,
    pub max_dimension: u32,
    pub background: Option<[u8; 3]>,
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
        Some("mask") => OutputFormat::Mask,
        Some(other) => {
            return Err(Error::BadRequest(format!("format `{other}` is not one of png, webp, mask")));
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
    Ok(RemoveOptions { format, max_dimension, background })
}

/// How the image travels in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Raw,
    Multipart,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, Error> {
    let declared = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let mime = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" | "image/png" | "image/webp" => Ok(BodyKind::Raw),
        "multipart/form-data" => Ok(BodyKind::Multipart),
        "" => Err(Error::UnsupportedContentType("(none)".into())),
        _ => Err(Error::UnsupportedContentType(declared.to_owned())),
    }
}

/// Counts every removal request exactly once, by outcome, even when the client goes
/// away mid-request and the handler is dropped.
struct RequestRecord<'a> {
    metrics: &'a Metrics,
    started: Instant,
    outcome: &'static str,
    admitted: bool,
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        self.metrics.count_outcome(self.outcome);
        // Requests turned away at the door would drown the latency of real work.
        if self.admitted {
            self.metrics.request_duration.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

async fn remove(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut record =
        RequestRecord { metrics: &state.metrics, started: Instant::now(), outcome: "client_gone", admitted: false };
    let (parts, body) = request.into_parts();
    let mut unread = Some(body);
    match remove_background(&state, &parts, &mut unread, &mut record).await {
        Ok(response) => {
            record.outcome = "ok";
            response
        }
        Err(error) => {
            record.outcome = error.code();
            if error.status() == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(%error, "request failed");
            }
            if let Some(body) = unread {
                // Refused before reading: take the rest of the upload off the wire, or
                // closing the socket on unread data resets it and the client never
                // sees this answer.
                discard(body.into_data_stream()).await;
            }
            error.into_response()
        }
    }
}

async fn remove_background(
    state: &AppState,
    parts: &Parts,
    unread: &mut Option<Body>,
    record: &mut RequestRecord<'_>,
) -> Result<Response, Error> {
    let arrived = record.started;
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map_err(|e| Error::BadRequest(format!("malformed query string: {e}")))?;
    let options = parse_options(&query, state.limits.max_dimension)?;
    let kind = body_kind(&parts.headers)?;

    let _place = state.admit()?;
    record.admitted = true;

    let body = unread.take().ok_or_else(|| Error::Internal("the body was already read".into()))?;
    let bytes = read_image(&parts.headers, body, kind, state.limits.max_body_bytes).await?;
    let preprocess = *state.preprocess.get().ok_or(Error::NotReady)?;
    let max_pixels = state.limits.max_input_pixels;
    let (image, tensor) = state
        .on_cpu(move || -> Result<_, Error> {
            let image = imaging::fit_within(imaging::decode(&bytes, max_pixels)?, options.max_dimension);
            let tensor = imaging::to_model_input(&image, &preprocess);
            Ok((image, tensor))
        })
        .await??;

    let deadline = arrived + state.limits.request_timeout;
    let (reply, mut result) = oneshot::channel();
    let started = Arc::new(AtomicBool::new(false));
    state
        .queue
        .push(Job { tensor, arrived, deadline, reply, started: started.clone() })
        .map_err(|_| Error::Draining)?;
    let answer = match tokio::time::timeout_at(deadline.into(), &mut result).await {
        Ok(answer) => answer,
        // Its run began in time: see it through.
        Err(_) if started.load(Ordering::SeqCst) => result.await,
        // Still waiting: answer now; dropping the receiver tells the loop to skip it.
        Err(_) => {
            return Err(Error::DeadlineExceeded {
                waited: arrived.elapsed().as_secs_f64(),
                deadline: state.limits.request_timeout.as_secs_f64(),
            });
        }
    };
    let inferred: Inferred = answer.map_err(|_| Error::Internal("the inference loop stopped".into()))??;

    let queue_wait = inferred.queue_wait;
    let inference = inferred.inference;
    let body = state
        .on_cpu(move || -> Result<Vec<u8>, Error> {
            let (width, height) = image.dimensions();
            let mask = &inferred.mask;
            let mask = imaging::mask_to_image(&mask.values, mask.width, mask.height, width, height);
            let result = match options.format {
                OutputFormat::Mask => DynamicImage::ImageLuma8(mask),
                OutputFormat::Png | OutputFormat::Webp => imaging::compose(image, &mask, options.background),
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
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(options.format.content_type()));
    headers.insert("x-matte-queue-wait-seconds", seconds_header(queue_wait.as_secs_f64()));
    headers.insert("x-matte-inference-seconds", seconds_header(inference.as_secs_f64()));
    if let Ok(value) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", value);
    }
    Ok(response)
}

fn seconds_header(seconds: f64) -> HeaderValue {
    HeaderValue::from_str(&format!("{seconds:.4}")).expect("a number is a valid header value")
}

/// The most a refused request's upload is read for nothing before the connection is
/// simply closed.
const DISCARD_LIMIT: usize = 64 * 1024 * 1024;

async fn read_image(headers: &HeaderMap, body: Body, kind: BodyKind, limit: usize) -> Result<Bytes, Error> {
    match kind {
        BodyKind::Raw => read_limited(body, limit).await,
        BodyKind::Multipart => {
            let content_type = headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static(""));
            let limited = Body::new(http_body_util::Limited::new(body, limit));
            let request = Request::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(limited)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let mut multipart = Multipart::from_request(request, &())
                .await
                .map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
            let multipart_error = |error: axum::extract::multipart::MultipartError| {
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::BodyTooLarge { limit }
                } else {
                    Error::BadRequest(format!("malformed multipart body: {}", error.body_text()))
                }
            };
            while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                if field.name() == Some("image") {
                    return field.bytes().await.map_err(multipart_error);
                }
            }
            Err(Error::BadRequest("the multipart body has no field named `image`".into()))
        }
    }
}

/// Reads the whole body if it is at most `limit` bytes; past that, drains the rest
/// (see [`discard`]) so the 413 reaches the client.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Error> {
    let mut stream = body.into_data_stream();
    let mut collected = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("could not read the body: {e}")))?;
        if collected.len() + chunk.len() > limit {
            drop(collected);
            discard(stream).await;
            return Err(Error::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(collected))
}

/// Reads and drops up to [`DISCARD_LIMIT`] bytes of a body nobody will use, for at
/// most a few seconds: a slow client must not hold the handler.
async fn discard(mut stream: BodyDataStream) {
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_live() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "the inference loop has stopped\n").into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.unready_reason() {
        None => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response(),
        Some(reason) => reason.into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.observe_queue();
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

async fn not_found(request: Request) -> Response {
    Error::NotFound(request.uri().path().to_owned()).into_response()
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
    }

    #[test]
    fn malformed_options_name_the_parameter() {
        for (pairs, named) in [
            (vec![("format", "gif")], "format"),
            (vec![("max_dimension", "0")], "max_dimension"),
            (vec![("max_dimension", "-5")], "max_dimension"),
            (vec![("bg_color", "red")], "bg_color"),
            (vec![("bg_color", "ffffff"), ("format", "mask")], "bg_color"),
            (vec![("fromat", "png")], "fromat"),
        ] {
            let error = parse_options(&query(&pairs), 2048).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert!(error.to_string().contains(named), "`{error}` should name {named}");
        }
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
        assert_eq!(with("multipart/form-data; boundary=x").unwrap(), BodyKind::Multipart);
        assert_eq!(with("text/plain").unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(with("image/gif").unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body_kind(&HeaderMap::new()).unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
