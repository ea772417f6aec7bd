//! A pod killed or shut down in the middle of a burst loses no request the gateway
//! accepted: what it held or refused is sent to the other pods, and it is taken out of
//! the rotation. A request that breaks every pod it reaches is not sent to them all.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Gateway, Pod, TinyModel, client, metric_value, post_png, sample_image, scrape};

/// How the first pod goes away mid-burst.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// SIGKILL: its connections break.
    Killed,
    /// SIGTERM: it answers 503 to new work while it finishes what it has.
    ShutDown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_burst_loses_no_accepted_request() {
    burst_losing_a_pod(Loss::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_shut_down_mid_burst_loses_no_accepted_request() {
    burst_losing_a_pod(Loss::ShutDown).await;
}

async fn burst_losing_a_pod(loss: Loss) {
    let model = TinyModel::generate();
    let mut pods = tokio::task::spawn_blocking(move || {
        let pods: Vec<Pod> = (0..3).map(|_| Pod::start(&model.path, &["--queue-capacity", "2"])).collect();
        pods
    })
    .await
    .unwrap();
    let mut flags = vec!["--upstream-capacity", "2"];
    for pod in &pods {
        flags.extend(["--upstream", pod.address.as_str()]);
    }
    let gateway = Gateway::start(&flags).await;
    support::until_ok(&gateway.url("/readyz"), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a probe round
    // The astronaut is the largest sample: each takes the pod a while to decode and
    // encode, so the killed pod is holding requests.
    let photo = sample_image("astronaut.png");
    let burst = 60;
    let client = client();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let requests: Vec<_> = (0..burst)
        .map(|_| {
            let (client, url, photo, done) =
                (client.clone(), gateway.url("/v1/remove"), photo.clone(), done_tx.clone());
            tokio::spawn(async move {
                let answer = post_png(&client, &url, photo, &[]).await;
                let _ = done.send(());
                answer
            })
        })
        .collect();
    for _ in 0..10 {
        done_rx.recv().await.unwrap();
    }
    let mut victim = pods.remove(0);
    let victim = tokio::task::spawn_blocking(move || {
        match loss {
            Loss::Killed => victim.kill(),
            Loss::ShutDown => victim.sigterm(),
        }
        victim
    })
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        statuses.push(status);
    }
    assert_eq!(statuses.len(), burst);

    let metrics = gateway.url("/metrics");
    let (text, served_by_survivors) = tokio::task::spawn_blocking(move || {
        let served: f64 = pods.iter().map(|pod| pod.metric("matte_images_processed_total")).sum();
        (scrape(&metrics), served)
    })
    .await
    .unwrap();
    let retries = ["connection_failed", "connection_refused", "pod_busy", "pod_unavailable"]
        .map(|reason| metric_value(&text, &format!(r#"matte_gateway_upstream_retries_total{{reason="{reason}"}}"#)));
    eprintln!(
        "{loss:?}: retries by reason (failed, refused, busy, unavailable): {retries:?}; survivors served {served_by_survivors}"
    );
    assert!(served_by_survivors >= 40.0, "the survivors took over ({served_by_survivors})");
    assert_eq!(metric_value(&text, r#"matte_gateway_requests_total{outcome="ok"}"#), burst as f64);
    assert_eq!(metric_value(&text, r#"matte_gateway_endpoints{state="ready"}"#), 2.0);
    drop(victim);
}

/// Ends the connection's task without an answer: the gateway sees the connection closed.
fn break_the_connection() -> &'static str {
    std::panic::resume_unwind(Box::new("the image broke the pod"))
}

/// A pod that breaks the connection of every image sent to it before answering, as one
/// whose decoder the image crashes would; it counts the images it was sent.
async fn pod_broken_by_every_image(received: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    let remove = axum::routing::post(move || {
        let received = received.clone();
        async move {
            received.fetch_add(1, Ordering::SeqCst);
            break_the_connection()
        }
    });
    let app =
        axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).route("/v1/remove", remove);
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_breaks_its_pod_is_tried_on_two_pods_not_on_every_one() {
    let received = Arc::new(AtomicUsize::new(0));
    let mut flags = vec![];
    let mut pods = vec![];
    for _ in 0..4 {
        pods.push(pod_broken_by_every_image(received.clone()).await);
    }
    for pod in &pods {
        flags.extend(["--upstream", pod.as_str()]);
    }
    let gateway = Gateway::start(&flags).await;
    support::until_ok(&format!("http://{}/readyz", pods[0]), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a probe round
    let (status, _, body) =
        post_png(&client(), &gateway.url("/v1/remove"), vec![0x89; 1000], &[("x-matte-max-wait-seconds", "20")]).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_failed"), "{body}");
    assert_eq!(received.load(Ordering::SeqCst), 2, "sent to two pods, within a budget that had room for four");
    let text = tokio::task::spawn_blocking({
        let metrics = gateway.url("/metrics");
        move || scrape(&metrics)
    })
    .await
    .unwrap();
    assert_eq!(metric_value(&text, r#"matte_gateway_upstream_retries_total{reason="connection_failed"}"#), 1.0);
}

/// A pod that answers every image with its head and a first piece of its body, then
/// dies; `declared`, the head says the body's whole length. Returns its address.
async fn pod_dying_mid_answer(declared: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let pod = listener.local_addr().expect("its address").to_string();
    let remove = axum::routing::post(move || async move {
        let first = futures_util::stream::iter([Ok(bytes::Bytes::from(vec![0x89u8; 65_536]))]);
        let then_gone = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(std::io::Error::other("the pod died mid-answer"))
        });
        let pieces = futures_util::StreamExt::chain(first, then_gone);
        let mut answer = axum::response::Response::new(axum::body::Body::from_stream(pieces));
        answer.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("image/png"));
        if declared {
            answer.headers_mut().insert("content-length", axum::http::HeaderValue::from_static("1000000"));
        }
        answer
    });
    let app =
        axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).route("/v1/remove", remove);
    tokio::spawn(async move { axum::serve(listener, app).await });
    pod
}

/// An answer of declared length is taken off its pod whole before the client is
/// answered, so a pod dying on the way is a 502; one of no declared length is passed on
/// as it comes, and the client sees it broken off. Neither is counted served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_breaks_off_on_its_way_is_not_counted_served() {
    for declared in [true, false] {
        let pod = pod_dying_mid_answer(declared).await;
        let gateway = Gateway::start(&["--upstream", &pod]).await;
        support::until_pods_ready(&gateway, 1).await;
        let answer =
            client().post(gateway.url("/v1/remove")).header("content-type", "image/png").body(vec![1u8; 100]).send();
        let answer = answer.await.expect("the head arrives");
        if declared {
            assert_eq!(answer.status(), 502, "declared: the answer was not whole");
            let body = answer.text().await.expect("the error arrives");
            assert!(body.contains("upstream_failed"), "{body}");
        } else {
            assert_eq!(answer.status(), 200);
            assert!(answer.bytes().await.is_err(), "the client sees the answer broken off");
        }
        let text = tokio::task::spawn_blocking({
            let metrics = gateway.url("/metrics");
            move || scrape(&metrics)
        })
        .await
        .unwrap();
        assert_eq!(metric_value(&text, r#"matte_gateway_requests_total{outcome="ok"}"#), 0.0, "{text}");
        assert_eq!(metric_value(&text, r#"matte_gateway_requests_total{outcome="upstream_failed"}"#), 1.0, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_pod_breaks_after_its_budget_is_spent_is_sent_to_a_free_pod() {
    let received = Arc::new(AtomicUsize::new(0));
    // Listed first, so that the first request, with both pods idle, goes to it.
    let broken = pod_broken_by_every_image(received.clone()).await;
    let healthy = support::answering_pod().await;
    let gateway = Gateway::start(&["--upstream", &broken, "--upstream", &healthy]).await;
    support::until_pods_ready(&gateway, 2).await;
    // A budget of nothing: the connection breaks after it has run out, as it does for a
    // request given a place at the end of its budget.
    let client = client();
    for _ in 0..4 {
        let (status, _, body) =
            post_png(&client, &gateway.url("/v1/remove"), vec![0x89; 100], &[("x-matte-max-wait-seconds", "0")]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert!(received.load(Ordering::SeqCst) >= 1, "the broken pod was tried");
}

/// A pod that answers every image `status` with an error body of `length` bytes, and
/// counts the images it was sent.
async fn pod_answering_an_error(status: u16, length: usize, received: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    let status = axum::http::StatusCode::from_u16(status).expect("a status");
    let remove = axum::routing::post(move || {
        received.fetch_add(1, Ordering::SeqCst);
        let body = format!(r#"{{"error": {{"code": "bad_image", "message": "{}"}}}}"#, "x".repeat(length));
        async move { (status, [("content-type", "application/json")], body) }
    });
    let app =
        axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).route("/v1/remove", remove);
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_over_the_limit_is_a_502_and_is_not_sent_to_another_pod() {
    let over_the_limit = matte_gateway::upstream::ERROR_ANSWER_LIMIT + 1;
    for status in [400, 500] {
        let received = Arc::new(AtomicUsize::new(0));
        let pods = [
            pod_answering_an_error(status, over_the_limit, received.clone()).await,
            pod_answering_an_error(status, over_the_limit, received.clone()).await,
        ];
        let gateway = Gateway::start(&["--upstream", &pods[0], "--upstream", &pods[1]]).await;
        support::until_pods_ready(&gateway, 2).await;
        let (answered, _, body) = post_png(&client(), &gateway.url("/v1/remove"), vec![0x89; 100], &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(answered, 502, "{status}: {body}");
        assert!(body.contains("upstream_failed"), "{status}: {body}");
        assert_eq!(
            received.load(Ordering::SeqCst),
            1,
            "{status}: the pod's verdict stands, the image is not sent again"
        );
    }
}
