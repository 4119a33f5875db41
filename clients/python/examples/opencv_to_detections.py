"""Frames from OpenCV into a ring, detections from a real model server.

    python opencv_to_detections.py --socket /run/framebus/yolov8n.sock --model-id yolov8n \\
        [--video $FRAMEBUS_ASSETS/video/people_walk_540p.mp4] [--ring-dir /dev/shm/framebus] \\
        [--frames 50] [--in-flight 4]

Decodes the video with OpenCV, publishes each BGR image into a ring this process writes
(``BGR24``: the server takes OpenCV's images as they are), and asks the server about each
frame, keeping up to ``--in-flight`` requests pipelined on one connection. Prints one line
per frame with its people count and the first box in pixels.

What the server needs (see framebus.RingWriter): the same ring directory as its
``--ring-dir``, owned by the server's uid (or root) with a mode like 0750; this process
runs as the server's user, or as root. A model server of a core-agent deployment: run as
the service user (``runuser -u framebus -- python ...``) and use its ring dir and socket.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import cv2

import framebus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    assets = os.environ.get("FRAMEBUS_ASSETS", "../shared/assets")
    ap.add_argument("--video", default=os.path.join(assets, "video/people_walk_540p.mp4"))
    ap.add_argument("--socket", required=True, help="model server socket")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--ring-dir", default=framebus.DEFAULT_RING_DIR)
    ap.add_argument("--ring", default="opencv-cam", help="ring name = camera id")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()

    cap = cv2.VideoCapture(args.video)
    ok, img = cap.read()
    if not ok:
        print(f"cannot read {args.video}", file=sys.stderr)
        return 1
    h, w = img.shape[:2]
    framebus.ensure_ring_dir(args.ring_dir)
    people_total = 0
    # Enough slots that a frame is not overwritten while its request is in flight.
    with framebus.RingWriter(args.ring, w, h, "BGR24", ring_dir=args.ring_dir,
                             slots=max(8, 2 * args.in_flight)) as writer, \
            framebus.RingReader(args.ring, args.ring_dir) as ring, \
            framebus.Client(args.socket, timeout_s=30) as client:
        pending: "collections.deque[int]" = collections.deque()

        def collect() -> None:
            nonlocal people_total
            try:
                r = client.result(pending.popleft())
            except (framebus.errors.StaleFrame, framebus.errors.Overloaded,
                    framebus.errors.DeadlineExceeded) as e:
                print(f"skipped a frame: {e}")        # retryable: a newer frame comes anyway
                return
            people = [d for d in r.detections if d.class_name == "person"]
            people_total += len(people)
            first = people[0].to_pixels(w, h) if people else None
            print(f"frame {r.frame_id}: {len(people)} people, first box {first}, "
                  f"{r.timings.get('total_us', 0) / 1000:.1f} ms on the server")

        for _ in range(args.frames):
            writer.publish(img)
            pending.append(client.submit(ring, ring.latest(), args.ring, args.model_id))
            if len(pending) >= args.in_flight:
                collect()
            ok, img = cap.read()
            if not ok:
                break
        while pending:
            collect()
    cap.release()
    print(f"people seen in all frames: {people_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
