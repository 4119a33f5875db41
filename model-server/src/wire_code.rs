//! The one mapping from the server's errors to the wire [`ErrorCode`]s of
//! `docs/protocol.md` §6. Every error a request can fail with maps here, so the table in
//! the docs and the code are read side by side in one place.

use proto_schema::error::ErrorCode;
use shm_ring::ReadError;

use crate::frames::FrameRefError;

/// An error that travels to the client as a wire [`ErrorCode`].
pub trait WireCode {
    /// The code the client receives.
    fn wire_code(&self) -> ErrorCode;
}

impl WireCode for FrameRefError {
    fn wire_code(&self) -> ErrorCode {
        match self {
            FrameRefError::BadName { .. } | FrameRefError::SlotOutOfRange { .. } => {
                ErrorCode::InvalidMessage
            }
            FrameRefError::UnknownRing { .. } => ErrorCode::UnknownRing,
            FrameRefError::WrongGeneration { .. } => ErrorCode::StaleFrame,
            FrameRefError::GeometryMismatch { .. } => ErrorCode::GeometryMismatch,
        }
    }
}

impl WireCode for ReadError {
    fn wire_code(&self) -> ErrorCode {
        match self {
            ReadError::SlotOutOfRange { .. } | ReadError::InvalidSeq { .. } => {
                ErrorCode::InvalidMessage
            }
            // A corrupt or truncated ring is no longer a usable ring: like a missing one,
            // the client retries once the frame kernel has recreated it.
            ReadError::BadPayloadLength { .. } | ReadError::Truncated { .. } => {
                ErrorCode::UnknownRing
            }
            ReadError::Stale { .. } | ReadError::Empty { .. } | ReadError::WriterGone { .. } => {
                ErrorCode::StaleFrame
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_their_documented_codes() {
        let ring: std::sync::Arc<str> = "cam".into();
        let stale = ReadError::Stale {
            ring: ring.clone(),
            slot: 0,
            expected_seq: 2,
            found_seq: 4,
        };
        assert_eq!(stale.wire_code(), ErrorCode::StaleFrame);
        let odd = ReadError::InvalidSeq {
            ring: ring.clone(),
            slot: 0,
            seq: 3,
        };
        assert_eq!(odd.wire_code(), ErrorCode::InvalidMessage);
        assert_eq!(
            ReadError::WriterGone { ring: ring.clone() }.wire_code(),
            ErrorCode::StaleFrame
        );
        assert_eq!(
            ReadError::Truncated { ring }.wire_code(),
            ErrorCode::UnknownRing
        );
    }
}
