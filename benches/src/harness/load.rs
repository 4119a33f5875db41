//! Background sampling of CPU use: the system's own processes (the harness and everything
//! below it) versus the whole machine, so a run can warn when something else was busy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procstat::{
    clock_ticks_per_second, read_cmdline, tree_snapshot, CpuTimes, ProcMemory, ProcStat,
};

/// CPU and memory of one process of the system during the window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub pid: i32,
    /// What the process is, from its command line (e.g. `model-server yolov8`).
    pub label: String,
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    /// Whether the process was still running at the last sample.
    pub alive: bool,
}

/// What the monitor saw since it started (machine load) and since the window began
/// (per-process usage).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub seconds: f64,
    pub cores: usize,
    /// Busy share of all cores, percent of the machine.
    pub machine_busy_pct: f64,
    /// Share used by the harness and the system under test.
    pub own_pct: f64,
    /// Everything else on the machine (other users, builds, ...), percent of the machine.
    pub other_pct: f64,
    /// Highest `other_pct` over one sampling interval.
    pub other_peak_pct: f64,
    pub processes: Vec<ProcessUsage>,
}

impl LoadReport {
    /// The warning to print when other load exceeded `threshold_pct`, if it did.
    pub fn warning(&self, threshold_pct: f64) -> Option<String> {
        (self.other_pct > threshold_pct).then(|| {
            format!(
                "WARNING: other load on the machine averaged {:.1}% (peak {:.1}%) of {} cores \
                 during the run (threshold {threshold_pct}%); numbers may be pessimistic, \
                 quote medians of repeated runs",
                self.other_pct, self.other_peak_pct, self.cores
            )
        })
    }
}

#[derive(Debug)]
struct Tracked {
    label: String,
    base_own: u64,
    last: ProcStat,
    peak_rss_kib: u64,
    alive: bool,
}

#[derive(Debug)]
struct State {
    started: Instant,
    first_cpu: CpuTimes,
    last_cpu: CpuTimes,
    own_ticks: u64,
    other_peak_pct: f64,
    procs: BTreeMap<(i32, u64), Tracked>,
}

