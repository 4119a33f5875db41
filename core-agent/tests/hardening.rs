//! Issue 10 attacks against the real processes, each shown to fail now:
//! - an impostor listening at a model's socket gets no request and writes no result
//!   (`SO_PEERCRED` check; defect 2);
//! - a socket directory pre-created by another user makes core-agent refuse to start
//!   (defect 2);
//! - 256+ idle data connections do not get a healthy model server restarted, and the
//!   server closes them after its idle timeout (defect 5);
//! - a failed model server is retried after the cool-down and becomes ready without
//!   restarting the agent (defect 6);
//! - after kill -9 of core-agent its children are gone within seconds, and what they
//!   could not remove is removed and reported by the next start (defect 9).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assets, bin_dir, children_of, kill, serial, wait_for, Agent, Dirs, FakeCamera};
use framebus_client::raw::{read_frame, write_message};
use proto_schema::message::{
    decode_request, Detection, InferenceResponse, Request, Response, Timings,
};
use serde_json::Value;

fn metric(agent: &Agent, line_start: &str) -> Option<f64> {
    let (_, text) = agent.http("GET", "/metrics", None);
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn model_field(agent: &Agent, model: &str, field: &str) -> Value {
    agent.model(model)["server"][field].clone()
}

/// A fake model server at `path`: it answers everything, and an `infer` with a
/// detection of class `impostor` (what the original attack wrote into results.jsonl).
/// Counts connections and bytes received.
struct Impostor {
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Impostor {
    fn start(path: &Path) -> Impostor {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, b, s) = (connections.clone(), bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || serve_fake(stream, &b));
            }
        });
        Impostor {
            connections,
            bytes,
            stop,
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_fake(mut s: UnixStream, bytes: &AtomicU64) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    while let Ok(Some(frame)) = read_frame(&mut s, 1 << 20) {
        bytes.fetch_add(frame.len() as u64 + 4, Ordering::SeqCst);
        let resp = match decode_request(&frame) {
            Ok(Request::Ping { id, .. }) => Response::pong(id),
            Ok(Request::Infer(r)) => Response::InferResult(InferenceResponse {
                v: r.v,
                id: r.id,
                model_id: r.model_id.clone(),
                camera_id: r.camera_id.clone(),
                frame_id: r.meta.frame_id,
                detections: vec![Detection {
                    class_id: 0,
                    class_name: "impostor".into(),
                    confidence: 0.99,
                    bbox: [0.1, 0.1, 0.2, 0.2],
                }],
                timings: Timings::default(),
                error: None,
            }),
            _ => continue,
        };
        if write_message(&mut s, &resp, 1 << 20).is_err() {
            return;
        }
    }
}

fn camera_and_model(dirs: &Dirs, cam: &FakeCamera, model: &Path, extra: &str) -> String {
    format!(
        r#"{agent}
{extra}

[[cameras]]
id = "cam"
source = "{url}"
fps = 25

[[models]]
id = "det"
path = "{model}"

[[subscriptions]]
camera = "cam"
model = "det"
fps = 2
"#,
        agent = dirs.agent_table(),
        url = cam.url(),
        model = model.display(),
    )
}

