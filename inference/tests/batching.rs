//! Micro-batching: several images share one run when the model's batch dimension is
//! dynamic (a tiny generated model), and never when it is fixed (the real ISNet); each
//! image of a batch gets the mask a run of its own gives.

mod support;

use matte_inference::model::Model;
use support::{Server, TinyModel, load_model, model_options, post_concurrently, varied_input};

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
    assert_eq!(server.metric("matte_inference_rows_total"), 4.0, "the CPU does not pad its batches");
    assert!(runs < 4.0, "four concurrent images took {runs} runs; expected fewer");
}

#[test]
fn a_fixed_batch_model_runs_one_image_at_a_time() {
    let server = Server::start(&["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
    send_concurrently(&server, 2);
    assert_eq!(server.metric("matte_batch_size_count"), 2.0);
    assert_eq!(server.metric("matte_batch_size_sum"), 2.0);
}

#[test]
fn each_image_of_a_batch_gets_the_mask_of_its_own_run() {
    let tiny = TinyModel::generate();
    let model = load_model(&tiny.path, &["--max-batch-size", "4"]);
    assert_eq!((model.rows(1), model.rows(3)), (1, 3), "a batch computes its own images");
    batches_give_the_masks_of_single_runs(model);
}

/// As the GPU providers run batches (padded to the largest, so that the input's shape
/// never changes); here on the CPU provider.
#[test]
fn each_image_of_a_padded_batch_gets_the_mask_of_its_own_run() {
    let tiny = TinyModel::generate();
    let mut options = model_options(&tiny.path, &["--max-batch-size", "4"]);
    assert!(!options.pad_batches, "the CPU provider runs batches at their own size");
    options.pad_batches = true;
    let model = Model::load(&options).expect("the model loads");
    assert_eq!((model.rows(1), model.rows(3)), (4, 4), "every run computes the full batch");
    batches_give_the_masks_of_single_runs(model);
}

fn batches_give_the_masks_of_single_runs(mut model: Model) {
    assert_eq!(model.shape().max_batch_size, 4);
    let inputs: Vec<Vec<f32>> = (0..4).map(|seed| varied_input(&model, seed)).collect();
    let alone: Vec<Vec<f32>> =
        inputs.iter().map(|input| model.run(&[input]).expect("a single run").remove(0).values).collect();
    assert_ne!(alone[0], alone[1], "different images, different masks");

    // A full batch, then a shorter one in the same buffer: no image of the first is
    // left over in the second (padding included: its masks are not given back).
    for images in [0..4, 1..3] {
        let views: Vec<&[f32]> = inputs[images.clone()].iter().map(Vec::as_slice).collect();
        let masks = model.run(&views).expect("a batched run");
        assert_eq!(masks.len(), images.len());
        for (image, mask) in images.clone().zip(&masks) {
            assert_eq!(mask.values, alone[image], "image {image} of the batch {images:?}");
        }
    }

    let five: Vec<&[f32]> = inputs.iter().chain(&inputs[..1]).map(Vec::as_slice).collect();
    let refused = model.run(&five).expect_err("more images than the model's batch").to_string();
    assert!(refused.contains("5 images") && refused.contains("takes 4"), "{refused}");
}
