//! Point-in-time reports of cameras and models, shared by the HTTP API, the Prometheus
//! endpoint and the live table.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use proto_schema::redact::{redact_url, REDACTED};
use serde::Serialize;

use crate::metrics::prom_label as label;
use crate::metrics::{locked, ModelCounters, RingView, SubSnapshot};
use crate::supervisor::{ProcState, ProcStatus};
use crate::system::Shared;

/// One camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// Source URL or file, credentials redacted (`rtsp://***@host/...`).
    pub source: String,
    /// `stopped`, the kernel's state while it is not ready (`starting`, `backoff`,
    /// `failed`), else the ring's (`live`, `reconnecting`, ...).
    pub state: String,
    /// Whether it runs.
    pub running: bool,
    /// The kernel process.
    pub kernel: Option<ProcStatus>,
    /// The last warning or error line its frame kernel logged, e.g. `WARN camera
    /// unreachable; retrying reason=... Connection refused`: why a camera does not come
    /// up, seen within a second instead of after the readiness timeout. Credentials
    /// scrubbed; kept after the camera recovered (see `last_error_unix_ms`).
    pub last_error: Option<String>,
    /// When the kernel logged `last_error`, Unix ms.
    pub last_error_unix_ms: Option<u64>,
    /// The ring as last read.
    pub ring: RingView,
    /// Decoded frames per second.
    pub fps_decoded: f64,
    /// Frames the agent was woken for.
    pub frames_seen: u64,
    /// Times the ring's waiter woke the agent (about once per due slot).
    pub wakeups: u64,
    /// Inferences the motion gate saved, summed over the subscriptions.
    pub motion_skipped: u64,
    /// Per subscription.
    pub subscriptions: Vec<SubSnapshot>,
    /// What is decoded, and what is not.
    pub decode: DecodeStatus,
}

/// A camera's decoding as configured; the kernel logs what it decided from it (its
/// "decode options" line).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecodeStatus {
    /// `[cameras.decode]`.
    pub options: crate::config::DecodeConfig,
    /// The highest subscribed rate, passed to the kernel as `--consumer-fps`.
    pub consumer_fps: Option<f64>,
    /// The main stream for viewing and recording (never decoded), credentials redacted.
    pub record_source: Option<String>,
}

/// One model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Model id.
    pub id: String,
    /// Model file.
    pub path: String,
    /// Server state (`starting`, `ready`, `backoff`, `failed`, ...).
    pub state: ProcState,
    /// The server process.
    pub server: ProcStatus,
    /// Agent-side counters and latency percentiles.
    pub stats: ModelCounters,
}

/// All cameras.
pub fn cameras(shared: &Shared) -> Vec<CameraStatus> {
    let view = shared.view();
    view.cameras
        .values()
        .map(|c| {
            let m = shared.metrics.camera(&c.config.id);
            let ring = locked(&m.ring).clone();
            let mut kernel = c.kernel.as_ref().map(|k| k.borrow().clone());
            // The kernel's last error line comes from its log; keep credentials out.
            if let Some(e) = kernel.as_mut().and_then(|k| k.last_error.as_mut()) {
                *e = scrub(e, &c.config.source);
            }
            let state = match &kernel {
                None => "stopped".to_owned(),
                Some(k) if k.state != ProcState::Ready => k.state.as_str().to_owned(),
                Some(_) if ring.state.is_empty() => "starting".to_owned(),
                Some(_) => ring.state.clone(),
            };
            let logged = m.kernel_log.get();
            let last_error = logged.as_ref().map(|p| {
                let line = scrub(&p.line, &c.config.source);
                match &c.config.record_source {
                    Some(r) => scrub(&line, r),
                    None => line,
                }
            });
            let subscriptions: Vec<SubSnapshot> = view
                .subscriptions
                .iter()
                .filter(|s| s.camera == c.config.id)
                .map(|s| SubSnapshot::read(&s.model, s.fps, &m.sub(&s.model)))
                .collect();
            CameraStatus {
                id: c.config.id.clone(),
                source: redact_url(&c.config.source).into_owned(),
                state,
                running: c.running,
                fps_decoded: if kernel.as_ref().is_some_and(|k| k.state == ProcState::Ready) {
                    ring.fps_decoded
                } else {
                    0.0
                },
                kernel,
                last_error,
                last_error_unix_ms: logged.map(|p| p.unix_ms),
                ring,
                frames_seen: m.frames_seen.load(Ordering::Relaxed),
                wakeups: m.wakeups.load(Ordering::Relaxed),
                motion_skipped: subscriptions.iter().map(|s| s.motion_skipped).sum(),
                subscriptions,
                decode: DecodeStatus {
                    options: c.config.decode.clone(),
                    consumer_fps: view
                        .subscriptions
                        .iter()
                        .filter(|s| s.camera == c.config.id)
                        .map(|s| s.fps)
                        .reduce(f64::max),
                    record_source: (c.config.record_source.as_deref())
                        .map(|r| redact_url(r).into_owned()),
                },
            }
        })
        .collect()
}

