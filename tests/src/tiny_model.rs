//! The tiny generated model of the inference tests (32×32 input, a mean and a sigmoid,
//! a dynamic batch unless asked otherwise): it loads and infers in milliseconds, for
//! tests about the servers rather than the model.
//!
//! One definition for every test crate: the inference server's tests include this file
//! by path (they cannot depend on this crate). It needs `setup_path` in the including
//! module's parent.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::setup_path;

/// The script writing the model, found from any crate of the workspace: every crate's
/// manifest directory is a child of the workspace's root.
const GENERATOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference/tests/fixtures/tiny_model.py");

/// A model file of its own for each caller, removed when this is dropped.
pub struct TinyModel {
    pub path: PathBuf,
}

/// How the tiny model states its batch dimension (see the generator's docstring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyBatch {
    Dynamic,
    /// Fixed at 1 in the input and output, free inside.
    FixedAtOne,
    /// Fixed at 1, and a graph that mixes the images of a batch.
    Mixed,
}

impl TinyModel {
    /// Writes a new model with a dynamic batch.
    pub fn generate() -> TinyModel {
        TinyModel::with_batch(TinyBatch::Dynamic)
    }

    /// Writes a new model with the setup's Python (`MATTE_PYTHON`), which has `onnx`.
    pub fn with_batch(batch: TinyBatch) -> TinyModel {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("matte-tiny-{}-{n}.onnx", std::process::id()));
        let batch = match batch {
            TinyBatch::Dynamic => "dynamic",
            TinyBatch::FixedAtOne => "fixed",
            TinyBatch::Mixed => "mixed",
        };
        let status = Command::new(setup_path("MATTE_PYTHON")).arg(GENERATOR).arg(&path).arg(batch).status().unwrap();
        assert!(status.success(), "generating the tiny model with {GENERATOR} failed");
        TinyModel { path }
    }
}

impl Drop for TinyModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
