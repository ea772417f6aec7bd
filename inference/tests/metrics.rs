//! The metrics of the design's contract exist with their labels, pass `promtool check
//! metrics`, and move as requests flow.

mod support;

use std::time::{Duration, Instant};

use matte_common::metrics as names;
use support::{Server, blocking_client, metric_value, post_concurrently, promtool_check};

fn scrape(server: &Server) -> String {
    blocking_client().get(server.url("/metrics")).send().unwrap().text().unwrap()
}

#[test]
fn metrics_follow_the_contract_and_move_with_traffic() {
    let server = Server::start(&["--queue-capacity", "8"]);
    let before = scrape(&server);
    // matte_requests_total appears with its first request; every other name at once.
    for name in names::ALL.iter().filter(|&&name| name != names::REQUESTS_TOTAL) {
        assert!(before.contains(&format!("# TYPE {name} ")), "{name} is missing");
    }
    assert_eq!(metric_value(&before, "matte_ready"), 1.0);
    assert_eq!(metric_value(&before, r#"matte_model_info{model="isnet-fp16",provider="cpu"}"#), 1.0);
    assert_eq!(metric_value(&before, "matte_max_batch_size"), 1.0, "one image a run by default");
    assert_eq!(metric_value(&before, "matte_requested_max_batch_size"), 1.0);
    assert_eq!(metric_value(&before, names::MAX_CONNECTIONS), 1024.0, "the default --max-connections");
    assert!(metric_value(&before, names::OPEN_CONNECTIONS) >= 1.0, "the scrape's own connection is open");

    // Three at once: one is inferred while two wait, so the queue gauges must rise.
    let requests = post_concurrently(&server, "astronaut.png", 3);
    let (mut peak_depth, mut peak_age, mut peak_inflight) = (0.0f64, 0.0f64, 0.0f64);
    let limit = Instant::now() + Duration::from_secs(120);
    while requests.iter().any(|r| !r.is_finished()) && Instant::now() < limit {
        let text = scrape(&server);
        peak_depth = peak_depth.max(metric_value(&text, names::QUEUE_DEPTH));
        peak_age = peak_age.max(metric_value(&text, names::OLDEST_QUEUED_AGE_SECONDS));
        peak_inflight = peak_inflight.max(metric_value(&text, names::INFLIGHT_REQUESTS));
        std::thread::sleep(Duration::from_millis(50));
    }
    for request in requests {
        assert_eq!(request.join().unwrap().0, 200);
    }
    assert!(peak_depth >= 1.0, "queue depth never rose ({peak_depth})");
    assert!(peak_age > 0.1, "oldest queued age never rose ({peak_age})");
    assert!(peak_inflight >= 2.0, "inflight never rose ({peak_inflight})");

    let after = scrape(&server);
    let moved = |sample: &str| metric_value(&after, sample) - metric_value(&before, sample);
    assert_eq!(moved(r#"matte_requests_total{outcome="ok"}"#), 3.0);
    assert_eq!(moved(names::IMAGES_PROCESSED_TOTAL), 3.0);
    assert_eq!(moved("matte_inference_seconds_count"), 3.0);
    assert_eq!(moved("matte_batch_size_count"), 3.0);
    assert_eq!(moved("matte_queue_wait_seconds_count"), 3.0);
    assert_eq!(moved("matte_request_duration_seconds_count"), 3.0);
    assert!(moved("matte_inference_seconds_sum") > 0.0);
    assert!(moved("matte_queue_wait_seconds_sum") > 0.5, "two of three waited behind a run");
    assert_eq!(metric_value(&after, names::QUEUE_DEPTH), 0.0);
    assert_eq!(metric_value(&after, names::INFLIGHT_REQUESTS), 0.0);

    let refused =
        blocking_client().post(server.url("/v1/remove")).header("content-type", "text/plain").body("x").send();
    assert_eq!(refused.unwrap().status(), 415);
    assert_eq!(metric_value(&scrape(&server), r#"matte_requests_total{outcome="unsupported_content_type"}"#), 1.0);

    promtool_check(&after);
}
