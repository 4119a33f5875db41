//! The shared-memory frame ring: one file per camera, `<dir>/<name>.ring` (default dir
//! `/dev/shm/framebus`), one writer ([`RingWriter`], the decoder) and any number of read-only
//! readers ([`RingReader`], the model servers), in any processes.
//!
//! - Layout: a fixed header, a live header of atomics, a table of per-slot seqlock
//!   headers, then page-aligned frame slots ([`layout`], byte for byte in
//!   `docs/ring-format.md`).
//! - Consistency: each slot is a seqlock. Its seq is odd while written, `2n` once
//!   publish `n` is stable. A read checks the seq before and after, so a torn frame is
//!   reported as [`ReadError::Stale`], never returned.
//! - Notification: a shared futex on the header's `notify` word
//!   ([`RingReader::wait_for_publish`]); no polling, no per-reader fd.
//! - Ownership: the writer holds an exclusive `flock` for its lifetime; a ring file
//!   whose lock is free belongs to a dead writer and is replaced by the next one.
//! - All `unsafe` lives in `shm.rs`, with its invariants.
//!
//! ```no_run
//! use proto_schema::pixel::{FrameGeometry, PixelFormat};
//! use shm_ring::{RingReader, RingWriter};
//! use std::time::Duration;
//!
//! let geometry = FrameGeometry::packed(960, 540, PixelFormat::Nv12)?;
//! let mut writer = RingWriter::builder("cam1").slots(8).geometry(geometry).create()?;
//! let mut slot = writer.begin_write();
//! slot.data_mut().fill(0x80); // decode straight into the slot
//! let info = slot.publish(0, 1_700_000_000_000_000_000);
//!
//! let reader = RingReader::open(shm_ring::DEFAULT_RING_DIR, "cam1")?;
//! let latest = reader.latest().expect("one frame published");
//! assert_eq!(latest, info);
//! let sum: u64 = reader.read(latest.slot, latest.seq, |bytes| {
//!     bytes.iter().map(|&b| u64::from(b)).sum()
//! })?;
//! # let _ = (sum, reader.wait_for_publish(latest.seq / 2, Duration::from_millis(10)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod layout;
pub mod owned_dir;

mod error;
mod notify;
mod reader;
mod shm;
mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ReadError, RingCreateError, RingNameError, RingOpenError};
pub use layout::RingCountersHandle;
pub use reader::{
    peek_header, HeaderSnapshot, RingReader, RingTrust, WaitOutcome, FORBIDDEN_RING_MODE_BITS,
};
pub use writer::{RingWriter, RingWriterBuilder, SlotWriter, DEFAULT_MODE, DEFAULT_SLOTS};

/// Where rings live unless configured otherwise: a directory of the service's own under
/// `/dev/shm` (see [`crate::owned_dir`]), never `/dev/shm` itself, where any local user
/// could squat a ring name.
pub const DEFAULT_RING_DIR: &str = "/dev/shm/framebus";
/// Longest ring name, in bytes.
pub const MAX_RING_NAME_LEN: usize = proto_schema::name::MAX_NAME_LEN;
/// File name suffix of a ring.
pub const RING_FILE_SUFFIX: &str = ".ring";

/// Checks a ring name: the one name rule of [`proto_schema::name::validate`], which keeps
/// every ring a plain file directly inside the ring directory.
pub fn validate_ring_name(name: &str) -> Result<(), RingNameError> {
    proto_schema::name::validate(name)
}

/// `<dir>/<name>.ring`. Does not validate `name`; [`RingWriter`] and [`RingReader`] do.
pub fn ring_path(dir: impl AsRef<Path>, name: &str) -> PathBuf {
    dir.as_ref().join(format!("{name}{RING_FILE_SUFFIX}"))
}

/// The writer's declared state, stored as a u32 in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum RingState {
    /// Created, no frame yet (0).
    Starting = 0,
    /// Frames are flowing (1).
    Live = 1,
    /// The source is lost and being reconnected; old frames stay readable (2).
    Reconnecting = 2,
    /// The writer closed the ring; it will never publish again (3).
    Closed = 3,
}

impl RingState {
    /// Decodes the header value; an unknown value reads as `Closed` (the ring cannot be
    /// trusted to produce frames).
    pub fn from_u32(value: u32) -> RingState {
        match value {
            0 => RingState::Starting,
            1 => RingState::Live,
            2 => RingState::Reconnecting,
            _ => RingState::Closed,
        }
    }
}

/// Where a published frame is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameInfo {
    /// Slot index.
    pub slot: u32,
    /// The slot's seq for this frame (even, non-zero; `2 * publish number`).
    pub seq: u64,
    /// Frame id (publishes before this one in this ring incarnation).
    pub frame_id: u64,
    /// Presentation timestamp, ns.
    pub pts_ns: i64,
    /// Capture timestamp, Unix ns.
    pub capture_ts_ns: u64,
}

/// The writer's counters as read from the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCounters {
    /// Frames decoded by the writer.
    pub frames_decoded: u64,
    /// Frames published into the ring.
    pub frames_published: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Source reconnects.
    pub reconnects: u64,
    /// Measured frame rate x 1000.
    pub fps_milli: u32,
    /// CLOCK_MONOTONIC ns of the last publish (0 = none).
    pub last_frame_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names() {
        for ok in ["a", "cam1", "Cam_01-left", "0", &"x".repeat(64)] {
            assert_eq!(validate_ring_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_ring_name(""), Err(RingNameError::Empty));
        assert!(matches!(
            validate_ring_name(&"x".repeat(65)),
            Err(RingNameError::TooLong { len: 65, .. })
        ));
        for bad_start in ["_a", "-a", ".a", "..", "é"] {
            assert!(
                matches!(
                    validate_ring_name(bad_start),
                    Err(RingNameError::BadFirstChar { .. })
                ),
                "{bad_start}"
            );
        }
        for (bad, index) in [
            ("a/b", 1),
            ("a.ring", 1),
            ("a b", 1),
            ("ab\0", 2),
            ("aé", 1),
        ] {
            match validate_ring_name(bad) {
                Err(RingNameError::InvalidChar { index: i, .. }) => assert_eq!(i, index, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn ring_path_joins_dir_and_suffix() {
        assert_eq!(
            ring_path("/dev/shm", "cam1"),
            PathBuf::from("/dev/shm/cam1.ring")
        );
    }

    #[test]
    fn state_codes() {
        for s in [
            RingState::Starting,
            RingState::Live,
            RingState::Reconnecting,
            RingState::Closed,
        ] {
            assert_eq!(RingState::from_u32(s as u32), s);
        }
        assert_eq!(RingState::from_u32(77), RingState::Closed);
        assert_eq!(
            serde_json::to_string(&RingState::Reconnecting).unwrap(),
            "\"reconnecting\""
        );
    }

    #[test]
    fn clocks_advance() {
        let a = proto_schema::time::MonoNanos::now().get();
        let b = proto_schema::time::MonoNanos::now().get();
        assert!(b >= a && a > 0);
        assert!(proto_schema::time::UnixNanos::now().get() > 1_600_000_000_000_000_000);
    }
}
