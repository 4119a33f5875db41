"""Tests of the framebus Python client against the real binaries.

Run by ``model-server/tests/python_client.rs`` (so ``scripts/test.sh`` runs them in CI):

    FRAMEBUS_BIN_DIR=target/debug FRAMEBUS_ASSETS=... ORT_DYLIB_PATH=... \\
        python -m unittest discover -s clients/python/tests -v

Without FRAMEBUS_BIN_DIR / assets the tests that need them are skipped, unless CI=true
(then a missing prerequisite is a failure).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent / "src"))   # the source tree, not an installed copy

import framebus  # noqa: E402
from framebus import errors  # noqa: E402

IN_CI = os.environ.get("CI", "") not in ("", "0", "false")
BIN = pathlib.Path(os.environ.get("FRAMEBUS_BIN_DIR", REPO / "target/debug"))
ASSETS = pathlib.Path(os.environ.get("FRAMEBUS_ASSETS", REPO.parent / "shared/assets"))
ORT = pathlib.Path(os.environ.get("ORT_DYLIB_PATH", REPO / ".local/lib/libonnxruntime.so"))
VIDEO = ASSETS / "video/people_walk_540p.mp4"
MODEL = ASSETS / "models/yolov8n_int8.onnx"


def missing() -> str:
    for p in (BIN / "model-server", BIN / "frame-kernel", VIDEO, MODEL, ORT):
        if not p.exists():
            return str(p)
    return ""


def need_real() -> None:
    m = missing()
    if m:
        if IN_CI:
            raise AssertionError(f"{m} missing (CI=true: the Python client tests must run)")
        raise unittest.SkipTest(f"{m} missing")


def video_frames(n: int, start: int = 0) -> list:
    import cv2
    cap = cv2.VideoCapture(str(VIDEO))
    out = []
    i = 0
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        if i >= start:
            out.append(img)
        i += 1
    cap.release()
    assert len(out) == n, f"read {len(out)} of {n} frames from {VIDEO}"
    return out


class VersionTest(unittest.TestCase):
    """The package is versioned with the protocol; its constants match the Rust contract."""

    def test_major_version_is_the_protocol_version(self) -> None:
        lib = (REPO / "proto-schema/src/lib.rs").read_text()
        m = re.search(r"pub const PROTOCOL_VERSION: u16 = (\d+);", lib)
        self.assertIsNotNone(m)
        self.assertEqual(int(m.group(1)), framebus.PROTOCOL_VERSION)
        self.assertEqual(int(framebus.__version__.split(".")[0]), framebus.PROTOCOL_VERSION)
        toml = (HERE.parent / "pyproject.toml").read_text()
        self.assertIn(f'version = "{framebus.__version__}"', toml)

    def test_layout_version_and_max_frame(self) -> None:
        layout = (REPO / "shm-ring/src/layout.rs").read_text()
        self.assertIn(f"pub const LAYOUT_VERSION: u32 = {framebus.LAYOUT_VERSION};", layout)
        framing = (REPO / "proto-schema/src/framing/mod.rs").read_text()
        self.assertIn("pub const DEFAULT_MAX_FRAME: usize = 1 << 20;", framing)
        self.assertEqual(framebus.DEFAULT_MAX_FRAME, 1 << 20)

    def test_one_exception_class_per_documented_code(self) -> None:
        doc = (REPO / "docs/protocol.md").read_text()
        table = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", doc, flags=re.M))
        self.assertEqual(len(table), 14)
        self.assertEqual(set(table), set(framebus.ERROR_CLASSES))
        for code, number in table.items():
            cls = framebus.ERROR_CLASSES[code]
            self.assertEqual(cls.number, int(number), code)
            self.assertTrue(issubclass(cls, errors.ServerError))
        e = errors.error_from_wire({"code": "stale_frame", "message": "m"}, 7)
        self.assertIsInstance(e, errors.StaleFrame)
        self.assertEqual((e.id, e.message, e.retry), (7, "m", True))
        self.assertIsInstance(errors.error_from_wire({"code": "new_code", "message": ""}, 1),
                              errors.Internal)


class ShardTest(unittest.TestCase):
    """framebus.replica_for is core-agent's sharding function (shard.rs pins the same values)."""

    def test_same_assignment_as_core_agent(self) -> None:
        got = [framebus.replica_for(i, 7) for i in ("cam-0000", "cam-0001", "cam-0002", "entrance")]
        self.assertEqual(got, [2, 1, 2, 5])
        rust = (REPO / "core-agent/src/shard.rs").read_text()
        self.assertIn("const PINNED_7: [u32; 4] = [2, 1, 2, 5];", rust)

    def test_growth_moves_only_to_the_new_replica(self) -> None:
        ids = [f"cam-{i:04}" for i in range(1000)]
        moved = [i for i in ids if framebus.replica_for(i, 4) != framebus.replica_for(i, 5)]
        self.assertTrue(all(framebus.replica_for(i, 5) == 4 for i in moved))
        self.assertTrue(0.7 * 200 <= len(moved) <= 1.3 * 200, len(moved))