/// The model server's data socket is swapped for an impostor's while the real server
/// runs (what a writer of the socket directory could do). The agent's next connection
/// (the server closes idle links after 300 ms, so the agent reconnects for every
/// request) reaches the impostor: it is refused by `SO_PEERCRED` before any byte is
/// sent, counted, and not one impostor detection reaches results.jsonl.
#[test]
fn an_impostor_at_the_model_socket_gets_no_request_and_writes_no_result() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let cam = FakeCamera::start("imp", &assets.join("video/people_walk_540p.mp4"), 0);
    let dirs = Dirs::new();
    let config = camera_and_model(
        &dirs,
        &cam,
        &assets.join("models/yolov8n_int8.onnx"),
        "[limits]\nserver_idle_timeout_ms = 300\n",
    );
    let agent = Agent::start(dirs, &config, &[]);
    wait_for(Duration::from_secs(120), "real results", || {
        (common::of(&agent.results(), "cam", "det").len() >= 2).then_some(())
    });
    let socket = agent.sockets().join("det.sock");
    let real_pid = model_field(&agent, "det", "pid").as_u64().unwrap();
    std::fs::remove_file(&socket).unwrap();
    let impostor = Impostor::start(&socket);
    let before = agent.results().len();
    wait_for(
        Duration::from_secs(30),
        "the agent to try the impostor",
        || (impostor.connections.load(Ordering::SeqCst) >= 3).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    let tried = impostor.connections.load(Ordering::SeqCst);
    assert_eq!(
        impostor.bytes.load(Ordering::SeqCst),
        0,
        "a request reached the impostor"
    );
    let records = agent.results();
    let fake = records
        .iter()
        .flat_map(|r| r.detections.iter())
        .filter(|d| d.class_name == "impostor")
        .count();
    assert_eq!(fake, 0, "impostor detections in results.jsonl");
    let refused = metric(&agent, "framebus_model_peer_refused_total{model=\"det\"}").unwrap();
    assert!(refused >= 3.0, "refusals counted: {refused}");
    let line = agent
        .stderr
        .find("refusing peer pid")
        .expect("a refusal is logged");
    assert!(
        line.contains("det.sock") && line.contains(&format!("pid {real_pid}")),
        "{line}"
    );
    // The real server is untouched (the supervisor talks to it on its control socket).
    assert_eq!(model_field(&agent, "det", "pid").as_u64(), Some(real_pid));
    assert_eq!(agent.model("det")["state"], "ready");
    println!(
        "impostor: {tried} connections, 0 bytes received, {} results before and {} after, none fake; {refused} refusals counted",
        before,
        records.len()
    );
}

