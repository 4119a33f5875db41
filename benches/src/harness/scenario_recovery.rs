//! `bench recovery`: under load, kill -9 a model server, then a frame kernel; measure the
//! time until results of the victim resume, and what every other (camera, model) pair lost
//! meanwhile (the goal is nothing).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::api::{Counters, Snapshot};
use super::assets::ModelAsset;
use super::config::{ModelSpec, SourceKind, SystemSpec};
use super::interrupt;
use super::report::{num, Table};
use super::results::{unix_ms, Record};
use super::stats::median;
use super::system::{System, SystemError};

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryParams {
    /// File cameras or fake RTSP cameras.
    pub source: SourceKind,
    pub cameras: usize,
    pub camera_fps: f64,
    pub detect_fps: f64,
    /// Kills of each kind.
    pub repeats: usize,
    /// Steady running before each kill.
    pub settle: Duration,
    /// Longest wait for results to resume.
    pub resume_timeout: Duration,
    pub threads: u32,
    /// Idle intra-op threads spin.
    pub spin: bool,
    pub instances: u32,
}

/// What one pair lost during an outage window.
#[derive(Debug, Clone, Serialize)]
pub struct PairLoss {
    pub camera: String,
    pub model: String,
    /// Results expected for frames captured in the window (fps x window).
    pub expected: f64,
    pub received: usize,
    /// Counter deltas over the window.
    pub counters: Counters,
    /// Lost (missed + stale + failed) in steady state before the kill, scaled to the
    /// window's length: what the pair loses anyway at this load.
    pub baseline_lost: f64,
}

/// One kill.
#[derive(Debug, Clone, Serialize)]
pub struct KillResult {
    /// `model-server <id>` or `frame-kernel <camera>`.
    pub victim: String,
    pub pid: i32,
    /// From the kill to the first result of the victim (ms), if it resumed.
    pub resume_ms: Option<u64>,
    /// The supervisor's own numbers after the restart.
    pub supervisor_recovery_ms: Option<u64>,
    pub start_to_ready_ms: Option<u64>,
    /// Pairs not involving the victim.
    pub others: Vec<PairLoss>,
    /// Pairs of the victim itself.
    pub victim_pairs: Vec<PairLoss>,
}

impl KillResult {
    /// Results the other pairs did not get, by counters (missed, stale, failed).
    pub fn others_lost(&self) -> u64 {
        self.others.iter().map(|p| p.counters.lost()).sum()
    }

    /// What the other pairs lose anyway in steady state over a window this long.
    pub fn others_baseline_lost(&self) -> f64 {
        self.others.iter().map(|p| p.baseline_lost).sum()
    }