class OfflineRingTest(unittest.TestCase):
    """Writer and reader against each other, no server."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        self.dir = framebus.ensure_ring_dir(os.path.join(self.tmp, "rings"))

    def tearDown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_ring_dir_rules(self) -> None:
        self.assertEqual(os.stat(self.dir).st_mode & 0o7777, 0o750)
        loose = os.path.join(self.tmp, "loose")
        os.mkdir(loose)
        os.chmod(loose, 0o777)
        with self.assertRaises(framebus.RingError):
            framebus.ensure_ring_dir(loose)
        os.symlink(self.dir, os.path.join(self.tmp, "link"))
        with self.assertRaises(framebus.RingError):
            framebus.ensure_ring_dir(os.path.join(self.tmp, "link"))

    def test_round_trip_seqlock_and_lifecycle(self) -> None:
        with self.assertRaises(framebus.RingError):
            framebus.RingWriter("../x", 4, 2, ring_dir=self.dir)
        with self.assertRaises(framebus.RingError):
            framebus.RingWriter("odd", 3, 3, "NV12", ring_dir=self.dir)
        w = framebus.RingWriter("cam", 64, 32, "NV12", ring_dir=self.dir, slots=3)
        path = os.path.join(self.dir, "cam.ring")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        with self.assertRaises(framebus.RingError):          # one writer per ring
            framebus.RingWriter("cam", 64, 32, "NV12", ring_dir=self.dir)
        r = framebus.RingReader("cam", self.dir)
        self.assertEqual((r.version, r.slots, r.generation), (2, 3, w.generation))
        self.assertLess(r.generation, 2**53)
        self.assertEqual(r.state(), framebus.STARTING)
        self.assertIsNone(r.latest())
        frames = [np.full(64 * 48, i, np.uint8) for i in range(5)]
        for i, f in enumerate(frames):
            slot, seq = w.publish(f, pts_ns=i)
            self.assertEqual((slot, seq), (i % 3, 2 * (i + 1)))
        self.assertEqual(r.state(), framebus.LIVE)
        latest = r.latest()
        self.assertEqual((latest.frame_id, latest.seq), (4, 10))
        self.assertTrue(np.array_equal(latest.data, frames[4]))
        self.assertEqual(latest.plane(0).shape, (32, 64))
        self.assertEqual(latest.plane(1).shape, (16, 64))
        self.assertIsNone(r.read(latest.slot, latest.seq - 6), "overwritten -> stale")
        self.assertIsNone(r.read(latest.slot, latest.seq + 1), "odd seq")
        # A slot being written (odd seq) is never returned.
        sh = r._addr + 256 + 64 * latest.slot
        import ctypes
        ctypes.c_uint64.from_address(w._addr + 256 + 64 * latest.slot).value = latest.seq + 1
        self.assertIsNone(r.read(latest.slot, latest.seq))
        ctypes.c_uint64.from_address(w._addr + 256 + 64 * latest.slot).value = latest.seq
        self.assertEqual(ctypes.c_uint64.from_address(sh).value, latest.seq)
        self.assertEqual(r.wait_for_publish(5, 0.05), ("timeout", 5))
        self.assertEqual(r.wait_for_publish(5, 0.05, poll_interval_s=0.01), ("timeout", 5))
        with self.assertRaises(framebus.RingError):
            w.publish(b"short")
        w.close()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(r.wait_for_publish(5, 1.0)[0], "closed")
        with self.assertRaises(errors.RingClosed):
            r.read(latest.slot, latest.seq)
        r.close()

    def test_reader_refuses_untrusted_files(self) -> None:
        w = framebus.RingWriter("cam", 8, 8, "BGR24", ring_dir=self.dir)
        os.chmod(w.path, 0o666)
        with self.assertRaises(framebus.RingError):
            framebus.RingReader("cam", self.dir)
        os.chmod(w.path, 0o640)
        os.symlink(w.path, os.path.join(self.dir, "alias.ring"))
        with self.assertRaises(framebus.RingError):
            framebus.RingReader("alias", self.dir)
        with open(os.path.join(self.dir, "junk.ring"), "wb") as f:
            f.write(b"x" * 4096)
        os.chmod(os.path.join(self.dir, "junk.ring"), 0o640)
        with self.assertRaises(framebus.RingError):
            framebus.RingReader("junk", self.dir)
        w.close()

    def test_stale_ring_of_a_dead_writer_is_replaced(self) -> None:
        code = ("import sys,os; sys.path.insert(0, %r); import framebus; "
                "w = framebus.RingWriter('cam', 8, 8, 'BGR24', ring_dir=%r); os._exit(0)"
                % (str(HERE.parent / "src"), self.dir))
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "cam.ring")))
        w = framebus.RingWriter("cam", 8, 8, "BGR24", ring_dir=self.dir)
        self.assertEqual(framebus.RingReader("cam", self.dir).generation, w.generation)
        w.close()


def need_root() -> None:
    """Switching users needs root; CI runs as root, so there a non-root run is a failure."""
    if os.geteuid() != 0:
        if IN_CI:
            raise AssertionError("CI=true but not root: the trust tests switch to uid 65534")
        raise unittest.SkipTest("needs root to switch to uid 65534")


#: The service user and group of these tests (numeric only), an untrusted owner, `nobody`.
SVC_UID, SVC_GID, STRANGER_UID, OTHER_GID, NOBODY = 4242, 4243, 4244, 4245, 65534


def as_user(fn, uid: int, gid: int, groups: list) -> tuple:
    """Runs ``fn()`` in a forked child that dropped root to ``uid``/``gid`` with exactly
    ``groups`` as supplementary groups; returns ``(ok, "OK <result>" or "<Error>: <text>")``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child: never returns
        code, text = 1, "no result"
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            text, code = f"OK {fn()}", 0
        except BaseException as e:                         # noqa: B902 (reported to the parent)
            text = f"{type(e).__name__}: {e}"
        finally:
            os.write(w, text.encode()[:65000])
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, text


