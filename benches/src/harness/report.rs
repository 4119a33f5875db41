//! Markdown tables for the terminal and docs, and the JSON record of a run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::load::LoadReport;
use super::machine::{MachineInfo, Versions};

/// A markdown table built row by row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells beyond the header are dropped, missing ones left empty.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// GitHub-flavoured markdown, columns padded so the text also reads well in a terminal.
    pub fn markdown(&self) -> String {
        let esc = |c: &str| c.replace('|', "\\|");
        let mut widths: Vec<usize> = self.header.iter().map(|h| esc(h).len().max(3)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(esc(c).len());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(&widths) {
                let _ = write!(s, " {:<w$} |", esc(c), w = *w);
            }
            s.push('\n');
            s
        };
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "**{}**\n", self.title);
        }
        out.push_str(&line(&self.header));
        out.push('|');
        for w in &widths {
            let _ = write!(out, " {} |", "-".repeat(*w));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// Everything one scenario run produced.
#[derive(Debug, Serialize)]
pub struct Report<T: Serialize> {
    pub scenario: String,
    pub date_utc: String,
    pub machine: MachineInfo,
    pub versions: Versions,
    pub parameters: serde_json::Value,
    pub load: Option<LoadReport>,
    pub warnings: Vec<String>,
    pub tables: Vec<Table>,
    /// Key numbers of the scenario (ratios against the in-run baselines).
    pub summary: Vec<String>,
    pub data: T,
}

impl<T: Serialize> Report<T> {
    /// The text printed at the end of a run (and pasted into docs/benchmarks.md).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### `bench {}` — {}\n", self.scenario, self.date_utc);
        let _ = writeln!(out, "- machine: {}", self.machine.line());
        let _ = writeln!(out, "- versions: {}", self.versions.line());
        let _ = writeln!(out, "- parameters: `{}`", self.parameters);
        if let Some(l) = &self.load {
            let _ = writeln!(
                out,
                "- machine load during the run: {:.1}% busy, of which the system {:.1}%, \
                 other {:.1}% (peak {:.1}%)",
                l.machine_busy_pct, l.own_pct, l.other_pct, l.other_peak_pct
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "- **{w}**");
        }
        out.push('\n');
        for t in &self.tables {
            out.push_str(&t.markdown());
            out.push('\n');
        }
        if !self.summary.is_empty() {
            out.push_str("Key numbers:\n\n");
            for s in &self.summary {
                let _ = writeln!(out, "- {s}");
            }
        }
        out
    }

    /// Writes `<out>/<scenario>-<stamp>.json` and `.md`, and `<scenario>-latest.*`.
    pub fn write(&self, out_dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(out_dir)?;
        let stamp = self.date_utc.replace([':', ' '], "").replace('-', "");
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let md = self.markdown();
        let path = out_dir.join(format!("{}-{stamp}.json", self.scenario));
        std::fs::write(&path, &json)?;
        std::fs::write(out_dir.join(format!("{}-{stamp}.md", self.scenario)), &md)?;
        std::fs::write(
            out_dir.join(format!("{}-latest.json", self.scenario)),
            &json,
        )?;
        std::fs::write(out_dir.join(format!("{}-latest.md", self.scenario)), &md)?;
        Ok(path)
    }
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SSZ` (proleptic Gregorian).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `x` with `d` decimals, or "—" when absent.
pub fn num(x: Option<f64>, d: usize) -> String {
    x.map_or_else(|| "—".to_string(), |v| format!("{v:.d$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_table_pads_and_escapes() {
        let mut t = Table::new("T", &["a", "long header"]);
        t.row(vec!["x|y".into(), "1".into()]);
        t.row(vec!["z".into()]);
        let md = t.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "**T**");
        assert_eq!(lines[2], "| a    | long header |");
        assert_eq!(lines[3], "| ---- | ----------- |");
        assert_eq!(lines[4], "| x\\|y | 1           |");
        assert_eq!(lines[5], "| z    |             |");
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn formats_optional_numbers() {
        assert_eq!(num(Some(1.2345), 2), "1.23");
        assert_eq!(num(None, 2), "—");
    }
}
