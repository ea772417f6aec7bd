//! Sends images to the inference server at a fixed concurrency and counts what came back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::error::LoadError;
use crate::stats::Distribution;

/// Response header: seconds the request waited in the pod's queue.
pub const QUEUE_WAIT_HEADER: &str = matte_common::headers::QUEUE_WAIT_SECONDS;
/// Response header: seconds of the inference run that served the request.
pub const INFERENCE_HEADER: &str = matte_common::headers::INFERENCE_SECONDS;
/// Wait before retrying a 429 that carries no usable `Retry-After`.
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Longest wait honoured from a `Retry-After` header.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Shortest wait before retrying a 429, whatever its `Retry-After` says: a server
/// answering `Retry-After: 0` would otherwise be asked again in a tight loop.
pub const MIN_RETRY_WAIT: Duration = Duration::from_millis(50);
/// A worker's pause after a request got no response (a refused or broken
/// connection): against a server that is down, it would otherwise send as fast as
/// connections fail, and keep an outcome of each.
pub const TRANSPORT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long after it was due a request of an open loop may start and still count as on
/// time.
pub const LATE_START: Duration = Duration::from_millis(10);

/// The largest image file read: the most any server takes in one body.
pub const MAX_IMAGE_BYTES: u64 = matte_common::memory::MAX_BODY_BYTES_LIMIT;

/// One image file, read once and sent many times.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    pub content_type: &'static str,
    pub bytes: Bytes,
}

impl Image {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let content_type = content_type_for(path)?;
        let data = matte_common::files::read_bounded(path, MAX_IMAGE_BYTES)
            .map_err(|source| LoadError::ReadImage { path: path.to_owned(), source })?;
        if data.is_empty() {
            return Err(LoadError::EmptyImage { path: path.to_owned() });
        }
        Ok(Self { path: path.to_owned(), content_type, bytes: Bytes::from(data) })
    }
}

/// The `Content-Type` to send for an image file, from its extension.
pub fn content_type_for(path: &Path) -> Result<&'static str, LoadError> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jpg" | "jpeg" | "jpe" | "jfif") => Ok("image/jpeg"),
        Some("png") => Ok("image/png"),
        Some("webp") => Ok("image/webp"),
        _ => Err(LoadError::UnsupportedImageType { path: path.to_owned() }),
    }
}

/// The URL to post to: `base` (a server base such as `http://127.0.0.1:8080` gets
/// `/v1/remove` appended) with `query` appended to any query it already has.
pub fn endpoint(base: &str, query: &[(String, String)]) -> Result<Url, LoadError> {
    let bad = |reason: String| LoadError::BadUrl { url: base.to_owned(), reason };
    let mut url = Url::parse(base).map_err(|e| bad(format!("{e} (expected e.g. http://127.0.0.1:8080)")))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err(bad("https is not supported; use the server's plain HTTP address".into())),
        other => return Err(bad(format!("scheme {other:?} is not http (expected e.g. http://127.0.0.1:8080)"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(matte_common::paths::REMOVE);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Parses one `KEY=VALUE` query parameter.
pub fn parse_query(pair: &str) -> Result<(String, String), LoadError> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(LoadError::BadQuery(pair.to_owned())),
    }
}

/// How long to wait before retrying after a 429: `Retry-After` in seconds (whole or
/// fractional), capped at [`MAX_RETRY_WAIT`]; [`DEFAULT_RETRY_WAIT`] when it is missing
/// or not a number of seconds (an HTTP date, say).
pub fn retry_wait(retry_after: Option<&str>) -> Duration {
    retry_after
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map_or(DEFAULT_RETRY_WAIT, |seconds| Duration::from_secs_f64(seconds.min(MAX_RETRY_WAIT.as_secs_f64())))
        .max(MIN_RETRY_WAIT)
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests (cycling through the images).
    Requests(u64),
    /// No new request starts after this much time; those in flight finish.
    Duration(Duration),
}

impl Stop {
    /// The most requests, and the time after which none starts, of a run from `began`.
    fn bounds(self, began: Instant) -> (Option<u64>, Option<Instant>) {
        match self {
            Stop::Requests(n) => (Some(n), None),
            Stop::Duration(duration) => (None, Some(began + duration)),
        }
    }
}

/// A load run.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: Url,
    pub images: Vec<Image>,
    pub concurrency: usize,
    pub stop: Stop,
    /// Requests sent first, at the same concurrency, and not counted.
    pub warmup: u64,
    /// Limit on each request, from sending to the end of the response body.
    pub timeout: Duration,
    /// `Some(n)`: retry a 429 up to `n` times, waiting as `Retry-After` says.
    pub retry_429: Option<u32>,
    /// `Some(r)`: send `r` requests a second, each when it is due whatever the answers
    /// (an open loop, `concurrency` the most in flight), its latency counted from then;
    /// `None`: each of `concurrency` clients sends its next once its last is answered.
    pub rate: Option<f64>,
    /// How the image travels: the raw body (Matte's API) or a multipart form.
    pub body: BodyShape,
}

/// The request body, so that the same tool can measure servers with other APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyShape {
    /// The image as the whole body, with its Content-Type.
    Raw,
    /// A multipart form: the image in field `field`, plus extra text fields.
    Multipart { field: String, fields: Vec<(String, String)> },
}

