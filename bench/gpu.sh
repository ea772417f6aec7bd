#!/usr/bin/env bash
# The pod at the GPU's limit, in one script that fits in a few minutes of a GPU machine.
#
#   bench/gpu.sh prepare KIT     # here: release binaries, ISNet fp16 and fp32,
#                                # 12 MP JPEGs and the small sample photos
#                                # and onnxruntime-gpu's libraries (PyPI) in KIT/lib
#   bench/gpu.sh run KIT         # on the GPU machine (nvidia-smi on PATH, CUDA 13 and
#                                # cuDNN 9 on the library path)
#   bench/gpu.sh run KIT cuda-fp16-graph ...   # only the variants named
#   CPU_WORKERS=8 bench/gpu.sh run KIT cuda-fp16   # the pod's --cpu-workers (default: every core)
#   bench/gpu.sh run KIT --cpu   # the same steps on this CPU, to check the script
#
# For each of CUDA fp32 (the float32 build of the model, bench/fp32_model.py), CUDA fp16
# (the model as shipped: an fp16 conversion with float32 inputs and outputs) and TensorRT
# fp16 (from the float32 build; engines and timing cache in KIT/tensorrt-cache, so a
# second run loads them), and CUDA fp16 again with --io-binding (input and mask in
# memory allocated once, the input page-locked) and with --cuda-graph (captured once, replayed), and
# CUDA fp16 batching 2, 4 and 8 images a run (the model as shipped: the pod frees its batch
# dimension at load; the bare loop runs full batches), it
# prints: a bare session.run loop's
# images/s (inference/examples/raw_session.rs, the server's own session set-up), the
# pod's images/s and latency through HTTP at concurrency 1, 16 and 64 on 12 MP JPEGs
# returned as ≤ 2048 px PNG cut-outs, and at 64 on the small sample photos (where the
# image work is light and the GPU is the limit), pod ÷ raw, and the GPU's mean
# utilization (nvidia-smi sampled every 500 ms while the load runs), then each variant's
# start-up to ready (session, convolution search, warm-up) and how long a burst of 100
# 12 MP photos sent at once to the idle pod takes to be answered. TensorRT's variant
# is skipped, saying so, where TensorRT (libnvinfer) is not on the library path.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bench/gpu.sh prepare KIT | run KIT [--cpu | VARIANT...]"
command="${1:-}"
kit="${2:-}"
[[ -n $kit ]] || { echo "$usage" >&2; exit 2; }

