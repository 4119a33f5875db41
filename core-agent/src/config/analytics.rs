//! Analytics settings: `[analytics]` (outputs, interval, default cooldown) and the
//! per-camera rules `[cameras.analytics]` (tracker, `[[cameras.analytics.lines]]`,
//! `[[cameras.analytics.zones]]`). Coordinates are normalised to the frame
//! (`0.0..=1.0`, origin top-left, y down), so rules survive a resolution change.
//! Validation lives in [`check`]; see `config/example.toml` for a full example.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::analytics::geometry::Anchor;
pub use crate::analytics::tracker::TrackerSettings;

use super::validate::ConfigError;
use super::{Config, OutputConfig};

/// `[analytics]`: where events and counts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// Events file (JSON Lines, appended). Default: `events.jsonl` next to the first
    /// `jsonl` output; none if there is no such output (events then still go into the
    /// result records).
    pub events_path: Option<PathBuf>,
    /// Directory of the daily counts files `counts-YYYY-MM-DD.csv` (UTC days).
    /// Default: the directory of the first `jsonl` output; none without one.
    pub counts_dir: Option<PathBuf>,
    /// Length of one counts interval in seconds, `1..=86400`, dividing a day evenly is
    /// not required (intervals align to the Unix epoch). Default `60`.
    pub interval_s: u64,
    /// Default cooldown per (camera, rule, event type) in seconds; `0` disables it.
    /// Default `15`.
    pub cooldown_s: f64,
    /// Capacity of the queue in front of the event and counts writers; when full the
    /// oldest entry is dropped and counted (`framebus_analytics_dropped_total`).
    /// Default `4096`.
    pub queue: usize,
    /// Counts rows kept in memory for `GET /counts` (oldest dropped first). Default
    /// `100000`.
    pub max_rows: usize,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            events_path: None,
            counts_dir: None,
            interval_s: 60,
            cooldown_s: 15.0,
            queue: 4096,
            max_rows: 100_000,
        }
    }
}

impl AnalyticsSettings {
    /// The events file: the setting, else `events.jsonl` beside the first jsonl output.
    pub fn events_file(&self, outputs: &[OutputConfig]) -> Option<PathBuf> {
        self.events_path
            .clone()
            .or_else(|| first_jsonl_dir(outputs).map(|d| d.join("events.jsonl")))
    }

    /// The counts directory: the setting, else the first jsonl output's directory.
    pub fn counts_directory(&self, outputs: &[OutputConfig]) -> Option<PathBuf> {
        self.counts_dir.clone().or_else(|| first_jsonl_dir(outputs))
    }
}

fn first_jsonl_dir(outputs: &[OutputConfig]) -> Option<PathBuf> {
    outputs.iter().find_map(|o| match o {
        OutputConfig::Jsonl { path } => path.parent().map(PathBuf::from),
        OutputConfig::Stdout => None,
    })
}

/// `[cameras.analytics]`: tracking and rules of one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraAnalytics {
    /// Only this subscription's model feeds the analytics. Default: every
    /// subscription of the camera (each tracked and counted separately).
    #[serde(default)]
    pub model: Option<String>,
    /// Whether `object_appeared` / `object_left` events are raised (rule name
    /// `presence`). Default `true`.
    #[serde(default = "yes")]
    pub presence_events: bool,
    /// Tracker settings.
    #[serde(default)]
    pub tracker: TrackerSettings,
    /// Counting lines.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Zones.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
}

fn yes() -> bool {
    true
}

/// One `[[cameras.analytics.lines]]` entry: a segment crossed `in` or `out`.
///
/// `in` is a crossing from the left of `from -> to` to its right as seen on screen:
/// for a line drawn left to right, moving down the image; swap the ends to swap the
/// directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Rule name, unique per camera (same rule as ids).
    pub name: String,
    /// First end, `[x, y]`.
    pub from: [f32; 2],
    /// Second end, `[x, y]`.
    pub to: [f32; 2],
    /// Counted classes. Default: all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Observations scoring below this are ignored by the rule. Default `0.0`.
    #[serde(default)]
    pub min_score: f32,
    /// Band around the line, in normalised units, inside which a point is on neither
    /// side: jitter on the line does not count. `0.0..=0.25`, default `0.01`.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f32,
    /// Point of the box that crosses. Default `bottom_center`.
    #[serde(default)]
    pub anchor: Anchor,
    /// Cooldown of this rule's events in seconds. Default `[analytics] cooldown_s`.
    #[serde(default)]
    pub cooldown_s: Option<f64>,
}

