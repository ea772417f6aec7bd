//! The queue's wait is a request's wait for a place on a pod: a client's slow upload
//! is none of it. Counted from the request's arrival, it read as seconds in the queue,
//! and the autoscaler, which reads the wait and the oldest age, started pods that could
//! not have served the client sooner.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Gateway, answering_pod, client, metric_value, until_pods_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_no_wait_in_the_queue() {
    let pod = answering_pod().await;
    let gateway = Gateway::start(&["--upstream", &pod, "--upload-grace-seconds", "5"]).await;
    until_pods_ready(&gateway, 1).await;

    // Ten bytes over two seconds, within the upload's grace; a pod free all along.
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let (head, uploaded_in) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connects");
        stream
            .write_all(
                b"POST /v1/remove HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\n",
            )
            .expect("the head is sent");
        let started = Instant::now();
        for byte in b"0123456789" {
            std::thread::sleep(Duration::from_millis(200));
            stream.write_all(&[*byte]).expect("a byte is sent");
        }
        let uploaded_in = started.elapsed();
        let mut answer = [0u8; 512];
        let read = stream.read(&mut answer).expect("the answer arrives");
        (String::from_utf8_lossy(&answer[..read]).into_owned(), uploaded_in)
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(uploaded_in >= Duration::from_secs(2), "{uploaded_in:?}");

    let metrics = client().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let count = metric_value(&metrics, "matte_gateway_queue_wait_seconds_count");
    let waited = metric_value(&metrics, "matte_gateway_queue_wait_seconds_sum");
    assert_eq!(count, 1.0, "{metrics}");
    assert!(waited < 1.0, "a {uploaded_in:?} upload counted as {waited} s in the queue");
    gateway.stop().await.expect("stops");
}
