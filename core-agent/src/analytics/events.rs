//! Events and their cooldown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use proto_schema::message::FrameRef;
use serde::{Deserialize, Serialize};

/// Event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A track crossed a line (`direction` says which way).
    LineCrossed,
    /// A track entered a zone.
    ZoneEnter,
    /// A track left a zone (or ended inside it).
    ZoneExit,
    /// A track stayed in a zone past its `loiter_s`.
    Loitering,
    /// A track was confirmed.
    ObjectAppeared,
    /// A confirmed track ended (unmatched for longer than the max age).
    ObjectLeft,
}

impl EventKind {
    /// Name as written in events.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LineCrossed => "line_crossed",
            EventKind::ZoneEnter => "zone_enter",
            EventKind::ZoneExit => "zone_exit",
            EventKind::Loitering => "loitering",
            EventKind::ObjectAppeared => "object_appeared",
            EventKind::ObjectLeft => "object_left",
        }
    }
}

/// One event, as written to `events.jsonl` and into the result record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id: `<process start, hex>-<sequence>`, unique across restarts of the
    /// agent (the start time differs) and within one run.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Camera id.
    pub camera: String,
    /// Model id whose detections were tracked.
    pub model: String,
    /// Rule name (`presence` for `object_appeared` / `object_left`).
    pub rule: String,
    /// Track id.
    pub track: u64,
    /// Class name.
    pub class: String,
    /// Score of the track's latest detection.
    pub score: f32,
    /// Box of the track's latest detection, normalised `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// `line_crossed`: `in` or `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<super::line::Direction>,
    /// `zone_exit`, `loitering`: time inside the zone, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_ms: Option<u64>,
    /// Capture time of the frame from the ring slot, CLOCK_REALTIME (Unix) ns.
    pub capture_ts_ns: u64,
    /// Capture time, Unix ms.
    pub capture_unix_ms: u64,
    /// Frame id in the ring.
    pub frame_id: u64,
    /// The frame (ring, generation, slot, seq), to fetch it while it is still in the
    /// ring; `null` when the record carried none (the track ended between frames).
    pub frame: Option<FrameRef>,
    /// Events of this (camera, rule, type) suppressed by the cooldown since the last
    /// one written.
    pub suppressed: u64,
    /// The event's clip, relative to `[clips] dir` (`<camera>/<YYYY-MM-DD>/<id>.mp4`),
    /// when its camera records clips of its type; served at `GET
    /// /events/{id}/clip.mp4` once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);
static START: OnceLock<u64> = OnceLock::new();

/// A new unique event id.
pub fn next_id() -> String {
    let start = *START.get_or_init(|| crate::clock::UnixNanos::now().get() / 1_000_000);
    format!("{start:x}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Per (rule, type) cooldown of one camera: an event within `window_ns` of the last
/// one written for the same key is suppressed (and counted into the next one written).
/// Counts never go through here: they are updated before.
#[derive(Debug, Default, Clone)]
pub struct Cooldown {
    last: HashMap<(String, EventKind), (u64, u64)>,
}

impl Cooldown {
    /// Whether an event of `kind` for `rule` at `now_ns` is written, given the rule's
    /// `window_ns` (0: always). `Some(suppressed since the last one)` when it is.
    pub fn admit(
        &mut self,
        rule: &str,
        kind: EventKind,
        now_ns: u64,
        window_ns: u64,
    ) -> Option<u64> {
        let key = (rule.to_owned(), kind);
        match self.last.get_mut(&key) {
            Some((at, suppressed)) if window_ns > 0 && now_ns.saturating_sub(*at) < window_ns => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now_ns;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert(key, (now_ns, 0));
                Some(0)
            }
        }
    }

    /// Forgets the state of rules no longer configured.
    pub fn retain_rules(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|(r, _), _| keep(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn cooldown_suppresses_repeats_and_reports_them() {
        let mut c = Cooldown::default();
        let w = 15 * S;
        assert_eq!(c.admit("door", EventKind::LineCrossed, 0, w), Some(0));
        assert_eq!(c.admit("door", EventKind::LineCrossed, 5 * S, w), None);
        assert_eq!(c.admit("door", EventKind::LineCrossed, 14 * S, w), None);
        // Other type, other rule: their own keys.
        assert_eq!(c.admit("door", EventKind::ZoneEnter, 5 * S, w), Some(0));
        assert_eq!(c.admit("gate", EventKind::LineCrossed, 5 * S, w), Some(0));
        assert_eq!(c.admit("door", EventKind::LineCrossed, 15 * S, w), Some(2));
        // 0 disables.
        assert_eq!(c.admit("x", EventKind::LineCrossed, 0, 0), Some(0));
        assert_eq!(c.admit("x", EventKind::LineCrossed, 0, 0), Some(0));
    }

    #[test]
    fn ids_are_unique() {
        let a: std::collections::BTreeSet<String> = (0..1000).map(|_| next_id()).collect();
        assert_eq!(a.len(), 1000);
    }
}