/// One `[[cameras.analytics.zones]]` entry: a polygon with occupancy and dwell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Rule name, unique per camera (same rule as ids).
    pub name: String,
    /// Vertices `[[x, y], ...]`, at least 3, not self-intersecting.
    pub polygon: Vec<[f32; 2]>,
    /// Counted classes. Default: all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Observations scoring below this are ignored by the rule. Default `0.0`.
    #[serde(default)]
    pub min_score: f32,
    /// Distance from the edge, normalised, a point must go past to change between
    /// inside and outside. `0.0..=0.25`, default `0.01`.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f32,
    /// Point of the box that must be inside. Default `bottom_center`.
    #[serde(default)]
    pub anchor: Anchor,
    /// A `loitering` event when a track stays this long, seconds. Default: none.
    #[serde(default)]
    pub loiter_s: Option<f64>,
    /// Cooldown of this rule's events in seconds. Default `[analytics] cooldown_s`.
    #[serde(default)]
    pub cooldown_s: Option<f64>,
}

fn default_hysteresis() -> f32 {
    0.01
}

/// Rule classes must be one of the 80 COCO class names (what both test models and most
/// detectors answer) or named in one of the camera's subscription class filters (for
/// models with their own class names).
pub use proto_schema::coco::COCO80;

fn bad(errs: &mut Vec<ConfigError>, key: String, reason: impl Into<String>) {
    errs.push(ConfigError::InvalidRule {
        key,
        reason: reason.into(),
    });
}

fn in_unit(p: [f32; 2]) -> bool {
    p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v))
}

fn check_score(errs: &mut Vec<ConfigError>, key: String, v: f32) {
    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
        bad(errs, key, format!("{v} is not a score in 0.0..=1.0"));
    }
}

fn check_cooldown(errs: &mut Vec<ConfigError>, key: String, v: f64) {
    if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
        bad(
            errs,
            key,
            format!("{v} is not a number of seconds in 0..=86400"),
        );
    }
}

