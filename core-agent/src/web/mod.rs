//! The web dashboard: a page served at `/` on the API listener, every asset embedded
//! in the binary (plain HTML, CSS and JavaScript modules in `web/assets/`, no build
//! step), and the endpoints it lives on:
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /`, `GET /assets/{file}` | the page (no token: it holds no data), with a strict Content-Security-Policy |
//! | `POST /login` | `{"token": "..."}` → a login cookie (see [`session`]); 401 for a wrong token |
//! | `GET /session` | `{"logged_in": bool}` (no token needed, so the page can ask without an error) |
//! | `POST /logout` | ends the session of the cookie sent |
//! | `GET /events?camera=&type=&limit=` | the recent events (JSON array, newest first; `limit` default 100) |
//! | `GET /events/stream` | Server-Sent Events: `event` (one per analytics event), `status` (cameras, models, counts, processes, every `status_interval_s`), `lagged` (events skipped by a slow reader) |
//!
//! Every data endpoint passes the API's guard ([`crate::api::auth`]); the page's
//! `EventSource`, `<img>` and `<video>` requests authenticate with the session cookie,
//! which [`session::cookie_to_bearer`] turns into the bearer token before the guard.
//! Streams are bounded (`[dashboard] max_streams`, one more is 503), send keep-alive
//! comments on quiet connections, end after `stream_max_s` (the browser reconnects)
//! and end at shutdown.

pub mod procs;
pub mod recent;
pub mod session;
mod sse;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

pub use recent::{RecentEvents, RecentSink};
pub use session::Sessions;

use crate::api::auth::{self, Guard};
use crate::config::dashboard::DashboardSettings;
use crate::system::Shared;

/// The Content-Security-Policy of every dashboard answer: scripts, styles, images,
/// media and connections from this origin only; no inline script or style, no
/// framing, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; media-src 'self'; connect-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

/// The embedded files: (name under `/assets/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/chart.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// Everything the dashboard's handlers share.
#[derive(Debug, Clone)]
pub struct Dashboard {
    settings: DashboardSettings,
    socket_dir: std::path::PathBuf,
    shared: Arc<Shared>,
    recent: Arc<RecentEvents>,
    sessions: Arc<Sessions>,
    guard: Guard,
    shutdown: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    status: watch::Sender<Arc<str>>,
}

impl Dashboard {
    /// The dashboard of `shared` under `settings`, its events from `recent`, its logins
    /// checked against `guard`'s token, the model servers' sockets in `socket_dir`;
    /// streams end when `shutdown` turns true. Starts the status task (it works only
    /// while a stream is open).
    pub fn start(
        settings: DashboardSettings,
        socket_dir: std::path::PathBuf,
        shared: Arc<Shared>,
        recent: Arc<RecentEvents>,
        guard: Guard,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let sessions = Arc::new(Sessions::new(
            Arc::new(crate::clock::SystemClock),
            Duration::from_secs(settings.session_ttl_s),
            settings.max_sessions,
        ));
        let (status, _) = watch::channel(Arc::<str>::from(""));
        let d = Self {
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            settings,
            socket_dir,
            shared,
            recent,
            sessions,
            guard,
            shutdown,
            status,
        };
        tokio::spawn(sse::status_task(d.clone()));
        d
    }
}

