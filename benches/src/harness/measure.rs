//! One measured run of the whole system: start from a spec, wait until every subscription
//! delivers, measure a window (API counters at both ends, result records, per-process CPU
//! and memory), stop and clean up.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::api::{Counters, Snapshot};
use super::config::SystemSpec;
use super::load::{LoadMonitor, ProcessUsage};
use super::results::{unix_ms, Record};
use super::stats::Summary;
use super::system::{StopReport, System, SystemError};

/// Timing of a measured run.
#[derive(Debug, Clone, Copy)]
pub struct RunTiming {
    /// Longest wait for /ready plus first results.
    pub ready_timeout: Duration,
    /// Running time after the first results and before the window.
    pub warmup: Duration,
    pub window: Duration,
    /// Time after the window for answers to frames captured inside it.
    pub tail: Duration,
}

/// Per (camera, model) numbers of one window.
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    pub camera: String,
    pub model: String,
    pub target_fps: f64,
    /// target_fps x window.
    pub requested: f64,
    /// Results for frames captured inside the window.
    pub inferred: usize,
    pub ratio: f64,
    /// Counter deltas over the window (missed slots, stale frames, failures).
    pub counters: Counters,
    pub latency_ms: Option<Summary>,
}

/// Per-camera decode rate.
#[derive(Debug, Clone, Serialize)]
pub struct CameraResult {
    pub camera: String,
    pub decoded_fps: Option<f64>,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub cameras: usize,
    pub ready_s: f64,
    pub window_s: f64,
    pub pairs: Vec<PairResult>,
    pub camera_decode: Vec<CameraResult>,
    /// Capture-to-result latency over all cameras, per model.
    pub model_latency_ms: std::collections::BTreeMap<String, Summary>,
    pub processes: Vec<ProcessUsage>,
    pub stop: StopReport,
    pub bad_result_lines: usize,
    /// `GET /models` at the end of the window (the servers' calibrated settings).
    pub models_status: Option<serde_json::Value>,
}

impl RunResult {
    /// `threads x instances` a model's server runs with, from its status (`auto`:
    /// what its calibration chose).
    pub fn sessions(&self, model: &str) -> Option<String> {
        let models = self.models_status.as_ref()?.as_array()?;
        let m = models.iter().find(|m| m["id"] == model)?;
        let c = &m["server"]["calibration"];
        let (t, i) = (c["threads"].as_u64()?, c["instances"].as_u64()?);
        Some(format!("{t} x {i} ({})", c["how"].as_str().unwrap_or("?")))
    }

    /// Sum over the pairs of one model: (inferred, requested, counters).
    pub fn model_totals(&self, model: &str) -> (usize, f64, Counters) {
        let mut c = Counters::default();
        let (mut inf, mut req) = (0, 0.0);
        for p in self.pairs.iter().filter(|p| p.model == model) {
            inf += p.inferred;
            req += p.requested;
            c.add(&p.counters);
        }
        (inf, req, c)
    }
}

/// Per (camera, model) from the records of frames captured in `[t0, t1)` ms.
pub fn pair_results(
    spec: &SystemSpec,
    records: &[Record],
    t0_ms: u64,
    t1_ms: u64,
    before: &Snapshot,
    after: &Snapshot,
) -> Vec<PairResult> {
    let window_s = (t1_ms.saturating_sub(t0_ms)) as f64 / 1e3;
    spec.subscriptions
        .iter()
        .map(|s| {
            let mut lat: Vec<f64> = records
                .iter()
                .filter(|r| {
                    r.camera == s.camera
                        && r.model == s.model
                        && r.capture_unix_ms >= t0_ms
                        && r.capture_unix_ms < t1_ms
                })
                .map(|r| r.latency_ms.capture_to_result)
                .collect();
            let requested = s.fps * window_s;
            let inferred = lat.len();
            PairResult {
                camera: s.camera.clone(),
                model: s.model.clone(),
                target_fps: s.fps,
                requested,
                inferred,
                ratio: if requested > 0.0 {
                    inferred as f64 / requested
                } else {
                    0.0
                },
                counters: after
                    .counters(&s.camera, &s.model)
                    .since(&before.counters(&s.camera, &s.model)),
                latency_ms: Summary::of(&mut lat),
            }
        })
        .collect()
}

