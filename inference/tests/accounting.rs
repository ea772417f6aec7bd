//! Places and CPU workers follow the work, not the handler: a client that hangs up
//! takes its queued job out of the queue with it, so the queue never holds more than
//! its capacity, and a decode it leaves behind keeps its place until it is done.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Server, TinyModel, blocking_client, connect, sample_image, send_head};

/// Posts a photo and hangs up after `after`; returns the status if an answer came first.
fn post_and_hang_up(server: &Server, after: Duration) -> Option<u16> {
    let photo = sample_image("astronaut.png");
    let client = reqwest::blocking::Client::builder().timeout(after).build().unwrap();
    let outcome = client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo).send();
    outcome.ok().map(|response| response.status().as_u16())
}

#[test]
fn jobs_abandoned_in_the_queue_leave_it_and_it_never_exceeds_its_capacity() {
    const CAPACITY: u64 = 3;
    let server = Server::start(&["--queue-capacity", &CAPACITY.to_string()]);
    // Two patient clients keep the loop busy until the waves below are over, each
    // posting again as soon as it is answered: a wave's client always finds a run and a
    // queued image ahead of it, however fast the machine runs them.
    let waves_over = Arc::new(AtomicBool::new(false));
    let patient: Vec<std::thread::JoinHandle<u32>> = (0..2)
        .map(|_| {
            let (url, photo, waves_over) =
                (server.url("/v1/remove"), sample_image("astronaut.png"), waves_over.clone());
            std::thread::spawn(move || {
                let client = blocking_client();
                let mut served = 0;
                loop {
                    let post = client.post(&url).header("content-type", "image/png").body(photo.clone());
                    let answer = post.send().unwrap();
                    match answer.status().as_u16() {
                        // Served once its answer is read whole, as the pod counts it.
                        200 => {
                            answer.bytes().expect("the answer arrives whole");
                            served += 1;
                        }
                        // A place still held by an abandoned decode: come back shortly.
                        429 => std::thread::sleep(Duration::from_millis(50)),
                        status => panic!("a patient request got {status}"),
                    }
                    if served > 0 && waves_over.load(Ordering::SeqCst) {
                        return served;
                    }
                }
            })
        })
        .collect();

    let deepest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (deepest, done, url) = (deepest.clone(), done.clone(), server.url("/metrics"));
        std::thread::spawn(move || {
            let client = support::blocking_client();
            while !done.load(Ordering::SeqCst) {
                if let Ok(text) = client.get(&url).send().and_then(|r| r.text()) {
                    let depth = support::metric_value(&text, "matte_queue_depth") as u64;
                    deepest.fetch_max(depth, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Waves of clients that queue, then hang up while the loop is still busy.
    // Each wave waits until the server has seen the hang-up and given the place back
    // before the next one comes: the server learns of it only when the connection
    // closes, and on a busy machine the hung-up client's decode may still be running
    // (it keeps its place until done, as the next test shows).
    let busy_by = Instant::now() + Duration::from_secs(30);
    while server.metric("matte_inflight_requests") < 2.0 {
        assert!(Instant::now() < busy_by, "the patient requests never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    for wave in 1..=4 {
        let answer = post_and_hang_up(&server, Duration::from_millis(900));
        assert_eq!(answer, None, "wave {wave}: the impatient client hangs up before its answer");
        let freed_by = Instant::now() + Duration::from_secs(30);
        while server.metric(r#"matte_requests_total{outcome="client_gone"}"#) < f64::from(wave)
            || server.metric("matte_inflight_requests") >= CAPACITY as f64
        {
            assert!(Instant::now() < freed_by, "wave {wave}: the hung-up client's place was never given back");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    waves_over.store(true, Ordering::SeqCst);
    let emptied_by = Instant::now() + Duration::from_secs(60);
    let served: u32 = patient.into_iter().map(|client| client.join().unwrap()).sum();
    while server.metric("matte_queue_depth") > 0.0 || server.metric("matte_inflight_requests") > 0.0 {
        assert!(Instant::now() < emptied_by, "abandoned jobs stayed queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();

    let deepest = deepest.load(Ordering::SeqCst);
    assert!(deepest <= CAPACITY, "the queue held {deepest} jobs with a capacity of {CAPACITY}");
    // An impatient job the loop took before its client hung up is inferred all the same
    // (the run cannot be taken back), which a busy machine makes possible.
    let (served, inferred) = (f64::from(served), server.metric("matte_images_processed_total"));
    assert!(
        (served..=served + 4.0).contains(&inferred),
        "{inferred} images inferred for {served} patient and 4 abandoned requests"
    );
    assert_eq!(server.metric(r#"matte_requests_total{outcome="ok"}"#), served);
    assert_eq!(server.metric(r#"matte_requests_total{outcome="client_gone"}"#), 4.0);
}

/// A large, smooth PNG: slow to decode, small to send.
fn large_png(side: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

#[test]
fn a_decode_left_behind_by_a_client_that_hung_up_keeps_its_place_until_done() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(&model.path, &["--cpu-workers", "1", "--queue-capacity", "4"]);
    let png = large_png(7000);
    // Three uploads that hang up as soon as they are sent: their decodes run one at a
    // time on the one worker, each holding its place.
    for _ in 0..3 {
        let mut stream = connect(&server);
        send_head(&mut stream, "image/png", png.len(), "");
        stream.write_all(&png).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(stream);
    }
    // The first decode alone takes seconds; a loaded machine may take a while to
    // accept and parse the uploads, so look until one holds a place.
    let held_by = Instant::now() + Duration::from_secs(10);
    while server.metric("matte_inflight_requests") < 1.0 {
        assert!(Instant::now() < held_by, "the decodes still running hold no place");
        std::thread::sleep(Duration::from_millis(20));
    }
    let freed_by = Instant::now() + Duration::from_secs(120);
    while server.metric("matte_inflight_requests") > 0.0 {
        assert!(Instant::now() < freed_by, "places were never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.metric(r#"matte_requests_total{outcome="client_gone"}"#), 3.0);
}
