//! The two endpoints, called by the API's router (behind its auth guard).
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /cameras/{id}/snapshot.jpg` | `image/jpeg`, the newest frame with its overlay; headers `X-Frame-Id`, `X-Ring-Generation`, `X-Result-Frame-Id` (the newest result drawn, absent when none) |
//! | `GET /cameras/{id}/stream.mjpeg?fps=` | `multipart/x-mixed-replace; boundary=framebus-frame`, one `image/jpeg` part per frame with `Content-Length` and the same `X-*` headers; `fps` defaults to `[live] fps` and is capped to `[live] max_fps` |
//!
//! Errors are JSON `{"error": ...}`: unknown camera 404; camera not running, ring not
//! readable yet, viewer cap or snapshot cap reached, shutting down 503; bad query 400.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use shm_ring::RingReader;
use tokio::time::Instant;

use super::hub::{self, Feed, Viewer};
use super::{Jpeg, LiveError, Target};
use crate::system::Shared;

/// The multipart boundary of MJPEG streams.
pub const BOUNDARY: &str = "framebus-frame";

/// Query of `GET /cameras/{id}/stream.mjpeg`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Frames per second; default `[live] fps`, capped to `[live] max_fps`.
    pub fps: Option<f64>,
}

/// The HTTP answer for `e`.
pub fn error_response(e: &LiveError) -> Response {
    let code = match e {
        LiveError::UnknownCamera(_) => StatusCode::NOT_FOUND,
        LiveError::Thread { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(json!({ "error": e.to_string() }))).into_response()
}

fn frame_headers(j: &Jpeg) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("X-Frame-Id", j.frame_id.to_string()),
        ("X-Ring-Generation", j.generation.to_string()),
    ];
    if let Some(r) = j.result_frame_id {
        h.push(("X-Result-Frame-Id", r.to_string()));
    }
    h
}

/// `GET /cameras/{id}/snapshot.jpg`.
pub async fn snapshot(shared: Arc<Shared>, id: String) -> Response {
    match snapshot_jpeg(&shared, &id).await {
        Ok(j) => {
            let mut r = (
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                j.data.clone(),
            )
                .into_response();
            for (k, v) in frame_headers(&j) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().insert(k, v);
                }
            }
            r
        }
        Err(e) => error_response(&e),
    }
}

async fn snapshot_jpeg(shared: &Arc<Shared>, id: &str) -> Result<Jpeg, LiveError> {
    let target = Target::of(shared, id)?;
    let live = shared.live.clone();
    let permit = live
        .snapshots
        .clone()
        .try_acquire_owned()
        .map_err(|_| LiveError::Busy(super::MAX_SNAPSHOTS))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let reader =
            RingReader::open(&live.ring_dir, &target.ring).map_err(|source| LiveError::Ring {
                camera: target.camera.clone(),
                source,
            })?;
        live.render(&reader, &target, &mut Vec::new(), &mut Vec::new())
            .map_err(|source| LiveError::Frame {
                camera: target.camera.clone(),
                source,
            })
    })
    .await
    .unwrap_or(Err(LiveError::ShuttingDown))
}

/// One multipart part: boundary, headers, the JPEG, CRLF.
pub fn part(j: &Jpeg) -> Bytes {
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n",
        j.data.len()
    );
    for (k, v) in frame_headers(j) {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let mut out = Vec::with_capacity(head.len() + j.data.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&j.data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

struct StreamState {
    viewer: Viewer,
    next: Option<Instant>,
    first: bool,
}

/// `GET /cameras/{id}/stream.mjpeg`.
pub async fn stream(
    shared: Arc<Shared>,
    id: String,
    query: Result<StreamQuery, String>,
) -> Response {
    let q = match query {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("invalid query: {e}") })),
            )
                .into_response()
        }
    };
    let fps = shared.live.settings.rate(q.fps);
    let viewer = match hub::join(&shared, &id, fps) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let period = hub::period(viewer.fps);
    let state = StreamState {
        viewer,
        next: None,
        first: true,
    };
    let frames = futures_util::stream::unfold(state, move |mut st| async move {
        if let Some(t) = st.next {
            tokio::time::sleep_until(t).await;
        }
        loop {
            let fresh = st.first || st.viewer.feed.has_changed().unwrap_or(false);
            if !fresh && st.viewer.feed.changed().await.is_err() {
                return None;
            }
            st.first = false;
            let feed = st.viewer.feed.borrow_and_update().clone();
            match feed {
                Feed::Frame(j) => {
                    st.next = Some(Instant::now() + period);
                    return Some((Ok::<Bytes, Infallible>(part(&j)), st));
                }
                Feed::Gone(_) => return None,
                Feed::Waiting => {}
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}