fn snapshot(sys: &System) -> Result<Snapshot, SystemError> {
    let v = sys.api_json("/cameras")?;
    Snapshot::parse(&v).map_err(|e| SystemError::Api {
        path: "/cameras".into(),
        reason: e.to_string(),
    })
}

/// Starts the system for `spec`, measures one window, stops it.
pub fn run_window(
    spec: &SystemSpec,
    bin_dir: &Path,
    monitor: &LoadMonitor,
    t: RunTiming,
) -> Result<RunResult, SystemError> {
    let mut sys = System::start(spec, bin_dir)?;
    let started = Instant::now();
    sys.wait_ready(t.ready_timeout)?;
    sys.wait_first_results(spec, t.ready_timeout.saturating_sub(started.elapsed()))?;
    let ready_s = started.elapsed().as_secs_f64();
    sys.sleep(t.warmup)?;
    monitor.begin_window();
    let before = snapshot(&sys)?;
    let t0 = unix_ms();
    let w0 = Instant::now();
    sys.sleep(t.window)?;
    let after = snapshot(&sys)?;
    let t1 = unix_ms();
    let models_status = sys.api_json("/models").ok();
    let window_s = w0.elapsed().as_secs_f64();
    let usage = monitor.report();
    sys.check_alive()?;
    // Answers to frames captured just before t1 are still on their way.
    sys.sleep(t.tail)?;
    let records = sys.results.records();
    let bad_result_lines = sys.results.bad_lines();
    let pairs = pair_results(spec, &records, t0, t1, &before, &after);
    let camera_decode = spec
        .cameras
        .iter()
        .map(|c| CameraResult {
            camera: c.id.clone(),
            decoded_fps: after
                .decoded_since(&before, &c.id)
                .map(|n| n as f64 / window_s),
        })
        .collect();
    let mut model_latency_ms = std::collections::BTreeMap::new();
    for m in &spec.models {
        let mut lat: Vec<f64> = records
            .iter()
            .filter(|r| r.model == m.id && r.capture_unix_ms >= t0 && r.capture_unix_ms < t1)
            .map(|r| r.latency_ms.capture_to_result)
            .collect();
        if let Some(s) = Summary::of(&mut lat) {
            model_latency_ms.insert(m.id.clone(), s);
        }
    }
    let stop = sys.stop(Duration::from_secs(10));
    Ok(RunResult {
        model_latency_ms,
        cameras: spec.cameras.len(),
        ready_s,
        window_s,
        pairs,
        camera_decode,
        processes: usage.processes,
        stop,
        bad_result_lines,
        models_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::config::ModelSpec;
    use crate::harness::results::Latencies;

    fn rec(camera: &str, capture: u64, lat: f64) -> Record {
        Record {
            camera: camera.into(),
            model: "m".into(),
            frame_id: 0,
            capture_unix_ms: capture,
            result_unix_ms: capture + lat as u64,
            latency_ms: Latencies {
                capture_to_result: lat,
                request_to_result: 0.0,
                server_total: 0.0,
                inference: 0.0,
            },
            detections: vec![],
        }
    }

    #[test]
    fn counts_results_by_capture_time_inside_the_window() {
        let spec = SystemSpec::file_cameras(
            2,
            Path::new("/v.mp4"),
            25.0,
            vec![ModelSpec {
                id: "m".into(),
                path: "/m.onnx".into(),
                threads: Some(1),
                instances: Some(1),
                spin: false,
            }],
            5.0,
        );
        // cam0: 10 frames at 5 fps inside a 2 s window, one before, one after.
        let mut recs: Vec<Record> = (0..10).map(|i| rec("cam0", 1000 + i * 200, 50.0)).collect();
        recs.push(rec("cam0", 999, 10.0));
        recs.push(rec("cam0", 3000, 10.0));
        recs.push(rec("cam1", 1500, 80.0));
        let snap = Snapshot::default();
        let pairs = pair_results(&spec, &recs, 1000, 3000, &snap, &snap);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].requested, 10.0);
        assert_eq!(pairs[0].inferred, 10);
        assert_eq!(pairs[0].ratio, 1.0);
        assert_eq!(pairs[0].latency_ms.unwrap().p50, 50.0);
        assert_eq!(pairs[1].inferred, 1);
        assert!((pairs[1].ratio - 0.1).abs() < 1e-9);
    }
}
