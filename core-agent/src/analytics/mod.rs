//! Analytics on the result stream: tracks, line crossings, zones, events with a
//! cooldown, counts over time.
//!
//! The pure core is [`StreamAnalytics`]: one per (camera, model) stream, fed one
//! result record's detections at a time, with time taken from the record (capture
//! time), never from a clock, so every rule is unit-tested on synthetic tracks.
//! [`stage::AnalyticsStage`] runs it on the result path, in the result dispatcher
//! thread before the sinks (see its docs for ordering and overflow), and
//! [`sink`] writes events (`events.jsonl`) and counts (daily CSV) on its own thread.
//!
//! Modules: [`geometry`] (boxes, IoU, segments, polygons), [`tracker`] (ByteTrack-style
//! tracker), [`line`](mod@line) (crossings with hysteresis), [`zone`] (presence, dwell,
//! loitering), [`events`] (event records, cooldown), [`counts`] (intervals, CSV,
//! `GET /counts`).

pub mod counts;
pub mod events;
pub mod geometry;
pub mod line;
pub mod sink;
pub mod stage;
pub mod tracker;
pub mod zone;

use std::collections::BTreeMap;

use proto_schema::message::{Detection, FrameRef};

use crate::config::analytics::CameraAnalytics as RulesConfig;
use counts::{Aggregator, CountRow, RuleKind};
use events::{Cooldown, Event, EventKind};
use geometry::{Anchor, Point};
use line::{Direction, LineCounter};
use tracker::{DetIn, IdSource, TrackView, Tracker};
use zone::{ZoneChange, ZoneCounter};

/// Rule name of `object_appeared` / `object_left` events.
pub const PRESENCE_RULE: &str = "presence";

#[derive(Debug, Clone)]
struct Filter {
    name: String,
    classes: Vec<String>,
    min_score: f32,
    anchor: Anchor,
    cooldown_ns: u64,
}

impl Filter {
    fn admits(&self, t: &TrackView) -> bool {
        t.score >= self.min_score && (self.classes.is_empty() || self.classes.contains(&t.class))
    }
}

#[derive(Debug, Clone)]
struct LineRule {
    filter: Filter,
    counter: LineCounter,
    key: String,
}

#[derive(Debug, Clone)]
struct ZoneRule {
    filter: Filter,
    counter: ZoneCounter,
    key: String,
}

/// One frame's input.
#[derive(Debug, Clone, Copy)]
pub struct FrameIn<'a> {
    /// Capture time, CLOCK_REALTIME (Unix) ns.
    pub capture_ts_ns: u64,
    /// Capture time, Unix ms.
    pub capture_unix_ms: u64,
    /// Frame id.
    pub frame_id: u64,
    /// Frame reference, if the record has one.
    pub frame: Option<&'a FrameRef>,
    /// The detections.
    pub detections: &'a [Detection],
}

/// A counted line crossing (for the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// Rule name.
    pub rule: String,
    /// Direction.
    pub direction: Direction,
    /// Class.
    pub class: String,
}

/// One frame's output.
#[derive(Debug, Default, Clone)]
pub struct FrameOut {
    /// Per detection: its confirmed track id.
    pub track_ids: Vec<Option<u64>>,
    /// Events that passed the cooldown.
    pub events: Vec<Event>,
    /// Closed count intervals.
    pub rows: Vec<CountRow>,
    /// Line crossings counted in this frame.
    pub crossings: Vec<Crossing>,
    /// Every zone's occupancy after this frame.
    pub occupancy: Vec<(String, usize)>,
    /// Events suppressed by the cooldown in this frame.
    pub suppressed: u64,
}

/// The analytics of one (camera, model) stream.
#[derive(Debug)]
pub struct StreamAnalytics {
    camera: String,
    model: String,
    tracker: Tracker,
    lines: Vec<LineRule>,
    zones: Vec<ZoneRule>,
    presence: Option<u64>,
    cooldown: Cooldown,
    counts: Aggregator,
    interval_s: u64,
    /// Crossings made by tentative tracks: (line index, direction), counted when the
    /// track is confirmed, forgotten if it dies unconfirmed.
    pending: std::collections::HashMap<u64, Vec<(usize, Direction)>>,
}

fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

impl StreamAnalytics {
    /// The analytics of `camera`'s `model` stream under `rules`; `default_cooldown_s`
    /// and `interval_s` come from `[analytics]`; ids from the camera's `ids`.
    pub fn new(
        camera: &str,
        model: &str,
        rules: &RulesConfig,
        default_cooldown_s: f64,
        interval_s: u64,
        ids: IdSource,
    ) -> Self {
        let mut s = Self {
            camera: camera.to_owned(),
            model: model.to_owned(),
            tracker: Tracker::new(rules.tracker.clone(), ids),
            lines: Vec::new(),
            zones: Vec::new(),
            presence: None,
            cooldown: Cooldown::default(),
            counts: Aggregator::new(camera, model, interval_s),
            interval_s,
            pending: std::collections::HashMap::new(),
        };
        s.set_rules(rules, default_cooldown_s, interval_s);
        s
    }

