//! Rules on synthetic tracks through the whole pure core (tracker included).

use super::*;
use crate::config::analytics::TrackerSettings;
use crate::config::analytics::{CameraAnalytics as Rules, LineConfig, ZoneConfig};
use proptest::prelude::*;

const MS: u64 = 1_000_000;
/// 5 fps.
const STEP_MS: u64 = 200;
/// Unix ms of the first frame: the start of an interval.
const T0_UNIX: u64 = 1_700_000_040_000;

fn rules(cooldown: Option<f64>) -> Rules {
    Rules {
        model: None,
        presence_events: true,
        tracker: TrackerSettings::default(),
        lines: vec![LineConfig {
            name: "door".into(),
            from: [0.1, 0.5],
            to: [0.9, 0.5],
            classes: vec!["person".into()],
            min_score: 0.0,
            hysteresis: 0.02,
            anchor: Anchor::BottomCenter,
            cooldown_s: cooldown,
        }],
        zones: vec![ZoneConfig {
            name: "queue".into(),
            polygon: vec![[0.6, 0.6], [0.95, 0.6], [0.95, 0.95], [0.6, 0.95]],
            classes: vec![],
            min_score: 0.0,
            hysteresis: 0.01,
            anchor: Anchor::BottomCenter,
            loiter_s: Some(10.0),
            cooldown_s: cooldown,
        }],
    }
}

fn person(x: f32, bottom: f32) -> Detection {
    Detection {
        class_id: 0,
        class_name: "person".into(),
        confidence: 0.9,
        bbox: [x, bottom - 0.15, x + 0.06, bottom],
    }
}

struct Run {
    a: StreamAnalytics,
    frame: u64,
    events: Vec<Event>,
    rows: Vec<CountRow>,
    ids: Vec<Vec<Option<u64>>>,
}

impl Run {
    fn new(r: &Rules) -> Self {
        Self {
            a: StreamAnalytics::new("cam", "m", r, 15.0, 60, tracker::id_source()),
            frame: 0,
            events: Vec::new(),
            rows: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// One frame, `STEP_MS` after the last.
    fn frame(&mut self, dets: &[Detection]) {
        self.at(self.frame * STEP_MS, dets);
        self.frame += 1;
    }

    fn at(&mut self, t_ms: u64, dets: &[Detection]) {
        let out = self.a.process(&FrameIn {
            capture_ts_ns: 1_000 * MS + t_ms * MS,
            capture_unix_ms: T0_UNIX + t_ms,
            frame_id: t_ms,
            frame: None,
            detections: dets,
        });
        self.events.extend(out.events);
        self.rows.extend(out.rows);
        self.ids.push(out.track_ids);
    }

    fn gap(&mut self, frames: u64) {
        for _ in 0..frames {
            self.frame(&[]);
        }
    }

    fn totals(&mut self) -> BTreeMap<(String, String), (u64, u64)> {
        let mut rows = self.rows.clone();
        rows.extend(self.a.finish());
        totals(&rows)
    }

    fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }
}

fn door(t: &BTreeMap<(String, String), (u64, u64)>) -> (u64, u64) {
    t.get(&("door".into(), "person".into()))
        .copied()
        .unwrap_or((0, 0))
}

/// Walking speed: 0.025 of the frame height per frame at 5 fps (a person crosses the
/// frame in 8 s), the boxes of two frames overlap about 70 %.
const STEP: f32 = 0.025;

/// A person walking vertically at x from `y0` to `y1` (bottom edge) at [`STEP`]; the
/// `_n` is ignored (kept for readability of the calls).
fn walk(r: &mut Run, x: f32, y0: f32, y1: f32, _n: u32) {
    let n = ((y1 - y0).abs() / STEP).round().max(1.0) as u32;
    for i in 0..=n {
        r.frame(&[person(x, y0 + (y1 - y0) * i as f32 / n as f32)]);
    }
}

/// Like [`walk`], at given times from `t_ms`, one frame every `STEP_MS`.
fn walk_at(r: &mut Run, t_ms: u64, x: f32, y0: f32, y1: f32) -> u64 {
    let n = ((y1 - y0).abs() / STEP).round().max(1.0) as u64;
    for i in 0..=n {
        r.at(
            t_ms + i * STEP_MS,
            &[person(x, y0 + (y1 - y0) * i as f32 / n as f32)],
        );
    }
    t_ms + n * STEP_MS
}

#[test]
fn crossings_in_both_directions_count_once_each() {
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.3, 0.2, 0.8, 12); // down: in
    walk(&mut r, 0.3, 0.8, 0.2, 12); // back up: out (same track)
    let t = r.totals();
    assert_eq!(door(&t), (1, 1));
    assert_eq!(t[&("door".to_string(), "*".to_string())], (1, 1));
    let crossed: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.kind == EventKind::LineCrossed)
        .map(|e| e.direction.unwrap())
        .collect();
    assert_eq!(crossed, vec![Direction::In, Direction::Out]);
}

