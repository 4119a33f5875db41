//! Harness for core-agent's integration tests: the real `core-agent` on a temp dir, its
//! config tables, a tiny HTTP client and result helpers. Assets, the sibling binaries
//! (looked up in the same target dir, built there when missing), fake cameras and the
//! process guard come from `framebus-testkit`.
#![allow(dead_code, unused_imports)]

/// `/proc` sampling and the flat-after-warm-up check, shared with frame-kernel's soak
/// tests (one implementation).
#[path = "../../../frame-kernel/tests/common/soak.rs"]
pub mod soak;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use core_agent::results::ResultRecord;
use framebus_testkit::camera::{CameraError, RtspCamera};
use framebus_testkit::process::ChildGuard;
use framebus_testkit::{self as testkit, bins};
use serde_json::Value;

/// Serialises the heavy tests of one test binary (two cores: one system at a time).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub use framebus_testkit::process::{signal as kill_u32, wait_for, Lines};
pub use framebus_testkit::workspace_root;

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_core-agent"))
}

/// The directory of the built binaries, with `frame-kernel` and `model-server` present
/// (built into the same target dir when missing).
pub fn bin_dir() -> PathBuf {
    for b in ["frame-kernel", "model-server"] {
        bins::bin(b).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
    bins::bin_dir().expect("the target dir of this build")
}

/// The real assets, or `None` (printing SKIP) when absent and not in CI. In CI a
/// missing asset fails the test.
pub fn assets() -> Option<PathBuf> {
    testkit::assets::assets_with(&[
        testkit::assets::PEOPLE_WALK,
        testkit::assets::YOLOV8,
        testkit::assets::YOLOX,
    ])
}

/// The ONNX Runtime library for the model servers.
pub fn ort_dylib() -> Option<PathBuf> {
    testkit::assets::ort_dylib()
}

pub fn kill(pid: u32, sig: libc::c_int) {
    kill_u32(pid, sig);
}

/// The Python with GStreamer's RTSP server (Debian's, or `FRAMEBUS_PYTHON`).
fn camera_python() -> PathBuf {
    if Path::new("/usr/bin/python3").is_file() {
        PathBuf::from("/usr/bin/python3")
    } else {
        PathBuf::from(std::env::var("FRAMEBUS_PYTHON").unwrap_or_else(|_| "python3".into()))
    }
}

/// One fake RTSP camera process serving several `(name, file)` streams (a camera's
/// main stream and substream) as `rtsp://127.0.0.1:<port>/<name>`.
pub fn rtsp_streams(streams: &[(&str, &Path)]) -> RtspCamera {
    let mut b = RtspCamera::builder(camera_python()).timeout(Duration::from_secs(300));
    for (name, video) in streams {
        b = b.camera(name, *video);
    }
    b.start().unwrap_or_else(|e| panic!("fake camera: {e}"))
}

/// A fake RTSP camera process serving one file as `rtsp://127.0.0.1:<port>/<name>`.
pub struct FakeCamera {
    cam: RtspCamera,
    pub port: u16,
    pub name: String,
    video: PathBuf,
}

impl FakeCamera {
    /// Starts serving `video` on `port` (0: any free port).
    pub fn start(name: &str, video: &Path, port: u16) -> FakeCamera {
        FakeCamera::try_start(name, video, port).unwrap_or_else(|e| panic!("fake camera: {e}"))
    }

    fn try_start(name: &str, video: &Path, port: u16) -> Result<FakeCamera, CameraError> {
        // The first start converts the mp4 once (cached): allow for it.
        let cam = RtspCamera::builder(camera_python())
            .port(port)
            .camera(name, video)
            .timeout(Duration::from_secs(300))
            .start()?;
        Ok(FakeCamera {
            port: cam.port,
            cam,
            name: name.to_owned(),
            video: video.to_path_buf(),
        })
    }

    pub fn url(&self) -> String {
        self.cam.url(&self.name)
    }

    /// SIGKILL: the camera vanishes mid-stream.
    pub fn vanish(&mut self) {
        self.cam.kill();
    }

    /// Starts again on the same port.
    pub fn come_back(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match FakeCamera::try_start(&self.name, &self.video, self.port) {
                Ok(cam) => {
                    *self = cam;
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(300))
                }
                Err(e) => panic!("fake camera cannot listen on port {} again: {e}", self.port),
            }
        }
    }
}

/// A loopback port nobody listens on (bound, then released): a camera that refuses.
pub fn closed_port() -> u16 {
    framebus_testkit::net::free_port().expect("a free loopback port")
}

/// The API token the harness hands to `core-agent` through `FRAMEBUS_API_TOKEN`.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// A running `core-agent` on a temp dir.
pub struct Agent {
    child: ChildGuard,
    pub dir: tempfile::TempDir,
    pub api: SocketAddr,
    pub stderr: Lines,
    pub stdout: Lines,
    /// The bearer token [`Agent::http`] sends (none: no `Authorization` header).
    pub token: Option<String>,
}

