"""The two builds of ISNet side by side on this CPU: throughput of a bare
`session.run`, and how far the quantized model's masks are from the fp16 model's on
the sample photos (IoU of the masks cut at 0.5, and the mean absolute difference).

Both get the input the server builds: RGB scaled to the model's 1024×1024 square
(bilinear), divided by 255, minus 0.5.

Usage: python model_variants.py FP16 QUINT8 PHOTO... --threads N --runs N
(prints one JSON object and a table on stderr)
"""
import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("fp16")
parser.add_argument("quint8")
parser.add_argument("photos", nargs="+")
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--runs", type=int, default=8)
args = parser.parse_args()


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def model_input(photo):
    rgb = Image.open(photo).convert("RGB").resize((1024, 1024), Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5).transpose(2, 0, 1)[None]


def mask(model, tensor):
    output = model.run([model.get_outputs()[0].name], {model.get_inputs()[0].name: tensor})[0]
    return output.reshape(output.shape[-2:])


def throughput(model, tensor):
    mask(model, tensor)  # warm-up, as the server does
    started = time.perf_counter()
    for _ in range(args.runs):
        mask(model, tensor)
    return args.runs / (time.perf_counter() - started)


models = {"fp16": session(args.fp16), "quint8": session(args.quint8)}
inputs = {photo.rsplit("/", 1)[-1]: model_input(photo) for photo in args.photos}
result = {"threads": args.threads, "runs": args.runs, "images_per_second": {}, "agreement": {}}
for name, model in models.items():
    result["images_per_second"][name] = throughput(model, next(iter(inputs.values())))
for photo, tensor in inputs.items():
    reference, quantized = mask(models["fp16"], tensor), mask(models["quint8"], tensor)
    inside, inside_quantized = reference > 0.5, quantized > 0.5
    union = np.logical_or(inside, inside_quantized).sum()
    iou = float(np.logical_and(inside, inside_quantized).sum() / union) if union else 1.0
    result["agreement"][photo] = {"iou": iou, "mean_absolute_difference": float(np.abs(reference - quantized).mean())}

print(json.dumps(result))
rates = result["images_per_second"]
print(f"images/s ({args.threads} threads): fp16 {rates['fp16']:.3f}, quint8 {rates['quint8']:.3f} "
      f"({rates['quint8'] / rates['fp16']:.2f}×)", file=sys.stderr)
for photo, agreement in result["agreement"].items():
    print(f"{photo:16} IoU {agreement['iou']:.4f}  mean |Δ| {agreement['mean_absolute_difference']:.4f}", file=sys.stderr)
