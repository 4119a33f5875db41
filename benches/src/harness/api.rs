//! The parts of core-agent's status API (`/cameras`, `/models`) the harness reads, and the
//! difference of two snapshots (counters over a measurement window).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CameraStatus {
    pub id: String,
    pub state: String,
    pub fps_decoded: f64,
    pub ring: RingView,
    pub kernel: Option<ProcStatus>,
    pub subscriptions: Vec<SubCounters>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RingView {
    pub state: String,
    pub generation: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub reconnects: u64,
    pub fps_decoded: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcStatus {
    pub pid: Option<i64>,
    pub restarts: u32,
    pub start_to_ready_ms: Option<u64>,
    pub last_recovery_ms: Option<u64>,
}

/// Counters of one subscription (camera → model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Counters {
    pub sent: u64,
    pub results: u64,
    pub missed: u64,
    pub stale: u64,
    pub overloaded: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub disconnects: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubCounters {
    pub model: String,
    pub target_fps: f64,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelStatus {
    pub id: String,
    pub state: String,
    pub server: ProcStatus,
}

impl Counters {
    /// `self - earlier`, saturating (counters restart from 0 only if core-agent restarts).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            sent: self.sent.saturating_sub(earlier.sent),
            results: self.results.saturating_sub(earlier.results),
            missed: self.missed.saturating_sub(earlier.missed),
            stale: self.stale.saturating_sub(earlier.stale),
            overloaded: self.overloaded.saturating_sub(earlier.overloaded),
            unavailable: self.unavailable.saturating_sub(earlier.unavailable),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            disconnects: self.disconnects.saturating_sub(earlier.disconnects),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }

    /// Gate slots or requests that did not become a result.
    pub fn lost(&self) -> u64 {
        self.missed
            + self.stale
            + self.overloaded
            + self.unavailable
            + self.timeouts
            + self.disconnects
            + self.errors
    }

    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.results += o.results;
        self.missed += o.missed;
        self.stale += o.stale;
        self.overloaded += o.overloaded;
        self.unavailable += o.unavailable;
        self.timeouts += o.timeouts;
        self.disconnects += o.disconnects;
        self.errors += o.errors;
    }
}

/// A `/cameras` snapshot keyed for diffs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub cameras: BTreeMap<String, CameraStatus>,
}

impl Snapshot {
    pub fn parse(json: &serde_json::Value) -> Result<Snapshot, serde_json::Error> {
        let list: Vec<CameraStatus> = serde_json::from_value(json.clone())?;
        Ok(Snapshot {
            cameras: list.into_iter().map(|c| (c.id.clone(), c)).collect(),
        })
    }

    /// Counters of (camera, model) in this snapshot.
    pub fn counters(&self, camera: &str, model: &str) -> Counters {
        self.cameras
            .get(camera)
            .and_then(|c| c.subscriptions.iter().find(|s| s.model == model))
            .map(|s| s.counters)
            .unwrap_or_default()
    }

    /// Frames decoded by `camera`'s kernel between `earlier` and this snapshot (0 if
    /// the ring was recreated in between, as its counters restart).
    pub fn decoded_since(&self, earlier: &Snapshot, camera: &str) -> Option<u64> {
        let (a, b) = (earlier.cameras.get(camera)?, self.cameras.get(camera)?);
        (a.ring.generation == b.ring.generation)
            .then(|| b.ring.frames_decoded.saturating_sub(a.ring.frames_decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(results: u64, missed: u64, decoded: u64, generation: u64) -> Snapshot {
        let json = serde_json::json!([{
            "id": "cam0", "source": "x.mp4", "state": "live", "running": true,
            "kernel": {"state": "ready", "pid": 42, "restarts": 0, "ready_epoch": 1,
                       "last_error": null, "start_to_ready_ms": 300, "last_recovery_ms": null},
            "ring": {"state": "live", "generation": generation, "frames_decoded": decoded,
                     "decode_errors": 0, "reconnects": 0, "fps_decoded": 25.0},
            "fps_decoded": 25.0, "frames_seen": 10,
            "subscriptions": [{"model": "yolov8", "target_fps": 5.0, "fps_inferred": 5.0,
                "sent": results + 1, "results": results, "missed": missed, "stale": 0,
                "overloaded": 0, "unavailable": 0, "timeouts": 0, "disconnects": 0,
                "errors": 0, "people": 3, "detections": 4,
                "latency_ms": {"count": 1, "p50": 1.0, "p90": 1.0, "p99": 1.0}}]
        }]);
        Snapshot::parse(&json).unwrap()
    }

    #[test]
    fn diffs_counters_over_a_window() {
        let (a, b) = (snap(10, 1, 100, 1), snap(60, 3, 350, 1));
        let d = b
            .counters("cam0", "yolov8")
            .since(&a.counters("cam0", "yolov8"));
        assert_eq!((d.results, d.missed, d.sent), (50, 2, 50));
        assert_eq!(d.lost(), 2);
        assert_eq!(b.decoded_since(&a, "cam0"), Some(250));
        assert_eq!(b.cameras["cam0"].kernel.as_ref().unwrap().pid, Some(42));
        assert_eq!(b.counters("cam0", "nope"), Counters::default());
    }

    #[test]
    fn recreated_ring_has_no_decoded_diff() {
        assert_eq!(
            snap(0, 0, 5, 2).decoded_since(&snap(0, 0, 100, 1), "cam0"),
            None
        );
    }

    #[test]
    fn adds_counters() {
        let mut t = Counters::default();
        t.add(&Counters {
            results: 2,
            stale: 1,
            ..Counters::default()
        });
        t.add(&Counters {
            results: 3,
            ..Counters::default()
        });
        assert_eq!((t.results, t.lost()), (5, 1));
    }
}
