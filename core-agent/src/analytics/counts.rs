//! Counts over time: per (camera, model, rule, class) and interval, crossings `in` /
//! `out` (zone: enters / exits) and zone occupancy peak and mean; the daily CSV files
//! and the in-memory rows behind `GET /counts`.
//!
//! Intervals align to the Unix epoch (`start = floor(capture_unix_ms / interval)`),
//! by capture time. An interval closes when a frame of a later interval arrives (or at
//! shutdown); an interval without any frame (camera down) has no row. Class `*` is the
//! rule's total over all classes.
//!
//! CSV (`counts-YYYY-MM-DD.csv`, UTC day of the interval start), header:
//! `interval_start_unix_ms,interval_start_utc,interval_s,camera,model,rule,kind,class,in,out,occupancy_peak,occupancy_mean,frames`.
//! Files are opened for append; the header is written only into an empty file, so a
//! restart continues the same day's file. `occupancy_*` are empty for lines. Rows are
//! whole lines or absent: a torn last line (a crash) is cut off at open, a row that
//! cannot be written (disk full) is dropped and counted (see [`crate::sinks`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::line::Direction;
use crate::sinks::{LineFile, LineFileError, LossReason, SinkHandle, SinkHealth, SinkKind};

/// The CSV header line (without newline).
pub const CSV_HEADER: &str = "interval_start_unix_ms,interval_start_utc,interval_s,camera,model,rule,kind,class,in,out,occupancy_peak,occupancy_mean,frames";

/// Rule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// A counting line.
    Line,
    /// A zone.
    Zone,
}

/// One closed interval of one (camera, model, rule, class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountRow {
    /// Interval start, Unix ms.
    pub start_ms: u64,
    /// Interval length, s.
    pub interval_s: u64,
    /// Camera id.
    pub camera: String,
    /// Model id.
    pub model: String,
    /// Rule name.
    pub rule: String,
    /// Rule kind.
    pub kind: RuleKind,
    /// Class name, `*` for all.
    pub class: String,
    /// Line: crossings `in`; zone: enters.
    #[serde(rename = "in")]
    pub in_: u64,
    /// Line: crossings `out`; zone: exits.
    pub out: u64,
    /// Zone: most tracks inside in one frame.
    pub occupancy_peak: Option<u64>,
    /// Zone: mean tracks inside per frame.
    pub occupancy_mean: Option<f64>,
    /// Frames seen in the interval.
    pub frames: u64,
}

#[derive(Debug, Default, Clone)]
struct Acc {
    in_: u64,
    out: u64,
    peak: u64,
    sum: u64,
}

#[derive(Debug, Clone)]
struct RuleAcc {
    kind: RuleKind,
    frames: u64,
    classes: BTreeMap<String, Acc>,
}

/// Aggregates one (camera, model)'s rules into intervals.
#[derive(Debug, Clone)]
pub struct Aggregator {
    camera: String,
    model: String,
    interval_ms: u64,
    start_ms: Option<u64>,
    rules: BTreeMap<String, RuleAcc>,
}

impl Aggregator {
    /// An aggregator with intervals of `interval_s` seconds.
    pub fn new(camera: &str, model: &str, interval_s: u64) -> Self {
        Self {
            camera: camera.to_owned(),
            model: model.to_owned(),
            interval_ms: interval_s.max(1) * 1000,
            start_ms: None,
            rules: BTreeMap::new(),
        }
    }

    /// Starts the frame captured at `unix_ms`: closes the open interval if this frame
    /// belongs to a later one (returned rows), and counts the frame for every rule in
    /// `rules`.
    pub fn begin_frame(&mut self, unix_ms: u64, rules: &[(&str, RuleKind)]) -> Vec<CountRow> {
        let start = unix_ms - unix_ms % self.interval_ms;
        let mut out = Vec::new();
        match self.start_ms {
            Some(s) if start > s => out = self.close(),
            // A frame of an earlier interval (clock step back) counts into the open one.
            Some(_) => {}
            None => {}
        }
        if self.start_ms.is_none() {
            self.start_ms = Some(start);
        }
        for (rule, kind) in rules {
            let r = self.rule(rule, *kind);
            r.frames += 1;
            r.classes.entry("*".to_owned()).or_default();
        }
        out
    }

    fn rule(&mut self, rule: &str, kind: RuleKind) -> &mut RuleAcc {
        self.rules
            .entry(rule.to_owned())
            .or_insert_with(|| RuleAcc {
                kind,
                frames: 0,
                classes: BTreeMap::new(),
            })
    }

