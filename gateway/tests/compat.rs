//! The rembg and remove.bg drop-in endpoints give the same result as the pods' own API
//! on the same photo, and answer errors in the shapes those clients parse.

mod support;

use base64::Engine;
use support::{Gateway, client, sample_image, tiny_model_pod};

/// A `multipart/form-data` body: `(name, file name, bytes)` for each field.
fn form(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "matte-test-boundary-7d1c";
    let mut body = Vec::new();
    for (name, file_name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(file_name) = file_name {
            body.extend_from_slice(format!("; filename=\"{file_name}\"\r\nContent-Type: image/png").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Answer {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

async fn post(client: &reqwest::Client, url: String, content_type: &str, body: Vec<u8>) -> Answer {
    let response = client.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers.get("content-type").map_or("", |v| v.to_str().unwrap()).to_owned();
    Answer { status, content_type, headers, body: response.bytes().await.unwrap() }
}

fn pixels(answer: &Answer) -> image::DynamicImage {
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    image::load_from_memory(&answer.body).expect("an image comes back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_in_endpoints_match_the_native_api_on_the_same_photo() {
    let pod = tiny_model_pod(&[]).await;
    let gateway = Gateway::start(&["--upstream", &pod.address]).await;
    support::until_ok(&pod.url("/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round
    let photo = sample_image("chelsea.png");
    let client = client();
    let url = |path: &str| gateway.url(path);

    // The mask: native, rembg `om`, remove.bg `channels=alpha` (as a file, and in base64).
    let native_mask = pixels(&post(&client, url("/v1/remove?format=mask"), "image/png", photo.clone()).await);
    let (content_type, body) = form(&[("file", Some("cat.png"), &photo), ("om", None, b"true")]);
    let rembg_mask = pixels(&post(&client, url("/api/remove"), &content_type, body).await);
    assert_eq!(rembg_mask, native_mask, "rembg's mask is the native mask");
    let (content_type, body) =
        form(&[("image_file", Some("cat.png"), &photo), ("channels", None, b"alpha"), ("format", None, b"png")]);
    let remove_bg_mask = pixels(&post(&client, url("/v1.0/removebg"), &content_type, body).await);
    assert_eq!(remove_bg_mask, native_mask, "remove.bg's alpha channel is the native mask");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&photo);
    let (content_type, body) = form(&[("image_file_b64", None, encoded.as_bytes()), ("channels", None, b"alpha")]);
    let from_base64 = pixels(&post(&client, url("/v1.0/removebg"), &content_type, body).await);
    assert_eq!(from_base64, native_mask, "a base64 upload is the same photo");

    // The cut-out: native PNG and rembg's default; remove.bg's JPEG on a colour.
    let native_cutout = pixels(&post(&client, url("/v1/remove"), "image/png", photo.clone()).await);
    let (content_type, body) = form(&[("file", Some("cat.png"), &photo)]);
    assert_eq!(pixels(&post(&client, url("/api/remove"), &content_type, body).await), native_cutout);
    let (content_type, body) = form(&[("file", Some("cat.png"), &photo), ("bgc", None, b"255,0,0,255")]);
    let on_red = pixels(&post(&client, url("/api/remove"), &content_type, body).await);
    let native_on_red = pixels(&post(&client, url("/v1/remove?bg_color=ff0000"), "image/png", photo.clone()).await);
    assert_eq!(on_red, native_on_red, "rembg's bgc is the native bg_color");

    let (content_type, body) = form(&[
        ("image_file", Some("cat.png"), &photo),
        ("format", None, b"jpg"),
        ("bg_color", None, b"00ff00"),
        ("size", None, b"preview"),
    ]);
    let jpeg = post(&client, url("/v1.0/removebg"), &content_type, body).await;
    assert_eq!(jpeg.content_type, "image/jpeg");
    let decoded = pixels(&jpeg);
    assert_eq!(jpeg.headers["x-width"], decoded.width().to_string().as_str());
    assert_eq!(jpeg.headers["x-height"], decoded.height().to_string().as_str());
    assert!(decoded.width().max(decoded.height()) <= 625, "size=preview caps the output");
    // The pod's own JPEG, byte for byte: encoded once, on the pod.
    let side = decoded.width().max(decoded.height());
    let native = url(&format!("/v1/remove?bg_color=00ff00&format=jpeg&max_dimension={side}"));
    let native_jpeg = post(&client, native, "image/png", photo.clone()).await;
    assert_eq!(native_jpeg.content_type, "image/jpeg");
    assert!(jpeg.body == native_jpeg.body, "remove.bg's JPEG is the pod's, not encoded again");

    // Errors in each dialect's shape.
    let (content_type, body) = form(&[("om", None, b"true")]);
    let missing = post(&client, url("/api/remove"), &content_type, body).await;
    assert_eq!(missing.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
    assert!(error["detail"].as_str().unwrap().contains("file"), "{error}");

    let (content_type, body) = form(&[("image_file", Some("cat.png"), &photo), ("size", None, b"huge")]);
    let bad_size = post(&client, url("/v1.0/removebg"), &content_type, body).await;
    assert_eq!(bad_size.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&bad_size.body).unwrap();
    assert_eq!(error["errors"][0]["code"], "bad_request", "{error}");
    assert!(error["errors"][0]["title"].as_str().unwrap().contains("size"), "{error}");

    let (content_type, body) = form(&[("image_file", Some("notes.txt"), b"not an image at all")]);
    let not_an_image = post(&client, url("/v1.0/removebg"), &content_type, body).await;
    assert_eq!(not_an_image.status, 415, "the pod's refusal, reshaped");
    let error: serde_json::Value = serde_json::from_slice(&not_an_image.body).unwrap();
    assert_eq!(error["errors"][0]["code"], "unsupported_content_type", "{error}");
}

/// A pod on loopback that is ready and answers every removal with `size` bytes of image.
async fn pod_answering(size: usize) -> String {
    pod_answering_with(vec![0x89u8; size]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_answer_larger_than_all_the_buffers_is_too_large_and_not_sent_away() {
    let pod = pod_answering(300_000).await;
    // Room for the request, not for the answer the rembg client's image is held whole in.
    let gateway = Gateway::start(&["--upstream", &pod, "--max-buffered-bytes", "100000"]).await;
    support::until_ok(&format!("http://{pod}/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round
    let client = client();
    let (content_type, body) = form(&[("file", Some("cat.png"), b"\x89PNG\r\n\x1a\n a small image")]);
    let answer = post(&client, gateway.url("/api/remove"), &content_type, body).await;
    // Told to come back (429), it would be refused on every try, each counted among the
    // clients waiting.
    assert_eq!(answer.status, 413, "{}", String::from_utf8_lossy(&answer.body));
    assert!(!answer.headers.contains_key("retry-after"), "nothing to come back for");
    let detail: serde_json::Value = serde_json::from_slice(&answer.body).expect("rembg's error shape");
    let message = detail["detail"].as_str().expect("rembg's detail");
    assert!(message.contains("more than all 100000 of them") && message.contains("/v1/remove"), "{message}");
    let metrics = client.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("matte_gateway_requests_total{outcome=\"answer_too_large\"} 1\n"), "{metrics}");
    assert_eq!(support::metric_value(&metrics, "matte_gateway_deferred_requests"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_form_whose_copies_the_buffers_can_never_hold_is_too_large() {
    let pod = pod_answering(1_000).await;
    // Room for a 40 kB body, and not for it and the parser's two copies of it.
    let gateway = Gateway::start(&["--upstream", &pod, "--max-buffered-bytes", "100000"]).await;
    support::until_ok(&format!("http://{pod}/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round
    let client = client();
    let image = vec![7u8; 40_000];

    let native = client.post(gateway.url("/v1/remove")).header("content-type", "image/png").body(image.clone());
    assert_eq!(native.send().await.unwrap().status(), 200, "the body alone fits");
    let (content_type, body) = form(&[("file", Some("cat.png"), &image)]);
    let answer = post(&client, gateway.url("/api/remove"), &content_type, body).await;
    // Told to come back (429), it would be refused on every try, each counted among the
    // clients waiting.
    assert_eq!(answer.status, 413, "{}", String::from_utf8_lossy(&answer.body));
    assert!(!answer.headers.contains_key("retry-after"), "nothing to come back for");
    let message = String::from_utf8_lossy(&answer.body);
    assert!(message.contains("more than all 100000 of them"), "{message}");
    let metrics = client.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("matte_gateway_requests_total{outcome=\"body_too_large\"} 1\n"), "{metrics}");
    assert_eq!(support::metric_value(&metrics, "matte_gateway_deferred_requests"), 0.0, "{metrics}");
}

/// A pod on loopback that is ready and answers every removal with `image`.
async fn pod_answering_with(image: Vec<u8>) -> String {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    let app = axum::Router::new().route("/readyz", get(|| async { "ready" })).route(
        "/v1/remove",
        post(move || {
            let image = image.clone();
            async move { ([("content-type", "image/png")], image) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_answer_keeps_its_buffers_until_its_client_has_taken_it() {
    const MIB: usize = 1024 * 1024;
    let pod = pod_answering_with(vec![0x89u8; 8 * MIB]).await;
    let gateway = Gateway::start(&["--upstream", &pod, "--max-buffered-bytes", &(12 * MIB).to_string()]).await;
    support::until_ok(&format!("http://{pod}/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round

    // A rembg client that reads its answer's first bytes and then nothing, through a
    // small receive window: most of the 8 MiB answer stays in the gateway.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = gateway.base.trim_start_matches("http://").parse().unwrap();
    let mut slow = socket.connect(address).await.unwrap();
    let (content_type, body) = form(&[("file", Some("cat.png"), b"\x89PNG\r\n\x1a\n a small image")]);
    let head = format!(
        "POST /api/remove HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body).await.unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the answer has begun");

    let client = client();
    let native = client.post(gateway.url("/v1/remove")).header("content-type", "image/png").body(vec![7u8; 6 * MIB]);
    let answer = native.send().await.unwrap();
    assert_eq!(answer.status(), 429, "8 MiB of 12 are the slow client's until it takes them");
    let error: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "buffers_full", "{error}");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_answer_declaring_more_pixels_than_the_buffers_hold_is_too_large_and_never_decoded() {
    // 4096 × 4096 grey pixels in a few kilobytes: 16 MiB decoded, more to re-encode as
    // JPEG, against 32 MiB of buffers.
    let mut png = Vec::new();
    image::GrayImage::new(4096, 4096).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    assert!(png.len() < 1024 * 1024, "{} bytes", png.len());
    let pod = pod_answering_with(png).await;
    let gateway = Gateway::start(&["--upstream", &pod, "--max-buffered-bytes", &(32 * 1024 * 1024).to_string()]).await;
    support::until_ok(&format!("http://{pod}/readyz"), std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a probe round
    let client = client();
    let (content_type, body) = form(&[
        ("image_file", Some("cat.png"), b"\x89PNG\r\n\x1a\n a small image"),
        ("format", None, b"jpg"),
        ("channels", None, b"alpha"),
    ]);
    let answer = post(&client, gateway.url("/v1.0/removebg"), &content_type, body).await;
    // Decoded, it would have taken more than the 32 MiB; sent away, the client would be
    // refused again.
    assert_eq!(answer.status, 413, "{}", String::from_utf8_lossy(&answer.body));
    assert!(!answer.headers.contains_key("retry-after"), "nothing to come back for");
    let error: serde_json::Value = serde_json::from_slice(&answer.body).expect("remove.bg's error shape");
    assert_eq!(error["errors"][0]["code"], "answer_too_large", "{error}");
}
