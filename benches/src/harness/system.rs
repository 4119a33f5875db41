//! Starting and stopping the real system (core-agent and the kernels and servers it
//! supervises) on temp dirs, with cleanup that holds even on error or panic.
//!
//! Cleanup: core-agent runs in its own process group and gets SIGTERM (its graceful
//! shutdown stops the children and removes rings and sockets). Whatever is still alive
//! after the grace period — core-agent or any process below it, each in its own process
//! group — gets SIGKILL by process group. The harness is a child subreaper, so children
//! orphaned by a dead core-agent are re-parented to it and can still be found and reaped.
//! Rings live in a temp dir under /dev/shm and sockets in a temp dir under /tmp; both are
//! removed on drop, and files left in them by the system are reported as leaks.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tempfile::TempDir;

use super::config::{RunPaths, Source, SourceKind, SystemSpec};
use super::http;
use super::interrupt::{self, Interrupted};
use super::procstat::{self, ProcStat};
use super::results::ResultsTail;

/// A problem starting, querying or stopping the system.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A binary of the system is not built.
    #[error(
        "{path} not found: build the system first \
         (`cargo build --release -p core-agent -p frame-kernel -p model-server -p benches`) \
         or pass --bin-dir"
    )]
    MissingBinary { path: PathBuf },
    /// A temp dir or file could not be created.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The generated config could not be rendered.
    #[error("rendering the config: {0}")]
    Config(#[from] toml::ser::Error),
    /// core-agent exited while the harness still needed it.
    #[error("core-agent exited ({status}); last log lines:\n{log_tail}")]
    Exited { status: String, log_tail: String },
    /// The system did not become ready in time.
    #[error("system not ready after {waited:?} (last /ready answer: {last}); last log lines:\n{log_tail}")]
    NotReady {
        waited: Duration,
        last: String,
        log_tail: String,
    },
    /// The status API failed or answered something unexpected.
    #[error("status API: {0}")]
    Http(#[from] http::HttpError),
    #[error("status API {path}: {reason}")]
    Api { path: String, reason: String },
    #[error(transparent)]
    Rtsp(#[from] super::rtsp::RtspError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SystemError {
    let what = what.into();
    move |source| SystemError::Io { what, source }
}

/// Makes the harness the reaper of orphaned descendants (so a killed core-agent's children
/// stay findable and are not left to init). Idempotent.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a process attribute.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// The directory of the running executable (where cargo puts the other binaries).
pub fn default_bin_dir() -> PathBuf {
    framebus_testkit::bins::bin_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// What happened when the system was stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StopReport {
    /// core-agent exited by itself after SIGTERM, within the grace period.
    pub graceful: bool,
    pub stop_ms: u64,
    /// Processes that had to be SIGKILLed.
    pub killed: Vec<String>,
    /// Files the system left in the ring or socket directory.
    pub leaked_files: Vec<String>,
}

/// A running system; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct System {
    child: Option<Child>,
    pid: i32,
    ring_dir: Option<TempDir>,
    work_dir: Option<TempDir>,
    pub paths: RunPaths,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub results: ResultsTail,
    /// Every process seen below core-agent: (pid, starttime) -> label.
    seen: BTreeMap<(i32, u64), String>,
    pub started: Instant,
    /// Fake RTSP cameras serving the cameras (dropped after core-agent is stopped).
    _cameras: Option<super::rtsp::FakeCameras>,
    /// The API's bearer token, handed to core-agent in `FRAMEBUS_API_TOKEN`.
    api_token: String,
}

/// A fresh API token: 16 random bytes as hex.
fn new_api_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A free loopback port (bound and released; the race with other users is harmless here).
pub fn free_port() -> std::io::Result<u16> {
    framebus_testkit::net::free_port()
}

impl System {
    /// Writes the config for `spec` and starts core-agent from `bin_dir`. Does not wait
    /// for readiness: see [`System::wait_ready`].
    pub fn start(spec: &SystemSpec, bin_dir: &Path) -> Result<System, SystemError> {
        become_subreaper();
        for bin in ["core-agent", "frame-kernel", "model-server"] {
            let path = bin_dir.join(bin);
            if !path.is_file() {
                return Err(SystemError::MissingBinary { path });
            }
        }
        let ring_dir = tempfile::Builder::new()
            .prefix("fb-bench-")
            // An owned 0700 ring dir: frame-kernel and model-server refuse looser ones.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in("/dev/shm")
            .map_err(io_err("creating the ring dir in /dev/shm"))?;
        let work_dir = tempfile::Builder::new()
            .prefix("fb-bench-")
            .tempdir()
            .map_err(io_err("creating the work dir"))?;
        let socket_dir = work_dir.path().join("sock");
        // 0700: core-agent refuses a socket dir others can read or write (threat model).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&socket_dir)
            .map_err(io_err("creating the socket dir"))?;
        let port = free_port().map_err(io_err("finding a free port"))?;
        let paths = RunPaths {
            api_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ring_dir: ring_dir.path().to_path_buf(),
            socket_dir,
            bin_dir: bin_dir.to_path_buf(),
            results: work_dir.path().join("results.jsonl"),
        };
        let (spec, fake_cameras) = with_fake_cameras(spec)?;
        let config_path = work_dir.path().join("system.toml");
        std::fs::write(&config_path, spec.to_toml(&paths)?)
            .map_err(io_err("writing the config"))?;
        let log_path = work_dir.path().join("core-agent.log");
        let log = File::create(&log_path).map_err(io_err("creating the log"))?;
        let log2 = log.try_clone().map_err(io_err("creating the log"))?;
        let results = ResultsTail::start(&paths.results, Duration::from_millis(10));
        let api_token = new_api_token().map_err(io_err("reading /dev/urandom"))?;
        let child = Command::new(bin_dir.join("core-agent"))
            .arg("--config")
            .arg(&config_path)
            .env_remove("FRAMEBUS_RING_DIR")
            .env_remove("FRAMEBUS_SOCKET_DIR")
            .env("FRAMEBUS_API_TOKEN", &api_token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!(
                "starting {}",
                bin_dir.join("core-agent").display()
            )))?;
        Ok(System {
            pid: child.id() as i32,
            child: Some(child),
            ring_dir: Some(ring_dir),
            work_dir: Some(work_dir),
            paths,
            config_path,
            log_path,
            results,
            seen: BTreeMap::new(),
            started: Instant::now(),
            _cameras: fake_cameras,
            api_token,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The last `n` lines of core-agent's log (its children log there too).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails if core-agent has exited.
    pub fn check_alive(&mut self) -> Result<(), SystemError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(SystemError::Exited {
                    status: status.to_string(),
                    log_tail: self.log_tail(30),
                });
            }
        }
        self.note_processes();
        Ok(())
    }

    /// Sleeps `d`, failing early when interrupted or when core-agent exits.
    pub fn sleep(&mut self, d: Duration) -> Result<(), SystemError> {
        let end = Instant::now() + d;
        loop {
            self.check_alive()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            interrupt::sleep((end - now).min(Duration::from_millis(250)))?;
        }
    }

    /// Remembers the processes below core-agent (for cleanup and labels).
    fn note_processes(&mut self) {
        for (pid, st) in procstat::tree_snapshot(self.pid) {
            self.seen.entry((pid, st.starttime)).or_insert_with(|| {
                super::load::label_for(
                    &procstat::read_cmdline(pid).unwrap_or_default(),
                    &st.comm,
                    false,
                )
            });
        }
    }

    /// GETs an API path and parses the JSON body.
    pub fn api_json(&self, path: &str) -> Result<serde_json::Value, SystemError> {
        let r = http::get(
            self.paths.api_addr,
            path,
            Some(&self.api_token),
            Duration::from_secs(5),
        )?;
        if r.status != 200 {
            return Err(SystemError::Api {
                path: path.to_string(),
                reason: format!("HTTP {}: {}", r.status, r.body.trim()),
            });
        }
        serde_json::from_str(&r.body).map_err(|e| SystemError::Api {
            path: path.to_string(),
            reason: format!("not JSON: {e}"),
        })
    }

    /// GETs an API path as text.
    pub fn api_text(&self, path: &str) -> Result<String, SystemError> {
        Ok(http::get(
            self.paths.api_addr,
            path,
            Some(&self.api_token),
            Duration::from_secs(5),
        )?
        .body)
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, SystemError> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < timeout {
            interrupt::check()?;
            self.check_alive()?;
            match http::get(self.paths.api_addr, "/ready", None, Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => {
                    self.note_processes();
                    return Ok(start.elapsed());
                }
                Ok(r) => last = format!("HTTP {} {}", r.status, r.body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(SystemError::NotReady {
            waited: timeout,
            last,
            log_tail: self.log_tail(30),
        })
    }

    /// Waits until every (camera, model) pair of `spec` has delivered at least one result.
    pub fn wait_first_results(
        &mut self,
        spec: &SystemSpec,
        timeout: Duration,
    ) -> Result<Duration, SystemError> {
        let start = Instant::now();
        loop {
            interrupt::check()?;
            self.check_alive()?;
            let recs = self.results.records();
            let missing: Vec<String> = spec
                .subscriptions
                .iter()
                .filter(|s| {
                    !recs
                        .iter()
                        .any(|r| r.camera == s.camera && r.model == s.model)
                })
                .map(|s| format!("{}->{}", s.camera, s.model))
                .collect();
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(SystemError::NotReady {
                    waited: timeout,
                    last: format!("no results yet for {}", missing.join(", ")),
                    log_tail: self.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pid of a model's server, from `/models/<id>`.
    pub fn model_pid(&self, model: &str) -> Result<i32, SystemError> {
        let v = self.api_json(&format!("/models/{model}"))?;
        v["server"]["pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| SystemError::Api {
                path: format!("/models/{model}"),
                reason: "no server.pid".into(),
            })
    }

    /// Pid of a camera's frame kernel, from `/cameras/<id>`.
    pub fn kernel_pid(&self, camera: &str) -> Result<i32, SystemError> {
        let v = self.api_json(&format!("/cameras/{camera}"))?;
        v["kernel"]["pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| SystemError::Api {
                path: format!("/cameras/{camera}"),
                reason: "no kernel.pid".into(),
            })
    }

    /// Stops the system (SIGTERM, then SIGKILL after `grace`) and reports what it left.
    pub fn stop(mut self, grace: Duration) -> StopReport {
        self.shutdown(grace)
    }

    fn shutdown(&mut self, grace: Duration) -> StopReport {
        let mut report = StopReport::default();
        let start = Instant::now();
        self.note_processes();
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group we created for core-agent.
            unsafe { libc::kill(-self.pid, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => {
                        report.graceful = true;
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        self.note_processes();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        report.killed.push(format!("core-agent (pid {})", self.pid));
                        // SAFETY: as above.
                        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // Anything of the system still alive (a child core-agent did not stop, or one
        // orphaned by a killed core-agent and re-parented to the harness): SIGKILL its
        // process group, then reap it.
        let me = std::process::id() as i32;
        // SAFETY: getpgrp has no preconditions.
        let my_pgrp = unsafe { libc::getpgrp() };
        for ((pid, starttime), label) in &self.seen {
            let Ok(st) = ProcStat::read(*pid) else {
                continue;
            };
            if st.starttime != *starttime || st.state == 'Z' || *pid == me {
                reap(*pid);
                continue;
            }
            report.killed.push(format!(
                "{label} (pid {pid}) still alive after core-agent stopped"
            ));
            // SAFETY: kill(2) on a process (group) this run started; never the harness's own group.
            unsafe {
                if st.pgrp > 1 && st.pgrp != my_pgrp {
                    libc::kill(-st.pgrp, libc::SIGKILL);
                }
                libc::kill(*pid, libc::SIGKILL);
            }
            reap(*pid);
        }
        for dir in [self.paths.ring_dir.clone(), self.paths.socket_dir.clone()] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    report.leaked_files.push(e.path().display().to_string());
                }
            }
        }
        report.stop_ms = start.elapsed().as_millis() as u64;
        report
    }

    /// Every process that ran below core-agent so far: (pid, label).
    pub fn processes_seen(&mut self) -> Vec<(i32, String)> {
        self.note_processes();
        self.seen
            .iter()
            .map(|((p, _), l)| (*p, l.clone()))
            .collect()
    }

    /// Keeps the work dir (config, log, results) instead of deleting it; returns its path.
    pub fn keep_work_dir(&mut self) -> Option<PathBuf> {
        self.work_dir.take().map(|d| d.keep())
    }
}

/// For `SourceKind::Rtsp`, starts fake RTSP cameras serving each file camera's video and
/// points the cameras at them; for `SourceKind::Substream`, each camera gets two streams
/// (`<id>`: the video, its `record_source`; `<id>-sub`: the video scaled to 480x270,
/// its `source`); for `SourceKind::SubstreamFile`, the file cameras play the scaled
/// copy instead.
fn with_fake_cameras(
    spec: &SystemSpec,
) -> Result<(SystemSpec, Option<super::rtsp::FakeCameras>), SystemError> {
    let mut spec = spec.clone();
    if spec.source == SourceKind::File {
        return Ok((spec, None));
    }
    let Some(video) = spec.cameras.iter().find_map(|c| match &c.source {
        Source::File { path, .. } => Some(path.clone()),
        Source::Rtsp { .. } => None,
    }) else {
        return Ok((spec, None));
    };
    if spec.source == SourceKind::SubstreamFile {
        let sub = super::rtsp::scaled_copy(&video, super::rtsp::SUBSTREAM)?;
        for c in &mut spec.cameras {
            if let Source::File { path, .. } = &mut c.source {
                path.clone_from(&sub);
            }
        }
        return Ok((spec, None));
    }
    let sub = spec.source == SourceKind::Substream;
    let names: Vec<String> = spec.cameras.iter().map(|c| c.id.clone()).collect();
    let cams = super::rtsp::FakeCameras::start(
        &super::rtsp::default_script(),
        &names,
        &video,
        sub.then_some(super::rtsp::SUBSTREAM),
        Duration::from_secs(180),
    )?;
    for c in &mut spec.cameras {
        c.source = if sub {
            Source::Rtsp {
                url: cams.url(&super::rtsp::substream_name(&c.id)),
                record: Some(cams.url(&c.id)),
            }
        } else {
            Source::Rtsp {
                url: cams.url(&c.id),
                record: None,
            }
        };
    }
    Ok((spec, Some(cams)))
}

/// Waits for `pid` if it is a child of the harness (an orphan re-parented to it), so no
/// zombie is left; ignores anything else.
fn reap(pid: i32) {
    for _ in 0..50 {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; fails harmlessly (ECHILD) when
        // the pid is not our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if self.child.is_some() {
            let r = self.shutdown(Duration::from_secs(5));
            if !r.killed.is_empty() {
                eprintln!("bench: cleanup killed: {}", r.killed.join(", "));
            }
        }
        // TempDirs remove the ring and socket dirs (and anything leaked in them).
        self.ring_dir.take();
        self.work_dir.take();
    }
}