class TrustTest(unittest.TestCase):
    """Who the client trusts: ring owners and groups (ring-format.md §6.1, §8) and the peer
    at a socket (protocol.md section 1)."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        os.chmod(self.tmp, 0o755)                          # reachable by uid 65534

    def tearDown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_ring_file_rules(self) -> None:
        me, gid = os.geteuid(), os.getegid()

        def st(mode: int, uid: int, gid: int) -> os.stat_result:
            return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 4096, 0, 0, 0))

        check = framebus.ring.check_ring_file
        check("own", st(0o640, me, gid))
        check("root", st(0o640, 0, gid))
        bad = [(st(0o660, me, gid), (), "writable by group or others"),
               (st(0o646, me, gid), (), "writable by group or others"),
               (st(0o640, me + 1, gid), (), f"owned by uid {me + 1}, not a trusted uid"),
               (os.stat_result((0o040750, 1, 1, 1, me, gid, 4096, 0, 0, 0)), (), "not a regular file"),
               (os.stat_result((0o100640, 1, 1, 1, me, gid, 100, 0, 0, 0)), (),
                "shorter than the header")]
        for s, trusted, why in bad:
            with self.assertRaises(framebus.RingError, msg=why) as cm:
                check("r", s, trusted)
            self.assertIn(why, str(cm.exception))
        if me != 0:
            # A non-owner, non-root reader: trusted owner, read through one of its groups.
            other = me + 1
            check("svc", st(0o640, other, gid), [other])
            for mode, g, why in [(0o600, gid, "not readable through a group"),
                                 (0o644, gid + 1000, "not readable through a group")]:
                with self.assertRaises(framebus.RingError) as cm:
                    check("svc", st(mode, other, g), [other])
                self.assertIn(why, str(cm.exception))

    def test_group_member_reads_a_ring_of_the_service_user(self) -> None:
        """ring-format.md §6.1: a client in the service group (uid 65534 with the ring's
        group) reads a ring of the service user when it trusts that uid; it refuses a
        world-writable ring, a ring of another owner, and a ring of a group it is not in."""
        need_root()
        ring_dir = framebus.ensure_ring_dir(os.path.join(self.tmp, "rings"))
        os.chown(ring_dir, -1, SVC_GID)                    # 0750 with the service group
        writers = []
        for name, owner, group, mode in [("svc", SVC_UID, SVC_GID, 0o640),
                                         ("loose", SVC_UID, SVC_GID, 0o646),
                                         ("stranger", STRANGER_UID, SVC_GID, 0o640),
                                         ("othergroup", SVC_UID, OTHER_GID, 0o644)]:
            w = framebus.RingWriter(name, 8, 8, "BGR24", ring_dir=ring_dir, slots=2)
            w.publish(np.full(192, 5, np.uint8))
            os.chown(w.path, owner, group)                 # as the service's writer made it
            os.chmod(w.path, mode)
            writers.append(w)

        def read(name: str, trusted: tuple = (SVC_UID,)) -> int:
            with framebus.RingReader(name, ring_dir, trusted_uids=trusted) as r:
                return int(r.latest().data.sum())

        member = (NOBODY, NOBODY, [SVC_GID])
        self.assertEqual(as_user(lambda: read("svc"), *member), (True, "OK 960"))
        for name, trusted, why in [("svc", (), "owned by uid 4242, not a trusted uid"),
                                   ("loose", (SVC_UID,), "mode 0o646 is writable by group or others"),
                                   ("stranger", (SVC_UID,), "owned by uid 4244, not a trusted uid"),
                                   ("othergroup", (SVC_UID,), "not readable through a group")]:
            ok, text = as_user(lambda: read(name, trusted), *member)
            self.assertFalse(ok, f"{name} was read: {text}")
            self.assertTrue(text.startswith("RingError: ") and why in text, text)
        # Not in the group at all: the ring directory (0750) keeps it out.
        ok, text = as_user(lambda: read("svc"), NOBODY, NOBODY, [])
        self.assertFalse(ok)
        self.assertIn("needs the service group", text)
        for w in writers:
            w.close()

    def _listener(self) -> tuple:
        path = os.path.join(self.tmp, "own.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(8)
        self.addCleanup(srv.close)
        return srv, path

    def test_peer_pid_is_checked(self) -> None:
        """protocol.md section 1: with ``server_pid`` the peer must be that process; the
        client closes without sending anything otherwise."""
        srv, path = self._listener()                       # this process is the "server"
        with framebus.Client(path, timeout_s=2, server_pid=os.getpid()) as c:
            self.assertEqual(c.peer[:2], (os.getpid(), os.geteuid()))
        with self.assertRaises(errors.UntrustedPeer) as cm:
            framebus.Client(path, timeout_s=2, server_pid=os.getpid() + 1)
        e = cm.exception
        self.assertIsInstance(e, PermissionError)
        self.assertEqual((e.pid, e.uid), (os.getpid(), os.geteuid()))
        self.assertIn(f"peer pid {os.getpid()} uid {os.geteuid()} is not the model server", str(e))
        srv.settimeout(2)
        for _ in range(2):                                 # both connections: nothing sent
            conn, _ = srv.accept()
            conn.settimeout(2)
            self.assertEqual(conn.recv(1), b"")
            conn.close()
        with self.assertRaises(errors.FramebusError):
            framebus.Client(path, timeout_s=2, server_uid="no-such-user-framebus")
        if os.geteuid() != 0:                              # root's peers are always root
            with self.assertRaises(errors.UntrustedPeer):
                framebus.Client(path, timeout_s=2, server_uid=os.geteuid() + 1)

    def test_peer_uid_is_checked(self) -> None:
        """A listener of another uid (65534) at the socket path is refused unless the
        client was told that uid is the server's."""
        need_root()
        d = os.path.join(self.tmp, "fake")
        os.mkdir(d, 0o700)
        os.chown(d, NOBODY, NOBODY)
        path = os.path.join(d, "det.sock")
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:                                       # the impostor
            try:
                os.close(ready_r)
                os.close(hold_w)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(path)
                s.listen(8)
                os.write(ready_w, b"R")
                os.read(hold_r, 1)                         # until the parent closes it
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(hold_r)
        try:
            self.assertEqual(os.read(ready_r, 1), b"R", "the fake listener did not start")
            for server_uid in (None, SVC_UID, 0):
                with self.assertRaises(errors.UntrustedPeer, msg=str(server_uid)) as cm:
                    framebus.Client(path, timeout_s=2, server_uid=server_uid)
                self.assertEqual((cm.exception.pid, cm.exception.uid), (pid, NOBODY))
            with framebus.Client(path, timeout_s=2, server_uid=NOBODY, server_pid=pid) as c:
                self.assertEqual(c.peer[:2], (pid, NOBODY))
            import pwd
            name = pwd.getpwuid(NOBODY).pw_name
            framebus.Client(path, timeout_s=2, server_uid=name).close()
        finally:
            os.close(hold_w)
            os.close(ready_r)
            os.waitpid(pid, 0)


