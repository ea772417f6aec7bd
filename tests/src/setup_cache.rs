//! The files `scripts/setup.sh` fetches into its cache (the ONNX Runtime library, the
//! models, the sample photographs), found through the environment it writes
//! (`~/.cache/matte/env.sh`, which `scripts/test.sh` sources).
//!
//! One definition for every test crate: the operator's and the inference server's
//! tests include this file by path (they cannot depend on this crate).

use std::path::PathBuf;

/// A path from the setup's environment, which must exist.
pub fn setup_path(variable: &str) -> PathBuf {
    let value = std::env::var_os(variable).unwrap_or_else(|| {
        panic!(
            "{variable} is not set: run `scripts/setup.sh` and `source ~/.cache/matte/env.sh`, or use scripts/test.sh"
        )
    });
    let path = PathBuf::from(value);
    assert!(path.exists(), "{variable} points at {}, which does not exist", path.display());
    path
}

/// A sample photograph from the setup cache, e.g. `astronaut.png`.
pub fn sample_image(name: &str) -> Vec<u8> {
    let path = setup_path("MATTE_SAMPLE_IMAGES").join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("sample image {}: {error}", path.display()))
}