#[test]
fn jitter_on_the_line_and_stopping_on_it_count_nothing_until_it_leaves() {
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.3, 0.3, 0.5, 4);
    for i in 0..20 {
        let y = 0.5 + if i % 2 == 0 { 0.012 } else { -0.012 };
        r.frame(&[person(0.3, y)]);
    }
    for _ in 0..10 {
        r.frame(&[person(0.3, 0.5)]); // stands on the line
    }
    assert_eq!(door(&r.totals()), (0, 0));
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.3, 0.3, 0.5, 4);
    for _ in 0..10 {
        r.frame(&[person(0.3, 0.5)]);
    }
    walk(&mut r, 0.3, 0.5, 0.7, 4);
    assert_eq!(door(&r.totals()), (1, 0));
}

#[test]
fn occlusion_gaps_shorter_and_longer_than_max_age() {
    // 1 s gap (< 1.5 s): the same track, which crosses during the gap: counted once.
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.3, 0.3, 0.45, 3);
    r.gap(5); // hidden while it walks 0.475 ..= 0.575
    walk(&mut r, 0.3, 0.6, 0.7, 3);
    assert_eq!(door(&r.totals()), (1, 0));
    assert_eq!(r.count(EventKind::ObjectAppeared), 1);
    assert_eq!(r.count(EventKind::ObjectLeft), 0);
    // 3 s gap (> 1.5 s): the track ends, a new one starts below the line: the crossing
    // is lost (documented) and the new track has a new id.
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.3, 0.3, 0.45, 3);
    r.gap(15);
    walk(&mut r, 0.3, 0.85, 0.9, 3);
    assert_eq!(door(&r.totals()), (0, 0));
    assert_eq!(r.count(EventKind::ObjectLeft), 1);
    let ids: BTreeSet<u64> = r.ids.iter().flatten().flatten().copied().collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn two_tracks_crossing_each_other_and_the_line() {
    // One walks down-right, one down-left; their paths cross above the line.
    let mut r = Run::new(&rules(Some(0.0)));
    for i in 0..=14 {
        let f = i as f32 / 14.0;
        r.frame(&[
            person(0.3 + 0.3 * f, 0.2 + 0.6 * f),
            person(0.6 - 0.3 * f, 0.25 + 0.6 * f),
        ]);
    }
    assert_eq!(door(&r.totals()), (2, 0));
    let ids: BTreeSet<u64> = r.ids.iter().flatten().flatten().copied().collect();
    assert_eq!(ids.len(), 2, "no id switch: {ids:?}");
}

