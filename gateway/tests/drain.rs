//! On shutdown the gateway stops accepting connections but finishes every request it
//! holds, those still waiting in its queue included, then returns.

mod support;

use std::time::{Duration, Instant};

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