prepare() {
  bash scripts/setup.sh
  source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"
  source scripts/versions.env
  cargo build --release --locked -p matte-inference -p matte-load --bins --example raw_session
  mkdir -p "$kit"/{bin,models,photos,photos-small,lib}
  cp "$MATTE_SAMPLE_IMAGES"/* "$kit/photos-small/"
  cp target/release/matte-inference target/release/matte-load target/release/examples/raw_session "$kit/bin/"
  cp "$MATTE_MODEL_FP16" "$kit/models/isnet-fp16.onnx"
  "$MATTE_PYTHON" bench/fp32_model.py "$MATTE_MODEL_FP16" "$kit/models/isnet-fp32.onnx"
  "$MATTE_PYTHON" - "$MATTE_SAMPLE_IMAGES" "$kit/photos" <<'PY'
import sys
from PIL import Image
for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
    image = Image.open(f"{sys.argv[1]}/{name}").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    image.save(f"{sys.argv[2]}/{name.split('.')[0]}-12mp.jpg", quality=90)
PY
  # ONNX Runtime's GPU build; CUDA 13 and cuDNN 9 are the GPU machine's own
  bash scripts/wheel_libs.sh "$kit/lib" "onnxruntime-gpu==$ONNXRUNTIME_VERSION"
  echo "kit ready in $kit" >&2
}

tensorrt_installed() {
  # grep reads all (no -q): quitting early would kill ldconfig with SIGPIPE, a failure
  # under pipefail.
  ldconfig -p | grep 'libnvinfer\.so\.10' >/dev/null && return 0
  local dir
  for dir in ${LD_LIBRARY_PATH//:/ }; do [[ -e $dir/libnvinfer.so.10 ]] && return 0; done
  return 1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { # URL PID: TensorRT may build its engine for minutes before the pod is ready
  for _ in $(seq 1 1500); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "the server exited during start-up" >&2; return 1; }
    sleep 0.2
  done
  echo "no answer from $1" >&2; return 1
}

run() {
  local mode="${1:-gpu}" results="$kit/results" named=("$@")
  local variants loads raw_runs requests_per_client burst threads
  mkdir -p "$results"
  if [[ $mode == --cpu ]]; then
    source "${MATTE_CACHE:-$HOME/.cache/matte}/env.sh"
    variants=("cpu cpu isnet-fp16.onnx false 1" "cpu-bound cpu isnet-fp16.onnx true 1")
    loads=(photos:2 photos-small:2)
    raw_runs=2
    requests_per_client=2
    burst=4
  else
    export ORT_DYLIB_PATH
    ORT_DYLIB_PATH=$(ls "$kit"/lib/libonnxruntime.so.* | head -1)
    # No empty entry (the current directory) when it was unset.
    export LD_LIBRARY_PATH="$kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # name, provider, model, --io-binding (or `graph` for --cuda-graph), --max-batch-size
    variants=("cuda-fp32 cuda isnet-fp32.onnx false 1" "cuda-fp16 cuda isnet-fp16.onnx false 1"
      "cuda-fp16-bound cuda isnet-fp16.onnx true 1" "cuda-fp16-graph cuda isnet-fp16.onnx graph 1"
      "cuda-fp16-batch2 cuda isnet-fp16.onnx false 2" "cuda-fp16-batch4 cuda isnet-fp16.onnx false 4"
      "cuda-fp16-batch8 cuda isnet-fp16.onnx false 8"
      "tensorrt-fp16 tensorrt isnet-fp32.onnx false 1")
    if ((${#named[@]})); then
      local variant wanted kept=()
      for variant in "${variants[@]}"; do
        for wanted in "${named[@]}"; do [[ ${variant%% *} == "$wanted" ]] && kept+=("$variant"); done
      done
      ((${#kept[@]})) || { echo "no variant named ${named[*]}" >&2; exit 2; }
      variants=("${kept[@]}")
    fi
    if [[ ${variants[-1]} == tensorrt-* ]] && ! tensorrt_installed; then
      echo "TensorRT (libnvinfer.so.10) is not on the library path: skipping tensorrt-fp16" >&2
      unset 'variants[-1]'
    fi
    # photo set:concurrency; 12 MP photos at 1, 16 and 64 in flight, small ones at 64
    loads=(photos:1 photos:16 photos:64 photos-small:64)
    raw_runs=100
    requests_per_client=4
    # the burst Matte was built for: a hundred photos sent at once to an idle pod
    burst=100
  fi
  threads=$(nproc)
  local gpu_flags=(--tensorrt-cache-dir "$kit/tensorrt-cache")
  mkdir -p "$kit/tensorrt-cache"
  for variant in "${variants[@]}"; do
    read -r name provider model binding batch <<<"$variant"
    # `graph`: CUDA graphs, which bind the input and mask themselves.
    local io_binding=$binding cuda_graph=false
    if [[ $binding == graph ]]; then io_binding=false cuda_graph=true; fi
    echo "== $name: raw session.run" >&2
    "$kit/bin/raw_session" --runs "$raw_runs" --model "$kit/models/$model" --provider "$provider" \
      --batch "$batch" --max-batch-size "$batch" --intra-threads "$threads" --io-binding "$io_binding" --cuda-graph "$cuda_graph" "${gpu_flags[@]}" >"$results/$name-raw.json"
    port=$(free_port)
    local launched=$EPOCHREALTIME
    "$kit/bin/matte-inference" --model "$kit/models/$model" --provider "$provider" --intra-threads "$threads" \
      --cpu-workers "${CPU_WORKERS:-$threads}" --listen "127.0.0.1:$port" --queue-capacity 256 \
      --max-dimension 2048 --drain-delay-seconds 0 --io-binding "$io_binding" --cuda-graph "$cuda_graph" --max-batch-size "$batch" --log-format text \
      "${gpu_flags[@]}" 2>"$results/$name-server.log" &
    server=$!
    sampler=""
    # The server and, while one runs, the GPU sampler go with the script however it ends.
    trap 'kill -TERM $server ${sampler:-} 2>/dev/null || true' EXIT
    wait_ready "http://127.0.0.1:$port/readyz" $server
    # start-up to ready: session, convolution search and warm-up, the server's part of a
    # pod's start-up
    python3 -c "print(f'{$EPOCHREALTIME - $launched:.1f}')" >"$results/$name-ready.txt"
    for load in "${loads[@]}"; do
      local photos=${load%%:*} concurrency=${load##*:}
      local label="$name-$photos-c$concurrency"
      echo "== $name: pod over HTTP, $photos at concurrency $concurrency" >&2
      sampler=""
      if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 >"$results/$label-gpu.txt" &
        sampler=$!
      fi
      "$kit/bin/matte-load" --url "http://127.0.0.1:$port" --concurrency "$concurrency" \
        --requests $((concurrency * requests_per_client)) --warmup 2 --json "$kit/$photos"/* >"$results/$label.json"
      [[ -n $sampler ]] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null || true
      sampler=""
    done
    echo "== $name: pod over HTTP, a burst of $burst 12 MP photos sent at once" >&2
    sleep 1 # the queue empty, as between bursts
    "$kit/bin/matte-load" --url "http://127.0.0.1:$port" --concurrency "$burst" --requests "$burst" --json \
      "$kit/photos"/* >"$results/$name-burst.json"
    kill -TERM $server 2>/dev/null || true
    wait $server 2>/dev/null || true
  done
  python3 - "$results" "${loads[*]}" "${variants[@]}" <<'PY'
import json, os, sys
results, loads, variants = sys.argv[1], sys.argv[2].split(), [v.split()[0] for v in sys.argv[3:]]
print(f"{'variant':<17}{'raw img/s':>10}{'photos':>14}{'c':>4}{'pod img/s':>11}{'p50 s':>8}{'p99 s':>8}{'pod/raw':>9}{'GPU busy %':>12}")
for name in variants:
    raw = json.load(open(f"{results}/{name}-raw.json"))["throughput_images_per_second"]
    for load in loads:
        photos, concurrency = load.split(":")
        label = f"{results}/{name}-{photos}-c{concurrency}"
        pod = json.load(open(f"{label}.json"))
        latency = pod["latency_seconds"] or {}
        samples = [float(line) for line in open(f"{label}-gpu.txt") if line.strip()] if os.path.exists(f"{label}-gpu.txt") else []
        busy = f"{sum(samples) / len(samples):.0f}" if samples else "n/a"
        rate = pod["throughput_images_per_second"]
        print(f"{name:<17}{raw:>10.2f}{photos:>14}{concurrency:>4}{rate:>11.2f}{latency.get('p50', float('nan')):>8.3f}"
              f"{latency.get('p99', float('nan')):>8.3f}{rate / raw:>9.2f}{busy:>12}")
print()
for name in variants:
    burst = json.load(open(f"{results}/{name}-burst.json"))
    latency = burst["latency_seconds"] or {}
    print(f"{name:<17} start-up to ready {open(f'{results}/{name}-ready.txt').read().strip()} s; "
          f"a burst of {burst['requests']} 12 MP photos at once: {burst['ok']} answered in "
          f"{burst['elapsed_seconds']:.2f} s (p50 {latency.get('p50', float('nan')):.2f} s)")
PY
}

case "$command" in
  prepare) prepare ;;
  run) run "${@:3}" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