/// Samples `/proc` on a background thread until dropped.
#[derive(Debug)]
pub struct LoadMonitor {
    root: i32,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoadMonitor {
    /// Starts sampling the tree below `root` (normally the harness's own pid) every `interval`.
    pub fn start(root: i32, interval: Duration) -> LoadMonitor {
        let cpu = CpuTimes::read().unwrap_or_default();
        let mut procs = BTreeMap::new();
        for (pid, st) in tree_snapshot(root) {
            procs.insert((pid, st.starttime), track(pid, st, true));
        }
        let state = Arc::new(Mutex::new(State {
            started: Instant::now(),
            first_cpu: cpu,
            last_cpu: cpu,
            own_ticks: 0,
            other_peak_pct: 0.0,
            procs,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("load-monitor".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(interval);
                        sample(root, &state);
                    }
                })
                .ok()
        };
        LoadMonitor {
            root,
            state,
            stop,
            thread,
        }
    }

    /// Per-process CPU seconds count from now on; processes gone by now are dropped.
    pub fn begin_window(&self) {
        sample(self.root, &self.state);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.procs.retain(|_, t| t.alive);
        for t in st.procs.values_mut() {
            t.base_own = t.last.own_ticks();
        }
    }

    /// Takes a fresh sample and summarises.
    pub fn report(&self) -> LoadReport {
        sample(self.root, &self.state);
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let hz = clock_ticks_per_second() as f64;
        let total = st.last_cpu.total().saturating_sub(st.first_cpu.total()) as f64;
        let busy = st.last_cpu.busy().saturating_sub(st.first_cpu.busy()) as f64;
        let own = (st.own_ticks as f64).min(busy);
        let pct = |x: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
        let page = super::procstat::page_kib();
        let processes = st
            .procs
            .values()
            .map(|t| ProcessUsage {
                pid: t.last.pid,
                label: t.label.clone(),
                cpu_s: t.last.own_ticks().saturating_sub(t.base_own) as f64 / hz,
                peak_rss_mib: t.peak_rss_kib.max(t.last.rss_pages * page) as f64 / 1024.0,
                alive: t.alive,
            })
            .collect();
        LoadReport {
            seconds: st.started.elapsed().as_secs_f64(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine_busy_pct: pct(busy),
            own_pct: pct(own),
            other_pct: pct((busy - own).max(0.0)),
            other_peak_pct: st.other_peak_pct,
            processes,
        }
    }

    /// Labels and pids of the live processes whose label starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Vec<(i32, String)> {
        sample(self.root, &self.state);
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.procs
            .values()
            .filter(|t| t.alive && t.label.starts_with(prefix))
            .map(|t| (t.last.pid, t.label.clone()))
            .collect()
    }
}

impl Drop for LoadMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn track(pid: i32, st: ProcStat, at_start: bool) -> Tracked {
    let cmdline = read_cmdline(pid).unwrap_or_default();
    Tracked {
        label: label_for(&cmdline, &st.comm, pid == std::process::id() as i32),
        // A process already running when sampling began counts from then; one born
        // later counts from its birth.
        base_own: if at_start { st.own_ticks() } else { 0 },
        peak_rss_kib: ProcMemory::read(pid).map_or(0, |m| m.vm_hwm_kib),
        last: st,
        alive: true,
    }
}

fn sample(root: i32, state: &Mutex<State>) {
    let Ok(cpu) = CpuTimes::read() else { return };
    let snap = tree_snapshot(root);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    // Own ticks this interval: observed growth of every live process (its own time and that
    // of children it reaped), minus the last-seen totals of processes that vanished, whose
    // final time then shows up in their parent's reaped-children counters.
    let mut own: i64 = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (pid, s) in snap {
        let key = (pid, s.starttime);
        seen.insert(key);
        match st.procs.get_mut(&key) {
            Some(t) => {
                own += s.all_ticks() as i64 - t.last.all_ticks() as i64;
                if let Ok(m) = ProcMemory::read(pid) {
                    t.peak_rss_kib = t.peak_rss_kib.max(m.vm_hwm_kib);
                }
                t.last = s;
                t.alive = true;
            }
            None => {
                own += s.all_ticks() as i64;
                let t = track(pid, s, false);
                st.procs.insert(key, t);
            }
        }
    }
    for (key, t) in st.procs.iter_mut() {
        if t.alive && !seen.contains(key) {
            t.alive = false;
            own -= t.last.all_ticks() as i64;
        }
    }
    let d_total = cpu.total().saturating_sub(st.last_cpu.total());
    let d_busy = cpu.busy().saturating_sub(st.last_cpu.busy());
    let own = (own.max(0) as u64).min(d_busy);
    if d_total > 0 {
        let other = 100.0 * (d_busy - own) as f64 / d_total as f64;
        st.other_peak_pct = st.other_peak_pct.max(other);
    }
    st.own_ticks += own;
    st.last_cpu = cpu;
}

/// A short name for a process from its command line: the program's file name plus the
/// value of the first identifying flag (camera or model id), or the config's file stem.
pub fn label_for(cmdline: &str, comm: &str, is_harness: bool) -> String {
    if is_harness {
        return "bench (harness)".to_string();
    }
    let args: Vec<&str> = cmdline.split(' ').collect();
    let Some(prog) = args.first().filter(|a| !a.is_empty()) else {
        return comm.to_string();
    };
    let base = |p: &'_ str| -> String {
        Path::new(p)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(p)
            .to_string()
    };
    let mut name = base(prog);
    // An interpreter: name the script instead.
    if name.starts_with("python") {
        if let Some(script) = args.iter().skip(1).find(|a| !a.starts_with('-')) {
            name = base(script);
        }
    }
    const ID_FLAGS: [&str; 6] = [
        "--camera-id",
        "--camera",
        "--model-id",
        "--id",
        "--name",
        "--config",
    ];
    for flag in ID_FLAGS {
        let value = args.iter().enumerate().find_map(|(i, a)| {
            if *a == flag {
                args.get(i + 1).copied()
            } else {
                a.strip_prefix(flag)?.strip_prefix('=')
            }
        });
        if let Some(v) = value {
            let v = if flag == "--config" {
                Path::new(v)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(v)
            } else {
                v
            };
            return format!("{name} {v}");
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_command_lines() {
        assert_eq!(
            label_for(
                "/x/target/release/frame-kernel --camera-id cam0 --ring-dir /dev/shm",
                "frame-kernel",
                false
            ),
            "frame-kernel cam0"
        );
        assert_eq!(
            label_for(
                "/x/model-server --model-id=yolov8 --socket /tmp/s",
                "model-server",
                false
            ),
            "model-server yolov8"
        );
        assert_eq!(
            label_for(
                "/x/core-agent --config /tmp/b/system.toml",
                "core-agent",
                false
            ),
            "core-agent system"
        );
        assert_eq!(label_for("", "kworker", false), "kworker");
        assert_eq!(label_for("/bin/ffmpeg -i x", "ffmpeg", false), "ffmpeg");
        assert_eq!(
            label_for(
                "/usr/bin/python3 /w/tools/fake_rtsp_camera.py --port 0",
                "python3",
                false
            ),
            "fake_rtsp_camera.py"
        );
        assert_eq!(label_for("anything", "bench", true), "bench (harness)");
    }

    #[test]
    fn monitor_counts_own_busy_child() {
        let me = std::process::id() as i32;
        let mon = LoadMonitor::start(me, Duration::from_millis(50));
        mon.begin_window();
        // Burn 0.3 s of CPU in this process (measured, not timed): it must be attributed.
        let hz = clock_ticks_per_second();
        let start = ProcStat::read(me).unwrap().own_ticks();
        let mut x = 0u64;
        while ProcStat::read(me).unwrap().own_ticks() < start + hz * 3 / 10 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let r = mon.report();
        let me_usage = r.processes.iter().find(|p| p.pid == me).unwrap();
        assert!(me_usage.cpu_s >= 0.3, "own cpu {}", me_usage.cpu_s);
        assert!(r.own_pct > 0.0);
        assert!(r.other_pct >= 0.0 && r.other_pct <= 100.0);
    }
}
