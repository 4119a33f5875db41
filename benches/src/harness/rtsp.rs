//! Fake RTSP cameras for the system under test: the project's own
//! `tools/fake_rtsp_camera.py` (GStreamer's RTSP server on 127.0.0.1) serving the footage
//! as endless live H.264, one mount per camera.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A problem starting the fake cameras.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("fake camera script {path} not found")]
    MissingScript { path: PathBuf },
    #[error("starting {python} {script}: {source}")]
    Spawn {
        python: String,
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fake cameras not ready after {waited:?}: {reason}")]
    NotReady { waited: Duration, reason: String },
}

/// The fake camera script of this workspace.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fake_rtsp_camera.py")
}

/// The python that has GStreamer's bindings: `$FRAMEBUS_PYTHON`, else Debian's.
pub fn python() -> String {
    std::env::var("FRAMEBUS_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/bin/python3".to_string())
}

/// Parses the script's `READY <port>` line.
pub fn parse_ready(line: &str) -> Option<u16> {
    line.trim().strip_prefix("READY ")?.trim().parse().ok()
}

/// The running fake camera server; killed with its process group on drop.
#[derive(Debug)]
pub struct FakeCameras {
    child: Option<Child>,
    pub port: u16,
}

impl FakeCameras {
    /// Serves `video` as `rtsp://127.0.0.1:<port>/<name>` for every name.
    pub fn start(
        script: &Path,
        names: &[String],
        video: &Path,
        timeout: Duration,
    ) -> Result<FakeCameras, RtspError> {
        if !script.is_file() {
            return Err(RtspError::MissingScript {
                path: script.to_path_buf(),
            });
        }
        let py = python();
        let mut cmd = Command::new(&py);
        cmd.arg(script).arg("--port").arg("0");
        for n in names {
            cmd.arg(format!("{n}={}", video.display()));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| RtspError::Spawn {
                python: py.clone(),
                script: script.to_path_buf(),
                source,
            })?;
        let stdout = child.stdout.take();
        let mut cams = FakeCameras {
            child: Some(child),
            port: 0,
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(port) = parse_ready(&line) {
                        let _ = tx.send(port);
                    }
                }
            });
        }
        let start = Instant::now();
        // The first start re-encodes the clip into the script's cache (tens of seconds).
        match rx.recv_timeout(timeout) {
            Ok(port) => {
                cams.port = port;
                Ok(cams)
            }
            Err(_) => Err(RtspError::NotReady {
                waited: start.elapsed(),
                reason: "no READY line (is GStreamer's RTSP server installed?)".into(),
            }),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for FakeCameras {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: signals to the process group the harness created for the script.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = c.wait();
        }
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
        assert!(default_script().is_file(), "{}", default_script().display());
    }
}
