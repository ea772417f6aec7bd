//! On shutdown the gateway stops accepting connections but finishes every request it
//! holds, those still waiting in its queue included, then returns; it shuts down so by
//! itself, and returns an error, when its source of pods stops.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use matte_gateway::config::Config;
use matte_gateway::dispatcher::Dispatcher;
use matte_gateway::endpoints::EndpointSource;
use support::{Gateway, SLOW_POD_OF_TWO_PLACES, client, metric_value, post_png, sample_image, tiny_model_pod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_the_queued_requests_and_then_refuses_connections() {
    // A slow pod, so that requests are still in the gateway's queue when the shutdown
    // begins.
    let pod = tiny_model_pod(&SLOW_POD_OF_TWO_PLACES).await;
    let gateway = Gateway::start(&["--upstream", &pod.address, "--upstream-capacity", "2"]).await;
    let metrics = gateway.url("/metrics");
    let client = client();
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
        if metric_value(&text, r#"matte_gateway_endpoints{state="ready"}"#) == 1.0 {
            break;
        }
        assert!(Instant::now() < limit, "the pod never turned ready in the gateway");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let photo = sample_image("chelsea.png");
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, photo) = (client.clone(), gateway.url("/v1/remove"), photo.clone());
            tokio::spawn(async move { post_png(&client, &url, photo, &[]).await.0 })
        })
        .collect();
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
        if metric_value(&text, "matte_gateway_queue_depth") >= 2.0 {
            break;
        }
        assert!(Instant::now() < limit, "the requests never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let base = gateway.base.clone();
    let stopped = Instant::now();
    gateway.stop().await.expect("the drain ends cleanly");
    eprintln!("drained six requests in {:.1} s", stopped.elapsed().as_secs_f64());
    for request in requests {
        assert_eq!(request.await.unwrap(), 200, "every held request was finished");
    }
    let fresh = reqwest::Client::new();
    assert!(fresh.get(format!("{base}/readyz")).send().await.is_err(), "no new connections after the drain");
}

/// A source of pods with a bug: it panics as it starts.
struct PanickingSource;

impl EndpointSource for PanickingSource {
    async fn run(self, _dispatcher: Arc<Dispatcher>) {
        panic!("a bug in the source of pods");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_source_of_pods_stops_shuts_down_with_an_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds a loopback port");
    let listen = listener.local_addr().unwrap().to_string();
    let config = Config::parse_from(["matte-gateway", "--listen", &listen, "--drain-delay-seconds", "0"]);
    // Never told to shut down: it stops by itself, or the limit says it never would.
    let served = matte_gateway::server::run_with_source(listener, config, PanickingSource, std::future::pending());
    let served = tokio::time::timeout(Duration::from_secs(60), served).await;
    let error = served.expect("the gateway stops by itself").expect_err("an error, for the process to fail");
    assert!(error.to_string().contains("endpoint source"), "{error}");
}
