//! The Python peer (`benches/peer/peer.py`): N live cameras in one Python process, one
//! thread per camera with OpenCV decode and one shared onnxruntime session, measured with
//! the same window, footage, rates and criteria as the system, in the same run.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::api::Counters;
use super::assets::ModelAsset;
use super::interrupt::{self, Interrupted};
use super::load::LoadMonitor;
use super::measure::{PairResult, RunTiming};
use super::results::{parse_lines, unix_ms, Record};
use super::stats::Summary;

/// How the peer is run.
#[derive(Debug, Clone, Serialize)]
pub struct PeerParams {
    /// The Python interpreter (with numpy, opencv-python-headless and onnxruntime).
    pub python: PathBuf,
    /// `benches/peer/peer.py`.
    pub script: PathBuf,
    /// Intra-op threads of the shared session.
    pub threads: u32,
    /// Idle intra-op threads spin.
    pub spin: bool,
    /// The peer reads the footage scaled to the substream size (the copy
    /// `--source substream-file` plays), as it would read a camera's substream.
    pub substream: bool,
}

impl PeerParams {
    /// The peer as this checkout has it: `$FRAMEBUS_PYTHON` (set by scripts/setup.sh's
    /// env file), else `python3`; the script from the source tree the harness was built in.
    pub fn from_env(threads: u32, spin: bool) -> PeerParams {
        PeerParams {
            python: std::env::var_os("FRAMEBUS_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3")),
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/peer.py"),
            threads,
            spin,
            substream: false,
        }
    }
}

/// Why a peer run failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The interpreter or a file of the run could not be used.
    #[error("peer: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer exited before it was asked to.
    #[error("peer exited early ({status}); last lines of its log:\n{log_tail}")]
    Exited { status: String, log_tail: String },
    /// Not every camera delivered a result in time.
    #[error("peer not ready after {waited:?}; last lines of its log:\n{log_tail}")]
    NotReady { waited: Duration, log_tail: String },
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

/// One measured window of the peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRun {
    pub cameras: usize,
    pub window_s: f64,
    pub pairs: Vec<PairResult>,
    pub latency_ms: Option<Summary>,
    /// CPU seconds of the peer process over the window.
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    pub bad_result_lines: usize,
}

impl PeerRun {
    /// (inferred, requested) over all cameras.
    pub fn totals(&self) -> (usize, f64) {
        self.pairs
            .iter()
            .fold((0, 0.0), |(i, r), p| (i + p.inferred, r + p.requested))
    }
}

/// The running peer; killed (whole process group) when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<(), PeerError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(PeerError::Exited {
                status: status.to_string(),
                log_tail: self.log_tail(),
            }),
            _ => Ok(()),
        }
    }

    fn sleep(&mut self, d: Duration) -> Result<(), PeerError> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.check_alive()?;
            interrupt::sleep(Duration::from_millis(50).min(end - Instant::now()))?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group created for the peer.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(2));
        }
    }
}

