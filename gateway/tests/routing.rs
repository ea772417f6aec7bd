//! Requests spread over the pods by what each has outstanding, a burst beyond the
//! fleet's capacity waits in the gateway instead of failing, and the metrics follow
//! the contract.

mod support;

use matte_common::gateway_metrics as names;
use support::{Gateway, Pod, TinyModel, client, metric_value, post_png, promtool_check, sample_image, scrape};

const POD_CAPACITY: &str = "2";

fn start_pods(model: &TinyModel, count: usize) -> Vec<Pod> {
    (0..count).map(|_| Pod::start(&model.path, &["--queue-capacity", POD_CAPACITY])).collect()
}

fn upstream_flags(pods: &[Pod]) -> Vec<String> {
    let mut flags = vec!["--upstream-capacity".to_owned(), POD_CAPACITY.to_owned()];
    for pod in pods {
        flags.push("--upstream".to_owned());
        flags.push(pod.address.clone());
    }
    flags
}

/// Starts a gateway and waits until its first probe found every pod ready.
async fn gateway_for(pods: &[Pod]) -> Gateway {
    let flags = upstream_flags(pods);
    let gateway = Gateway::start(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let metrics = gateway.url("/metrics");
    let expected = pods.len() as f64;
    for _ in 0..100 {
        let text = tokio::task::spawn_blocking({
            let metrics = metrics.clone();
            move || scrape(&metrics)
        })
        .await
        .unwrap();
        if metric_value(&text, r#"matte_gateway_endpoints{state="ready"}"#) == expected {
            return gateway;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the gateway never saw {expected} ready pods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_eight_times_the_fleet_capacity_completes_without_a_429() {
    let model = TinyModel::generate();
    let pods = tokio::task::spawn_blocking(move || (start_pods(&model, 3), model)).await.unwrap().0;
    let gateway = gateway_for(&pods).await;
    let photo = sample_image("chelsea.png");
    let burst = 8 * 3 * 2;

    let client = client();
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..burst)
        .map(|_| {
            let (client, url, photo) = (client.clone(), gateway.url("/v1/remove"), photo.clone());
            tokio::spawn(async move { post_png(&client, &url, photo, &[]).await })
        })
        .collect();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(image::load_from_memory(&body).is_ok(), "an image comes back");
    }
    eprintln!("burst of {burst} through 3 pods of capacity 2: {:.2} s", started.elapsed().as_secs_f64());

    let metrics = gateway.url("/metrics");
    let pods_and_text = tokio::task::spawn_blocking(move || {
        let per_pod: Vec<(f64, f64)> = pods
            .iter()
            .map(|pod| {
                (
                    pod.metric("matte_images_processed_total"),
                    pod.exported_metric(r#"matte_requests_total{outcome="queue_full"}"#),
                )
            })
            .collect();
        (per_pod, scrape(&metrics))
    })
    .await
    .unwrap();
    let (per_pod, text) = pods_and_text;
    eprintln!("images per pod: {:?}", per_pod.iter().map(|(images, _)| images).collect::<Vec<_>>());
    assert_eq!(per_pod.iter().map(|(images, _)| images).sum::<f64>(), burst as f64);
    for (images, queue_full) in &per_pod {
        assert!(*images >= 1.0, "every pod took part: {per_pod:?}");
        assert_eq!(*queue_full, 0.0, "the gateway never sent a pod more than its capacity");
    }
    assert_eq!(metric_value(&text, r#"matte_gateway_requests_total{outcome="ok"}"#), burst as f64);
    assert_eq!(metric_value(&text, "matte_gateway_queue_wait_seconds_count"), burst as f64);
    assert!(metric_value(&text, "matte_gateway_queue_wait_seconds_sum") > 0.0, "some requests waited");
    assert_eq!(metric_value(&text, names::QUEUE_DEPTH), 0.0);
    assert_eq!(metric_value(&text, names::OLDEST_QUEUED_AGE_SECONDS), 0.0);
    for name in names::ALL.iter().filter(|&&name| name != names::UPSTREAM_RETRIES_TOTAL) {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is missing");
    }
    promtool_check(&text);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_client_is_spread_over_every_pod() {
    let model = TinyModel::generate();
    let pods = tokio::task::spawn_blocking(move || (start_pods(&model, 3), model)).await.unwrap().0;
    let gateway = gateway_for(&pods).await;
    let photo = sample_image("chelsea.png");
    // One client, one request at a time: a single kept-alive connection to the gateway.
    let client = client();
    for _ in 0..30 {
        let (status, _, body) = post_png(&client, &gateway.url("/v1/remove"), photo.clone(), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let per_pod = tokio::task::spawn_blocking(move || {
        pods.iter().map(|pod| pod.metric("matte_images_processed_total")).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    eprintln!("images per pod: {per_pod:?}");
    assert_eq!(per_pod.iter().sum::<f64>(), 30.0);
    for images in &per_pod {
        assert!(*images >= 5.0, "each pod took a fair share: {per_pod:?}");
    }
}

/// Several gateway replicas in front of the same pods, as the operator deploys them, each
/// with its share of a pod's places: together they never send a pod more than it admits,
/// so no pod turns a replica away, whichever replica each request reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_replicas_sharing_a_pods_places_are_never_turned_away() {
    let model = TinyModel::generate();
    let pod = tokio::task::spawn_blocking(move || (Pod::start(&model.path, &["--queue-capacity", "4"]), model))
        .await
        .unwrap()
        .0;
    let share = ["--upstream-capacity", "2", "--upstream", pod.address.as_str()];
    let replicas = [Gateway::start(&share).await, Gateway::start(&share).await];
    let photo = sample_image("chelsea.png");
    let client = client();
    let burst = 24;
    let requests: Vec<_> = (0..burst)
        .map(|index| {
            let (client, url, photo) = (client.clone(), replicas[index % 2].url("/v1/remove"), photo.clone());
            tokio::spawn(async move { post_png(&client, &url, photo, &[]).await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let urls: Vec<String> = replicas.iter().map(|replica| replica.url("/metrics")).collect();
    let (refused, retries) = tokio::task::spawn_blocking(move || {
        let retries: f64 = urls
            .iter()
            .map(|url| {
                let text = scrape(url);
                text.lines()
                    .filter(|line| line.starts_with(names::UPSTREAM_RETRIES_TOTAL))
                    .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum();
        (pod.exported_metric(r#"matte_requests_total{outcome="queue_full"}"#), retries)
    })
    .await
    .unwrap();
    assert_eq!((refused, retries), (0.0, 0.0), "the pod turned a replica away");
    for replica in replicas {
        replica.stop().await.unwrap();
    }
}

/// A stub pod whose answers are `size` bytes, sent as the gateway takes them; it counts
/// the answers it has not handed over whole, and the most at once.
async fn pod_counting_answers_in_flight(size: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One answer in flight, counted down when its body is dropped.
    struct InFlight(Arc<AtomicUsize>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    let (current, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    let counted = most.clone();
    let answer = axum::routing::post(move || {
        let (current, most) = (current.clone(), counted.clone());
        async move {
            most.fetch_max(current.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let in_flight = InFlight(current);
            let chunks = futures_util::stream::iter((0..size / 65_536).map(move |_| {
                let _ = &in_flight;
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0x89u8; 65_536]))
            }));
            ([("content-type", "image/png")], axum::body::Body::from_stream(chunks))
        }
    });
    let app =
        axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready" })).route("/v1/remove", answer);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_place_is_taken_until_its_answer_has_arrived_whole() {
    // 48 MiB: more than every buffer between the pod and a client that does not read.
    let (pod, most_in_flight) = pod_counting_answers_in_flight(48 * 1024 * 1024).await;
    let gateway = Gateway::start(&["--upstream", &pod, "--upstream-capacity", "1"]).await;
    support::until_ok(&format!("http://{pod}/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round
    let client = client();
    let remove = gateway.url("/v1/remove");

    let slow = client.post(&remove).header("content-type", "image/png").body(vec![1u8; 100]).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    // While that answer is still on its way, the pod's one place is not free.
    let (status, _, _) = post_png(&client, &remove, vec![1u8; 100], &[("x-matte-max-wait-seconds", "2")]).await;
    assert_eq!(status, 503, "waited in the gateway for the place, not sent to the pod");
    assert_eq!(slow.bytes().await.unwrap().len(), 48 * 1024 * 1024);
    let (status, _, _) = post_png(&client, &remove, vec![1u8; 100], &[]).await;
    assert_eq!(status, 200, "the place is free once the answer has arrived");
    assert_eq!(most_in_flight.load(std::sync::atomic::Ordering::SeqCst), 1, "never two answers at once on one place");
}
