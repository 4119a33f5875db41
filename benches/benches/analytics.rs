//! Tracker + rules per frame per camera at 20 tracks (issue 12): one
//! [`StreamAnalytics::process`] call with 20 walking people, two lines and two zones.
//! Goal: ≤ 0.1 ms per frame, so analytics never shows next to inference in
//! `bench live`. Also measured in the same run: the tracker alone, for the ratio.
//!
//! `cargo bench -p benches --bench analytics -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use core_agent::analytics::tracker::{id_source, DetIn, Tracker, TrackerSettings};
use core_agent::analytics::{FrameIn, StreamAnalytics};
use core_agent::config::analytics::{CameraAnalytics, LineConfig, ZoneConfig};
use criterion::Criterion;
use proto_schema::message::Detection;

const TRACKS: usize = 20;

fn frame(i: u64) -> Vec<Detection> {
    (0..TRACKS)
        .map(|k| {
            // Each walks its own column, down and back, 0.02 of the frame per frame.
            let x = 0.02 + 0.048 * k as f32;
            let phase = ((i + k as u64 * 7) % 80) as f32;
            let y = 0.2 + 0.02 * if phase < 40.0 { phase } else { 80.0 - phase };
            Detection {
                class_id: 0,
                class_name: "person".into(),
                confidence: 0.6 + 0.01 * (k % 30) as f32,
                bbox: [x, y - 0.15, x + 0.04, y],
            }
        })
        .collect()
}

fn rules() -> CameraAnalytics {
    let line = |name: &str, y: f32| LineConfig {
        name: name.into(),
        from: [0.05, y],
        to: [0.95, y],
        classes: vec!["person".into()],
        min_score: 0.0,
        hysteresis: 0.01,
        anchor: Default::default(),
        cooldown_s: None,
    };
    let zone = |name: &str, x: f32| ZoneConfig {
        name: name.into(),
        polygon: vec![
            [x, 0.3],
            [x + 0.4, 0.3],
            [x + 0.4, 0.8],
            [x + 0.2, 0.9],
            [x, 0.8],
        ],
        classes: vec![],
        min_score: 0.0,
        hysteresis: 0.01,
        anchor: Default::default(),
        loiter_s: Some(30.0),
        cooldown_s: None,
    };
    CameraAnalytics {
        model: None,
        presence_events: true,
        tracker: TrackerSettings::default(),
        lines: vec![line("a", 0.45), line("b", 0.7)],
        zones: vec![zone("left", 0.05), zone("right", 0.5)],
    }
}

fn bench(c: &mut Criterion) {
    let frames: Vec<Vec<Detection>> = (0..400).map(frame).collect();
    let mut g = c.benchmark_group("analytics_20_tracks");
    let mut a = StreamAnalytics::new("cam", "m", &rules(), 15.0, 60, id_source());
    let mut i = 0u64;
    g.bench_function("tracker_and_rules", |b| {
        b.iter(|| {
            let dets = &frames[(i % 400) as usize];
            let out = a.process(&FrameIn {
                capture_ts_ns: i * 200_000_000,
                capture_unix_ms: 1_700_000_000_000 + i * 200,
                frame_id: i,
                frame: None,
                detections: dets,
            });
            i += 1;
            black_box(out)
        })
    });
    let mut t = Tracker::new(TrackerSettings::default(), id_source());
    let mut j = 0u64;
    g.bench_function("tracker_only", |b| {
        b.iter(|| {
            let dets: Vec<DetIn<'_>> = frames[(j % 400) as usize]
                .iter()
                .map(|d| DetIn {
                    class: &d.class_name,
                    score: d.confidence,
                    bbox: d.bbox,
                })
                .collect();
            let out = t.update(j * 200_000_000, &dets);
            j += 1;
            black_box(out)
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
