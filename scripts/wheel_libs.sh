#!/usr/bin/env bash
# Fetches wheels from PyPI into a cache and copies the shared libraries they carry (not
# the Python extension modules beside them) into one directory: what the CUDA inference
# image (scripts/images/build.sh --cuda) and the GPU benchmark's kit (bench/gpu.sh) put
# on the library path. Needs $MATTE_PYTHON (scripts/setup.sh); the wheels are kept in
# $MATTE_CACHE/downloads/cuda-wheels.
#
#   scripts/wheel_libs.sh OUT_DIR NAME==VERSION...
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: scripts/wheel_libs.sh OUT_DIR NAME==VERSION..." >&2; exit 2; }
wheels="${MATTE_CACHE:-$HOME/.cache/matte}/downloads/cuda-wheels" out=$1
shift
mkdir -p "$wheels" "$out"
echo "[wheel_libs] fetching $* from PyPI (cached in $wheels)" >&2
"$MATTE_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux2014_x86_64 -d "$wheels" "$@"
"$MATTE_PYTHON" - "$wheels" "$out" "$@" <<'PY'
import glob, os, re, sys, zipfile
wheels, out, *specs = sys.argv[1:]
for spec in specs:
    name, version = spec.split("==")
    found = sorted(glob.glob(os.path.join(wheels, f"{name.replace('-', '_')}-{version}-*.whl")))
    if not found:
        sys.exit(f"no wheel {name} {version} in {wheels}")
    with zipfile.ZipFile(found[-1]) as wheel:
        for entry in wheel.namelist():
            base = os.path.basename(entry)
            # Shared libraries only: not the Python extension modules next to them.
            if base.startswith("lib") and re.search(r"\.so(\.\d+)*$", base):
                with wheel.open(entry) as src, open(os.path.join(out, base), "wb") as dst:
                    dst.write(src.read())
PY
