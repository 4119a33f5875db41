#!/usr/bin/env python3
"""Independent reference detector for the model-server tests.

Runs one ONNX detector (YOLOv8 or YOLOX, as described in the assets README) on one raw
frame with ONNX Runtime and numpy only, and prints the detections as JSON:

    [{"class_id": 0, "score": 0.91, "bbox": [x1, y1, x2, y2]}, ...]

with boxes normalised to the frame size. The letterbox, decode and NMS are written from
the models' published reference pipelines (Ultralytics `LetterBox` + NMS, YOLOX `preproc`
+ `demo_postprocess`), not from the server's code.

The pixel path is specified exactly, so that this script and the server build
bit-identical input tensors (the int8 YOLOv8 quantises its activations dynamically and
reacts to last-bit differences of its input):
- the frame is raw `rgb24`, `bgr24`, `nv12` or `yuv420p` bytes as the ffmpeg CLI writes
  them; YUV is converted to 8-bit RGB at full resolution with the common integer BT.601
  limited-range formula (`R = clip((298 C + 409 E + 128) >> 8)`, ...), each chroma sample
  covering its 2x2 luma block;
- the resize is OpenCV's 8-bit `INTER_LINEAR`: pixel-centre geometry, edges clamped,
  11-bit fixed-point weights, result rounded to 8 bits;
- tensor values are `uint8 / 255` (YOLOv8) or the raw values (YOLOX) in float32.

Usage: detect_reference.py --model M.onnx --family yolov8|yolox --frame F
                           --format rgb24|bgr24|nv12|yuv420p --width W --height H
                           [--score 0.25] [--iou 0.45] [--max-det 100]
"""
import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def yuv420_to_rgb(y, u, v):
    """8-bit RGB from 8-bit Y and half-resolution U, V planes (integer BT.601)."""
    up = lambda p: np.repeat(np.repeat(p.astype(np.int32), 2, 0), 2, 1)
    c = 298 * (y.astype(np.int32) - 16) + 128
    d = up(u) - 128
    e = up(v) - 128
    r = (c + 409 * e) >> 8
    g = (c - 100 * d - 208 * e) >> 8
    b = (c + 516 * d) >> 8
    return np.clip(np.stack([r, g, b], 2), 0, 255).astype(np.uint8)


