//! The analytics stage on the result path.
//!
//! It runs in the result dispatcher thread, on every record before the sinks see it,
//! so each written record carries its `track_ids` and `events`. State is per (camera,
//! model) stream, created on the first record of a camera with rules.
//!
//! Ordering and overflow: records reach the stage in the order the agents pushed them,
//! which per stream is the order answers arrived (capture order with one request in
//! flight; with more, an answer may overtake another, and the tracker treats an
//! out-of-order timestamp as 1 ms after the last). When the result queue is full it
//! drops the **oldest** records before the stage sees them: for the tracker that is a
//! gap in the stream, like an occlusion; a gap longer than the max age ends tracks
//! (`object_left`) and the objects come back with new ids, and a line crossing that
//! happened entirely inside the gap is not counted. `framebus_results_dropped_total`
//! says when that happens.
//!
//! A record flagged as reused (a motion gate repeating the last detections without a
//! new inference) is no new observation: the stage passes it on untouched, without
//! advancing tracks or counts ([`is_new_observation`]).
//!
//! Rules reload: [`AnalyticsShared::set_rules`] (called by the config reload) swaps
//! the rules; the stage picks them up at its next batch, keeping tracks and the
//! state of unchanged rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::counts::{CountRow, CountStore};
use super::sink::{Output, OutputQueue};
use super::tracker::{id_source, IdSource};
use super::{FrameIn, StreamAnalytics};
use crate::config::analytics::{AnalyticsSettings, CameraAnalytics};
use crate::results::{RecordStage, ResultRecord};

