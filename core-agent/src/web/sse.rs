//! `GET /events/stream`: one Server-Sent Events connection per page carrying the
//! analytics events as they happen and a status snapshot every `status_interval_s`.
//!
//! Bounds: at most `max_streams` at once (a semaphore; one more is 503); a quiet
//! stream sends a keep-alive comment every `keepalive_s` (a dead client is noticed on
//! that write and the stream dropped); every stream ends after `stream_max_s` (the
//! browser's `EventSource` reconnects) and at shutdown, so the API's graceful shutdown
//! never waits on an open page. The snapshot is built once per interval by one task,
//! and only while some stream is open.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};

use super::procs::CpuSampler;
use super::Dashboard;
use crate::analytics::events::Event;
use crate::status;

/// The state of one open stream.
struct Stream {
    events: broadcast::Receiver<Arc<Event>>,
    status: watch::Receiver<Arc<str>>,
    shutdown: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    /// Held for the stream's life: its slot among `max_streams`.
    _permit: OwnedSemaphorePermit,
    first: bool,
}

impl Stream {
    async fn next(&mut self) -> Option<SseEvent> {
        if std::mem::take(&mut self.first) {
            // The latest snapshot at once, so a new page does not wait an interval.
            let s = self.status.borrow_and_update().clone();
            if !s.is_empty() {
                return Some(SseEvent::default().event("status").data(&*s));
            }
        }
        tokio::select! {
            _ = self.shutdown.wait_for(|s| *s) => None,
            () = tokio::time::sleep_until(self.deadline) => None,
            r = self.events.recv() => match r {
                Ok(e) => SseEvent::default().event("event").json_data(&*e).ok(),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some(SseEvent::default().event("lagged").data(n.to_string()))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
            r = self.status.changed() => {
                r.ok()?;
                let s = self.status.borrow_and_update().clone();
                Some(SseEvent::default().event("status").data(&*s))
            }
        }
    }
}

/// `GET /events/stream`.
pub(super) async fn stream(State(d): State<Dashboard>) -> Response {
    if *d.shutdown.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "shutting down" })),
        )
            .into_response();
    }
    let Ok(permit) = d.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!(
                "too many live streams open (dashboard.max_streams = {})",
                d.settings.max_streams
            ) })),
        )
            .into_response();
    };
    let st = Stream {
        events: d.recent.subscribe(),
        status: d.status.subscribe(),
        shutdown: d.shutdown.clone(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(d.settings.stream_max_s),
        _permit: permit,
        first: true,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        let ev = st.next().await?;
        Some((Ok::<_, Infallible>(ev), st))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(d.settings.keepalive_s)))
        .into_response()
}

/// Builds the status snapshot every `status_interval_s` while a stream is open.
pub(super) async fn status_task(d: Dashboard) {
    let mut shutdown = d.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(d.settings.status_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = CpuSampler::default();
    let mut servers = Value::Object(Default::default());
    let mut probed: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if d.status.receiver_count() == 0 {
            continue;
        }
        if probed.is_none_or(|t| t.elapsed() >= SERVER_PROBE_EVERY) {
            servers = probe_servers(&d).await;
            probed = Some(Instant::now());
        }
        let mut snap = snapshot(&d, &mut cpu, Instant::now());
        snap["servers"] = servers.clone();
        d.status.send_replace(Arc::from(snap.to_string()));
    }
}

/// How often the model servers are asked for their status while a page is open.
const SERVER_PROBE_EVERY: Duration = Duration::from_secs(3);

/// Each model server's own view (execution provider, instances, queue depth), asked
/// over its socket like the supervisor's readiness probe, from the pid the supervisor
/// spawned only; the configured device alone when it does not answer.
async fn probe_servers(d: &Dashboard) -> Value {
    let targets: Vec<(String, std::path::PathBuf, Option<u32>, String)> = {
        let view = d.shared.view();
        view.models
            .values()
            .map(|m| {
                let device = serde_json::to_value(m.config.device)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                (
                    m.config.id.clone(),
                    m.config.socket_path(&d.socket_dir),
                    m.status.borrow().pid,
                    device,
                )
            })
            .collect()
    };
    let mut out = serde_json::Map::new();
    for (id, socket, pid, device) in targets {
        let mut v = json!({ "device": device });
        if let Some(pid) = pid {
            let peer = crate::peer::ExpectedPeer::Pid(pid);
            let timeout = Duration::from_millis(300);
            if let Ok(s) =
                crate::supervisor::probe::serving_status(&socket, peer, timeout, 1 << 20).await
            {
                v = json!({
                    "device": device,
                    "provider": s.provider,
                    "instances": s.instances,
                    "queue_depth": s.queue_depth,
                    "queue_capacity": s.queue_capacity,
                    "connections": s.connections,
                    "max_connections": s.max_connections,
                    "max_batch": s.max_batch,
                });
            }
        }
        out.insert(id, v);
    }
    Value::Object(out)
}

/// The status snapshot: everything the status API reports (credentials already
/// redacted there), the live counts, and per-process CPU and memory.
pub(super) fn snapshot(d: &Dashboard, cpu: &mut CpuSampler, now: Instant) -> Value {
    let shared = &d.shared;
    let cameras = status::cameras(shared);
    let models = status::models(shared);
    let mut procs = vec![("agent".to_owned(), std::process::id())];
    procs.extend(cameras.iter().filter_map(|c| {
        let pid = c.kernel.as_ref()?.pid?;
        Some((format!("camera {}", c.id), pid))
    }));
    procs.extend(
        models
            .iter()
            .filter_map(|m| Some((format!("model {}", m.id), m.server.pid?))),
    );
    let a = &shared.analytics;
    let crossings: Vec<Value> = a
        .crossings()
        .into_iter()
        .map(|((camera, rule, direction, class), n)| {
            json!({ "camera": camera, "rule": rule, "direction": direction, "class": class, "n": n })
        })
        .collect();
    let occupancy: Vec<Value> = a
        .occupancy()
        .into_iter()
        .map(|((camera, rule), n)| json!({ "camera": camera, "rule": rule, "n": n }))
        .collect();
    json!({
        "time_ms": crate::clock::UnixNanos::now().get() / 1_000_000,
        "uptime_s": shared.metrics.uptime().as_secs(),
        "stopping": shared.shutting_down.load(Ordering::Relaxed),
        "cameras": cameras,
        "models": models,
        "failed": status::failed(shared),
        "counts": { "crossings": crossings, "occupancy": occupancy },
        "analytics": {
            "events": a.events.load(Ordering::Relaxed),
            "suppressed": a.suppressed.load(Ordering::Relaxed),
            "dropped": a.queue.dropped(),
            "write_errors": a.write_errors.load(Ordering::Relaxed),
        },
        "results": { "queued": shared.results.pushed(), "dropped": shared.results.dropped() },
        "recent_events": { "held": d.recent.len(), "dropped": d.recent.dropped() },
        "processes": cpu.sample(&procs, now),
    })
}
