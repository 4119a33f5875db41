#!/usr/bin/env python3
"""Person boxes per frame of a raw NV12 file, for the motion-gate footage test.

Runs model-server's independent reference detector (`detect_reference.py`: ONNX Runtime
+ numpy, its own letterbox, decode and NMS) over every frame of one file holding K
frames back to back, with one session, and prints one JSON list per frame:

    [[[x1, y1, x2, y2], ...], ...]    # normalised person boxes, score >= --score

Usage: people_boxes.py --reference DIR --model M.onnx --family yolox|yolov8
                       --frames F.nv12 --width W --height H [--score 0.4]
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--family", required=True, choices=["yolov8", "yolox"])
    ap.add_argument("--frames", required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--score", type=float, default=0.4)
    a = ap.parse_args()
    sys.path.insert(0, a.reference)
    import detect_reference as ref

    w, h = a.width, a.height
    size = w * h * 3 // 2
    raw = np.fromfile(a.frames, dtype=np.uint8)
    if raw.size % size:
        sys.exit(f"{a.frames}: {raw.size} bytes is not a whole number of {w}x{h} NV12 frames")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    side = inp.shape[2]
    out_frames = []
    for k in range(raw.size // size):
        f = raw[k * size:(k + 1) * size]
        y = f[: w * h].reshape(h, w)
        uv = f[w * h:].reshape(h // 2, w // 2, 2)
        rgb = ref.yuv420_to_rgb(y, uv[:, :, 0], uv[:, :, 1])
        if a.family == "yolov8":
            tensor, r, left, top = ref.letterbox_yolov8(rgb, side)
        else:
            tensor, r, left, top = ref.letterbox_yolox(rgb, side)
        out = sess.run(None, {inp.name: np.ascontiguousarray(tensor)})[0]
        if a.family == "yolov8":
            boxes, scores, classes = ref.decode_yolov8(out, a.score)
        else:
            boxes, scores, classes = ref.decode_yolox(out, side, a.score)
        kept = ref.nms(boxes, scores, classes, 0.45, 100)
        people = []
        for i in kept:
            if int(classes[i]) != 0:
                continue
            x1, y1, x2, y2 = boxes[i]
            people.append([
                float(np.clip((x1 - left) / r / w, 0, 1)),
                float(np.clip((y1 - top) / r / h, 0, 1)),
                float(np.clip((x2 - left) / r / w, 0, 1)),
                float(np.clip((y2 - top) / r / h, 0, 1)),
            ])
        out_frames.append(people)
    json.dump(out_frames, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
