//! `bench live`: N cameras at 25 fps with 5 fps detection each, for each model on its own;
//! N grows until fewer than 99 % of the requested inferences arrive or the capture-to-result
//! latency p99 exceeds its bound. The Python peer (`benches/peer/peer.py`) is searched the
//! same way in the same run; then both run at `cpu_at` cameras (CPU compared) and at twice
//! their sustained N (how evenly the overload is shed). Per camera: decoded fps,
//! inferred/requested, missed slots, stale frames, latency; per process: CPU seconds and
//! peak RSS.

use std::path::Path;

use serde::Serialize;

use super::api::Counters;
use super::assets::ModelAsset;
use super::config::{ModelSpec, SourceKind, SystemSpec};
use super::load::LoadMonitor;
use super::measure::{run_window, PairResult, RunResult, RunTiming};
use super::peer::{self, PeerParams, PeerRun};
use super::report::{num, Table};
use super::stats::Summary;
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
    /// Capture-to-result latency p99 bound of a sustained N (ms).
    pub max_p99_ms: f64,
    /// Intra-op threads per instance (`None`: the server calibrates).
    pub threads: Option<u32>,
    /// Idle intra-op threads spin.
    pub spin: bool,
    /// Session instances (`None`: the server calibrates).
    pub instances: Option<u32>,
    /// Searches of the system: with the motion gate off, on, or both (the peer is searched
    /// once per model).
    pub motion: Vec<bool>,
    /// The Python peer, searched the same way (None: system only).
    pub peer: Option<PeerParams>,
    /// Cameras at which CPU is compared (0: not compared).
    pub cpu_at: usize,
    /// Also run at twice the sustained N.
    pub overload: bool,
}

impl LiveParams {
    /// Whether a run with this delivered share and latency p99 keeps the bounds.
    pub fn sustains(&self, ratio: f64, p99_ms: Option<f64>) -> bool {
        ratio >= self.threshold && p99_ms.is_some_and(|p| p <= self.max_p99_ms)
    }
}

/// One measured N of one side: the system (`R` = [`RunResult`]) or the peer ([`PeerRun`]).
#[derive(Debug, Clone, Serialize)]
pub struct Step<R> {
    pub cameras: usize,
    pub inferred: usize,
    pub requested: f64,
    pub ratio: f64,
    pub p99_ms: Option<f64>,
    pub sustained: bool,
    pub run: R,
}

impl<R> Step<R> {
    /// The step of a run that delivered `inferred` of `requested` with latency `p99_ms`.
    fn new(
        p: &LiveParams,
        cameras: usize,
        inferred: usize,
        requested: f64,
        p99_ms: Option<f64>,
        run: R,
    ) -> Self {
        let ratio = share(inferred, requested);
        Step {
            cameras,
            inferred,
            requested,
            ratio,
            p99_ms,
            sustained: p.sustains(ratio, p99_ms),
            run,
        }
    }
}

pub type LiveStep = Step<RunResult>;
pub type PeerStep = Step<PeerRun>;

/// CPU of both sides at the same N over the same window length.
#[derive(Debug, Clone, Serialize)]
pub struct CpuCompare {
    pub cameras: usize,
    /// CPU seconds per window second (1.0 = one core), all processes of the system.
    pub system_cores: f64,
    pub peer_cores: f64,
    /// system / peer.
    pub ratio: f64,
    pub system_share: f64,
    pub peer_share: f64,
}

/// How one side shed twice its sustainable load.
#[derive(Debug, Clone, Serialize)]
pub struct Overload {
    pub side: String,
    pub cameras: usize,
    /// Delivered share per camera.
    pub shares: Vec<f64>,
    pub mean_share: f64,
    /// Largest |share - mean| / mean, percent.
    pub max_dev_pct: f64,
    pub p99_ms: Option<f64>,
    /// The p99 of the largest sustained run.
    pub sustained_p99_ms: Option<f64>,
}

impl Overload {
    fn of(side: &str, pairs: &[PairResult], p99_ms: Option<f64>, sustained: Option<f64>) -> Self {
        let shares: Vec<f64> = pairs.iter().map(|p| p.ratio).collect();
        let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
        let max_dev_pct = if mean > 0.0 {
            shares
                .iter()
                .map(|s| 100.0 * (s - mean).abs() / mean)
                .fold(0.0, f64::max)
        } else {
            100.0
        };
        Overload {
            side: side.to_string(),
            cameras: pairs.len(),
            shares,
            mean_share: mean,
            max_dev_pct,
            p99_ms,
            sustained_p99_ms: sustained,
        }
    }

