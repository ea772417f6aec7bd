//! Scale from zero: the gateway holds requests while no pod listens, and the first pod
//! to turn ready serves them all within their budget.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, Pod, TinyModel, client, free_port, metric_value, post_png, sample_image, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_the_first_pod_and_all_succeed() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let gateway = Gateway::start(&["--upstream", &address, "--max-wait-seconds", "60"]).await;
    support::until_ok(&gateway.url("/readyz"), Duration::from_secs(10)).await;

    let photo = sample_image("chelsea.png");
    let client = client();
    let sent = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, photo) = (client.clone(), gateway.url("/v1/remove"), photo.clone());
            tokio::spawn(async move { post_png(&client, &url, photo, &[]).await })
        })
        .collect();
    let metrics = gateway.url("/metrics");
    let scraped = || {
        let metrics = metrics.clone();
        async move { tokio::task::spawn_blocking(move || scrape(&metrics)).await.unwrap() }
    };
    // All six queued, however long the machine takes to send them, and then waiting on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_value(&scraped().await, "matte_gateway_queue_depth") < 6.0 {
        assert!(Instant::now() < deadline, "the six requests were not all queued within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued_by = sent.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = scraped().await;
    assert_eq!(metric_value(&text, "matte_gateway_queue_depth"), 6.0, "all six wait");
    // The oldest has waited at least the two seconds since the last was queued.
    let oldest = metric_value(&text, "matte_gateway_oldest_queued_age_seconds");
    assert!(oldest >= 2.0 && oldest <= queued_by + 2.0 + 30.0, "oldest {oldest} s");
    assert_eq!(metric_value(&text, r#"matte_gateway_endpoints{state="unready"}"#), 1.0);

    let model = TinyModel::generate();
    let pod = tokio::task::spawn_blocking(move || (Pod::spawn_on(port, &model.path, &[]), model)).await.unwrap();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    eprintln!("six requests sent to no pod all served after {:.1} s", sent.elapsed().as_secs_f64());
    // A probe cannot tell a pod starting from one down: the time the pod took to answer
    // is no start-up for admission to count on.
    let text = scraped().await;
    assert_eq!(metric_value(&text, r#"matte_gateway_endpoints{state="ready"}"#), 1.0);
    assert_eq!(metric_value(&text, "matte_gateway_pod_startup_seconds"), 0.0);
    drop(pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_pod_a_request_gets_503_when_its_budget_runs_out() {
    let address = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&["--upstream", &address, "--max-wait-seconds", "1"]).await;
    let started = Instant::now();
    let (status, retry_after, body) =
        post_png(&client(), &gateway.url("/v1/remove"), sample_image("chelsea.png"), &[]).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // The budget is 1 s; the default (30 s) would be far later.
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(15), "{waited:?}");
    let seconds: u64 = retry_after.expect("503 carries Retry-After").parse().unwrap();
    assert!(seconds >= 1);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "no_capacity");
}
