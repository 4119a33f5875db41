//! Where events and counts go: the [`EventSink`] interface (a broker sink implements
//! the same three methods), the JSON Lines events file, and the writer thread behind a
//! bounded queue.
//!
//! Overflow policy: the queue holds at most `[analytics] queue` entries; when full the
//! **oldest** entry is dropped and counted (`framebus_analytics_dropped_total`), the
//! same policy as the result queue: the stage never waits on a slow disk or broker.
//! Counts are never lost to this queue for `GET /counts` and `/metrics` (they are
//! updated before it); only the CSV row or event line would be.
//!
//! Write failures (disk full): `events.jsonl` and the CSV keep whole lines only; the
//! lines of a failed write are dropped and counted per sink, and `/health` is degraded
//! while it lasts (see [`crate::sinks`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::counts::{CountRow, CsvWriter};
use super::events::Event;
use crate::results::SinkError;
use crate::sinks::{LineFile, SinkHealth, SinkKind};

/// Where events go. Called from one thread; writes may buffer until `flush`.
pub trait EventSink: Send {
    /// Name for logs.
    fn name(&self) -> &str;
    /// Takes one event.
    fn write(&mut self, event: &Event) -> Result<(), SinkError>;
    /// Pushes buffered events out.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Takes one closed counts row (the CSV has its own writer; broker sinks publish
    /// rows too). Default: ignored.
    fn write_row(&mut self, _row: &CountRow) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Appends one JSON object per event to a file (`events.jsonl`), whole lines only
/// (see [`crate::sinks`]).
#[derive(Debug)]
pub struct JsonlEventSink {
    file: LineFile,
}

impl JsonlEventSink {
    /// Opens `path` for appending (created with mode 0640 if missing; a torn last line
    /// is cut off), reporting to `health` as `events:<path>`.
    pub fn create(path: &Path, health: &SinkHealth) -> Result<Self, SinkError> {
        let h = health.register(SinkKind::Events, format!("events:{}", path.display()));
        Ok(Self {
            file: LineFile::open(path, None, h)?,
        })
    }
}

impl EventSink for JsonlEventSink {
    fn name(&self) -> &str {
        self.file.health().name()
    }
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        Ok(self.file.push_json(event)?)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.file.flush()?)
    }
}

/// What the writer thread writes.
#[derive(Debug, Clone)]
pub enum Output {
    /// An event, to every event sink.
    Event(Box<Event>),
    /// A closed counts interval, to the CSV file.
    Row(CountRow),
}

/// Bounded queue in front of the writer; drops the oldest when full (see
/// [`crate::queue`]).
pub type OutputQueue = crate::queue::DropOldestQueue<Output>;

/// The thread writing events and counts rows.
#[derive(Debug)]
pub struct Writer {
    queue: Arc<OutputQueue>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `queue` into `sinks` and `csv`; `errors` counts failed writes.
    pub fn start(
        queue: Arc<OutputQueue>,
        mut sinks: Vec<Box<dyn EventSink>>,
        mut csv: Option<CsvWriter>,
        errors: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("analytics-out".into())
            .spawn(move || {
                let mut logged = 0u64;
                let mut fail = |what: &str, err: &dyn std::fmt::Display| {
                    let n = errors.fetch_add(1, Ordering::Relaxed);
                    // The first error and then every 1000th, not each one.
                    if n == logged {
                        tracing::warn!("analytics {what}: {err}");
                        logged = n + 1000;
                    }
                };
                while let Some(batch) = q.pop_all(Duration::from_millis(250)) {
                    for o in &batch {
                        match o {
                            Output::Event(e) => {
                                for s in sinks.iter_mut() {
                                    if let Err(err) = s.write(e) {
                                        fail("event", &err);
                                    }
                                }
                            }
                            Output::Row(r) => {
                                for s in sinks.iter_mut() {
                                    if let Err(err) = s.write_row(r) {
                                        fail("counts", &err);
                                    }
                                }
                                if let Some(w) = csv.as_mut() {
                                    if let Err(err) = w.write(r) {
                                        fail("counts", &err);
                                    }
                                }
                            }
                        }
                    }
                    for s in sinks.iter_mut() {
                        if let Err(err) = s.flush() {
                            fail("event flush", &err);
                        }
                    }
                    if let Some(Err(err)) = csv.as_mut().map(CsvWriter::flush) {
                        fail("counts flush", &err);
                    }
                }
            })?;
        Ok(Self {
            queue,
            thread: Some(thread),
        })
    }

    /// Closes the queue, writes what is left and joins the thread.
    pub fn finish(mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = OutputQueue::new(2);
        for i in 0..5 {
            q.push(Output::Row(CountRow {
                start_ms: i,
                interval_s: 60,
                camera: "c".into(),
                model: "m".into(),
                rule: "r".into(),
                kind: super::super::counts::RuleKind::Line,
                class: "*".into(),
                in_: 0,
                out: 0,
                occupancy_peak: None,
                occupancy_mean: None,
                frames: 0,
            }));
        }
        assert_eq!(q.dropped(), 3);
        let got = q.pop_all(Duration::ZERO).unwrap();
        assert!(matches!(&got[0], Output::Row(r) if r.start_ms == 3));
        q.close();
        assert!(q.pop_all(Duration::ZERO).is_none());
    }
}