/// An HTTP answer: status, header block (lower-cased names) and body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Directories a test config uses.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            root: tempfile::Builder::new()
                .prefix("framebus-test")
                .tempdir()
                .unwrap(),
        }
    }
    pub fn rings(&self) -> PathBuf {
        self.root.path().join("rings")
    }
    pub fn sockets(&self) -> PathBuf {
        self.root.path().join("s")
    }
    pub fn results(&self) -> PathBuf {
        self.root.path().join("results.jsonl")
    }
    pub fn config(&self) -> PathBuf {
        self.root.path().join("agent.toml")
    }
    /// The `[agent]` table pointing everything into this temp dir, API on a free port.
    /// (Call [`bin_dir`] first where the children must exist.)
    pub fn agent_table(&self) -> String {
        format!(
            "[agent]\napi_addr = \"127.0.0.1:0\"\nring_dir = \"{}\"\nsocket_dir = \"{}\"\nbin_dir = \"{}\"\nlog = \"info\"\n\n\
             [[outputs]]\ntype = \"jsonl\"\npath = \"{}\"\n\n",
            self.rings().display(),
            self.sockets().display(),
            agent_bin().parent().unwrap().display(),
            self.results().display()
        )
    }
}

impl Agent {
    /// Writes `config` into `dirs` and starts `core-agent --config` on it; returns once
    /// the API listens.
    pub fn start(dirs: Dirs, config: &str, extra_args: &[&str]) -> Agent {
        Agent::start_with_token(dirs, config, extra_args, Some(TEST_TOKEN))
    }

    /// [`Agent::start`] with `FRAMEBUS_API_TOKEN` set to `token`, or unset (the agent
    /// then reads or generates its token file; set [`Agent::token`] to use it).
    pub fn start_with_token(
        dirs: Dirs,
        config: &str,
        extra_args: &[&str],
        token: Option<&str>,
    ) -> Agent {
        std::fs::write(dirs.config(), config).unwrap();
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config")
            .arg(dirs.config())
            .args(extra_args)
            .env_remove("FRAMEBUS_RING_DIR")
            .env_remove("FRAMEBUS_SOCKET_DIR")
            .env_remove("FRAMEBUS_LOG_FORMAT")
            .env_remove("FRAMEBUS_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("FRAMEBUS_API_TOKEN", t);
        }
        if let Some(ort) = ort_dylib() {
            cmd.env("ORT_DYLIB_PATH", ort);
        }
        let mut child = cmd.spawn().expect("start core-agent");
        let stderr = Lines::default();
        let stdout = Lines::default();
        stderr.pump(child.stderr.take().unwrap(), "[agent] ");
        stdout.pump(child.stdout.take().unwrap(), "[agent stdout] ");
        let api = wait_for(Duration::from_secs(30), "the API address", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("core-agent exited early ({st}): {:#?}", stderr.all());
            }
            let line = stderr.find("status API on http://")?;
            line.rsplit("http://").next()?.trim().parse().ok()
        });
        Agent {
            child: ChildGuard::new(child).grace(Duration::from_secs(10)),
            dir: dirs.root,
            api,
            stderr,
            stdout,
            token: token.map(str::to_owned),
        }
    }

    pub fn results_path(&self) -> PathBuf {
        self.dir.path().join("results.jsonl")
    }

    pub fn rings(&self) -> PathBuf {
        self.dir.path().join("rings")
    }

    pub fn sockets(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// Every result record written so far.
    pub fn results(&self) -> Vec<ResultRecord> {
        let text = std::fs::read_to_string(self.results_path()).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// One HTTP/1.1 request (JSON, with the agent's token); returns status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if let Some(t) = &self.token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        let a = self.request(method, path, &headers, body.unwrap_or(""));
        (a.status, a.body)
    }

    /// One HTTP/1.1 request with exactly `headers` (plus Host, unless given, Connection
    /// and Content-Length).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Answer {
        let mut s = TcpStream::connect_timeout(&self.api, Duration::from_secs(5))
            .expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req += &format!("Host: {}\r\n", self.api);
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += &format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Answer { status, head, body }
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.http("GET", path, None);
        assert!(code == 200 || code == 503, "GET {path}: {code} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The camera's entry in `/cameras`.
    pub fn camera(&self, id: &str) -> Value {
        self.get_json(&format!("/cameras/{id}"))
    }

    /// The model's entry in `/models`.
    pub fn model(&self, id: &str) -> Value {
        self.get_json(&format!("/models/{id}"))
    }

    /// Waits for `/ready` to say ready.
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(timeout, "/ready", || {
            (self.http("GET", "/ready", None).0 == 200).then_some(())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (up to `timeout`) for a clean exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        assert!(self.child.is_held(), "core-agent is not running");
        self.child
            .terminate(timeout)
            .unwrap_or_else(|| panic!("core-agent did not stop within {timeout:?}"))
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Results of one (camera, model) pair.
pub fn of<'a>(records: &'a [ResultRecord], camera: &str, model: &str) -> Vec<&'a ResultRecord> {
    records
        .iter()
        .filter(|r| r.camera == camera && r.model == model)
        .collect()
}

/// Rate of records per second over their capture times.
pub fn rate(records: &[&ResultRecord]) -> f64 {
    if records.len() < 2 {
        return 0.0;
    }
    let first = records.iter().map(|r| r.capture_unix_ms).min().unwrap();
    let last = records.iter().map(|r| r.capture_unix_ms).max().unwrap();
    (records.len() - 1) as f64 / ((last - first) as f64 / 1000.0)
}

/// All pids of processes whose command line contains `needle` and whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = after.1.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) && fields[0] != "Z" {
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(c, _)| c.to_owned());
            out.push((pid, comm.unwrap_or_default()));
        }
    }
    out
}

/// The events `core-agent` wrote to `<dir>/events.jsonl` so far.
pub fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `ffprobe -v error ARGS video`'s output; panics with ffprobe's message on failure.
pub fn ffprobe(video: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(video)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        video.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}
