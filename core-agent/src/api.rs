//! The HTTP status and control API (axum), bound to loopback.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /health` | 200 while the process runs: `status` (`ok`, `degraded` while a broker is away or a file sink cannot write, `stopping`), `brokers`, `sinks` (each file sink: `sink`, `kind`, `state`, `reason` and `since_unix_ms` while degraded, `written`, `lost`, `failures`; see [`crate::sinks`]), `uptime_s`, `failed`, `clips` |
//! | `GET /ready` | 200 when every running kernel and every model server is ready, else 503 with the list |
//! | `GET /cameras`, `GET /cameras/{id}` | state, fps decoded and inferred, missed, stale, latency per subscription |
//! | `POST /cameras` | add a camera: `{"camera": {...}, "subscriptions": [{"model", "fps", "classes"}]}`, validated like the config file; 201, 400 with every problem, 409 if the id exists |
//! | `POST /cameras/{id}/start`, `POST /cameras/{id}/stop` | start or stop its kernel and agent |
//! | `DELETE /cameras/{id}` | stop and forget it |
//! | `GET /models`, `GET /models/{id}` | state, restarts, last error, latency percentiles |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /cameras/{id}/snapshot.jpg`, `GET /cameras/{id}/stream.mjpeg?fps=` | live view: the newest frame with boxes, track ids, lines and zones drawn, as a JPEG or an MJPEG stream (see [`crate::live::http`]) |
//! | `GET /events/{id}/clip.mp4` | the event's clip (`video/mp4`, streamed; one `Range` gives 206) once written; 404 with a JSON error while it is recorded, when it failed or has none |
//! | `GET /counts?camera=&from=&to=&interval=` | analytics counts per interval (closed intervals; `from`/`to` Unix ms, default the last 24 h; `interval` seconds, a multiple of `[analytics] interval_s`), with totals across cameras |
//!
//! Connections are capped (`[api] max_connections`, one more gets 503) and must send
//! their headers, or their next request, within `[api] header_timeout_s`; see
//! [`listener`].
//!
//! Every request passes [`auth::guard`]: a loopback `Host`, no foreign `Origin`, JSON
//! bodies only, and a bearer token for everything but `GET /health`, `/ready` and
//! `/metrics`. Camera sources are shown with their credentials redacted.

pub mod auth;
pub mod listener;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{CameraConfig, SubscriptionConfig};
use crate::status;
use crate::system::{Command, ControlError, Shared};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

/// Body of `POST /cameras`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCamera {
    /// The camera, with the same fields as a `[[cameras]]` entry.
    pub camera: CameraConfig,
    /// Its subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<NewSubscription>,
}

/// A subscription of a camera added through the API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Model id.
    pub model: String,
    /// Target rate.
    pub fps: f64,
    /// Class filter.
    #[serde(default)]
    pub classes: Vec<String>,
    /// In-flight limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// The API's routes, behind `guard`.
pub fn router(shared: Arc<Shared>, commands: mpsc::Sender<Command>, guard: auth::Guard) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/cameras", get(list_cameras).post(add_camera))
        .route("/cameras/{id}", get(get_camera).delete(remove_camera))
        .route("/cameras/{id}/start", post(start_camera))
        .route("/cameras/{id}/stop", post(stop_camera))
        .route("/models", get(list_models))
        .route("/models/{id}", get(get_model))
        .route("/metrics", get(metrics))
        .route("/counts", get(counts))
        .route("/cameras/{id}/snapshot.jpg", get(live_snapshot))
        .route("/cameras/{id}/stream.mjpeg", get(live_stream))
        .route("/events/{id}/clip.mp4", get(event_clip))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .with_state(AppState { shared, commands })
}

/// Serves `router` on `listener` until `shutdown` turns true, under `limits` (a cap on
/// connections, a header deadline: see [`listener`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: listener::Limits,
    stats: Arc<listener::ConnectionStats>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    listener::serve(listener, router, limits, stats, shutdown).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn health(State(st): State<AppState>) -> Response {
    let stopping = st.shared.shutting_down.load(Ordering::Relaxed);
    // A broker away degrades, never fails, the agent: still 200 (see crate::outputs).
    // So does a file sink that cannot write (disk full): each says why (crate::sinks).
    let sinks = st.shared.metrics.sinks.reports();
    let degraded = !st.shared.brokers.all_connected() || sinks.iter().any(|s| s.state != "ok");
    Json(json!({
        "status": if stopping { "stopping" } else if degraded { "degraded" } else { "ok" },
        "brokers": st.shared.brokers.reports(),
        "sinks": sinks,
        "uptime_s": st.shared.metrics.uptime().as_secs(),
        // Processes given up on, and when each is tried again.
        "failed": status::failed(&st.shared),
        "clips": st.shared.clips.as_ref().map(|c| c.health()),
    }))
    .into_response()
}

async fn ready(State(st): State<AppState>) -> Response {
    let (ok, waiting) = status::readiness(&st.shared);
    let ok = ok && !st.shared.shutting_down.load(Ordering::Relaxed);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "ready": ok, "waiting": waiting }))).into_response()
}

