//! Clients too slow to be served cannot hold the pod: headers must arrive within the
//! header timeout, an upload that trickles or stalls loses its place after the
//! upload grace, and a drain closes whatever is still open at its deadline.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Server, TinyModel, blocking_client, connect, read_head, sample_image, send_head};

/// Sends `bytes` one at a time, `gap` apart, until the server answers or closes the
/// connection or `limit` passes; returns the answer's head ("" if none came) and how
/// long the server let the upload go on.
fn trickle(stream: &mut std::net::TcpStream, bytes: &[u8], gap: Duration, limit: Duration) -> (String, Duration) {
    stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in bytes.iter().cycle() {
        let mut buffer = [0u8; 1024];
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                break;
            }
            Err(_) => {}
        }
        if started.elapsed() > limit || stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(gap);
    }
    let held = started.elapsed();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if !answer.is_empty() && !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        answer.extend_from_slice(read_head(stream).as_bytes());
    }
    (String::from_utf8_lossy(&answer).into_owned(), held)
}

#[test]
fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_timeout() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(&model.path, &["--header-read-timeout-seconds", "1"]);
    let mut stream = connect(&server);
    stream.write_all(b"POST /v1/remove HTTP/1.1\r\nHost: test\r\nX-Padding: ").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        let mut answer = [0u8; 256];
        // End of stream, or any answer at all, means the server gave up on us.
        let answered = stream.read(&mut answer).is_ok();
        if answered || stream.write_all(b"a").is_err() {
            break Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let closed_after = closed_after.expect("the connection was still open after 30 s of trickled headers");
    eprintln!("trickled headers were cut off after {closed_after:.1?} (header timeout 1 s)");
}

#[test]
fn a_trickling_upload_loses_its_place_after_the_grace() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(
        &model.path,
        &["--queue-capacity", "1", "--upload-grace-seconds", "2", "--min-upload-bytes-per-second", "1000"],
    );
    let photo = sample_image("coffee.png");
    let mut slow = connect(&server);
    send_head(&mut slow, "image/png", photo.len(), "");
    let admitted_by = Instant::now() + Duration::from_secs(30);
    while server.metric("matte_inflight_requests") < 1.0 {
        assert!(Instant::now() < admitted_by, "the slow upload was never admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One byte every 100 ms: 10 bytes/s, far below the minimum rate.
    let (head, held) = trickle(&mut slow, &photo, Duration::from_millis(100), Duration::from_secs(60));
    assert!(head.is_empty() || head.starts_with("HTTP/1.1 408"), "{head:?} after {held:?}");
    eprintln!("a trickling upload held its place for {held:.1?} (grace 2 s)");
    assert!(held < Duration::from_secs(30), "the place was held for {held:?}");

    let next = blocking_client().post(server.url("/v1/remove")).header("content-type", "image/png").body(photo);
    assert_eq!(next.send().unwrap().status(), 200, "the place was given back");
    assert_eq!(server.metric(r#"matte_requests_total{outcome="upload_too_slow"}"#), 1.0);
}

#[test]
fn a_drain_cuts_off_clients_that_never_finish_their_request() {
    let model = TinyModel::generate();
    let mut server = Server::start_with_model(
        &model.path,
        &["--drain-delay-seconds", "0", "--drain-timeout-seconds", "2", "--header-read-timeout-seconds", "600"],
    );
    // One client stuck in its headers, one stuck in its upload.
    let mut in_headers = connect(&server);
    in_headers.write_all(b"POST /v1/remove HTTP/1.1\r\nHost: test\r\n").unwrap();
    let mut in_upload = connect(&server);
    send_head(&mut in_upload, "image/png", 1_000_000, "");
    in_upload.write_all(b"\x89PNG").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    server.sigterm();
    let exit = server.wait_for_exit(Duration::from_secs(60));
    let took = started.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    eprintln!("drained with two stuck clients in {took:.1?} (drain timeout 2 s)");
    assert!(took < Duration::from_secs(30), "the drain took {took:?}");
    drop((in_headers, in_upload));
}