    /// p99 over the sustained p99.
    pub fn p99_ratio(&self) -> Option<f64> {
        Some(self.p99_ms? / self.sustained_p99_ms?)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveModel {
    pub model: String,
    /// The motion gate was on in the system's runs.
    pub motion: bool,
    /// Largest N that kept the bounds (0 if even the smallest did not).
    pub sustained_cameras: usize,
    /// Whether the search stopped at `max_cameras` while still sustaining.
    pub capped: bool,
    pub steps: Vec<LiveStep>,
    pub peer_sustained_cameras: Option<usize>,
    pub peer_capped: bool,
    pub peer_steps: Vec<PeerStep>,
    pub cpu: Option<CpuCompare>,
    pub overload: Vec<Overload>,
}

impl LiveModel {
    /// The model id, marked when the motion gate was on.
    pub fn label(&self) -> String {
        if self.motion {
            format!("{} (motion gate on)", self.model)
        } else {
            self.model.clone()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveData {
    pub models: Vec<LiveModel>,
}

/// CPU of the system under test: every process below core-agent, not the harness and
/// not the fake RTSP camera (the camera is not part of the system; the peer reads files).
fn system_cores(run: &RunResult) -> f64 {
    let cpu: f64 = run
        .processes
        .iter()
        .filter(|p| !p.label.starts_with("bench") && !p.label.starts_with("fake_rtsp_camera"))
        .map(|p| p.cpu_s)
        .sum();
    cpu / run.window_s.max(1e-9)
}

/// Runs the searches for each model.
pub fn run(
    bin_dir: &Path,
    video: &Path,
    models: &[ModelAsset],
    p: &LiveParams,
    timing: RunTiming,
    monitor: &LoadMonitor,
    mut progress: impl FnMut(&str),
) -> Result<(LiveData, Vec<Table>, Vec<String>), anyhow::Error> {
    let mut data = LiveData { models: Vec::new() };
    let peer_video = match &p.peer {
        Some(peer) if peer.substream => super::rtsp::scaled_copy(video, super::rtsp::SUBSTREAM)?,
        _ => video.to_path_buf(),
    };
    for (m, motion) in models
        .iter()
        .flat_map(|m| p.motion.iter().map(move |&g| (m, g)))
    {
        // The peer has no motion gate: searched once per model, in its first pass.
        let first_pass = p.motion.first() == Some(&motion);
        let system_run = |n: usize| -> Result<LiveStep, SystemError> {
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
            spec.motion = motion;
            let run = run_window(&spec, bin_dir, monitor, timing)?;
            let (inferred, requested, _) = run.model_totals(&m.id);
            let p99_ms = run.model_latency_ms.get(&m.id).map(|l| l.p99);
            Ok(Step::new(p, n, inferred, requested, p99_ms, run))
        };
        let peer_run = |peer: &PeerParams, n: usize| -> Result<PeerStep, peer::PeerError> {
            let run = peer::run_window(
                peer,
                &peer_video,
                m,
                n,
                p.camera_fps,
                p.detect_fps,
                monitor,
                timing,
            )?;
            let (inferred, requested) = run.totals();
            let p99_ms = run.latency_ms.map(|l| l.p99);
            Ok(Step::new(p, n, inferred, requested, p99_ms, run))
        };
        let say = |side: &str, n: usize, inferred: usize, requested: f64, p99: Option<f64>| {
            format!(
                "live: {} {side} with {n} camera(s): {inferred}/{requested:.0} = {:.1}%, p99 {} ms",
                m.id,
                100.0 * share(inferred, requested),
                num(p99, 0)
            )
        };

        let mut lm = LiveModel {
            model: m.id.clone(),
            motion,
            sustained_cameras: 0,
            capped: false,
            steps: Vec::new(),
            peer_sustained_cameras: None,
            peer_capped: false,
            peer_steps: Vec::new(),
            cpu: None,
            overload: Vec::new(),
        };
        let mut search = Search::new(p.min_cameras, p.max_cameras);
        while let Some(n) = search.next() {
            progress(&format!("live: {} framebus with {n} camera(s)...", m.id));
            let s = system_run(n)?;
            progress(&say("framebus", n, s.inferred, s.requested, s.p99_ms));
            search.record(n, s.sustained);
            lm.steps.push(s);
        }
        lm.steps.sort_by_key(|s| s.cameras);
        lm.sustained_cameras = search.best();
        lm.capped = search.best() == p.max_cameras.max(1);

        if let (Some(peer), true) = (&p.peer, first_pass) {
            let mut search = Search::new(p.min_cameras, p.max_cameras);
            while let Some(n) = search.next() {
                progress(&format!("live: {} peer with {n} camera(s)...", m.id));
                let s = peer_run(peer, n)?;
                progress(&say("peer", n, s.inferred, s.requested, s.p99_ms));
                search.record(n, s.sustained);
                lm.peer_steps.push(s);
            }
            lm.peer_steps.sort_by_key(|s| s.cameras);
            lm.peer_sustained_cameras = Some(search.best());
            lm.peer_capped = search.best() == p.max_cameras.max(1);

            if p.cpu_at > 0 {
                let n = p.cpu_at;
                if !lm.steps.iter().any(|s| s.cameras == n) {
                    progress(&format!(
                        "live: {} framebus with {n} camera(s) (CPU)...",
                        m.id
                    ));
                    let s = system_run(n)?;
                    lm.steps.push(s);
                }
                if !lm.peer_steps.iter().any(|s| s.cameras == n) {
                    progress(&format!("live: {} peer with {n} camera(s) (CPU)...", m.id));
                    let s = peer_run(peer, n)?;
                    lm.peer_steps.push(s);
                }
                let sys = lm.steps.iter().find(|s| s.cameras == n);
                let pr = lm.peer_steps.iter().find(|s| s.cameras == n);
                if let (Some(sys), Some(pr)) = (sys, pr) {
                    let system_cores = system_cores(&sys.run);
                    let peer_cores = pr.run.cpu_s / pr.run.window_s.max(1e-9);
                    lm.cpu = Some(CpuCompare {
                        cameras: n,
                        system_cores,
                        peer_cores,
                        ratio: system_cores / peer_cores.max(1e-9),
                        system_share: sys.ratio,
                        peer_share: pr.ratio,
                    });
                }
            }
        }

        if p.overload {
            let n = (2 * lm.sustained_cameras).max(2);
            progress(&format!(
                "live: {} framebus at 2x load, {n} camera(s)...",
                m.id
            ));
            let s = system_run(n)?;
            progress(&say("framebus", n, s.inferred, s.requested, s.p99_ms));
            let sustained_p99 =
                best_p99(lm.steps.iter().map(|s| (s.sustained, s.cameras, s.p99_ms)));
            let pairs: Vec<PairResult> = s.run.pairs.clone();
            lm.overload
                .push(Overload::of("framebus", &pairs, s.p99_ms, sustained_p99));
            lm.steps.push(s);
            if let (Some(peer), Some(best), true) = (&p.peer, lm.peer_sustained_cameras, first_pass)
            {
                let n = (2 * best).max(2);
                progress(&format!("live: {} peer at 2x load, {n} camera(s)...", m.id));
                let s = peer_run(peer, n)?;
                progress(&say("peer", n, s.inferred, s.requested, s.p99_ms));
                let sustained_p99 = best_p99(
                    lm.peer_steps
                        .iter()
                        .map(|s| (s.sustained, s.cameras, s.p99_ms)),
                );
                lm.overload
                    .push(Overload::of("peer", &s.run.pairs, s.p99_ms, sustained_p99));
                lm.peer_steps.push(s);
            }
        }
        lm.steps.sort_by_key(|s| s.cameras);
        lm.steps.dedup_by_key(|s| s.cameras);
        lm.peer_steps.sort_by_key(|s| s.cameras);
        lm.peer_steps.dedup_by_key(|s| s.cameras);
        data.models.push(lm);
    }
    let tables = tables(&data, p);
    let summary = data
        .models
        .iter()
        .flat_map(|m| {
            let peer_of = data
                .models
                .iter()
                .find(|x| x.model == m.model && x.peer_sustained_cameras.is_some());
            summary(m, peer_of, p)
        })
        .collect();
    Ok((data, tables, summary))
}

fn share(inferred: usize, requested: f64) -> f64 {
    if requested > 0.0 {
        inferred as f64 / requested
    } else {
        0.0
    }
}

/// The p99 of the largest sustained N.
fn best_p99(steps: impl Iterator<Item = (bool, usize, Option<f64>)>) -> Option<f64> {
    steps.filter(|s| s.0).max_by_key(|s| s.1).and_then(|s| s.2)
}

fn summary(m: &LiveModel, peer_of: Option<&LiveModel>, p: &LiveParams) -> Vec<String> {
    let ge = |capped: bool| if capped { "≥" } else { "" };
    let sessions = m
        .steps
        .iter()
        .rev()
        .find(|s| s.sustained)
        .or_else(|| m.steps.first())
        .and_then(|s| s.run.sessions(&m.model))
        .unwrap_or_else(|| {
            let v = |x: Option<u32>| x.map_or("auto".to_string(), |x| x.to_string());
            format!("{} x {}", v(p.threads), v(p.instances))
        });
    let mut out = vec![format!(
        "{}: framebus sustained {}{} camera(s) of 540p@{} fps with {} fps detection \
         (≥{:.0}% delivered, p99 ≤ {:.0} ms; threads x instances {sessions})",
        m.label(),
        ge(m.capped),
        m.sustained_cameras,
        p.camera_fps,
        p.detect_fps,
        100.0 * p.threshold,
        p.max_p99_ms,
    )];
    if let Some(peer) = peer_of.and_then(|x| x.peer_sustained_cameras) {
        let capped = peer_of.is_some_and(|x| x.peer_capped);
        out.push(format!(
            "{}: Python peer sustained {}{peer} camera(s); framebus / peer = {} (goal ≥1.3x)",
            m.label(),
            ge(capped),
            if peer > 0 {
                format!("{:.2}x", m.sustained_cameras as f64 / peer as f64)
            } else {
                "n/a".into()
            }
        ));
    }
    if let Some(c) = &m.cpu {
        out.push(format!(
            "{}: CPU at {} cameras: framebus {:.2} cores ({:.1}% delivered), peer {:.2} cores \
             ({:.1}% delivered): {:.2}x (goal ≤0.75x)",
            m.label(),
            c.cameras,
            c.system_cores,
            100.0 * c.system_share,
            c.peer_cores,
            100.0 * c.peer_share,
            c.ratio
        ));
    }
    for o in &m.overload {
        out.push(format!(
            "{}: {} at 2x load ({} cameras): mean delivered {:.1}%, per camera within ±{:.1}% \
             of the mean (goal ±10%), p99 {} ms = {} the sustained p99 (goal ≤2x)",
            m.label(),
            o.side,
            o.cameras,
            100.0 * o.mean_share,
            o.max_dev_pct,
            num(o.p99_ms, 0),
            o.p99_ratio()
                .map_or("n/a".to_string(), |r| format!("{r:.2}x"))
        ));
    }
    out
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
            "side",
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
        // One row per run: (side, cameras, inferred, requested, share, lost counters,
        // latency, sustained); the peer has no agent counters.
        let row = |side: &str,
                   n: usize,
                   (inferred, requested, ratio): (usize, f64, f64),
                   counters: Option<Counters>,
                   lat: Option<Summary>,
                   sustained: bool| {
            let c = |f: fn(&Counters) -> u64| {
                counters.as_ref().map_or("-".into(), |c| f(c).to_string())
            };
            vec![
                m.label(),
                side.to_string(),
                n.to_string(),
                format!("{inferred} / {requested:.0}"),
                format!("{:.1}%", 100.0 * ratio),
                c(|c| c.missed),
                c(|c| c.stale),
                c(|c| c.lost() - c.missed - c.stale),
                num(lat.map(|l| l.p50), 1),
                num(lat.map(|l| l.p99), 1),
                if sustained { "yes" } else { "no" }.to_string(),
            ]
        };
        for s in &m.steps {
            let (_, _, c) = s.run.model_totals(&m.model);
            let lat = s.run.model_latency_ms.get(&m.model).copied();
            let n = (s.inferred, s.requested, s.ratio);
            steps.row(row("framebus", s.cameras, n, Some(c), lat, s.sustained));
        }
        for s in &m.peer_steps {
            let n = (s.inferred, s.requested, s.ratio);
            let lat = s.run.latency_ms;
            steps.row(row("python peer", s.cameras, n, None, lat, s.sustained));
        }
    }
    out.push(steps);
    let mut over = Table::new(
        "Twice the sustained load: delivered share per camera",
        &[
            "model",
            "side",
            "cameras",
            "mean share",
            "min share",
            "max share",
            "max deviation from mean",
            "p99 ms",
            "p99 / sustained p99",
        ],
    );
    for m in &data.models {
        for o in &m.overload {
            let min = o.shares.iter().copied().fold(f64::INFINITY, f64::min);
            let max = o.shares.iter().copied().fold(0.0, f64::max);
            over.row(vec![
                m.label(),
                o.side.clone(),
                o.cameras.to_string(),
                format!("{:.1}%", 100.0 * o.mean_share),
                format!("{:.1}%", 100.0 * min),
                format!("{:.1}%", 100.0 * max),
                format!("±{:.1}%", o.max_dev_pct),
                num(o.p99_ms, 0),
                o.p99_ratio().map_or("-".into(), |r| format!("{r:.2}x")),
            ]);
        }
    }
    if data.models.iter().any(|m| !m.overload.is_empty()) {
        out.push(over);
    }
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
            format!("{} with {} camera(s): per camera", m.label(), s.cameras),
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
                m.label(),
                s.cameras,
                s.run.window_s
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
