//! A burst several times the queue capacity: the excess gets 429 with Retry-After,
//! every accepted request succeeds, and the pod keeps no more than its capacity.

mod support;

use support::{Server, client, sample_image};

const CAPACITY: usize = 2;
const BURST: usize = 4 * CAPACITY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_capacity_gets_429_and_every_accepted_request_succeeds() {
    let server =
        tokio::task::spawn_blocking(|| Server::start(&["--queue-capacity", &CAPACITY.to_string()])).await.unwrap();
    let photo = sample_image("astronaut.png");
    let client = client();

    let requests = (0..BURST).map(|_| {
        let request = client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo.clone());
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body = response.bytes().await.unwrap();
            (status, retry_after, body)
        })
    });
    let mut accepted = 0;
    let mut rejected = 0;
    for request in requests.collect::<Vec<_>>() {
        let (status, retry_after, body) = request.await.unwrap();
        match status {
            200 => {
                accepted += 1;
                assert!(image::load_from_memory(&body).is_ok(), "an accepted request returns an image");
            }
            429 => {
                rejected += 1;
                let seconds: u64 = retry_after.expect("429 carries Retry-After").parse().expect("whole seconds");
                assert!(seconds >= 1, "Retry-After {seconds}");
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(error["error"]["code"], "queue_full");
            }
            other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert_eq!(accepted + rejected, BURST);
    assert!(accepted >= CAPACITY, "the queue was used to its capacity ({accepted} accepted)");
    assert!(rejected >= BURST - CAPACITY - 1, "the excess was refused ({rejected} rejected)");

    let (queue_full, ok) = tokio::task::spawn_blocking(move || {
        (
            server.metric(r#"matte_requests_total{outcome="queue_full"}"#),
            server.metric(r#"matte_requests_total{outcome="ok"}"#),
        )
    })
    .await
    .unwrap();
    assert_eq!(queue_full as usize, rejected);
    assert_eq!(ok as usize, accepted);
}
