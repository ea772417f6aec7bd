//! Runs the driver against a small in-process HTTP server that stands in for an
//! inference pod: it checks what it receives, answers 200 with the timing headers, and
//! answers 429 with `Retry-After` where a test's policy says so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Multipart;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use matte_load::driver::{self, BodyShape, Config, Image, Stop, Summary};

#[derive(Clone, Copy)]
enum Reply {
    Ok,
    TooManyRequests { retry_after: &'static str },
    SlowOk(Duration),
}

struct Server {
    policy: Box<dyn Fn(u64) -> Reply + Send + Sync>,
    hits: AtomicU64,
    rejected: AtomicU64,
}

async fn remove(
    State(server): State<Arc<Server>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hit = server.hits.fetch_add(1, Ordering::SeqCst);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let body_matches = match content_type {
        "image/png" => body.starts_with(b"png-"),
        "image/jpeg" => body.starts_with(b"jpeg-"),
        _ => false,
    };
    if !body_matches || query.get("format").map(String::as_str) != Some("mask") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let reply = (server.policy)(hit);
    if let Reply::SlowOk(delay) = reply {
        tokio::time::sleep(delay).await;
    }
    match reply {
        Reply::TooManyRequests { retry_after } => {
            server.rejected.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after)],
                r#"{"error":{"code":"queue_full","message":"full"}}"#,
            )
                .into_response()
        }
        Reply::Ok | Reply::SlowOk(_) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::HeaderName::from_static(driver::QUEUE_WAIT_HEADER), "0.2500"),
                (header::HeaderName::from_static(driver::INFERENCE_HEADER), "0.5000"),
            ],
            "cut-out",
        )
            .into_response(),
    }
}

/// A form-based API like rembg's: the image in field `file`, the model in `model`.
async fn remove_form(State(server): State<Arc<Server>>, mut form: Multipart) -> StatusCode {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let (mut file_ok, mut model_ok) = (false, false);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => {
                let is_png = field.content_type() == Some("image/png");
                file_ok = is_png && field.bytes().await.is_ok_and(|b| b.starts_with(b"png-"));
            }
            Some("model") => model_ok = field.text().await.is_ok_and(|t| t == "dis_custom"),
            _ => {}
        }
    }
    if file_ok && model_ok { StatusCode::OK } else { StatusCode::BAD_REQUEST }
}

/// Starts the server on 127.0.0.1:0 and returns it with its base URL.
async fn serve(policy: impl Fn(u64) -> Reply + Send + Sync + 'static) -> (Arc<Server>, String) {
    let server = Arc::new(Server { policy: Box::new(policy), hits: AtomicU64::new(0), rejected: AtomicU64::new(0) });
    let app = Router::new()
        .route("/v1/remove", post(remove))
        .route("/api/remove", post(remove_form))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, format!("http://{address}"))
}

fn images(test: &str) -> Vec<Image> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("matte-load-{test}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    [("a.png", &b"png-a"[..]), ("b.jpg", &b"jpeg-b"[..])]
        .into_iter()
        .map(|(name, content)| {
            let path = dir.join(name);
            std::fs::write(&path, content).expect("write image");
            Image::load(&path).expect("load image")
        })
        .collect()
}

fn config(base: &str, test: &str, concurrency: usize, stop: Stop) -> Config {
    Config {
        url: driver::endpoint(base, &[("format".into(), "mask".into())]).expect("url"),
        images: images(test),
        concurrency,
        stop,
        warmup: 0,
        timeout: Duration::from_secs(10),
        retry_429: None,
        body: BodyShape::Raw,
        rate: None,
    }
}

/// What must hold for any summary.
fn assert_consistent(s: &Summary) {
    let answered: u64 = s.status_counts.values().sum();
    assert_eq!(s.requests, answered + s.transport_errors, "{s:#?}");
    let ok: u64 = s.status_counts.iter().filter(|(status, _)| (200..300).contains(*status)).map(|(_, n)| n).sum();
    assert_eq!(s.ok, ok);
    assert_eq!(s.errors_by_status.values().sum::<u64>(), answered - ok);
    assert_eq!(s.rejected_429, s.status_counts.get(&429).copied().unwrap_or(0));
    assert_eq!(s.latency_seconds.map_or(0, |d| d.count) as u64, s.ok);
    assert!(s.elapsed_seconds > 0.0 && s.measured_seconds <= s.elapsed_seconds);
    let ok_within = (s.ok - s.ok_after_duration) as f64;
    assert!((s.throughput_images_per_second - ok_within / s.measured_seconds).abs() < 1e-9);
    if let Some(latency) = s.latency_seconds {
        assert!(latency.min <= latency.p50 && latency.p50 <= latency.p90 && latency.p90 <= latency.p95);
        assert!(latency.p95 <= latency.p99 && latency.p99 <= latency.max);
        assert!(latency.max <= s.elapsed_seconds);
    }
}

