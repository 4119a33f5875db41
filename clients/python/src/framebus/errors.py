"""Typed exceptions: one class per wire error code (docs/protocol.md section 7), plus the
client-side failures (connection, timeout, ring).

Programs branch on the class (or on ``code``); ``message`` is the server's text for logs.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class FramebusError(Exception):
    """Base class of every error this package raises."""


# --- client side -------------------------------------------------------------------------


class ConnectionClosed(FramebusError):
    """The server closed the connection (idle timeout, shutdown, payload_too_large) or the
    stream ended inside a frame. Requests still in flight on it will never be answered."""


class ClientTimeout(FramebusError, TimeoutError):
    """No answer (or no complete frame) within the client's timeout."""


class FrameTooLarge(FramebusError):
    """A message to send is larger than the frame limit (1 MiB by default); nothing was sent."""


class UnexpectedResponse(FramebusError):
    """The server answered with a message type the request cannot have (a client or server bug)."""


class UntrustedPeer(FramebusError, PermissionError):
    """The process at the socket is not the model server this client expects
    (docs/protocol.md section 1: ``SO_PEERCRED`` uid, and pid when given). The client
    closed the connection without sending anything."""

    def __init__(self, message: str, pid: int, uid: int, gid: int) -> None:
        super().__init__(message)
        self.pid, self.uid, self.gid = pid, uid, gid


class RingError(FramebusError):
    """A ring could not be opened, created or trusted (docs/ring-format.md sections 6.1, 8)."""


class RingClosed(RingError):
    """The ring's writer closed it (state Closed): its frames are no longer served."""


# --- wire error codes --------------------------------------------------------------------


class ServerError(FramebusError):
    """An error the server reported: an ``error`` message, or an ``infer_result`` whose
    ``error`` is set.

    Attributes:
        code: the wire code (``"stale_frame"``, ...).
        number: its stable number (for logs; never on the wire).
        message: the server's text.
        id: the request id, or ``None`` when the server could not read one.
        retry: whether the code is worth a retry (section 7's "retry?" column).
    """

    code: str = "internal"
    number: int = 500
    retry: bool = True

    def __init__(self, message: str, id: Optional[int] = None) -> None:
        super().__init__(f"{self.code}: {message}")
        self.message = message
        self.id = id


class MalformedFrame(ServerError):
    """Zero-length frame, payload not UTF-8 or not JSON text (a sender bug)."""

    code, number, retry = "malformed_frame", 100, False


class PayloadTooLarge(ServerError):
    """Length prefix above the server's limit; the server closed the connection."""

    code, number, retry = "payload_too_large", 101, False


class InvalidMessage(ServerError):
    """Valid JSON but not a valid message, or a frame reference the ring cannot hold."""

    code, number, retry = "invalid_message", 102, False


class UnsupportedVersion(ServerError):
    """The server does not speak this ``v``; ``server_version`` is the one it speaks."""

    code, number, retry = "unsupported_version", 103, False
    server_version: Optional[int] = None


class UnknownMessageType(ServerError):
    """``type`` names no known message."""

    code, number, retry = "unknown_message_type", 104, False


class UnknownRing(ServerError):
    """The ring does not exist or is not trusted by the server (owner, mode, directory)."""

    code, number, retry = "unknown_ring", 200, True


class StaleFrame(ServerError):
    """The slot no longer holds the frame (overwritten, or the ring was recreated)."""

    code, number, retry = "stale_frame", 201, True


class GeometryMismatch(ServerError):
    """The request's ``meta`` differs from the ring header."""

    code, number, retry = "geometry_mismatch", 202, True


class UnsupportedFormat(ServerError):
    """This model cannot take this pixel format or frame size."""

    code, number, retry = "unsupported_format", 203, False


class ModelUnavailable(ServerError):
    """Another model, still loading, or its runtime failed."""

    code, number, retry = "model_unavailable", 300, True


class Overloaded(ServerError):
    """The server's bounded queue is full, or the request was shed."""

    code, number, retry = "overloaded", 301, True


class DeadlineExceeded(ServerError):
    """``deadline_ts_ns`` passed before the result was ready."""

    code, number, retry = "deadline_exceeded", 302, True


class ShuttingDown(ServerError):
    """The server is draining after ``shutdown`` or a signal."""

    code, number, retry = "shutting_down", 303, True


class Internal(ServerError):
    """An unexpected failure in the server."""

    code, number, retry = "internal", 500, True


ERROR_CLASSES: Dict[str, Type[ServerError]] = {
    c.code: c
    for c in (
        MalformedFrame,
        PayloadTooLarge,
        InvalidMessage,
        UnsupportedVersion,
        UnknownMessageType,
        UnknownRing,
        StaleFrame,
        GeometryMismatch,
        UnsupportedFormat,
        ModelUnavailable,
        Overloaded,
        DeadlineExceeded,
        ShuttingDown,
        Internal,
    )
}


def error_from_wire(body: dict, id: Optional[int], v: Optional[int] = None) -> ServerError:
    """The exception for a wire error object ``{"code", "message"}``. An unknown code (a
    newer server) becomes :class:`Internal` with the code kept in the message."""
    code = str(body.get("code", "internal"))
    message = str(body.get("message", ""))
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        err: ServerError = Internal(f"[unknown code {code}] {message}", id)
    else:
        err = cls(message, id)
    if isinstance(err, UnsupportedVersion):
        err.server_version = v
    return err
