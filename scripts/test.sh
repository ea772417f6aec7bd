#!/usr/bin/env bash
# The whole test suite: fetches what the tests run on (scripts/setup.sh, cached), then
# runs every crate's unit and integration tests against the real ONNX Runtime and model,
# and (tests/tests/images.rs) the images scripts/images/build.sh builds, in podman.
set -euo pipefail
cd "$(dirname "$0")/.."
# A disk that fills mid-build fails far from its cause (a compiler's "No space left on
# device" in a test that builds images): say so first. A run's target directory takes
# about 4 GB, a cold set-up up to 6 GB more while it compiles the control plane.
free_gb=$(df -Pk . | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
if ((free_gb < 10)); then
  echo "[test] warning: $free_gb GB free on this disk; the suite needs up to 10 GB (target directory and caches)" >&2
fi
bash scripts/setup.sh --with-cluster --with-images
source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"
# A run builds each crate once (CI's is a clean clone): incremental compilation's caches
# would only take disk, 13 GB of a 21 GB target directory, which once filled CI's.
export CARGO_INCREMENTAL=0
cargo test --workspace --locked "$@"
