#!/usr/bin/python3
"""Fake IP cameras for tests: GStreamer's RTSP server serving files as endless live H.264.

    fake_rtsp_camera.py [--port N] [--cache DIR] NAME=SOURCE [NAME=SOURCE ...]

Run it with Debian's /usr/bin/python3 (or $FRAMEBUS_PYTHON, a venv over the system
site-packages): it needs python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-{base,good,bad,ugly} and gstreamer1.0-libav.

SOURCE is one of
  file.h264   Annex-B H.264 without B-frames, looped forever.
  file.mp4    re-encoded once like a camera would send it (no B-frames, GOP 2 s, Main
              profile) into the cache folder, then served as above. The cached file is
              what a client receives, frame for frame: decode it to get reference frames.
  test:WxH    live videotestsrc + x264enc zerolatency, 25 fps.

Every client of a path sees the same live stream (shared media), like a real camera.
Serves 127.0.0.1 only. --port 0 picks a free port. Prints, flushed, one line per file
source `SOURCE <name> <served .h264 path>`, then `READY <port>` once the socket listens.
SIGTERM/SIGINT stop it cleanly (exit 0); SIGKILL/SIGSTOP are what tests use as faults.

Pitfalls this handles: h264parse only interpolates DTS for raw Annex-B, so PTS is copied
from DTS in a pad probe (otherwise the RTP timestamps freeze); x264enc tune=zerolatency
needs sliced-threads=false (sliced output breaks some depayloaders); a conversion is
written to a per-process temporary name, under a lock, then renamed, so concurrent
cameras sharing a cache never see a half-written file.
"""
import argparse
import fcntl
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PAY = "rtph264pay name=pay0 pt=96 config-interval=-1"
GOP_FRAMES = 50  # 2 s at 25 fps, a common camera setting


def to_annexb(mp4, cache):
    """Re-encodes `mp4` without B-frames (PTS == DTS), once per cache folder."""
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, os.path.basename(mp4) + ".h264")
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second camera waits for the first conversion
        if os.path.exists(out):
            return out
        tmp = f"{out}.tmp{os.getpid()}"
        pipeline = Gst.parse_launch(
            f'filesrc location="{mp4}" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! '
            f"x264enc bframes=0 key-int-max={GOP_FRAMES} speed-preset=veryfast ! "
            "video/x-h264,profile=main ! h264parse ! video/x-h264,stream-format=byte-stream ! "
            f'filesink location="{tmp}"'
        )
        pipeline.set_state(Gst.State.PLAYING)
        msg = pipeline.get_bus().timed_pop_filtered(
            Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
        pipeline.set_state(Gst.State.NULL)
        if msg.type == Gst.MessageType.ERROR:
            if os.path.exists(tmp):
                os.remove(tmp)
            sys.exit(f"convert {mp4}: {msg.parse_error()[0].message}")
        os.rename(tmp, out)
    return out


def fix_pts(pad, info):
    buf = info.get_buffer()
    if buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def on_configure(factory, media):
    parse = media.get_element().get_by_name("parse")
    if parse:
        parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, fix_pts)


def launch_for(src, cache, name):
    if src.startswith("test:"):
        w, h = src[5:].split("x")
        return (
            f"videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={int(w)},height={int(h)},framerate=25/1 ! "
            "x264enc tune=zerolatency sliced-threads=false speed-preset=ultrafast "
            f"key-int-max={GOP_FRAMES} bitrate=4000 ! {PAY}"
        )
    if not os.path.isfile(src):
        sys.exit(f"{name}: no such file: {src}")
    if src.endswith(".mp4"):
        src = to_annexb(src, cache)
    print("SOURCE", name, src, flush=True)
    return f'multifilesrc location="{src}" loop=true ! h264parse name=parse ! {PAY}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8554, help="TCP port (0 = any free one)")
    parser.add_argument(
        "--cache",
        default=os.environ.get("FAKE_CAMERA_CACHE", "/tmp/fake-rtsp-camera"),
        help="where converted .mp4 sources are kept (default $FAKE_CAMERA_CACHE)",
    )
    parser.add_argument("cameras", nargs="+", metavar="NAME=SOURCE")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer(address="127.0.0.1", service=str(args.port))
    mounts = server.get_mount_points()
    for spec in args.cameras:
        name, sep, src = spec.partition("=")
        if not sep or not name:
            sys.exit(f"bad camera {spec!r}: expected NAME=SOURCE")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( {launch_for(src, args.cache, name)} )")
        factory.set_shared(True)
        factory.connect("media-configure", on_configure)
        mounts.add_factory("/" + name, factory)

    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY", server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