    /// Counts a crossing (zone: `In` an enter, `Out` an exit).
    pub fn crossing(&mut self, rule: &str, kind: RuleKind, class: &str, dir: Direction) {
        let r = self.rule(rule, kind);
        for key in [class, "*"] {
            let a = r.classes.entry(key.to_owned()).or_default();
            match dir {
                Direction::In => a.in_ += 1,
                Direction::Out => a.out += 1,
            }
        }
    }

    /// Records a zone's occupancy in the current frame (per class, total computed).
    pub fn occupancy(&mut self, rule: &str, by_class: &BTreeMap<&str, usize>) {
        let r = self.rule(rule, RuleKind::Zone);
        let total: usize = by_class.values().sum();
        for (class, n) in by_class
            .iter()
            .map(|(c, n)| (*c, *n))
            .chain(std::iter::once(("*", total)))
        {
            let a = r.classes.entry(class.to_owned()).or_default();
            a.peak = a.peak.max(n as u64);
            a.sum += n as u64;
        }
    }

    /// Closes the open interval (shutdown, rules reloaded).
    pub fn close(&mut self) -> Vec<CountRow> {
        let Some(start) = self.start_ms.take() else {
            return Vec::new();
        };
        let interval_s = self.interval_ms / 1000;
        let mut out = Vec::new();
        for (rule, r) in std::mem::take(&mut self.rules) {
            for (class, a) in r.classes {
                let zone = r.kind == RuleKind::Zone;
                out.push(CountRow {
                    start_ms: start,
                    interval_s,
                    camera: self.camera.clone(),
                    model: self.model.clone(),
                    rule: rule.clone(),
                    kind: r.kind,
                    class,
                    in_: a.in_,
                    out: a.out,
                    occupancy_peak: zone.then_some(a.peak),
                    occupancy_mean: zone.then(|| {
                        if r.frames == 0 {
                            0.0
                        } else {
                            a.sum as f64 / r.frames as f64
                        }
                    }),
                    frames: r.frames,
                });
            }
        }
        out
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` of a Unix ms time (UTC).
pub fn utc_date(unix_ms: u64) -> String {
    let (y, m, d) = civil_from_days((unix_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix ms time.
pub fn utc_time(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    let (h, mi, se) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    format!("{}T{h:02}:{mi:02}:{se:02}Z", utc_date(unix_ms))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One CSV line (without newline).
pub fn csv_line(r: &CountRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.start_ms,
        utc_time(r.start_ms),
        r.interval_s,
        csv_field(&r.camera),
        csv_field(&r.model),
        csv_field(&r.rule),
        match r.kind {
            RuleKind::Line => "line",
            RuleKind::Zone => "zone",
        },
        csv_field(&r.class),
        r.in_,
        r.out,
        r.occupancy_peak.map(|v| v.to_string()).unwrap_or_default(),
        r.occupancy_mean
            .map(|v| format!("{v:.3}"))
            .unwrap_or_default(),
        r.frames,
    )
}

/// Why a counts file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// Opening or writing the file failed.
    #[error("counts file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Appends rows to `counts-YYYY-MM-DD.csv` in one directory, whole lines only (see
/// [`crate::sinks`]): a row that cannot be written is dropped and counted, never left
/// half in the file.
#[derive(Debug)]
pub struct CsvWriter {
    dir: PathBuf,
    open: Option<(String, LineFile)>,
    health: SinkHandle,
}

impl CsvWriter {
    /// Writes into `dir` (which must exist), reporting to `health` as `counts:<dir>`.
    pub fn new(dir: &Path, health: &SinkHealth) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: None,
            health: health.register(SinkKind::Counts, format!("counts:{}", dir.display())),
        }
    }

    /// The file of a day.
    pub fn path_of(dir: &Path, date: &str) -> PathBuf {
        dir.join(format!("counts-{date}.csv"))
    }

    /// Appends one row (buffered until [`Self::flush`]). A new day's file is opened
    /// when the row's day changes (the previous day's rows are written first; their
    /// failure is returned after this row was queued).
    pub fn write(&mut self, row: &CountRow) -> Result<(), CsvError> {
        let date = utc_date(row.start_ms);
        let mut earlier = Ok(());
        if self.open.as_ref().map(|o| o.0.as_str()) != Some(date.as_str()) {
            earlier = self.flush();
            self.open = None;
            let path = Self::path_of(&self.dir, &date);
            // The header goes into the file whenever it is empty, in the same write as
            // the first row, so a file is never a header short.
            match LineFile::open(&path, Some(CSV_HEADER), self.health.clone()) {
                Ok(f) => self.open = Some((date, f)),
                Err(e) => {
                    // Not even open: this row is lost.
                    let reason = e.io().map_or(LossReason::Io, LossReason::of);
                    let e = CsvError::from_lines(&path, e);
                    self.health.failed(0, 1, reason, &e.to_string());
                    return Err(e);
                }
            }
        }
        if let Some((_, f)) = self.open.as_mut() {
            f.push(csv_line(row).as_bytes())
                .map_err(|e| CsvError::from_lines(f.path(), e))?;
        }
        earlier
    }

    /// Writes buffered rows out.
    pub fn flush(&mut self) -> Result<(), CsvError> {
        match self.open.as_mut() {
            Some((_, f)) => f.flush().map_err(|e| CsvError::from_lines(f.path(), e)),
            None => Ok(()),
        }
    }
}

impl CsvError {
    fn from_lines(path: &Path, e: LineFileError) -> CsvError {
        CsvError::Io {
            path: path.to_path_buf(),
            source: match e {
                LineFileError::Open { source, .. } | LineFileError::Write { source, .. } => source,
                LineFileError::Encode { source, .. } => std::io::Error::other(source),
            },
        }
    }
}

/// The rows kept for `GET /counts`, oldest dropped first past `max_rows`.
#[derive(Debug, Default)]
pub struct CountStore {
    rows: VecDeque<CountRow>,
    max_rows: usize,
}

/// One interval of a `GET /counts` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountBucket {
    /// Interval start, Unix ms.
    pub start_ms: u64,
    /// Interval start, UTC.
    pub start_utc: String,
    /// Rows merged into this interval, one per (camera, model, rule, class).
    pub rows: Vec<CountRow>,
    /// Across cameras: per (rule, class), the sums of `in` and `out`.
    pub totals: Vec<Total>,
}

/// Sum across cameras of one (rule, class) in one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    /// Rule name.
    pub rule: String,
    /// Class.
    pub class: String,
    /// Sum of `in`.
    #[serde(rename = "in")]
    pub in_: u64,
    /// Sum of `out`.
    pub out: u64,
}

impl CountStore {
    /// A store keeping at most `max_rows`.
    pub fn new(max_rows: usize) -> Self {
        Self {
            rows: VecDeque::new(),
            max_rows: max_rows.max(1),
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: CountRow) {
        if self.rows.len() >= self.max_rows {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
    }

    /// Rows of `camera` (all if `None`) starting in `from..to` (Unix ms), merged into
    /// intervals of `interval_s` (a multiple of the rows' own; `None`: as stored).
    /// Peaks merge as the max, means weighted by frames.
    pub fn query(
        &self,
        camera: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        interval_s: Option<u64>,
    ) -> Vec<CountBucket> {
        type Key = (u64, String, String, String, String);
        let mut merged: BTreeMap<Key, CountRow> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| {
            camera.is_none_or(|c| r.camera == c) && r.start_ms >= from_ms && r.start_ms < to_ms
        }) {
            let len = interval_s.map_or(r.interval_s, |i| i.max(r.interval_s)) * 1000;
            let start = r.start_ms - r.start_ms % len;
            let key = (
                start,
                r.camera.clone(),
                r.model.clone(),
                r.rule.clone(),
                r.class.clone(),
            );
            match merged.get_mut(&key) {
                None => {
                    let mut m = r.clone();
                    m.start_ms = start;
                    m.interval_s = len / 1000;
                    merged.insert(key, m);
                }
                Some(m) => {
                    m.in_ += r.in_;
                    m.out += r.out;
                    m.occupancy_peak = match (m.occupancy_peak, r.occupancy_peak) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    let frames = m.frames + r.frames;
                    m.occupancy_mean = match (m.occupancy_mean, r.occupancy_mean) {
                        (Some(a), Some(b)) if frames > 0 => {
                            Some((a * m.frames as f64 + b * r.frames as f64) / frames as f64)
                        }
                        (a, b) => a.or(b),
                    };
                    m.frames = frames;
                }
            }
        }
        let mut out: Vec<CountBucket> = Vec::new();
        for ((start, ..), row) in merged {
            if out.last().map(|b| b.start_ms) != Some(start) {
                out.push(CountBucket {
                    start_ms: start,
                    start_utc: utc_time(start),
                    rows: Vec::new(),
                    totals: Vec::new(),
                });
            }
            let b = out.last_mut().expect("pushed above");
            match b
                .totals
                .iter_mut()
                .find(|t| t.rule == row.rule && t.class == row.class)
            {
                Some(t) => {
                    t.in_ += row.in_;
                    t.out += row.out;
                }
                None => b.totals.push(Total {
                    rule: row.rule.clone(),
                    class: row.class.clone(),
                    in_: row.in_,
                    out: row.out,
                }),
            }
            b.rows.push(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn intervals_close_on_the_next_interval_and_sum_classes() {
        let mut a = Aggregator::new("cam", "m", 60);
        let rules = [("door", RuleKind::Line), ("q", RuleKind::Zone)];
        assert!(a.begin_frame(60_000, &rules).is_empty());
        a.crossing("door", RuleKind::Line, "person", Direction::In);
        a.crossing("door", RuleKind::Line, "car", Direction::Out);
        a.occupancy("q", &BTreeMap::from([("person", 2)]));
        assert!(a.begin_frame(119_999, &rules).is_empty());
        a.occupancy("q", &BTreeMap::from([("person", 1)]));
        let rows = a.begin_frame(120_000, &rules);
        let get = |rule: &str, class: &str| {
            rows.iter()
                .find(|r| r.rule == rule && r.class == class)
                .cloned()
                .unwrap()
        };
        let all = get("door", "*");
        assert_eq!(
            (all.in_, all.out, all.frames, all.start_ms),
            (1, 1, 2, 60_000)
        );
        assert_eq!(get("door", "person").in_, 1);
        assert_eq!(all.occupancy_peak, None);
        let q = get("q", "*");
        assert_eq!((q.occupancy_peak, q.occupancy_mean), (Some(2), Some(1.5)));
        assert_eq!(
            a.close().len(),
            2,
            "the new interval holds `*` of both rules"
        );
    }

    #[test]
    fn csv_is_append_safe_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let row = |start| CountRow {
            start_ms: start,
            interval_s: 60,
            camera: "cam".into(),
            model: "m".into(),
            rule: "door".into(),
            kind: RuleKind::Line,
            class: "*".into(),
            in_: 3,
            out: 1,
            occupancy_peak: None,
            occupancy_mean: None,
            frames: 300,
        };
        let health = SinkHealth::default();
        for start in [0, 60_000] {
            let mut w = CsvWriter::new(dir.path(), &health);
            w.write(&row(start)).unwrap();
            w.flush().unwrap();
        }
        let path = CsvWriter::path_of(dir.path(), "1970-01-01");
        // A torn line from a crash is cut off before the next row.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"12,")
            .unwrap();
        let mut w = CsvWriter::new(dir.path(), &health);
        w.write(&row(120_000)).unwrap();
        w.write(&row(86_400_000)).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.iter().filter(|l| **l == CSV_HEADER).count(), 1);
        assert_eq!(
            lines[1],
            "0,1970-01-01T00:00:00Z,60,cam,m,door,line,*,3,1,,,300"
        );
        assert_eq!(lines.len(), 4);
        assert!(lines[3].starts_with("120000,"));
        assert!(!text.contains("12,\n"), "{text}");
        assert!(CsvWriter::path_of(dir.path(), "1970-01-02").exists());
    }

    #[test]
    fn query_merges_intervals_and_totals_cameras() {
        let mut s = CountStore::new(10);
        for (cam, start, n) in [
            ("a", 0, 1),
            ("a", 60_000, 2),
            ("b", 0, 4),
            ("b", 300_000, 8),
        ] {
            s.push(CountRow {
                start_ms: start,
                interval_s: 60,
                camera: cam.into(),
                model: "m".into(),
                rule: "door".into(),
                kind: RuleKind::Line,
                class: "*".into(),
                in_: n,
                out: 0,
                occupancy_peak: None,
                occupancy_mean: None,
                frames: 10,
            });
        }
        let b = s.query(None, 0, u64::MAX, Some(300));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].totals[0].in_, 7);
        assert_eq!(b[0].rows.len(), 2);
        let a = s.query(Some("a"), 0, 60_000, None);
        assert_eq!((a.len(), a[0].totals[0].in_), (1, 1));
    }
}
