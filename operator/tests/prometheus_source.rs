//! The autoscaler's metrics source against a real Prometheus (Debian's package)
//! scraping a real inference pod (`matte-inference` on the CPU, the real model): the
//! queue latency the operator reads matches what the pod recorded, and a burst of
//! requests produces a scale-up decision; and scraping a real `matte-gateway` with no
//! pod behind it: the requests it holds are what wakes a service scaled to zero.
//!
//! Needs `scripts/setup.sh` (model, runtime, prometheus) and the `matte-inference` and
//! `matte-gateway` binaries, which `cargo test --workspace` builds.

mod support;

use std::time::{Duration, Instant};

use matte_operator::autoscaler::policy::stats::histogram_quantile;
use matte_operator::autoscaler::policy::{Observation, PolicySpec, Reason, Startup, decide};
use matte_operator::autoscaler::prometheus::{DEFAULT_MAX_CONCURRENT_QUERIES, PrometheusSource, Windows, http_client};
use support::{Process, free_port, sample_image, setup_path, start_prometheus, wait_for, workspace_binary};

/// Counts of the pod's own `matte_queue_wait_seconds` buckets: (upper bound, cumulative).
fn pod_queue_wait_buckets(pod: &str) -> Vec<(f64, f64)> {
    let text = reqwest::blocking::get(format!("{pod}/metrics")).unwrap().text().unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("matte_queue_wait_seconds_bucket{le=\""))
        .map(|rest| {
            let (bound, count) = rest.split_once("\"} ").unwrap();
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap() };
            (bound, count.trim().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reports_what_the_pod_recorded_and_a_burst_scales_up() {
    let pod_port = free_port();
    let pod = format!("http://127.0.0.1:{pod_port}");
    // Eight images in a row take ~15 s on two idle cores and minutes on busy ones: the
    // request timeout must not be what the test measures.
    let _pod = support::start_pod(
        &setup_path("MATTE_MODEL"),
        pod_port,
        &["--queue-capacity", "16", "--request-timeout-seconds", "900"],
    );
    let data = std::env::temp_dir().join(format!("matte-prometheus-{}", std::process::id()));
    let prometheus_port = free_port();
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    let _prometheus = start_prometheus(&data, prometheus_port, 1, &[pod_port]);

    let (pod_ready, prometheus_ready) = (format!("{pod}/readyz"), format!("{prometheus_url}/-/ready"));
    tokio::task::spawn_blocking(move || {
        wait_for(&pod_ready, Duration::from_secs(180));
        wait_for(&prometheus_ready, Duration::from_secs(60));
    })
    .await
    .unwrap();

    // Rates over the whole test, so that every request of the burst is in the window.
    let windows = Windows {
        scrape_interval: Duration::from_secs(1),
        rate: Duration::from_secs(300),
        long: Duration::from_secs(300),
        recent: Duration::from_secs(2),
        arrivals: Duration::from_secs(2),
        latest: Duration::from_secs(2),
        pass: Duration::from_secs(1),
    };
    let source = PrometheusSource::new(
        http_client(DEFAULT_MAX_CONCURRENT_QUERIES).unwrap(),
        &prometheus_url,
        r#"job="matte""#,
        &windows,
    );
    let scraped_by = Instant::now() + Duration::from_secs(60);
    while source.queue_metrics().await.unwrap().is_none() {
        assert!(Instant::now() < scraped_by, "Prometheus never scraped the pod");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let idle = source.queue_metrics().await.unwrap().unwrap();
    assert_eq!(idle.queue_depth, 0.0);
    assert!(idle.age_seconds < 10.0, "fresh samples: {}", idle.age_seconds);

    // A burst of eight photos: one is inferred at a time, so the queue builds.
    let photo = sample_image("astronaut.png");
    let client = reqwest::Client::new();
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let request =
                client.post(format!("{pod}/v1/remove")).header("content-type", "image/png").body(photo.clone());
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();

    // Pods that start in seconds (warm GPU nodes) and a 5 s target: a backlog of a few
    // images at CPU speed is more than one pod can clear in time.
    let mut spec = PolicySpec::new(1, 10, 5.0);
    spec.min_useful_work_seconds = 1.0;
    spec.default_startup_seconds = 2.0;
    let seen_by = Instant::now() + Duration::from_secs(60);
    let decision = loop {
        let queue = source.queue_metrics().await.unwrap().unwrap();
        if queue.queue_depth >= 4.0 && queue.oldest_queued_age_seconds > 1.0 {
            let observation = Observation {
                now_seconds: 0.0,
                replicas: 1,
                ready_pods: 1,
                starting_pod_ages_seconds: vec![],
                unschedulable_pods: 0,
                ready_pod_startups: vec![Startup { ready_seconds: 0.0, seconds: 2.0, pod: None }],
                queue: Some(queue),
            };
            break decide(&spec, &observation, &Default::default());
        }
        assert!(Instant::now() < seen_by, "Prometheus never showed the queue building");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(decision.reason, Reason::ScaleUp, "{}", decision.message);
    assert!(decision.replicas > 1, "{}", decision.message);

    for request in burst {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }

    // Once Prometheus has scraped the finished burst, its quantile is the pod's own.
    let pod_buckets = {
        let pod = pod.clone();
        tokio::task::spawn_blocking(move || pod_queue_wait_buckets(&pod)).await.unwrap()
    };
    assert_eq!(pod_buckets.last().unwrap().1, 8.0, "the pod recorded eight queue waits");
    let (bounds, cumulative): (Vec<f64>, Vec<f64>) = pod_buckets.iter().copied().unzip();
    let recorded_p95 = histogram_quantile(0.95, &bounds[..bounds.len() - 1], &cumulative).expect("waits recorded");
    let settled_by = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let queue = source.queue_metrics().await.unwrap().unwrap();
        let read_p95 = queue.queue_wait_p95_seconds.expect("queue waits were observed");
        if (read_p95 - recorded_p95).abs() <= 0.01 * recorded_p95 && queue.queue_depth == 0.0 {
            assert!(queue.images_per_pod_second.is_some_and(|rate| rate > 0.1 && rate < 10.0));
            break;
        }
        assert!(
            Instant::now() < settled_by,
            "Prometheus reads a p95 queue wait of {read_p95:.3} s, the pod recorded {recorded_p95:.3} s"
        );
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_holding_requests_with_no_pod_is_seen_and_wakes_the_service() {
    let gateway_port = free_port();
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    // No pod at all: the gateway holds each request for its budget.
    let _gateway = Process(
        std::process::Command::new(workspace_binary("matte-gateway"))
            .args(["--listen", &format!("127.0.0.1:{gateway_port}"), "--max-wait-seconds", "120"])
            .args(["--log-format", "text"])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("matte-gateway starts"),
    );
    let data = std::env::temp_dir().join(format!("matte-prometheus-gateway-{}", std::process::id()));
    let prometheus_port = free_port();
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    let _prometheus = start_prometheus(&data, prometheus_port, 1, &[gateway_port]);
    let (gateway_ready, prometheus_ready) = (format!("{gateway}/readyz"), format!("{prometheus_url}/-/ready"));
    tokio::task::spawn_blocking(move || {
        wait_for(&gateway_ready, Duration::from_secs(60));
        wait_for(&prometheus_ready, Duration::from_secs(60));
    })
    .await
    .unwrap();

    let windows = Windows::for_scrape_interval(Duration::from_secs(1));
    let source = PrometheusSource::new(
        http_client(DEFAULT_MAX_CONCURRENT_QUERIES).unwrap(),
        &prometheus_url,
        r#"job="matte""#,
        &windows,
    );
    // The gateway's series alone make an observation: no pod series exists.
    let scraped_by = Instant::now() + Duration::from_secs(60);
    let idle = loop {
        if let Some(queue) = source.queue_metrics().await.unwrap() {
            break queue;
        }
        assert!(Instant::now() < scraped_by, "Prometheus never scraped the gateway");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((idle.queue_depth, idle.gateway_queue_depth), (0.0, 0.0));
    assert!(idle.age_seconds < 10.0, "fresh samples from the gateway: {}", idle.age_seconds);

    let client = reqwest::Client::new();
    let held: Vec<_> = (0..5)
        .map(|_| {
            let request =
                client.post(format!("{gateway}/v1/remove")).header("content-type", "image/png").body(vec![0u8; 1024]);
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();

    let mut spec = PolicySpec::new(0, 4, 30.0);
    spec.min_useful_work_seconds = 1.0;
    let seen_by = Instant::now() + Duration::from_secs(60);
    // The arrivals show in a rate over two scrapes, for about that long, and so do the
    // latest arrivals.
    let (mut most_arriving, mut most_latest, mut most_inflow): (f64, f64, f64) = (0.0, 0.0, 0.0);
    let queue = loop {
        let queue = source.queue_metrics().await.unwrap().expect("the gateway's series");
        most_arriving = most_arriving.max(queue.new_arrivals_per_second);
        most_latest = most_latest.max(queue.gateway_latest_arrivals_per_second.unwrap_or(0.0));
        most_inflow = most_inflow.max(queue.gateway_inflow_per_second);
        if queue.gateway_queue_depth == 5.0 && queue.gateway_oldest_queued_age_seconds > 1.0 && most_arriving > 0.0 {
            break queue;
        }
        assert!(Instant::now() < seen_by, "Prometheus never showed the gateway's queue and arrivals: {queue:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // 5 requests within two 1 s scrapes: 5 a second, and up to a quarter more where
    // `rate` extrapolates a window whose scrapes came unevenly (a busy machine's); twice
    // that would be requests counted twice.
    assert!(most_arriving <= 6.25, "5 requests within two 1 s scrapes: {most_arriving}/s at most");
    assert!(most_latest <= 6.25, "the latest arrivals, over the same window: {most_latest}/s");
    // The inflow reads the same 5 over the longer rate window: 0.5 a second over its
    // 10 s, up to twice that where the just-started gateway's series covers only half
    // of it and `rate` extrapolates that half (0.93-0.96 seen), and a quarter more for
    // uneven scrapes; over the 2 s arrivals window it would read 2.5.
    assert!(
        most_inflow > 0.0 && most_inflow <= 1.25,
        "5 requests over the 10 s inflow window: {most_inflow}/s (over the arrivals window {most_arriving}/s)"
    );
    assert_eq!(queue.queue_depth, 0.0, "no pod, no pod queue");
    let observation = Observation {
        now_seconds: 0.0,
        replicas: 0,
        ready_pods: 0,
        starting_pod_ages_seconds: vec![],
        unschedulable_pods: 0,
        ready_pod_startups: Vec::new(),
        queue: Some(queue),
    };
    let decision = decide(&spec, &observation, &Default::default());
    assert_eq!(decision.reason, Reason::ScaleUp, "{}", decision.message);
    assert!(decision.replicas >= 1, "{}", decision.message);

    // A client whose own budget runs out in the queue is sent away with 503 and the
    // Retry-After of an unknown wait (5 s): the gateway counts it away until then.
    let impatient = client
        .post(format!("{gateway}/v1/remove"))
        .header("content-type", "image/png")
        .header(matte_common::headers::MAX_WAIT_SECONDS, "1")
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(impatient.status(), 503);
    assert_eq!(impatient.headers()["retry-after"], "5");
    let away_by = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = source.queue_metrics().await.unwrap().expect("the gateway's series");
        if queue.deferred_requests == 1.0 {
            break;
        }
        assert!(Instant::now() < away_by, "the client sent away never showed: {queue:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing has arrived since: the latest arrivals read none (the requests still held
    // are in the queue, not arriving), the arrivals' window soon after.
    let quiet_by = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = source.queue_metrics().await.unwrap().expect("the gateway's series");
        if queue.gateway_latest_arrivals_per_second == Some(0.0) {
            assert_eq!(queue.gateway_queue_depth, 5.0, "still held: {queue:?}");
            break;
        }
        assert!(Instant::now() < quiet_by, "the latest arrivals never went quiet: {queue:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    for request in held {
        request.abort();
    }
    std::fs::remove_dir_all(&data).unwrap();
}
