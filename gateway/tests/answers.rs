//! A pod's answer reaches its client as the pod sent it: its length declared, not
//! re-sent in chunks.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::{Gateway, client, metric_value, until_pods_ready};

/// Longer than the pieces an answer is passed on in (16 KiB), so that it takes several.
const ANSWER_BYTES: usize = 100_000;

/// A pod of this test's, always ready, that answers every image with [`ANSWER_BYTES`]
/// of `image/png` and their `Content-Length`; returns its address.
async fn long_answering_pod() -> String {
    use axum::http::header;
    use axum::routing::{get, post};
    let answer = || async { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; ANSWER_BYTES]) };
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
    let pod = long_answering_pod().await;
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