/// What one request ended with.
#[derive(Debug, Clone)]
struct Outcome {
    /// The final HTTP status, or why no response came.
    result: Result<StatusCode, Failure>,
    /// From the first attempt to the end of the final response, retry waits included.
    latency: f64,
    queue_wait: Option<f64>,
    inference: Option<f64>,
    retries: u32,
    /// When the final response ended (or failed).
    finished: Instant,
}

#[derive(Debug, Clone)]
enum Failure {
    Timeout,
    Other(String),
}

/// The figures of a run. Field names are stable: `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    pub concurrency: usize,
    pub images: usize,
    pub warmup_requests: u64,
    /// The requests a second scheduled (`--rate`), if the run was an open loop.
    pub rate_per_second: Option<f64>,
    /// Requests of an open loop that started more than [`LATE_START`] after they were
    /// due, for want of a place in flight: the latency counts the wait.
    pub late_starts: u64,
    /// Requests counted (warm-up excluded), whatever their outcome.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests whose final answer was 429 (queue full), after any retries.
    pub rejected_429: u64,
    /// 429 answers that were retried (`--retry-429`); not counted in `requests`.
    pub retries_429: u64,
    /// Requests that got no HTTP response (connection error, timeout).
    pub transport_errors: u64,
    /// The part of `transport_errors` that ran past `--timeout`.
    pub timeouts: u64,
    /// Final HTTP status of every answered request.
    pub status_counts: BTreeMap<u16, u64>,
    /// The non-2xx part of `status_counts`.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// From the first measured request to the last answer, the requests still in
    /// flight at a `--duration`'s end included.
    pub elapsed_seconds: f64,
    /// What the rates are taken over: the `--duration`, or `elapsed_seconds` for a
    /// count of requests. The answers to requests in flight when a duration ends come
    /// after it, some as late as `--timeout`; over the whole elapsed time, one request
    /// hung until its time-out would have divided a 10 s run's rate by seven.
    pub measured_seconds: f64,
    /// Successful (2xx) requests answered within `measured_seconds`, per second of it.
    pub throughput_images_per_second: f64,
    /// Successful requests answered after a `--duration` ended: counted in `ok`, not
    /// in the throughput.
    pub ok_after_duration: u64,
    /// Counted requests ended within `measured_seconds`, per second of it.
    pub requests_per_second: f64,
    /// Latency of the successful requests, retry waits included.
    pub latency_seconds: Option<Distribution>,
    /// From the server's `x-matte-queue-wait-seconds` header, where present.
    pub queue_wait_seconds: Option<Distribution>,
    /// From the server's `x-matte-inference-seconds` header, where present.
    pub inference_seconds: Option<Distribution>,
    pub first_transport_error: Option<String>,
}