/// `text` with the credentials of `source` (its user-info, and its password when that
/// is long enough to be told from ordinary words) replaced by `***`.
pub fn scrub(text: &str, source: &str) -> String {
    let Some(start) = source.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    let rest = &source[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let user_info = &authority[..at];
    if user_info.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(user_info, REDACTED);
    if let Some((_, password)) = user_info.split_once(':') {
        if password.len() >= 4 {
            out = out.replace(password, REDACTED);
        }
    }
    out
}

/// All models.
pub fn models(shared: &Shared) -> Vec<ModelStatus> {
    let view = shared.view();
    view.models
        .values()
        .map(|m| {
            let server = m.status.borrow().clone();
            ModelStatus {
                id: m.config.id.clone(),
                path: m.config.path.display().to_string(),
                state: server.state,
                server,
                stats: ModelCounters::read(&shared.metrics.model(&m.config.id)),
            }
        })
        .collect()
}

/// A process marked failed, as `/health` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedProcess {
    /// `camera <id>` or `model <id>`.
    pub process: String,
    /// Why it was given up on.
    pub last_error: Option<String>,
    /// When it will be tried again (Unix ms); `None`: never (`failed_retry_s = 0`).
    pub next_retry_unix_ms: Option<u64>,
    /// Retries after failure so far.
    pub failed_retries: u32,
}

/// Every process currently marked failed, with its retry schedule.
pub fn failed(shared: &Shared) -> Vec<FailedProcess> {
    let view = shared.view();
    let kernels = view.cameras.values().filter_map(|c| {
        let k = c.kernel.as_ref()?.borrow().clone();
        Some((format!("camera {}", c.config.id), k))
    });
    let models = view
        .models
        .values()
        .map(|m| (format!("model {}", m.config.id), m.status.borrow().clone()));
    kernels
        .chain(models)
        .filter(|(_, st)| st.state == ProcState::Failed)
        .map(|(process, st)| FailedProcess {
            process,
            last_error: st.last_error,
            next_retry_unix_ms: st.next_retry_unix_ms,
            failed_retries: st.failed_retries,
        })
        .collect()
}

/// Whether every running camera's kernel and every model server is ready, with the
/// names of those that are not.
pub fn readiness(shared: &Shared) -> (bool, Vec<String>) {
    let view = shared.view();
    let mut waiting = Vec::new();
    for c in view.cameras.values() {
        if let Some(k) = &c.kernel {
            if k.borrow().state != ProcState::Ready {
                waiting.push(format!("camera {}", c.config.id));
            }
        }
    }
    for m in view.models.values() {
        if m.status.borrow().state != ProcState::Ready {
            waiting.push(format!("model {}", m.config.id));
        }
    }
    (waiting.is_empty(), waiting)
}

