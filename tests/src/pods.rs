//! Real `matte-inference` processes on loopback, the inference tests' tiny generated
//! model, and the setup cache's photos: what the gateway's tests and the end-to-end
//! tests run pods with.
//!
//! The pods are the `matte-inference` binary of this workspace's target directory:
//! build it first with `cargo build -p matte-inference` (Cargo builds another crate's
//! binaries only for that crate's own tests), or point `MATTE_INFERENCE_BIN` at one.
//! The models and sample images come from `scripts/setup.sh`
//! (`source ~/.cache/matte/env.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::setup_cache::setup_path;

/// The `matte-inference` binary: `MATTE_INFERENCE_BIN`, or the one next to this test's
/// own directory in the target directory (`target/debug/deps/this-test` →
/// `target/debug/matte-inference`).
pub fn inference_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MATTE_INFERENCE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join("matte-inference");
    assert!(
        binary.exists(),
        "{} does not exist: run `cargo build -p matte-inference` first (or set MATTE_INFERENCE_BIN)",
        binary.display()
    );
    binary
}

/// One `matte-inference` process on a loopback port, CPU provider; killed on drop.
pub struct Pod {
    child: Child,
    pub address: String,
}

impl Pod {
    /// Starts a pod on a free port and waits until it is ready.
    pub fn start(model: &Path, extra_args: &[&str]) -> Pod {
        let pod = Pod::spawn_on(free_port(), model, extra_args);
        pod.wait_until_ready(Duration::from_secs(180));
        pod
    }

    /// Starts a pod on `port` without waiting for it.
    pub fn spawn_on(port: u16, model: &Path, extra_args: &[&str]) -> Pod {
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(inference_binary())
            .args(["--model", model.to_str().expect("UTF-8 path"), "--listen", &address])
            .args(["--provider", "cpu", "--log-format", "text", "--drain-delay-seconds", "0"])
            .args(extra_args)
            .env("ORT_DYLIB_PATH", setup_path("ORT_DYLIB_PATH"))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("matte-inference starts");
        Pod { child, address }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("HOST:PORT")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn wait_until_ready(&self, limit: Duration) {
        wait_for_ok(&self.url("/readyz"), limit);
    }

    /// Asks the pod to shut down (SIGTERM), as Kubernetes does on a scale-down.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process at once (SIGKILL), as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of a sample from the pod's `/metrics`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&scrape(&self.url("/metrics")), sample)
    }

    /// The value of `sample` (a series), which must be exported: a renamed series is a
    /// failure, not a 0.
    pub fn exported_metric(&self, sample: &str) -> f64 {
        let text = scrape(&self.url("/metrics"));
        assert!(text.lines().any(|line| line.starts_with(&format!("{sample} "))), "{sample} is not exported:\n{text}");
        metric_value(&text, sample)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 200, at most `limit`.
pub fn wait_for_ok(url: &str, limit: Duration) {
    let started = Instant::now();
    let client = blocking_client();
    while started.elapsed() < limit {
        if let Ok(response) = client.get(url).send()
            && response.status() == 200
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer 200 within {limit:?}");
}

pub fn scrape(url: &str) -> String {
    blocking_client().get(url).send().expect("metrics answer").text().expect("metrics are text")
}

/// The value of an unlabelled sample, or of a labelled one written in full
/// (`matte_gateway_requests_total{outcome="ok"}`); 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

pub fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client builds")
}
