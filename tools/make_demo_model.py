#!/usr/bin/env python3
"""Writes the demo detector: a tiny ONNX graph with a real YOLOv8 output.

    $FRAMEBUS_PYTHON tools/make_demo_model.py --output demo_detector.onnx [--size 320] [--check]

No weights are trained or downloaded. The graph finds bright blobs (the moving boxes of
the demo's synthetic video) and reports them as `person`:

  images [1,3,S,S] RGB 0..1
   -> luma            Conv 1x1 (0.299, 0.587, 0.114)
   -> cells           AveragePool 16x16 / 16          [1,1,S/16,S/16]
   -> bright          Sigmoid(20 * (cells - 0.6))     (cell mostly covered by a blob; the
                                                      letterbox padding, 114/255, is not)
   -> smooth          AveragePool 3x3 / 1, pad 1 of bright  (blob centres peak)
   -> peak            smooth == MaxPool 3x3 (smooth + tiny ramp to break ties)
   -> person score    Sigmoid(20 * (smooth - 0.2)) * peak
   -> box w, h        16 * (bright cells in a 7-cell row / column through the cell)
   -> box cx, cy      cell centres
  output0 [1, 84, N] = [cx, cy, w, h, 80 class scores] per cell, N = (S/16)^2,
  the layout of Ultralytics YOLOv8 exports, with `names` (COCO 80) and `task` metadata.

So detections really depend on the pixels and run through ONNX Runtime like any model;
they are only meaningful on the demo video (bright shapes on a dark background).
"""
import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
CELL = 16


def build(size: int) -> onnx.ModelProto:
    if size % CELL:
        sys.exit(f"--size must be a multiple of {CELL}")
    g = size // CELL
    n = g * g
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def shape_const(name, values):
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    const("w_luma", np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1))
    const("k20", [20.0])
    const("t_bright", [0.6])
    const("t_person", [0.2])
    const("cell_px", [float(CELL)])
    const("min_px", [float(CELL)])
    const("row7", np.ones((1, 1, 1, 7), dtype=np.float32))
    const("col7", np.ones((1, 1, 7, 1), dtype=np.float32))
    # A ramp far below any real difference, so a flat plateau has exactly one maximum.
    const("ramp", (np.arange(n, dtype=np.float32) * 1e-6).reshape(1, 1, g, g))
    centres = (np.arange(g, dtype=np.float32) + 0.5) * CELL
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    const("cx", cx.reshape(1, 1, n))
    const("cy", cy.reshape(1, 1, n))
    const("zeros79", np.zeros((1, 79, 1), dtype=np.float32))
    shape_const("flat", [1, 1, n])

    nodes = [
        helper.make_node("Conv", ["images", "w_luma"], ["luma"]),
        helper.make_node("AveragePool", ["luma"], ["cells"], kernel_shape=[CELL, CELL], strides=[CELL, CELL]),
        helper.make_node("Sub", ["cells", "t_bright"], ["cells_c"]),
        helper.make_node("Mul", ["cells_c", "k20"], ["cells_k"]),
        helper.make_node("Sigmoid", ["cells_k"], ["bright"]),
        helper.make_node("AveragePool", ["bright"], ["smooth"], kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Add", ["smooth", "ramp"], ["smooth_r"]),
        helper.make_node("MaxPool", ["smooth_r"], ["local_max"], kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Equal", ["smooth_r", "local_max"], ["is_peak_b"]),
        helper.make_node("Cast", ["is_peak_b"], ["is_peak"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["smooth", "t_person"], ["smooth_c"]),
        helper.make_node("Mul", ["smooth_c", "k20"], ["smooth_k"]),
        helper.make_node("Sigmoid", ["smooth_k"], ["blob"]),
        helper.make_node("Mul", ["blob", "is_peak"], ["person_map"]),
        helper.make_node("Reshape", ["person_map", "flat"], ["person"]),
        helper.make_node("Mul", ["person", "zeros79"], ["others"]),
        helper.make_node("Conv", ["bright", "row7"], ["row_count"], pads=[0, 3, 0, 3]),
        helper.make_node("Conv", ["bright", "col7"], ["col_count"], pads=[3, 0, 3, 0]),
        helper.make_node("Mul", ["row_count", "cell_px"], ["w_px"]),
        helper.make_node("Mul", ["col_count", "cell_px"], ["h_px"]),
        helper.make_node("Max", ["w_px", "min_px"], ["w_min"]),
        helper.make_node("Max", ["h_px", "min_px"], ["h_min"]),
        helper.make_node("Reshape", ["w_min", "flat"], ["w"]),
        helper.make_node("Reshape", ["h_min", "flat"], ["h"]),
        helper.make_node("Concat", ["cx", "cy", "w", "h", "person", "others"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "framebus_demo_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="framebus make_demo_model.py")
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{name}'" for i, name in enumerate(COCO80)) + "}"
    for k, v in {"names": names, "task": "detect", "imgsz": f"[{size}, {size}]", "stride": str(CELL),
                 "description": "framebus demo detector: bright blobs reported as person"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model, full_check=True)
    return model


def check(path: str, size: int) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    img = np.full((1, 3, size, size), 0.125, dtype=np.float32)
    img[:, :, 100:170, 60:90] = 1.0     # a 30x70 "person"
    img[:, :, 40:110, 200:230] = 1.0    # another one
    img[:, :, 200:255, 150:170] = 0.95  # a narrow one (20x55)
    img[:, :, 300:, :] = 114 / 255      # letterbox padding
    out = sess.run(None, {"images": img})[0]
    assert out.shape == (1, 84, (size // CELL) ** 2), out.shape
    scores = out[0, 4]
    hits = np.nonzero(scores > 0.25)[0]
    boxes = [tuple(round(float(v)) for v in out[0, :4, i]) + (round(float(scores[i]), 2),) for i in hits]
    print(f"{len(hits)} detections (cx, cy, w, h, score): {boxes}")
    assert len(hits) == 3, "expected the three blobs and nothing in the padding"
    blank = sess.run(None, {"images": np.full((1, 3, size, size), 0.125, dtype=np.float32)})[0]
    assert (blank[0, 4] < 0.25).all(), "a dark frame must give no detections"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", required=True, help="where to write the .onnx file")
    ap.add_argument("--size", type=int, default=320, help="square input size in pixels (multiple of 16)")
    ap.add_argument("--check", action="store_true", help="run it with onnxruntime on a test image")
    args = ap.parse_args()
    model = build(args.size)
    tmp = args.output + ".tmp"
    onnx.save(model, tmp)
    import os
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")
    if args.check:
        check(args.output, args.size)


if __name__ == "__main__":
    main()
