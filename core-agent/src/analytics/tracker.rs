//! A small ByteTrack-style multi-object tracker.
//!
//! Per frame: every live track predicts its box with a constant-velocity alpha-beta
//! filter (time-based, so a skipped frame or an uneven rate does not fool it); then
//! 1. detections scoring at least `high_score` are matched to all live tracks,
//! 2. detections between `low_score` and `high_score` are matched to the tracks
//!    still unmatched (ByteTrack's second stage: a person half hidden behind another
//!    keeps its id instead of being dropped; unlike ByteTrack, tentative tracks take
//!    part too, because at 5 fps a walker scoring 0.6, 0.35, 0.7 in three frames
//!    would otherwise be confirmed only after it crossed the line),
//!
//! both greedily by descending IoU between predicted track box and detection (same
//! class, IoU at least `match_iou`). Unmatched high-score detections start tentative
//! tracks; a tentative track is confirmed after `min_hits` matches in a row and dies
//! on its first miss; a confirmed track unmatched for longer than `max_age_ms` dies
//! (`object_left`). Ids come from one counter per camera and are never reused.
//!
//! Greedy matching instead of the Hungarian algorithm: at the rates and densities this
//! runs at (a few to a few dozen people at 5 fps) the two agree except in rare ties,
//! and greedy is a dozen lines with no dependency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::geometry::{iou, BBox};

/// Tracker settings (`[cameras.analytics.tracker]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSettings {
    /// Detections at or above this score are matched first and may start tracks.
    /// Default `0.5`.
    pub high_score: f32,
    /// Detections below this score are ignored; between `low_score` and `high_score`
    /// they only keep existing tracks alive. Default `0.1`.
    pub low_score: f32,
    /// Least IoU between a track's predicted box and a detection to match them.
    /// Default `0.2` (at 5 fps a walking person moves a good part of its width).
    pub match_iou: f32,
    /// A confirmed track unmatched for longer than this is ended. Default `1500` ms.
    pub max_age_ms: u64,
    /// Matches in a row before a track is confirmed (gets an id in the records and
    /// counts in rules). Default `2`.
    pub min_hits: u32,
    /// Most live tracks per (camera, model); detections beyond it start no track.
    /// Default `256`.
    pub max_tracks: usize,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            high_score: 0.5,
            low_score: 0.1,
            match_iou: 0.2,
            max_age_ms: 1_500,
            min_hits: 2,
            max_tracks: 256,
        }
    }
}

/// One detection handed to the tracker.
#[derive(Debug, Clone, PartialEq)]
pub struct DetIn<'a> {
    /// Class name.
    pub class: &'a str,
    /// Score.
    pub score: f32,
    /// Box, normalised.
    pub bbox: BBox,
}

/// A track as rules and events see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackView {
    /// Track id (unique per camera for the process's lifetime).
    pub id: u64,
    /// Class name.
    pub class: String,
    /// Score of the last matched detection.
    pub score: f32,
    /// Box of the last matched detection.
    pub bbox: BBox,
    /// When it was last matched, monotonic ns.
    pub last_seen_ns: u64,
}

#[derive(Debug, Clone)]
struct Track {
    view: TrackView,
    /// Filtered box state (cx, cy, w, h) and its velocity per second.
    state: [f32; 4],
    vel: [f32; 4],
    hits: u32,
    confirmed: bool,
}

/// Output of one [`Tracker::update`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrackUpdate {
    /// Per input detection: its confirmed track's id, `None` if it is not (yet) part
    /// of one.
    pub ids: Vec<Option<u64>>,
    /// Tracks matched in this frame and confirmed (including the new ones).
    pub seen: Vec<TrackView>,
    /// Tracks confirmed in this frame (`object_appeared`).
    pub appeared: Vec<TrackView>,
    /// Confirmed tracks ended in this frame (`object_left`), with their last state.
    pub left: Vec<TrackView>,
    /// Tentative tracks matched in this frame (rules follow them so that a crossing
    /// made before confirmation is not lost; it counts once the track is confirmed).
    pub tentative: Vec<TrackView>,
    /// Tentative tracks that died unconfirmed in this frame.
    pub dropped: Vec<u64>,
}