/// An attacker (uid 65534) pre-creates the socket directory inside a world-writable
/// sticky parent, as `/tmp` is: core-agent refuses to start, naming the directory,
/// and starts no child.
#[test]
fn a_socket_dir_pre_created_by_another_user_is_refused() {
    let _serial = serial();
    if shm_ring::owned_dir::effective_uid() != 0 {
        println!("SKIP: needs root to create a directory owned by uid 65534");
        return;
    }
    let dirs = Dirs::new();
    // The attacker must reach the public dir, as everyone reaches /tmp.
    std::fs::set_permissions(dirs.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let public = dirs.root.path().join("tmp");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let squatted = public.join("framebus-sockets");
    // The attacker's own process creates it, as the attack would.
    let st = Command::new("/bin/sh")
        .args(["-c", "umask 022; mkdir \"$0\"", squatted.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(st.success());
    let model = dirs.root.path().join("m.onnx");
    std::fs::write(&model, b"placeholder").unwrap();
    let config = format!(
        "[agent]\napi_addr = \"127.0.0.1:0\"\nring_dir = \"{}\"\nsocket_dir = \"{}\"\n\n[[models]]\nid = \"m\"\npath = \"{}\"\n",
        dirs.rings().display(),
        squatted.display(),
        model.display()
    );
    std::fs::write(dirs.config(), config).unwrap();
    let mut child = Command::new(common::agent_bin())
        .arg("--config")
        .arg(dirs.config())
        .arg("--bin-dir")
        .arg(bin_dir())
        .env_remove("FRAMEBUS_SOCKET_DIR")
        .env_remove("FRAMEBUS_RING_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("core-agent started on a squatted socket directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    println!("refused: {err}");
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("framebus-sockets"), "{err}");
    assert!(err.contains("65534") || err.contains("owner"), "{err}");
    // Nothing was started in the attacker's directory.
    assert_eq!(std::fs::read_dir(&squatted).unwrap().count(), 0);
}

use std::os::unix::process::CommandExt;

/// 300 idle data connections (more than the server's 256) do not make a health check
/// fail: the supervisor uses the control socket. The server closes them after its idle
/// timeout, and the server was never restarted.
#[test]
fn idle_data_connections_neither_restart_the_server_nor_stay_open() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let dirs = Dirs::new();
    let config = format!(
        r#"{agent}
[supervisor]
health_interval_ms = 100
ping_timeout_ms = 500
unhealthy_after = 2

[limits]
server_idle_timeout_ms = 4000

[[models]]
id = "det"
path = "{model}"
"#,
        agent = dirs.agent_table(),
        model = assets.join("models/yolov8n_int8.onnx").display(),
    );
    let agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    let socket = agent.sockets().join("det.sock");
    let pid = model_field(&agent, "det", "pid").as_u64().unwrap();
    let opened = Instant::now();
    let mut idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // The limit is really reached: the last ones are refused with `overloaded`.
    let last = idle.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let frame = read_frame(last, 1 << 20).unwrap().expect("an answer");
    assert!(
        String::from_utf8_lossy(&frame).contains("overloaded"),
        "{}",
        String::from_utf8_lossy(&frame)
    );
    // Thirty health intervals with every data connection taken.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        opened.elapsed() < Duration::from_millis(3900),
        "too slow to check in time"
    );
    assert_eq!(agent.model("det")["state"], "ready");
    assert_eq!(model_field(&agent, "det", "restarts").as_u64(), Some(0));
    assert_eq!(model_field(&agent, "det", "pid").as_u64(), Some(pid));
    // After the idle timeout the server closes them (EOF on our side).
    let mut closed = 0;
    for s in idle.iter_mut().take(256) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(0) = s.read(&mut buf) {
            closed += 1;
        }
    }
    let after = opened.elapsed();
    assert_eq!(closed, 256, "idle connections closed by the server");
    assert!(
        after >= Duration::from_secs(4),
        "closed before the timeout: {after:?}"
    );
    // Data clients are served again, and the server was never restarted.
    let mut fresh = UnixStream::connect(&socket).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write_message(&mut fresh, &Request::ping(9), 1 << 20).unwrap();
    let pong = read_frame(&mut fresh, 1 << 20).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&pong).contains("pong"));
    fresh.write_all(b"").unwrap();
    assert_eq!(model_field(&agent, "det", "restarts").as_u64(), Some(0));
    assert_eq!(agent.model("det")["state"], "ready");
    println!("300 idle connections: no restart; 256 closed by the server {after:?} after opening");
}

