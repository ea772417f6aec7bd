//! A pod's answer reaches its client as the pod sent it: its length declared, not
//! re-sent in chunks; and the pod's place is not held while a client takes its time
//! reading it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Gateway, client, metric_value, post_png, until_pods_ready};

/// Longer than the pieces an answer is passed on in (16 KiB), so that it takes several.
const ANSWER_BYTES: usize = 100_000;

/// Far more than loopback's socket buffers take: a client that reads none of it leaves
/// most of it to the gateway.
const LARGE_ANSWER_BYTES: usize = 16 << 20;

/// A pod of this test's, always ready, that answers every image with `bytes` of
/// `image/png` and their `Content-Length`; returns its address.
async fn long_answering_pod(bytes: usize) -> String {
    use axum::http::header;
    use axum::routing::{get, post};
    let answer = move || async move { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; bytes]) };
    let router = axum::Router::new()
        .route(matte_common::paths::REMOVE, post(answer))
        .route(matte_common::paths::READYZ, get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_keeps_the_length_the_pod_declared() {
    let pod = long_answering_pod(ANSWER_BYTES).await;
    let gateway = Gateway::start(&["--upstream", &pod]).await;
    until_pods_ready(&gateway, 1).await;

    let answer = client()
        .post(gateway.url("/v1/remove"))
        .header("content-type", "image/png")
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(headers.get("content-length").map(|v| v.to_str().unwrap()), Some("100000"), "{headers:?}");
    assert!(headers.get("transfer-encoding").is_none(), "re-sent in chunks: {headers:?}");
    assert_eq!(answer.bytes().await.expect("the body arrives").len(), ANSWER_BYTES);

    // An HTTP/1.0 client cannot take chunks: an answer of no declared length would end
    // only with its connection.
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let head = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connects");
        stream
            .write_all(b"POST /v1/remove HTTP/1.0\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nPNG")
            .expect("the request is sent");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("the answer arrives");
        let end = answer.windows(4).position(|window| window == b"\r\n\r\n").expect("a head");
        (String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase(), answer.len() - end - 4)
    })
    .await
    .unwrap();
    let (head, body_bytes) = head;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains("content-length: 100000"), "{head}");
    assert_eq!(body_bytes, ANSWER_BYTES);

    // Each counted as delivered whole, though neither said it had ended before the
    // connection had written its length.
    let metrics = client().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric_value(&metrics, r#"matte_gateway_requests_total{outcome="ok"}"#), 2.0, "{metrics}");
    gateway.stop().await.expect("stops");
}

/// One place on the pod, taken by a client that reads none of its 16 MiB answer. With
/// room for the answers in the buffers' share for answers (half of 128 MiB), the gateway
/// takes it off the pod and gives the place to the next request at once, and the
/// stalled client still gets its answer whole when it reads; with too little (half of
/// 16 MiB) the answer is passed on at the client's pace, its place held, and the next
/// request is sent away when its budget of 2 s runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_place_is_not_held_by_a_client_that_reads_slowly_while_the_buffers_hold_its_answer() {
    let pod = long_answering_pod(LARGE_ANSWER_BYTES).await;
    for (buffers, taken_off_the_pod) in [("134217728", true), ("16777216", false)] {
        let flags = [
            "--upstream",
            &pod,
            "--upstream-capacity",
            "1",
            "--max-wait-seconds",
            "2",
            "--max-buffered-bytes",
            buffers,
            "--write-timeout-seconds",
            "60",
        ];
        let gateway = Gateway::start(&flags).await;
        until_pods_ready(&gateway, 1).await;
        let address = gateway.base.trim_start_matches("http://").to_owned();
        let request = b"POST /v1/remove HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nPNG";
        // A client that asks and reads nothing until the next request has been answered:
        // its socket takes a little of the answer, the rest waits in the gateway.
        let mut stalled = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(address).expect("connects");
            stream.write_all(request).expect("the request is sent");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
            assert_eq!(stream.peek(&mut [0u8; 1]).expect("an answer begins"), 1);
            stream
        })
        .await
        .unwrap();

        let (status, _, body) = post_png(&client(), &gateway.url("/v1/remove"), vec![0u8; 10], &[]).await;
        let served = || async {
            let metrics = client().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
            metric_value(&metrics, r#"matte_gateway_requests_total{outcome="ok"}"#)
        };
        if taken_off_the_pod {
            assert_eq!(
                status,
                200,
                "{buffers} bytes of buffers: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            assert_eq!(body.len(), LARGE_ANSWER_BYTES);
            // Held in the gateway, the unread answer is not served yet: handed to its
            // connection as one frame, it was counted so before its client read a byte.
            assert_eq!(served().await, 1.0, "only the answer read whole");
            let read = tokio::task::spawn_blocking(move || {
                let mut answer = Vec::new();
                stalled.read_to_end(&mut answer).expect("the held answer is read");
                answer
            })
            .await
            .unwrap();
            let end = read.windows(4).position(|window| window == b"\r\n\r\n").expect("a head");
            let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 16777216"), "{head}");
            assert_eq!(read.len() - end - 4, LARGE_ANSWER_BYTES, "the stalled client's answer arrives whole");
            assert_eq!(served().await, 2.0, "and is served");
        } else {
            assert!(matches!(status, 429 | 503), "{buffers} bytes of buffers: {status}, the place was free");
            drop(stalled);
        }
        // Said in the metrics: how the answers went.
        let metrics = client().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let relayed = |how: &str| metric_value(&metrics, &format!(r#"matte_gateway_answers_total{{relay="{how}"}}"#));
        let expected = if taken_off_the_pod { (2.0, 0.0) } else { (0.0, 1.0) };
        assert_eq!((relayed("taken_off_the_pod"), relayed("streamed")), expected, "{metrics}");
        drop(gateway);
    }
}