    /// Replaces the rules (hot reload). Tracks live on; a rule whose definition did not
    /// change keeps its per-track state; the open interval is closed (rows returned).
    pub fn set_rules(
        &mut self,
        rules: &RulesConfig,
        default_cooldown_s: f64,
        interval_s: u64,
    ) -> Vec<CountRow> {
        let rows = self.counts.close();
        self.pending.clear();
        if interval_s != self.interval_s {
            self.counts = Aggregator::new(&self.camera, &self.model, interval_s);
            self.interval_s = interval_s;
        }
        self.tracker.set_settings(rules.tracker.clone());
        let cd = |c: Option<f64>| secs_to_ns(c.unwrap_or(default_cooldown_s));
        let mut old_lines = std::mem::take(&mut self.lines);
        for l in &rules.lines {
            let key = format!("{l:?}");
            let kept = old_lines
                .iter()
                .position(|o| o.key == key)
                .map(|i| old_lines.swap_remove(i));
            self.lines.push(kept.unwrap_or_else(|| LineRule {
                filter: Filter {
                    name: l.name.clone(),
                    classes: l.classes.clone(),
                    min_score: l.min_score,
                    anchor: l.anchor,
                    cooldown_ns: cd(l.cooldown_s),
                },
                counter: LineCounter::new(l.from.into(), l.to.into(), l.hysteresis),
                key,
            }));
        }
        let mut old_zones = std::mem::take(&mut self.zones);
        for z in &rules.zones {
            let key = format!("{z:?}");
            let kept = old_zones
                .iter()
                .position(|o| o.key == key)
                .map(|i| old_zones.swap_remove(i));
            self.zones.push(kept.unwrap_or_else(|| ZoneRule {
                filter: Filter {
                    name: z.name.clone(),
                    classes: z.classes.clone(),
                    min_score: z.min_score,
                    anchor: z.anchor,
                    cooldown_ns: cd(z.cooldown_s),
                },
                counter: ZoneCounter::new(
                    z.polygon.iter().map(|&p| Point::from(p)).collect(),
                    z.hysteresis,
                    z.loiter_s.map(secs_to_ns),
                ),
                key,
            }));
        }
        self.presence = rules
            .presence_events
            .then(|| secs_to_ns(default_cooldown_s));
        let names: Vec<String> = self
            .lines
            .iter()
            .map(|l| l.filter.name.clone())
            .chain(self.zones.iter().map(|z| z.filter.name.clone()))
            .chain(std::iter::once(PRESENCE_RULE.to_owned()))
            .collect();
        self.cooldown.retain_rules(|r| names.iter().any(|n| n == r));
        rows
    }

