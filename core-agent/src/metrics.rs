//! Counters, rates and latency windows shared by the stream agents (writers) and the
//! status API and live table (readers). Everything is bounded: latency percentiles come
//! from the last [`WINDOW`] samples, rates from the last [`RATE_WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use proto_schema::error::ErrorCode;
use serde::Serialize;

/// Latency samples kept per window.
pub const WINDOW: usize = 512;
/// Time over which rates are computed.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Prometheus label value escaped for the text exposition (backslash, quote, newline).
pub fn prom_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The last [`WINDOW`] latency samples, in milliseconds.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: VecDeque<f64>,
}

/// Percentiles of a latency window, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pct {
    /// Samples in the window.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyWindow {
    /// Adds a sample.
    pub fn record(&mut self, ms: f64) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// Nearest-rank percentiles of the window.
    pub fn percentiles(&self) -> Pct {
        if self.samples.is_empty() {
            return Pct::default();
        }
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Pct {
            count: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// Event rate over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct RateMeter {
    events: VecDeque<Instant>,
}

impl RateMeter {
    /// Records one event at `now`.
    pub fn mark(&mut self, now: Instant) {
        self.events.push_back(now);
        self.trim(now);
        if self.events.len() > 4 * WINDOW {
            self.events.pop_front();
        }
    }

    fn trim(&mut self, now: Instant) {
        while let Some(&t) = self.events.front() {
            if now.duration_since(t) > RATE_WINDOW {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Events per second over the window ending at `now`.
    pub fn rate(&mut self, now: Instant) -> f64 {
        self.trim(now);
        self.events.len() as f64 / RATE_WINDOW.as_secs_f64()
    }
}

/// Counters of one (camera, model) subscription.
#[derive(Debug, Default)]
pub struct SubMetrics {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Results received (success).
    pub results: AtomicU64,
    /// Slots skipped because the model was busy or unreachable.
    pub missed: AtomicU64,
    /// Answers `stale_frame`: the slot was overwritten before the server read it.
    pub stale: AtomicU64,
    /// Answers `overloaded`.
    pub overloaded: AtomicU64,
    /// Answers `model_unavailable` / `shutting_down`.
    pub unavailable: AtomicU64,
    /// Requests given up without an answer, or answered `deadline_exceeded`.
    pub timeouts: AtomicU64,
    /// Requests lost with a dead connection.
    pub disconnects: AtomicU64,
    /// Other failures.
    pub errors: AtomicU64,
    /// `person` detections in the latest result.
    pub people: AtomicU64,
    /// Detections in the latest result.
    pub detections: AtomicU64,
    /// Inferences the motion gate saved: still frames answered with the last result.
    pub motion_skipped: AtomicU64,
    /// Capture-to-result latency.
    pub latency: Mutex<LatencyWindow>,
    /// Result rate.
    pub rate: Mutex<RateMeter>,
}

impl SubMetrics {
    /// Counts one failed answer by its code.
    pub fn count_error(&self, code: ErrorCode) {
        let c = match code {
            ErrorCode::StaleFrame => &self.stale,
            ErrorCode::Overloaded => &self.overloaded,
            ErrorCode::ModelUnavailable | ErrorCode::ShuttingDown => &self.unavailable,
            ErrorCode::DeadlineExceeded => &self.timeouts,
            _ => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the agent last read from the camera's ring header.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RingView {
    /// Ring state (`starting`, `live`, `reconnecting`, `closed`), `absent` if not open.
    pub state: String,
    /// Ring generation.
    pub generation: u64,
    /// Frames decoded by the kernel (this ring generation).
    pub frames_decoded: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Source reconnects.
    pub reconnects: u64,
    /// Decoded frames per second.
    pub fps_decoded: f64,
}

/// Everything measured about one camera.
#[derive(Debug, Default)]
pub struct CameraMetrics {
    /// Last ring header view.
    pub ring: Mutex<RingView>,
    /// Frames the agent was woken for.
    pub frames_seen: AtomicU64,
    /// Times the ring's waiter woke the agent (about one per due slot, not one per frame).
    pub wakeups: AtomicU64,
    /// Ring reopenings after the kernel restarted.
    pub ring_reopens: AtomicU64,
    /// Per model id.
    pub subs: RwLock<BTreeMap<String, Arc<SubMetrics>>>,
    /// The last warning or error its frame kernel logged (any run of it).
    pub kernel_log: Arc<crate::supervisor::child::LastProblem>,
}

impl CameraMetrics {
    /// The subscription counters for `model`, created on first use.
    pub fn sub(&self, model: &str) -> Arc<SubMetrics> {
        if let Some(s) = self
            .subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return s.clone();
        }
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(model.to_owned())
            .or_default()
            .clone()
    }
}

/// Per-model counters, summed over the cameras.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    /// Requests sent to the model.
    pub requests: AtomicU64,
    /// Successful results.
    pub results: AtomicU64,
    /// Failed requests (any reason).
    pub failures: AtomicU64,
    /// Request-to-result latency at the agent.
    pub round_trip: Mutex<LatencyWindow>,
    /// Latency inside the server.
    pub server: Mutex<LatencyWindow>,
    /// Latency of the model run.
    pub inference: Mutex<LatencyWindow>,
    /// Connections refused because another process than the spawned server answered.
    pub peer_refused: AtomicU64,
}

/// Registry of all metrics.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    cameras: RwLock<BTreeMap<String, Arc<CameraMetrics>>>,
    models: RwLock<BTreeMap<String, Arc<ModelMetrics>>>,
    /// The file sinks' health: written, lost, degraded (`/health`, `/metrics`).
    pub sinks: Arc<crate::sinks::SinkHealth>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            cameras: RwLock::default(),
            models: RwLock::default(),
            sinks: Arc::default(),
        }
    }
}

impl Metrics {
    /// Seconds since the agent started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The camera's metrics, created on first use.
    pub fn camera(&self, id: &str) -> Arc<CameraMetrics> {
        if let Some(c) = self
            .cameras
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return c.clone();
        }
        self.cameras
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets a removed camera.
    pub fn remove_camera(&self, id: &str) {
        self.cameras
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The model's metrics, created on first use.
    pub fn model(&self, id: &str) -> Arc<ModelMetrics> {
        if let Some(m) = self
            .models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return m.clone();
        }
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

/// Snapshot of one subscription.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubSnapshot {
    /// Model id.
    pub model: String,
    /// Target rate.
    pub target_fps: f64,
    /// Results per second.
    pub fps_inferred: f64,
    /// Requests sent.
    pub sent: u64,
    /// Results received.
    pub results: u64,
    /// Missed slots.
    pub missed: u64,
    /// Stale-frame answers.
    pub stale: u64,
    /// Overloaded answers.
    pub overloaded: u64,
    /// Model-unavailable answers.
    pub unavailable: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Requests lost with a connection.
    pub disconnects: u64,
    /// Other errors.
    pub errors: u64,
    /// People in the latest result.
    pub people: u64,
    /// Detections in the latest result.
    pub detections: u64,
    /// Inferences the motion gate saved (still frames answered with the last result).
    pub motion_skipped: u64,
    /// Capture-to-result latency, ms.
    pub latency_ms: Pct,
}

impl SubSnapshot {
    /// Reads `m`.
    pub fn read(model: &str, target_fps: f64, m: &SubMetrics) -> Self {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            model: model.to_owned(),
            target_fps,
            fps_inferred: lock(&m.rate).rate(Instant::now()),
            sent: g(&m.sent),
            results: g(&m.results),
            missed: g(&m.missed),
            stale: g(&m.stale),
            overloaded: g(&m.overloaded),
            unavailable: g(&m.unavailable),
            timeouts: g(&m.timeouts),
            disconnects: g(&m.disconnects),
            errors: g(&m.errors),
            people: g(&m.people),
            detections: g(&m.detections),
            motion_skipped: g(&m.motion_skipped),
            latency_ms: lock(&m.latency).percentiles(),
        }
    }
}

/// Snapshot of a model's agent-side counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelCounters {
    /// Requests sent.
    pub requests: u64,
    /// Results.
    pub results: u64,
    /// Failures.
    pub failures: u64,
    /// Request-to-result at the agent, ms.
    pub round_trip_ms: Pct,
    /// Inside the server, ms.
    pub server_ms: Pct,
    /// Model run, ms.
    pub inference_ms: Pct,
    /// Connections refused: an impostor answered on the socket.
    pub peer_refused: u64,
}

