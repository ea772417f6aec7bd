//! Every kind of bad input gets a 4xx with a JSON body naming the problem, and the
//! server goes on serving: a good request sent before them all still succeeds.

mod support;

use reqwest::blocking::multipart;
use support::{Server, blocking_client, decompression_bomb, sample_image};

const BODY_LIMIT: usize = 1_000_000;

/// name, query, content type, body, expected status, what the message must mention
type Case = (&'static str, &'static str, &'static str, Vec<u8>, u16, &'static str);

#[test]
fn bad_input_is_refused_clearly_and_nothing_accepted_is_lost() {
    let server = Server::start(&["--max-body-bytes", &BODY_LIMIT.to_string()]);
    let photo = sample_image("astronaut.png");
    let mut jpeg = Vec::new();
    image::load_from_memory(&photo)
        .unwrap()
        .to_rgb8()
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();

    let good = {
        let url = server.url("/v1/remove");
        let jpeg = jpeg.clone();
        std::thread::spawn(move || {
            blocking_client().post(url).header("content-type", "image/jpeg").body(jpeg).send().unwrap().status()
        })
    };

    let client = blocking_client();
    let cases: Vec<Case> = vec![
        ("empty body", "", "image/png", vec![], 400, "empty"),
        ("truncated JPEG", "", "image/jpeg", jpeg[..jpeg.len() / 3].to_vec(), 400, "decoded"),
        ("not an image", "", "image/png", b"definitely not a picture".to_vec(), 400, "not a JPEG, PNG or WebP"),
        ("decompression bomb", "", "image/png", decompression_bomb(), 413, "50000×50000"),
        ("oversized body", "", "image/jpeg", vec![0xFF; BODY_LIMIT + 1], 413, "limit"),
        ("wrong content type", "", "text/plain", jpeg.clone(), 415, "text/plain"),
        ("no content type", "", "", jpeg.clone(), 415, "Content-Type"),
        ("GIF", "", "image/png", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), 415, "gif"),
        ("unknown format", "?format=bmp", "image/jpeg", jpeg.clone(), 400, "format"),
        ("bad bg_color", "?bg_color=chartreuse", "image/jpeg", jpeg.clone(), 400, "bg_color"),
        ("jpeg with nothing to fill the transparency", "?format=jpeg", "image/jpeg", jpeg.clone(), 400, "bg_color"),
        ("bad max_dimension", "?max_dimension=0", "image/jpeg", jpeg.clone(), 400, "max_dimension"),
    ];
    for (name, query, content_type, body, status, mentions) in cases {
        let mut request = client.post(server.url(&format!("/v1/remove{query}"))).body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let body: serde_json::Value = response.json().unwrap_or_else(|e| panic!("{name}: JSON error body: {e}"));
        let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("{name}: no message in {body}"));
        assert!(body["error"]["code"].is_string(), "{name}: no code in {body}");
        assert!(message.contains(mentions), "{name}: `{message}` should mention `{mentions}`");
    }

    let form = multipart::Form::new().text("picture", "wrong field");
    let response = client.post(server.url("/v1/remove")).multipart(form).send().unwrap();
    assert_eq!(response.status(), 400, "multipart without an `image` field");

    assert_eq!(good.join().unwrap(), 200, "the request accepted before the bad ones completed");
    let after = client.post(server.url("/v1/remove")).header("content-type", "image/jpeg").body(jpeg).send().unwrap();
    assert_eq!(after.status(), 200, "the server still serves after bad input");
    assert_eq!(client.get(server.url("/readyz")).send().unwrap().status(), 200);
}

#[test]
fn a_jpeg_with_data_after_its_end_is_accepted() {
    let model = support::TinyModel::generate();
    let server = Server::start_with_model(&model.path, &[]);
    let mut jpeg = Vec::new();
    image::load_from_memory(&sample_image("coffee.png"))
        .unwrap()
        .to_rgb8()
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    // What a Motion Photo appends: a video, whose bytes may look like JPEG markers.
    let trailer = [b"\0\0\0\x18ftypmp42".as_slice(), &[0xFF, 0xDA, 0x00, 0x04, 0x12, 0x34, 0xFF, 0xD8], &[7; 4096]];
    let motion_photo = [jpeg.as_slice(), &trailer.concat()].concat();
    let response = blocking_client()
        .post(server.url("/v1/remove"))
        .header("content-type", "image/jpeg")
        .body(motion_photo)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap_or_default());
}
