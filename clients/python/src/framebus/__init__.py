"""framebus: the Python client of the framebus contract.

- :class:`RingReader` / :class:`RingWriter`: the shared-memory frame ring
  (docs/ring-format.md, layout 2).
- :class:`Client`: the model-server Unix-socket client (docs/protocol.md, version 1).
- :mod:`framebus.errors`: one exception class per wire error code.

The package's major version is the wire protocol version it speaks.
"""

from .client import DEFAULT_MAX_FRAME, PROTOCOL_VERSION, Client, Detection, InferResult, infer_request
from .errors import *  # noqa: F401,F403  (the exception classes)
from .errors import ERROR_CLASSES, FramebusError, RingError, ServerError
from .ring import (CLOSED, DEFAULT_RING_DIR, LAYOUT_VERSION, LIVE, RECONNECTING, STARTING, Frame,
                   Geometry, RingReader, RingWriter, ensure_ring_dir)
from .shard import replica_for

__version__ = "1.0.0"

__all__ = ["Client", "Detection", "InferResult", "infer_request", "RingReader", "RingWriter",
           "Frame", "Geometry", "ensure_ring_dir", "replica_for", "FramebusError", "ServerError",
           "RingError", "ERROR_CLASSES", "PROTOCOL_VERSION", "LAYOUT_VERSION", "DEFAULT_MAX_FRAME",
           "DEFAULT_RING_DIR", "STARTING", "LIVE", "RECONNECTING", "CLOSED", "__version__"]
