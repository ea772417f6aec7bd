//! Clients too slow to be served cannot hold the pod: headers must arrive within the
//! header timeout, an upload that trickles or stalls loses its place after the
//! upload grace, an answer its client does not take holds its place until the client
//! is cut at the write timeout, and a drain closes whatever is still open at its
//! deadline. A slow upload that is served is no queue wait.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Server, TinyModel, blocking_client, connect, noisy_png, read_head, sample_image, send_head};

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
    // Not before the flag's second, and well before the default's ten: the flag is read.
    assert!(closed_after >= Duration::from_millis(900), "cut off after {closed_after:?}, before the time-out");
    assert!(closed_after < Duration::from_secs(8), "cut off after {closed_after:?}: the flag's 1 s was not used");
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
    // Not before the flag's grace, and before the default's 5 s: the flag is read.
    assert!(held >= Duration::from_secs(2), "the place was taken after {held:?}, within the grace");
    assert!(held < Duration::from_millis(4_500), "the place was held for {held:?}: the flag's 2 s was not used");

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

#[test]
fn an_answer_its_client_does_not_take_holds_its_place_until_the_client_is_cut() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(
        &model.path,
        &["--queue-capacity", "1", "--write-timeout-seconds", "2", "--max-body-bytes", "33554432"],
    );
    // A client that takes the head of its answer and nothing more, through a receive
    // buffer too small for the answer (17 MB: a 2048² cut-out of noise).
    let photo = noisy_png(2048, 2048);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let address: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    socket.connect(&address.into()).unwrap();
    let mut parked: std::net::TcpStream = socket.into();
    parked.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send_head(&mut parked, "image/png", photo.len(), "");
    parked.write_all(&photo).unwrap();
    let head = read_head(&mut parked);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let client = blocking_client();
    let small = sample_image("coffee.png");
    let post = || client.post(server.url("/v1/remove")).header("content-type", "image/png").body(small.clone()).send();
    let refused = post().expect("answered");
    assert_eq!(refused.status(), 429, "the one place is still the unread answer's");
    let parked_at = Instant::now();
    let served = loop {
        let answer = post().expect("answered");
        let status = answer.status();
        if status == 200 {
            // Read whole, or it could be counted as its client gone.
            answer.bytes().expect("the answer arrives whole");
        }
        if status == 200 || parked_at.elapsed() > Duration::from_secs(20) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(served, 200, "the place is free once its client is cut");
    // Cut with most of its answer unsent, it was not served: counted as its client gone.
    assert_eq!(server.metric(r#"matte_requests_total{outcome="client_gone"}"#), 1.0, "the unread answer");
    eprintln!("an unread answer held its place for {:.1?} (write timeout 2 s)", parked_at.elapsed());
    let mut rest = Vec::new();
    let _ = parked.read_to_end(&mut rest);
    assert!(rest.len() < 17_000_000, "the unread answer was cut, not sent whole: {} bytes", rest.len());
}

#[test]
fn an_upload_at_the_pace_but_past_the_request_deadline_is_cut_at_the_deadline() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(
        &model.path,
        &[
            "--queue-capacity",
            "1",
            "--request-timeout-seconds",
            "3",
            "--upload-grace-seconds",
            "1",
            "--min-upload-bytes-per-second",
            "1000",
        ],
    );
    // 48 kB at 3.2 kB/s, three times the minimum pace: 15 s, far past the 3 s deadline.
    let body = vec![0u8; 48_000];
    let mut slow = connect(&server);
    send_head(&mut slow, "image/png", body.len(), "");
    slow.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for piece in body.chunks(320) {
        let mut buffer = [0u8; 1024];
        if let Ok(read) = slow.read(&mut buffer) {
            answer.extend_from_slice(&buffer[..read]);
            break;
        }
        if slow.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = started.elapsed();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        answer.extend_from_slice(read_head(&mut slow).as_bytes());
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(cut_after < Duration::from_secs(6), "cut at the 3 s deadline, not after the whole upload: {cut_after:?}");
    assert_eq!(server.metric("matte_inflight_requests"), 0.0, "its place is free");
}

/// The queue wait (its header, and the autoscaler's inputs: the histogram and the
/// oldest age) is the image's wait for the GPU: counted from its arrival, a slow upload
/// read as seconds in the queue, and the autoscaler started pods for clients on poor
/// links, or trickling on purpose.
#[test]
fn a_slow_upload_is_no_wait_in_the_queue() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(&model.path, &["--min-upload-bytes-per-second", "1000"]);
    let image = sample_image("coffee.png");
    let mut slow = connect(&server);
    send_head(&mut slow, "image/png", image.len(), "");
    // Over two seconds, above the minimum pace.
    let started = Instant::now();
    let pieces = 10;
    for piece in image.chunks(image.len().div_ceil(pieces)) {
        slow.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let head = read_head(&mut slow);
    let uploaded_in = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let waited: f64 = head
        .lines()
        .find_map(|line| line.strip_prefix("x-matte-queue-wait-seconds: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("a queue-wait header: {head}"));
    assert!(uploaded_in >= Duration::from_secs(2), "{uploaded_in:?}");
    assert!(waited < 1.0, "a {uploaded_in:?} upload reported as {waited} s of queue wait");
    let histogram_sum = server.metric("matte_queue_wait_seconds_sum");
    assert!(histogram_sum < 1.0, "the histogram counted the upload: {histogram_sum} s");
}
