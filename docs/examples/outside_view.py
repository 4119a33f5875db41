"""The outside view of the contract, as a test (issue 18).

Runs the ```python blocks of docs/ring-format.md (§9, the ring reader) and
docs/protocol.md (§11, the client) exactly as the docs print them, then uses only what
they define (plus the documented rules) against a real model server and ring:

    python outside_view.py SOCKET RING_DIR RING_NAME MODEL_ID [SERVER_PID]

The ring must hold at least one published frame and stay in state Starting (the writer
never stores Live); the server must have its control socket at SOCKET.ctl (what core-agent
passes). Before the futex wait the script prints `WAIT <write_seq>` on stdout
and expects the ring's writer to publish one more frame. Every check prints `ok: ...`;
the last line is `ALL OK`. Any failure raises (exit status 1). Needs Python 3 and numpy.
With SERVER_PID (the caller started the server) `connect` checks the peer's pid too.

Two single steps, for the trust rules (run as whatever user the test chooses; they need
only the standard library):

    python outside_view.py read RING_DIR RING_NAME [TRUST_UID]
        Ring(RING_DIR, RING_NAME, trust_uid=TRUST_UID).latest(); prints
        `READ frame_id=<id> bytes=<n> sum=<sum of the bytes>`, exit 0.
    python outside_view.py peer SOCKET [SERVER_UID [SERVER_PID]]
        connect(SOCKET, SERVER_UID, SERVER_PID), then a ping; prints `PONG`, exit 0.

Either prints `REFUSED <exception class>: <message>` and exits 3 when the docs' code
refuses (PermissionError or ValueError).
"""

import pathlib
import re
import socket
import struct
import sys

DOCS = pathlib.Path(__file__).resolve().parent.parent


