//! Result records and where they go.
//!
//! Stream agents turn each answer into a [`ResultRecord`] and push it into the bounded
//! [`ResultQueue`]; one dispatcher thread hands records to every [`Sink`]. Overflow
//! policy: when the queue is full the **oldest** record is dropped and counted (fresh
//! results matter more than old ones; agents never wait on slow sinks). A sink that
//! cannot write (disk full) drops the batch's records whole and counts them per sink
//! ([`crate::sinks`]); `framebus_results_dropped_total` counts both losses.

mod sink;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use proto_schema::message::{Detection, FrameRef};
use serde::{Deserialize, Serialize};

pub use sink::{JsonlSink, Sink, SinkError, StdoutSink};

/// One inference result of one frame, as written by the sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Camera id.
    pub camera: String,
    /// Model id.
    pub model: String,
    /// Frame id assigned by the camera's ring.
    pub frame_id: u64,
    /// Capture time from the ring slot, CLOCK_REALTIME (Unix) nanoseconds.
    pub capture_ts_ns: u64,
    /// Capture time as wall-clock milliseconds since the Unix epoch.
    pub capture_unix_ms: u64,
    /// When the result arrived, wall-clock milliseconds since the Unix epoch.
    pub result_unix_ms: u64,
    /// Where the time went.
    pub latency_ms: Latencies,
    /// Detections (after the subscription's class filter).
    pub detections: Vec<Detection>,
    /// The frame the detections belong to (ring, generation, slot, seq), so later
    /// stages can fetch it while it is still in the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameRef>,
    /// The motion gate found nothing moving: no inference ran on this frame and
    /// `detections` are those of the last inferred frame (analytics skips such records).
    /// Written only when `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// With `reused`: how much older than this frame the reused result's frame is,
    /// milliseconds of capture time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_age_ms: Option<f64>,
    /// Analytics: per detection (same order), its track id; `null` for a detection
    /// not (yet) in a confirmed track. Empty when the camera has no analytics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_ids: Vec<Option<u64>>,
    /// Analytics: events raised by this frame (also written to `events.jsonl`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::analytics::events::Event>,
}

/// Latencies of one result, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// From capture (frame published in the ring) to the result at the agent.
    pub capture_to_result: f64,
    /// From sending the request to the result at the agent.
    pub request_to_result: f64,
    /// Inside the model server, receipt to answer.
    pub server_total: f64,
    /// The model run itself.
    pub inference: f64,
}

impl ResultRecord {
    /// Number of detections of class `name`.
    pub fn count_of(&self, name: &str) -> usize {
        self.detections
            .iter()
            .filter(|d| d.class_name == name)
            .count()
    }
}

/// Bounded multi-producer queue in front of the sinks; drops the oldest when full (see
/// [`crate::queue`]).
pub type ResultQueue = crate::queue::DropOldestQueue<ResultRecord>;

/// A step run on every record in the dispatcher thread before the sinks (analytics).
pub trait RecordStage: Send {
    /// Looks at and may annotate one record.
    fn process(&mut self, record: &mut ResultRecord);
    /// The queue closed and is drained: emit what is still open.
    fn finish(&mut self);
}

/// The thread that drains the queue into the sinks.
#[derive(Debug)]
pub struct Dispatcher {
    queue: Arc<ResultQueue>,
    written: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts draining `queue` into `sinks`.
    pub fn start(queue: Arc<ResultQueue>, sinks: Vec<Box<dyn Sink>>) -> std::io::Result<Self> {
        Self::start_with(queue, sinks, None)
    }