    /// Processes one frame's detections.
    pub fn process(&mut self, f: &FrameIn<'_>) -> FrameOut {
        let mut out = FrameOut::default();
        let rule_list: Vec<(&str, RuleKind)> = self
            .lines
            .iter()
            .map(|l| (l.filter.name.as_str(), RuleKind::Line))
            .chain(
                self.zones
                    .iter()
                    .map(|z| (z.filter.name.as_str(), RuleKind::Zone)),
            )
            .collect();
        out.rows = self.counts.begin_frame(f.capture_unix_ms, &rule_list);

        let low = self.tracker.settings().low_score;
        let mut index = Vec::with_capacity(f.detections.len());
        let dets: Vec<DetIn<'_>> = f
            .detections
            .iter()
            .enumerate()
            .filter(|(_, d)| d.confidence >= low)
            .map(|(i, d)| {
                index.push(i);
                DetIn {
                    class: &d.class_name,
                    score: d.confidence,
                    bbox: d.bbox,
                }
            })
            .collect();
        let upd = self.tracker.update(f.capture_ts_ns, &dets);
        out.track_ids = vec![None; f.detections.len()];
        for (k, id) in upd.ids.iter().enumerate() {
            out.track_ids[index[k]] = *id;
        }

        let mut ev = Emitter {
            f,
            camera: &self.camera,
            model: &self.model,
            cooldown: &mut self.cooldown,
            out: &mut out,
        };
        for t in &upd.left {
            for z in &mut self.zones {
                if let Some(ZoneChange::Exit { dwell_ns }) = z.counter.forget(t.id, t.last_seen_ns)
                {
                    self.counts
                        .crossing(&z.filter.name, RuleKind::Zone, &t.class, Direction::Out);
                    ev.emit(
                        EventKind::ZoneExit,
                        &z.filter.name,
                        z.filter.cooldown_ns,
                        t,
                        None,
                        Some(dwell_ns),
                    );
                }
            }
            for l in &mut self.lines {
                l.counter.forget(t.id);
            }
            if let Some(cd) = self.presence {
                ev.emit(EventKind::ObjectLeft, PRESENCE_RULE, cd, t, None, None);
            }
        }
        for id in &upd.dropped {
            self.pending.remove(id);
            for l in &mut self.lines {
                l.counter.forget(*id);
            }
        }
        for t in &upd.tentative {
            for (i, l) in self.lines.iter_mut().enumerate() {
                if l.filter.admits(t) {
                    if let Some(dir) = l.counter.observe(t.id, l.filter.anchor.of(&t.bbox)) {
                        self.pending.entry(t.id).or_default().push((i, dir));
                    }
                }
            }
        }
        for t in &upd.appeared {
            if let Some(cd) = self.presence {
                ev.emit(EventKind::ObjectAppeared, PRESENCE_RULE, cd, t, None, None);
            }
            for (i, dir) in self.pending.remove(&t.id).unwrap_or_default() {
                let Some(l) = self.lines.get(i) else { continue };
                self.counts
                    .crossing(&l.filter.name, RuleKind::Line, &t.class, dir);
                ev.out.crossings.push(Crossing {
                    rule: l.filter.name.clone(),
                    direction: dir,
                    class: t.class.clone(),
                });
                ev.emit(
                    EventKind::LineCrossed,
                    &l.filter.name,
                    l.filter.cooldown_ns,
                    t,
                    Some(dir),
                    None,
                );
            }
        }
        for t in &upd.seen {
            for l in &mut self.lines {
                if !l.filter.admits(t) {
                    continue;
                }
                if let Some(dir) = l.counter.observe(t.id, l.filter.anchor.of(&t.bbox)) {
                    self.counts
                        .crossing(&l.filter.name, RuleKind::Line, &t.class, dir);
                    ev.out.crossings.push(Crossing {
                        rule: l.filter.name.clone(),
                        direction: dir,
                        class: t.class.clone(),
                    });
                    ev.emit(
                        EventKind::LineCrossed,
                        &l.filter.name,
                        l.filter.cooldown_ns,
                        t,
                        Some(dir),
                        None,
                    );
                }
            }
            for z in &mut self.zones {
                if !z.filter.admits(t) {
                    continue;
                }
                let p = z.filter.anchor.of(&t.bbox);
                for change in z.counter.observe(t.id, &t.class, p, f.capture_ts_ns) {
                    let name = &z.filter.name;
                    let cd = z.filter.cooldown_ns;
                    match change {
                        ZoneChange::Enter => {
                            self.counts
                                .crossing(name, RuleKind::Zone, &t.class, Direction::In);
                            ev.emit(EventKind::ZoneEnter, name, cd, t, None, None);
                        }
                        ZoneChange::Exit { dwell_ns } => {
                            self.counts
                                .crossing(name, RuleKind::Zone, &t.class, Direction::Out);
                            ev.emit(EventKind::ZoneExit, name, cd, t, None, Some(dwell_ns));
                        }
                        ZoneChange::Loiter { dwell_ns } => {
                            ev.emit(EventKind::Loitering, name, cd, t, None, Some(dwell_ns));
                        }
                    }
                }
            }
        }
        for z in &self.zones {
            let by_class = z.counter.occupancy_by_class();
            self.counts.occupancy(&z.filter.name, &by_class);
            out.occupancy
                .push((z.filter.name.clone(), by_class.values().sum()));
        }
        out
    }

    /// Closes the open interval (shutdown).
    pub fn finish(&mut self) -> Vec<CountRow> {
        self.counts.close()
    }

    /// Live tracks.
    pub fn live_tracks(&self) -> usize {
        self.tracker.live()
    }
}

struct Emitter<'a, 'f> {
    f: &'a FrameIn<'f>,
    camera: &'a str,
    model: &'a str,
    cooldown: &'a mut Cooldown,
    out: &'a mut FrameOut,
}

impl Emitter<'_, '_> {
    fn emit(
        &mut self,
        kind: EventKind,
        rule: &str,
        cooldown_ns: u64,
        t: &TrackView,
        direction: Option<Direction>,
        dwell_ns: Option<u64>,
    ) {
        let Some(suppressed) = self
            .cooldown
            .admit(rule, kind, self.f.capture_ts_ns, cooldown_ns)
        else {
            self.out.suppressed += 1;
            return;
        };
        self.out.events.push(Event {
            id: events::next_id(),
            kind,
            camera: self.camera.to_owned(),
            model: self.model.to_owned(),
            rule: rule.to_owned(),
            track: t.id,
            class: t.class.clone(),
            score: t.score,
            bbox: t.bbox,
            direction,
            dwell_ms: dwell_ns.map(|d| d / 1_000_000),
            capture_ts_ns: self.f.capture_ts_ns,
            capture_unix_ms: self.f.capture_unix_ms,
            frame_id: self.f.frame_id,
            frame: self.f.frame.cloned(),
            suppressed,
            clip: None,
        });
    }
}

/// Sums `rows` per (rule, class) into (in, out) (test and report helper).
pub fn totals(rows: &[CountRow]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m = BTreeMap::new();
    for r in rows {
        let e = m.entry((r.rule.clone(), r.class.clone())).or_insert((0, 0));
        e.0 += r.in_;
        e.1 += r.out;
    }
    m
}

#[cfg(test)]
mod tests;
