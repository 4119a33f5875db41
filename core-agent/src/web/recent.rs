//! The recent-events store behind `GET /events` and the live feed of
//! `GET /events/stream`, fed as one more [`EventSink`] of the analytics writer thread.
//!
//! Overflow policy: the store keeps the newest `capacity` events and drops the oldest
//! (counted in [`RecentEvents::dropped`]); the live feed is a `tokio::sync::broadcast`
//! channel of the same capacity, where a stream that falls behind skips what it missed
//! and is told so (`lagged`), so a slow browser never holds up the writer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::analytics::events::Event;
use crate::analytics::sink::EventSink;
use crate::results::SinkError;

/// The newest events, newest last, and the channel announcing each new one.
#[derive(Debug)]
pub struct RecentEvents {
    items: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
    dropped: AtomicU64,
    feed: broadcast::Sender<Arc<Event>>,
}

/// A `GET /events` query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this camera.
    pub camera: Option<String>,
    /// Only this event type (`line_crossed`, ...).
    pub kind: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

impl Filter {
    /// Whether `e` passes the camera and type filters.
    pub fn admits(&self, e: &Event) -> bool {
        self.camera.as_deref().is_none_or(|c| c == e.camera)
            && self.kind.as_deref().is_none_or(|k| k == e.kind.as_str())
    }
}

impl RecentEvents {
    /// A store of at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            dropped: AtomicU64::new(0),
            feed: broadcast::channel(capacity).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Event>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `e` (dropping the oldest when full) and announces it to every stream.
    pub fn push(&self, e: Event) {
        let e = Arc::new(e);
        {
            let mut items = self.lock();
            if items.len() >= self.capacity {
                items.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back(e.clone());
        }
        // No receiver (no page open) is not an error.
        let _ = self.feed.send(e);
    }

    /// The events passing `f`, newest first, at most `f.limit`.
    pub fn query(&self, f: &Filter) -> Vec<Arc<Event>> {
        self.lock()
            .iter()
            .rev()
            .filter(|e| f.admits(e))
            .take(f.limit)
            .cloned()
            .collect()
    }

    /// A receiver of the events pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.subscribe()
    }

    /// Events dropped from the store because it was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The [`EventSink`] feeding a [`RecentEvents`] (one more sink of the analytics writer).
#[derive(Debug)]
pub struct RecentSink(pub Arc<RecentEvents>);

impl EventSink for RecentSink {
    fn name(&self) -> &str {
        "dashboard"
    }
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        self.0.push(event.clone());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::events::EventKind;

    /// An event built from JSON, so fields added to [`Event`] later (with defaults)
    /// need no change here.
    pub(crate) fn event(n: u64, camera: &str, kind: EventKind) -> Event {
        serde_json::from_value(serde_json::json!({
            "id": format!("t-{n}"), "type": kind.as_str(), "camera": camera, "model": "m",
            "rule": "r", "track": n, "class": "person", "score": 0.9,
            "bbox": [0.1, 0.1, 0.2, 0.2], "capture_ts_ns": n, "capture_unix_ms": n,
            "frame_id": n, "frame": null, "suppressed": 0
        }))
        .unwrap()
    }

    #[test]
    fn keeps_the_newest_and_filters_newest_first() {
        let r = RecentEvents::new(3);
        let mut rx = r.subscribe();
        let mut sink = RecentSink(r.clone());
        for (n, cam, kind) in [
            (0, "a", EventKind::LineCrossed),
            (1, "b", EventKind::LineCrossed),
            (2, "a", EventKind::ZoneEnter),
            (3, "a", EventKind::LineCrossed),
        ] {
            sink.write(&event(n, cam, kind)).unwrap();
        }
        assert_eq!((r.len(), r.dropped()), (3, 1));
        let ids = |f: Filter| -> Vec<String> { r.query(&f).iter().map(|e| e.id.clone()).collect() };
        let all = Filter {
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(ids(all.clone()), ["t-3", "t-2", "t-1"]);
        assert_eq!(
            ids(Filter {
                camera: Some("a".into()),
                ..all.clone()
            }),
            ["t-3", "t-2"]
        );
        assert_eq!(
            ids(Filter {
                camera: Some("a".into()),
                kind: Some("line_crossed".into()),
                limit: 10
            }),
            ["t-3"]
        );
        assert_eq!(ids(Filter { limit: 1, ..all }), ["t-3"]);
        // The feed saw all four, in order.
        let got: Vec<String> = (0..4).map(|_| rx.try_recv().unwrap().id.clone()).collect();
        assert_eq!(got, ["t-0", "t-1", "t-2", "t-3"]);
    }

    #[test]
    fn a_slow_stream_lags_instead_of_blocking() {
        let r = RecentEvents::new(2);
        let mut rx = r.subscribe();
        for n in 0..5 {
            r.push(event(n, "a", EventKind::ObjectAppeared));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
        assert_eq!(rx.try_recv().unwrap().id, "t-3");
    }
}
