//! SIGTERM while requests are queued: the pod turns unready at once, still admits work
//! for the drain delay (while load balancers catch up), then refuses new work with
//! 503, completes every request it accepted, and exits 0.

mod support;

use std::time::{Duration, Instant};

use support::{Fault, Server, blocking_client, faulty_model, post_concurrently, sample_image};

#[test]
fn sigterm_finishes_every_accepted_request_then_exits_cleanly() {
    let mut server = Server::start(&["--queue-capacity", "8", "--drain-delay-seconds", "2"]);
    let photo = sample_image("astronaut.png");

    let accepted = post_concurrently(&server, "astronaut.png", 3);

    let admitted_by = Instant::now() + Duration::from_secs(60);
    while server.metric("matte_inflight_requests") < 3.0 {
        assert!(Instant::now() < admitted_by, "the three requests were never admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.sigterm();

    let client = blocking_client();
    let unready_by = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client.get(server.url("/readyz")).send().unwrap().status();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < unready_by, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The drain delay runs from when the server handled the signal, which a machine busy
    // with the three runs can make a while after it was sent, and at the latest when it
    // was seen unready.
    let seen_unready = Instant::now();
    let during_delay = post_concurrently(&server, "astronaut.png", 1);
    std::thread::sleep((seen_unready + Duration::from_millis(2500)).saturating_duration_since(Instant::now()));
    let late = client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo).send().unwrap();
    assert_eq!(late.status(), 503, "new work is refused while draining");
    assert_eq!(late.headers()["retry-after"], "1", "another pod takes the retry at once");
    let body: serde_json::Value = late.json().unwrap();
    assert_eq!(body["error"]["code"], "draining");

    for request in accepted.into_iter().chain(during_delay) {
        let (status, bytes) = request.join().unwrap();
        assert_eq!(status, 200, "an accepted request was lost in the drain");
        assert!(bytes > 1000);
    }
    let exit = server.wait_for_exit(Duration::from_secs(60));
    assert!(exit.success(), "exit status {exit:?}");
}

/// A warm-up that never ends: the pod says it is still loading, and on SIGTERM exits
/// at once without waiting for it.
#[test]
fn sigterm_during_a_warm_up_that_never_ends_exits_at_once_and_never_turns_ready() {
    let model = faulty_model(Fault::Hang);
    let log_path = model.path.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut server = Server::spawn_with_log(&model.path, &[], "info", log.into());
    let client = blocking_client();
    // Listening while the warm-up runs: not ready, and saying so.
    let started = Instant::now();
    let not_ready = loop {
        if let Ok(response) = client.get(server.url("/readyz")).send() {
            break response;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server never listened");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(not_ready.status(), 503);
    assert_eq!(server.metric("matte_ready"), 0.0);
    // Not silent while it waits: at 10 s it says the model is still loading.
    let said_by = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path).unwrap_or_default().contains("still loading") {
        assert!(Instant::now() < said_by, "nothing said of a load 30 s long");
        std::thread::sleep(Duration::from_millis(200));
    }

    server.sigterm();
    // The warm-up would never end; the process must not wait for it.
    let status = server.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "a drain with nothing accepted exits 0: {status:?}");
    let _ = std::fs::remove_file(&log_path);
}
