//! The latest result of every camera, fed from the result path.
//!
//! [`LiveSink`] is one more sink of the result dispatcher: it sees each record after
//! the analytics stage annotated it with track ids, and keeps, per (camera, model),
//! only the newest record's boxes. Bounded: one entry per (camera, model), at most
//! [`MAX_STREAMS`] of them (records of further streams are not kept for the live view;
//! they are still written everywhere else). Records the motion gate reused (no new
//! inference, no track ids) are skipped: the entry keeps the inferred one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::draw::BoxMark;
use crate::results::{ResultRecord, Sink, SinkError};

/// Most (camera, model) streams kept.
pub const MAX_STREAMS: usize = 1024;

/// Results older than this (capture time, behind the frame drawn on) are not drawn: the
/// model is down or slow, and old boxes on a new frame would mislead.
pub const MAX_RESULT_AGE_NS: u64 = 2_000_000_000;

/// The newest result of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Frame id the result belongs to.
    pub frame_id: u64,
    /// Ring generation of that frame (`None` when the record had no frame reference).
    pub generation: Option<u64>,
    /// Capture time of that frame, the ring's clock.
    pub capture_ts_ns: u64,
    /// Its detections, with track ids.
    pub boxes: Vec<BoxMark>,
}

/// What one overlay draws: boxes and the newest result's frame id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drawn {
    /// Boxes of every fresh stream of the camera.
    pub boxes: Vec<BoxMark>,
    /// Frame id of the newest result drawn.
    pub result_frame_id: Option<u64>,
}

/// Latest result per (camera, model).
#[derive(Debug, Default)]
pub struct LatestStore {
    streams: Mutex<BTreeMap<(String, String), Latest>>,
    version: AtomicU64,
}

impl LatestStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Latest>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `record` as its stream's newest (unless reused by the motion gate).
    pub fn put(&self, record: &ResultRecord) {
        if record.reused {
            return;
        }
        let boxes = record
            .detections
            .iter()
            .enumerate()
            .map(|(i, d)| BoxMark {
                bbox: d.bbox,
                class_id: d.class_id,
                class: d.class_name.clone(),
                track: record.track_ids.get(i).copied().flatten(),
            })
            .collect();
        let latest = Latest {
            frame_id: record.frame_id,
            generation: record.frame.as_ref().map(|f| f.generation),
            capture_ts_ns: record.capture_ts_ns,
            boxes,
        };
        let key = (record.camera.clone(), record.model.clone());
        let mut s = self.lock();
        if s.len() >= MAX_STREAMS && !s.contains_key(&key) {
            return;
        }
        s.insert(key, latest);
        drop(s);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Goes up with every kept record (an encoder skips work when neither it nor the
    /// frame changed).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The boxes to draw on a frame of ring `generation` captured at `capture_ts_ns`:
    /// each stream's newest result of that generation, at most
    /// [`MAX_RESULT_AGE_NS`] older than the frame.
    pub fn drawn(&self, camera: &str, generation: u64, capture_ts_ns: u64) -> Drawn {
        let s = self.lock();
        let mut out = Drawn::default();
        for ((c, _), l) in s.range((camera.to_owned(), String::new())..) {
            if c != camera {
                break;
            }
            if l.generation.is_some_and(|g| g != generation)
                || capture_ts_ns.saturating_sub(l.capture_ts_ns) > MAX_RESULT_AGE_NS
            {
                continue;
            }
            out.boxes.extend(l.boxes.iter().cloned());
            out.result_frame_id = out.result_frame_id.max(Some(l.frame_id));
        }
        out
    }

    /// Forgets a camera (removed through the API).
    pub fn forget(&self, camera: &str) {
        self.lock().retain(|(c, _), _| c != camera);
    }
}

/// The sink that feeds a [`LatestStore`].
#[derive(Debug)]
pub struct LiveSink {
    store: std::sync::Arc<LatestStore>,
}

impl LiveSink {
    /// A sink writing into `store`.
    pub fn new(store: std::sync::Arc<LatestStore>) -> Self {
        Self { store }
    }
}

impl Sink for LiveSink {
    fn name(&self) -> &str {
        "live"
    }

    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        self.store.put(record);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Latencies;
    use proto_schema::message::{Detection, FrameRef};

    fn rec(camera: &str, model: &str, frame_id: u64, ts: u64, reused: bool) -> ResultRecord {
        ResultRecord {
            camera: camera.into(),
            model: model.into(),
            frame_id,
            capture_ts_ns: ts,
            capture_unix_ms: 0,
            result_unix_ms: 0,
            latency_ms: Latencies::default(),
            detections: vec![
                Detection {
                    class_id: 0,
                    class_name: "person".into(),
                    confidence: 0.9,
                    bbox: [0.1, 0.1, 0.2, 0.3],
                },
                Detection {
                    class_id: 2,
                    class_name: "car".into(),
                    confidence: 0.8,
                    bbox: [0.5, 0.5, 0.7, 0.6],
                },
            ],
            frame: Some(FrameRef {
                ring: camera.into(),
                generation: 7,
                slot: 0,
                seq: 2,
            }),
            reused,
            result_age_ms: None,
            track_ids: if reused { vec![] } else { vec![Some(4), None] },
            events: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_inferred_result_with_track_ids() {
        let store = LatestStore::default();
        let mut sink = LiveSink::new(std::sync::Arc::new(LatestStore::default()));
        sink.write(&rec("a", "m", 1, 10, false)).unwrap();
        store.put(&rec("a", "m", 1, 10, false));
        store.put(&rec("a", "m", 2, 20, false));
        let v = store.version();
        store.put(&rec("a", "m", 3, 30, true));
        assert_eq!(store.version(), v, "a reused record changes nothing");
        let d = store.drawn("a", 7, 40);
        assert_eq!(d.result_frame_id, Some(2));
        assert_eq!(d.boxes.len(), 2);
        assert_eq!(d.boxes[0].track, Some(4));
        assert_eq!(d.boxes[1].track, None);
        assert_eq!(d.boxes[1].class, "car");
        assert!(store.drawn("b", 7, 40).boxes.is_empty());
    }

    #[test]
    fn results_of_other_generations_or_too_old_are_not_drawn() {
        let store = LatestStore::default();
        store.put(&rec("a", "m", 2, 1_000, false));
        store.put(&rec("a", "n", 3, 5_000_000_000, false));
        store.put(&rec("ab", "m", 3, 5_000_000_000, false));
        assert_eq!(store.drawn("a", 8, 1_000).boxes.len(), 0);
        let d = store.drawn("a", 7, 5_000_000_000);
        assert_eq!((d.boxes.len(), d.result_frame_id), (2, Some(3)));
        let d = store.drawn("a", 7, 1_500_000_000);
        assert_eq!((d.boxes.len(), d.result_frame_id), (4, Some(3)));
        store.forget("a");
        assert!(store.drawn("a", 7, 1_000).boxes.is_empty());
        assert_eq!(store.drawn("ab", 7, 5_000_000_000).boxes.len(), 2);
    }

    #[test]
    fn the_number_of_streams_is_bounded() {
        let store = LatestStore::default();
        for i in 0..MAX_STREAMS + 5 {
            store.put(&rec(&format!("c{i}"), "m", 1, 1, false));
        }
        assert_eq!(store.lock().len(), MAX_STREAMS);
    }
}
