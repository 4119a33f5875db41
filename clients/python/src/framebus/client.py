"""The model-server Unix-socket client (docs/protocol.md).

Frames are a 4-byte big-endian length and one JSON object (section 2). Requests may be
pipelined; responses come back in any order and are matched by ``id`` (section 4). Every
wait has a timeout; every error the server reports becomes a typed exception
(:mod:`framebus.errors`).

Example::

    from framebus import Client, RingReader
    ring = RingReader("cam-1", "/dev/shm/framebus")
    with Client("/run/framebus/yolov8n.sock", timeout_s=5) as c:
        result = c.infer(ring, ring.latest(), camera_id="cam-1", model_id="yolov8n")
        for d in result.detections:
            print(d.class_name, d.confidence, d.to_pixels(ring.geometry.width, ring.geometry.height))
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pwd
import socket
import struct
import time
from typing import Any, Dict, List, Optional, Tuple

from .errors import (ClientTimeout, ConnectionClosed, FramebusError, FrameTooLarge,
                     UnexpectedResponse, UntrustedPeer, error_from_wire)
from .ring import Frame, RingReader

#: Wire protocol version this client speaks (docs/protocol.md); the package's major version.
PROTOCOL_VERSION = 1
#: Default frame payload limit (``DEFAULT_MAX_FRAME``, 1 MiB).
DEFAULT_MAX_FRAME = 1 << 20
#: Responses received for other ids while waiting, kept until asked for. Bounded: a caller
#: that pipelines more than this without collecting gets :class:`FramebusError`.
MAX_BUFFERED = 4096

_HEAD = struct.Struct(">I")
_CRED = struct.Struct("3i")      # struct ucred: pid, uid, gid (SO_PEERCRED)


def _uid_of(user: "int | str") -> int:
    if isinstance(user, int):
        return user
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise FramebusError(f"server_uid: no user named {user!r}") from None


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detection; ``bbox`` is ``(x1, y1, x2, y2)`` normalised to ``0..1``."""

    class_id: int
    class_name: str
    confidence: float
    bbox: Tuple[float, float, float, float]

    def to_pixels(self, width: int, height: int) -> Tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` frame."""
        x1, y1, x2, y2 = self.bbox
        return (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))


@dataclasses.dataclass(frozen=True)
class InferResult:
    """A successful ``infer_result`` (section 6.1)."""

    id: int
    model_id: str
    camera_id: str
    frame_id: int
    detections: List[Detection]
    timings: Dict[str, int]
    raw: Dict[str, Any]


def infer_request(id: int, camera_id: str, model_id: str, ring: RingReader, frame: Frame,
                  deadline_ts_ns: Optional[int] = None) -> Dict[str, Any]:
    """The ``infer`` message (section 5.1) for ``frame`` of ``ring``."""
    g = ring.geometry
    return {
        "type": "infer", "v": PROTOCOL_VERSION, "id": id, "camera_id": camera_id,
        "model_id": model_id,
        "frame": {"ring": ring.name, "generation": ring.generation, "slot": frame.slot,
                  "seq": frame.seq},
        "meta": {"frame_id": frame.frame_id, "width": g.width, "height": g.height,
                 "format": g.format, "strides": list(g.strides),
                 "capture_ts_ns": frame.capture_ts_ns},
        "sent_ts_ns": time.monotonic_ns(),               # CLOCK_MONOTONIC on Linux
        "deadline_ts_ns": deadline_ts_ns,
    }


def encode(msg: Dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame: length prefix and compact JSON. Raises :class:`FrameTooLarge`."""
    payload = json.dumps(msg, separators=(",", ":")).encode()
    if not payload or len(payload) > max_frame:
        raise FrameTooLarge(f"message of {len(payload)} bytes, limit {max_frame}")
    return _HEAD.pack(len(payload)) + payload


class Client:
    """One connection to a model server.

    Args:
        path: the server's socket (e.g. ``/run/framebus/yolov8n.sock``).
        timeout_s: default limit for connecting and for each wait for a response.
        max_frame: largest response payload accepted (bigger: :class:`ConnectionClosed`
            after closing, as the stream cannot be resynchronised).
        server_uid: the uid the model server runs as (an int, or a user name such as
            ``"framebus"``); default: this process's effective uid. A client in the
            service group passes the service user.
        server_pid: the server's pid, when this program started the server itself.

    Right after connecting, the client reads ``SO_PEERCRED`` (docs/protocol.md section
    1) and accepts the peer only if its uid is ``server_uid`` or 0 (root) and, when
    ``server_pid`` is given, its pid is that one; :attr:`peer` keeps ``(pid, uid, gid)``.

    Raises:
        ConnectionClosed: the socket cannot be connected (``OSError`` kept as the cause).
        UntrustedPeer: another process is at the socket; nothing was sent.
    """

    def __init__(self, path: str, timeout_s: float = 10.0,
                 max_frame: int = 16 * DEFAULT_MAX_FRAME,
                 server_uid: "int | str | None" = None,
                 server_pid: Optional[int] = None) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.max_frame = max_frame
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._done: Dict[int, Dict[str, Any]] = {}
        want = os.geteuid() if server_uid is None else _uid_of(server_uid)
        self._sock: Optional[socket.socket] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(path)
            cred = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        except OSError as e:
            self._sock.close()
            self._sock = None
            raise ConnectionClosed(f"{path}: cannot connect: {e}") from e
        pid, uid, gid = _CRED.unpack(cred)
        self.peer: Tuple[int, int, int] = (pid, uid, gid)
        if uid not in (want, 0) or (server_pid is not None and pid != server_pid):
            self._sock.close()
            self._sock = None
            expected = f"uid {want} or 0" + ("" if server_pid is None else f", pid {server_pid}")
            raise UntrustedPeer(f"{path}: peer pid {pid} uid {uid} is not the model server "
                                f"(expected {expected})", pid, uid, gid)

    # --- plumbing ------------------------------------------------------------------------

    def next_id(self) -> int:
        """A fresh request id (unique on this connection, below 2**53)."""
        return next(self._ids)

    def send(self, msg: Dict[str, Any]) -> int:
        """Sends one message without waiting (pipelining); returns its id."""
        if self._sock is None:
            raise ConnectionClosed(f"{self.path}: connection closed")
        if msg.get("id") is None:
            msg = dict(msg, id=self.next_id())
        data = encode(msg, DEFAULT_MAX_FRAME)
        try:
            self._sock.sendall(data)
        except socket.timeout as e:
            raise ClientTimeout(f"{self.path}: send timed out") from e
        except OSError as e:                               # EPIPE after the server closed
            self.close()
            raise ConnectionClosed(f"{self.path}: send failed: {e}") from e
        return int(msg["id"])

    def _frame_from_buffer(self) -> Optional[Dict[str, Any]]:
        if len(self._buf) < 4:
            return None
        (n,) = _HEAD.unpack_from(self._buf)
        if n == 0 or n > self.max_frame:
            self.close()
            raise ConnectionClosed(f"{self.path}: response frame of {n} bytes (limit {self.max_frame})")
        if len(self._buf) < 4 + n:
            return None
        payload = bytes(self._buf[4:4 + n])
        del self._buf[:4 + n]
        try:
            msg = json.loads(payload)
        except ValueError as e:
            raise UnexpectedResponse(f"{self.path}: response is not JSON: {e}") from e
        if not isinstance(msg, dict):
            raise UnexpectedResponse(f"{self.path}: response is not an object")
        return msg

    def recv(self, timeout_s: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next message in arrival order, or ``None`` at a clean end of stream.

        A partial frame stays buffered across a timeout, so the stream stays in sync.
        Raises :class:`ClientTimeout` or :class:`ConnectionClosed` (end inside a frame).
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            msg = self._frame_from_buffer()
            if msg is not None:
                return msg
            if self._sock is None:
                raise ConnectionClosed(f"{self.path}: connection closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientTimeout(f"{self.path}: no complete response in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                self.close()
                raise ConnectionClosed(f"{self.path}: receive failed: {e}") from e
            if not chunk:
                partial = len(self._buf)
                self.close()
                if partial:
                    raise ConnectionClosed(f"{self.path}: stream ended inside a frame ({partial} bytes)")
                return None
            self._buf += chunk

    def wait(self, id: int, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """The response to request ``id``; responses to other ids are kept for later.

        Raises:
            ServerError subclass: an ``error`` message for this id, or one with ``id``
                ``null`` (a frame the server could not read at all).
            ClientTimeout, ConnectionClosed.
        """
        if id in self._done:
            return self._done.pop(id)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise ConnectionClosed(f"{self.path}: closed before the answer to request {id}")
            mid = msg.get("id")
            if msg.get("type") == "error" and (mid is None or mid == id):
                raise error_from_wire(msg.get("error") or {}, mid, msg.get("v"))
            if mid == id:
                return msg
            if len(self._done) >= MAX_BUFFERED:
                raise FramebusError(f"{self.path}: more than {MAX_BUFFERED} uncollected responses")
            self._done[int(mid)] = msg

    def call(self, msg: Dict[str, Any], expect: str, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """Sends ``msg`` and returns its response, checking its ``type`` is ``expect``."""
        r = self.wait(self.send(msg), timeout_s)
        if r.get("type") != expect:
            raise UnexpectedResponse(f"{self.path}: expected {expect}, got {r.get('type')}")
        return r

    # --- requests ------------------------------------------------------------------------

    def ping(self, timeout_s: Optional[float] = None) -> None:
        """``ping`` → ``pong`` (section 5.2)."""
        self.call({"type": "ping", "v": PROTOCOL_VERSION, "id": self.next_id()}, "pong", timeout_s)

    def status(self) -> Dict[str, Any]:
        """``get_status`` → the ``status`` message as a dict (section 6.3)."""
        return self.call({"type": "get_status", "v": PROTOCOL_VERSION, "id": self.next_id()}, "status")

    def stats(self) -> Dict[str, Any]:
        """``get_stats`` → the ``stats`` message as a dict (section 6.4)."""
        return self.call({"type": "get_stats", "v": PROTOCOL_VERSION, "id": self.next_id()}, "stats")

    def shutdown(self) -> None:
        """``shutdown`` → ``shutdown_ack``: the server drains and exits (section 5.5)."""
        self.call({"type": "shutdown", "v": PROTOCOL_VERSION, "id": self.next_id()}, "shutdown_ack")

    def submit(self, ring: RingReader, frame: Frame, camera_id: str, model_id: str,
               deadline_ms: Optional[float] = None) -> int:
        """Sends an ``infer`` for ``frame`` without waiting; returns its id for :meth:`result`."""
        deadline = None if deadline_ms is None else time.monotonic_ns() + int(deadline_ms * 1e6)
        return self.send(infer_request(self.next_id(), camera_id, model_id, ring, frame, deadline))

    def result(self, id: int, timeout_s: Optional[float] = None) -> InferResult:
        """The result of a submitted ``infer``; a failure raises its typed error."""
        r = self.wait(id, timeout_s)
        if r.get("type") != "infer_result":
            raise UnexpectedResponse(f"{self.path}: expected infer_result, got {r.get('type')}")
        if r.get("error") is not None:
            raise error_from_wire(r["error"], id, r.get("v"))
        dets = [Detection(int(d["class_id"]), str(d["class_name"]), float(d["confidence"]),
                          tuple(float(x) for x in d["bbox"]))  # type: ignore[arg-type]
                for d in r.get("detections", [])]
        return InferResult(id, r["model_id"], r["camera_id"], r["frame_id"], dets,
                           dict(r.get("timings") or {}), r)

    def infer(self, ring: RingReader, frame: Frame, camera_id: str, model_id: str,
              deadline_ms: Optional[float] = None, timeout_s: Optional[float] = None) -> InferResult:
        """Runs the model on ``frame`` of ``ring`` and waits for the detections."""
        return self.result(self.submit(ring, frame, camera_id, model_id, deadline_ms), timeout_s)

    # --- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection (idempotent); requests in flight are abandoned."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
