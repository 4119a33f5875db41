"""The camera sharding function of ``core-agent`` (core-agent/src/shard.rs): which of
``count`` replicas runs a camera (rendezvous hashing). Same function, bit for bit, so a
tool can tell where a camera runs; the tests pin both against the same values."""

from __future__ import annotations

_M = 2**64 - 1


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _M
    return h


def _splitmix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


def weight(camera_id: str, replica: int) -> int:
    """Rendezvous weight of ``camera_id`` on ``replica``."""
    return _splitmix64(_fnv1a64(camera_id.encode()) ^ _splitmix64((replica + 0x9E3779B97F4A7C15) & _M))


def replica_for(camera_id: str, count: int) -> int:
    """The replica (``0..count``) that runs ``camera_id``: highest weight, ties to the lower index."""
    best, best_w = 0, -1
    for r in range(count):
        w = weight(camera_id, r)
        if w > best_w:
            best, best_w = r, w
    return best