/// Runs the peer with `cameras` cameras and measures one window the way
/// [`super::measure::run_window`] measures the system.
#[allow(clippy::too_many_arguments)]
pub fn run_window(
    peer: &PeerParams,
    video: &Path,
    model: &ModelAsset,
    cameras: usize,
    camera_fps: f64,
    detect_fps: f64,
    monitor: &LoadMonitor,
    t: RunTiming,
) -> Result<PeerRun, PeerError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| PeerError::Io { what, source }
    };
    let dir = tempfile::Builder::new()
        .prefix("fb-bench-peer-")
        .tempdir()
        .map_err(io("creating a temp dir"))?;
    let results = dir.path().join("results.jsonl");
    let log = dir.path().join("peer.log");
    let log_file = File::create(&log).map_err(io("creating the log"))?;
    let mut child = Command::new(&peer.python)
        .arg(&peer.script)
        .arg("--video")
        .arg(video)
        .arg("--model")
        .arg(&model.path)
        .args(["--model-id", &model.id])
        .args(["--cameras", &cameras.to_string()])
        .args(["--camera-fps", &camera_fps.to_string()])
        .args(["--detect-fps", &detect_fps.to_string()])
        .args(["--threads", &peer.threads.to_string()])
        .args(["--spin", if peer.spin { "true" } else { "false" }])
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(io(&format!("starting {}", peer.python.display())))?;
    let stdout = child.stdout.take();
    let mut run = Running {
        child,
        log: log.clone(),
    };
    // `ready` on stdout once every camera has a result.
    let (tx, rx) = mpsc::channel();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
    }
    let started = Instant::now();
    loop {
        run.check_alive()?;
        interrupt::check()?;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => break,
            Err(_) if started.elapsed() > t.ready_timeout => {
                return Err(PeerError::NotReady {
                    waited: t.ready_timeout,
                    log_tail: run.log_tail(),
                })
            }
            Err(_) => {}
        }
    }
    run.sleep(t.warmup)?;
    monitor.begin_window();
    let t0 = unix_ms();
    let w0 = Instant::now();
    run.sleep(t.window)?;
    let usage = monitor.report();
    let t1 = unix_ms();
    let window_s = w0.elapsed().as_secs_f64();
    run.sleep(t.tail)?;
    run.stop(Duration::from_secs(5));
    let mut buf = std::fs::read(&results).map_err(io("reading the results"))?;
    buf.push(b'\n');
    let (records, bad_result_lines) = parse_lines(&mut buf);
    let pid = run.child.id() as i32;
    let me = usage.processes.iter().find(|p| p.pid == pid);
    let ids: Vec<String> = (0..cameras).map(|i| format!("cam{i}")).collect();
    let pairs = pairs(&ids, &model.id, detect_fps, &records, t0, t1);
    let mut lat = in_window(&records, t0, t1)
        .map(|r| r.latency_ms.capture_to_result)
        .collect();
    Ok(PeerRun {
        cameras,
        window_s,
        latency_ms: Summary::of(&mut lat),
        pairs,
        cpu_s: me.map_or(0.0, |p| p.cpu_s),
        peak_rss_mib: me.map_or(0.0, |p| p.peak_rss_mib),
        bad_result_lines,
    })
}

fn in_window(records: &[Record], t0: u64, t1: u64) -> impl Iterator<Item = &Record> {
    records
        .iter()
        .filter(move |r| r.capture_unix_ms >= t0 && r.capture_unix_ms < t1)
}

/// Per camera: results of frames captured in `[t0, t1)` ms against `fps` x window.
pub fn pairs(
    cameras: &[String],
    model: &str,
    fps: f64,
    records: &[Record],
    t0: u64,
    t1: u64,
) -> Vec<PairResult> {
    let window_s = t1.saturating_sub(t0) as f64 / 1e3;
    cameras
        .iter()
        .map(|cam| {
            let mut lat: Vec<f64> = in_window(records, t0, t1)
                .filter(|r| &r.camera == cam)
                .map(|r| r.latency_ms.capture_to_result)
                .collect();
            let requested = fps * window_s;
            PairResult {
                camera: cam.clone(),
                model: model.to_string(),
                target_fps: fps,
                requested,
                inferred: lat.len(),
                ratio: if requested > 0.0 {
                    lat.len() as f64 / requested
                } else {
                    0.0
                },
                counters: Counters::default(),
                latency_ms: Summary::of(&mut lat),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::results::Latencies;

    fn rec(camera: &str, capture: u64) -> Record {
        Record {
            camera: camera.into(),
            model: "m".into(),
            frame_id: 0,
            capture_unix_ms: capture,
            result_unix_ms: capture + 40,
            latency_ms: Latencies {
                capture_to_result: 40.0,
                request_to_result: 0.0,
                server_total: 0.0,
                inference: 0.0,
            },
            detections: vec![],
        }
    }

    #[test]
    fn pairs_count_each_camera_inside_the_window() {
        let mut recs: Vec<Record> = (0..10).map(|i| rec("cam0", 1000 + i * 200)).collect();
        recs.push(rec("cam0", 3000));
        recs.push(rec("cam1", 2000));
        let ids = vec!["cam0".to_string(), "cam1".to_string(), "cam2".to_string()];
        let p = pairs(&ids, "m", 5.0, &recs, 1000, 3000);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].inferred, p[0].requested), (10, 10.0));
        assert_eq!(p[1].inferred, 1);
        assert_eq!(p[2].inferred, 0);
        assert!(p[2].latency_ms.is_none());
    }
}
