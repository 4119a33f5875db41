#!/usr/bin/env python3
"""The Python peer of `bench live`: N live cameras the way the designs this project comes
from run them, so framebus is measured against it in the same run.

One thread per camera: OpenCV (FFmpeg backend) decodes every frame of the file played as a
live camera at its own rate; a frame whose detection slot is due is letterboxed and run
through ONE onnxruntime session shared by all threads (session.run releases the GIL), then
decoded (grid decode + class-wise NMS) into boxes. A thread that falls behind the live rate
keeps decoding the frames it owes (a live camera keeps sending them), which is the lag this
peer pays when the CPU is short.

Output: one JSON line per result in the same fields as core-agent's results.jsonl
(camera, model, frame_id, capture_unix_ms, result_unix_ms, latency_ms, detections), where
the capture time is the instant the live camera would have delivered the frame. A line
`ready` on stdout once every camera has a result. SIGTERM or SIGINT ends it.

Only numpy, opencv-python-headless and onnxruntime are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time

import cv2
import numpy as np
import onnxruntime as ort

COCO = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
).split()


class Yolox:
    """YOLOX: BGR 0..255, letterbox to the top-left corner, padding 114; grid outputs."""

    def __init__(self, size: int) -> None:
        self.size = size
        grids, strides = [], []
        for s in (8, 16, 32):
            n = size // s
            ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack((xs, ys), -1).reshape(-1, 2))
            strides.append(np.full((n * n, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def pre(self, img: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        h, w = img.shape[:2]
        r = min(self.size / w, self.size / h)
        nw, nh = int(round(w * r)), int(round(h * r))
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return canvas.transpose(2, 0, 1)[None].astype(np.float32), r, (0.0, 0.0)

    def boxes(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = out[0]
        xy = (p[:, :2] + self.grid) * self.stride
        wh = np.exp(np.minimum(p[:, 2:4], 20.0)) * self.stride
        cls = p[:, 5:]
        c = cls.argmax(1)
        score = p[:, 4] * cls[np.arange(len(c)), c]
        return np.concatenate((xy - wh / 2, wh), 1), score, c


class Yolov8:
    """YOLOv8: RGB 0..1, letterbox centred, padding 114/255; [1, 84, N] outputs."""

    def __init__(self, size: int) -> None:
        self.size = size

    def pre(self, img: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        h, w = img.shape[:2]
        r = min(self.size / w, self.size / h)
        nw, nh = int(round(w * r)), int(round(h * r))
        dx, dy = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[dy : dy + nh, dx : dx + nw] = cv2.resize(img, (nw, nh))
        x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None]
        return x.astype(np.float32) / 255.0, r, (float(dx), float(dy))

    def boxes(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = out[0].T
        cls = p[:, 4:]
        c = cls.argmax(1)
        score = cls[np.arange(len(c)), c]
        return np.concatenate((p[:, :2] - p[:, 2:4] / 2, p[:, 2:4]), 1), score, c


def detect(family, out, r, pad, score_min, iou, max_det):
    xywh, score, cls = family.boxes(out)
    keep = score >= score_min
    xywh, score, cls = xywh[keep], score[keep], cls[keep]
    if len(score) == 0:
        return []
    idx = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), score.tolist(), cls.tolist(), score_min, iou, top_k=max_det
    )
    dets = []
    for i in np.array(idx).reshape(-1)[:max_det]:
        x, y, w, h = xywh[i]
        x0, y0 = (x - pad[0]) / r, (y - pad[1]) / r
        dets.append(
            {
                "class_id": int(cls[i]),
                "class_name": COCO[int(cls[i])] if cls[i] < len(COCO) else str(int(cls[i])),
                "score": round(float(score[i]), 4),
                "box": [round(float(v), 1) for v in (x0, y0, x0 + w / r, y0 + h / r)],
            }
        )
    return dets


class Camera(threading.Thread):
    """One live camera: decode every frame at the camera's rate, detect on due slots."""

    def __init__(self, idx, args, session, family, sink, stop, start_at):
        super().__init__(name=f"cam{idx}", daemon=True)
        self.id = f"cam{idx}"
        self.args, self.session, self.family = args, session, family
        self.sink, self.stop, self.start_at = sink, stop, start_at
        self.input = session.get_inputs()[0].name
        self.delivered = 0

    def open(self):
        cap = cv2.VideoCapture(self.args.video, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SystemExit(f"peer: {self.id}: cannot open {self.args.video}")
        return cap

    def run(self):
        a = self.args
        frame_s, slot_s = 1.0 / a.camera_fps, 1.0 / a.detect_fps
        cap = self.open()
        k, served = 0, -1
        while not self.stop.is_set():
            ok, img = cap.read()
            if not ok:  # end of file: the live camera loops
                cap.release()
                cap = self.open()
                continue
            due = self.start_at + k * frame_s
            k += 1
            now = time.time()
            if now < due:
                time.sleep(due - now)
            slot = math.floor((due - self.start_at) / slot_s + 1e-9)
            if slot == served:
                continue
            served = slot
            t_req = time.time()
            x, r, pad = self.family.pre(img)
            t_inf = time.time()
            out = self.session.run(None, {self.input: x})[0]
            t_post = time.time()
            dets = detect(self.family, out, r, pad, a.score_threshold, a.iou_threshold, 100)
            done = time.time()
            self.delivered += 1
            self.sink(
                {
                    "camera": self.id,
                    "model": a.model_id,
                    "frame_id": k - 1,
                    "capture_unix_ms": int(due * 1000),
                    "result_unix_ms": int(done * 1000),
                    "latency_ms": {
                        "capture_to_result": round((done - due) * 1000, 3),
                        "request_to_result": round((done - t_req) * 1000, 3),
                        "server_total": round((done - t_req) * 1000, 3),
                        "inference": round((t_post - t_inf) * 1000, 3),
                    },
                    "detections": dets,
                }
            )
        cap.release()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", required=True)
    p.add_argument("--model", required=True, help="ONNX file (YOLOX or YOLOv8 layout)")
    p.add_argument("--model-id", default="model")
    p.add_argument("--family", choices=("yolox", "yolov8", "auto"), default="auto")
    p.add_argument("--cameras", type=int, default=1)
    p.add_argument("--camera-fps", type=float, default=25.0)
    p.add_argument("--detect-fps", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the session")
    p.add_argument("--spin", choices=("true", "false"), default="false")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.add_argument("--iou-threshold", type=float, default=0.45)
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until SIGTERM")
    p.add_argument("--results", required=True, help="JSON Lines output file")
    a = p.parse_args()
    if a.cameras < 1 or a.camera_fps <= 0 or a.detect_fps <= 0:
        p.error("cameras, camera-fps and detect-fps must be positive")

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if a.spin == "true" else "0")
    session = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    size = int(shape[2]) if isinstance(shape[2], int) else 640
    family = a.family
    if family == "auto":
        out_shape = session.get_outputs()[0].shape
        family = "yolox" if out_shape[-1] == 85 else "yolov8"
    fam = Yolox(size) if family == "yolox" else Yolov8(size)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lock = threading.Lock()
    out = open(a.results, "a", buffering=1)

    def sink(rec):
        line = json.dumps(rec, separators=(",", ":"))
        with lock:
            out.write(line + "\n")

    start_at = time.time() + 0.2
    cams = [Camera(i, a, session, fam, sink, stop, start_at) for i in range(a.cameras)]
    for c in cams:
        c.start()
    ready = False
    end = time.time() + a.duration if a.duration > 0 else math.inf
    while not stop.is_set() and time.time() < end:
        if not ready and all(c.delivered > 0 for c in cams):
            ready = True
            print("ready", flush=True)
        if not all(c.is_alive() for c in cams):
            print("peer: a camera thread died", file=sys.stderr)
            stop.set()
            return 1
        stop.wait(0.05)
    stop.set()
    for c in cams:
        c.join(timeout=5)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
