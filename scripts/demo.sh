#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), builds the workspace in release mode and runs the
# whole system on core-agent's built-in demo: the real YOLOv8n model and footage when
# $FRAMEBUS_ASSETS (default ../shared/assets) holds them, else an FFmpeg-generated camera and
# a generated YOLO-format ONNX model. Extra arguments go to core-agent, for example
#   bash scripts/demo.sh --duration 30      # stop after 30 s
#   bash scripts/demo.sh --synthetic        # ignore the real assets
# Results: ./results.jsonl; status API: http://127.0.0.1:7878/cameras with the bearer token
# core-agent names at start (the demo's is $TMPDIR/framebus-demo/sockets/api.token):
#   curl -H "Authorization: Bearer $(cat "${TMPDIR:-/tmp}/framebus-demo/sockets/api.token")" \
#        http://127.0.0.1:7878/cameras
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck disable=SC1091
source .local/env.sh
cargo build --release --bins -p core-agent -p frame-kernel -p model-server
exec target/release/core-agent --demo --table "$@"
