#!/usr/bin/env bash
# The whole test suite: fetches what the tests run on (scripts/setup.sh, cached), then
# runs every crate's unit and integration tests against the real ONNX Runtime and model,
# and (tests/tests/images.rs) the images scripts/images/build.sh builds, in podman.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-cluster --with-images
source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"
# A run builds each crate once (CI's is a clean clone): incremental compilation's caches
# would only take disk, 13 GB of a 21 GB target directory, which once filled CI's.
export CARGO_INCREMENTAL=0
cargo test --workspace --locked "$@"