/// Shared id counter of one camera: every (camera, model) tracker of that camera draws
/// from it, so ids are unique per camera for the process's lifetime.
pub type IdSource = Arc<AtomicU64>;

/// A new id source starting at 1.
pub fn id_source() -> IdSource {
    Arc::new(AtomicU64::new(1))
}

/// The tracker of one (camera, model) stream.
#[derive(Debug)]
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    ids: IdSource,
    last_ns: Option<u64>,
}

fn to_state(b: &BBox) -> [f32; 4] {
    [
        (b[0] + b[2]) * 0.5,
        (b[1] + b[3]) * 0.5,
        b[2] - b[0],
        b[3] - b[1],
    ]
}

fn to_box(s: &[f32; 4]) -> BBox {
    let (hw, hh) = (s[2].max(0.0) * 0.5, s[3].max(0.0) * 0.5);
    [s[0] - hw, s[1] - hh, s[0] + hw, s[1] + hh]
}

/// Alpha-beta gains: trust the detection's position, learn velocity slowly.
const ALPHA: f32 = 0.85;
const BETA: f32 = 0.3;

impl Track {
    fn predicted(&self, dt_s: f32) -> BBox {
        let mut s = self.state;
        for (x, v) in s.iter_mut().zip(self.vel) {
            *x += v * dt_s;
        }
        to_box(&s)
    }

    fn correct(&mut self, det: &DetIn<'_>, dt_s: f32, now_ns: u64) {
        let z = to_state(&det.bbox);
        for ((x, v), z) in self.state.iter_mut().zip(self.vel.iter_mut()).zip(z) {
            let pred = *x + *v * dt_s;
            let r = z - pred;
            *x = pred + ALPHA * r;
            if dt_s > 0.0 {
                *v += BETA * r / dt_s;
            }
        }
        // Sizes do not drift: no velocity on w and h.
        self.vel[2] = 0.0;
        self.vel[3] = 0.0;
        self.view.bbox = det.bbox;
        self.view.score = det.score;
        self.view.last_seen_ns = now_ns;
        self.hits = self.hits.saturating_add(1);
    }
}

