//! `bench ipc`: ping round trip against a real model server, and the server's overhead over
//! a raw `session.run` on the same frame's tensor with the same threads, measured in the
//! same run (raw runs and requests alternate one by one, so load bursts hit both alike).

use std::path::Path;
use std::time::{Duration, Instant};

use proto_schema::message::{FrameMeta, FrameRef, InferenceRequest};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::time::UnixNanos;
use proto_schema::PROTOCOL_VERSION;
use serde::Serialize;
use shm_ring::RingWriter;

use super::assets::{self, ModelAsset};
use super::client::{Client, ClientError, ServerProcess};
use super::interrupt;
use super::ort_raw::{self, RawError, RawSession, SessionSettings};
use super::report::{num, Table};
use super::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct IpcParams {
    pub pings: usize,
    /// Time of alternating raw runs and server requests per (model, threads).
    pub seconds: f64,
    /// Fewest raw runs (and server requests) per (model, threads).
    pub min_runs: usize,
    /// Pause after each raw run and each request.
    pub gap_ms: u64,
    pub frame_index: u32,
    /// Session settings to compare, each the same for the server and the raw session.
    pub sessions: Vec<SessionSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    pub model: String,
    pub rtt_us: Summary,
}

/// Server versus raw for one model and thread count, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadResult {
    pub model: String,
    pub threads: usize,
    pub spin: bool,
    pub raw_ms: Summary,
    pub server_e2e_ms: Summary,
    /// Server-reported stages, p50 ms.
    pub server_queue_p50_ms: f64,
    pub server_preprocess_p50_ms: f64,
    pub server_inference_p50_ms: f64,
    pub server_postprocess_p50_ms: f64,
    pub server_total_p50_ms: f64,
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// Median of the per-pair differences (server request minus the raw run just before).
    pub paired_overhead_p50_ms: f64,
    /// overhead p50 / raw p50, percent.
    pub overhead_p50_pct: f64,
    pub detections: usize,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpcData {
    pub ping: Vec<PingResult>,
    pub overhead: Vec<OverheadResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error(transparent)]
    Asset(#[from] assets::AssetError),
    #[error("ring: {0}")]
    Ring(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the scenario for each model: a ring holding one real NV12 frame, a model server
/// per (model, threads), pings, then raw runs alternating with server requests.
pub fn run(
    bin_dir: &Path,
    video: &Path,
    models: &[ModelAsset],
    p: &IpcParams,
) -> Result<(IpcData, Vec<Table>, Vec<String>), IpcError> {
    let ring_dir = tempfile::Builder::new()
        .prefix("fb-bench-ipc-")
        // An owned 0700 ring dir: frame-kernel and model-server refuse looser ones.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in("/dev/shm")?;
    // The sockets' directory: owned 0700, as model-server requires.
    let work = tempfile::Builder::new()
        .prefix("fb-bench-ipc-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    let (w, h) = assets::video_size(video)?;
    let nv12 = assets::decode_frame(video, p.frame_index, "nv12")?;
    let g = FrameGeometry::packed(w, h, PixelFormat::Nv12)
        .map_err(|e| IpcError::Ring(e.to_string()))?;
    let mut ring = RingWriter::builder("cam0")
        .dir(ring_dir.path())
        .slots(4)
        .geometry(g)
        .create()
        .map_err(|e| IpcError::Ring(e.to_string()))?;
    let mut slot = ring.begin_write();
    if slot.data_mut().len() != nv12.len() {
        return Err(IpcError::Ring(format!(
            "decoded frame has {} bytes, ring slot {}",
            nv12.len(),
            g.frame_size
        )));
    }
    slot.data_mut().copy_from_slice(&nv12);
    let info = slot.publish(0, UnixNanos::now().get());

    let mut data = IpcData {
        ping: Vec::new(),
        overhead: Vec::new(),
    };
    for m in models {
        let prepared = ort_raw::prepare(&m.path, video, p.frame_index)?;
        for (i, &settings) in p.sessions.iter().enumerate() {
            let (threads, spin) = (settings.threads, settings.spinning);
            interrupt::check()?;
            let socket = work.path().join(format!("{}-{threads}-{spin}.sock", m.id));
            let server = ServerProcess::start(
                bin_dir,
                &m.path,
                &m.id,
                &socket,
                ring_dir.path(),
                settings,
                &work.path().join(format!("{}-{threads}-{spin}.log", m.id)),
                Duration::from_secs(60),
            )?;
            let mut client = Client::connect(&socket)?;
            // Ping once per model (the first setting).
            if i == 0 {
                for _ in 0..p.pings / 10 {
                    client.ping()?;
                }
                let mut rtt = Vec::with_capacity(p.pings);
                for _ in 0..p.pings {
                    rtt.push(client.ping()?.as_secs_f64() * 1e6);
                }
                if let Some(s) = Summary::of(&mut rtt) {
                    data.ping.push(PingResult {
                        model: m.id.clone(),
                        rtt_us: s,
                    });
                }
            }
            let req = InferenceRequest {
                v: PROTOCOL_VERSION,
                id: 0,
                camera_id: "cam0".into(),
                model_id: m.id.clone(),
                frame: FrameRef {
                    ring: "cam0".into(),
                    generation: ring.generation(),
                    slot: info.slot,
                    seq: info.seq,
                },
                meta: FrameMeta::from_geometry(info.frame_id, &g, info.capture_ts_ns),
                sent_ts_ns: 0,
                deadline_ts_ns: None,
            };
            // Warm both sides.
            for _ in 0..3 {
                client.infer(req.clone())?;
            }
            // Raw runs and server requests alternate one by one, so a burst of other load
            // on the machine hits both sides alike; the overhead is also taken pairwise.
            let mut raw_session = RawSession::new(&prepared, settings)?;
            for _ in 0..3 {
                raw_session.run()?;
            }
            let duration = Duration::from_secs_f64(p.seconds);
            let gap = Duration::from_millis(p.gap_ms);
            let mut raw = Vec::new();
            let mut e2e = Vec::new();
            let mut paired = Vec::new();
            let (mut q, mut pre, mut inf, mut post, mut tot) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut detections = 0;
            let mut errors = 0;
            let start = Instant::now();
            while start.elapsed() < duration || raw.len() < p.min_runs {
                interrupt::check()?;
                let r = ms(raw_session.run()?);
                raw.push(r);
                // Idle ORT threads spin for a while after a run; let the other side's park
                // so neither run competes with the other's spinning threads.
                std::thread::sleep(gap);
                let (resp, rtt) = client.infer(req.clone())?;
                std::thread::sleep(gap);
                if resp.error.is_some() {
                    errors += 1;
                    continue;
                }
                detections = resp.detections.len();
                e2e.push(ms(rtt));
                paired.push(ms(rtt) - r);
                let t = resp.timings;
                q.push(t.queue_us as f64 / 1e3);
                pre.push(t.preprocess_us as f64 / 1e3);
                inf.push(t.inference_us as f64 / 1e3);
                post.push(t.postprocess_us as f64 / 1e3);
                tot.push(t.total_us as f64 / 1e3);
            }
            drop(raw_session);
            drop(client);
            drop(server);
            let (Some(raw_s), Some(e2e_s)) = (Summary::of(&mut raw), Summary::of(&mut e2e)) else {
                continue;
            };
            let p50 = |v: &mut Vec<f64>| Summary::of(v).map_or(f64::NAN, |s| s.p50);
            data.overhead.push(OverheadResult {
                model: m.id.clone(),
                threads,
                spin,
                overhead_p50_ms: e2e_s.p50 - raw_s.p50,
                paired_overhead_p50_ms: crate::harness::stats::median(&paired).unwrap_or(f64::NAN),
                overhead_p99_ms: e2e_s.p99 - raw_s.p99,
                overhead_p50_pct: 100.0 * (e2e_s.p50 - raw_s.p50) / raw_s.p50,
                raw_ms: raw_s,
                server_e2e_ms: e2e_s,
                server_queue_p50_ms: p50(&mut q),
                server_preprocess_p50_ms: p50(&mut pre),
                server_inference_p50_ms: p50(&mut inf),
                server_postprocess_p50_ms: p50(&mut post),
                server_total_p50_ms: p50(&mut tot),
                detections,
                errors,
            });
        }
    }
    drop(ring);

    let mut t1 = Table::new(
        "Ping round trip over the model server's Unix socket (µs)",
        &["model server", "pings", "p50", "p90", "p99", "max"],
    );
    for r in &data.ping {
        t1.row(vec![
            r.model.clone(),
            r.rtt_us.count.to_string(),
            format!("{:.1}", r.rtt_us.p50),
            format!("{:.1}", r.rtt_us.p90),
            format!("{:.1}", r.rtt_us.p99),
            format!("{:.1}", r.rtt_us.max),
        ]);
    }
    let mut t2 = Table::new(
        "Request through the server vs raw session.run, same frame, same threads (ms)",
        &[
            "model",
            "threads",
            "spin",
            "raw p50",
            "raw p99",
            "server e2e p50",
            "e2e p99",
            "overhead p50",
            "overhead p99",
            "overhead p50 %",
            "paired overhead p50",
            "server: preprocess / inference / postprocess p50",
            "requests",
        ],
    );
    for r in &data.overhead {
        t2.row(vec![
            r.model.clone(),
            r.threads.to_string(),
            if r.spin { "on" } else { "off" }.to_string(),
            format!("{:.2}", r.raw_ms.p50),
            format!("{:.2}", r.raw_ms.p99),
            format!("{:.2}", r.server_e2e_ms.p50),
            format!("{:.2}", r.server_e2e_ms.p99),
            format!("{:.2}", r.overhead_p50_ms),
            format!("{:.2}", r.overhead_p99_ms),
            format!("{:.1}%", r.overhead_p50_pct),
            format!("{:.2}", r.paired_overhead_p50_ms),
            format!(
                "{} / {} / {}",
                num(Some(r.server_preprocess_p50_ms), 2),
                num(Some(r.server_inference_p50_ms), 2),
                num(Some(r.server_postprocess_p50_ms), 2)
            ),
            r.server_e2e_ms.count.to_string(),
        ]);
    }
    let mut summary = Vec::new();
    for r in &data.ping {
        summary.push(format!(
            "ping RTT ({}): p50 {:.1} µs, p99 {:.1} µs (goal ≤15 / ≤60 µs)",
            r.model, r.rtt_us.p50, r.rtt_us.p99
        ));
    }
    for r in &data.overhead {
        summary.push(format!(
            "server overhead {} @{} thread(s), spin {}: p50 {:.2} ms = {:.1}% of raw session.run {:.2} ms \
             (p99 {:.2} ms; median of paired differences {:.2} ms); server-side preprocess \
             {:.2} ms (goal ≤0.5 ms and ≤3% at p50)",
            r.model,
            r.threads,
            if r.spin { "on" } else { "off" },
            r.overhead_p50_ms,
            r.overhead_p50_pct,
            r.raw_ms.p50,
            r.overhead_p99_ms,
            r.paired_overhead_p50_ms,
            r.server_preprocess_p50_ms
        ));
    }
    Ok((data, vec![t1, t2], summary))
}