async fn list_cameras(State(st): State<AppState>) -> Response {
    Json(status::cameras(&st.shared)).into_response()
}

async fn get_camera(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match status::cameras(&st.shared).into_iter().find(|c| c.id == id) {
        Some(c) => Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no camera {id:?}")),
    }
}

async fn list_models(State(st): State<AppState>) -> Response {
    Json(status::models(&st.shared)).into_response()
}

async fn get_model(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match status::models(&st.shared).into_iter().find(|m| m.id == id) {
        Some(m) => Json(m).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no model {id:?}")),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        status::prometheus(&st.shared),
    )
        .into_response()
}

/// Query of `GET /counts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    /// Camera id; all cameras if absent.
    pub camera: Option<String>,
    /// From, Unix ms (inclusive). Default: 24 h before `to`.
    pub from: Option<u64>,
    /// To, Unix ms (exclusive). Default: now.
    pub to: Option<u64>,
    /// Interval in seconds to merge into. Default: as stored.
    pub interval: Option<u64>,
}

async fn counts(
    State(st): State<AppState>,
    q: Result<axum::extract::Query<CountsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid query: {e}")),
    };
    let to =
        q.to.unwrap_or_else(|| crate::clock::UnixNanos::now().get() / 1_000_000 + 1);
    let from = q.from.unwrap_or(to.saturating_sub(86_400_000));
    if from > to {
        return error(StatusCode::BAD_REQUEST, "from is after to");
    }
    if q.interval.is_some_and(|i| !(1..=86_400 * 31).contains(&i)) {
        return error(
            StatusCode::BAD_REQUEST,
            "interval must be 1..=2678400 seconds",
        );
    }
    let buckets = st
        .shared
        .analytics
        .query(q.camera.as_deref(), from, to, q.interval);
    Json(json!({ "from": from, "to": to, "intervals": buckets })).into_response()
}

async fn send(
    st: &AppState,
    make: impl FnOnce(oneshot::Sender<Result<(), ControlError>>) -> Command,
) -> Result<(), ControlError> {
    if st.shared.shutting_down.load(Ordering::Relaxed) {
        return Err(ControlError::ShuttingDown);
    }
    let (tx, rx) = oneshot::channel();
    st.commands
        .send(make(tx))
        .await
        .map_err(|_| ControlError::ShuttingDown)?;
    rx.await.map_err(|_| ControlError::ShuttingDown)?
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        ControlError::Exists(_) => error(StatusCode::CONFLICT, e.to_string()),
        ControlError::ShuttingDown => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        ControlError::Invalid(errs) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": errs.to_string(),
                "problems": errs.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

async fn add_camera(State(st): State<AppState>, body: Bytes) -> Response {
    let req: AddCamera = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    // The source is checked (scheme, media directories, control characters) and a
    // file path canonicalized by the system, with the rest of the validation.
    let camera = req.camera;
    let id = camera.id.clone();
    let subscriptions = req
        .subscriptions
        .into_iter()
        .map(|s| SubscriptionConfig {
            camera: id.clone(),
            model: s.model,
            fps: s.fps,
            classes: s.classes,
            max_in_flight: s.max_in_flight,
        })
        .collect();
    match send(&st, |reply| Command::AddCamera {
        camera: Box::new(camera),
        subscriptions,
        reply,
    })
    .await
    {
        Ok(()) => {
            let cam = status::cameras(&st.shared).into_iter().find(|c| c.id == id);
            (StatusCode::CREATED, Json(cam)).into_response()
        }
        Err(e) => control_error(e),
    }
}

async fn start_camera(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match send(&st, |reply| Command::StartCamera {
        id: id.clone(),
        reply,
    })
    .await
    {
        Ok(()) => Json(json!({ "camera": id, "running": true })).into_response(),
        Err(e) => control_error(e),
    }
}

async fn stop_camera(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match send(&st, |reply| Command::StopCamera {
        id: id.clone(),
        reply,
    })
    .await
    {
        Ok(()) => Json(json!({ "camera": id, "running": false })).into_response(),
        Err(e) => control_error(e),
    }
}

async fn remove_camera(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match send(&st, |reply| Command::RemoveCamera {
        id: id.clone(),
        reply,
    })
    .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => control_error(e),
    }
}

async fn live_snapshot(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    crate::live::http::snapshot(st.shared, id).await
}

async fn live_stream(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<
        axum::extract::Query<crate::live::http::StreamQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let q = q
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| e.to_string());
    crate::live::http::stream(st.shared, id, q).await
}

/// `GET /events/{id}/clip.mp4`: the clip, once written, streamed (Range supported).
async fn event_clip(
    State(st): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: axum::http::HeaderMap,
) -> Response {
    match id {
        Ok(Path(id)) => crate::clips::http::serve(st.shared.clips.clone(), id, &headers).await,
        Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid event id: {e}")),
    }
}