class ServerTest(unittest.TestCase):
    """The client and both ring ends against the real model-server and frame-kernel."""

    @classmethod
    def setUpClass(cls) -> None:
        need_real()
        cls.tmp = tempfile.mkdtemp()
        cls.rings = framebus.ensure_ring_dir(os.path.join(cls.tmp, "rings"))
        cls.sock = os.path.join(cls.tmp, "det.sock")
        cls.server = subprocess.Popen(
            [str(BIN / "model-server"), "--model", str(MODEL), "--model-id", "det",
             "--socket", cls.sock, "--ring-dir", cls.rings, "--ort-dylib", str(ORT),
             "--control-socket", cls.sock + ".ctl", "--threads", "1"],
            stdin=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        deadline = time.monotonic() + 120
        while True:
            assert cls.server.poll() is None, "model-server exited during start-up"
            try:
                with framebus.Client(cls.sock, timeout_s=2) as c:
                    c.ping()
                break
            except (framebus.FramebusError, OSError):
                assert time.monotonic() < deadline, "model-server not ready in 120 s"
                time.sleep(0.05)
        cls.images = video_frames(4, start=100)

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.server.poll() is None:
            cls.server.send_signal(signal.SIGTERM)
            cls.server.wait(timeout=60)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_opencv_frames_through_a_python_ring(self) -> None:
        h, w = self.images[0].shape[:2]
        with framebus.RingWriter("py-cam", w, h, "BGR24", ring_dir=self.rings) as writer, \
                framebus.RingReader("py-cam", self.rings) as ring, \
                framebus.Client(self.sock, timeout_s=60) as c:
            for img in self.images:
                writer.publish(img)
            frame = ring.latest()
            self.assertTrue(np.array_equal(frame.image(), self.images[-1]))
            r = c.infer(ring, frame, camera_id="py-cam", model_id="det")
            people = [d for d in r.detections if d.class_name == "person"]
            self.assertGreaterEqual(len(people), 2, r.detections)
            for d in r.detections:
                x1, y1, x2, y2 = d.bbox
                self.assertTrue(0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1)
            self.assertEqual((r.camera_id, r.frame_id), ("py-cam", frame.frame_id))

            # Pipelined: four requests in flight, collected in reverse order by id.
            ids = [c.submit(ring, ring.read(s, q), "py-cam", "det")
                   for s, q in [(frame.slot, frame.seq)] * 2]
            ids += [c.send({"type": "ping", "v": 1, "id": c.next_id()}),
                    c.send({"type": "get_stats", "v": 1, "id": c.next_id()})]
            self.assertEqual(c.wait(ids[3])["type"], "stats")
            self.assertEqual(c.wait(ids[2])["type"], "pong")
            self.assertEqual([c.result(i).frame_id for i in reversed(ids[:2])], [frame.frame_id] * 2)

            # Typed errors, per wire code.
            def infer_raw(**edit: object) -> None:
                req = framebus.infer_request(c.next_id(), "py-cam", "det", ring, frame)
                for k, v in edit.items():
                    part, _, key = k.partition("__")
                    if key:
                        req[part][key] = v
                    else:
                        req[part] = v
                c.result(c.send(req))

            cases = [({"frame__seq": frame.seq + 2 * ring.slots}, errors.StaleFrame),
                     ({"frame__generation": ring.generation ^ 1}, errors.StaleFrame),
                     ({"frame__slot": ring.slots}, errors.InvalidMessage),
                     ({"frame__ring": "nope"}, errors.UnknownRing),
                     ({"meta__height": h + 2}, errors.GeometryMismatch),
                     ({"model_id": "other"}, errors.ModelUnavailable),
                     ({"meta__width": 0}, errors.InvalidMessage)]
            for edit, cls in cases:
                with self.assertRaises(cls, msg=str(edit)) as cm:
                    infer_raw(**edit)
                self.assertIsNotNone(cm.exception.id)
            with self.assertRaises(errors.UnsupportedVersion) as cm:
                c.wait(c.send({"type": "ping", "v": 99, "id": c.next_id()}))
            self.assertEqual(cm.exception.server_version, 1)
            with self.assertRaises(errors.UnknownMessageType):
                c.wait(c.send({"type": "subscribe", "v": 1, "id": c.next_id()}))
            with self.assertRaises(errors.ClientTimeout):
                c.wait(10**9, timeout_s=0.2)
            c.ping()                                        # still in sync after all that
            st = c.status()
            self.assertEqual((st["model_id"], st["state"]), ("det", "ready"))
            with self.assertRaises(errors.FrameTooLarge):
                c.send({"type": "ping", "v": 1, "id": 1, "pad": "x" * (1 << 20)})

    def test_frame_kernel_ring_read_with_futex_and_served(self) -> None:
        kernel = subprocess.Popen(
            [str(BIN / "frame-kernel"), "--camera-id", "k-cam", "--source", str(VIDEO),
             "--ring-dir", self.rings, "--max-frames", "250",
             # a lap of the ring takes 16 / 6.25 fps = 2.6 s: room for a loaded CI machine
             "--slots", "16", "--speed", "0.25"],
            stdin=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(self.rings, "k-cam.ring")):
                self.assertLess(time.monotonic(), deadline, "no ring from frame-kernel")
                self.assertIsNone(kernel.poll(), "frame-kernel exited early")
                time.sleep(0.02)
            ring = framebus.RingReader("k-cam", self.rings)
            self.assertEqual(ring.geometry.format, "NV12")
            outcome, n = ring.wait_for_publish(0, 30)          # futex
            self.assertEqual(outcome, "published")
            outcome, n2 = ring.wait_for_publish(n, 30, poll_interval_s=0.005)   # polling
            self.assertEqual(outcome, "published")
            self.assertGreater(n2, n)
            frame = ring.latest()
            self.assertEqual(frame.data.nbytes, ring.geometry.frame_size)
            self.assertTrue(0 < float(frame.plane(0).mean()) < 255)
            with framebus.Client(self.sock, timeout_s=60) as c:
                for attempt in range(5):                       # lapped by the kernel: retry
                    try:
                        r = c.infer(ring, frame, camera_id="k-cam", model_id="det")
                        break
                    except errors.StaleFrame:
                        self.assertLess(attempt, 4, "every frame went stale before it was served")
                        frame = ring.latest()
                self.assertGreaterEqual(len(r.detections), 1)
                self.assertEqual(r.frame_id, frame.frame_id)
            got = list(itertools.islice(ring.frames(timeout_s=30), 3))
            self.assertEqual(len(got), 3)
            self.assertTrue(got[0].frame_id < got[1].frame_id < got[2].frame_id)
            kernel.send_signal(signal.SIGTERM)                 # the kernel closes its ring
            outcome = "published"
            while outcome == "published":
                outcome, n = ring.wait_for_publish(ring.write_seq(), 30)
            self.assertEqual((outcome, ring.state()), ("closed", framebus.CLOSED))
            ring.close()
            self.assertEqual(kernel.wait(timeout=60), 0)
        finally:
            if kernel.poll() is None:
                kernel.kill()
                kernel.wait()

    def test_peer_is_the_server_it_started(self) -> None:
        """protocol.md section 1: this test started the server, so it checks the pid too."""
        with framebus.Client(self.sock, timeout_s=30, server_pid=self.server.pid) as c:
            self.assertEqual(c.peer[0], self.server.pid)
            c.ping()
        with self.assertRaises(errors.UntrustedPeer):
            framebus.Client(self.sock, timeout_s=30, server_pid=self.server.pid + 1)

    def test_z_shutdown(self) -> None:
        """Last (alphabetical order): shutdown drains and the server exits 0. Only on the
        control socket: the data socket refuses it (protocol.md §5.5)."""
        with framebus.Client(self.sock, timeout_s=30) as c:
            with self.assertRaises(errors.InvalidMessage):
                c.shutdown()
            c.ping()
        with framebus.Client(self.sock + ".ctl", timeout_s=30) as c:
            c.shutdown()
            self.assertIsNone(c.recv(timeout_s=30))
        self.assertEqual(self.server.wait(timeout=60), 0)
        with self.assertRaises(errors.ConnectionClosed):
            framebus.Client(self.sock, timeout_s=1)


if __name__ == "__main__":
    unittest.main()
