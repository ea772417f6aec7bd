//! SIGTERM while requests are queued: the pod turns unready at once, still admits work
//! for the drain delay (while load balancers catch up), then refuses new work with
//! 503, completes every request it accepted, and exits 0.

mod support;

use std::time::{Duration, Instant};

use support::{Server, blocking_client, post_concurrently, sample_image};

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
    let signalled = Instant::now();

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
    let during_delay = post_concurrently(&server, "astronaut.png", 1);
    std::thread::sleep((signalled + Duration::from_millis(2500)).saturating_duration_since(Instant::now()));
    let late = client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo).send().unwrap();
    assert_eq!(late.status(), 503, "new work is refused while draining");
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