def load_frame(path, fmt, w, h):
    """The frame as 8-bit RGB, HxWx3."""
    raw = np.fromfile(path, dtype=np.uint8)
    need = w * h * 3 if fmt in ("rgb24", "bgr24") else w * h * 3 // 2
    if raw.size != need:
        sys.exit(f"{path}: {raw.size} bytes, expected {need} for {fmt} {w}x{h}")
    if fmt == "rgb24":
        return raw.reshape(h, w, 3)
    if fmt == "bgr24":
        return raw.reshape(h, w, 3)[:, :, ::-1]
    y = raw[: w * h].reshape(h, w)
    chroma = raw[w * h:]
    if fmt == "nv12":
        uv = chroma.reshape(h // 2, w // 2, 2)
        u, v = uv[:, :, 0], uv[:, :, 1]
    else:  # yuv420p
        u = chroma[: w * h // 4].reshape(h // 2, w // 2)
        v = chroma[w * h // 4:].reshape(h // 2, w // 2)
    return yuv420_to_rgb(y, u, v)


def resize_bilinear(img, new_w, new_h):
    """OpenCV INTER_LINEAR on an HxWxC uint8 image, 11-bit fixed point."""
    h, w = img.shape[:2]

    def taps(src, dst):
        s = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
        i0 = np.floor(s)
        frac = s - i0
        edge = (i0 < 0) | (i0 >= src - 1)
        frac[edge] = 0.0
        i0 = np.clip(i0, 0, src - 1).astype(np.int64)
        i1 = np.minimum(i0 + 1, src - 1)
        w1 = np.floor(frac * 2048 + 0.5).astype(np.int64)
        return i0, i1, 2048 - w1, w1

    x0, x1, wx0, wx1 = taps(w, new_w)
    y0, y1, wy0, wy1 = taps(h, new_h)
    p = img.astype(np.int64)
    top = p[y0][:, x0] * wx0[None, :, None] + p[y0][:, x1] * wx1[None, :, None]
    bot = p[y1][:, x0] * wx0[None, :, None] + p[y1][:, x1] * wx1[None, :, None]
    out = (top * wy0[:, None, None] + bot * wy1[:, None, None] + (1 << 21)) >> 22
    return out.astype(np.uint8)


def letterbox_yolov8(rgb, size):
    """Ultralytics LetterBox(auto=False): centred, pad 114, RGB / 255."""
    h, w = rgb.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resize_bilinear(rgb, new_w, new_h)
    tensor = (canvas.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    return tensor, r, left, top


def letterbox_yolox(rgb, size):
    """YOLOX preproc: BGR, top-left, pad 114, no normalisation."""
    h, w = rgb.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(w * r), int(h * r)
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    canvas[:new_h, :new_w] = resize_bilinear(rgb[:, :, ::-1], new_w, new_h)
    tensor = canvas.astype(np.float32).transpose(2, 0, 1)[None]
    return tensor, r, 0, 0


def decode_yolov8(out, thr):
    pred = out[0].T  # [8400, 84]
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= thr
    cx, cy, bw, bh = pred[keep, :4].T
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    return boxes, best[keep], cls[keep]


def decode_yolox(out, size, thr):
    pred = out[0].copy()  # [3549, 85]
    grids, strides = [], []
    for s in (8, 16, 32):
        g = size // s
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        grids.append(np.stack([xv, yv], 2).reshape(-1, 2))
        strides.append(np.full((g * g, 1), s))
    grids = np.concatenate(grids).astype(np.float32)
    strides = np.concatenate(strides).astype(np.float32)
    xy = (pred[:, :2] + grids) * strides
    wh = np.exp(pred[:, 2:4]) * strides
    cls = pred[:, 5:].argmax(1)
    score = pred[:, 4] * pred[np.arange(len(cls)), 5 + cls]
    keep = score >= thr
    xy, wh = xy[keep], wh[keep]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    return boxes, score[keep], cls[keep]


def nms(boxes, scores, classes, iou_thr, max_det):
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        if len(kept) >= max_det:
            break
        ok = True
        for j in kept:
            if classes[i] != classes[j]:
                continue
            b, k = boxes[i], boxes[j]
            iw = max(0.0, min(b[2], k[2]) - max(b[0], k[0]))
            ih = max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            if union > 0 and inter / union > iou_thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--family", required=True, choices=["yolov8", "yolox"])
    ap.add_argument("--frame", required=True)
    ap.add_argument("--format", required=True, choices=["rgb24", "bgr24", "nv12", "yuv420p"])
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--score", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-det", type=int, default=100)
    a = ap.parse_args()

    rgb = load_frame(a.frame, a.format, a.width, a.height)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    size = inp.shape[2]
    if a.family == "yolov8":
        tensor, r, left, top = letterbox_yolov8(rgb, size)
    else:
        tensor, r, left, top = letterbox_yolox(rgb, size)
    out = sess.run(None, {inp.name: np.ascontiguousarray(tensor)})[0]
    if a.family == "yolov8":
        boxes, scores, classes = decode_yolov8(out, a.score)
    else:
        boxes, scores, classes = decode_yolox(out, size, a.score)
    kept = nms(boxes, scores, classes, a.iou, a.max_det)

    dets = []
    for i in kept:
        x1, y1, x2, y2 = boxes[i]
        x1, x2 = (x1 - left) / r / a.width, (x2 - left) / r / a.width
        y1, y2 = (y1 - top) / r / a.height, (y2 - top) / r / a.height
        dets.append({
            "class_id": int(classes[i]),
            "score": float(scores[i]),
            "bbox": [float(np.clip(v, 0.0, 1.0)) for v in (x1, y1, x2, y2)],
        })
    json.dump(dets, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
