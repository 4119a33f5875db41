//! What goes to the brokers: the buffered [`Item`] (encoded once, shared by every
//! broker) and the MQTT topic of each kind. Payloads are the project's own types as
//! JSON: an [`Event`] exactly as in `events.jsonl`, a [`CountRow`] (the CSV row's
//! fields), a [`CameraStatusMessage`], a [`ResultRecord`]
//! for detections. `docs/events.md` shows examples; a test decodes them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::analytics::counts::CountRow;
use crate::analytics::events::Event;
use crate::results::ResultRecord;

/// What an item is (and so its MQTT topic, QoS and retain flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// An analytics event: `<prefix><camera>/events`, QoS 1.
    Event,
    /// A closed counts interval row: `<prefix><camera>/counts`, QoS 1.
    Counts,
    /// A camera's state: `<prefix><camera>/status`, QoS 1, retained.
    Status,
    /// A result record: `<prefix><camera>/detections`, QoS 0.
    Detections,
}

impl ItemKind {
    /// The topic level after the camera.
    pub fn leaf(self) -> &'static str {
        match self {
            ItemKind::Event => "events",
            ItemKind::Counts => "counts",
            ItemKind::Status => "status",
            ItemKind::Detections => "detections",
        }
    }
}

/// One buffered item; cloning shares the encoded JSON.
#[derive(Debug, Clone)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Camera id.
    pub camera: Arc<str>,
    /// Event id and type (events only; Redis stream fields `id`, `type`).
    pub event: Option<(Arc<str>, &'static str)>,
    /// The JSON payload.
    pub json: Arc<str>,
}

impl Item {
    /// An event.
    pub fn event(e: &Event) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: ItemKind::Event,
            camera: e.camera.as_str().into(),
            event: Some((e.id.as_str().into(), e.kind.as_str())),
            json: serde_json::to_string(e)?.into(),
        })
    }

    /// A counts row.
    pub fn counts(r: &CountRow) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: ItemKind::Counts,
            camera: r.camera.as_str().into(),
            event: None,
            json: serde_json::to_string(r)?.into(),
        })
    }

    /// A camera status.
    pub fn status(s: &CameraStatusMessage) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: ItemKind::Status,
            camera: s.camera.as_str().into(),
            event: None,
            json: serde_json::to_string(s)?.into(),
        })
    }

    /// An empty status of `camera`: published retained, it clears the retained one.
    pub fn status_cleared(camera: &str) -> Self {
        Self {
            kind: ItemKind::Status,
            camera: camera.into(),
            event: None,
            json: "".into(),
        }
    }

    /// A result record's detections.
    pub fn detections(r: &ResultRecord) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: ItemKind::Detections,
            camera: r.camera.as_str().into(),
            event: None,
            json: serde_json::to_string(r)?.into(),
        })
    }

    /// Its MQTT topic under `prefix`.
    pub fn topic(&self, prefix: &str) -> String {
        format!("{prefix}{}/{}", self.camera, self.kind.leaf())
    }
}

/// `<prefix><camera>/status` (retained): the camera's state when it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraStatusMessage {
    /// Camera id.
    pub camera: String,
    /// As in `GET /cameras`: `stopped`, `starting`, `backoff`, `failed`, `live`,
    /// `reconnecting`, ...
    pub state: String,
    /// Whether the camera runs (kernel and agent started).
    pub running: bool,
    /// When the state was seen, Unix ms.
    pub unix_ms: u64,
}

/// Payload of `<prefix>available` (retained; also the last will).
pub const ONLINE: &str = "online";
/// Payload of `<prefix>available` when the agent is gone.
pub const OFFLINE: &str = "offline";

/// The availability topic under `prefix`.
pub fn available_topic(prefix: &str) -> String {
    format!("{prefix}available")
}

/// The Redis stream key of `camera`'s events under `prefix`.
pub fn stream_key(prefix: &str, camera: &str) -> String {
    format!("{prefix}{camera}:events")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::events::EventKind;

    fn event() -> Event {
        Event {
            id: "19c0-7".into(),
            kind: EventKind::LineCrossed,
            camera: "door".into(),
            model: "yolo".into(),
            rule: "entry".into(),
            track: 3,
            class: "person".into(),
            score: 0.8,
            bbox: [0.1, 0.2, 0.3, 0.4],
            direction: None,
            dwell_ms: None,
            capture_ts_ns: 1,
            capture_unix_ms: 2,
            frame_id: 3,
            frame: None,
            suppressed: 0,
            clip: None,
        }
    }

    #[test]
    fn events_are_the_jsonl_line_and_topics_follow_the_tree() {
        let e = event();
        let item = Item::event(&e).unwrap();
        assert_eq!(&*item.json, serde_json::to_string(&e).unwrap());
        let back: Event = serde_json::from_str(&item.json).unwrap();
        assert_eq!(back, e);
        assert_eq!(item.topic("framebus/"), "framebus/door/events");
        assert_eq!(item.event.as_ref().unwrap().1, "line_crossed");
        assert_eq!(available_topic("x/"), "x/available");
        assert_eq!(stream_key("framebus:", "door"), "framebus:door:events");
    }

    /// The examples in `docs/events.md` decode into the real types and re-encode to the
    /// same JSON (so the doc cannot drift from the wire format).
    #[test]
    fn docs_examples_decode_with_the_real_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let mut lines = doc.lines();
        while let Some(l) = lines.next() {
            let Some(kind) = l.strip_prefix("```json payload=") else {
                continue;
            };
            let body: String = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect::<Vec<_>>()
                .join("\n");
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            // Through the text encoding: f32 fields print as written (0.86), while a
            // Value made from them directly would hold their f64 widening.
            fn again<T: serde::de::DeserializeOwned + Serialize>(body: &str) -> serde_json::Value {
                let typed: T = serde_json::from_str(body).unwrap();
                serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap()
            }
            let again = match kind {
                "event" => again::<Event>(&body),
                "counts" => again::<CountRow>(&body),
                "status" => again::<CameraStatusMessage>(&body),
                "detections" => again::<ResultRecord>(&body),
                other => panic!("unknown payload kind {other:?} in docs/events.md"),
            };
            // Same fields, same values: nothing in the doc is ignored or invented.
            assert_eq!(again, value, "{kind}: {body}");
            *seen.entry(kind.to_owned()).or_default() += 1;
        }
        for k in ["event", "counts", "status", "detections"] {
            assert!(
                seen.contains_key(k),
                "docs/events.md has no {k} example: {seen:?}"
            );
        }
    }
}
