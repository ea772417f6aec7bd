//! Refusals that cost the client nothing: a client that asks `Expect: 100-continue` is
//! refused (415, 413, 429) before it is asked for its body; every status carries the
//! JSON error, 405 included; a repeated query parameter is refused by name; and a
//! multipart upload may be as large as a raw one.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart;
use support::{Server, TinyModel, blocking_client, connect, noisy_png, read_head, sample_image, send_head};

const BODY_LIMIT: usize = 8 * 1024 * 1024;

fn server(model: &TinyModel, extra: &[&str]) -> Server {
    let limit = BODY_LIMIT.to_string();
    let mut args = vec!["--max-body-bytes", limit.as_str()];
    args.extend_from_slice(extra);
    Server::start_with_model(&model.path, &args)
}

/// Sends the head of a request that waits for `100 Continue`; returns the first
/// response head the server sends.
fn expect_continue(server: &Server, content_type: &str, content_length: usize) -> String {
    let mut stream = connect(server);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send_head(&mut stream, content_type, content_length, "Expect: 100-continue\r\n");
    read_head(&mut stream)
}

#[test]
fn refusals_come_before_100_continue() {
    let model = TinyModel::generate();
    let server = server(&model, &["--queue-capacity", "1", "--upload-grace-seconds", "60"]);

    let started = Instant::now();
    let head = expect_continue(&server, "text/plain", 1000);
    assert!(head.starts_with("HTTP/1.1 415"), "a wrong type is refused at once, not invited: {head:?}");
    let head = expect_continue(&server, "image/png", 64 * 1024 * 1024);
    assert!(head.starts_with("HTTP/1.1 413"), "an over-limit length is refused at once: {head:?}");

    // Take the only place with an upload that has not finished, then ask again.
    let mut holder = connect(&server);
    send_head(&mut holder, "image/png", 1000, "");
    holder.write_all(b"\x89PNG").unwrap();
    let admitted_by = Instant::now() + Duration::from_secs(30);
    while server.metric("matte_inflight_requests") < 1.0 {
        assert!(Instant::now() < admitted_by, "the holder was never admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let head = expect_continue(&server, "image/png", 1000);
    assert!(head.starts_with("HTTP/1.1 429"), "a full queue is refused at once: {head:?}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "the refusals took {:?}", started.elapsed());
}

#[test]
fn every_status_carries_the_json_error_and_repeated_parameters_are_refused() {
    let model = TinyModel::generate();
    let server = server(&model, &[]);
    let client = blocking_client();

    let response = client.get(server.url("/v1/remove")).send().unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: serde_json::Value = response.json().expect("405 has a JSON body");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let response = client.post(server.url("/metrics")).send().unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET,HEAD", "the methods the path takes");

    let photo = sample_image("coffee.png");
    let response = client
        .post(server.url("/v1/remove?format=png&format=mask"))
        .header("content-type", "image/png")
        .body(photo)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("`format`"), "{body}");
}

/// A PNG of noise: it does not compress, so it is about 3 bytes a pixel.

#[test]
fn a_multipart_upload_may_be_as_large_as_the_body_limit() {
    let model = TinyModel::generate();
    let server = server(&model, &[]);
    let png = noisy_png(1100, 1000);
    assert!(png.len() > 3 * 1024 * 1024, "the form must be over 2 MiB: {} bytes", png.len());
    let form = multipart::Form::new().part("image", multipart::Part::bytes(png).file_name("photo.png"));
    let response = blocking_client().post(server.url("/v1/remove")).multipart(form).send().unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap_or_default());

    let too_big = noisy_png(2000, 1500);
    assert!(too_big.len() > BODY_LIMIT);
    let form = multipart::Form::new().part("image", multipart::Part::bytes(too_big).file_name("photo.png"));
    let response = blocking_client().post(server.url("/v1/remove")).multipart(form).send().unwrap();
    assert_eq!(response.status(), 413);
}