/// A model whose file is broken is given up on; the file is fixed (hot reload off, so
/// only the cool-down can bring it back); after `failed_retry_s` it is tried again and
/// becomes ready, with the retry in `/health` and `/metrics`.
#[test]
fn a_failed_model_is_retried_after_the_cool_down() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let dirs = Dirs::new();
    let model: PathBuf = dirs.root.path().join("det.onnx");
    std::fs::write(&model, b"not a model yet").unwrap();
    let config = format!(
        r#"{agent}
[supervisor]
backoff_initial_ms = 50
restart_limit = 1
failed_retry_s = 3
watch_interval_ms = 0

[[models]]
id = "det"
path = "{model}"
"#,
        agent = dirs.agent_table(),
        model = model.display(),
    );
    let agent = Agent::start(dirs, &config, &[]);
    let failed_at = wait_for(Duration::from_secs(60), "the model failed", || {
        (agent.model("det")["state"] == "failed").then(Instant::now)
    });
    let health = agent.get_json("/health");
    let entry = &health["failed"][0];
    assert_eq!(entry["process"], "model det", "{health}");
    assert!(entry["next_retry_unix_ms"].as_u64().is_some(), "{health}");
    std::fs::copy(assets.join("models/yolov8n_int8.onnx"), &model).unwrap();
    wait_for(
        Duration::from_secs(60),
        "the model ready after the retry",
        || (agent.model("det")["state"] == "ready").then_some(()),
    );
    let took = failed_at.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "retried before the cool-down: {took:?}"
    );
    assert!(
        model_field(&agent, "det", "failed_retries")
            .as_u64()
            .unwrap()
            >= 1
    );
    let retries = metric(&agent, "framebus_model_failed_retries_total{model=\"det\"}").unwrap();
    assert!(retries >= 1.0, "{retries}");
    assert_eq!(
        agent.get_json("/health")["failed"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    println!("failed model ready again {took:?} after it was given up on (cool-down 3 s)");
}

/// kill -9 of core-agent: the children get SIGTERM (PR_SET_PDEATHSIG), remove their ring
/// and sockets, and are gone within seconds. Then the case a child cannot clean up (the
/// agent and its children all killed with SIGKILL): the next start removes the files
/// and reports them.
#[test]
fn kill_9_of_the_agent_takes_its_children_and_leftovers_are_reported() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let cam = FakeCamera::start("k9", &assets.join("video/people_walk_540p.mp4"), 0);
    let dirs = Dirs::new();
    let config = camera_and_model(&dirs, &cam, &assets.join("models/yolox_nano.onnx"), "");
    let agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    let files = [
        agent.rings().join("cam.ring"),
        agent.sockets().join("det.sock"),
        agent.sockets().join("det.sock.ctl"),
    ];
    let kill_and_watch = |pid: u32, kill_children_too: bool| {
        for f in &files {
            assert!(f.exists(), "{} missing while running", f.display());
        }
        let children = children_of(pid);
        assert_eq!(children.len(), 2, "{children:?}");
        kill(pid, libc::SIGKILL);
        if kill_children_too {
            for (c, _) in &children {
                kill(*c, libc::SIGKILL);
            }
        }
        let killed = Instant::now();
        let state = || {
            let alive: Vec<_> = children
                .iter()
                .filter(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid))
                .cloned()
                .collect();
            let left: Vec<_> = files.iter().filter(|f| f.exists()).cloned().collect();
            (alive, left)
        };
        let mut now = state();
        while killed.elapsed() < Duration::from_secs(10) {
            now = state();
            if now.0.is_empty() && (kill_children_too || now.1.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (alive, left) = now;
        assert!(
            alive.is_empty(),
            "10 s after kill -9: children alive {alive:?}"
        );
        println!(
            "kill -9 of the agent (children killed too: {kill_children_too}): children \
             {children:?} gone and files checked {:?} later; left: {left:?}",
            killed.elapsed()
        );
        left
    };

    // 1. Only the agent dies: every child cleans up after itself.
    let left = kill_and_watch(agent.pid(), false);
    assert!(left.is_empty(), "the children left {left:?} behind");

    // 2. Everything dies at once: the files stay, and the next start removes and reports
    //    them.
    let start_next = || {
        let mut next = Command::new(common::agent_bin());
        next.arg("--config")
            .arg(agent.dir.path().join("agent.toml"))
            .env_remove("FRAMEBUS_RING_DIR")
            .env_remove("FRAMEBUS_SOCKET_DIR")
            .env_remove("FRAMEBUS_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(ort) = common::ort_dylib() {
            next.env("ORT_DYLIB_PATH", ort);
        }
        let mut next = next.spawn().unwrap();
        let lines = common::Lines::default();
        lines.pump(next.stderr.take().unwrap(), "[agent] ");
        (next, lines)
    };
    let (mut second, lines) = start_next();
    wait_for(Duration::from_secs(120), "the second run's files", || {
        files.iter().all(|f| f.exists()).then_some(())
    });
    wait_for(Duration::from_secs(30), "the second run's children", || {
        (children_of(second.id()).len() == 2).then_some(())
    });
    drop(lines);
    let left = kill_and_watch(second.id(), true);
    let _ = second.wait();
    assert!(!left.is_empty(), "SIGKILLed children removed their files?");
    let (mut third, lines) = start_next();
    let line = wait_for(Duration::from_secs(30), "the leftovers reported", || {
        lines.find("leftover file(s)")
    });
    kill(third.id(), libc::SIGTERM);
    let _ = third.wait();
    let named = left
        .iter()
        .filter(|f| line.contains(&f.display().to_string()))
        .count();
    assert!(named >= 1, "{line}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}
