//! Micro-batching: several images share one run when the model's batch dimension is
//! dynamic (a tiny generated model), and never when it is fixed (the real ISNet).

mod support;

use support::{Server, TinyModel, post_concurrently};

fn send_concurrently(server: &Server, count: usize) {
    for request in post_concurrently(server, "coffee.png", count) {
        assert_eq!(request.join().unwrap().0, 200);
    }
}

#[test]
fn a_dynamic_batch_model_runs_several_images_at_once() {
    let model = TinyModel::generate();
    let server = Server::start_with_model(&model.path, &["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
    send_concurrently(&server, 4);

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