impl Tracker {
    /// A tracker drawing ids from `ids`.
    pub fn new(settings: TrackerSettings, ids: IdSource) -> Self {
        Self {
            settings,
            tracks: Vec::new(),
            ids,
            last_ns: None,
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Replaces the settings (hot reload); live tracks are kept.
    pub fn set_settings(&mut self, settings: TrackerSettings) {
        self.settings = settings;
    }

    /// Live tracks (tentative ones included).
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// Ends every track now (stream stopped): returns the confirmed ones.
    pub fn end_all(&mut self) -> Vec<TrackView> {
        self.tracks
            .drain(..)
            .filter(|t| t.confirmed)
            .map(|t| t.view)
            .collect()
    }

    /// Feeds one frame captured at `now_ns` (the capture clock). Frames must come in capture
    /// order; an older or equal timestamp is treated as 1 ms after the last.
    pub fn update(&mut self, now_ns: u64, dets: &[DetIn<'_>]) -> TrackUpdate {
        let now_ns = match self.last_ns {
            Some(last) if now_ns <= last => last + 1_000_000,
            _ => now_ns,
        };
        self.last_ns = Some(now_ns);
        let s = &self.settings;
        let mut out = TrackUpdate {
            ids: vec![None; dets.len()],
            ..TrackUpdate::default()
        };
        let dt = |t: &Track| now_ns.saturating_sub(t.view.last_seen_ns) as f32 / 1e9;
        let predicted: Vec<BBox> = self.tracks.iter().map(|t| t.predicted(dt(t))).collect();
        let mut track_used = vec![false; self.tracks.len()];
        let mut det_track: Vec<Option<usize>> = vec![None; dets.len()];

        // Stage 1: high-score detections against every live track; stage 2: the
        // low-score ones against confirmed tracks left over.
        for stage in 0..2 {
            let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
            for (di, d) in dets.iter().enumerate() {
                let in_stage = if stage == 0 {
                    d.score >= s.high_score
                } else {
                    d.score >= s.low_score && d.score < s.high_score
                };
                if !in_stage {
                    continue;
                }
                for (ti, t) in self.tracks.iter().enumerate() {
                    if track_used[ti] || t.view.class != d.class {
                        continue;
                    }
                    let v = iou(&predicted[ti], &d.bbox);
                    if v >= s.match_iou {
                        pairs.push((v, di, ti));
                    }
                }
            }
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            for (_, di, ti) in pairs {
                if det_track[di].is_some() || track_used[ti] {
                    continue;
                }
                det_track[di] = Some(ti);
                track_used[ti] = true;
            }
        }

        for (di, ti) in det_track.iter().enumerate() {
            let Some(ti) = *ti else { continue };
            let t = &mut self.tracks[ti];
            let d = dt(t);
            t.correct(&dets[di], d, now_ns);
            if !t.confirmed && t.hits >= s.min_hits {
                t.confirmed = true;
                out.appeared.push(t.view.clone());
            }
            if t.confirmed {
                out.ids[di] = Some(t.view.id);
                out.seen.push(t.view.clone());
            } else {
                out.tentative.push(t.view.clone());
            }
        }

        // Unmatched tracks: tentative ones die at once, confirmed ones after max age.
        let max_age_ns = s.max_age_ms.saturating_mul(1_000_000);
        let mut keep = Vec::with_capacity(self.tracks.len());
        for (ti, t) in self.tracks.drain(..).enumerate() {
            let young = now_ns.saturating_sub(t.view.last_seen_ns) <= max_age_ns;
            if track_used[ti] || (t.confirmed && young) {
                keep.push(t);
            } else if t.confirmed {
                out.left.push(t.view);
            } else {
                out.dropped.push(t.view.id);
            }
        }
        self.tracks = keep;

        // New tracks from unmatched high-score detections.
        for (di, d) in dets.iter().enumerate() {
            if det_track[di].is_some() || d.score < s.high_score {
                continue;
            }
            if self.tracks.len() >= s.max_tracks {
                break;
            }
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut t = Track {
                view: TrackView {
                    id,
                    class: d.class.to_owned(),
                    score: d.score,
                    bbox: d.bbox,
                    last_seen_ns: now_ns,
                },
                state: to_state(&d.bbox),
                vel: [0.0; 4],
                hits: 1,
                confirmed: false,
            };
            if s.min_hits <= 1 {
                t.confirmed = true;
                out.ids[di] = Some(id);
                out.appeared.push(t.view.clone());
                out.seen.push(t.view.clone());
            }
            self.tracks.push(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn det(x: f32, y: f32, score: f32) -> DetIn<'static> {
        DetIn {
            class: "person",
            score,
            bbox: [x, y, x + 0.1, y + 0.2],
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerSettings::default(), id_source())
    }

    #[test]
    fn a_steady_object_keeps_one_id_after_min_hits() {
        let mut t = tracker();
        let u = t.update(0, &[det(0.1, 0.1, 0.9)]);
        assert_eq!(u.ids, vec![None], "tentative after one hit");
        let mut ids = Vec::new();
        for i in 1..20u64 {
            let u = t.update(i * 200 * MS, &[det(0.1 + i as f32 * 0.02, 0.1, 0.9)]);
            if i == 1 {
                assert_eq!(u.appeared.len(), 1);
            }
            ids.push(u.ids[0].unwrap());
        }
        assert!(ids.iter().all(|&i| i == ids[0]));
    }

    #[test]
    fn occlusion_shorter_than_max_age_keeps_the_id_longer_ends_it() {
        let mut t = tracker();
        for i in 0..3u64 {
            t.update(i * 200 * MS, &[det(0.2, 0.2, 0.9)]);
        }
        let id = t.update(600 * MS, &[det(0.2, 0.2, 0.9)]).ids[0].unwrap();
        // 1.2 s gap (< 1.5 s max age): same id.
        let u = t.update(1_800 * MS, &[det(0.2, 0.2, 0.9)]);
        assert_eq!(u.ids[0], Some(id));
        assert!(u.left.is_empty());
        // Nothing for 1.6 s: the track ends, the object comes back with a new id.
        let u = t.update(3_400 * MS, &[]);
        assert_eq!(u.left.len(), 1);
        assert_eq!(u.left[0].id, id);
        t.update(3_600 * MS, &[det(0.2, 0.2, 0.9)]);
        let u = t.update(3_800 * MS, &[det(0.2, 0.2, 0.9)]);
        assert!(u.ids[0].unwrap() > id);
    }

    #[test]
    fn low_score_detections_keep_a_track_alive_but_start_none() {
        let mut t = tracker();
        t.update(0, &[det(0.3, 0.3, 0.9)]);
        let id = t.update(200 * MS, &[det(0.3, 0.3, 0.9)]).ids[0].unwrap();
        for i in 2..20u64 {
            let u = t.update(i * 200 * MS, &[det(0.3, 0.3, 0.3)]);
            assert_eq!(u.ids[0], Some(id));
        }
        let mut fresh = tracker();
        for i in 0..5u64 {
            let u = fresh.update(i * 200 * MS, &[det(0.3, 0.3, 0.3)]);
            assert_eq!(u.ids[0], None);
        }
        assert_eq!(fresh.live(), 0);
    }

    #[test]
    fn two_tracks_crossing_each_other_keep_their_ids() {
        // One walks right, one walks left on the same row; they overlap mid-way. The
        // motion model carries each through the overlap.
        let mut t = tracker();
        let mut first: Option<(u64, u64)> = None;
        for i in 0..15u64 {
            let a = det(0.05 + i as f32 * 0.06, 0.4, 0.9);
            let b = det(0.85 - i as f32 * 0.06, 0.4, 0.9);
            let u = t.update(i * 200 * MS, &[a, b]);
            if let (Some(x), Some(y)) = (u.ids[0], u.ids[1]) {
                match first {
                    None => first = Some((x, y)),
                    Some(f) => assert_eq!((x, y), f, "frame {i}"),
                }
            }
        }
        assert!(first.is_some());
    }

    #[test]
    fn classes_never_share_a_track_and_ids_are_unique() {
        let ids = id_source();
        let mut a = Tracker::new(TrackerSettings::default(), ids.clone());
        let mut b = Tracker::new(TrackerSettings::default(), ids);
        let car = DetIn {
            class: "car",
            ..det(0.1, 0.1, 0.9)
        };
        for i in 0..3u64 {
            let ua = a.update(i * 200 * MS, &[det(0.1, 0.1, 0.9), car.clone()]);
            let ub = b.update(i * 200 * MS, &[det(0.1, 0.1, 0.9)]);
            if i > 0 {
                let mut all = vec![ua.ids[0].unwrap(), ua.ids[1].unwrap(), ub.ids[0].unwrap()];
                all.sort();
                all.dedup();
                assert_eq!(all.len(), 3);
            }
        }
    }

    #[test]
    fn max_tracks_bounds_the_state() {
        let mut t = Tracker::new(
            TrackerSettings {
                max_tracks: 4,
                ..TrackerSettings::default()
            },
            id_source(),
        );
        let dets: Vec<DetIn<'_>> = (0..10).map(|i| det(i as f32 * 0.09, 0.1, 0.9)).collect();
        t.update(0, &dets);
        assert_eq!(t.live(), 4);
    }
}