def doc_blocks(name):
    text = (DOCS / name).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def load_docs():
    namespace = {"__name__": "framebus_docs"}
    for name in ("ring-format.md", "protocol.md"):
        blocks = doc_blocks(name)
        assert blocks, f"no python block in docs/{name}"
        for block in blocks:
            exec(compile(block, f"docs/{name}", "exec"), namespace)
    return namespace


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def main(sock_path, ring_dir, ring_name, model_id, server_pid=None):
    import numpy as np

    d = load_docs()
    Ring, connect, send, recv, call = d["Ring"], d["connect"], d["send"], d["recv"], d["call"]
    infer_request = d["infer_request"]

    # Ring: layout 2, a generation an IEEE double holds exactly, state Starting (§3.4).
    ring = Ring(ring_dir, ring_name)
    check(ring.version == 2, "ring layout version 2")
    check(0 < ring.generation < 2**53 and int(float(ring.generation)) == ring.generation,
          "generation fits in 53 bits")
    check(ring.state() == d["STARTING"], "ring is in Starting")
    frame = ring.latest()
    check(frame is not None, "latest frame read inside the seqlock")
    slot, seq, frame_id, capture_ts, data = frame
    check(len(data) == ring.frame_size, "frame bytes complete")
    y = np.frombuffer(data, np.uint8, ring.height * ring.strides[0]).reshape(
        ring.height, ring.strides[0])[:, :ring.width]
    check(0 < float(y.mean()) < 255, "luma plane viewed with numpy")

    # protocol.md §1: the peer is the server's uid (here this process's own, or root) and,
    # when the caller started the server, its pid.
    pid = None if server_pid is None else int(server_pid)
    if pid is not None:
        try:
            connect(sock_path, server_pid=pid + 1).close()
            raise AssertionError("connect accepted a peer whose pid is not the server's")
        except PermissionError as e:
            check(f"peer pid {pid} " in str(e), f"another pid expected -> refused: {e}")
    s = connect(sock_path, server_pid=pid)
    check(True, f"peer checked with SO_PEERCRED (uid own or root, pid {pid or 'unchecked'})")
    check(call(s, {"type": "ping", "v": 1, "id": 1}) == {"type": "pong", "v": 1, "id": 1},
          "ping answered with pong")

    # A frame of a Starting ring is served; the generation went through a double.
    req = infer_request(7, "cam-outside", model_id, ring_name, ring, frame)
    req["frame"]["generation"] = int(float(ring.generation))  # held as a JavaScript number
    send(s, req)
    r = recv(s)
    check(r["type"] == "infer_result" and r["id"] == 7 and r["error"] is None,
          f"infer on a Starting ring succeeds (generation via a double): {r['error']}")
    check(r["frame_id"] == frame_id and r["camera_id"] == "cam-outside", "ids echoed")
    for det in r["detections"]:
        x1, y1, x2, y2 = det["bbox"]
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 and 0 <= det["confidence"] <= 1
    check(True, f"{len(r['detections'])} detections with normalised boxes")

    def infer_error(edit, id):
        q = infer_request(id, "cam-outside", model_id, ring_name, ring, frame)
        edit(q)
        a = call(s, q)
        check(a["type"] == "infer_result" and a["id"] == id and a["detections"] == [],
              f"request {id} answered by infer_result")
        return a["error"]

    # §5.1 / §7: a slot outside the ring is invalid_message inside infer_result.
    e = infer_error(lambda q: q["frame"].update(slot=ring.slots), 8)
    check(e["code"] == "invalid_message" and str(ring.slots) in e["message"],
          f"slot out of range -> infer_result invalid_message: {e['message']}")
    e = infer_error(lambda q: q["frame"].update(seq=seq + 1), 9)
    check(e["code"] == "invalid_message", "odd seq -> infer_result invalid_message")
    # stale_frame names the ring once.
    e = infer_error(lambda q: q["frame"].update(seq=seq + 2 * ring.slots), 10)
    check(e["code"] == "stale_frame" and e["message"].count(ring_name) == 1,
          f"stale seq -> stale_frame naming the ring once: {e['message']}")
    e = infer_error(lambda q: q["frame"].update(generation=ring.generation ^ 1), 11)
    check(e["code"] == "stale_frame" and e["message"].count(ring_name) == 1,
          f"other generation -> stale_frame: {e['message']}")
    e = infer_error(lambda q: q["frame"].update(ring="no-such-ring"), 12)
    check(e["code"] == "unknown_ring", "missing ring -> unknown_ring")
    e = infer_error(lambda q: q["meta"].update(height=ring.height + 2), 13)
    check(e["code"] == "geometry_mismatch", "wrong height -> geometry_mismatch")
    e = infer_error(lambda q: q.update(model_id="other"), 14)
    check(e["code"] == "model_unavailable", "other model -> model_unavailable")

    # §6.6: requests that never became typed requests get `error`.
    a = call(s, {"type": "ping", "v": 99, "id": 15})
    check(a["type"] == "error" and a["error"]["code"] == "unsupported_version"
          and a["v"] == 1 and a["id"] == 15, "v 99 -> error unsupported_version, v 1")
    a = call(s, {"type": "subscribe", "v": 1, "id": 16})
    check(a["error"]["code"] == "unknown_message_type", "unknown type -> unknown_message_type")
    a = call(s, {"type": "ping", "v": 1, "id": 17, "extra": 1})
    check(a["error"]["code"] == "invalid_message" and a["id"] == 17,
          "unknown member -> error invalid_message with the id")
    s.sendall(struct.pack(">I", 0))
    a = recv(s)
    check(a["type"] == "error" and a["error"]["code"] == "malformed_frame" and a["id"] is None,
          "zero-length frame -> malformed_frame, id null")
    check(call(s, {"type": "ping", "v": 1, "id": 18})["id"] == 18, "connection still in sync")

    # §5: futex wait for the next publish. The test's writer publishes once this process
    # sleeps in FUTEX_WAIT (it watches /proc/<pid>/syscall), so the wake-up must come
    # from the writer's FUTEX_WAKE: record what the docs' syscall returns.
    results = []
    real_libc = d["libc"]

    class RecordingLibc:
        def __getattr__(self, name):
            return getattr(real_libc, name)

        def syscall(self, *args):
            r = real_libc.syscall(*args)
            results.append((r, d["ctypes"].get_errno() if r == -1 else 0))
            return r

    d["libc"] = RecordingLibc()
    last = ring.write_seq()
    print(f"WAIT {last}", flush=True)
    outcome, n = ring.wait_for_publish(last, 30.0)
    d["libc"] = real_libc
    check(outcome == "published" and n == last + 1, f"wait_for_publish saw publish {n}")
    check((0, 0) in results, f"FUTEX_WAIT slept and was woken by the writer: {results}")
    newer = ring.latest()
    check(newer is not None and newer[1] == 2 * n, "the new frame is the latest")
    r = call(s, infer_request(19, "cam-outside", model_id, ring_name, ring, newer))
    check(r["error"] is None, "the new frame is served")

    # §2: end of stream inside a frame is answered with malformed_frame, id null.
    h = connect(sock_path)
    h.sendall(struct.pack(">I", 33) + b'{"type":"p')
    h.shutdown(socket.SHUT_WR)
    a = recv(h)
    check(a is not None and a["type"] == "error" and a["error"]["code"] == "malformed_frame"
          and a["id"] is None, f"half-close mid-frame -> malformed_frame: {a}")
    check(recv(h) is None, "then end of stream")
    h.close()

    # §5.5: shutdown is refused on the data socket (invalid_message, its id), which
    # keeps serving; on the control socket (<socket>.ctl here) it is acknowledged, then
    # end of stream on every connection.
    other = connect(sock_path)
    check(call(other, {"type": "ping", "v": 1, "id": 20})["type"] == "pong", "second client")
    a = call(s, {"type": "shutdown", "v": 1, "id": 21})
    check(a["type"] == "error" and a["id"] == 21 and a["error"]["code"] == "invalid_message",
          f"shutdown on the data socket refused: {a}")
    check(call(s, {"type": "ping", "v": 1, "id": 22})["type"] == "pong", "still serving")
    ctl = connect(sock_path + ".ctl")
    a = call(ctl, {"type": "shutdown", "v": 1, "id": 23})
    check(a == {"type": "shutdown_ack", "v": 1, "id": 23}, "shutdown acknowledged")
    check(recv(ctl) is None, "end of stream after shutdown_ack")
    check(recv(s) is None and recv(other) is None, "idle data connections closed too")
    ctl.close()
    s.close()
    other.close()
    ring.close()
    print("ALL OK", flush=True)