impl ModelCounters {
    /// Reads `m`.
    pub fn read(m: &ModelMetrics) -> Self {
        Self {
            requests: m.requests.load(Ordering::Relaxed),
            results: m.results.load(Ordering::Relaxed),
            failures: m.failures.load(Ordering::Relaxed),
            round_trip_ms: lock(&m.round_trip).percentiles(),
            server_ms: lock(&m.server).percentiles(),
            inference_ms: lock(&m.inference).percentiles(),
            peer_refused: m.peer_refused.load(Ordering::Relaxed),
        }
    }
}

/// Locks a mutex, ignoring poisoning (metrics stay readable after a panic elsewhere).
pub fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut w = LatencyWindow::default();
        for i in 1..=100 {
            w.record(i as f64);
        }
        let p = w.percentiles();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(LatencyWindow::default().percentiles(), Pct::default());
    }

    #[test]
    fn window_is_bounded() {
        let mut w = LatencyWindow::default();
        for i in 0..(WINDOW * 3) {
            w.record(i as f64);
        }
        assert_eq!(w.percentiles().count, WINDOW);
    }

    #[test]
    fn rate_counts_the_last_window_only() {
        let mut r = RateMeter::default();
        let t0 = Instant::now();
        for i in 0..50u64 {
            r.mark(t0 + Duration::from_millis(i * 200));
        }
        // 50 events over 10 s; the last 5 s hold 26 of them (inclusive edge).
        let rate = r.rate(t0 + Duration::from_millis(49 * 200));
        assert!((rate - 26.0 / 5.0).abs() < 0.01, "{rate}");
        assert_eq!(r.rate(t0 + Duration::from_secs(100)), 0.0);
    }

    #[test]
    fn error_codes_land_in_their_counters() {
        let s = SubMetrics::default();
        s.count_error(ErrorCode::StaleFrame);
        s.count_error(ErrorCode::Overloaded);
        s.count_error(ErrorCode::ShuttingDown);
        s.count_error(ErrorCode::Internal);
        let snap = SubSnapshot::read("m", 5.0, &s);
        assert_eq!(
            (snap.stale, snap.overloaded, snap.unavailable, snap.errors),
            (1, 1, 1, 1)
        );
    }
}
