#!/usr/bin/env bash
# Side-by-side throughput and latency, in one run, on this machine's CPU, of:
#   raw     bare ONNX Runtime session.run on the model (bench/raw_session.py)
#   matte   matte-inference over HTTP, driven by matte-load
#   rembg   `rembg s` (PyPI rembg[cpu,cli], session dis_custom on the same model file)
# All three use the same ONNX Runtime build and the same thread count.
# Figures go to out/bench/*.json and a table on stdout.
#
#   bench/inference.sh                 # 24 requests at concurrency 4, the sample photos (≤ 640 px)
#   PHOTOS=large bench/inference.sh    # the same photos enlarged to 12 MP phone-camera JPEGs
#   REQUESTS=48 CONCURRENCY=8 bench/inference.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
bash scripts/setup.sh
source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"

threads="${THREADS:-$(nproc)}"
requests="${REQUESTS:-24}"
concurrency="${CONCURRENCY:-4}"
photos="${PHOTOS:-small}"
results="out/bench/$photos"
mkdir -p "$results"

rembg_venv="$MATTE_CACHE/rembg-venv"
# Stamped with both versions: all three runners use the same ONNX Runtime build.
rembg_stamp="$rembg_venv/.rembg-$REMBG_VERSION-onnxruntime-$ONNXRUNTIME_VERSION"
if [[ ! -f "$rembg_stamp" ]]; then
  python3 -m venv "$rembg_venv"
  "$rembg_venv/bin/pip" install --quiet --disable-pip-version-check \
    "rembg[cpu,cli]==$REMBG_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION"
  touch "$rembg_stamp"
fi
cargo build --release --locked -p matte-inference -p matte-load

case "$photos" in
  small) images=("$MATTE_SAMPLE_IMAGES"/{astronaut.png,coffee.png,chelsea.png,rocket.jpg}) ;;
  large)
    # 4000×3000 JPEGs, the size of a phone photo; both servers return them full size.
    "$rembg_venv/bin/python" - "$MATTE_SAMPLE_IMAGES" "$results" <<'PY'
import sys
from PIL import Image
for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
    image = Image.open(f"{sys.argv[1]}/{name}").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    image.save(f"{sys.argv[2]}/{name.split('.')[0]}-12mp.jpg", quality=90)
PY
    images=("$results"/*-12mp.jpg) ;;
  *) echo "PHOTOS is small or large" >&2; exit 2 ;;
esac

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL PID
  for _ in $(seq 1 900); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited during start-up" >&2; return 1; }
    sleep 0.2
  done
  echo "no answer from $1" >&2; return 1
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
load() { ./target/release/matte-load --concurrency "$concurrency" --requests "$requests" --warmup 2 --json "$@"; }

echo "== raw session.run ($threads threads)" >&2
"$MATTE_PYTHON" bench/raw_session.py "$MATTE_MODEL" --threads "$threads" --runs "$requests" >"$results/raw.json"

echo "== matte-inference" >&2
port=$(free_port)
./target/release/matte-inference --model "$MATTE_MODEL" --provider cpu --intra-threads "$threads" \
  --listen "127.0.0.1:$port" --queue-capacity 64 --max-dimension 4096 --log-format text 2>"$results/matte-server.log" &
server=$!
trap 'stop $server' EXIT
wait_for "http://127.0.0.1:$port/readyz" $server
load --url "http://127.0.0.1:$port" "${images[@]}" >"$results/matte.json"
stop $server

echo "== rembg s" >&2
port=$(free_port)
# rembg only loads custom models from under its home directory.
U2NET_HOME="$(dirname "$MATTE_MODEL")" OMP_NUM_THREADS="$threads" "$rembg_venv/bin/rembg" s --host 127.0.0.1 --port "$port" --no-ui \
  >"$results/rembg-server.log" 2>&1 &
server=$!
trap 'stop $server' EXIT
wait_for "http://127.0.0.1:$port/api" $server
load --url "http://127.0.0.1:$port/api/remove" --multipart file --form model=dis_custom \
  --query "extras={\"model_path\": \"$MATTE_MODEL\"}" "${images[@]}" >"$results/rembg.json"
stop $server

echo "photos: $photos, $requests requests at concurrency $concurrency, $threads threads"
python3 - "$results" "$concurrency" <<'PY'
import json, sys
results, concurrency = sys.argv[1], sys.argv[2]
raw = json.load(open(f"{results}/raw.json"))
print(f"{'system':<22}{'images/s':>10}{'p50 s':>9}{'p95 s':>9}{'p99 s':>9}{'ok':>6}")
# raw_session.py gives a mean run time, not percentiles: shown as such.
print(f"{'raw session.run':<22}{raw['throughput_images_per_second']:>10.3f}{raw['mean_run_seconds']:>9.2f}  (mean, not p50)")
served = {}
for name in ("matte", "rembg"):
    summary = json.load(open(f"{results}/{name}.json"))
    latency = summary["latency_seconds"] or {}
    served[name] = summary
    print(f"{name + ' @ c=' + concurrency:<22}{summary['throughput_images_per_second']:>10.3f}"
          f"{latency.get('p50', float('nan')):>9.2f}{latency.get('p95', float('nan')):>9.2f}"
          f"{latency.get('p99', float('nan')):>9.2f}{summary['ok']:>6}")
matte, rembg = served["matte"], served["rembg"]
print(f"matte / raw throughput:   {matte['throughput_images_per_second'] / raw['throughput_images_per_second']:.3f}")
print(f"matte / rembg throughput: {matte['throughput_images_per_second'] / rembg['throughput_images_per_second']:.3f}")
print(f"p95 latency matte / rembg: {matte['latency_seconds']['p95'] / rembg['latency_seconds']['p95']:.3f}")
PY
