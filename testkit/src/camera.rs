//! Fake cameras: a video file played into a ring by the real `frame-kernel`
//! ([`FileCamera`]), and RTSP served by the project's `tools/fake_rtsp_camera.py`
//! ([`RtspCamera`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shm_ring::RingReader;

use crate::process::{signal, ChildGuard};

/// Why a fake camera did not start.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// The fake camera script is not there.
    #[error("fake camera script {path} not found")]
    MissingScript {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The process could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program (python or frame-kernel).
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `frame-kernel` binary could not be located or built.
    #[error("no frame-kernel binary")]
    Binary(#[source] crate::bins::BinError),
    /// The camera did not report ready in time.
    #[error("fake camera not ready after {waited:?}: {reason}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// What was missing.
        reason: String,
    },
}

/// The fake RTSP camera script of this workspace.
pub fn rtsp_script() -> PathBuf {
    crate::workspace_root().join("tools/fake_rtsp_camera.py")
}

/// Whether `py` can run the fake RTSP camera (GStreamer's RTSP server through python3-gi).
pub fn can_serve_rtsp(py: &Path) -> bool {
    Command::new(py)
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The python for the fake RTSP camera: `$FRAMEBUS_PYTHON` if it can, else Debian's
/// `/usr/bin/python3`; [`crate::missing`] when neither can.
pub fn camera_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("FRAMEBUS_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/python3")]);
    for py in candidates {
        if can_serve_rtsp(&py) {
            return Some(py);
        }
    }
    crate::missing("python3 with GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)")
}

/// Parses the script's `READY <port>` line.
pub fn parse_ready(line: &str) -> Option<u16> {
    line.trim().strip_prefix("READY ")?.trim().parse().ok()
}

/// `tools/fake_rtsp_camera.py` serving files as endless live H.264, one mount per camera,
/// on 127.0.0.1. The script runs in its own process group, stopped (`SIGTERM`, then
/// `SIGKILL`) and reaped on drop.
#[derive(Debug)]
pub struct RtspCamera {
    child: Option<Child>,
    /// The bound port.
    pub port: u16,
    /// The served `.h264` file per camera name (for reference decoding).
    pub sources: HashMap<String, PathBuf>,
    /// When the camera printed READY.
    pub ready_at: Instant,
}

/// Settings of an [`RtspCamera`].
#[derive(Debug, Clone)]
pub struct RtspCameraBuilder {
    python: PathBuf,
    script: PathBuf,
    port: u16,
    cache: Option<PathBuf>,
    timeout: Duration,
    cameras: Vec<(String, PathBuf)>,
}

impl RtspCamera {
    /// A camera run by `python` ([`camera_python`]); port 0 (any free one), the script's
    /// default cache, 300 s to become ready (the first run re-encodes each mp4 once).
    pub fn builder(python: impl Into<PathBuf>) -> RtspCameraBuilder {
        RtspCameraBuilder {
            python: python.into(),
            script: rtsp_script(),
            port: 0,
            cache: None,
            timeout: Duration::from_secs(300),
            cameras: Vec::new(),
        }
    }

    /// `rtsp://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{name}", self.port)
    }

    /// The script's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `sig` to the script (`SIGSTOP`/`SIGCONT`: a camera that freezes).
    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    /// `SIGKILL` the script's process group and reap it: the camera vanishes mid-stream.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

fn kill_group(pid: u32, sig: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) on the process group this module created for the script.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

impl RtspCameraBuilder {
    /// The TCP port (0: any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Where converted sources are cached (`--cache`).
    pub fn cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// Another script than `tools/fake_rtsp_camera.py`.
    pub fn script(mut self, script: impl Into<PathBuf>) -> Self {
        self.script = script.into();
        self
    }

    /// How long to wait for READY.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Serves `source` (an mp4 or an Annex-B `.h264`) as `/<name>`.
    pub fn camera(mut self, name: &str, source: impl Into<PathBuf>) -> Self {
        self.cameras.push((name.to_owned(), source.into()));
        self
    }

