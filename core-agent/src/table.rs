//! The live table printed to stdout: one row per (camera, model) with decoded and
//! inferred fps, missed slots, stale frames, people in the latest result and latency.

use std::fmt::Write as _;

use crate::status::{CameraStatus, ModelStatus};

/// Renders the table.
pub fn render(
    cameras: &[CameraStatus],
    models: &[ModelStatus],
    api: std::net::SocketAddr,
    uptime_s: u64,
    results: u64,
    dropped: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "framebus  http://{api}  up {uptime_s}s  results {results}  dropped {dropped}"
    );
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:>7} {:<12} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}",
        "CAMERA",
        "STATE",
        "DEC/s",
        "MODEL",
        "TARGET",
        "INF/s",
        "MISSED",
        "STALE",
        "PEOPLE",
        "P50 ms",
        "P95 ms"
    );
    for c in cameras {
        if c.subscriptions.is_empty() {
            let _ = writeln!(
                out,
                "{:<12} {:<12} {:>7.1} {:<12}",
                trunc(&c.id, 12),
                trunc(&c.state, 12),
                c.fps_decoded,
                "-"
            );
        }
        for s in &c.subscriptions {
            let _ = writeln!(
                out,
                "{:<12} {:<12} {:>7.1} {:<12} {:>6.1} {:>6.1} {:>6} {:>6} {:>6} {:>8.1} {:>8.1}",
                trunc(&c.id, 12),
                trunc(&c.state, 12),
                c.fps_decoded,
                trunc(&s.model, 12),
                s.target_fps,
                s.fps_inferred,
                s.missed,
                s.stale,
                s.people,
                s.latency_ms.p50,
                s.latency_ms.p90.max(s.latency_ms.p50),
            );
        }
    }
    for m in models {
        let _ = write!(
            out,
            "model {:<12} {:<8} restarts {:<3} p50 {:.1} ms",
            trunc(&m.id, 12),
            m.state.as_str(),
            m.server.restarts,
            m.stats.round_trip_ms.p50
        );
        if let Some(e) = m
            .server
            .last_error
            .as_ref()
            .filter(|_| m.state.as_str() != "ready")
        {
            let _ = write!(out, "  ({})", trunc(e, 100));
        }
        out.push('\n');
    }
    out
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['~']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Pct, RingView, SubSnapshot};

    #[test]
    fn one_row_per_subscription() {
        let cam = CameraStatus {
            id: "lobby".into(),
            source: "x.mp4".into(),
            state: "live".into(),
            running: true,
            kernel: None,
            last_error: None,
            last_error_unix_ms: None,
            ring: RingView::default(),
            fps_decoded: 25.0,
            frames_seen: 100,
            wakeups: 100,
            motion_skipped: 0,
            decode: Default::default(),
            subscriptions: vec![SubSnapshot {
                model: "yolov8n".into(),
                target_fps: 5.0,
                fps_inferred: 4.8,
                people: 3,
                latency_ms: Pct {
                    count: 10,
                    p50: 41.0,
                    p90: 55.0,
                    p99: 60.0,
                    max: 61.0,
                },
                ..SubSnapshot::default()
            }],
        };
        let t = render(&[cam], &[], "127.0.0.1:7878".parse().unwrap(), 12, 60, 0);
        assert!(
            t.starts_with("framebus  http://127.0.0.1:7878  up 12s"),
            "{t}"
        );
        let row = t.lines().nth(2).unwrap();
        assert!(row.starts_with("lobby"), "{t}");
        for want in ["live", "25.0", "yolov8n", "4.8", "41.0", "55.0"] {
            assert!(row.contains(want), "{want} missing in {row}");
        }
        assert_eq!(trunc("abcdefghijklmnop", 5), "abcd~");
    }
}
