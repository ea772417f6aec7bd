"""Writes ISNet with a batch dimension left free, so that `matte-inference
--max-batch-size N` can run N images at once (the model as shipped fixes it at 1). Every
Resize in ISNet takes its output size from the shape of its input (Shape → Slice →
Concat), so nothing inside depends on the batch: the inputs' and outputs' first
dimension becomes `batch`, and the intermediate shapes recorded in the file, which name
batch 1, are dropped for ONNX Runtime to infer again. A batch of two gives the masks of
two single runs within 6e-4 (fp16 arithmetic), checked with `--check`.

Usage: python batch_model.py IN.onnx OUT.onnx [--check]
"""
import sys

import onnx

model = onnx.load(sys.argv[1])
graph = model.graph
for value in list(graph.input) + list(graph.output):
    batch = value.type.tensor_type.shape.dim[0]
    batch.ClearField("dim_value")
    batch.dim_param = "batch"
del graph.value_info[:]
onnx.save(model, sys.argv[2])

if "--check" in sys.argv[3:]:
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    single = onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
    batched = onnxruntime.InferenceSession(sys.argv[2], options, providers=["CPUExecutionProvider"])
    name, output = single.get_inputs()[0].name, single.get_outputs()[0].name
    images = np.random.default_rng(0).standard_normal((2, *single.get_inputs()[0].shape[1:]), dtype=np.float32)
    masks = batched.run([output], {name: images})[0]
    for index in range(2):
        alone = single.run([output], {name: images[index : index + 1]})[0][0]
        difference = float(np.abs(masks[index] - alone).max())
        print(f"image {index}: largest difference from a single run {difference:.2e}")
        if difference > 6e-4:
            sys.exit("the batched model's masks differ from single runs")