/// A per-subscription counter family: name, help, getter.
type Counter = (&'static str, &'static str, fn(&SubSnapshot) -> u64);

/// The Prometheus text exposition (format 0.0.4).
pub fn prometheus(shared: &Shared) -> String {
    let cams = cameras(shared);
    let models = models(shared);
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "framebus_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    let _ = writeln!(
        out,
        "framebus_uptime_seconds {:.3}",
        shared.metrics.uptime().as_secs_f64()
    );
    let api = &shared.api_connections;
    for (name, kind, help, value) in [
        (
            "framebus_api_connections",
            "gauge",
            "API connections open now (at most [api] max_connections).",
            api.open(),
        ),
        (
            "framebus_api_connections_accepted_total",
            "counter",
            "API connections served since start.",
            api.accepted(),
        ),
        (
            "framebus_api_connections_refused_total",
            "counter",
            "API connections answered 503 (or closed) because max_connections were open.",
            api.refused(),
        ),
        (
            "framebus_api_accept_errors_total",
            "counter",
            "API accept calls that failed (out of descriptors or memory).",
            api.accept_errors(),
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(open) = crate::fds::open_count() {
        family(
            &mut out,
            "framebus_agent_open_fds",
            "gauge",
            "File descriptors the agent has open.",
        );
        let _ = writeln!(out, "framebus_agent_open_fds {open}");
    }
    family(
        &mut out,
        "framebus_results_queued_total",
        "counter",
        "Result records accepted by the result queue.",
    );
    let _ = writeln!(
        out,
        "framebus_results_queued_total {}",
        shared.results.pushed()
    );
    family(
        &mut out,
        "framebus_results_dropped_total",
        "counter",
        "Result records lost: dropped by the full queue (oldest first), or not written by a sink (disk full; per sink in framebus_sink_dropped_total, summed here).",
    );
    let _ = writeln!(
        out,
        "framebus_results_dropped_total {}",
        shared.results.dropped()
            + shared
                .metrics
                .sinks
                .lost_of(crate::sinks::SinkKind::Results)
    );

    family(
        &mut out,
        "framebus_camera_up",
        "gauge",
        "1 when the camera's ring is live.",
    );
    for c in &cams {
        let _ = writeln!(
            out,
            "framebus_camera_up{{camera=\"{}\"}} {}",
            label(&c.id),
            u8::from(c.state == "live")
        );
    }
    family(
        &mut out,
        "framebus_camera_fps_decoded",
        "gauge",
        "Frames decoded per second.",
    );
    for c in &cams {
        let _ = writeln!(
            out,
            "framebus_camera_fps_decoded{{camera=\"{}\"}} {:.3}",
            label(&c.id),
            c.fps_decoded
        );
    }
    family(
        &mut out,
        "framebus_camera_frames_decoded_total",
        "counter",
        "Frames decoded by the kernel (current ring generation).",
    );
    for c in &cams {
        let _ = writeln!(
            out,
            "framebus_camera_frames_decoded_total{{camera=\"{}\"}} {}",
            label(&c.id),
            c.ring.frames_decoded
        );
    }
    family(
        &mut out,
        "framebus_kernel_restarts_total",
        "counter",
        "Frame kernel restarts.",
    );
    for c in &cams {
        let n = c.kernel.as_ref().map_or(0, |k| k.restarts);
        let _ = writeln!(
            out,
            "framebus_kernel_restarts_total{{camera=\"{}\"}} {n}",
            label(&c.id)
        );
    }
    family(
        &mut out,
        "framebus_camera_wakeups_total",
        "counter",
        "Times the ring's waiter woke the camera's agent (about once per due slot).",
    );
    for c in &cams {
        let _ = writeln!(
            out,
            "framebus_camera_wakeups_total{{camera=\"{}\"}} {}",
            label(&c.id),
            c.wakeups
        );
    }
    let sub_counters: [Counter; 10] = [
        ("framebus_requests_total", "Inference requests sent.", |s| {
            s.sent
        }),
        (
            "framebus_results_total",
            "Successful inference results.",
            |s| s.results,
        ),
        (
            "framebus_missed_slots_total",
            "FPS-gate slots skipped because the model was busy or down.",
            |s| s.missed,
        ),
        (
            "framebus_stale_frames_total",
            "Answers stale_frame (slot overwritten before it was read).",
            |s| s.stale,
        ),
        ("framebus_overloaded_total", "Answers overloaded.", |s| {
            s.overloaded
        }),
        (
            "framebus_unavailable_total",
            "Answers model_unavailable or shutting_down.",
            |s| s.unavailable,
        ),
        (
            "framebus_timeouts_total",
            "Requests without an answer in time, or deadline_exceeded.",
            |s| s.timeouts,
        ),
        (
            "framebus_disconnects_total",
            "Requests lost with a dead connection.",
            |s| s.disconnects,
        ),
        ("framebus_errors_total", "Other failed requests.", |s| {
            s.errors
        }),
        (
            "framebus_motion_skipped_total",
            "Inferences the motion gate saved (still frames answered with the last result).",
            |s| s.motion_skipped,
        ),
    ];
    for (name, help, get) in sub_counters {
        family(&mut out, name, "counter", help);
        for c in &cams {
            for s in &c.subscriptions {
                let _ = writeln!(
                    out,
                    "{name}{{camera=\"{}\",model=\"{}\"}} {}",
                    label(&c.id),
                    label(&s.model),
                    get(s)
                );
            }
        }
    }
    family(
        &mut out,
        "framebus_fps_inferred",
        "gauge",
        "Results per second.",
    );
    family(
        &mut out,
        "framebus_people",
        "gauge",
        "Persons in the latest result.",
    );
    family(
        &mut out,
        "framebus_latency_seconds",
        "summary",
        "Capture-to-result latency over the last results.",
    );
    for c in &cams {
        for s in &c.subscriptions {
            let l = format!("camera=\"{}\",model=\"{}\"", label(&c.id), label(&s.model));
            let _ = writeln!(out, "framebus_fps_inferred{{{l}}} {:.3}", s.fps_inferred);
            let _ = writeln!(out, "framebus_people{{{l}}} {}", s.people);
            for (q, v) in [
                ("0.5", s.latency_ms.p50),
                ("0.9", s.latency_ms.p90),
                ("0.99", s.latency_ms.p99),
            ] {
                let _ = writeln!(
                    out,
                    "framebus_latency_seconds{{{l},quantile=\"{q}\"}} {:.6}",
                    v / 1e3
                );
            }
            let _ = writeln!(
                out,
                "framebus_latency_seconds_count{{{l}}} {}",
                s.latency_ms.count
            );
        }
    }
    family(
        &mut out,
        "framebus_model_up",
        "gauge",
        "1 when the model server is ready.",
    );
    for m in &models {
        let _ = writeln!(
            out,
            "framebus_model_up{{model=\"{}\"}} {}",
            label(&m.id),
            u8::from(m.state == ProcState::Ready)
        );
    }
    family(
        &mut out,
        "framebus_model_failed",
        "gauge",
        "1 when the model server was given up on.",
    );
    for m in &models {
        let _ = writeln!(
            out,
            "framebus_model_failed{{model=\"{}\"}} {}",
            label(&m.id),
            u8::from(m.state == ProcState::Failed)
        );
    }
    family(
        &mut out,
        "framebus_model_restarts_total",
        "counter",
        "Model server restarts.",
    );
    for m in &models {
        let _ = writeln!(
            out,
            "framebus_model_restarts_total{{model=\"{}\"}} {}",
            label(&m.id),
            m.server.restarts
        );
    }
    family(
        &mut out,
        "framebus_model_failed_retries_total",
        "counter",
        "Model server retries after it had been marked failed (the cool-down).",
    );
    for m in &models {
        let _ = writeln!(
            out,
            "framebus_model_failed_retries_total{{model=\"{}\"}} {}",
            label(&m.id),
            m.server.failed_retries
        );
    }
    family(
        &mut out,
        "framebus_model_peer_refused_total",
        "counter",
        "Connections to the model's sockets refused: another process than the spawned server answered.",
    );
    for m in &models {
        let _ = writeln!(
            out,
            "framebus_model_peer_refused_total{{model=\"{}\"}} {}",
            label(&m.id),
            m.server.peer_refused + m.stats.peer_refused
        );
    }
    family(
        &mut out,
        "framebus_model_sessions",
        "gauge",
        "A model server's intra-op threads per instance, instances and largest batch, as its status said when ready (how: calibrated, cached, fixed, derived or skipped).",
    );
    for m in &models {
        let Some(c) = &m.server.calibration else {
            continue;
        };
        for (what, v) in [
            ("threads", c.threads),
            ("instances", c.instances),
            ("max_batch", c.max_batch),
        ] {
            let _ = writeln!(
                out,
                "framebus_model_sessions{{model=\"{}\",setting=\"{what}\",how=\"{}\"}} {v}",
                label(&m.id),
                label(&c.how)
            );
        }
    }
    family(
        &mut out,
        "framebus_kernel_failed_retries_total",
        "counter",
        "Frame kernel retries after it had been marked failed (the cool-down).",
    );
    for c in &cams {
        let n = c.kernel.as_ref().map_or(0, |k| k.failed_retries);
        let _ = writeln!(
            out,
            "framebus_kernel_failed_retries_total{{camera=\"{}\"}} {n}",
            label(&c.id)
        );
    }
    family(
        &mut out,
        "framebus_leftover_files_removed_total",
        "counter",
        "Rings and sockets left by dead children (kill -9 of a child or of the agent), removed before a start.",
    );
    let leftovers: u64 = models
        .iter()
        .map(|m| m.server.leftovers_removed)
        .sum::<u64>()
        + cams
            .iter()
            .filter_map(|c| c.kernel.as_ref())
            .map(|k| k.leftovers_removed)
            .sum::<u64>();
    let _ = writeln!(out, "framebus_leftover_files_removed_total {leftovers}");
    family(
        &mut out,
        "framebus_model_round_trip_seconds",
        "summary",
        "Request-to-result latency at the agent over the last results.",
    );
    for m in &models {
        let p = m.stats.round_trip_ms;
        for (q, v) in [("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99)] {
            let _ = writeln!(
                out,
                "framebus_model_round_trip_seconds{{model=\"{}\",quantile=\"{q}\"}} {:.6}",
                label(&m.id),
                v / 1e3
            );
        }
        let _ = writeln!(
            out,
            "framebus_model_round_trip_seconds_count{{model=\"{}\"}} {}",
            label(&m.id),
            p.count
        );
    }
    shared.analytics.prometheus(&mut out);
    shared.live.prometheus(&mut out);
    if let Some(c) = &shared.clips {
        c.prometheus(&mut out);
    }
    shared.brokers.prometheus(&mut out);
    shared.metrics.sinks.prometheus(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn credentials_are_scrubbed_from_free_text() {
        let src = "rtsp://admin:s3cret@10.0.0.5:554/x";
        assert_eq!(
            scrub(
                "cannot open rtsp://admin:s3cret@10.0.0.5:554/x: refused",
                src
            ),
            "cannot open rtsp://***@10.0.0.5:554/x: refused"
        );
        assert_eq!(scrub("auth failed for s3cret", src), "auth failed for ***");
        // Short passwords are only removed as part of the user-info.
        assert_eq!(scrub("a b", "rtsp://u:b@h/x"), "a b");
        for s in ["rtsp://@h/x", "rtsp://h/x", "/srv/a.mp4"] {
            assert_eq!(scrub("text stays", s), "text stays");
        }
    }
}
