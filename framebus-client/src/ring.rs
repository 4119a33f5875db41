//! What a caller needs from a ring to ask about a frame: open the ring read-only, take
//! its newest frame, and turn it into the `frame` and `meta` members of an `infer`
//! request (`docs/protocol.md` §5.1; the ring itself is `docs/ring-format.md`).

use std::path::Path;
use std::time::Duration;

use proto_schema::message::{FrameMeta, FrameRef, InferenceRequest};
use proto_schema::PROTOCOL_VERSION;
use shm_ring::{FrameInfo, ReadError, RingOpenError, RingReader};

/// Why the newest frame of a ring could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LatestFrameError {
    /// The ring's file was truncated under the reader (its writer is gone or recreated
    /// it): reopen the ring.
    #[error("ring {ring}: reading the newest frame failed")]
    Ring {
        /// Ring name.
        ring: String,
        /// The cause.
        #[source]
        source: ReadError,
    },
}

/// Opens `<dir>/<name>.ring` read-only, with the ownership and header checks of
/// [`RingReader::open`].
pub fn open_ring(dir: impl AsRef<Path>, name: &str) -> Result<RingReader, RingOpenError> {
    RingReader::open(dir, name)
}

/// One frame of a ring as a request references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTarget {
    /// Where the frame is: ring, generation, slot, seq.
    pub frame: FrameRef,
    /// What the frame is: id, geometry, capture time.
    pub meta: FrameMeta,
}

impl FrameTarget {
    /// The reference to the frame `info` read from `reader`.
    pub fn new(reader: &RingReader, info: &FrameInfo) -> Self {
        FrameTarget {
            frame: FrameRef {
                ring: reader.name().to_owned(),
                generation: reader.generation(),
                slot: info.slot,
                seq: info.seq,
            },
            meta: FrameMeta::from_geometry(info.frame_id, &reader.geometry(), info.capture_ts_ns),
        }
    }

    /// An `infer` for this frame, sent now (`sent_ts_ns` is CLOCK_MONOTONIC now), with
    /// a deadline `deadline` from now if given. The id is 0: the clients assign ids.
    pub fn request(
        &self,
        camera_id: &str,
        model_id: &str,
        deadline: Option<Duration>,
    ) -> InferenceRequest {
        let sent_ts_ns = proto_schema::time::MonoNanos::now().get();
        InferenceRequest {
            v: PROTOCOL_VERSION,
            id: 0,
            camera_id: camera_id.to_owned(),
            model_id: model_id.to_owned(),
            frame: self.frame.clone(),
            meta: self.meta.clone(),
            sent_ts_ns,
            deadline_ts_ns: deadline.map(|d| {
                sent_ts_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            }),
        }
    }
}

/// The newest frame published in the ring, or `None` if nothing was published yet.
pub fn latest_frame(reader: &RingReader) -> Result<Option<FrameTarget>, LatestFrameError> {
    let info = reader
        .try_latest()
        .map_err(|source| LatestFrameError::Ring {
            ring: reader.name().to_owned(),
            source,
        })?;
    Ok(info.map(|info| FrameTarget::new(reader, &info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::pixel::{FrameGeometry, PixelFormat};
    use shm_ring::RingWriter;

    #[test]
    fn the_newest_frame_becomes_a_valid_request() {
        let dir = tempfile::tempdir().unwrap();
        let geometry = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let mut w = RingWriter::builder("cam")
            .dir(dir.path())
            .slots(3)
            .geometry(geometry)
            .create()
            .unwrap();
        let r = open_ring(dir.path(), "cam").unwrap();
        assert_eq!(latest_frame(&r).unwrap(), None);
        let mut last = None;
        for i in 0..5 {
            last = Some(
                w.begin_write()
                    .publish(i, 1_700_000_000_000_000_000 + i as u64),
            );
        }
        let info = last.unwrap();
        let t = latest_frame(&r).unwrap().unwrap();
        assert_eq!(t.frame.ring, "cam");
        assert_eq!(t.frame.generation, r.generation());
        assert_eq!((t.frame.slot, t.frame.seq), (info.slot, info.seq));
        assert_eq!(t.meta.frame_id, info.frame_id);
        assert_eq!(t.meta.capture_ts_ns, info.capture_ts_ns);
        assert!(t.meta.matches_geometry(&geometry));
        let req = t.request("cam", "yolox", Some(Duration::from_secs(1)));
        assert_eq!(req.deadline_ts_ns.unwrap() - req.sent_ts_ns, 1_000_000_000);
        // The request passes the receiver's checks.
        let bytes = serde_json::to_vec(&proto_schema::message::Request::Infer(req)).unwrap();
        proto_schema::message::decode_request(&bytes).unwrap();
    }
}
