//! Parsing of `/proc`: whole-machine CPU times, per-process CPU time and memory, process trees.
//!
//! The parsers take text so they are unit-tested on fixed samples; the `read_*` functions
//! add the file access.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

/// A problem reading or parsing a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (for a process: it has usually exited).
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the expected layout.
    #[error("parsing {what}: {reason}")]
    Parse { what: &'static str, reason: String },
}

fn parse_err(what: &'static str, reason: impl Into<String>) -> ProcError {
    ProcError::Parse {
        what,
        reason: reason.into(),
    }
}

fn read(path: PathBuf) -> Result<String, ProcError> {
    fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// Aggregate CPU time of the whole machine (first line of `/proc/stat`), in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Parses the `cpu ` line of `/proc/stat`.
    pub fn parse(stat: &str) -> Result<CpuTimes, ProcError> {
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| parse_err("/proc/stat", "no aggregate `cpu` line"))?;
        let nums: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| parse_err("/proc/stat", e.to_string()))?;
        if nums.len() < 4 {
            return Err(parse_err("/proc/stat", "fewer than 4 cpu fields"));
        }
        let at = |i: usize| nums.get(i).copied().unwrap_or(0);
        Ok(CpuTimes {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        })
    }

    /// Reads `/proc/stat`.
    pub fn read() -> Result<CpuTimes, ProcError> {
        CpuTimes::parse(&read(PathBuf::from("/proc/stat"))?)
    }

    /// Ticks spent doing work (guest time is already inside user/nice).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    /// All ticks, busy or not.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }
}

