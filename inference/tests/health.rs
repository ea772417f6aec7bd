//! Health tells the truth: an inference loop that fails every run, or hangs in one, turns
//! the pod unready (no new work is sent to it) and not live (the kubelet restarts it
//! after its longer liveness threshold, and the restart exits as a failure that says
//! why), instead of staying Ready while it serves nothing but errors, or nothing at all.

mod support;

use std::time::{Duration, Instant};

use support::{Fault, Server, blocking_client, faulty_model, sample_image};

#[test]
fn a_loop_that_always_fails_turns_the_pod_unready_then_not_live() {
    fails_until_unready_then_not_live(Fault::Fail);
}

/// A run that succeeds with a mask of NaN (a model overflowing in half precision) is a
/// failed run: its cut-out would be blank, answered 200 and counted served.
#[test]
fn a_loop_whose_masks_are_not_numbers_fails_like_one_that_errors() {
    fails_until_unready_then_not_live(Fault::NotANumber);
}

fn fails_until_unready_then_not_live(fault: Fault) {
    let model = faulty_model(fault);
    let mut server = Server::start_with_model(&model.path, &[]);
    let client = blocking_client();
    let photo = sample_image("coffee.png");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response =
            client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo.clone()).send();
        let response = response.unwrap();
        let status = response.status().as_u16();
        assert_ne!(status, 200, "a run that went wrong answered as if it had served: {statuses:?}");
        let body: serde_json::Value = response.json().expect("a JSON error");
        if status == 500 {
            assert_eq!(body["error"]["code"], "internal");
            assert!(!body.to_string().contains("Reshape"), "the runtime's error stays in the log: {body}");
        }
        statuses.push(status);
        if status == 503 {
            break;
        }
    }
    assert_eq!(statuses.first(), Some(&500), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "failing runs stop the pod taking work: {statuses:?}");
    assert_eq!(client.get(server.url("/readyz")).send().unwrap().status(), 503);
    assert_eq!(server.metric("matte_ready"), 0.0, "its gauge says what /readyz says");
    // Failed runs compute no rows: counted, a pod failing at once read as a fast one in
    // the pace the autoscaler reads (rows over the runs' seconds).
    assert_eq!(server.metric("matte_inference_rows_total"), 0.0);
    assert!(server.metric("matte_inference_seconds_count") > 0.0, "the runs are timed");
    let live = client.get(server.url("/healthz")).send().unwrap();
    assert_eq!(live.status(), 503, "and the pod asks to be restarted");
    let body: serde_json::Value = live.json().unwrap();
    assert_eq!(body["error"]["code"], "not_live");
    // The kubelet's restart: a failure, saying why, not a pod that completed.
    server.sigterm();
    let exit = server.wait_for_exit(Duration::from_secs(60));
    assert_eq!(exit.code(), Some(1), "{exit:?}");
}

/// Polls `path` until it answers `status`; returns the JSON body of that answer.
fn wait_for_status(server: &Server, path: &str, status: u16, within: Duration) -> serde_json::Value {
    let client = blocking_client();
    let start = Instant::now();
    loop {
        let response = client.get(server.url(path)).send().expect("the server answers its probes");
        if response.status().as_u16() == status {
            return response.json().unwrap_or(serde_json::Value::Null);
        }
        assert!(start.elapsed() < within, "{path} did not answer {status} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_loop_stuck_in_one_run_turns_the_pod_unready_then_not_live() {
    let model = faulty_model(Fault::Stuck);
    let server = Server::start_with_model(&model.path, &["--request-timeout-seconds", "2"]);
    let client = blocking_client();
    assert_eq!(client.get(server.url("/healthz")).send().unwrap().status(), 200, "live after warm-up");
    assert_eq!(server.metric("matte_ready"), 1.0);

    // The request that hangs the loop: its answer never comes, so it is sent aside and
    // given up with the server.
    let url = server.url("/v1/remove");
    let photo = sample_image("coffee.png");
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let _ = client.post(url).header("content-type", "image/png").body(photo).send();
    });

    // Past the request timeout (2 s) the pod takes no new work...
    let unready = wait_for_status(&server, "/readyz", 503, Duration::from_secs(60));
    assert_eq!(unready["error"]["code"], "unhealthy", "{unready}");
    assert_eq!(server.metric("matte_ready"), 0.0, "its gauge says what /readyz says");
    let refused = client
        .post(server.url("/v1/remove"))
        .header("content-type", "image/png")
        .body(sample_image("coffee.png"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503, "new work is refused while the loop hangs");
    // ...and past twice the request timeout it asks to be restarted.
    let not_live = wait_for_status(&server, "/healthz", 503, Duration::from_secs(60));
    assert_eq!(not_live["error"]["code"], "not_live", "{not_live}");
}