    /// Starts draining `queue` into `sinks`, each record passing `stage` first.
    pub fn start_with(
        queue: Arc<ResultQueue>,
        mut sinks: Vec<Box<dyn Sink>>,
        mut stage: Option<Box<dyn RecordStage>>,
    ) -> std::io::Result<Self> {
        let written = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let (q, w, e) = (queue.clone(), written.clone(), errors.clone());
        let thread = std::thread::Builder::new()
            .name("result-sinks".into())
            .spawn(move || {
                let mut logged = 0u64;
                while let Some(mut batch) = q.pop_all(Duration::from_millis(250)) {
                    if let Some(st) = stage.as_mut() {
                        for rec in batch.iter_mut() {
                            st.process(rec);
                        }
                    }
                    for sink in sinks.iter_mut() {
                        for rec in &batch {
                            if let Err(err) = sink.write(rec) {
                                let n = e.fetch_add(1, Ordering::Relaxed);
                                // Log the first error and then every 1000th, not each one.
                                if n == logged {
                                    tracing::warn!(
                                        sink = sink.name(),
                                        "cannot write result: {err}"
                                    );
                                    logged = n + 1000;
                                }
                            }
                        }
                        if let Err(err) = sink.flush() {
                            // A failing disk fails every batch: the sink's health says
                            // so once (crate::sinks); here the same throttle as above.
                            let n = e.fetch_add(1, Ordering::Relaxed);
                            if n == logged {
                                tracing::warn!(sink = sink.name(), "flush: {err}");
                                logged = n + 1000;
                            }
                        }
                    }
                    w.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                if let Some(st) = stage.as_mut() {
                    st.finish();
                }
            })?;
        Ok(Self {
            queue,
            written,
            errors,
            thread: Some(thread),
        })
    }

    /// Records handed to the sinks.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Sink write errors.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Closes the queue, writes what is left, flushes and joins the thread; returns
    /// the number of records written.
    pub fn finish(mut self) -> u64 {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.written()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(frame_id: u64) -> ResultRecord {
        ResultRecord {
            camera: "cam1".into(),
            model: "det".into(),
            frame_id,
            capture_ts_ns: 1,
            capture_unix_ms: 2,
            result_unix_ms: 3,
            latency_ms: Latencies::default(),
            detections: vec![Detection {
                class_id: 0,
                class_name: "person".into(),
                confidence: 0.9,
                bbox: [0.1, 0.1, 0.2, 0.3],
            }],
            frame: None,
            reused: false,
            result_age_ms: None,
            track_ids: vec![],
            events: vec![],
        }
    }

    #[test]
    fn reuse_fields_are_written_only_on_reused_records() {
        let plain = serde_json::to_string(&record(1)).unwrap();
        assert!(
            !plain.contains("reused") && !plain.contains("result_age_ms"),
            "{plain}"
        );
        let reused = ResultRecord {
            reused: true,
            result_age_ms: Some(400.0),
            ..record(2)
        };
        let text = serde_json::to_string(&reused).unwrap();
        assert!(
            text.contains("\"reused\":true") && text.contains("\"result_age_ms\":400.0"),
            "{text}"
        );
        let back: ResultRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, reused);
        let old: ResultRecord = serde_json::from_str(&plain).unwrap();
        assert!(!old.reused);
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let q = ResultQueue::new(3);
        for i in 0..5 {
            assert!(q.push(record(i)));
        }
        assert_eq!(q.dropped(), 2);
        let ids: Vec<u64> = q
            .pop_all(Duration::ZERO)
            .unwrap()
            .iter()
            .map(|r| r.frame_id)
            .collect();
        assert_eq!(ids, vec![2, 3, 4]);
        q.close();
        assert!(!q.push(record(9)));
        assert!(q.pop_all(Duration::ZERO).is_none());
    }

    #[test]
    fn dispatcher_delivers_everything_before_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let q = ResultQueue::new(100);
        let d = Dispatcher::start(
            q.clone(),
            vec![Box::new(
                JsonlSink::create(&path, &crate::sinks::SinkHealth::default()).unwrap(),
            )],
        )
        .unwrap();
        for i in 0..50 {
            q.push(record(i));
        }
        d.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<ResultRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 50);
        assert_eq!(recs[49], record(49));
        assert_eq!(recs[0].count_of("person"), 1);
    }
}