/// `(camera, rule, direction, class)` of a crossing counter.
pub type CrossingKey = (String, String, &'static str, String);

/// The rules of every camera, with a generation bumped on each change.
#[derive(Debug, Default, Clone)]
struct RuleSet {
    generation: u64,
    settings: AnalyticsSettings,
    cameras: BTreeMap<String, CameraAnalytics>,
}

/// What the stage shares with the API, the metrics and the config reload.
#[derive(Debug)]
pub struct AnalyticsShared {
    rules: Mutex<RuleSet>,
    /// `framebus_line_crossings_total{camera,rule,direction,class}`.
    crossings: Mutex<BTreeMap<CrossingKey, u64>>,
    /// Zone occupancy now, per (camera, rule).
    occupancy: Mutex<BTreeMap<(String, String), u64>>,
    /// Closed intervals for `GET /counts`.
    store: Mutex<CountStore>,
    /// Events written to the output queue.
    pub events: AtomicU64,
    /// Events suppressed by cooldowns.
    pub suppressed: AtomicU64,
    /// Failed event or counts writes.
    pub write_errors: Arc<AtomicU64>,
    /// The output queue (its drop counter).
    pub queue: Arc<OutputQueue>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AnalyticsShared {
    /// Shared state for the cameras' rules in `cameras` under `settings`.
    pub fn new(
        settings: AnalyticsSettings,
        cameras: BTreeMap<String, CameraAnalytics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(CountStore::new(settings.max_rows)),
            queue: OutputQueue::new(settings.queue),
            rules: Mutex::new(RuleSet {
                generation: 1,
                settings,
                cameras,
            }),
            crossings: Mutex::default(),
            occupancy: Mutex::default(),
            events: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            write_errors: Arc::default(),
        })
    }

    /// The rules of every camera that has some, from a config.
    pub fn rules_of(config: &crate::config::Config) -> BTreeMap<String, CameraAnalytics> {
        config
            .cameras
            .iter()
            .filter_map(|c| Some((c.id.clone(), *c.analytics.clone()?)))
            .collect()
    }

    /// Replaces the rules (hot reload); `true` if anything changed.
    pub fn set_rules(
        &self,
        settings: AnalyticsSettings,
        cameras: BTreeMap<String, CameraAnalytics>,
    ) -> bool {
        let mut r = lock(&self.rules);
        if r.settings == settings && r.cameras == cameras {
            return false;
        }
        r.generation += 1;
        r.settings = settings;
        r.cameras = cameras;
        true
    }

    /// Line crossing counters: ((camera, rule, direction, class), count).
    pub fn crossings(&self) -> Vec<(CrossingKey, u64)> {
        lock(&self.crossings)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Zone occupancy now: ((camera, rule), tracks inside).
    pub fn occupancy(&self) -> Vec<((String, String), u64)> {
        lock(&self.occupancy)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// `GET /counts`.
    pub fn query(
        &self,
        camera: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        interval_s: Option<u64>,
    ) -> Vec<super::counts::CountBucket> {
        lock(&self.store).query(camera, from_ms, to_ms, interval_s)
    }

    /// Appends the analytics families to a Prometheus text exposition.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let l = crate::metrics::prom_label;
        let _ = writeln!(out, "# HELP framebus_line_crossings_total Line crossings counted.\n# TYPE framebus_line_crossings_total counter");
        for ((cam, rule, dir, class), n) in self.crossings() {
            let _ = writeln!(
                out,
                "framebus_line_crossings_total{{camera=\"{}\",rule=\"{}\",direction=\"{dir}\",class=\"{}\"}} {n}",
                l(&cam),
                l(&rule),
                l(&class)
            );
        }
        let _ = writeln!(out, "# HELP framebus_zone_occupancy Tracks inside the zone in the latest frame.\n# TYPE framebus_zone_occupancy gauge");
        for ((cam, rule), n) in self.occupancy() {
            let _ = writeln!(
                out,
                "framebus_zone_occupancy{{camera=\"{}\",rule=\"{}\"}} {n}",
                l(&cam),
                l(&rule)
            );
        }
        for (name, help, v) in [
            (
                "framebus_analytics_events_total",
                "Events raised (after the cooldown).",
                self.events.load(Ordering::Relaxed),
            ),
            (
                "framebus_analytics_suppressed_total",
                "Events suppressed by a cooldown.",
                self.suppressed.load(Ordering::Relaxed),
            ),
            (
                "framebus_analytics_dropped_total",
                "Events or counts rows dropped by the full output queue (oldest first).",
                self.queue.dropped(),
            ),
            (
                "framebus_analytics_write_errors_total",
                "Failed writes of events or counts rows.",
                self.write_errors.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
    }

    fn rows(&self, rows: Vec<CountRow>) {
        if rows.is_empty() {
            return;
        }
        let mut store = lock(&self.store);
        for r in rows {
            store.push(r.clone());
            self.queue.push(Output::Row(r));
        }
    }
}

/// Whether a record is a new observation. A record that repeats earlier detections
/// without a new inference (the motion gate's `reused: true`) is not.
pub fn is_new_observation(record: &ResultRecord) -> bool {
    !record.reused
}

/// The stage run by the result dispatcher.
#[derive(Debug)]
pub struct AnalyticsStage {
    shared: Arc<AnalyticsShared>,
    generation: u64,
    rules: RuleSet,
    streams: HashMap<(String, String), StreamAnalytics>,
    ids: HashMap<String, IdSource>,
    /// Event clips: gives each new event its clip path.
    clips: Option<Arc<crate::clips::Clips>>,
}

impl AnalyticsStage {
    /// A stage over `shared`.
    pub fn new(shared: Arc<AnalyticsShared>) -> Self {
        Self {
            shared,
            generation: 0,
            rules: RuleSet::default(),
            streams: HashMap::new(),
            ids: HashMap::new(),
            clips: None,
        }
    }

    /// Events get clips from `clips` (event clips, `[clips]`).
    pub fn with_clips(mut self, clips: Option<Arc<crate::clips::Clips>>) -> Self {
        self.clips = clips;
        self
    }

    fn refresh(&mut self) {
        let r = lock(&self.shared.rules);
        if r.generation == self.generation {
            return;
        }
        self.rules = r.clone();
        drop(r);
        self.generation = self.rules.generation;
        let s = &self.rules.settings;
        let mut closed = Vec::new();
        self.streams
            .retain(|(cam, model), st| match self.rules.cameras.get(cam) {
                Some(rules) if rules.model.as_ref().is_none_or(|m| m == model) => {
                    closed.extend(st.set_rules(rules, s.cooldown_s, s.interval_s));
                    true
                }
                _ => {
                    closed.extend(st.finish());
                    false
                }
            });
        lock(&self.shared.occupancy).retain(|(cam, _), _| self.rules.cameras.contains_key(cam));
        self.shared.rows(closed);
    }
}

impl RecordStage for AnalyticsStage {
    fn process(&mut self, record: &mut ResultRecord) {
        self.refresh();
        let Some(rules) = self.rules.cameras.get(&record.camera) else {
            return;
        };
        if rules.model.as_ref().is_some_and(|m| m != &record.model) || !is_new_observation(record) {
            return;
        }
        let s = &self.rules.settings;
        let key = (record.camera.clone(), record.model.clone());
        let ids = self
            .ids
            .entry(record.camera.clone())
            .or_insert_with(id_source)
            .clone();
        let st = self.streams.entry(key).or_insert_with(|| {
            StreamAnalytics::new(
                &record.camera,
                &record.model,
                rules,
                s.cooldown_s,
                s.interval_s,
                ids,
            )
        });
        let mut out = st.process(&FrameIn {
            capture_ts_ns: record.capture_ts_ns,
            capture_unix_ms: record.capture_unix_ms,
            frame_id: record.frame_id,
            frame: record.frame.as_ref(),
            detections: &record.detections,
        });
        record.track_ids = out.track_ids;
        if !out.crossings.is_empty() {
            let mut c = lock(&self.shared.crossings);
            for x in &out.crossings {
                *c.entry((
                    record.camera.clone(),
                    x.rule.clone(),
                    x.direction.as_str(),
                    x.class.clone(),
                ))
                .or_insert(0) += 1;
            }
        }
        {
            let mut o = lock(&self.shared.occupancy);
            for (rule, n) in &out.occupancy {
                o.insert((record.camera.clone(), rule.clone()), *n as u64);
            }
        }
        self.shared
            .suppressed
            .fetch_add(out.suppressed, Ordering::Relaxed);
        self.shared
            .events
            .fetch_add(out.events.len() as u64, Ordering::Relaxed);
        if let Some(clips) = &self.clips {
            out.events.iter_mut().for_each(|e| clips.claim(e));
        }
        for e in &out.events {
            self.shared.queue.push(Output::Event(Box::new(e.clone())));
        }
        record.events = out.events;
        self.shared.rows(out.rows);
    }

    fn finish(&mut self) {
        let mut rows = Vec::new();
        for st in self.streams.values_mut() {
            rows.extend(st.finish());
        }
        self.shared.rows(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::sink::{JsonlEventSink, Writer};
    use crate::config::analytics::LineConfig;
    use crate::results::{Dispatcher, Latencies, ResultQueue};
    use proto_schema::message::Detection;

    fn rec(i: u64, y: f32, reused: bool) -> ResultRecord {
        ResultRecord {
            camera: "cam".into(),
            model: "m".into(),
            frame_id: i,
            capture_ts_ns: i * 200_000_000,
            capture_unix_ms: 1_700_000_000_000 + i * 200,
            result_unix_ms: 0,
            latency_ms: Latencies::default(),
            detections: vec![Detection {
                class_id: 0,
                class_name: "person".into(),
                confidence: 0.9,
                bbox: [0.3, y - 0.15, 0.36, y],
            }],
            frame: Some(proto_schema::message::FrameRef {
                ring: "cam".into(),
                generation: 1,
                slot: (i % 8) as u32,
                seq: 2 * i,
            }),
            reused,
            result_age_ms: reused.then_some(200.0),
            track_ids: vec![],
            events: vec![],
        }
    }

    #[test]
    fn records_get_track_ids_and_events_reach_events_jsonl_reused_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let rules = CameraAnalytics {
            model: None,
            presence_events: false,
            tracker: Default::default(),
            lines: vec![LineConfig {
                name: "door".into(),
                from: [0.1, 0.5],
                to: [0.9, 0.5],
                classes: vec![],
                min_score: 0.0,
                hysteresis: 0.01,
                anchor: Default::default(),
                cooldown_s: Some(0.0),
            }],
            zones: vec![],
        };
        let shared = AnalyticsShared::new(
            AnalyticsSettings::default(),
            BTreeMap::from([("cam".to_owned(), rules)]),
        );
        let events = dir.path().join("events.jsonl");
        let health = crate::sinks::SinkHealth::default();
        let writer = Writer::start(
            shared.queue.clone(),
            vec![Box::new(JsonlEventSink::create(&events, &health).unwrap())],
            Some(crate::analytics::counts::CsvWriter::new(
                dir.path(),
                &health,
            )),
            shared.write_errors.clone(),
        )
        .unwrap();
        let out = dir.path().join("results.jsonl");
        let q = ResultQueue::new(100);
        let d = Dispatcher::start_with(
            q.clone(),
            vec![Box::new(
                crate::results::JsonlSink::create(&out, &health).unwrap(),
            )],
            Some(Box::new(AnalyticsStage::new(shared.clone()))),
        )
        .unwrap();
        // Walks down across the line; a reused record in the middle repeats an old
        // position far above the line and must change nothing.
        let ys = [0.4, 0.43, 0.46, 0.49, 0.52, 0.55, 0.58];
        for (i, y) in ys.iter().enumerate() {
            q.push(rec(i as u64, *y, false));
            if i == 4 {
                q.push(rec(100, 0.2, true));
            }
        }
        d.finish();
        writer.finish();
        let recs: Vec<ResultRecord> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), ys.len() + 1);
        assert_eq!(recs[0].track_ids, vec![None]);
        let id = recs[1].track_ids[0].unwrap();
        assert!(recs
            .iter()
            .filter(|r| !r.reused)
            .skip(1)
            .all(|r| r.track_ids == vec![Some(id)]));
        assert!(recs.iter().find(|r| r.reused).unwrap().track_ids.is_empty());
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "line_crossed");
        assert_eq!(lines[0]["direction"], "in");
        assert_eq!(lines[0]["frame"]["ring"], "cam");
        assert_eq!(
            shared.crossings(),
            vec![(("cam".into(), "door".into(), "in", "person".into()), 1)]
        );
        let mut prom = String::new();
        shared.prometheus(&mut prom);
        assert!(prom.contains("framebus_line_crossings_total{camera=\"cam\",rule=\"door\",direction=\"in\",class=\"person\"} 1"), "{prom}");
        // The interval closed at shutdown: in the store and the CSV.
        let b = shared.query(Some("cam"), 0, u64::MAX, None);
        assert_eq!(b[0].totals.iter().find(|t| t.class == "*").unwrap().in_, 1);
        let csv = std::fs::read_to_string(crate::analytics::counts::CsvWriter::path_of(
            dir.path(),
            "2023-11-14",
        ))
        .unwrap();
        assert!(csv.contains(",door,line,*,1,0,,,7"), "{csv}");
    }

    #[test]
    fn rules_reload_at_the_next_record_keeping_tracks() {
        let shared = AnalyticsShared::new(
            AnalyticsSettings::default(),
            BTreeMap::from([(
                "cam".to_owned(),
                CameraAnalytics {
                    model: None,
                    presence_events: false,
                    tracker: Default::default(),
                    lines: vec![],
                    zones: vec![],
                },
            )]),
        );
        let mut stage = AnalyticsStage::new(shared.clone());
        let mut id = None;
        for (i, y) in [0.40, 0.43, 0.46].iter().enumerate() {
            let mut r = rec(i as u64, *y, false);
            stage.process(&mut r);
            id = id.or(r.track_ids[0]);
        }
        // A line appears in the config: no restart, the same track crosses it.
        let mut rules = shared.rules.lock().unwrap().cameras["cam"].clone();
        rules.lines.push(LineConfig {
            name: "door".into(),
            from: [0.1, 0.5],
            to: [0.9, 0.5],
            classes: vec![],
            min_score: 0.0,
            hysteresis: 0.01,
            anchor: Default::default(),
            cooldown_s: Some(0.0),
        });
        assert!(shared.set_rules(
            AnalyticsSettings::default(),
            BTreeMap::from([("cam".to_owned(), rules.clone())])
        ));
        assert!(!shared.set_rules(
            AnalyticsSettings::default(),
            BTreeMap::from([("cam".to_owned(), rules)])
        ));
        let mut crossed = 0;
        for (i, y) in [0.47, 0.52, 0.55].iter().enumerate() {
            let mut r = rec(3 + i as u64, *y, false);
            stage.process(&mut r);
            assert_eq!(r.track_ids[0], id, "the track survived the reload");
            crossed += r.events.len();
        }
        assert_eq!(crossed, 1);
        // The camera's rules removed: records pass untouched.
        shared.set_rules(AnalyticsSettings::default(), BTreeMap::new());
        let mut r = rec(9, 0.6, false);
        stage.process(&mut r);
        assert!(r.track_ids.is_empty());
    }
}
