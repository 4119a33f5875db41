//! `GET /events/{id}/clip.mp4`: streams the clip file from disk (never read whole into
//! memory), with `Content-Length`, `Accept-Ranges: bytes` and single-range requests
//! (`Range: bytes=a-b`, `a-`, `-n`) answered `206` so a browser's `<video>` can seek.
//!
//! The id is checked against the event id alphabet before anything touches the disk
//! ([`super::valid_id`]), the clip must be a regular file reached through real folders
//! ([`super::real_clip`]) and is opened with `O_NOFOLLOW` ([`super::open_clip`]): a
//! symlink planted in the clip tree is never followed. Every refusal is a JSON
//! `{"error": ...}` with a 4xx status.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{open_clip, real_clip, valid_id, ClipState, Clips};

/// Read size of the streamed body.
const CHUNK: usize = 64 << 10;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A byte range to serve, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte.
    pub end: u64,
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: the whole file, `200`. Multi-range and non-`bytes` units
    /// are answered this way too (allowed by RFC 9110).
    Full,
    /// One satisfiable range: `206`.
    Partial(ByteRange),
    /// A syntactically valid range outside the file: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header value for a file of `len` bytes.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            None => return RangeRequest::Full,
        },
        (s, "") => match num(s) {
            Some(s) => (s, len.saturating_sub(1)),
            None => return RangeRequest::Full,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return RangeRequest::Full,
        },
    };
    if len == 0 || start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(ByteRange { start, end })
}

/// Answers `GET /events/{id}/clip.mp4`.
pub async fn serve(clips: Option<Arc<Clips>>, id: String, headers: &HeaderMap) -> Response {
    if !valid_id(&id) {
        let shown: String = id.chars().take(80).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid event id {shown:?}: 1..=64 characters of 0-9 a-f and -"),
        );
    }
    let Some(clips) = clips else {
        return error(
            StatusCode::NOT_FOUND,
            "clips are off ([clips] cameras is empty)",
        );
    };
    let lookup = id.clone();
    let root = clips.settings().dir.clone();
    let opened = tokio::task::spawn_blocking(move || match clips.state_of(&lookup) {
        ClipState::Ready(p) if real_clip(&root, &p) => {
            let f = open_clip(&p)?;
            let len = f.metadata()?.len();
            Ok(Some((f, len)))
        }
        ClipState::Ready(_) => Err(std::io::Error::other("not a regular file")),
        ClipState::Recording => Ok(None),
        ClipState::Missing => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
    })
    .await;
    let (file, len) = match opened {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("clip of event {id} is being recorded; try again after its post-roll"),
            )
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, format!("no clip for event {id}"))
        }
        Ok(Err(e)) => return error(StatusCode::NOT_FOUND, format!("clip of event {id}: {e}")),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("clip of event {id}: {e}"),
            )
        }
    };
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        RangeRequest::Unsatisfiable => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("clip of event {id} has {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("clip of event {id}: {e}"),
            );
        }
    }
    // The clip is immutable once renamed into place; `take` keeps the body to the
    // length announced even if it were appended to.
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(count),
        CHUNK,
    ));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let p = |s, e| Partial(ByteRange { start: s, end: e });
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), p(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), p(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), p(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), p(0, 99));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), p(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        for full in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=9-1",
            "bytes=x-",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(Some(full), 100), Full, "{full}");
        }
    }
}