#[tokio::test]
async fn rejections_are_counted_by_status_and_warmup_is_not_counted() {
    // Every third request the server sees is turned away.
    let (server, base) =
        serve(|hit| if hit % 3 == 2 { Reply::TooManyRequests { retry_after: "0" } } else { Reply::Ok }).await;
    let mut config = config(&base, "counted", 4, Stop::Requests(30));
    config.warmup = 3; // hits 0..3, one of them rejected: the measured run sees hits 3..33.
    let s = driver::run(&config).await.expect("run");

    assert_consistent(&s);
    assert_eq!(server.hits.load(Ordering::SeqCst), 33);
    assert_eq!(s.requests, 30);
    assert_eq!(s.warmup_requests, 3);
    assert_eq!(s.ok, 20);
    assert_eq!(s.rejected_429, 10);
    assert_eq!(s.retries_429, 0);
    assert_eq!(s.transport_errors, 0);
    assert_eq!(s.status_counts.clone().into_iter().collect::<Vec<_>>(), [(200, 20), (429, 10)]);
    assert_eq!(s.errors_by_status.clone().into_iter().collect::<Vec<_>>(), [(429, 10)]);
    let queue_wait = s.queue_wait_seconds.expect("queue wait reported");
    assert_eq!(queue_wait.count, 20);
    assert!((queue_wait.mean - 0.25).abs() < 1e-9 && (queue_wait.p95 - 0.25).abs() < 1e-9);
    assert!((s.inference_seconds.expect("inference reported").mean - 0.5).abs() < 1e-9);
    assert!(s.url.ends_with("/v1/remove?format=mask"), "{}", s.url);

    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["errors_by_status"]["429"], 10);
    assert_eq!(json["requests"], 30);
    assert!(json["latency_seconds"]["p99"].is_f64());
}

#[tokio::test]
async fn retried_rejections_end_accepted() {
    // Ten rejections in all, so no request can exhaust ten retries.
    let (server, base) =
        serve(|hit| if hit < 30 && hit % 3 == 2 { Reply::TooManyRequests { retry_after: "0" } } else { Reply::Ok })
            .await;
    let mut config = config(&base, "retried", 4, Stop::Requests(30));
    config.retry_429 = Some(10);
    let s = driver::run(&config).await.expect("run");

    assert_consistent(&s);
    assert_eq!(server.rejected.load(Ordering::SeqCst), 10);
    assert_eq!(server.hits.load(Ordering::SeqCst), 40);
    assert_eq!(s.requests, 30);
    assert_eq!(s.ok, 30);
    assert_eq!(s.rejected_429, 0);
    assert_eq!(s.retries_429, 10);
    assert!(s.errors_by_status.is_empty());
}

#[tokio::test]
async fn retries_are_bounded_and_wait_for_retry_after() {
    // The first request is turned away twice; with one retry allowed it ends as a 429
    // after waiting out one Retry-After of 1 s. The other two are accepted.
    let (server, base) =
        serve(|hit| if hit < 2 { Reply::TooManyRequests { retry_after: "1" } } else { Reply::Ok }).await;
    let mut config = config(&base, "bounded", 1, Stop::Requests(3));
    config.retry_429 = Some(1);
    let s = driver::run(&config).await.expect("run");

    assert_consistent(&s);
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);
    assert_eq!((s.requests, s.ok, s.rejected_429, s.retries_429), (3, 2, 1, 1));
    assert!(s.elapsed_seconds >= 1.0, "Retry-After not waited: {}", s.elapsed_seconds);
}

#[tokio::test]
async fn a_duration_run_stops_on_time() {
    let (server, base) = serve(|_| Reply::SlowOk(Duration::from_millis(20))).await;
    let config = config(&base, "duration", 2, Stop::Duration(Duration::from_millis(300)));
    let s = driver::run(&config).await.expect("run");

    assert_consistent(&s);
    assert_eq!(s.requests, server.hits.load(Ordering::SeqCst));
    assert_eq!(s.ok, s.requests);
    assert!(s.requests >= 4, "only {} requests", s.requests);
    // Stopped at 0.3 s and the requests in flight ended (20 ms each): well under 3 s
    // however busy the machine, and far under a run that did not stop.
    assert!(s.elapsed_seconds >= 0.3 && s.elapsed_seconds < 3.0, "{}", s.elapsed_seconds);
    let latency = s.latency_seconds.expect("latency");
    assert!(latency.min >= 0.02, "{latency:?}");
}

