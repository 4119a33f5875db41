//! `bench saturate`: 1..N cameras at their full frame rate on one model until the model
//! server saturates; delivered inferences per second against the raw ONNX Runtime ceiling
//! the harness measures itself, in the same run, for each threads x instances setting.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::assets::ModelAsset;
use super::config::{ModelSpec, SourceKind, SystemSpec};
use super::load::LoadMonitor;
use super::measure::{run_window, RunResult, RunTiming};
use super::ort_raw::{self, PreparedModel, RawError, RawResult, SessionSettings};
use super::report::{num, Table};
use super::system::SystemError;

#[derive(Debug, Clone, Serialize)]
pub struct SaturateParams {
    /// File cameras or fake RTSP cameras.
    pub source: SourceKind,
    pub max_cameras: usize,
    pub camera_fps: f64,
    /// Detection rate asked of each camera (its full frame rate by default).
    pub detect_fps: f64,
    pub raw_seconds: f64,
    /// Requests in flight per camera.
    pub in_flight: u32,
    pub settings: Vec<SessionSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaturateStep {
    pub cameras: usize,
    pub requested_per_s: f64,
    pub delivered_per_s: f64,
    /// Raw ceiling of the same setting: mean of the measurements just before and after
    /// this run.
    pub raw_per_s: f64,
    /// delivered / raw_per_s.
    pub ratio: f64,
    pub run: RunResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaturateSetting {
    pub settings: SessionSettings,
    /// Raw ceiling measured before each system run and after the last one.
    pub raw: Vec<RawResult>,
    /// Mean of those, inferences per second.
    pub raw_per_s: f64,
    /// (highest - lowest) / mean of the raw measurements: the machine's drift.
    pub raw_drift: f64,
    pub steps: Vec<SaturateStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaturateData {
    pub model: String,
    pub settings: Vec<SaturateSetting>,
    /// Best delivered rate over all settings and camera counts, against the best raw
    /// ceiling of all settings.
    pub best_delivered_per_s: f64,
    pub best_raw_per_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SaturateError {
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error(transparent)]
    System(#[from] SystemError),
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    bin_dir: &Path,
    video: &Path,
    model: &ModelAsset,
    prepared: &PreparedModel,
    p: &SaturateParams,
    timing: RunTiming,
    monitor: &LoadMonitor,
    mut progress: impl FnMut(&str),
) -> Result<(SaturateData, Vec<Table>, Vec<String>), SaturateError> {
    let mut data = SaturateData {
        model: model.id.clone(),
        settings: Vec::new(),
        best_delivered_per_s: 0.0,
        best_raw_per_s: 0.0,
    };
    for &s in &p.settings {
        // The raw ceiling is measured before every system run and once after the last;
        // each run is compared with the mean of the two measurements around it, so the
        // machine's own drift (a shared VM) cancels as far as it can.
        let raw_once = |progress: &mut dyn FnMut(&str)| -> Result<RawResult, RawError> {
            progress(&format!(
                "saturate: raw ONNX Runtime, {} thread(s) x {} instance(s)...",
                s.threads, s.instances
            ));
            let r = ort_raw::measure(prepared, s, 3, Duration::from_secs_f64(p.raw_seconds))?;
            progress(&format!(
                "saturate: raw {:.2} inferences/s",
                r.inferences_per_s
            ));
            Ok(r)
        };
        let mut raws = vec![raw_once(&mut progress)?];
        let mut steps = Vec::new();
        for n in 1..=p.max_cameras.max(1) {
            if n > 1 {
                raws.push(raw_once(&mut progress)?);
            }
            let mut spec = SystemSpec::file_cameras(
                n,
                video,
                p.camera_fps,
                vec![ModelSpec {
                    id: model.id.clone(),
                    path: model.path.clone(),
                    threads: Some(s.threads as u32),
                    instances: Some(s.instances as u32),
                    spin: s.spinning,
                }],
                p.detect_fps,
            );
            spec.source = p.source;
            spec.max_in_flight = p.in_flight;
            progress(&format!("saturate: {n} camera(s)..."));
            let run = run_window(&spec, bin_dir, monitor, timing)?;
            let (inferred, _, _) = run.model_totals(&model.id);
            let delivered = inferred as f64 / run.window_s;
            progress(&format!("saturate: {n} camera(s): {delivered:.2}/s"));
            data.best_delivered_per_s = data.best_delivered_per_s.max(delivered);
            steps.push(SaturateStep {
                cameras: n,
                requested_per_s: spec.requested_fps(&model.id),
                delivered_per_s: delivered,
                raw_per_s: 0.0,
                ratio: 0.0,
                run,
            });
        }
        raws.push(raw_once(&mut progress)?);
        for (i, step) in steps.iter_mut().enumerate() {
            step.raw_per_s = (raws[i].inferences_per_s + raws[i + 1].inferences_per_s) / 2.0;
            step.ratio = step.delivered_per_s / step.raw_per_s;
        }
        let rates: Vec<f64> = raws.iter().map(|r| r.inferences_per_s).collect();
        let raw_per_s = rates.iter().sum::<f64>() / rates.len() as f64;
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        data.best_raw_per_s = data.best_raw_per_s.max(raw_per_s);
        data.settings.push(SaturateSetting {
            settings: s,
            raw: raws,
            raw_per_s,
            raw_drift: (hi - lo) / raw_per_s,
            steps,
        });
    }

    let mut t = Table::new(
        format!(
            "{}: delivered inferences/s vs raw session.run ceiling (cameras at {} fps, {} in flight each)",
            model.id, p.camera_fps, p.in_flight
        ),
        &[
            "threads x instances",
            "raw inf/s (around this run)",
            "raw p50 ms",
            "cameras",
            "requested/s",
            "delivered/s",
            "delivered / raw",
            "missed",
            "latency p50 ms",
            "latency p99 ms",
            "server CPU %",
        ],
    );
    for st in &data.settings {
        for step in &st.steps {
            let (_, _, c) = step.run.model_totals(&model.id);
            let lat = step.run.model_latency_ms.get(&model.id);
            let server_cpu: f64 = step
                .run
                .processes
                .iter()
                .filter(|p| p.label.starts_with("model-server"))
                .map(|p| p.cpu_s)
                .sum();
            t.row(vec![
                format!("{} x {}", st.settings.threads, st.settings.instances),
                format!("{:.2}", step.raw_per_s),
                num(
                    st.raw
                        .get(step.cameras - 1)
                        .and_then(|r| r.latency_ms.map(|l| l.p50)),
                    1,
                ),
                step.cameras.to_string(),
                format!("{:.0}", step.requested_per_s),
                format!("{:.2}", step.delivered_per_s),
                format!("{:.2}", step.ratio),
                c.missed.to_string(),
                num(lat.map(|l| l.p50), 1),
                num(lat.map(|l| l.p99), 1),
                format!("{:.0}%", 100.0 * server_cpu / step.run.window_s),
            ]);
        }
    }
    let mut summary = Vec::new();
    for st in &data.settings {
        if let Some(best) = st
            .steps
            .iter()
            .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
        {
            summary.push(format!(
                "{} {}x{}: delivered {:.2}/s with {} camera(s) = {:.2}x the raw ceiling {:.2}/s",
                model.id,
                st.settings.threads,
                st.settings.instances,
                best.delivered_per_s,
                best.cameras,
                best.ratio,
                st.raw_per_s
            ));
        }
        if st.raw_drift > 0.1 {
            summary.push(format!(
                "WARNING: the raw ceiling of {}x{} varied by {:.0}% across its measurements \
                 (the machine's speed drifted); ratios of this setting are uncertain to that \
                 extent",
                st.settings.threads,
                st.settings.instances,
                100.0 * st.raw_drift
            ));
        }
    }
    if data.best_raw_per_s > 0.0 {
        summary.push(format!(
            "{} best delivered {:.2}/s over best raw ceiling {:.2}/s = {:.2}x (goal ≥0.95x)",
            model.id,
            data.best_delivered_per_s,
            data.best_raw_per_s,
            data.best_delivered_per_s / data.best_raw_per_s
        ));
    }
    Ok((data, vec![t], summary))
}
