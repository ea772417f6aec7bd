//! Health tells the truth: an inference loop that fails every run turns the pod
//! unready (no new work is sent to it) and not live (the kubelet restarts it after
//! its longer liveness threshold), instead of staying Ready while it serves nothing
//! but errors.

mod support;

use support::{Server, blocking_client, failing_model, sample_image};

#[test]
fn a_loop_that_always_fails_turns_the_pod_unready_then_not_live() {
    let model = failing_model();
    let server = Server::start_with_model(&model.path, &[]);
    let client = blocking_client();
    let photo = sample_image("coffee.png");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response =
            client.post(server.url("/v1/remove")).header("content-type", "image/png").body(photo.clone()).send();
        let response = response.unwrap();
        let status = response.status().as_u16();
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
    let live = client.get(server.url("/healthz")).send().unwrap();
    assert_eq!(live.status(), 503, "and the pod asks to be restarted");
    let body: serde_json::Value = live.json().unwrap();
    assert_eq!(body["error"]["code"], "not_live");
}