impl Summary {
    fn new(config: &Config, outcomes: &[Outcome], started: Instant, late_starts: u64) -> Self {
        let mut status_counts = BTreeMap::new();
        let (mut transport_errors, mut timeouts, mut retries_429) = (0, 0, 0);
        let mut first_transport_error = None;
        let mut latencies = Vec::new();
        for outcome in outcomes {
            retries_429 += u64::from(outcome.retries);
            match &outcome.result {
                Ok(status) => {
                    *status_counts.entry(status.as_u16()).or_insert(0) += 1;
                    if status.is_success() {
                        latencies.push(outcome.latency);
                    }
                }
                Err(failure) => {
                    transport_errors += 1;
                    let message = match failure {
                        Failure::Timeout => {
                            timeouts += 1;
                            format!("timed out after {:?}", config.timeout)
                        }
                        Failure::Other(message) => message.clone(),
                    };
                    first_transport_error.get_or_insert(message);
                }
            }
        }
        let errors_by_status: BTreeMap<u16, u64> = status_counts
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(status, count)| (*status, *count))
            .collect();
        let ok = latencies.len() as u64;
        let requests = outcomes.len() as u64;
        let ended = outcomes.iter().map(|outcome| outcome.finished).max().unwrap_or(started);
        let elapsed_seconds = ended.saturating_duration_since(started).as_secs_f64();
        let window_end = match config.stop {
            Stop::Duration(duration) => (started + duration).min(ended),
            Stop::Requests(_) => ended,
        };
        let measured_seconds = window_end.saturating_duration_since(started).as_secs_f64();
        let within = |outcome: &&Outcome| outcome.finished <= window_end;
        let ok_within = outcomes
            .iter()
            .filter(within)
            .filter(|outcome| outcome.result.as_ref().is_ok_and(|s| s.is_success()))
            .count() as u64;
        let requests_within = outcomes.iter().filter(within).count() as u64;
        let per_second = |n: u64| if measured_seconds > 0.0 { n as f64 / measured_seconds } else { 0.0 };
        let header_samples =
            |pick: fn(&Outcome) -> Option<f64>| -> Vec<f64> { outcomes.iter().filter_map(pick).collect() };
        Self {
            url: config.url.to_string(),
            concurrency: config.concurrency,
            images: config.images.len(),
            warmup_requests: config.warmup,
            rate_per_second: config.rate,
            late_starts,
            requests,
            ok,
            rejected_429: status_counts.get(&429).copied().unwrap_or(0),
            retries_429,
            transport_errors,
            timeouts,
            errors_by_status,
            status_counts,
            elapsed_seconds,
            measured_seconds,
            throughput_images_per_second: per_second(ok_within),
            ok_after_duration: ok - ok_within,
            requests_per_second: per_second(requests_within),
            latency_seconds: Distribution::from_samples(&latencies),
            queue_wait_seconds: Distribution::from_samples(&header_samples(|o| o.queue_wait)),
            inference_seconds: Distribution::from_samples(&header_samples(|o| o.inference)),
            first_transport_error,
        }
    }
}

struct Shared {
    client: Client,
    url: Url,
    images: Vec<Image>,
    retry_429: Option<u32>,
    body: BodyShape,
}

impl Shared {
    /// The image the `index`th request sends, cycling through them.
    fn image(&self, index: u64) -> &Image {
        &self.images[(index % self.images.len() as u64) as usize]
    }
}

/// Runs the warm-up, then the measured requests, and summarises the measured ones.
pub async fn run(config: &Config) -> Result<Summary, LoadError> {
    if config.images.is_empty() {
        return Err(LoadError::NoImages);
    }
    if config.concurrency == 0 {
        return Err(LoadError::ZeroConcurrency);
    }
    // No proxy: a system proxy (http_proxy) would be what is measured.
    let client = Client::builder()
        .no_proxy()
        .timeout(config.timeout)
        .pool_max_idle_per_host(config.concurrency)
        .build()
        .map_err(LoadError::Client)?;
    let shared = Arc::new(Shared {
        client,
        url: config.url.clone(),
        images: config.images.clone(),
        retry_429: config.retry_429,
        body: config.body.clone(),
    });
    if config.warmup > 0 {
        run_phase(&shared, config.concurrency, Stop::Requests(config.warmup)).await?;
    }
    let started = Instant::now();
    let (outcomes, late_starts) = match config.rate {
        Some(rate) => run_at_rate(&shared, config.concurrency, rate, config.stop).await?,
        None => (run_phase(&shared, config.concurrency, config.stop).await?, 0),
    };
    Ok(Summary::new(config, &outcomes, started, late_starts))
}

