//! A request whose expected wait cannot fit its budget is refused at once with a
//! Retry-After for when its wait would fit, instead of waiting to fail.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, client, metric_value, post_png, sample_image, scrape, tiny_model_pod};

/// Two places, and every run waits 3 s for a batch of 64 to fill, which two places never
/// do: an image takes 3 s whatever this machine's speed, so a request with a budget of
/// 1 s cannot be admitted while the pod is busy, however far the backlog has moved on
/// by the time it arrives.
const POD_OF_TWO_PLACES_AND_3_S_RUNS: [&str; 6] =
    ["--queue-capacity", "2", "--max-batch-size", "64", "--max-batch-delay-ms", "3000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_the_backlog_cannot_meet_gets_429_at_once() {
    let pod = tiny_model_pod(&POD_OF_TWO_PLACES_AND_3_S_RUNS).await;
    let gateway = Gateway::start(&["--upstream", &pod.address, "--upstream-capacity", "2"]).await;
    let url = gateway.url("/v1/remove");
    let metrics = gateway.url("/metrics");
    let photo = sample_image("chelsea.png");
    let client = client();
    let gateway_metric = |sample: &'static str| {
        let metrics = metrics.clone();
        async move { tokio::task::spawn_blocking(move || metric_value(&scrape(&metrics), sample)).await.unwrap() }
    };

    // Wait for the probe to find the pod, then measure one image.
    let limit = Instant::now() + Duration::from_secs(10);
    while gateway_metric(r#"matte_gateway_endpoints{state="ready"}"#).await < 1.0 {
        assert!(Instant::now() < limit, "the pod never turned ready in the gateway");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let (status, _, _) = post_png(&client, &url, photo.clone(), &[]).await;
    assert_eq!(status, 200);
    let per_image = started.elapsed();

    // Two on the pod, two in the gateway's queue.
    let backlog: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, photo) = (client.clone(), url.clone(), photo.clone());
            tokio::spawn(async move { post_png(&client, &url, photo, &[]).await.0 })
        })
        .collect();
    let limit = Instant::now() + Duration::from_secs(30);
    while gateway_metric("matte_gateway_queue_depth").await < 2.0 {
        assert!(Instant::now() < limit, "the backlog never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let asked = Instant::now();
    let (status, retry_after, body) =
        post_png(&client, &url, photo.clone(), &[("x-matte-max-wait-seconds", "1")]).await;
    let answered_in = asked.elapsed();
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    // Refused on arrival: a request admitted would have waited its budget for a place
    // and got 503, or a turn on the pod and got 200.
    assert!(answered_in < per_image, "refused at once, not after waiting: {answered_in:?}");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "queue_full");
    let retry_after: u64 = retry_after.expect("429 carries Retry-After").parse().expect("whole seconds");
    // Three turns (two queued, then its own) of about one image each, on one pod.
    let expected = 3.0 * per_image.as_secs_f64();
    eprintln!("one image took {per_image:?}; Retry-After {retry_after} s for an expected {expected:.1} s");
    // Back when the wait is down to half the 1 s budget: no later than the whole wait.
    assert!(retry_after >= 1, "{retry_after}");
    assert!(
        (retry_after as f64) < 3.0 * expected + 1.0,
        "Retry-After {retry_after} s is far above the expected wait of {expected:.1} s"
    );

    for request in backlog {
        assert_eq!(request.await.unwrap(), 200, "the admitted backlog is served");
    }
    assert_eq!(gateway_metric(r#"matte_gateway_requests_total{outcome="queue_full"}"#).await, 1.0);
}
