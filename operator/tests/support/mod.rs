//! Real processes for the tests against a real Prometheus: inference pods
//! (`matte-inference` on the CPU) and Debian's `prometheus` scraping them, each killed
//! when the test ends, however it ends.

#![allow(dead_code)] // Each test file uses its own part.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "../../../tests/src/ports.rs"]
mod ports;
pub use ports::free_port;

#[path = "../../../tests/src/setup_cache.rs"]
mod setup_cache;
pub use setup_cache::{sample_image, setup_path};

/// `target/<profile>/matte-inference`, next to this test's own `deps/` folder.
pub fn inference_binary() -> PathBuf {
    workspace_binary("matte-inference")
}

/// `target/<profile>/<name>`, a binary of the workspace that `cargo test --workspace`
/// builds, next to this test's own `deps/` folder.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(binary.exists(), "{} is missing: build it with `cargo build -p {name}`", binary.display());
    binary
}

pub fn wait_for(url: &str, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if reqwest::blocking::get(url).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer within {limit:?}");
}

/// An inference pod on `port` (not yet ready: wait for its `/readyz`).
pub fn start_pod(model: &Path, port: u16, extra_args: &[&str]) -> Process {
    Process(
        Command::new(inference_binary())
            .args(["--model", model.to_str().unwrap(), "--provider", "cpu"])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-format", "text"])
            .args(extra_args)
            .env("ORT_DYLIB_PATH", setup_path("ORT_DYLIB_PATH"))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("matte-inference starts"),
    )
}

/// A Prometheus on `port` scraping `targets` (job `matte`) every `scrape_interval`
/// seconds, its data in `data`.
pub fn start_prometheus(data: &Path, port: u16, scrape_interval: u64, targets: &[u16]) -> Process {
    std::fs::create_dir_all(data).unwrap();
    let config = data.join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|port| format!("'127.0.0.1:{port}'")).collect();
    write!(
        std::fs::File::create(&config).unwrap(),
        "global:\n  scrape_interval: {scrape_interval}s\n  evaluation_interval: {scrape_interval}s\nscrape_configs:\n  - job_name: matte\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
    .unwrap();
    Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/setup.sh installs Debian's package)"),
    )
}

/// A pod's own counter or gauge, summed over its label sets (`name` without labels).
pub fn pod_metric(pod: &str, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{pod}/metrics")).unwrap().text().unwrap();
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