#[test]
fn a_crossing_made_before_confirmation_counts_once_confirmed() {
    // Seen on the old side with a high score, crossing with a low one (ByteTrack's
    // second stage confirms it), then past the line: one crossing, not lost to
    // min_hits. The real footage has this walker (frames 71, 76, 81).
    let mut r = Run::new(&rules(Some(0.0)));
    r.frame(&[person(0.3, 0.44)]);
    r.frame(&[Detection {
        confidence: 0.35,
        ..person(0.3, 0.47)
    }]);
    r.frame(&[person(0.3, 0.53)]);
    r.frame(&[person(0.3, 0.56)]);
    assert_eq!(door(&r.totals()), (1, 0));
    // A track that dies unconfirmed counts nothing.
    let mut r = Run::new(&Rules {
        tracker: TrackerSettings {
            min_hits: 3,
            ..TrackerSettings::default()
        },
        ..rules(Some(0.0))
    });
    r.frame(&[person(0.3, 0.46)]);
    r.frame(&[person(0.3, 0.54)]);
    r.gap(1);
    assert_eq!(door(&r.totals()), (0, 0));
}

#[test]
fn zone_enter_dwell_loiter_exit() {
    let mut r = Run::new(&rules(Some(0.0)));
    walk(&mut r, 0.7, 0.4, 0.8, 4); // crosses the door too, enters the zone
    for _ in 0..60 {
        r.frame(&[person(0.7, 0.8)]); // 12 s inside
    }
    walk(&mut r, 0.7, 0.8, 0.4, 4); // leaves
    assert_eq!(r.count(EventKind::ZoneEnter), 1);
    assert_eq!(r.count(EventKind::Loitering), 1);
    let exit = r
        .events
        .iter()
        .find(|e| e.kind == EventKind::ZoneExit)
        .unwrap();
    // Inside from y > 0.61 on the way in (frame 9 of 16: 1.4 s to y = 0.8), 12 s
    // standing, out at y < 0.59 on the way back (frame 9 of 16: 1.8 s): 15.2..15.4 s.
    assert!(
        (15_000..=15_600).contains(&exit.dwell_ms.unwrap()),
        "{exit:?}"
    );
    let mut rows = r.rows.clone();
    rows.extend(r.a.finish());
    let t = totals(&rows);
    assert_eq!(t[&("queue".to_string(), "*".to_string())], (1, 1));
    let peak = rows
        .iter()
        .filter(|x| x.rule == "queue" && x.class == "*")
        .filter_map(|x| x.occupancy_peak)
        .max();
    assert_eq!(peak, Some(1));
}

#[test]
fn a_track_ending_inside_a_zone_exits_it() {
    let mut r = Run::new(&rules(Some(0.0)));
    for _ in 0..5 {
        r.frame(&[person(0.7, 0.8)]);
    }
    r.gap(10);
    assert_eq!(r.count(EventKind::ZoneEnter), 1);
    assert_eq!(r.count(EventKind::ZoneExit), 1);
    assert_eq!(
        r.a.process(&FrameIn {
            capture_ts_ns: 10_000 * MS,
            capture_unix_ms: T0_UNIX + 9_000,
            frame_id: 0,
            frame: None,
            detections: &[]
        })
        .occupancy,
        vec![("queue".to_string(), 0)]
    );
}

#[test]
fn cooldown_suppresses_events_but_never_counts() {
    // 5 people cross, 2 s apart, with a 15 s cooldown: 5 counted, 1 event (the first),
    // then after the cooldown the next event reports the 4 suppressed.
    let mut r = Run::new(&rules(None));
    for k in 0..5 {
        let x = 0.12 + 0.1 * k as f32;
        walk_at(&mut r, k * 2_000, x, 0.4, 0.6);
    }
    walk_at(&mut r, 16_000, 0.2, 0.4, 0.6);
    let t = r.totals();
    assert_eq!(door(&t), (6, 0));
    let crossed: Vec<&Event> = r
        .events
        .iter()
        .filter(|e| e.kind == EventKind::LineCrossed)
        .collect();
    assert_eq!(crossed.len(), 2);
    assert_eq!(crossed[0].suppressed, 0);
    assert_eq!(crossed[1].suppressed, 4);
}

