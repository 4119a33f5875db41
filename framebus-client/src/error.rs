//! One error enum per operation: connecting, sending, a request/answer exchange, an
//! inference. Causes are kept as `#[source]`; a server's error code is a typed
//! [`ErrorCode`], never only text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto_schema::error::ErrorCode;
use proto_schema::framing::FrameError;
use proto_schema::message::InferenceResponse;

use crate::connection::ReadError;

/// Why connecting to a model server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `connect(2)` failed: no socket at the path (`NotFound`), nobody listening
    /// (`ConnectionRefused`), no permission, or the path is not a valid socket address.
    #[error("cannot connect to {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's accept backlog stayed full for the whole connect timeout.
    #[error("connecting to {path} did not finish within {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Encoding or writing the frame failed: the message exceeds the frame limit
    /// ([`FrameError::TooLarge`], nothing was written, the connection is intact), or the
    /// socket failed (the connection is unusable).
    #[error("sending the request failed: {0}")]
    Frame(#[source] FrameError),
    /// The socket did not take the request within the send timeout (the server does not
    /// read: back-pressure). Part of the frame may be on the wire, so the connection is
    /// unusable.
    #[error("send blocked for {0:?}: the server does not read")]
    Blocked(Duration),
    /// The connection is closed (see the cause); reconnect.
    #[error("connection closed")]
    Closed(#[source] Arc<Closed>),
    /// The client's bound on requests in flight is reached; the request was not sent.
    #[error("{max} requests already in flight")]
    TooManyInFlight {
        /// The bound ([`crate::ClientOptions::max_in_flight`]).
        max: usize,
    },
}

/// Why a connection ended, as every request still waiting on it is told.
#[derive(Debug, thiserror::Error)]
pub enum Closed {
    /// The server closed the connection between frames.
    #[error("closed by the server")]
    Eof,
    /// Reading failed: I/O error, a truncated or oversized frame, or an undecodable
    /// answer.
    #[error("reading the answers failed")]
    Read(#[source] ReadError),
    /// The server sent an `error` with no request id (it could not parse a frame of
    /// ours, or refused the connection, e.g. `overloaded` at its connection limit); it
    /// closes the connection after such an error.
    #[error("the server refused the connection ({code}): {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// A send on this connection failed or was cancelled mid-frame, so the stream is out
    /// of sync.
    #[error("a send failed mid-frame")]
    SendFailed,
    /// The client was dropped.
    #[error("the client was dropped")]
    Dropped,
}

/// Why a request/answer exchange (`ping`, `get_status`, `get_stats`, `shutdown`, or a
/// raw [`crate::Client::call`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request was not sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// No answer within the request timeout (the request may still be served; a late
    /// answer is dropped).
    #[error("no answer to request {id} within {timeout:?}")]
    Timeout {
        /// The request id.
        id: u64,
        /// The limit.
        timeout: Duration,
    },
    /// The connection ended before the answer came.
    #[error("connection closed before the answer to request {id}")]
    Closed {
        /// The request id.
        id: u64,
        /// Why it ended.
        #[source]
        source: Arc<Closed>,
    },
    /// The server answered with an `error` message: it could not understand the request
    /// (`invalid_message`, `unsupported_version`, `unknown_message_type`, ...).
    #[error("server rejected request {id} ({code}): {message}")]
    Rejected {
        /// The request id.
        id: u64,
        /// The error code (`docs/protocol.md` §7).
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The server answered with another message type than the request calls for.
    #[error("expected {expected} in answer to request {id}, got {got}")]
    Unexpected {
        /// The request id.
        id: u64,
        /// The expected `"type"`.
        expected: &'static str,
        /// The `"type"` that came.
        got: &'static str,
    },
}

/// Why an inference request failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The exchange itself failed (not sent, no answer, closed, rejected).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The server answered with an `infer_result` carrying an error: `stale_frame`,
    /// `overloaded`, `deadline_exceeded`, ... ([`ErrorCode::is_retryable`]-style policy is
    /// the caller's). The whole answer (timings included) is kept.
    #[error("inference failed ({code}): {message}")]
    Server {
        /// The error code (`docs/protocol.md` §7).
        code: ErrorCode,
        /// The server's text.
        message: String,
        /// The answer as received.
        response: Box<InferenceResponse>,
    },
}

impl CallError {
    /// The server's error code, when the server rejected the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl InferError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            InferError::Server { code, .. } => Some(*code),
            InferError::Call(e) => e.code(),
        }
    }
}