async fn run_phase(shared: &Arc<Shared>, concurrency: usize, stop: Stop) -> Result<Vec<Outcome>, LoadError> {
    let (limit, deadline) = stop.bounds(Instant::now());
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let shared = Arc::clone(shared);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|n| index >= n) {
                    break;
                }
                let outcome = send(&shared, shared.image(index), deadline, Instant::now()).await;
                let unanswered = matches!(outcome.result, Err(Failure::Other(_)));
                outcomes.push(outcome);
                if unanswered {
                    tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                }
            }
            outcomes
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.map_err(LoadError::Worker)?);
    }
    Ok(all)
}

/// An open loop: request `i` is due `i / rate` seconds in, and starts then or, with
/// `cap` in flight, as soon as one ends; its latency counts from when it was due, so a
/// server that stalls shows the queue of arrivals it would have had. The outcomes, and
/// how many started late.
async fn run_at_rate(
    shared: &Arc<Shared>,
    cap: usize,
    rate: f64,
    stop: Stop,
) -> Result<(Vec<Outcome>, u64), LoadError> {
    let began = Instant::now();
    let (limit, deadline) = stop.bounds(began);
    let places = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut requests = JoinSet::new();
    let mut late_starts = 0;
    for index in 0u64.. {
        let due = began + Duration::from_secs_f64(index as f64 / rate);
        if limit.is_some_and(|n| index >= n) || deadline.is_some_and(|d| due >= d) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let place = Arc::clone(&places).acquire_owned().await.expect("the semaphore is never closed");
        if Instant::now().saturating_duration_since(due) > LATE_START {
            late_starts += 1;
        }
        let shared = Arc::clone(shared);
        requests.spawn(async move {
            let outcome = send(&shared, shared.image(index), deadline, due).await;
            drop(place);
            outcome
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = requests.join_next().await {
        outcomes.push(joined.map_err(LoadError::Worker)?);
    }
    Ok((outcomes, late_starts))
}

/// Sends one image, retrying 429s when asked to, and reads the whole response; its
/// latency counts from `started` (when it was due, in an open loop).
async fn send(shared: &Shared, image: &Image, deadline: Option<Instant>, started: Instant) -> Outcome {
    let mut retries = 0;
    loop {
        let request = shared.client.post(shared.url.clone());
        let request = match &shared.body {
            BodyShape::Raw => request.header(CONTENT_TYPE, image.content_type).body(image.bytes.clone()),
            BodyShape::Multipart { field, fields } => request.multipart(multipart_form(image, field, fields)),
        };
        let sent = request.send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return failed(error, started, retries),
        };
        let status = response.status();
        let headers = response.headers().clone();
        if let Err(error) = response.bytes().await {
            return failed(error, started, retries);
        }
        if status == StatusCode::TOO_MANY_REQUESTS
            && let Some(max) = shared.retry_429
            && retries < max
        {
            let wait = retry_wait(headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()));
            if deadline.is_none_or(|d| Instant::now() + wait < d) {
                tokio::time::sleep(wait).await;
                retries += 1;
                continue;
            }
        }
        return Outcome {
            result: Ok(status),
            latency: started.elapsed().as_secs_f64(),
            queue_wait: header_seconds(&headers, QUEUE_WAIT_HEADER),
            inference: header_seconds(&headers, INFERENCE_HEADER),
            retries,
            finished: Instant::now(),
        };
    }
}

fn multipart_form(image: &Image, field: &str, fields: &[(String, String)]) -> Form {
    let file_name = image.path.file_name().map_or_else(|| "image".to_owned(), |n| n.to_string_lossy().into_owned());
    let part = Part::bytes(image.bytes.to_vec())
        .file_name(file_name)
        .mime_str(image.content_type)
        .expect("content types come from a fixed list of valid MIME types");
    fields
        .iter()
        .fold(Form::new().part(field.to_owned(), part), |form, (key, value)| form.text(key.clone(), value.clone()))
}

fn failed(error: reqwest::Error, started: Instant, retries: u32) -> Outcome {
    let failure = if error.is_timeout() { Failure::Timeout } else { Failure::Other(error_chain(&error)) };
    Outcome {
        result: Err(failure),
        latency: started.elapsed().as_secs_f64(),
        queue_wait: None,
        inference: None,
        retries,
        finished: Instant::now(),
    }
}

/// The error and its causes, e.g. "error sending request …: client error (Connect): Connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn header_seconds(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_base_gets_the_remove_path() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            assert_eq!(endpoint(base, &[]).expect("valid").as_str(), "http://127.0.0.1:8080/v1/remove");
        }
    }

    #[test]
    fn an_explicit_path_is_kept_and_query_appended() {
        let query = [("format".to_owned(), "mask".to_owned()), ("bg_color".to_owned(), "#ff0000".to_owned())];
        let url = endpoint("http://gateway:80/matte/v1/remove?tenant=a", &query).expect("valid");
        assert_eq!(url.path(), "/matte/v1/remove");
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert_eq!(
            pairs,
            [("tenant", "a"), ("format", "mask"), ("bg_color", "#ff0000")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn bad_urls_are_rejected() {
        for base in ["127.0.0.1:8080", "localhost:8080", "https://example.com", "ftp://example.com", "http://", ""] {
            assert!(matches!(endpoint(base, &[]), Err(LoadError::BadUrl { .. })), "{base:?} accepted");
        }
    }

    #[test]
    fn content_type_follows_the_extension() {
        assert_eq!(content_type_for(Path::new("a/photo.JPG")).ok(), Some("image/jpeg"));
        assert_eq!(content_type_for(Path::new("photo.jpeg")).ok(), Some("image/jpeg"));
        assert_eq!(content_type_for(Path::new("cut.png")).ok(), Some("image/png"));
        assert_eq!(content_type_for(Path::new("cut.webp")).ok(), Some("image/webp"));
        for path in ["photo.gif", "photo", "png"] {
            assert!(matches!(content_type_for(Path::new(path)), Err(LoadError::UnsupportedImageType { .. })));
        }
    }

    #[test]
    fn unreadable_and_empty_files_are_named_errors() {
        let missing = Path::new("/nonexistent/matte-load/photo.png");
        assert!(matches!(Image::load(missing), Err(LoadError::ReadImage { path, .. }) if path == missing));
        let empty = std::env::temp_dir().join(format!("matte-load-empty-{}.png", std::process::id()));
        std::fs::write(&empty, b"").expect("temp file");
        let loaded = Image::load(&empty);
        let _ = std::fs::remove_file(&empty);
        assert!(matches!(loaded, Err(LoadError::EmptyImage { .. })));
    }

    #[test]
    fn query_pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_query("max_dimension=512").ok(), Some(("max_dimension".into(), "512".into())));
        assert_eq!(parse_query("bg_color=").ok(), Some(("bg_color".into(), String::new())));
        assert_eq!(parse_query("a=b=c").ok(), Some(("a".into(), "b=c".into())));
        assert!(matches!(parse_query("format"), Err(LoadError::BadQuery(_))));
        assert!(matches!(parse_query("=png"), Err(LoadError::BadQuery(_))));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        assert_eq!(retry_wait(Some("3")), Duration::from_secs(3));
        assert_eq!(retry_wait(Some(" 0.5 ")), Duration::from_millis(500));
        assert_eq!(retry_wait(Some("0")), MIN_RETRY_WAIT, "never a tight loop");
        assert_eq!(retry_wait(Some("86400")), MAX_RETRY_WAIT);
        assert_eq!(retry_wait(Some("-1")), DEFAULT_RETRY_WAIT);
        assert_eq!(retry_wait(Some("Wed, 21 Oct 2015 07:28:00 GMT")), DEFAULT_RETRY_WAIT);
        assert_eq!(retry_wait(None), DEFAULT_RETRY_WAIT);
    }
}
