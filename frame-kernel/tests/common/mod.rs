//! Shared helpers for the integration tests: the real `frame-kernel` binary, the
//! project's fake RTSP camera, the `ffmpeg` CLI as reference decoder, and ring readers.
#![allow(dead_code)]

pub mod soak;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shm_ring::{FrameInfo, ReadError, RingReader, RingState, WaitOutcome};

pub const KERNEL: &str = env!("CARGO_BIN_EXE_frame-kernel");
pub const CLIP: &str = "video/people_walk_540p.mp4";

/// Whether a missing prerequisite must fail the test (CI) or may skip it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Fails in CI, otherwise prints a SKIP line and returns `None`.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(
        !in_ci(),
        "CI is set but {what} is missing: real-data tests must run in CI"
    );
    println!("SKIP: {what} is missing");
    None
}

/// The workspace's asset folder: `$FRAMEBUS_ASSETS`, default `<workspace>/../shared/assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("FRAMEBUS_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// An asset by relative path, or `None` (SKIP) outside CI.
pub fn asset(rel: &str) -> Option<PathBuf> {
    let p = assets_dir().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        missing(&format!("asset {}", p.display()))
    }
}

/// The `ffmpeg` CLI, or `None` (SKIP) outside CI.
pub fn ffmpeg_cli() -> Option<()> {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(())
    } else {
        missing("the ffmpeg CLI")
    }
}

/// A python that can run the fake camera (GStreamer through python3-gi).
pub fn camera_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("FRAMEBUS_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/python3")]);
    for py in candidates {
        let ok = Command::new(&py)
            .args([
                "-c",
                "import gi; gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    missing("python3 with GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)")
}

pub fn camera_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fake_rtsp_camera.py")
}

/// Ring directory for one test: under /dev/shm when present (like production).
/// Mode 0700: the kernel only accepts a ring directory it owns that others cannot
/// enter (tempfile's default mode follows the umask).
pub fn ring_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::Builder::new()
            .prefix("fk-test-")
            .tempdir_in(base)
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A running `frame-kernel`; killed on drop. Its log goes to a file, printed on
/// failure paths by `log()`.
pub struct Kernel {
    pub child: Child,
    pub log: PathBuf,
}

impl Kernel {
    pub fn start(args: &[&str], log_dir: &Path, tag: &str) -> Kernel {
        let log = log_dir.join(format!("kernel-{tag}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(KERNEL)
            .args(args)
            .env("FRAMEBUS_LOG", "info,frame_kernel=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn frame-kernel");
        Kernel { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM and wait (up to 10 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("kernel did not exit after SIGTERM\n{}", self.log()))
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn fd_count(&self) -> usize {
        soak::read_proc(self.pid() as u32).map_or(0, |(_, _, fds)| fds)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        soak::read_proc(self.pid() as u32).map_or(0, |(rss, _, _)| rss)
    }

    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map_or(0, |d| d.count())
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The project's fake RTSP camera (tools/fake_rtsp_camera.py); killed on drop.
pub struct Camera {
    pub child: Child,
    pub port: u16,
    /// Served .h264 file per camera name (for reference decoding).
    pub sources: HashMap<String, PathBuf>,
    pub ready_at: Instant,
}

/// Converted clips are cached across test runs here (one conversion per target dir).
pub fn camera_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-camera-cache")
}

impl Camera {
    /// Starts the camera serving `name=source` pairs on `port` (0 = free port) and waits
    /// for READY (the first run converts the mp4, which can take a while).
    pub fn start(py: &Path, port: u16, cams: &[(&str, &Path)]) -> Camera {
        let mut cmd = Command::new(py);
        cmd.arg(camera_script())
            .args(["--port", &port.to_string(), "--cache"])
            .arg(camera_cache());
        for (name, src) in cams {
            cmd.arg(format!("{name}={}", src.display()));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fake camera");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            // Drain stderr so GStreamer warnings never block the camera.
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        let mut sources = HashMap::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(180))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("fake camera did not become ready")
                });
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["SOURCE", name, path] => {
                    sources.insert((*name).to_owned(), PathBuf::from(path));
                }
                ["READY", port] => {
                    return Camera {
                        child,
                        port: port.parse().unwrap(),
                        sources,
                        ready_at: Instant::now(),
                    };
                }
                _ => {}
            }
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{name}", self.port)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// Waits until `<dir>/<name>.ring` opens.
pub fn open_ring(dir: &Path, name: &str, timeout: Duration) -> RingReader {
    let end = Instant::now() + timeout;
    loop {
        match RingReader::open(dir, name) {
            Ok(r) => return r,
            Err(e) if Instant::now() > end => panic!("ring {name} never appeared: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls the ring header until `pred` holds; returns when it did.
pub fn wait_until(
    reader: &RingReader,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&RingReader) -> bool,
) -> Instant {
    let end = Instant::now() + timeout;
    loop {
        if pred(reader) {
            return Instant::now();
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; header {:?}",
            reader.header()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn state(reader: &RingReader) -> RingState {
    reader.header().state
}

/// Follows the ring and returns every frame it manages to copy, in publish order,
/// until `n` frames were seen (read or missed) or `timeout`.
pub fn collect_frames(
    reader: &RingReader,
    n: usize,
    timeout: Duration,
) -> Vec<(FrameInfo, Vec<u8>)> {
    let end = Instant::now() + timeout;
    let slots = u64::from(reader.slots());
    let mut out = Vec::new();
    let mut next = 1u64; // publish numbers are 1-based: seq = 2 * n
    let mut seen = 0usize;
    while seen < n && Instant::now() < end {
        let ws = match reader.wait_for_publish(next - 1, Duration::from_millis(200)) {
            WaitOutcome::Published(ws) => ws,
            WaitOutcome::TimedOut => continue,
            WaitOutcome::Closed => break,
        };
        while next <= ws && seen < n {
            let slot = ((next - 1) % slots) as u32;
            let mut buf = Vec::new();
            match reader.copy_into(slot, 2 * next, &mut buf) {
                Ok(info) => out.push((info, buf)),
                Err(ReadError::Stale { .. }) => {}
                Err(e) => panic!("read: {e}"),
            }
            next += 1;
            seen += 1;
        }
    }
    out
}

/// Decodes `input` with the ffmpeg CLI to raw `pix_fmt` frames of `frame_size` bytes,
/// calling `f(index, bytes)` for each (streamed; nothing kept).
pub fn ffmpeg_frames(
    input: &Path,
    pix_fmt: &str,
    frame_size: usize,
    max: Option<usize>,
    mut f: impl FnMut(usize, &[u8]),
) -> usize {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-i"]).arg(input);
    if let Some(n) = max {
        cmd.args(["-frames:v", &n.to_string()]);
    }
    let mut child = cmd
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; frame_size];
    let mut i = 0;
    while stdout.read_exact(&mut buf).is_ok() {
        f(i, &buf);
        i += 1;
    }
    assert!(
        child.wait().unwrap().success(),
        "ffmpeg failed on {}",
        input.display()
    );
    i
}

pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Content check for a frame: not constant (a real picture, not a blank slot).
pub fn has_content(bytes: &[u8]) -> bool {
    let (min, max) = bytes
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &b| (lo.min(b), hi.max(b)));
    max - min > 64
}
