//! Request counters and per-stage latency histograms, reported by `get_stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use proto_schema::error::ErrorCode;
use proto_schema::message::{Percentiles, StatsReport, Timings, LATENCY_STAGES};
use proto_schema::PROTOCOL_VERSION;

/// Most distinct camera ids counted in `per_camera`; requests from further cameras are
/// still counted in the totals. Bounds memory against clients inventing ids.
pub const MAX_TRACKED_CAMERAS: usize = 4096;

/// Largest latency a histogram records, in microseconds (one hour); larger values are
/// clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Server-wide statistics, shared by the connection tasks and the workers.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    requests: AtomicU64,
    ok: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    per_camera: Mutex<BTreeMap<String, u64>>,
    /// Requests per camera not served because of load (same bound as `per_camera`).
    shed_per_camera: Mutex<BTreeMap<String, u64>>,
    /// One histogram per entry of [`LATENCY_STAGES`].
    latency: Mutex<Vec<Histogram<u64>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Stats {
    /// Empty statistics; `started` is the server start for `uptime_s`.
    pub fn new(started: Instant) -> Self {
        let hist =
            || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds");
        Stats {
            started,
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            per_camera: Mutex::new(BTreeMap::new()),
            shed_per_camera: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(LATENCY_STAGES.iter().map(|_| hist()).collect()),
        }
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts one inference request from `camera` (before it is processed).
    pub fn record_request(&self, camera: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut cams = lock(&self.per_camera);
        if let Some(n) = cams.get_mut(camera) {
            *n += 1;
        } else if cams.len() < MAX_TRACKED_CAMERAS {
            cams.insert(camera.to_owned(), 1);
        }
    }

    /// Counts one request of `camera` not served because of load (`overloaded`,
    /// `deadline_exceeded`).
    pub fn record_shed(&self, camera: &str) {
        let mut cams = lock(&self.shed_per_camera);
        if let Some(n) = cams.get_mut(camera) {
            *n += 1;
        } else if cams.len() < MAX_TRACKED_CAMERAS && proto_schema::message::is_valid_name(camera) {
            cams.insert(camera.to_owned(), 1);
        }
    }

    /// Counts a successful inference with its stage timings.
    pub fn record_ok(&self, t: &Timings) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let values = [
            t.queue_us,
            t.preprocess_us,
            t.inference_us,
            t.postprocess_us,
            t.total_us,
        ];
        let mut hists = lock(&self.latency);
        for (h, v) in hists.iter_mut().zip(values) {
            h.saturating_record(v.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Counts one error response (inference or protocol level).
    pub fn record_error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .expect("every code is in ALL");
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count of errors with `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].load(Ordering::Relaxed)
    }

    /// The `stats` response body for request `id`.
    pub fn report(&self, id: u64) -> StatsReport {
        let errors_by_code = ErrorCode::ALL
            .iter()
            .zip(&self.errors)
            .filter_map(|(c, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((*c, n))
            })
            .collect();
        let latency_us = LATENCY_STAGES
            .iter()
            .zip(lock(&self.latency).iter())
            .filter(|(_, h)| !h.is_empty())
            .map(|(stage, h)| (stage.to_string(), percentiles(h)))
            .collect();
        StatsReport {
            v: PROTOCOL_VERSION,
            id,
            uptime_s: self.uptime_s(),
            requests: self.requests.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            errors_by_code,
            per_camera: lock(&self.per_camera).clone(),
            latency_us,
            shed_per_camera: lock(&self.shed_per_camera).clone(),
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        min: h.min(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
        mean: h.mean().round() as u64,
    }
}

/// Locks a mutex, recovering from poisoning: the data are counters, still meaningful after
/// a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentiles() {
        let s = Stats::default();
        for i in 0..100u64 {
            s.record_request(if i % 2 == 0 { "cam-a" } else { "cam-b" });
            s.record_ok(&Timings {
                queue_us: i,
                preprocess_us: 10,
                inference_us: 1000 + i,
                postprocess_us: 5,
                total_us: 1100 + i,
                batch_size: 1,
            });
        }
        s.record_error(ErrorCode::StaleFrame);
        s.record_error(ErrorCode::StaleFrame);
        s.record_shed("cam-b");
        s.record_shed("cam-b");
        s.record_shed("../bad"); // never a key the report would fail on
        let r = s.report(7);
        assert_eq!(r.shed_per_camera.len(), 1);
        assert_eq!(r.shed_per_camera["cam-b"], 2);
        assert_eq!((r.id, r.requests, r.ok), (7, 100, 100));
        assert_eq!(r.errors_by_code.get(&ErrorCode::StaleFrame), Some(&2));
        assert_eq!(r.errors_by_code.len(), 1);
        assert_eq!(r.per_camera["cam-a"], 50);
        let total = &r.latency_us["total"];
        assert_eq!(total.count, 100);
        assert!((1140..=1160).contains(&total.p50), "{total:?}");
        assert!(total.min <= total.p50 && total.p99 <= total.max);
        assert_eq!(r.latency_us.len(), LATENCY_STAGES.len());
        // The report passes the contract's own validation.
        proto_schema::message::Response::Stats(r)
            .validate()
            .unwrap();
    }

    #[test]
    fn camera_map_is_bounded() {
        let s = Stats::default();
        for i in 0..MAX_TRACKED_CAMERAS + 10 {
            s.record_request(&format!("cam{i}"));
        }
        let r = s.report(1);
        assert_eq!(r.per_camera.len(), MAX_TRACKED_CAMERAS);
        assert_eq!(r.requests as usize, MAX_TRACKED_CAMERAS + 10);
        assert!(r.latency_us.is_empty());
    }
}
