//! Work nobody waits for is never inferred: a client that hangs up while queued, and a
//! request whose deadline passes while it waits (504), both leave the model alone.

mod support;

use std::time::{Duration, Instant};

use support::{Server, blocking_client, sample_image};

fn post_photo(url: String, timeout: Duration) -> std::thread::JoinHandle<Result<u16, String>> {
    let photo = sample_image("astronaut.png");
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(timeout).build().unwrap();
        client
            .post(url)
            .header("content-type", "image/png")
            .body(photo)
            .send()
            .map(|response| response.status().as_u16())
            .map_err(|e| e.to_string())
    })
}

#[test]
fn a_client_that_hangs_up_while_queued_is_not_inferred() {
    let server = Server::start(&[]);
    let first = post_photo(server.url("/v1/remove"), Duration::from_secs(300));
    // The loop records a job's queue wait as it takes it into a run: once it has, the
    // first is being inferred and the impatient ones queue behind it.
    let running_by = Instant::now() + Duration::from_secs(60);
    while server.metric("matte_queue_wait_seconds_count") < 1.0 {
        assert!(Instant::now() < running_by, "the first request never reached the model");
        std::thread::sleep(Duration::from_millis(20));
    }
    let impatient: Vec<_> = (0..2).map(|_| post_photo(server.url("/v1/remove"), Duration::from_millis(500))).collect();
    for client in impatient {
        assert!(client.join().unwrap().is_err(), "the impatient clients time out and hang up");
    }
    assert_eq!(first.join().unwrap(), Ok(200));
    // Give the loop a moment to pass over the abandoned jobs.
    let check = blocking_client().post(server.url("/v1/remove")).header("content-type", "image/png");
    let checked = check.body(sample_image("astronaut.png")).send().unwrap();
    assert_eq!(checked.status(), 200);
    // Read whole, or it could be counted as its client gone.
    checked.bytes().expect("the answer arrives whole");
    assert_eq!(server.metric("matte_images_processed_total"), 2.0, "only the two answered requests were inferred");
    assert_eq!(server.metric(r#"matte_requests_total{outcome="client_gone"}"#), 2.0);
}

#[test]
fn a_request_past_its_deadline_gets_504_and_is_not_inferred() {
    let server = Server::start(&["--request-timeout-seconds", "1.0"]);
    let requests: Vec<_> = (0..3).map(|_| post_photo(server.url("/v1/remove"), Duration::from_secs(300))).collect();
    let mut statuses: Vec<u16> = requests.into_iter().map(|r| r.join().unwrap().unwrap()).collect();
    statuses.sort();
    // One image takes well over a second on a CPU, so whoever waits behind it expires.
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses.contains(&504), "{statuses:?}");
    let expired = statuses.iter().filter(|&&s| s == 504).count() as f64;
    assert_eq!(server.metric(r#"matte_requests_total{outcome="deadline_exceeded"}"#), expired);
    assert_eq!(server.metric("matte_images_processed_total"), 3.0 - expired);
}
