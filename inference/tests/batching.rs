//! Micro-batching: several images share one run when the model's batch dimension is
//! dynamic, or fixed at 1 by a graph that does not depend on it (freed at load: tiny
//! generated models and the real ISNet), and never when the graph mixes the images of
//! a batch or fixes it inside (the real quint8 build); each image of a batch gets the
//! mask a run of its own gives.

mod support;

use matte_inference::model::{BatchDimension, Model};
use support::{Server, TinyBatch, TinyModel, load_model, model_options, post_concurrently, varied_input};

fn send_concurrently(server: &Server, count: usize) {
    for request in post_concurrently(server, "coffee.png", count) {
        assert_eq!(request.join().unwrap().0, 200);
    }
}

#[test]
fn a_dynamic_batch_model_or_one_fixed_at_one_runs_several_images_at_once() {
    for batch in [TinyBatch::Dynamic, TinyBatch::FixedAtOne] {
        let model = TinyModel::with_batch(batch);
        let server = Server::start_with_model(&model.path, &["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
        send_concurrently(&server, 4);

        assert_eq!(server.metric("matte_images_processed_total"), 4.0);
        let runs = server.metric("matte_batch_size_count");
        assert_eq!(server.metric("matte_batch_size_sum"), 4.0);
        assert_eq!(server.metric("matte_inference_rows_total"), 4.0, "the CPU does not pad its batches");
        assert!(runs < 4.0, "{batch:?}: four concurrent images took {runs} runs; expected fewer");
        assert_eq!(server.metric("matte_max_batch_size"), 4.0);
        assert_eq!(server.metric("matte_requested_max_batch_size"), 4.0);
    }
}

#[test]
fn a_model_fixed_at_one_is_freed_only_when_batches_are_asked_for() {
    let tiny = TinyModel::with_batch(TinyBatch::FixedAtOne);
    let model = load_model(&tiny.path, &["--max-batch-size", "4"]);
    assert_eq!(model.shape().batch_dimension, BatchDimension::Freed);
    assert!(model.warmed_up_in().is_some(), "the check at load ran the freed model: no warm-up is due");
    batches_give_the_masks_of_single_runs(model);

    let model = load_model(&tiny.path, &[]);
    assert_eq!(model.shape().batch_dimension, BatchDimension::Fixed { kept_because: None });
    assert_eq!(model.shape().max_batch_size, 1);
    assert_eq!(model.warmed_up_in(), None, "loaded as it ships, the model has not run yet");
}

#[test]
fn a_model_whose_graph_mixes_the_images_of_a_batch_runs_one_image_at_a_time() {
    let tiny = TinyModel::with_batch(TinyBatch::Mixed);
    let model = load_model(&tiny.path, &["--max-batch-size", "4"]);
    assert_eq!(model.shape().max_batch_size, 1);
    let BatchDimension::Fixed { kept_because: Some(reason) } = &model.shape().batch_dimension else {
        panic!("the check on a batch of two should have kept the batch fixed: {:?}", model.shape().batch_dimension);
    };
    assert!(reason.contains("mixes the images of a batch"), "{reason}");

    let server = Server::start_with_model(&tiny.path, &["--max-batch-size", "4", "--max-batch-delay-ms", "1000"]);
    send_concurrently(&server, 2);
    assert_eq!(server.metric("matte_batch_size_count"), 2.0);
    assert_eq!(server.metric("matte_batch_size_sum"), 2.0);
    assert_eq!(server.metric("matte_max_batch_size"), 1.0, "asked for 4, the pod says it runs one");
    assert_eq!(server.metric("matte_requested_max_batch_size"), 4.0, "and what it was asked for");
}

/// ISNet as its authors ship it says `[1, 3, 1024, 1024]`; freed, a batch of two on the
/// CPU gives each image the mask of its own run, within fp16 arithmetic.
#[test]
fn the_real_isnet_is_freed_and_each_image_of_a_batch_gets_the_mask_of_its_own_run() {
    let mut model = load_model(&support::model(), &["--max-batch-size", "2"]);
    assert_eq!((model.shape().batch_dimension.clone(), model.shape().max_batch_size), (BatchDimension::Freed, 2));
    let inputs: Vec<Vec<f32>> = (0..2).map(|seed| varied_input(&model, seed)).collect();
    let alone: Vec<Vec<f32>> =
        inputs.iter().map(|input| model.run(&[input]).expect("a single run").remove(0).values).collect();
    let together = model.run(&[&inputs[0], &inputs[1]]).expect("a batch of two");
    for (image, (alone, together)) in alone.iter().zip(&together).enumerate() {
        let difference = alone.iter().zip(&together.values).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("image {image}: largest difference from its run alone {difference:.1e}");
        assert!(difference < 2e-3, "image {image} of the batch differs from its run alone by {difference}");
    }
    let between = alone[0].iter().zip(&alone[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(between > 0.1, "the two images should have different masks (they differ by {between})");
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

/// The quint8 build of ISNet had the sizes of its resizes folded into constants when it
/// was quantized, batch 1 included: freed, a batch of two fails in its first Resize, and
/// the model is loaded as it ships, one image a run, the reason kept for the log.
#[test]
fn the_real_quint8_build_fixes_its_batch_inside_and_runs_one_image_at_a_time() {
    let model = load_model(&support::setup_path("MATTE_MODEL_QUINT8"), &["--max-batch-size", "2"]);
    assert_eq!(model.shape().max_batch_size, 1);
    let BatchDimension::Fixed { kept_because: Some(reason) } = &model.shape().batch_dimension else {
        panic!("the batch of two should have failed: {:?}", model.shape().batch_dimension);
    };
    assert!(reason.contains("a batch of two fails") && reason.contains("Resize"), "{reason}");
    assert_eq!(model.warmed_up_in(), None, "the session that ran in the check is not the one loaded");
}