    /// Results the other pairs got fewer than a periodic gate surely yields in the window
    /// (`floor(fps x window)` each, so gate phase alone never counts as a shortfall).
    pub fn others_shortfall(&self) -> f64 {
        self.others
            .iter()
            .map(|p| (p.expected.floor() - p.received as f64).max(0.0))
            .sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryData {
    pub kills: Vec<KillResult>,
    pub leaked_files: Vec<String>,
    pub killed_at_stop: Vec<String>,
}

/// When the first result of the victim for a frame captured after the kill arrived.
/// (A request in flight at the kill can still be answered afterwards: the ring mapping
/// of a killed kernel stays readable. It does not show that the system recovered.)
pub fn first_result_after(
    records: &[Record],
    kill_ms: u64,
    is_victim: impl Fn(&Record) -> bool,
) -> Option<u64> {
    records
        .iter()
        .filter(|r| r.capture_unix_ms > kill_ms && is_victim(r))
        .map(|r| r.result_unix_ms)
        .min()
}

fn snapshot(sys: &System) -> Result<Snapshot, SystemError> {
    Snapshot::parse(&sys.api_json("/cameras")?).map_err(|e| SystemError::Api {
        path: "/cameras".into(),
        reason: e.to_string(),
    })
}

enum Victim {
    Model(String),
    Kernel(String),
}

#[allow(clippy::too_many_arguments)]
fn kill_once(
    sys: &mut System,
    spec: &SystemSpec,
    victim: &Victim,
    p: &RecoveryParams,
) -> Result<KillResult, SystemError> {
    let steady0 = snapshot(sys)?;
    let steady0_ms = unix_ms();
    sys.sleep(p.settle)?;
    let (pid, label) = match victim {
        Victim::Model(m) => (sys.model_pid(m)?, format!("model-server {m}")),
        Victim::Kernel(c) => (sys.kernel_pid(c)?, format!("frame-kernel {c}")),
    };
    let is_victim = |r: &Record| match victim {
        Victim::Model(m) => &r.model == m,
        Victim::Kernel(c) => &r.camera == c,
    };
    let before = snapshot(sys)?;
    let kill_ms = unix_ms();
    // SAFETY: kill(2) of a pid the system's API reported as its own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = Instant::now();
    let mut resume_ms = None;
    while start.elapsed() < p.resume_timeout {
        interrupt::check()?;
        sys.check_alive()?;
        if let Some(t) = first_result_after(&sys.results.records(), kill_ms, is_victim) {
            resume_ms = Some(t.saturating_sub(kill_ms));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Measure losses over [kill, resume + 1 s] (or the whole timeout), then let answers
    // to frames of that window arrive.
    let end_ms = kill_ms + resume_ms.unwrap_or(p.resume_timeout.as_millis() as u64) + 1000;
    while unix_ms() < end_ms {
        interrupt::sleep(Duration::from_millis(20))?;
    }
    let after = snapshot(sys)?;
    sys.sleep(Duration::from_millis(1500))?;
    let records = sys.results.records();
    let window_s = (end_ms - kill_ms) as f64 / 1e3;
    let steady_s = (kill_ms.saturating_sub(steady0_ms)) as f64 / 1e3;
    let mut others = Vec::new();
    let mut victim_pairs = Vec::new();
    for s in &spec.subscriptions {
        let received = records
            .iter()
            .filter(|r| {
                r.camera == s.camera
                    && r.model == s.model
                    && r.capture_unix_ms >= kill_ms
                    && r.capture_unix_ms < end_ms
            })
            .count();
        let loss = PairLoss {
            camera: s.camera.clone(),
            model: s.model.clone(),
            expected: s.fps * window_s,
            received,
            counters: after
                .counters(&s.camera, &s.model)
                .since(&before.counters(&s.camera, &s.model)),
            baseline_lost: if steady_s > 0.0 {
                let lost = before
                    .counters(&s.camera, &s.model)
                    .since(&steady0.counters(&s.camera, &s.model))
                    .lost();
                lost as f64 * window_s / steady_s
            } else {
                0.0
            },
        };
        let involved = match victim {
            Victim::Model(m) => &s.model == m,
            Victim::Kernel(c) => &s.camera == c,
        };
        if involved {
            victim_pairs.push(loss);
        } else {
            others.push(loss);
        }
    }
    let status = match victim {
        Victim::Model(m) => sys.api_json(&format!("/models/{m}"))?["server"].clone(),
        Victim::Kernel(c) => sys.api_json(&format!("/cameras/{c}"))?["kernel"].clone(),
    };
    Ok(KillResult {
        victim: label,
        pid,
        resume_ms,
        supervisor_recovery_ms: status["last_recovery_ms"].as_u64(),
        start_to_ready_ms: status["start_to_ready_ms"].as_u64(),
        others,
        victim_pairs,
    })
}

pub fn run(
    bin_dir: &Path,
    video: &Path,
    models: &[ModelAsset],
    p: &RecoveryParams,
    ready_timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(RecoveryData, Vec<Table>, Vec<String>), SystemError> {
    let specs: Vec<ModelSpec> = models
        .iter()
        .map(|m| ModelSpec {
            id: m.id.clone(),
            path: m.path.clone(),
            threads: Some(p.threads),
            instances: Some(p.instances),
            spin: p.spin,
        })
        .collect();
    let mut spec =
        SystemSpec::file_cameras(p.cameras.max(2), video, p.camera_fps, specs, p.detect_fps);
    spec.source = p.source;
    let mut sys = System::start(&spec, bin_dir)?;
    sys.wait_ready(ready_timeout)?;
    sys.wait_first_results(&spec, ready_timeout)?;
    let mut kills = Vec::new();
    let model_victim = &models[0].id;
    for i in 0..p.repeats {
        progress(&format!(
            "recovery: kill -9 model-server {model_victim} ({}/{})...",
            i + 1,
            p.repeats
        ));
        let k = kill_once(&mut sys, &spec, &Victim::Model(model_victim.clone()), p)?;
        progress(&format!(
            "recovery: resumed after {} ms",
            num(k.resume_ms.map(|v| v as f64), 0)
        ));
        kills.push(k);
    }
    for i in 0..p.repeats {
        progress(&format!(
            "recovery: kill -9 frame-kernel cam0 ({}/{})...",
            i + 1,
            p.repeats
        ));
        let k = kill_once(&mut sys, &spec, &Victim::Kernel("cam0".into()), p)?;
        progress(&format!(
            "recovery: resumed after {} ms",
            num(k.resume_ms.map(|v| v as f64), 0)
        ));
        kills.push(k);
    }
    let stop = sys.stop(Duration::from_secs(10));
    let data = RecoveryData {
        kills,
        leaked_files: stop.leaked_files,
        killed_at_stop: stop.killed,
    };

    let mut t = Table::new(
        format!(
            "kill -9 under load ({} cameras at {} fps, {} fps detection on {})",
            spec.cameras.len(),
            p.camera_fps,
            p.detect_fps,
            models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        ),
        &[
            "victim",
            "results resume after (ms)",
            "supervisor: noticed→ready (ms)",
            "start→ready (ms)",
            "victim's pairs: received / expected",
            "other pairs: received / expected",
            "other pairs: missed + stale + failed",
            "…same in steady state",
        ],
    );
    for k in &data.kills {
        let sum = |v: &[PairLoss]| {
            let r: usize = v.iter().map(|p| p.received).sum();
            let e: f64 = v.iter().map(|p| p.expected).sum();
            format!("{r} / {e:.0}")
        };
        t.row(vec![
            k.victim.clone(),
            num(k.resume_ms.map(|v| v as f64), 0),
            num(k.supervisor_recovery_ms.map(|v| v as f64), 0),
            num(k.start_to_ready_ms.map(|v| v as f64), 0),
            sum(&k.victim_pairs),
            sum(&k.others),
            k.others_lost().to_string(),
            format!("{:.1}", k.others_baseline_lost()),
        ]);
    }
    let mut summary = Vec::new();
    for prefix in ["model-server", "frame-kernel"] {
        let ks: Vec<&KillResult> = data
            .kills
            .iter()
            .filter(|k| k.victim.starts_with(prefix))
            .collect();
        if ks.is_empty() {
            continue;
        }
        let resumed: Vec<f64> = ks
            .iter()
            .filter_map(|k| k.resume_ms.map(|v| v as f64))
            .collect();
        let load: Vec<f64> = ks
            .iter()
            .filter_map(|k| k.start_to_ready_ms.map(|v| v as f64))
            .collect();
        let lost: u64 = ks.iter().map(|k| k.others_lost()).sum();
        let baseline: f64 = ks.iter().map(|k| k.others_baseline_lost()).sum();
        let shortfall: f64 = ks.iter().map(|k| k.others_shortfall()).sum();
        summary.push(format!(
            "kill -9 {}: results resume after median {} ms ({} of {} resumed; its start→ready \
             median {} ms); during the outages the other pairs lost {} (missed + stale + \
             failed; {:.1} expected at the steady-state loss rate) and were {:.0} results \
             short of the requested rate",
            ks[0].victim,
            num(median(&resumed), 0),
            resumed.len(),
            ks.len(),
            num(median(&load), 0),
            lost,
            baseline,
            shortfall
        ));
    }
    if !data.leaked_files.is_empty() {
        summary.push(format!(
            "leaked files after stop: {}",
            data.leaked_files.join(", ")
        ));
    }
    Ok((data, vec![t], summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::results::Latencies;

    fn rec(model: &str, at: u64) -> Record {
        Record {
            camera: "cam0".into(),
            model: model.into(),
            frame_id: 0,
            capture_unix_ms: at - 30,
            result_unix_ms: at,
            latency_ms: Latencies {
                capture_to_result: 30.0,
                request_to_result: 0.0,
                server_total: 0.0,
                inference: 0.0,
            },
            detections: vec![],
        }
    }

    #[test]
    fn finds_the_first_result_of_the_victim_after_the_kill() {
        // rec(_, at) was captured 30 ms before `at`.
        let recs = vec![
            rec("a", 900),
            rec("a", 1020),
            rec("b", 1100),
            rec("a", 2500),
            rec("a", 2300),
        ];
        assert_eq!(
            first_result_after(&recs, 1000, |r| r.model == "a"),
            Some(2300)
        );
        assert_eq!(first_result_after(&recs, 3000, |r| r.model == "a"), None);
    }
}