#[test]
fn intervals_split_counts_by_capture_time() {
    let mut r = Run::new(&rules(Some(0.0)));
    walk_at(&mut r, 0, 0.3, 0.4, 0.6);
    r.at(60_000, &[]);
    walk_at(&mut r, 60_200, 0.5, 0.6, 0.4);
    let mut rows = r.rows.clone();
    rows.extend(r.a.finish());
    let door_rows: Vec<_> = rows
        .iter()
        .filter(|x| x.rule == "door" && x.class == "*")
        .collect();
    assert_eq!(door_rows.len(), 2);
    assert_eq!(
        (door_rows[0].start_ms, door_rows[0].in_, door_rows[0].out),
        (T0_UNIX, 1, 0)
    );
    assert_eq!(
        (door_rows[1].start_ms, door_rows[1].in_, door_rows[1].out),
        (T0_UNIX + 60_000, 0, 1)
    );
}

#[test]
fn reload_keeps_tracks_and_unchanged_rules() {
    let r0 = rules(Some(0.0));
    let mut r = Run::new(&r0);
    walk(&mut r, 0.3, 0.3, 0.45, 3);
    let mut r1 = r0.clone();
    r1.zones[0].loiter_s = Some(99.0);
    r.a.set_rules(&r1, 15.0, 60);
    walk(&mut r, 0.3, 0.46, 0.7, 3);
    assert_eq!(
        door(&r.totals()),
        (1, 0),
        "the line's state survived the reload"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// However a monotone walk across the line is sampled into frames (any subset
    /// of its positions, with the gaps below the max age), it counts exactly once.
    #[test]
    fn counts_do_not_depend_on_frame_chunking(
        keep in proptest::collection::vec(any::<bool>(), 40),
        x in 0.15f32..0.8,
        up in any::<bool>(),
    ) {
        let mut r = Run::new(&rules(Some(0.0)));
        let n = keep.len();
        let mut last_kept = 0usize;
        for (i, k) in keep.iter().enumerate() {
            // Always keep both ends and never skip more than 3 in a row (0.8 s).
            if !(*k || i == 0 || i == n - 1 || i - last_kept >= 4) {
                continue;
            }
            last_kept = i;
            let f = i as f32 / (n - 1) as f32;
            let y = if up { 0.8 - 0.5 * f } else { 0.3 + 0.5 * f };
            r.at(i as u64 * 50, &[person(x, y)]);
        }
        let (i, o) = door(&r.totals());
        prop_assert_eq!((i, o), if up { (0, 1) } else { (1, 0) });
    }

    /// Track ids are unique per camera: streams of one camera sharing an id source
    /// never hand out one id twice, whatever their detections.
    #[test]
    fn track_ids_are_unique_per_camera(
        frames in proptest::collection::vec(proptest::collection::vec((0.0f32..0.9, 0.2f32..1.0, 0.0f32..1.0), 0..6), 1..40),
    ) {
        let ids = tracker::id_source();
        let r = rules(Some(0.0));
        let mut a = StreamAnalytics::new("cam", "m1", &r, 0.0, 60, ids.clone());
        let mut b = StreamAnalytics::new("cam", "m2", &r, 0.0, 60, ids);
        let mut owner: BTreeMap<u64, &str> = BTreeMap::new();
        for (i, dets) in frames.iter().enumerate() {
            let dets: Vec<Detection> = dets.iter().map(|&(x, y, s)| Detection { confidence: s, ..person(x, y) }).collect();
            for (name, s) in [("m1", &mut a), ("m2", &mut b)] {
                let out = s.process(&FrameIn { capture_ts_ns: i as u64 * 200 * MS, capture_unix_ms: T0_UNIX, frame_id: i as u64, frame: None, detections: &dets });
                let mut seen = BTreeSet::new();
                for id in out.track_ids.iter().flatten() {
                    prop_assert!(seen.insert(*id), "id {} twice in one frame", id);
                    prop_assert_eq!(*owner.entry(*id).or_insert(name), name);
                }
            }
        }
    }
}

use std::collections::BTreeSet;
