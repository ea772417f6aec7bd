"""Throughput of a bare ONNX Runtime `session.run` on the model: the ceiling the server
is measured against (same library, same thread count, no HTTP, no image work).

Usage: python raw_session.py MODEL --threads N --runs N  (prints one JSON object)
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--runs", type=int, default=10)
parser.add_argument("--size", type=int, default=1024)
args = parser.parse_args()

options = ort.SessionOptions()
options.intra_op_num_threads = args.threads
session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
output_name = session.get_outputs()[0].name
image = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32) - 0.5

session.run([output_name], {input_name: image})  # warm-up, as the server does
durations = []
started = time.perf_counter()
for _ in range(args.runs):
    run_started = time.perf_counter()
    session.run([output_name], {input_name: image})
    durations.append(time.perf_counter() - run_started)
elapsed = time.perf_counter() - started
print(json.dumps({
    "runs": args.runs,
    "threads": args.threads,
    "elapsed_seconds": elapsed,
    "throughput_images_per_second": args.runs / elapsed,
    "mean_run_seconds": sum(durations) / len(durations),
}))
