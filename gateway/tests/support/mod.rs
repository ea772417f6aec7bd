//! Real `matte-inference` pods on loopback behind a gateway run in-process
//! ([`Gateway::start`]).
//!
//! The pods are the `matte-inference` binary of this workspace's target directory:
//! build it first with `cargo build -p matte-inference` (Cargo builds another crate's
//! binaries only for that crate's own tests), or point `MATTE_INFERENCE_BIN` at one.
//! The models and sample images come from `scripts/setup.sh`
//! (`source ~/.cache/matte/env.sh`).
#![allow(dead_code)] // each test file uses a different part of this module

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use matte_gateway::config::Config;
use tokio::sync::oneshot;

/// A path from the environment `scripts/setup.sh` writes (`~/.cache/matte/env.sh`).
pub fn setup_path(variable: &str) -> PathBuf {
    let value = std::env::var_os(variable).unwrap_or_else(|| {
        panic!(
            "{variable} is not set: run `scripts/setup.sh` and `source ~/.cache/matte/env.sh`, or use scripts/test.sh"
        )
    });
    let path = PathBuf::from(value);
    assert!(path.exists(), "{variable} points at {}, which does not exist", path.display());
    path
}

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

/// A sample photograph from the setup cache, e.g. `chelsea.png`.
pub fn sample_image(name: &str) -> Vec<u8> {
    std::fs::read(setup_path("MATTE_SAMPLE_IMAGES").join(name)).expect("sample image is readable")
}

/// The tiny generated model of the inference tests (32×32 input, a mean and a
/// sigmoid): it loads and infers in milliseconds. The file is removed when dropped.
pub struct TinyModel {
    pub path: PathBuf,
}

impl TinyModel {
    pub fn generate() -> TinyModel {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("matte-gateway-tiny-{}-{n}.onnx", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference/tests/fixtures/tiny_model.py");
        let status = Command::new(setup_path("MATTE_PYTHON")).arg(script).arg(&path).status().unwrap();
        assert!(status.success(), "generating the tiny model failed");
        TinyModel { path }
    }
}

impl Drop for TinyModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// One `matte-inference` process on a loopback port, CPU provider.
pub struct Pod {
    child: Child,
    pub address: String,
}

impl Pod {
    /// Starts a pod on a free port and waits until it is ready.
    pub fn start(model: &std::path::Path, extra_args: &[&str]) -> Pod {
        let pod = Pod::spawn_on(free_port(), model, extra_args);
        pod.wait_until_ready(Duration::from_secs(180));
        pod
    }

    /// Starts a pod on `port` without waiting for it.
    pub fn spawn_on(port: u16, model: &std::path::Path, extra_args: &[&str]) -> Pod {
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

/// Polls `url` until it answers 200, at most `limit`, from async code.
pub async fn until_ok(url: &str, limit: Duration) {
    let started = Instant::now();
    let client = client();
    while started.elapsed() < limit {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer 200 within {limit:?}");
}

/// A gateway served in-process on a loopback port, stopped when dropped.
pub struct Gateway {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), matte_gateway::Error>>>,
}

impl Gateway {
    /// Starts `matte-gateway` with these flags (`--listen` is chosen here; no drain
    /// delay) on the current Tokio runtime.
    pub async fn start(flags: &[&str]) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds a loopback port");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let listen = addr.to_string();
        let config = Config::parse_from(
            ["matte-gateway", "--listen", &listen, "--drain-delay-seconds", "0"].iter().chain(flags.iter()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(matte_gateway::server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Gateway { base: format!("http://{listen}"), stop: Some(stop), server: Some(server) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Asks it to shut down and waits for its drain to end.
    pub async fn stop(mut self) -> Result<(), matte_gateway::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().expect("running").await.expect("the gateway task does not panic")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client builds")
}

/// The status, `Retry-After` and body of one POST of `image` (a PNG) to `url`.
pub async fn post_png(
    client: &reqwest::Client,
    url: &str,
    image: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, bytes::Bytes) {
    let mut request = client.post(url).header("content-type", "image/png").body(image);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.bytes().await.expect("the body arrives"))
}

/// `promtool check metrics` (Debian's prometheus package) prints nothing and exits 0
/// for a clean exposition.
pub fn promtool_check(exposition: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/setup.sh installs Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && complaints.trim().is_empty(), "promtool: {complaints}");
}
