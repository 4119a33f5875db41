//! The error codes of the wire protocol: one enum shared by every side.
//!
//! A code travels as a snake_case string (`"stale_frame"`), either inside an
//! [`InferenceResponse`](crate::message::InferenceResponse) (`"error"` field) or in a
//! `{"type":"error"}` response when the request could not be understood at all.
//! Each code also has a stable number ([`ErrorCode::as_u16`]) for logs and metrics.
//!
//! Adding, removing or renaming a code changes the protocol and bumps
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a request failed. Sent by the model server; also used by clients for their own
/// bookkeeping (statistics keyed by code).
///
/// "Retry" below means sending a request of the same kind again later, possibly with a
/// fresher frame; [`ErrorCode::is_retryable`] encodes it. Codes marked "closes the
/// connection" are sent as the last message before the server closes the stream, because the
/// byte stream can no longer be trusted to be in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be read as a message: a zero length prefix, a payload that is not
    /// UTF-8, or a payload that is not JSON text. Not retryable: the sender has a bug.
    MalformedFrame,
    /// The length prefix exceeds the receiver's maximum frame size. Sent before any payload
    /// byte is read; closes the connection. Not retryable.
    PayloadTooLarge,
    /// Valid JSON, but not a valid message of its type: not an object, a missing or
    /// ill-typed field, an unknown field, or a value out of range (dimensions, names).
    /// The message names the offending field. Not retryable.
    InvalidMessage,
    /// The `"v"` field is not a protocol version this side speaks. The response carries the
    /// responder's version in its own `"v"`. Not retryable with the same version.
    UnsupportedVersion,
    /// The `"type"` field names no message this side knows. Not retryable.
    UnknownMessageType,
    /// The frame reference names a ring that does not exist or that this system does not
    /// own (bad name, outside the ring directory, a symlink). Retryable once the frame
    /// kernel has (re)created the ring.
    UnknownRing,
    /// The referenced slot was overwritten (its sequence or the ring generation moved on)
    /// before or while the server read it. Retryable with a newer frame.
    StaleFrame,
    /// The request's frame metadata (size, format, strides) disagrees with the ring's
    /// geometry, e.g. because the ring was recreated for a new stream. Retryable after
    /// re-reading the ring header.
    GeometryMismatch,
    /// The pixel format or frame size cannot be fed to this model. Not retryable.
    UnsupportedFormat,
    /// The requested model is not served here, or its runtime failed to load or run.
    /// Retryable later (the model may be loading or restarting).
    ModelUnavailable,
    /// The server's bounded queue is full; the request was rejected without being queued.
    /// Retryable after a back-off.
    Overloaded,
    /// The request's `deadline_ts_ns` passed before a result was ready; the result (if any)
    /// was discarded. Retryable with a newer frame.
    DeadlineExceeded,
    /// The server is draining after a shutdown request or signal and takes no new work.
    /// Retryable against another or a restarted server.
    ShuttingDown,
    /// A bug or an unexpected failure on the server side. Retryable once; report it if it
    /// repeats.
    Internal,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::MalformedFrame,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownMessageType,
        ErrorCode::UnknownRing,
        ErrorCode::StaleFrame,
        ErrorCode::GeometryMismatch,
        ErrorCode::UnsupportedFormat,
        ErrorCode::ModelUnavailable,
        ErrorCode::Overloaded,
        ErrorCode::DeadlineExceeded,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The wire name, e.g. `"stale_frame"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::UnknownRing => "unknown_ring",
            ErrorCode::StaleFrame => "stale_frame",
            ErrorCode::GeometryMismatch => "geometry_mismatch",
            ErrorCode::UnsupportedFormat => "unsupported_format",
            ErrorCode::ModelUnavailable => "model_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }

    /// A stable number for logs and metrics: 1xx protocol, 2xx frame reference,
    /// 3xx server state, 500 internal. Numbers are never reused.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 100,
            ErrorCode::PayloadTooLarge => 101,
            ErrorCode::InvalidMessage => 102,
            ErrorCode::UnsupportedVersion => 103,
            ErrorCode::UnknownMessageType => 104,
            ErrorCode::UnknownRing => 200,
            ErrorCode::StaleFrame => 201,
            ErrorCode::GeometryMismatch => 202,
            ErrorCode::UnsupportedFormat => 203,
            ErrorCode::ModelUnavailable => 300,
            ErrorCode::Overloaded => 301,
            ErrorCode::DeadlineExceeded => 302,
            ErrorCode::ShuttingDown => 303,
            ErrorCode::Internal => 500,
        }
    }

    /// The code with the given stable number, if any.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == n)
    }

    /// Whether a request of the same kind may succeed if sent again later (possibly with a
    /// fresher frame or after a back-off). See each variant.
    pub const fn is_retryable(self) -> bool {
        match self {
            ErrorCode::MalformedFrame
            | ErrorCode::PayloadTooLarge
            | ErrorCode::InvalidMessage
            | ErrorCode::UnsupportedVersion
            | ErrorCode::UnknownMessageType
            | ErrorCode::UnsupportedFormat => false,
            ErrorCode::UnknownRing
            | ErrorCode::StaleFrame
            | ErrorCode::GeometryMismatch
            | ErrorCode::ModelUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::DeadlineExceeded
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal => true,
        }
    }

    /// Whether the server closes the connection after sending this code (the byte stream
    /// is out of sync, so nothing after it can be trusted).
    pub const fn closes_connection(self) -> bool {
        matches!(self, ErrorCode::PayloadTooLarge)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not the wire name of any [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

/// The error object on the wire: `{"code": "stale_frame", "message": "..."}`.
///
/// `message` is for humans (logs); programs branch on `code` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// What went wrong, machine-readable.
    pub code: ErrorCode,
    /// Context for a human: which field, which ring, which limit.
    pub message: String,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde_and_from_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn numbers_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate number for {code}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        // ALL is in numeric order, so documentation tables generated from it are too.
        let nums: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn error_body_wire_form() {
        let body = ErrorBody::new(ErrorCode::Overloaded, "queue full (64)");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"overloaded","message":"queue full (64)"}"#
        );
        assert_eq!(body.to_string(), "overloaded: queue full (64)");
    }
}
