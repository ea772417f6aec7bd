//! Real `matte-inference` pods on loopback (from `matte_e2e::pods`, shared with the
//! end-to-end tests) behind a gateway run in-process ([`Gateway::start`]).
//!
//! The pods are the `matte-inference` binary of this workspace's target directory:
//! build it first with `cargo build -p matte-inference` (Cargo builds another crate's
//! binaries only for that crate's own tests), or point `MATTE_INFERENCE_BIN` at one.
//! The models and sample images come from `scripts/setup.sh`
//! (`source ~/.cache/matte/env.sh`).
#![allow(dead_code, unused_imports)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use matte_gateway::config::Config;
use tokio::sync::oneshot;

pub use matte_e2e::pods::{Pod, blocking_client, inference_binary, metric_value, scrape, wait_for_ok};
pub use matte_e2e::ports::free_port;
pub use matte_e2e::promtool::promtool_check;
pub use matte_e2e::setup_cache::{sample_image, setup_path};
pub use matte_e2e::tiny_model::TinyModel;

/// The flags of a pod that is slow whatever this machine's speed: two places, and every
/// run waits 700 ms for a batch of 64 to fill, which two places never do, so it serves
/// two images per 0.7 s and requests stay in the gateway's queue for seconds.
pub const SLOW_POD_OF_TWO_PLACES: [&str; 6] =
    ["--queue-capacity", "2", "--max-batch-size", "64", "--max-batch-delay-ms", "700"];

/// One real pod serving a generated tiny model with these flags, started from async code
/// (a pod's start blocks until it is ready).
pub async fn tiny_model_pod(flags: &'static [&'static str]) -> Pod {
    let model = TinyModel::generate();
    // The model file is kept until the pod has loaded it.
    tokio::task::spawn_blocking(move || (Pod::start(&model.path, flags), model)).await.expect("the pod starts").0
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

/// A pod of this test's that is always ready and answers every image at once with a
/// few bytes of `image/png`; returns its address.
pub async fn answering_pod() -> String {
    use axum::http::header;
    use axum::routing::{get, post};
    let router = axum::Router::new()
        .route(matte_common::paths::REMOVE, post(|| async { ([(header::CONTENT_TYPE, "image/png")], "PNG") }))
        .route(matte_common::paths::READYZ, get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// Waits until the gateway counts `count` pods ready (its probes have found them), at
/// most a generous limit.
pub async fn until_pods_ready(gateway: &Gateway, count: usize) {
    let client = client();
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(gateway.url("/metrics")).send().await
            && let Ok(text) = response.text().await
            && metric_value(&text, r#"matte_gateway_endpoints{state="ready"}"#) == count as f64
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway never counted {count} pods ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
