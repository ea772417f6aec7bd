//! What the gateway refuses itself, in the pods' error shape: a slow upload, a body
//! over the limit, a malformed budget, an unknown path or method; and what it passes through
//! unchanged: a pod's refusal of a client's mistake.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Gateway, client, free_port, metric_value, tiny_model_pod};

fn error_code(body: &[u8]) -> String {
    let error: serde_json::Value = serde_json::from_slice(body).expect("a JSON error");
    error["error"]["code"].as_str().expect("error.code").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_like_a_pod() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&[
        "--upstream",
        &nowhere,
        "--max-body-bytes",
        "1000",
        "--upload-grace-seconds",
        "1",
        "--min-upload-bytes-per-second",
        "1000",
    ])
    .await;
    let client = client();
    let remove = gateway.url("/v1/remove");

    let too_large = client.post(&remove).header("content-type", "image/png").body(vec![0u8; 2000]).send().await;
    let too_large = too_large.unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(error_code(&too_large.bytes().await.unwrap()), "body_too_large");

    let bad_budget = client
        .post(&remove)
        .header("content-type", "image/png")
        .header("x-matte-max-wait-seconds", "soon")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_budget.status(), 400);
    assert_eq!(error_code(&bad_budget.bytes().await.unwrap()), "bad_request");

    let unknown = client.get(gateway.url("/v2/remove")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(&unknown.bytes().await.unwrap()), "not_found");

    for (method, path, allow) in [("GET", "/v1/remove", "POST"), ("POST", "/metrics", "GET,HEAD")] {
        let refused = client.request(method.parse().unwrap(), gateway.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 405, "{method} {path}");
        assert_eq!(refused.headers()["allow"], allow, "{method} {path}: the methods the path takes");
        assert_eq!(error_code(&refused.bytes().await.unwrap()), "method_not_allowed");
    }

    // Ten bytes of a declared hundred, then nothing: cut off once the grace is over.
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let (status, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        stream
            .write_all(b"POST /v1/remove HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let read = stream.read(&mut answer).unwrap();
        (String::from_utf8_lossy(&answer[..read]).lines().next().unwrap_or("").to_owned(), started.elapsed())
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    // The grace is 1 s; the default (5 s) or the read timeout (10 s) would be later.
    assert!(waited < Duration::from_secs(4), "cut off after the grace, not later: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_refusal_of_a_bad_request_reaches_the_client_unchanged() {
    let pod = tiny_model_pod(&[]).await;
    let gateway = Gateway::start(&["--upstream", &pod.address]).await;
    let client = client();
    let send = |base: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("{base}/v1/remove?format=gif"))
                .header("content-type", "image/png")
                .body(vec![1u8; 10])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap())
        }
    };
    let direct = send(format!("http://{}", pod.address)).await;
    let through = send(gateway.base.clone()).await;
    assert_eq!(direct.0, 400);
    assert_eq!(through, direct, "the same status and body");
}