def read_step(ring_dir, ring_name, trust_uid=None):
    d = load_docs()
    ring = d["Ring"](ring_dir, ring_name, trust_uid=trust_uid)
    frame = ring.latest()
    assert frame is not None, "no frame in the ring"
    _slot, _seq, frame_id, _capture_ts, data = frame
    print(f"READ frame_id={frame_id} bytes={len(data)} sum={sum(data)}", flush=True)
    ring.close()


def peer_step(sock_path, server_uid=None, server_pid=None):
    d = load_docs()
    s = d["connect"](sock_path, server_uid, server_pid)
    s.settimeout(30)
    answer = d["call"](s, {"type": "ping", "v": 1, "id": 1})
    assert answer == {"type": "pong", "v": 1, "id": 1}, answer
    print("PONG", flush=True)
    s.close()


if __name__ == "__main__":
    # step: (function, how many path arguments, how many optional integer arguments)
    steps = {"read": (read_step, 2, 1), "peer": (peer_step, 1, 2)}
    if len(sys.argv) > 1 and sys.argv[1] in steps:
        step, paths, ints = steps[sys.argv[1]]
        args = sys.argv[2:]
        if not paths <= len(args) <= paths + ints:
            sys.exit(__doc__)
        args = args[:paths] + [int(a) for a in args[paths:]]
        try:
            step(*args)
        except (PermissionError, ValueError) as e:
            print(f"REFUSED {type(e).__name__}: {e}", flush=True)
            sys.exit(3)
    elif len(sys.argv) in (5, 6):
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
