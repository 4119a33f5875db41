"""libc through ctypes: mmap (so the futex word has an address), futex, flock.

Only Linux on x86_64 and aarch64 (the ring format is little-endian; docs/ring-format.md §2).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Optional

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.munmap.restype = ctypes.c_int
libc.syscall.restype = ctypes.c_long

PROT_READ, PROT_WRITE, MAP_SHARED = 1, 2, 1
FUTEX_WAIT, FUTEX_WAKE = 0, 1          # shared futexes: no FUTEX_PRIVATE_FLAG (§5)
INT_MAX = 2**31 - 1
MAP_FAILED = ctypes.c_void_p(-1).value
SYS_futex: Optional[int] = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def mmap(fd: int, size: int, writable: bool) -> int:
    """Maps ``size`` bytes of ``fd`` shared; returns the address."""
    prot = PROT_READ | (PROT_WRITE if writable else 0)
    addr = libc.mmap(None, size, prot, MAP_SHARED, fd, 0)
    if addr in (None, MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, f"mmap failed: {os.strerror(e)}")
    return int(addr)


def munmap(addr: int, size: int) -> None:
    libc.munmap(ctypes.c_void_p(addr), size)


def futex_wait(addr: int, expected: int, timeout_s: float) -> None:
    """Sleeps while the u32 at ``addr`` equals ``expected``, at most ``timeout_s``.
    Returns on wake, value change (EAGAIN), signal or timeout; raises on anything else."""
    assert SYS_futex is not None
    ts = timespec(int(timeout_s), int((timeout_s - int(timeout_s)) * 1e9))
    r = libc.syscall(ctypes.c_long(SYS_futex), ctypes.c_void_p(addr), ctypes.c_long(FUTEX_WAIT),
                     ctypes.c_long(expected), ctypes.byref(ts), None, ctypes.c_long(0))
    if r == -1:
        e = ctypes.get_errno()
        if e not in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT):
            raise OSError(e, f"futex wait failed: {os.strerror(e)}")


def futex_wake(addr: int) -> None:
    """Wakes every waiter on the u32 at ``addr`` (never blocks)."""
    if SYS_futex is None:
        return
    libc.syscall(ctypes.c_long(SYS_futex), ctypes.c_void_p(addr), ctypes.c_long(FUTEX_WAKE),
                 ctypes.c_long(INT_MAX), None, None, ctypes.c_long(0))