    /// Starts the script and waits for its `READY <port>` line.
    pub fn start(self) -> Result<RtspCamera, CameraError> {
        if !self.script.is_file() {
            return Err(CameraError::MissingScript { path: self.script });
        }
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(["--port", &self.port.to_string()]);
        if let Some(cache) = &self.cache {
            cmd.arg("--cache").arg(cache);
        }
        for (name, src) in &self.cameras {
            cmd.arg(format!("{name}={}", src.display()));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| CameraError::Spawn {
                program: self.python.clone(),
                source,
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut cam = RtspCamera {
            child: Some(child),
            port: 0,
            sources: HashMap::new(),
            ready_at: Instant::now(),
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        if let Some(mut err) = stderr {
            // Drained so GStreamer warnings never block the camera.
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = err.read_to_end(&mut sink);
            });
        }
        let start = Instant::now();
        loop {
            let left = self.timeout.saturating_sub(start.elapsed());
            let Ok(line) = rx.recv_timeout(left) else {
                // `cam` drops here: the script is stopped.
                return Err(CameraError::NotReady {
                    waited: start.elapsed(),
                    reason: "no READY line (is GStreamer's RTSP server installed, the port free?)"
                        .into(),
                });
            };
            if let Some(port) = parse_ready(&line) {
                cam.port = port;
                cam.ready_at = Instant::now();
                return Ok(cam);
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["SOURCE", name, path] = parts.as_slice() {
                cam.sources.insert((*name).to_owned(), PathBuf::from(path));
            }
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            kill_group(pid, libc::SIGCONT);
            kill_group(pid, libc::SIGTERM);
            if crate::process::wait_timeout(&mut c, Duration::from_secs(3)).is_none() {
                kill_group(pid, libc::SIGKILL);
                let _ = c.wait();
            }
        }
    }
}

/// A video file played as a live camera into `<ring_dir>/<name>.ring` by the real
/// `frame-kernel` (`--loop`, realtime pacing); stopped on drop.
#[derive(Debug)]
pub struct FileCamera {
    /// The kernel process.
    pub kernel: ChildGuard,
    /// A reader of the camera's ring.
    pub reader: RingReader,
    /// The kernel's log file.
    pub log: PathBuf,
}

impl FileCamera {
    /// Starts `frame-kernel --camera-id <name> --source <video> --ring-dir <ring_dir> --loop
    /// <extra...>`, its log in `<log_dir>/kernel-<name>.log`, and waits up to 20 s for its
    /// ring.
    pub fn start(
        name: &str,
        video: &Path,
        ring_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> Result<FileCamera, CameraError> {
        let kernel = crate::bins::bin("frame-kernel").map_err(CameraError::Binary)?;
        let log = log_dir.join(format!("kernel-{name}.log"));
        let file = std::fs::File::create(&log).map_err(|source| CameraError::Spawn {
            program: log.clone(),
            source,
        })?;
        let child = Command::new(&kernel)
            .args(["--camera-id", name, "--source"])
            .arg(video)
            .arg("--ring-dir")
            .arg(ring_dir)
            .arg("--loop")
            .args(extra)
            .env("FRAMEBUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|source| CameraError::Spawn {
                program: kernel.clone(),
                source,
            })?;
        let mut guard = ChildGuard::new(child).grace(Duration::from_secs(10));
        let limit = Duration::from_secs(20);
        let start = Instant::now();
        let reader = loop {
            match RingReader::open(ring_dir, name) {
                Ok(r) => break r,
                Err(e) => {
                    if let Some(st) = guard.try_wait() {
                        return Err(CameraError::NotReady {
                            waited: start.elapsed(),
                            reason: format!(
                                "frame-kernel exited ({st}): {}",
                                std::fs::read_to_string(&log).unwrap_or_default()
                            ),
                        });
                    }
                    if start.elapsed() > limit {
                        return Err(CameraError::NotReady {
                            waited: start.elapsed(),
                            reason: format!("ring {name} never opened: {e}"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Ok(FileCamera {
            kernel: guard,
            reader,
            log,
        })
    }

    /// The kernel's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_line() {
        assert_eq!(parse_ready("READY 41234\n"), Some(41234));
        assert_eq!(parse_ready("SOURCE cam0 /tmp/x.h264"), None);
        assert_eq!(parse_ready("READY x"), None);
    }

    #[test]
    fn script_is_part_of_the_workspace() {
        assert!(rtsp_script().is_file(), "{}", rtsp_script().display());
    }
}