/// `api` (the API's router) with the dashboard's routes added, and the session cookie
/// honoured on every route (see [`session`]).
pub fn attach(api: Router, d: Dashboard) -> Router {
    let guarded = Router::new()
        .route("/events", get(events))
        .route("/events/stream", get(sse::stream))
        .layer(axum::middleware::from_fn_with_state(
            d.guard.clone(),
            auth::guard,
        ));
    let mut public = Router::new()
        .route("/login", axum::routing::post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/session", get(session_info));
    if d.settings.enabled {
        public = public
            .route("/", get(index))
            .route("/assets/{file}", get(asset));
    }
    let public = public.layer(axum::middleware::from_fn_with_state(
        d.guard.clone(),
        public_guard,
    ));
    let cookie = session::CookieAuth {
        sessions: d.sessions.clone(),
        token: d.guard.token.clone(),
    };
    api.merge(guarded.merge(public).with_state(d))
        .layer(axum::middleware::from_fn_with_state(
            cookie,
            session::cookie_to_bearer,
        ))
}

/// The API guard's `Host` and `Origin` rules, without its token rule: the page and
/// its assets hold no data, and `POST /login` is where the token is given.
async fn public_guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    // An open probe's rules are exactly Host and Origin (GET of an open path needs no
    // token and carries no body); the JSON rule of `POST /login` is its extractor's.
    match auth::check(&guard, &Method::GET, auth::OPEN_PATHS[0], req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Headers of every page and asset answer.
fn page_headers(content_type: &'static str, etag: &str) -> [(header::HeaderName, HeaderValue); 7] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        // Embedded files change only with the binary: revalidate by ETag every time.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// A strong ETag of `bytes` (FNV-1a, 64 bits: a cache key, not a security check).
fn etag_of(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{h:016x}\"")
}

fn serve_embedded(
    headers: &HeaderMap,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: &str,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, page_headers(content_type, etag)).into_response();
    }
    (page_headers(content_type, etag), bytes).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| etag_of(INDEX));
    serve_embedded(&headers, "text/html; charset=utf-8", INDEX, tag)
}

async fn asset(headers: HeaderMap, Path(file): Path<String>) -> Response {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| ASSETS.iter().map(|(_, _, b)| etag_of(b)).collect());
    match ASSETS.iter().position(|(name, _, _)| *name == file) {
        Some(i) => serve_embedded(&headers, ASSETS[i].1, ASSETS[i].2, &tags[i]),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no asset {file:?}") })),
        )
            .into_response(),
    }
}

/// Body of `POST /login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The API token.
    pub token: String,
}

async fn login(
    State(d): State<Dashboard>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return (e.status(), Json(json!({ "error": e.body_text() }))).into_response(),
    };
    match d.sessions.login(&d.guard.token, &body.token) {
        Ok(id) => (
            [(
                header::SET_COOKIE,
                session::set_cookie(&id, d.sessions.ttl()),
            )],
            Json(json!({ "ok": true, "ttl_s": d.sessions.ttl().as_secs() })),
        )
            .into_response(),
        Err(e @ session::LoginError::WrongToken) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn session_info(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    let logged_in = session::from_own_page(&headers)
        && session::cookie(&headers).is_some_and(|id| d.sessions.valid(id));
    let mut resp = Json(json!({ "logged_in": logged_in })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn logout(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(id) = session::cookie(&headers) {
        d.sessions.logout(id);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie())],
    )
        .into_response()
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this camera.
    pub camera: Option<String>,
    /// Only this event type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// At most this many, `1..=[dashboard] recent_events`; default 100.
    pub limit: Option<usize>,
}

async fn events(
    State(d): State<Dashboard>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("invalid query: {e}") })),
            )
                .into_response()
        }
    };
    let max = d.settings.recent_events;
    let limit = q.limit.unwrap_or(100.min(max));
    if !(1..=max).contains(&limit) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("limit must be 1..={max}") })),
        )
            .into_response();
    }
    let f = recent::Filter {
        camera: q.camera.filter(|c| !c.is_empty()),
        kind: q.kind.filter(|k| !k.is_empty()),
        limit,
    };
    let list = d.recent.query(&f);
    Json(list.iter().map(|e| &**e).collect::<Vec<_>>()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_the_page_names_only_embedded_ones() {
        let page = std::str::from_utf8(INDEX).unwrap();
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name}");
        }
        // Every /assets/ reference of the page and the scripts resolves.
        for text in std::iter::once(page).chain(
            ASSETS
                .iter()
                .filter(|(n, _, _)| n.ends_with(".js"))
                .map(|(_, _, b)| std::str::from_utf8(b).unwrap()),
        ) {
            for part in text.split("/assets/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "{name} is referenced but not embedded"
                );
            }
        }
        // No inline script: the CSP would block it.
        assert!(!page.contains("<script>"), "inline script in index.html");
        assert!(!page.contains(" style="), "inline style in index.html");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn etags_differ_by_content() {
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        assert_eq!(etag_of(b"a"), etag_of(b"a"));
    }
}