/// A pod that is always full: every removal gets 429 with the minutes its queue holds.
/// Returns its address and the count of removals it was sent.
async fn always_full_pod() -> (String, Arc<AtomicUsize>) {
    use axum::http::{StatusCode, header};
    use axum::routing::{get, post};
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let full = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "300")], "{}") }
    };
    let router = axum::Router::new()
        .route(matte_common::paths::REMOVE, post(full))
        .route(matte_common::paths::READYZ, get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds a loopback port");
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_budget_runs_out_on_full_pods_is_sent_away_by_the_gateway() {
    let (pod, sent) = always_full_pod().await;
    let gateway = Gateway::start(&["--upstream", &pod]).await;
    let client = client();
    let scrape = || async { client.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let mut tries = 0;
    while metric_value(&scrape().await, r#"matte_gateway_endpoints{state="ready"}"#) != 1.0 {
        tries += 1;
        assert!(tries < 100, "the pod never turned ready in the gateway");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A budget of nothing: the pod's 429 comes after it has run out, as it does for a
    // request given a place at the end of its budget.
    let (status, retry_after, body) =
        support::post_png(&client, &gateway.url("/v1/remove"), vec![1, 2, 3], &[("x-matte-max-wait-seconds", "0")])
            .await;
    assert_eq!(sent.load(Ordering::SeqCst), 1, "the request reached the pod");
    assert_eq!((status, error_code(&body).as_str()), (503, "no_capacity"), "the gateway's refusal, not the pod's 429");
    // No image served yet, so no wait to go by: the time a pod takes to start.
    let unknown_wait = matte_common::admission::UNKNOWN_WAIT_RETRY_AFTER.as_secs().to_string();
    assert_eq!(retry_after, Some(unknown_wait), "the gateway's Retry-After, not the pod's 300 s");
    let metrics = scrape().await;
    assert!(!metrics.contains("outcome=\"pod_429\""), "{metrics}");
    assert_eq!(metric_value(&metrics, r#"matte_gateway_requests_total{outcome="no_capacity"}"#), 1.0, "{metrics}");
    assert_eq!(metric_value(&metrics, "matte_gateway_deferred_requests"), 1.0, "counted among those away: {metrics}");

    // With a budget, it is sent again while the budget lasts: each time counted as it
    // is sent, not when a 429 came with too little of the budget left to send it again.
    let before = sent.load(Ordering::SeqCst);
    let (status, _, body) =
        support::post_png(&client, &gateway.url("/v1/remove"), vec![1, 2, 3], &[("x-matte-max-wait-seconds", "2")])
            .await;
    assert_eq!(status, 503);
    // Told the budget it had, not what was left of it when the pod last turned it away.
    let said = String::from_utf8_lossy(&body);
    assert!(said.contains("within its budget of 2.0 s"), "{said}");
    let sends = sent.load(Ordering::SeqCst) - before;
    let metrics = scrape().await;
    let retries = metric_value(&metrics, r#"matte_gateway_upstream_retries_total{reason="pod_busy"}"#);
    assert_eq!(retries, (sends - 1) as f64, "{sends} sends: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_full_pod_turns_away_after_its_budget_is_spent_is_sent_to_a_free_pod() {
    // Listed first, so that the first request, with both pods idle, goes to it.
    let (full, sent) = always_full_pod().await;
    let free = support::answering_pod().await;
    let gateway = Gateway::start(&["--upstream", &full, "--upstream", &free]).await;
    support::until_pods_ready(&gateway, 2).await;
    let (status, _, body) =
        support::post_png(&client(), &gateway.url("/v1/remove"), vec![1, 2, 3], &[("x-matte-max-wait-seconds", "0")])
            .await;
    assert_eq!(sent.load(Ordering::SeqCst), 1, "the request reached the full pod");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// The gateway's answer, whole, to a body of `length` bytes sent in chunks,
/// with no `Content-Length`: its size is known only as it arrives.
fn post_chunked(address: &str, length: usize) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
        .write_all(b"POST /v1/remove HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![0x89u8; 10_000];
    for start in (0..length).step_by(chunk.len()) {
        let piece = &chunk[..chunk.len().min(length - start)];
        stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).unwrap();
        stream.write_all(piece).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_no_declared_length_is_held_within_the_buffers_or_refused_for_its_size() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let pod = listener.local_addr().expect("its address").to_string();
    let app = axum::Router::new()
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .route("/v1/remove", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway =
        Gateway::start(&["--upstream", &pod, "--max-body-bytes", "1000000", "--max-buffered-bytes", "300000"]).await;
    support::until_ok(&format!("http://{pod}/readyz"), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a probe round
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let (fits, too_large) =
        tokio::task::spawn_blocking(move || (post_chunked(&address, 280_000), post_chunked(&address, 400_000)))
            .await
            .unwrap();
    // 280,000 bytes fit the 300,000 of buffers, though doubling the buffer as they
    // came would have asked for 524,288.
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits}");
    assert!(fits.contains("\r\n280000"), "the pod got the whole body: {fits}");
    // More than all the buffers: 413, not a 429 that would be refused on every try.
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
    assert!(too_large.contains("body_too_large"), "{too_large}");
}

/// Sends `head` and the start of a body declared 100,000 bytes long to the gateway at
/// `address`, then leaves: at once (its connection closed), or, with `reset`, once
/// the gateway's `100 Continue` waits unread, which makes closing send a reset.
fn leave_mid_upload(address: &str, reset: bool) {
    let mut stream = TcpStream::connect(address).unwrap();
    let expect = if reset { "Expect: 100-continue\r\n" } else { "" };
    let head = format!(
        "POST /v1/remove HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n{expect}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    if reset {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.peek(&mut [0u8; 1]).expect("100 Continue");
    }
    stream.write_all(&[0x89u8; 1000]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_upload_is_counted_gone_not_as_a_malformed_body() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&["--upstream", &nowhere]).await;
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let malformed = tokio::task::spawn_blocking(move || {
        leave_mid_upload(&address, false);
        leave_mid_upload(&address, true);
        // A chunk size that is no number: the body itself is wrong.
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream
            .write_all(b"POST /v1/remove HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let read = stream.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..read]).into_owned()
    })
    .await
    .unwrap();
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(malformed.contains("body_read_failed"), "{malformed}");

    let client = client();
    let outcome = |metrics: &str, outcome: &str| {
        metric_value(metrics, &format!(r#"matte_gateway_requests_total{{outcome="{outcome}"}}"#))
    };
    let limit = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = client.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if outcome(&metrics, "client_gone") + outcome(&metrics, "body_read_failed") >= 3.0 {
            break metrics;
        }
        assert!(Instant::now() < limit, "the three requests were never counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome(&metrics, "client_gone"), 2.0, "{metrics}");
    assert_eq!(outcome(&metrics, "body_read_failed"), 1.0, "{metrics}");
}
