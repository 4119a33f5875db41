"""The shared-memory ring (docs/ring-format.md, layout version 2): a reader and a writer.

The reader checks a ring the way the model server does (name rule, ``O_NOFOLLOW``, a
regular file owned by a trusted uid, not writable by group or others, every header field),
reads frames inside the slot's seqlock so a torn or overwritten frame is never returned,
and sleeps on the ring's futex word for the next publish (or polls where no futex call is
possible).

The writer creates a ring that ``model-server`` accepts: see :func:`ensure_ring_dir` and
:class:`RingWriter` for what the server requires of the directory and the file.

Memory ordering: CPython issues every load and store below as one aligned C access, in
program order; x86_64 keeps loads in order with loads and stores with stores, which is all
the seqlock needs there. On aarch64 a reader or writer in Python lacks the fences of §4 and
may, rarely, accept a torn frame (reader) or expose one (writer); use the Rust crate there.

A mapping dies of SIGBUS if its file is truncated under it (only the ring's owner or root
can do that, §6.1). The reader checks the file length (``fstat``) before it copies a frame,
which narrows that window to the copy itself but does not close it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import re
import secrets
import stat
import struct
import time
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from . import _libc
from .errors import RingClosed, RingError

#: Ring layout version this package writes; the reader accepts 1 and 2 (§10).
LAYOUT_VERSION = 2
#: Default ring directory (§1).
DEFAULT_RING_DIR = "/dev/shm/framebus"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAGIC = b"FBUSRING"
HEADER_SIZE, SLOT_HEADER_SIZE, SLOT_TABLE_OFFSET = 256, 64, 256
MAX_DIM, MAX_SLOTS, MAX_GENERATION = 8192, 1024, 2**53 - 1
FIXED = struct.Struct("<8sIIIIQQQQQQIIII3I3IQII")   # the 128-byte fixed header (§3.1)
assert FIXED.size == 128

# Live header offsets (§3.2).
OFF_WRITE_SEQ, OFF_NOTIFY, OFF_STATE, OFF_HEARTBEAT = 128, 136, 140, 144
OFF_DECODED, OFF_PUBLISHED, OFF_DECODE_ERRORS, OFF_RECONNECTS = 152, 160, 168, 176
OFF_LAST_FRAME, OFF_FPS_MILLI = 184, 192

STARTING, LIVE, RECONNECTING, CLOSED = 0, 1, 2, 3
STATE_NAMES = {STARTING: "starting", LIVE: "live", RECONNECTING: "reconnecting", CLOSED: "closed"}
FORMATS = {1: "NV12", 2: "I420", 3: "BGR24", 4: "RGB24"}
FORMAT_CODES = {v: k for k, v in FORMATS.items()}


def check_name(name: str) -> str:
    """Returns ``name`` if it matches the name rule (§1), else raises :class:`RingError`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RingError(f"ring name {name!r} breaks the rule ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$")
    return name


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Width, height, pixel format and the plane layout of one frame (§3.1)."""

    width: int
    height: int
    format: str
    strides: Tuple[int, int, int]
    offsets: Tuple[int, int, int]
    frame_size: int

    @staticmethod
    def packed(width: int, height: int, format: str) -> "Geometry":
        """The tight layout a writer of this project uses (``strides`` = row bytes)."""
        fmt = format.upper()
        if fmt not in FORMAT_CODES:
            raise RingError(f"unknown pixel format {format!r} (NV12, I420, BGR24, RGB24)")
        if not (1 <= width <= MAX_DIM and 1 <= height <= MAX_DIM):
            raise RingError(f"size {width}x{height} outside 1..={MAX_DIM}")
        w, h = width, height
        if fmt in ("NV12", "I420") and (w % 2 or h % 2):
            raise RingError(f"{fmt} needs an even width and height, got {w}x{h}")
        if fmt == "NV12":
            g = ((w, w, 0), (0, w * h, 0), w * h * 3 // 2)
        elif fmt == "I420":
            q = (w // 2) * (h // 2)
            g = ((w, w // 2, w // 2), (0, w * h, w * h + q), w * h + 2 * q)
        else:
            g = ((3 * w, 0, 0), (0, 0, 0), 3 * w * h)
        return Geometry(w, h, fmt, g[0], g[1], g[2])

    def validate(self) -> None:
        """Raises :class:`RingError` unless every used plane fits in ``frame_size``."""
        w, h, fmt = self.width, self.height, self.format
        if not (1 <= w <= MAX_DIM and 1 <= h <= MAX_DIM) or fmt not in FORMAT_CODES:
            raise RingError(f"bad geometry {w}x{h} {fmt}")
        if fmt in ("NV12", "I420") and (w % 2 or h % 2):
            raise RingError(f"{fmt} with odd size {w}x{h}")
        planes = {"NV12": [(w, h), (w, h // 2)],
                  "I420": [(w, h), (w // 2, h // 2), (w // 2, h // 2)],
                  "BGR24": [(3 * w, h)], "RGB24": [(3 * w, h)]}[fmt]
        end = 0
        for i, (row, rows) in enumerate(planes):
            stride, off = self.strides[i], self.offsets[i]
            if stride < row or stride > 32768 or off < end:
                raise RingError(f"plane {i}: stride {stride} / offset {off} invalid")
            end = off + stride * (rows - 1) + row
            if end > self.frame_size:
                raise RingError(f"plane {i} ends at {end}, past frame_size {self.frame_size}")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame read inside the seqlock: exactly what the writer published as ``seq``."""

    slot: int
    seq: int
    frame_id: int
    pts_ns: int
    capture_ts_ns: int
    data: np.ndarray          #: the frame bytes, a private copy (uint8, flat)
    geometry: Geometry

    def plane(self, i: int) -> np.ndarray:
        """Plane ``i`` as a 2-D uint8 view ``(rows, row_bytes)`` of :attr:`data`."""
        g = self.geometry
        rows = g.height if i == 0 or g.format in ("BGR24", "RGB24") else g.height // 2
        row = {"NV12": g.width, "I420": g.width if i == 0 else g.width // 2}.get(g.format, 3 * g.width)
        v = self.data[g.offsets[i]:g.offsets[i] + g.strides[i] * rows]
        return v.reshape(rows, g.strides[i])[:, :row]

    def image(self) -> np.ndarray:
        """BGR24/RGB24: an ``(h, w, 3)`` view; NV12/I420: the luma plane ``(h, w)``."""
        g = self.geometry
        p = self.plane(0)
        if g.format in ("BGR24", "RGB24"):
            return p.reshape(g.height, g.width, 3)
        return p


def _u32(addr: int) -> int:
    return ctypes.c_uint32.from_address(addr).value


def _u64(addr: int) -> int:
    return ctypes.c_uint64.from_address(addr).value


def _set_u32(addr: int, v: int) -> None:
    ctypes.c_uint32.from_address(addr).value = v


def _set_u64(addr: int, v: int) -> None:
    ctypes.c_uint64.from_address(addr).value = v


def check_ring_file(name: str, st: os.stat_result, trusted_uids: Iterable[int] = ()) -> None:
    """The checks of ring-format.md §8 step 2 on an open ring's ``fstat`` (§6.1).

    Trusted owners: this process's effective uid, root and ``trusted_uids``. Nobody but the
    owner may write the file (``mode & 0o022 == 0``). A reader that is neither the owner
    nor root reads the ring as a member of its group: group read in the mode, and the
    file's gid among this process's groups.

    Raises:
        RingError: naming the rule that failed.
    """
    me, mode = os.geteuid(), stat.S_IMODE(st.st_mode)
    trusted = {me, 0, *trusted_uids}
    if not stat.S_ISREG(st.st_mode):
        raise RingError(f"ring {name}: not a regular file")
    if mode & 0o022:
        raise RingError(f"ring {name}: mode {mode:#o} is writable by group or others")
    if st.st_uid not in trusted:
        raise RingError(f"ring {name}: owned by uid {st.st_uid}, not a trusted uid {sorted(trusted)} "
                        f"(pass the writer's uid in trusted_uids to trust it)")
    if me not in (st.st_uid, 0):
        groups = {os.getegid(), *os.getgroups()}
        if not mode & 0o040 or st.st_gid not in groups:
            raise RingError(f"ring {name}: mode {mode:#o}, group {st.st_gid}: not readable through "
                            f"a group of this process {sorted(groups)} (join the service group)")
    if st.st_size < HEADER_SIZE:
        raise RingError(f"ring {name}: {st.st_size} bytes, shorter than the header")


class RingReader:
    """A read-only view of one ring.

    Args:
        name: ring name (normally the camera id).
        ring_dir: the ring directory (default ``/dev/shm/framebus``).
        trusted_uids: owners accepted besides this process's effective uid and root (a
            client in the service group reading the service's rings passes the service
            user's uid, e.g. ``pwd.getpwnam("framebus").pw_uid``).

    The file checks are those of ring-format.md §8 step 2 (and §6.1, "Group readers"):
    a regular file owned by a trusted uid, not writable by group or others; a reader that
    is neither the owner nor root reads it through its group, so the mode must grant group
    read (rings are ``0640``) and the file's group must be one of this process's groups.

    Raises:
        RingError: name rule, missing or unreadable file, symlink, untrusted owner,
            writable by group or others, a group this process is not in, or a header
            that fails a check of §8.
    """

    def __init__(self, name: str, ring_dir: str = DEFAULT_RING_DIR,
                 trusted_uids: Iterable[int] = ()) -> None:
        self.name = check_name(name)
        self.path = os.path.join(ring_dir, f"{name}.ring")
        self._addr = 0
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except PermissionError as e:
            raise RingError(f"ring {name}: cannot open {self.path}: {e.strerror} (a reader that "
                            f"is not the ring's owner needs the service group, §6.1)") from e
        except OSError as e:
            raise RingError(f"ring {name}: cannot open {self.path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            check_ring_file(name, st, trusted_uids)
            self._addr = _libc.mmap(fd, st.st_size, writable=False)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size, self._ino = fd, st.st_size, (st.st_dev, st.st_ino)
        try:
            self._parse_header()
        except BaseException:
            self.close()
            raise

    def _parse_header(self) -> None:
        h = FIXED.unpack(ctypes.string_at(self._addr, 128))   # copy once, use only the copy
        (magic, self.version, hdr, self.slots, shdr, table, self.data_offset, self.slot_stride,
         self.slot_capacity, fsize, self.generation, width, height, fmt, frame_size) = h[:15]
        strides, offsets = tuple(h[15:18]), tuple(h[18:21])
        self.created_unix_ns, self.writer_pid = h[21], h[22]
        bad = None
        if magic != MAGIC:
            bad = "bad magic"
        elif self.version not in (1, 2):
            bad = f"unknown layout version {self.version}"
        elif hdr != HEADER_SIZE or shdr != SLOT_HEADER_SIZE or table != SLOT_TABLE_OFFSET:
            bad = "bad header/slot sizes"
        elif not 2 <= self.slots <= MAX_SLOTS:
            bad = f"slot_count {self.slots} outside 2..=1024"
        elif (self.data_offset % 64 or self.data_offset < 256 + 64 * self.slots
              or self.slot_stride % 64 or self.slot_stride < self.slot_capacity
              or self.slot_capacity < frame_size):
            bad = "bad data_offset/slot_stride/slot_capacity"
        elif fsize != self._size or fsize != self.data_offset + self.slots * self.slot_stride:
            bad = f"file_size {fsize} does not match the file ({self._size}) or the layout"
        elif self.generation == 0 or (self.version == 2 and self.generation > MAX_GENERATION):
            bad = f"generation {self.generation} out of range"
        elif fmt not in FORMATS:
            bad = f"unknown pixel format code {fmt}"
        if bad:
            raise RingError(f"ring {self.name}: {bad}")
        self.geometry = Geometry(width, height, FORMATS[fmt], strides, offsets, frame_size)
        self.geometry.validate()

    # --- live header ---------------------------------------------------------------------

    def _check_open(self) -> int:
        if not self._addr:
            raise RingError(f"ring {self.name}: reader is closed")
        return self._addr

    def write_seq(self) -> int:
        """Publishes completed so far (§3.2)."""
        return _u64(self._check_open() + OFF_WRITE_SEQ)

    def state(self) -> int:
        """Writer state: :data:`STARTING`, :data:`LIVE`, :data:`RECONNECTING` or :data:`CLOSED`
        (unknown values read as Closed)."""
        s = _u32(self._check_open() + OFF_STATE)
        return s if s in STATE_NAMES else CLOSED

    def heartbeat_age_ns(self) -> int:
        """Nanoseconds since the writer's last heartbeat or publish (CLOCK_MONOTONIC)."""
        return max(0, time.monotonic_ns() - _u64(self._check_open() + OFF_HEARTBEAT))

    def counters(self) -> dict:
        """The writer's counters (loaded one by one; not one atomic snapshot)."""
        a = self._check_open()
        return {"frames_decoded": _u64(a + OFF_DECODED), "frames_published": _u64(a + OFF_PUBLISHED),
                "decode_errors": _u64(a + OFF_DECODE_ERRORS), "reconnects": _u64(a + OFF_RECONNECTS),
                "fps": _u32(a + OFF_FPS_MILLI) / 1000.0}

    def is_current(self) -> bool:
        """Whether the path still names the mapped file (a restarted writer replaces it)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ino

    # --- frames --------------------------------------------------------------------------

    def read(self, slot: int, seq: int) -> Optional[Frame]:
        """Frame ``seq`` of ``slot`` (§4.2), or ``None`` when it is stale or being written.

        Raises:
            RingClosed: the writer closed the ring.
            RingError: the file was truncated, or the slot header is corrupt.
        """
        a = self._check_open()
        if self.state() == CLOSED:
            raise RingClosed(f"ring {self.name}: closed by its writer")
        if not 0 <= slot < self.slots or seq == 0 or seq % 2:
            return None
        sh = a + SLOT_TABLE_OFFSET + 64 * slot
        if _u64(sh) != seq:                                       # step 2
            return None
        if os.fstat(self._fd).st_size != self._size:
            raise RingError(f"ring {self.name}: file truncated under the reader")
        frame_id, pts, capture_ts, length = struct.unpack("<QqQI", ctypes.string_at(sh + 8, 28))
        n = min(length, self.slot_capacity)
        data = ctypes.string_at(a + self.data_offset + slot * self.slot_stride, n)   # step 3
        if _u64(sh) != seq:                                       # step 5: torn, discard
            return None
        if length > self.slot_capacity or length < self.geometry.frame_size:
            raise RingError(f"ring {self.name}: slot {slot} payload_len {length} invalid")
        buf = np.frombuffer(data, np.uint8)
        return Frame(slot, seq, frame_id, pts, capture_ts, buf, self.geometry)

    def latest(self) -> Optional[Frame]:
        """The newest complete frame (§4.3), or ``None`` when nothing is published yet."""
        for _ in range(100):
            n = self.write_seq()
            if n == 0:
                return None
            slot = (n - 1) % self.slots
            seq = _u64(self._addr + SLOT_TABLE_OFFSET + 64 * slot)
            if seq >= 2 * n and seq % 2 == 0:
                frame = self.read(slot, seq)
                if frame is not None:
                    return frame
        return None

    def wait_for_publish(self, last_seen: int, timeout_s: float,
                         poll_interval_s: Optional[float] = None) -> Tuple[str, int]:
        """Waits for a publish after ``last_seen`` (§5).

        Sleeps in ``FUTEX_WAIT`` on the notify word; with ``poll_interval_s`` (or where no
        futex call exists) it re-reads ``write_seq`` at that interval instead.

        Returns:
            ``("published", write_seq)``, ``("closed", write_seq)`` or ``("timeout", write_seq)``.
        """
        a = self._check_open()
        deadline = time.monotonic() + max(0.0, timeout_s)
        use_futex = poll_interval_s is None and _libc.SYS_futex is not None
        poll = poll_interval_s if poll_interval_s is not None else 0.005
        while True:
            word = _u32(a + OFF_NOTIFY)                           # 1. before the checks
            n = self.write_seq()
            if n != last_seen:
                return "published", n
            if self.state() == CLOSED:
                return "closed", n
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", n
            if os.fstat(self._fd).st_size != self._size:
                raise RingError(f"ring {self.name}: file truncated under the reader")
            if use_futex:
                _libc.futex_wait(a + OFF_NOTIFY, word, left)
            else:
                time.sleep(min(poll, left))

    def frames(self, timeout_s: float = 5.0) -> Iterator[Frame]:
        """Yields each newest frame as it is published (frames published in between are
        skipped, as a live consumer wants); stops when the ring closes or nothing is
        published for ``timeout_s``."""
        last = 0
        while True:
            outcome, n = self.wait_for_publish(last, timeout_s)
            if outcome != "published":
                return
            last = n
            f = self.latest()
            if f is not None:
                yield f

    def close(self) -> None:
        """Unmaps the ring (idempotent)."""
        if self._addr:
            _libc.munmap(self._addr, self._size)
            self._addr = 0
            os.close(self._fd)

    def __enter__(self) -> "RingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def ensure_ring_dir(path: str = DEFAULT_RING_DIR) -> str:
    """Creates the ring directory the way ``frame-kernel``/``core-agent`` do, or checks it.

    What ``model-server --ring-dir`` requires (``shm_ring::owned_dir``): a real
    directory (not a symlink) owned by the server's uid or root, mode without group write
    and without any access for others (``mode & 0o027 == 0``; created ``0750``), in a
    parent that others cannot write or that is sticky (as ``/dev/shm`` is).

    Raises:
        RingError: an existing directory fails a check (it is never repaired).
    """
    try:
        os.mkdir(path, 0o750)
        os.chmod(path, 0o750)          # mkdir's mode went through the umask
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RingError(f"{path}: not a real directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise RingError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()}) or root")
    if st.st_mode & 0o027:
        raise RingError(f"{path}: mode {st.st_mode & 0o7777:#o} grants group write or access to others")
    parent = os.path.dirname(os.path.abspath(path))
    pm = os.stat(parent).st_mode
    if pm & 0o022 and not pm & 0o1000:
        raise RingError(f"{parent}: writable by others without the sticky bit")
    return path


def _round_up(v: int, to: int) -> int:
    return (v + to - 1) // to * to


class RingWriter:
    """The one writer of a ring (§4.1, §6): a Python program feeding frames to the bus.

    ``model-server`` serves a frame of this ring when: the ring directory passes the
    checks of :func:`ensure_ring_dir` (the server runs with the same uid as this writer, or
    this writer is root); the ring file is owned by the server's uid or root and not
    writable by group or others (the default mode ``0o640`` is); the request's ``meta``
    matches this ring's geometry. Frames are served in every state but Closed.

    The writer holds ``flock(LOCK_EX)`` on the file for its life; a second writer of the
    same name gets :class:`RingError` (``AlreadyOwned``); a stale ring of a dead writer is
    replaced atomically. Closing (or dropping) unlinks the file and wakes every reader.

    Args:
        name: ring name (the camera id, normally).
        width, height, format: the frames' geometry (``"BGR24"`` takes OpenCV's images as
            they are).
        ring_dir: an owned directory (see :func:`ensure_ring_dir`).
        slots: ``2..=1024`` frame slots (default 8).
        mode: file mode (default ``0o640``; group/other write is refused).
    """

    def __init__(self, name: str, width: int, height: int, format: str = "BGR24",
                 ring_dir: str = DEFAULT_RING_DIR, slots: int = 8, mode: int = 0o640) -> None:
        self.name = check_name(name)
        if not 2 <= slots <= MAX_SLOTS:
            raise RingError(f"slots {slots} outside 2..=1024")
        if mode & ~0o777 or mode & 0o022:
            raise RingError(f"mode {mode:#o}: bits outside 0o777 or write for group/others")
        self.geometry = Geometry.packed(width, height, format)
        self.slots = slots
        self.path = os.path.join(ring_dir, f"{name}.ring")
        self.data_offset = _round_up(256 + 64 * slots, 4096)
        self.slot_stride = _round_up(self.geometry.frame_size, 4096)
        self.slot_capacity = self.geometry.frame_size
        self.size = self.data_offset + slots * self.slot_stride
        self.generation = secrets.randbits(53) or 1
        self._addr = 0
        self._fd = -1
        self._create(ring_dir, mode)

    def _create(self, ring_dir: str, mode: int) -> None:
        for leftover in os.listdir(ring_dir):           # §6 step 3: dead creators' files
            if leftover.startswith(f".{self.name}.ring.") and leftover.endswith(".tmp"):
                self._remove_if_unlocked(os.path.join(ring_dir, leftover))
        tmp = os.path.join(ring_dir, f".{self.name}.ring.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, mode)
            os.ftruncate(fd, self.size)
            self._addr = _libc.mmap(fd, self.size, writable=True)
            g = self.geometry
            header = FIXED.pack(MAGIC, LAYOUT_VERSION, HEADER_SIZE, self.slots, SLOT_HEADER_SIZE,
                                SLOT_TABLE_OFFSET, self.data_offset, self.slot_stride,
                                self.slot_capacity, self.size, self.generation, g.width, g.height,
                                FORMAT_CODES[g.format], g.frame_size, *g.strides, *g.offsets,
                                time.time_ns(), os.getpid() & 0xFFFFFFFF, 0)
            ctypes.memmove(self._addr, header, len(header))
            _set_u32(self._addr + OFF_STATE, STARTING)
            _set_u64(self._addr + OFF_HEARTBEAT, time.monotonic_ns())
            self._install(tmp, fd)
        except BaseException:
            if self._addr:
                _libc.munmap(self._addr, self.size)
                self._addr = 0
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self._fd = fd

    @staticmethod
    def _remove_if_unlocked(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _install(self, tmp: str, fd: int) -> None:
        for _ in range(10):
            try:
                os.link(tmp, self.path)
                os.unlink(tmp)
                return
            except FileExistsError:
                pass
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                continue                                   # gone meanwhile: try the link again
            if not stat.S_ISREG(st.st_mode):
                raise RingError(f"ring {self.name}: {self.path} exists and is not a regular file")
            old = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                held = True
                for _ in range(5):                         # readers lock for microseconds
                    try:
                        fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        held = False
                        break
                    except BlockingIOError:
                        time.sleep(0.002)
                if held:
                    raise RingError(f"ring {self.name}: {self.path} is owned by a live writer (AlreadyOwned)")
                now = os.lstat(self.path)
                if (now.st_dev, now.st_ino) == (os.fstat(old).st_dev, os.fstat(old).st_ino):
                    os.rename(tmp, self.path)              # a stale ring: replace it atomically
                    return
            finally:
                os.close(old)
        raise RingError(f"ring {self.name}: could not install {self.path}")

    def _check_open(self) -> int:
        if not self._addr:
            raise RingError(f"ring {self.name}: writer is closed")
        return self._addr

    def _wake(self) -> None:
        a = self._addr
        _set_u32(a + OFF_NOTIFY, (_u32(a + OFF_NOTIFY) + 1) & 0xFFFFFFFF)
        _libc.futex_wake(a + OFF_NOTIFY)

    def set_state(self, state: int) -> None:
        """Stores a writer state (§3.4) and wakes readers."""
        if state not in STATE_NAMES:
            raise RingError(f"unknown state {state}")
        _set_u32(self._check_open() + OFF_STATE, state)
        self._wake()

    def write_seq(self) -> int:
        """Publishes completed so far."""
        return _u64(self._check_open() + OFF_WRITE_SEQ)

    def publish(self, frame: "np.ndarray | bytes | bytearray | memoryview", pts_ns: int = 0,
                capture_ts_ns: Optional[int] = None) -> Tuple[int, int]:
        """Publishes one frame (§4.1) and wakes the readers.

        ``frame`` holds exactly ``geometry.frame_size`` bytes in the ring's layout (an
        OpenCV BGR image of the ring's size for ``BGR24``). The first publish stores Live.

        Returns:
            ``(slot, seq)`` of the published frame.
        """
        a = self._check_open()
        buf = np.ascontiguousarray(frame if isinstance(frame, np.ndarray)
                                   else np.frombuffer(frame, np.uint8))
        if buf.nbytes != self.geometry.frame_size:
            raise RingError(f"ring {self.name}: frame of {buf.nbytes} bytes, the ring takes "
                            f"{self.geometry.frame_size} ({self.geometry.width}x"
                            f"{self.geometry.height} {self.geometry.format})")
        if _u32(a + OFF_STATE) != LIVE:
            self.set_state(LIVE)                           # before the first publish (§3.4)
        n = _u64(a + OFF_WRITE_SEQ) + 1
        slot = (n - 1) % self.slots
        sh = a + SLOT_TABLE_OFFSET + 64 * slot
        _set_u64(sh, 2 * n - 1)                            # odd: being written
        ctypes.memmove(a + self.data_offset + slot * self.slot_stride, buf.ctypes.data, buf.nbytes)
        _set_u64(sh + 8, n - 1)
        ctypes.c_int64.from_address(sh + 16).value = pts_ns
        _set_u64(sh + 24, time.time_ns() if capture_ts_ns is None else capture_ts_ns)
        _set_u32(sh + 32, buf.nbytes)
        _set_u64(sh, 2 * n)                                # even: stable
        _set_u64(a + OFF_WRITE_SEQ, n)
        now = time.monotonic_ns()
        _set_u64(a + OFF_PUBLISHED, _u64(a + OFF_PUBLISHED) + 1)
        _set_u64(a + OFF_DECODED, _u64(a + OFF_DECODED) + 1)
        _set_u64(a + OFF_LAST_FRAME, now)
        _set_u64(a + OFF_HEARTBEAT, now)
        self._wake()
        return slot, 2 * n

    def heartbeat(self) -> None:
        """Tells readers the writer is alive while no frame comes (a paused source)."""
        _set_u64(self._check_open() + OFF_HEARTBEAT, time.monotonic_ns())

    def close(self) -> None:
        """Unlinks the ring, stores Closed, wakes every reader, releases the lock (§6)."""
        if not self._addr:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == (os.fstat(self._fd).st_dev, os.fstat(self._fd).st_ino):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        _set_u32(self._addr + OFF_STATE, CLOSED)
        self._wake()
        _libc.munmap(self._addr, self.size)
        self._addr = 0
        os.close(self._fd)                                 # releases the flock

    def __enter__(self) -> "RingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__: List[str] = ["RingReader", "RingWriter", "Frame", "Geometry", "ensure_ring_dir",
                      "check_name", "check_ring_file", "LAYOUT_VERSION", "DEFAULT_RING_DIR", "STARTING", "LIVE",
                      "RECONNECTING", "CLOSED", "FORMATS"]
