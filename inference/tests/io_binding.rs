//! `--io-binding`: runs of one image through an IoBinding to memory allocated once give
//! the masks of plain runs, image after image (the bound input is rewritten each run,
//! never stale), on the generated tiny model and on the real ISNet. On the CPU provider
//! here; on a GPU the same path stages the input in page-locked memory (`bench/gpu.sh`
//! runs it there).

mod support;

use std::path::Path;

use matte_inference::model::{Mask, Model};
use support::{TinyModel, load_model, model_options, setup_path, varied_input as input};

fn load(model: &Path, io_binding: bool) -> Model {
    load_model(model, &["--io-binding", &io_binding.to_string()])
}

fn run(model: &mut Model, input: &[f32]) -> Mask {
    model.run(&[input]).expect("the run succeeds").remove(0)
}

#[test]
fn bound_runs_give_the_masks_of_plain_runs_image_after_image() {
    let tiny = TinyModel::generate();
    let (mut plain, mut bound) = (load(&tiny.path, false), load(&tiny.path, true));
    let mut previous: Option<Vec<f32>> = None;
    for seed in 0..3 {
        let input = input(&plain, seed);
        let (expected, actual) = (run(&mut plain, &input), run(&mut bound, &input));
        assert_eq!((actual.width, actual.height), (expected.width, expected.height));
        assert_eq!(actual.values, expected.values, "image {seed}");
        // mask = sigmoid(mean over RGB): the bound run saw this image, not the last one.
        let side = 32 * 32;
        let mean = (input[0] + input[side] + input[2 * side]) / 3.0;
        assert!((actual.values[0] - 1.0 / (1.0 + (-mean).exp())).abs() < 1e-6, "image {seed}");
        assert_ne!(previous.as_ref(), Some(&actual.values), "a new image, a new mask");
        previous = Some(actual.values);
    }
}

#[test]
fn the_real_model_gives_the_same_mask_bound_or_not() {
    let model = setup_path("MATTE_MODEL");
    let (mut plain, mut bound) = (load(&model, false), load(&model, true));
    let input = input(&plain, 7);
    let (expected, actual) = (run(&mut plain, &input), run(&mut bound, &input));
    assert_eq!((actual.width, actual.height), (expected.width, expected.height));
    let worst = actual.values.iter().zip(&expected.values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-5, "largest difference {worst}");
}

#[test]
fn cuda_graphs_are_refused_off_the_cuda_provider() {
    let tiny = TinyModel::generate();
    let refused = Model::load(&model_options(&tiny.path, &["--cuda-graph", "true"]))
        .err()
        .expect("refused on the CPU provider")
        .to_string();
    assert!(refused.contains("--cuda-graph") && refused.contains("--provider cuda"), "{refused}");
}

#[test]
fn cuda_graphs_are_refused_with_batches() {
    let tiny = TinyModel::generate();
    let refused = Model::load(&model_options(&tiny.path, &["--cuda-graph", "true", "--max-batch-size", "4"]))
        .err()
        .expect("refused: a graph replays runs of one image")
        .to_string();
    assert!(refused.contains("--cuda-graph") && refused.contains("--max-batch-size 1"), "{refused}");
}
