//! What goes wrong at start-up ends the process with a message naming the cause,
//! never a panic and never a silent fallback to the CPU.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{model, setup_path};

fn run_inference(args: &[&str], ort_library: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_matte-inference"));
    command.args(["--listen", "127.0.0.1:0", "--log-format", "text"]).args(args).env_remove("ORT_DYLIB_PATH");
    if let Some(library) = ort_library {
        command.env("ORT_DYLIB_PATH", library);
    }
    // Each case fails within seconds; the limit only keeps a regression from hanging CI.
    support::output_within(command, Duration::from_secs(120))
}

fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "a panic instead of an error:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr should mention `{needle}`:\n{stderr}");
    }
}

#[test]
fn a_missing_runtime_library_is_named() {
    let model = model();
    let model = model.to_str().unwrap();
    assert_fails_with(&run_inference(&["--model", model, "--provider", "cpu"], None), &["ORT_DYLIB_PATH"]);
    let output = run_inference(&["--model", model, "--provider", "cpu"], Some("/nonexistent/libonnxruntime.so"));
    assert_fails_with(&output, &["cannot load ONNX Runtime", "/nonexistent/libonnxruntime.so"]);
}

#[test]
fn cuda_that_cannot_register_is_an_error_not_a_cpu_run() {
    // The CPU build of ONNX Runtime has no CUDA provider, just as a node without a GPU.
    let library = setup_path("ORT_DYLIB_PATH");
    let output = run_inference(&["--model", model().to_str().unwrap(), "--provider", "cuda"], library.to_str());
    assert_fails_with(&output, &["execution provider `cuda`"]);
}

#[test]
fn a_file_that_is_not_a_model_is_named() {
    let not_a_model = std::env::temp_dir().join(format!("matte-not-a-model-{}.onnx", std::process::id()));
    std::fs::write(&not_a_model, b"this is not protobuf").unwrap();
    let library = setup_path("ORT_DYLIB_PATH");
    let output = run_inference(&["--model", not_a_model.to_str().unwrap(), "--provider", "cpu"], library.to_str());
    std::fs::remove_file(&not_a_model).unwrap();
    assert_fails_with(&output, &["cannot load model", not_a_model.to_str().unwrap()]);
}

/// The pod's memory is sized for inputs of `--input-size` squared: a model fixing a
/// larger input would hold more for every queued image than that bound, and be killed
/// for memory under load rather than refused at start-up.
#[test]
fn a_model_whose_input_is_larger_than_the_memory_is_sized_for_is_refused() {
    let library = setup_path("ORT_DYLIB_PATH");
    let model = model();
    let args = ["--model", model.to_str().unwrap(), "--provider", "cpu", "--input-size", "512"];
    let output = run_inference(&args, library.to_str());
    assert_fails_with(&output, &["1024×1024", "the 512×512 of --input-size", "spec.model.inputSize"]);
    // A side no model takes is refused as a flag, before anything loads.
    let output = run_inference(&["--model", model.to_str().unwrap(), "--input-size", "0"], library.to_str());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a usage error; stderr:\n{stderr}");
    assert!(stderr.contains("--input-size") && stderr.contains("32..=4096"), "{stderr}");
}