/// Checks `[analytics]` and every camera's rules; pushes one error per problem.
pub fn check(c: &Config, errs: &mut Vec<ConfigError>) {
    let a = &c.analytics;
    if !(1..=86_400).contains(&a.interval_s) {
        bad(
            errs,
            "analytics.interval_s".into(),
            format!("{} is not in 1..=86400", a.interval_s),
        );
    }
    check_cooldown(errs, "analytics.cooldown_s".into(), a.cooldown_s);
    if !(1..=1_000_000).contains(&a.queue) {
        bad(
            errs,
            "analytics.queue".into(),
            format!("{} is not in 1..=1000000", a.queue),
        );
    }
    if !(1..=10_000_000).contains(&a.max_rows) {
        bad(
            errs,
            "analytics.max_rows".into(),
            format!("{} is not in 1..=10000000", a.max_rows),
        );
    }
    for cam in &c.cameras {
        let Some(an) = &cam.analytics else { continue };
        let base = format!("cameras.{}.analytics", cam.id);
        let subs: Vec<_> = c.subscriptions_of(&cam.id).collect();
        if let Some(m) = &an.model {
            if !subs.iter().any(|s| &s.model == m) {
                bad(
                    errs,
                    format!("{base}.model"),
                    format!("camera {:?} has no subscription to model {m:?}", cam.id),
                );
            }
        }
        let t = &an.tracker;
        check_score(errs, format!("{base}.tracker.high_score"), t.high_score);
        check_score(errs, format!("{base}.tracker.low_score"), t.low_score);
        if t.low_score > t.high_score {
            bad(
                errs,
                format!("{base}.tracker.low_score"),
                format!("{} is above high_score {}", t.low_score, t.high_score),
            );
        }
        if !(t.match_iou.is_finite() && t.match_iou > 0.0 && t.match_iou <= 1.0) {
            bad(
                errs,
                format!("{base}.tracker.match_iou"),
                format!("{} is not in (0, 1]", t.match_iou),
            );
        }
        if !(1..=600_000).contains(&t.max_age_ms) {
            bad(
                errs,
                format!("{base}.tracker.max_age_ms"),
                format!("{} is not in 1..=600000", t.max_age_ms),
            );
        }
        if !(1..=100).contains(&t.min_hits) {
            bad(
                errs,
                format!("{base}.tracker.min_hits"),
                format!("{} is not in 1..=100", t.min_hits),
            );
        }
        if !(1..=10_000).contains(&t.max_tracks) {
            bad(
                errs,
                format!("{base}.tracker.max_tracks"),
                format!("{} is not in 1..=10000", t.max_tracks),
            );
        }
        let known = |class: &str| {
            COCO80.contains(&class) || subs.iter().any(|s| s.classes.iter().any(|k| k == class))
        };
        let mut names = std::collections::BTreeSet::new();
        let mut common = |errs: &mut Vec<ConfigError>,
                          key: &str,
                          name: &str,
                          classes: &[String],
                          min_score: f32,
                          hysteresis: f32,
                          cooldown: Option<f64>| {
            if !proto_schema::message::is_valid_name(name) {
                bad(
                    errs,
                    format!("{key}.name"),
                    format!("{name:?} breaks the name rule ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$"),
                );
            }
            if name == crate::analytics::PRESENCE_RULE || !names.insert(name.to_owned()) {
                bad(
                    errs,
                    format!("{key}.name"),
                    format!("{name:?} is used twice or reserved"),
                );
            }
            for cl in classes {
                if !known(cl) {
                    bad(errs, format!("{key}.classes"), format!("unknown class {cl:?} (not a COCO class nor in a subscription's classes of camera {:?})", cam.id));
                }
            }
            check_score(errs, format!("{key}.min_score"), min_score);
            if !(hysteresis.is_finite() && (0.0..=0.25).contains(&hysteresis)) {
                bad(
                    errs,
                    format!("{key}.hysteresis"),
                    format!("{hysteresis} is not in 0.0..=0.25"),
                );
            }
            if let Some(v) = cooldown {
                check_cooldown(errs, format!("{key}.cooldown_s"), v);
            }
        };
        for (i, l) in an.lines.iter().enumerate() {
            let key = format!("{base}.lines[{i}]");
            common(
                errs,
                &key,
                &l.name,
                &l.classes,
                l.min_score,
                l.hysteresis,
                l.cooldown_s,
            );
            for (end, p) in [("from", l.from), ("to", l.to)] {
                if !in_unit(p) {
                    bad(
                        errs,
                        format!("{key}.{end}"),
                        format!("{p:?} is outside the frame (0.0..=1.0)"),
                    );
                }
            }
            let len = ((l.to[0] - l.from[0]).powi(2) + (l.to[1] - l.from[1]).powi(2)).sqrt();
            if len.is_nan() || len <= 1e-3 {
                bad(
                    errs,
                    key.clone(),
                    format!(
                        "line {:?} has zero length ({:?} to {:?})",
                        l.name, l.from, l.to
                    ),
                );
            }
        }
        for (i, z) in an.zones.iter().enumerate() {
            let key = format!("{base}.zones[{i}]");
            common(
                errs,
                &key,
                &z.name,
                &z.classes,
                z.min_score,
                z.hysteresis,
                z.cooldown_s,
            );
            if z.polygon.len() < 3 || z.polygon.len() > 64 {
                bad(
                    errs,
                    format!("{key}.polygon"),
                    format!("{} vertices (need 3..=64)", z.polygon.len()),
                );
                continue;
            }
            if let Some(p) = z.polygon.iter().find(|p| !in_unit(**p)) {
                bad(
                    errs,
                    format!("{key}.polygon"),
                    format!("vertex {p:?} is outside the frame (0.0..=1.0)"),
                );
                continue;
            }
            let pts: Vec<_> = z.polygon.iter().map(|&p| p.into()).collect();
            if let Some((a, b)) = crate::analytics::geometry::self_intersection(&pts) {
                bad(
                    errs,
                    format!("{key}.polygon"),
                    format!("self-intersecting: edge {a} crosses edge {b}"),
                );
            } else if crate::analytics::geometry::polygon_area2(&pts).abs() < 1e-6 {
                bad(errs, format!("{key}.polygon"), "has no area");
            }
            if let Some(v) = z.loiter_s {
                if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                    bad(
                        errs,
                        format!("{key}.loiter_s"),
                        format!("{v} is not in (0, 86400]"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{validate, Config};

    const BASE: &str = r#"
        [[cameras]]
        id = "door"
        source = "rtsp://127.0.0.1/x"

        [[models]]
        id = "det"
        path = "/m.onnx"

        [[subscriptions]]
        camera = "door"
        model = "det"
        fps = 5
        classes = ["person", "forklift"]
    "#;

    fn parse(extra: &str) -> Config {
        Config::from_toml(
            &format!("{BASE}{extra}"),
            Path::new("t.toml"),
            Path::new("/etc/fb"),
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones_and_rules_parse() {
        let c = parse(
            r#"
            [cameras.analytics]
            [[cameras.analytics.lines]]
            name = "in"
            from = [0.1, 0.5]
            to = [0.9, 0.5]
            [[cameras.analytics.zones]]
            name = "queue"
            polygon = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
            classes = ["forklift"]
            "#,
        );
        validate(&c, false).unwrap();
        assert_eq!(c.analytics.interval_s, 60);
        assert_eq!(c.analytics.cooldown_s, 15.0);
        assert_eq!(c.analytics.queue, 4096);
        let a = c.cameras[0].analytics.as_ref().unwrap();
        assert!(a.presence_events);
        assert_eq!(a.tracker.max_age_ms, 1500);
        assert_eq!(a.tracker.min_hits, 2);
        assert_eq!(a.lines[0].hysteresis, 0.01);
        assert_eq!(a.lines[0].anchor, super::Anchor::BottomCenter);
        assert_eq!(a.lines[0].cooldown_s, None);
        assert!(c.cameras[1..].is_empty());
        // Outputs default next to the first jsonl output.
        let outs = vec![crate::config::OutputConfig::Jsonl {
            path: "/var/fb/results.jsonl".into(),
        }];
        assert_eq!(
            c.analytics.events_file(&outs).unwrap(),
            Path::new("/var/fb/events.jsonl")
        );
        assert_eq!(
            c.analytics.counts_directory(&outs).unwrap(),
            Path::new("/var/fb")
        );
        assert_eq!(c.analytics.events_file(&[]), None);
        let err = Config::from_toml(
            &format!("{BASE}[cameras.analytics]\nbogus = 1\n"),
            Path::new("t"),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn every_bad_rule_is_reported_at_once_with_its_key() {
        let c = parse(
            r#"
            [analytics]
            interval_s = 0
            [cameras.analytics]
            model = "other"
            [cameras.analytics.tracker]
            high_score = 1.5
            [[cameras.analytics.lines]]
            name = "flat"
            from = [0.5, 0.5]
            to = [0.5, 0.5]
            classes = ["unicorn"]
            [[cameras.analytics.zones]]
            name = "bowtie"
            polygon = [[0.2, 0.2], [0.8, 0.8], [0.8, 0.2], [0.2, 0.8]]
            min_score = -1
            [[cameras.analytics.zones]]
            name = "flat"
            polygon = [[0.2, 0.2], [1.5, 0.2], [0.2, 0.8]]
            "#,
        );
        let errs = validate(&c, false).unwrap_err();
        let text: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
        for want in [
            "analytics.interval_s",
            "cameras.door.analytics.model",
            "cameras.door.analytics.tracker.high_score",
            "cameras.door.analytics.lines[0]: line \"flat\" has zero length",
            "cameras.door.analytics.lines[0].classes: unknown class \"unicorn\"",
            "cameras.door.analytics.zones[0].polygon: self-intersecting",
            "cameras.door.analytics.zones[0].min_score",
            "cameras.door.analytics.zones[1].name",
            "cameras.door.analytics.zones[1].polygon: vertex [1.5, 0.2]",
        ] {
            assert!(
                text.iter().any(|t| t.contains(want)),
                "{want} not in {text:#?}"
            );
        }
    }
}