/// The fields of `/proc/<pid>/stat` the harness uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// User and system time of the process itself, clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// User and system time of waited-for children, clock ticks.
    pub cutime: u64,
    pub cstime: u64,
    /// Start time after boot, clock ticks: with `pid`, identifies a process across pid reuse.
    pub starttime: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Parses one `/proc/<pid>/stat` line. `comm` may contain spaces and parentheses, so
    /// the fields after it are found from the *last* `)`.
    pub fn parse(line: &str) -> Result<ProcStat, ProcError> {
        const W: &str = "/proc/<pid>/stat";
        let open = line.find('(').ok_or_else(|| parse_err(W, "no `(`"))?;
        let close = line.rfind(')').ok_or_else(|| parse_err(W, "no `)`"))?;
        if close < open {
            return Err(parse_err(W, "`)` before `(`"));
        }
        let pid: i32 = line[..open]
            .trim()
            .parse()
            .map_err(|_| parse_err(W, "bad pid"))?;
        let comm = line[open + 1..close].to_string();
        // Fields after comm, numbered from 3 (state) as in proc(5).
        let rest: Vec<&str> = line[close + 1..].split_ascii_whitespace().collect();
        let field = |n: usize| -> Result<&str, ProcError> {
            rest.get(n - 3)
                .copied()
                .ok_or_else(|| parse_err(W, format!("missing field {n}")))
        };
        let num = |n: usize| -> Result<u64, ProcError> {
            field(n)?
                .parse::<u64>()
                .map_err(|_| parse_err(W, format!("field {n} not a number")))
        };
        let int = |n: usize| -> Result<i32, ProcError> {
            field(n)?
                .parse::<i32>()
                .map_err(|_| parse_err(W, format!("field {n} not a number")))
        };
        Ok(ProcStat {
            pid,
            comm,
            state: field(3)?.chars().next().unwrap_or('?'),
            ppid: int(4)?,
            pgrp: int(5)?,
            utime: num(14)?,
            stime: num(15)?,
            cutime: num(16)?,
            cstime: num(17)?,
            starttime: num(22)?,
            rss_pages: num(24)?,
        })
    }

    /// Reads `/proc/<pid>/stat`.
    pub fn read(pid: i32) -> Result<ProcStat, ProcError> {
        ProcStat::parse(&read(PathBuf::from(format!("/proc/{pid}/stat")))?)
    }

    /// CPU time of the process itself, ticks.
    pub fn own_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// CPU time of the process and of its reaped children, ticks.
    pub fn all_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Memory fields of `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMemory {
    /// Peak resident set size ("high water mark").
    pub vm_hwm_kib: u64,
    /// Current resident set size.
    pub vm_rss_kib: u64,
}

impl ProcMemory {
    /// Parses `/proc/<pid>/status` (missing fields, as for kernel threads, read as 0).
    pub fn parse(status: &str) -> ProcMemory {
        let mut m = ProcMemory::default();
        for line in status.lines() {
            let mut it = line.split_ascii_whitespace();
            let key = it.next();
            let val = it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match key {
                Some("VmHWM:") => m.vm_hwm_kib = val,
                Some("VmRSS:") => m.vm_rss_kib = val,
                _ => {}
            }
        }
        m
    }

    /// Reads `/proc/<pid>/status`.
    pub fn read(pid: i32) -> Result<ProcMemory, ProcError> {
        Ok(ProcMemory::parse(&read(PathBuf::from(format!(
            "/proc/{pid}/status"
        )))?))
    }
}

/// The command line of a process, arguments joined by spaces (empty for kernel threads).
pub fn read_cmdline(pid: i32) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let raw = fs::read(&path).map_err(|source| ProcError::Read { path, source })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" "))
}

/// Every numeric entry of `/proc`.
pub fn list_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// `root` and every process below it, given `(pid, ppid)` pairs.
pub fn descendants(root: i32, parents: &[(i32, i32)]) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if out.insert(p) {
            if let Some(c) = children.get(&p) {
                stack.extend(c.iter().copied());
            }
        }
    }
    out
}

/// A snapshot of the stat lines of `root` and all its descendants.
pub fn tree_snapshot(root: i32) -> BTreeMap<i32, ProcStat> {
    let all: Vec<ProcStat> = list_pids()
        .into_iter()
        .filter_map(|p| ProcStat::read(p).ok())
        .collect();
    let pairs: Vec<(i32, i32)> = all.iter().map(|s| (s.pid, s.ppid)).collect();
    let keep = descendants(root, &pairs);
    all.into_iter()
        .filter(|s| keep.contains(&s.pid))
        .map(|s| (s.pid, s))
        .collect()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux in practice).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Page size in KiB.
pub fn page_kib() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64 / 1024
    } else {
        4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
intr 1 2 3\nctxt 1990473161\nbtime 1062191376\n";

    #[test]
    fn parses_machine_cpu_line() {
        let c = CpuTimes::parse(STAT).unwrap();
        assert_eq!(c.user, 10132153);
        assert_eq!(c.idle, 46828483);
        assert_eq!(c.softirq, 25195);
        assert_eq!(c.busy(), 10132153 + 290696 + 3084719 + 25195);
        assert_eq!(c.total(), c.busy() + 46828483 + 16683);
    }

    #[test]
    fn rejects_stat_without_cpu_line() {
        assert!(matches!(
            CpuTimes::parse("intr 1\n"),
            Err(ProcError::Parse { .. })
        ));
        assert!(CpuTimes::parse("cpu  1 x 3 4\n").is_err());
    }

    #[test]
    fn parses_process_stat_with_odd_comm() {
        // comm with a space and a `)` inside, as a process can name itself anything.
        let line = "4242 (model) server) S 4200 4242 4200 0 -1 4194560 1000 0 0 0 \
                    150 25 7 3 20 0 5 0 123456 1048576 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "model) server");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 4200);
        assert_eq!(s.pgrp, 4242);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (150, 25, 7, 3));
        assert_eq!(s.starttime, 123456);
        assert_eq!(s.rss_pages, 2560);
        assert_eq!(s.own_ticks(), 175);
        assert_eq!(s.all_ticks(), 185);
    }

    #[test]
    fn rejects_truncated_process_stat() {
        assert!(ProcStat::parse("12 (x) S 1 12").is_err());
        assert!(ProcStat::parse("garbage").is_err());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let s = ProcStat::read(me).unwrap();
        assert_eq!(s.pid, me);
        let m = ProcMemory::read(me).unwrap();
        assert!(m.vm_hwm_kib >= m.vm_rss_kib && m.vm_rss_kib > 0);
        assert!(read_cmdline(me).unwrap().contains("benches"));
    }

    #[test]
    fn parses_memory_status() {
        let status = "Name:\tcat\nVmPeak:\t  8000 kB\nVmHWM:\t    1200 kB\nVmRSS:\t    1100 kB\n";
        let m = ProcMemory::parse(status);
        assert_eq!(m.vm_hwm_kib, 1200);
        assert_eq!(m.vm_rss_kib, 1100);
        assert_eq!(ProcMemory::parse("Name: kthreadd\n"), ProcMemory::default());
    }

    #[test]
    fn finds_descendants_only() {
        let pairs = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 11),
            (20, 1),
            (21, 20),
        ];
        let d: Vec<i32> = descendants(10, &pairs).into_iter().collect();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &pairs).len(), 1);
    }
}
