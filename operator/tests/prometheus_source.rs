//! The autoscaler's metrics source against a real Prometheus (Debian's package)
//! scraping a real inference pod (`matte-inference` on the CPU, the real model): the
//! queue latency the operator reads matches what the pod recorded, and a burst of
//! requests produces a scale-up decision.
//!
//! Needs `scripts/setup.sh` (model, runtime, prometheus) and the `matte-inference`
//! binary, which `cargo test --workspace` builds.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matte_operator::autoscaler::policy::{Observation, PolicySpec, Reason, decide};
use matte_operator::autoscaler::prometheus::{PrometheusSource, Windows};

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn setup_path(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{variable} is not set: run scripts/test.sh, or scripts/setup.sh and source ~/.cache/matte/env.sh")
    });
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// `target/<profile>/matte-inference`, next to this test's own `deps/` folder.
fn inference_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|deps| deps.parent()).unwrap().join("matte-inference");
    assert!(binary.exists(), "{} is missing: build it with `cargo build -p matte-inference`", binary.display());
    binary
}

fn wait_for(url: &str, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if reqwest::blocking::get(url).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer within {limit:?}");
}

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

/// Prometheus's `histogram_quantile`: linear interpolation inside the bucket.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let index = buckets.iter().position(|&(_, count)| count >= rank).unwrap();
    let (upper, count) = buckets[index];
    let (lower, below) = if index == 0 { (0.0, 0.0) } else { buckets[index - 1] };
    if upper.is_infinite() {
        return lower;
    }
    lower + (upper - lower) * (rank - below) / (count - below)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reports_what_the_pod_recorded_and_a_burst_scales_up() {
    let pod_port = free_port();
    let pod = format!("http://127.0.0.1:{pod_port}");
    let _pod = Process(
        Command::new(inference_binary())
            .args(["--model", setup_path("MATTE_MODEL").to_str().unwrap(), "--provider", "cpu"])
            .args(["--listen", &format!("127.0.0.1:{pod_port}"), "--queue-capacity", "16", "--log-format", "text"])
            .env("ORT_DYLIB_PATH", setup_path("ORT_DYLIB_PATH"))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("matte-inference starts"),
    );

    let data = std::env::temp_dir().join(format!("matte-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("prometheus.yml");
    write!(
        std::fs::File::create(&config).unwrap(),
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: matte\n    static_configs:\n      - targets: ['127.0.0.1:{pod_port}']\n"
    )
    .unwrap();
    let prometheus_port = free_port();
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    let _prometheus = Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/setup.sh installs Debian's package)"),
    );

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
    };
    let source = PrometheusSource::new(&prometheus_url, r#"job="matte""#, &windows).unwrap();
    let scraped_by = Instant::now() + Duration::from_secs(60);
    while source.queue_metrics().await.unwrap().is_none() {
        assert!(Instant::now() < scraped_by, "Prometheus never scraped the pod");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let idle = source.queue_metrics().await.unwrap().unwrap();
    assert_eq!(idle.queue_depth, 0.0);
    assert!(idle.age_seconds < 10.0, "fresh samples: {}", idle.age_seconds);

    // A burst of eight photos: one is inferred at a time, so the queue builds.
    let photo = std::fs::read(setup_path("MATTE_SAMPLE_IMAGES").join("astronaut.png")).unwrap();
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
                measured_startup_seconds: Some(2.0),
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
    let recorded_p95 = quantile(0.95, &pod_buckets);
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
