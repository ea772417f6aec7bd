//! Micro-batching: several images share one run when the model's batch dimension is
//! dynamic (a tiny generated model), and never when it is fixed (the real ISNet).

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Server, post_concurrently, setup_path};

fn tiny_dynamic_batch_model() -> PathBuf {
    let path = std::env::temp_dir().join(format!("matte-tiny-{}.onnx", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_model.py");
    let status = Command::new(setup_path("MATTE_PYTHON")).arg(script).arg(&path).status().unwrap();
    assert!(status.success(), "generating the tiny model failed");
    path
}

fn send_concurrently(server: &Server, count: usize) {
    for request in post_concurrently(server, "coffee.png", count) {
        assert_eq!(request.join().unwrap().0, 200);
    }
}

#[test]
fn a_dynamic_batch_model_runs_several_images_at_once() {
    let model = tiny_dynamic_batch_model();
    let server = Server::start_with_model(&model, &["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
    send_concurrently(&server, 4);
    std::fs::remove_file(&model).unwrap();

    assert_eq!(server.metric("matte_images_processed_total"), 4.0);
    let runs = server.metric("matte_batch_size_count");
    assert_eq!(server.metric("matte_batch_size_sum"), 4.0);
    assert!(runs < 4.0, "four concurrent images took {runs} runs; expected fewer");
}

#[test]
fn a_fixed_batch_model_runs_one_image_at_a_time() {
    let server = Server::start(&["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
    send_concurrently(&server, 2);
    assert_eq!(server.metric("matte_batch_size_count"), 2.0);
    assert_eq!(server.metric("matte_batch_size_sum"), 2.0);
}
