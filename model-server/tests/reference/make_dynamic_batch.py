#!/usr/bin/env python3
"""Derives a dynamic-batch copy of a fixed-batch ONNX detector, for the batching tests.

The input and output batch dimensions become the symbol `batch`, and every Reshape whose
constant target shape starts with a hard-coded batch of 1 gets 0 there ("copy this
dimension from the input"), so a batch of N images flows through unchanged. Works for
YOLOX exports (three such reshapes); it does not try to be a general converter.

Usage: make_dynamic_batch.py IN.onnx OUT.onnx
"""
import sys

import onnx
from onnx import numpy_helper


def main():
    src, dst = sys.argv[1], sys.argv[2]
    m = onnx.load(src)
    for v in list(m.graph.input) + list(m.graph.output):
        dim = v.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del m.graph.value_info[:]  # stale inferred shapes pin the batch to 1
    inits = {i.name: i for i in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
    for node in m.graph.node:
        if node.op_type != "Reshape":
            continue
        target = node.input[1]
        if target in inits:
            tensor = inits[target]
        elif target in consts:
            tensor = consts[target].attribute[0].t
        else:
            continue
        shape = numpy_helper.to_array(tensor).copy()
        if shape.size and shape[0] == 1:
            shape[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    onnx.save(m, dst)


if __name__ == "__main__":
    main()