#[tokio::test]
async fn a_duration_run_s_throughput_counts_the_answers_within_it() {
    // The first request is answered 2 s in, long after the 0.5 s run has ended.
    let (_server, base) =
        serve(
            |hit| {
                if hit == 0 { Reply::SlowOk(Duration::from_secs(2)) } else { Reply::SlowOk(Duration::from_millis(20)) }
            },
        )
        .await;
    let config = config(&base, "drain", 2, Stop::Duration(Duration::from_millis(500)));
    let s = driver::run(&config).await.expect("run");
    assert_consistent(&s);
    assert!(s.elapsed_seconds >= 2.0, "the run waits for the answer in flight: {}", s.elapsed_seconds);
    assert!((s.measured_seconds - 0.5).abs() < 1e-6, "{}", s.measured_seconds);
    // The slow answer, and the other worker's if it was in flight at the end.
    assert!((1..=2).contains(&s.ok_after_duration), "{s:#?}");
    // Over the whole 2 s, the rate would have read a quarter of what was served.
    assert!(s.throughput_images_per_second >= (s.ok - 2) as f64 / 0.5 - 1e-9, "{s:#?}");
    assert!(s.throughput_images_per_second > 2.0 * s.ok as f64 / s.elapsed_seconds, "{s:#?}");
}

#[tokio::test]
async fn an_open_loop_counts_the_wait_for_a_place_in_the_latency() {
    // 20 requests a second for 0.5 s at a server taking 0.2 s each.
    let (server, base) = serve(|_| Reply::SlowOk(Duration::from_millis(200))).await;
    let mut open = config(&base, "rate", 100, Stop::Duration(Duration::from_millis(500)));
    open.rate = Some(20.0);
    let s = driver::run(&open).await.expect("run");
    assert_consistent(&s);
    assert_eq!((s.requests, s.rate_per_second), (10, Some(20.0)), "{s:#?}");
    // None waits for a place; a timer a busy machine wakes late may make one or two late.
    assert!(s.late_starts <= 2, "{s:#?}");
    assert!(s.latency_seconds.expect("latency").max < 1.0, "{s:#?}");
    // With two in flight, each waits for the one two before it: the last, due at
    // 0.45 s, starts at 0.85 s and is answered 0.6 s after it was due, three times
    // what the server took.
    open.concurrency = 2;
    let s = driver::run(&open).await.expect("run");
    assert_consistent(&s);
    assert_eq!(s.requests, 10);
    assert!(s.late_starts >= 7, "{s:#?}");
    assert!(s.latency_seconds.expect("latency").max >= 0.55, "the wait counted: {s:#?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transport_errors() {
    // A timeout long enough for an immediate answer on a busy machine, far short of the
    // slow one.
    let (_server, base) = serve(|hit| if hit == 0 { Reply::SlowOk(Duration::from_secs(30)) } else { Reply::Ok }).await;
    let mut config = config(&base, "timeout", 1, Stop::Requests(3));
    config.timeout = Duration::from_secs(1);
    let s = driver::run(&config).await.expect("run");
    assert_consistent(&s);
    assert_eq!((s.requests, s.ok, s.transport_errors, s.timeouts), (3, 2, 1, 1));

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let s = driver::run(&config_for_refused(&base)).await.expect("run");
    assert_consistent(&s);
    assert_eq!((s.requests, s.ok, s.transport_errors, s.timeouts), (2, 0, 2, 0));
    assert!(s.first_transport_error.is_some());
    assert!(s.latency_seconds.is_none());
}

fn config_for_refused(base: &str) -> Config {
    config(base, "refused", 2, Stop::Requests(2))
}

#[tokio::test]
async fn multipart_bodies_carry_the_image_and_the_extra_fields() {
    let (server, base) = serve(|_| Reply::Ok).await;
    let mut config = config(&base, "multipart", 2, Stop::Requests(6));
    config.url = driver::endpoint(&format!("{base}/api/remove"), &[]).expect("url");
    config.images.truncate(1); // the PNG
    config.body = BodyShape::Multipart { field: "file".into(), fields: vec![("model".into(), "dis_custom".into())] };
    let summary = driver::run(&config).await.expect("run");
    assert_eq!(summary.ok, 6, "{summary:#?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 6);
}
