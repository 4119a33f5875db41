//! Harness for the integration tests: the real `core-agent`, `frame-kernel` and
//! `model-server` binaries, fake RTSP cameras, temp dirs and a tiny HTTP client.
//!
//! The sibling binaries are looked up next to `core-agent` in the same target dir
//! (`cargo build --workspace --bins` builds them; `scripts/test.sh` does). When one is
//! missing, the harness builds it with the same cargo and target dir.
#![allow(dead_code)]

/// `/proc` sampling and the flat-after-warm-up check, shared with frame-kernel's soak
/// tests (one implementation).
#[path = "../../../frame-kernel/tests/common/soak.rs"]
pub mod soak;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use core_agent::results::ResultRecord;
use serde_json::Value;

/// Serialises the heavy tests of one test binary (two cores: one system at a time).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_core-agent"))
}

/// The directory of the built binaries, with `frame-kernel` and `model-server` present.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = agent_bin().parent().unwrap().to_path_buf();
        let missing: Vec<&str> = ["frame-kernel", "model-server"]
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            // target/<profile>/core-agent: build the siblings into the same place.
            let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
            let target = dir.parent().unwrap().to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            eprintln!("building {missing:?} into {}", target.display());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args([
                    "build",
                    "-p",
                    "frame-kernel",
                    "-p",
                    "model-server",
                    "--target-dir",
                ])
                .arg(&target);
            if profile == "release" {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(
                st.success(),
                "cannot build {missing:?}: run `cargo build --workspace --bins` first"
            );
        }
        dir
    })
    .clone()
}

/// The real assets, or `None` (printing SKIP) when absent and not in CI. In CI a
/// missing asset fails the test.
pub fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("FRAMEBUS_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/assets"));
    let need = [
        "video/people_walk_540p.mp4",
        "models/yolov8n_int8.onnx",
        "models/yolox_nano.onnx",
    ];
    if need.iter().all(|f| dir.join(f).is_file()) {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "CI is set but the assets are missing in {}",
        dir.display()
    );
    println!(
        "SKIP: assets not found in {} (set FRAMEBUS_ASSETS)",
        dir.display()
    );
    None
}

/// The ONNX Runtime library for the model servers.
pub fn ort_dylib() -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            let p = workspace_root().join(".local/lib/libonnxruntime.so");
            p.is_file().then_some(p)
        })
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Lines of a child's output, kept and echoed with a prefix.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn pump(&self, stream: impl Read + Send + 'static, prefix: String) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("{prefix}{line}");
                lines.lock().unwrap().push(line);
            }
        });
    }

    /// Collects the lines of `stream` (echoed to stderr).
    pub fn pump_public(&self, stream: impl Read + Send + 'static) {
        self.pump(stream, "[agent] ".into());
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn find(&self, needle: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }
}

/// A fake RTSP camera process serving one file as `rtsp://127.0.0.1:<port>/<name>`.
pub struct FakeCamera {
    child: Child,
    pub port: u16,
    pub name: String,
    video: PathBuf,
}

impl FakeCamera {
    fn script() -> PathBuf {
        let own = workspace_root().join("tools/fake_rtsp_camera.py");
        if own.is_file() {
            own
        } else {
            PathBuf::from("/work/shared/tools/fake_rtsp_camera.py")
        }
    }

    /// Starts serving `video` on `port` (0: any free port).
    pub fn start(name: &str, video: &Path, port: u16) -> FakeCamera {
        let python = if Path::new("/usr/bin/python3").is_file() {
            PathBuf::from("/usr/bin/python3")
        } else {
            PathBuf::from(std::env::var("FRAMEBUS_PYTHON").unwrap_or_else(|_| "python3".into()))
        };
        let mut child = Command::new(python)
            .arg(Self::script())
            .args(["--port", &port.to_string()])
            .arg(format!("{name}={}", video.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fake camera");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("READY ") {
                    let _ = tx.send(p.trim().parse::<u16>().unwrap());
                }
            }
        });
        // The first start converts the mp4 once (cached): allow for it.
        let port = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("fake camera did not print READY");
        FakeCamera {
            child,
            port,
            name: name.to_owned(),
            video: video.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, self.name)
    }

    /// SIGKILL: the camera vanishes mid-stream.
    pub fn vanish(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port.
    pub fn come_back(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut again = FakeCamera::start_maybe(&self.name, &self.video, self.port);
            match again.take() {
                Some(cam) => {
                    *self = cam;
                    return;
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(300)),
                None => panic!("fake camera cannot listen on port {} again", self.port),
            }
        }
    }

    fn start_maybe(name: &str, video: &Path, port: u16) -> Option<FakeCamera> {
        std::panic::catch_unwind(|| FakeCamera::start(name, video, port)).ok()
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API token the harness hands to `core-agent` through `FRAMEBUS_API_TOKEN`.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// A running `core-agent` on a temp dir.
pub struct Agent {
    child: Option<Child>,
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
        stderr.pump(child.stderr.take().unwrap(), "[agent] ".into());
        stdout.pump(child.stdout.take().unwrap(), "[agent stdout] ".into());
        let api = wait_for(Duration::from_secs(30), "the API address", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("core-agent exited early ({st}): {:#?}", stderr.all());
            }
            let line = stderr.find("status API on http://")?;
            line.rsplit("http://").next()?.trim().parse().ok()
        });
        Agent {
            child: Some(child),
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
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait (up to `timeout`) for a clean exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        kill(child.id(), libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!("core-agent did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(c.id(), libc::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
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
