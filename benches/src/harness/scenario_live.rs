//! `bench live`: N cameras at 25 fps with 5 fps detection each, for each model on its own;
//! N grows until fewer than 99 % of the requested inferences arrive. Per camera: decoded
//! fps, inferred/requested, missed slots, stale frames, capture-to-result latency; per
//! process: CPU seconds and peak RSS.

use std::path::Path;

use serde::Serialize;

use super::assets::ModelAsset;
use super::config::{ModelSpec, SourceKind, SystemSpec};
use super::load::LoadMonitor;
use super::measure::{run_window, RunResult, RunTiming};
use super::report::{num, Table};
use super::system::SystemError;

#[derive(Debug, Clone, Serialize)]
pub struct LiveParams {
    /// File cameras or fake RTSP cameras.
    pub source: SourceKind,
    /// Largest N tried.
    pub max_cameras: usize,
    /// Smallest N tried.
    pub min_cameras: usize,
    pub camera_fps: f64,
    pub detect_fps: f64,
    /// Share of requested inferences that must arrive, 0..1.
    pub threshold: f64,
    pub threads: u32,
    /// Idle intra-op threads spin.
    pub spin: bool,
    pub instances: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveStep {
    pub model: String,
    pub cameras: usize,
    pub inferred: usize,
    pub requested: f64,
    pub ratio: f64,
    pub sustained: bool,
    pub run: RunResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveModel {
    pub model: String,
    /// Largest N that kept the threshold (0 if even the smallest did not).
    pub sustained_cameras: usize,
    /// Whether the search stopped at `max_cameras` while still sustaining.
    pub capped: bool,
    pub steps: Vec<LiveStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveData {
    pub models: Vec<LiveModel>,
}

/// Runs the search for each model.
pub fn run(
    bin_dir: &Path,
    video: &Path,
    models: &[ModelAsset],
    p: &LiveParams,
    timing: RunTiming,
    monitor: &LoadMonitor,
    mut progress: impl FnMut(&str),
) -> Result<(LiveData, Vec<Table>, Vec<String>), SystemError> {
    let mut data = LiveData { models: Vec::new() };
    for m in models {
        let mut lm = LiveModel {
            model: m.id.clone(),
            sustained_cameras: 0,
            capped: false,
            steps: Vec::new(),
        };
        let mut search = Search::new(p.min_cameras, p.max_cameras);
        while let Some(n) = search.next() {
            let mut spec = SystemSpec::file_cameras(
                n,
                video,
                p.camera_fps,
                vec![ModelSpec {
                    id: m.id.clone(),
                    path: m.path.clone(),
                    threads: p.threads,
                    instances: p.instances,
                    spin: p.spin,
                }],
                p.detect_fps,
            );
            spec.source = p.source;
            spec.max_in_flight = 1;
            progress(&format!("live: {} with {n} camera(s)...", m.id));
            let run = run_window(&spec, bin_dir, monitor, timing)?;
            let (inferred, requested, _) = run.model_totals(&m.id);
            let ratio = if requested > 0.0 {
                inferred as f64 / requested
            } else {
                0.0
            };
            let sustained = ratio >= p.threshold;
            progress(&format!(
                "live: {} with {n} camera(s): {inferred}/{requested:.0} = {:.1}%",
                m.id,
                100.0 * ratio
            ));
            search.record(n, sustained);
            lm.steps.push(LiveStep {
                model: m.id.clone(),
                cameras: n,
                inferred,
                requested,
                ratio,
                sustained,
                run,
            });
        }
        lm.steps.sort_by_key(|s| s.cameras);
        lm.sustained_cameras = search.best();
        lm.capped = search.best() == p.max_cameras.max(1);
        data.models.push(lm);
    }
    let tables = tables(&data, p);
    let summary = data
        .models
        .iter()
        .map(|m| {
            format!(
                "{}: {}{} camera(s) of {}p@{} fps with {} fps detection sustained at ≥{:.0}% \
                 of requested inferences ({} thread(s) x {} instance(s))",
                m.model,
                if m.capped { "≥" } else { "" },
                m.sustained_cameras,
                540,
                p.camera_fps,
                p.detect_fps,
                100.0 * p.threshold,
                p.threads,
                p.instances
            )
        })
        .collect();
    Ok((data, tables, summary))
}

/// The search for the largest sustained N in `min..=max`: doubling from `min` until a
/// failure (or `max`), then bisection between the largest success and the smallest failure.
/// Assumes that more cameras never deliver a larger share.
#[derive(Debug, Clone)]
pub struct Search {
    min: usize,
    max: usize,
    best_ok: Option<usize>,
    first_fail: Option<usize>,
}

impl Search {
    pub fn new(min: usize, max: usize) -> Search {
        let min = min.max(1);
        Search {
            min,
            max: max.max(min),
            best_ok: None,
            first_fail: None,
        }
    }

    /// The next N to try, `None` when the answer is known.
    pub fn next(&self) -> Option<usize> {
        match (self.best_ok, self.first_fail) {
            (None, None) => Some(self.min),
            (Some(ok), None) if ok >= self.max => None,
            (Some(ok), None) => Some((ok * 2).min(self.max)),
            (None, Some(_)) => None,
            (Some(ok), Some(fail)) if fail <= ok + 1 => None,
            (Some(ok), Some(fail)) => Some(ok + (fail - ok) / 2),
        }
    }

    pub fn record(&mut self, n: usize, sustained: bool) {
        if sustained {
            self.best_ok = Some(self.best_ok.map_or(n, |b| b.max(n)));
        } else {
            self.first_fail = Some(self.first_fail.map_or(n, |f| f.min(n)));
        }
    }

    /// Largest sustained N so far (0 if none).
    pub fn best(&self) -> usize {
        self.best_ok.unwrap_or(0)
    }
}

fn tables(data: &LiveData, p: &LiveParams) -> Vec<Table> {
    let mut out = Vec::new();
    let mut steps = Table::new(
        format!(
            "Cameras at {} fps, {} fps detection each: delivered share per N",
            p.camera_fps, p.detect_fps
        ),
        &[
            "model",
            "cameras",
            "inferred / requested",
            "share",
            "missed",
            "stale",
            "failed",
            "latency p50 ms",
            "latency p99 ms",
            "sustained",
        ],
    );
    for m in &data.models {
        for s in &m.steps {
            let (_, _, c) = s.run.model_totals(&m.model);
            let lat = s.run.model_latency_ms.get(&m.model);
            steps.row(vec![
                m.model.clone(),
                s.cameras.to_string(),
                format!("{} / {:.0}", s.inferred, s.requested),
                format!("{:.1}%", 100.0 * s.ratio),
                c.missed.to_string(),
                c.stale.to_string(),
                (c.lost() - c.missed - c.stale).to_string(),
                num(lat.map(|l| l.p50), 1),
                num(lat.map(|l| l.p99), 1),
                if s.sustained { "yes" } else { "no" }.to_string(),
            ]);
        }
    }
    out.push(steps);
    // Details of the largest sustained run of each model (else its first run).
    for m in &data.models {
        let Some(s) = m
            .steps
            .iter()
            .rev()
            .find(|s| s.sustained)
            .or_else(|| m.steps.first())
        else {
            continue;
        };
        let mut t = Table::new(
            format!("{} with {} camera(s): per camera", m.model, s.cameras),
            &[
                "camera",
                "decoded fps",
                "inferred / requested",
                "missed",
                "stale",
                "failed",
                "latency p50 ms",
                "latency p99 ms",
            ],
        );
        for pr in &s.run.pairs {
            let dec = s
                .run
                .camera_decode
                .iter()
                .find(|c| c.camera == pr.camera)
                .and_then(|c| c.decoded_fps);
            t.row(vec![
                pr.camera.clone(),
                num(dec, 1),
                format!(
                    "{} / {:.0} ({:.1}%)",
                    pr.inferred,
                    pr.requested,
                    100.0 * pr.ratio
                ),
                pr.counters.missed.to_string(),
                pr.counters.stale.to_string(),
                (pr.counters.lost() - pr.counters.missed - pr.counters.stale).to_string(),
                num(pr.latency_ms.map(|l| l.p50), 1),
                num(pr.latency_ms.map(|l| l.p99), 1),
            ]);
        }
        out.push(t);
        let mut procs = Table::new(
            format!(
                "{} with {} camera(s): per process over the {:.0} s window",
                m.model, s.cameras, s.run.window_s
            ),
            &["process", "CPU s", "CPU %", "peak RSS MiB"],
        );
        let mut ps = s.run.processes.clone();
        ps.sort_by(|a, b| a.label.cmp(&b.label));
        for pu in ps.iter().filter(|p| p.cpu_s > 0.0 || p.peak_rss_mib > 1.0) {
            procs.row(vec![
                pu.label.clone(),
                format!("{:.2}", pu.cpu_s),
                format!("{:.1}%", 100.0 * pu.cpu_s / s.run.window_s),
                format!("{:.1}", pu.peak_rss_mib),
            ]);
        }
        out.push(procs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_search(min: usize, max: usize, limit: usize) -> (usize, Vec<usize>) {
        let mut s = Search::new(min, max);
        let mut tried = Vec::new();
        while let Some(n) = s.next() {
            tried.push(n);
            s.record(n, n <= limit);
        }
        (s.best(), tried)
    }

    #[test]
    fn search_doubles_then_bisects() {
        assert_eq!(run_search(1, 12, 6), (6, vec![1, 2, 4, 8, 6, 7]));
        assert_eq!(run_search(1, 12, 1), (1, vec![1, 2]));
        assert_eq!(run_search(1, 12, 0), (0, vec![1]));
        assert_eq!(run_search(1, 12, 100), (12, vec![1, 2, 4, 8, 12]));
        assert_eq!(run_search(3, 5, 4), (4, vec![3, 5, 4]));
    }
}
