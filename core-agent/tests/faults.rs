//! Faults with the real processes: kill -9 of a model server and of a frame kernel, a
//! camera that goes away and comes back, a model file replaced (hot reload) and one
//! that cannot load. Recovery times are measured and printed.

mod common;

use std::time::Duration;

use common::{assets, bin_dir, kill, of, serial, wait_for, Agent, Dirs, FakeCamera};
use core_agent::clock::UnixNanos;
use serde_json::Value;

fn now_ms() -> u64 {
    UnixNanos::now().get() / 1_000_000
}

fn pid_of(v: &Value, path: &[&str]) -> Option<u32> {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().map(|p| p as u32)
}

/// Waits for a result of (camera, model) that arrived after `since_ms`; returns when.
fn next_result(agent: &Agent, camera: &str, model: &str, since_ms: u64, timeout: Duration) -> u64 {
    wait_for(
        timeout,
        &format!("a new result {camera} -> {model}"),
        || {
            of(&agent.results(), camera, model)
                .iter()
                .map(|r| r.result_unix_ms)
                .filter(|&t| t > since_ms)
                .min()
        },
    )
}

#[test]
fn faults_are_survived_and_recovery_is_measured() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let video = assets.join("video/people_walk_540p.mp4");
    let cam_a = FakeCamera::start("a", &video, 0);
    let mut cam_b = FakeCamera::start("b", &video, 0);
    let dirs = Dirs::new();
    // A private copy of the YOLOX file, to replace it while running.
    let yolox = dirs.root.path().join("yolox_nano.onnx");
    std::fs::copy(assets.join("models/yolox_nano.onnx"), &yolox).unwrap();
    let broken = dirs.root.path().join("broken.onnx");
    std::fs::write(&broken, b"this is not an ONNX model").unwrap();
    let config = format!(
        r#"{agent}
[supervisor]
backoff_initial_ms = 100
restart_limit = 3
restart_window_s = 60

[[cameras]]
id = "cam-a"
source = "{a}"
fps = 25
ring_slots = 32

[[cameras]]
id = "cam-b"
source = "{b}"
fps = 25
ring_slots = 32

[[models]]
id = "yolov8n"
path = "{v8}"

[[models]]
id = "yolox"
path = "{yolox}"

[[models]]
id = "broken"
path = "{broken}"

[[subscriptions]]
camera = "cam-a"
model = "yolov8n"
fps = 5

[[subscriptions]]
camera = "cam-a"
model = "yolox"
fps = 5

[[subscriptions]]
camera = "cam-b"
model = "yolov8n"
fps = 5
"#,
        agent = dirs.agent_table(),
        a = cam_a.url(),
        b = cam_b.url(),
        v8 = assets.join("models/yolov8n_int8.onnx").display(),
        yolox = yolox.display(),
        broken = broken.display(),
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    let t0 = now_ms();
    for (c, m) in [
        ("cam-a", "yolov8n"),
        ("cam-a", "yolox"),
        ("cam-b", "yolov8n"),
    ] {
        next_result(&agent, c, m, 0, Duration::from_secs(120));
    }
    println!("all pairs delivering {} ms after start", now_ms() - t0);

    // A model file that cannot load: failed, with the reason; the rest runs.
    let broken = wait_for(
        Duration::from_secs(60),
        "the broken model marked failed",
        || {
            let m = agent.model("broken");
            (m["state"] == "failed").then_some(m)
        },
    );
    let reason = broken["server"]["last_error"].as_str().unwrap().to_owned();
    println!("broken model: {reason}");
    assert!(
        reason.contains("given up") && reason.contains("exited with status"),
        "{reason}"
    );
    assert!(
        reason.to_lowercase().contains("model") || reason.contains("onnx"),
        "{reason}"
    );
    let (_, metrics) = agent.http("GET", "/metrics", None);
    assert!(metrics.contains("framebus_model_failed{model=\"broken\"} 1"));
    assert_eq!(
        agent.http("GET", "/ready", None).0,
        503,
        "not ready while a model failed"
    );

    // 1. kill -9 of a model server mid-stream.
    let before = agent.model("yolov8n");
    let old_pid = pid_of(&before, &["server", "pid"]).unwrap();
    let yolox_before = of(&agent.results(), "cam-a", "yolox").len();
    let killed_at = now_ms();
    kill(old_pid, libc::SIGKILL);
    let resumed = next_result(
        &agent,
        "cam-b",
        "yolov8n",
        killed_at,
        Duration::from_secs(60),
    );
    let after = wait_for(Duration::from_secs(10), "new server pid", || {
        let m = agent.model("yolov8n");
        (m["state"] == "ready" && pid_of(&m, &["server", "pid"]) != Some(old_pid)).then_some(m)
    });
    let load_ms = after["server"]["start_to_ready_ms"].as_u64().unwrap();
    let recovery_ms = after["server"]["last_recovery_ms"].as_u64().unwrap();
    let gap = resumed - killed_at;
    println!(
        "MEASURED model server kill -9: results again after {gap} ms (server ready {recovery_ms} ms after the \
         failure was noticed, of which model load {load_ms} ms)"
    );
    assert_eq!(after["server"]["restarts"], 1);
    assert!(after["server"]["last_error"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    // Goal: within 1 s plus the model's load time (printed above; asserted loosely).
    assert!(gap < 5_000 + load_ms, "results resumed only after {gap} ms");
    // The other model kept answering during the outage.
    let yolox_during = of(&agent.results(), "cam-a", "yolox")
        .iter()
        .filter(|r| r.result_unix_ms > killed_at && r.result_unix_ms < resumed)
        .count();
    println!(
        "yolox answered {yolox_during} times during the yolov8n outage ({} before)",
        yolox_before
    );
    assert_eq!(agent.model("yolox")["server"]["restarts"], 0);
    if gap > 600 {
        assert!(yolox_during > 0, "the other model stalled");
    }

    // 2. kill -9 of a frame kernel: restarted, ring recreated, agent follows.
    let cam = agent.camera("cam-b");
    let kernel_pid = pid_of(&cam, &["kernel", "pid"]).unwrap();
    let generation = cam["ring"]["generation"].as_u64().unwrap();
    let killed_at = now_ms();
    kill(kernel_pid, libc::SIGKILL);
    let resumed = next_result(
        &agent,
        "cam-b",
        "yolov8n",
        killed_at,
        Duration::from_secs(60),
    );
    let cam = wait_for(Duration::from_secs(10), "the new ring generation", || {
        let c = agent.camera("cam-b");
        (c["ring"]["generation"].as_u64() != Some(generation)).then_some(c)
    });
    println!(
        "MEASURED kernel kill -9: results again after {} ms (kernel ready {} ms after the failure)",
        resumed - killed_at,
        cam["kernel"]["last_recovery_ms"]
    );
    assert_ne!(pid_of(&cam, &["kernel", "pid"]), Some(kernel_pid));
    assert_eq!(cam["kernel"]["restarts"], 1);

    // 3. The camera goes away and comes back.
    cam_b.vanish();
    let gone_at = now_ms();
    let state = wait_for(Duration::from_secs(30), "cam-b to notice the loss", || {
        let s = agent.camera("cam-b")["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (s == "reconnecting").then_some(s)
    });
    println!(
        "cam-b {state} {} ms after the camera vanished",
        now_ms() - gone_at
    );
    // The other camera is not disturbed.
    next_result(
        &agent,
        "cam-a",
        "yolov8n",
        now_ms(),
        Duration::from_secs(10),
    );
    cam_b.come_back();
    let back_at = now_ms();
    let resumed = next_result(&agent, "cam-b", "yolov8n", back_at, Duration::from_secs(60));
    println!(
        "MEASURED camera back: results again after {} ms",
        resumed - back_at
    );
    // The agent samples the ring header once a second.
    wait_for(Duration::from_secs(5), "cam-b live again", || {
        (agent.camera("cam-b")["state"] == "live").then_some(())
    });

    // 4. Hot reload: replacing one model's file restarts only that server.
    let v8_pid = pid_of(&agent.model("yolov8n"), &["server", "pid"]);
    let x_before = agent.model("yolox");
    let x_pid = pid_of(&x_before, &["server", "pid"]);
    let tmp = yolox.with_extension("new");
    std::fs::copy(assets.join("models/yolox_nano.onnx"), &tmp).unwrap();
    std::fs::rename(&tmp, &yolox).unwrap();
    let replaced_at = now_ms();
    let restarted = wait_for(
        Duration::from_secs(30),
        "the yolox server to restart",
        || {
            let m = agent.model("yolox");
            (m["state"] == "ready" && pid_of(&m, &["server", "pid"]) != x_pid).then_some(m)
        },
    );
    let ready_at = now_ms();
    let resumed = next_result(&agent, "cam-a", "yolox", ready_at, Duration::from_secs(60));
    println!(
        "MEASURED hot reload: new yolox server ready {} ms after the file was replaced (load {} ms), \
         results from it {} ms later",
        ready_at - replaced_at,
        restarted["server"]["start_to_ready_ms"],
        resumed - ready_at
    );
    assert_eq!(restarted["server"]["restarts"], 1);
    assert!(
        restarted["server"]["last_error"].is_null(),
        "a reload is not a failure"
    );
    assert_eq!(
        pid_of(&agent.model("yolov8n"), &["server", "pid"]),
        v8_pid,
        "the other server restarted"
    );

    // Clean shutdown still removes every ring and socket.
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read_dir(agent.rings()).unwrap().count(), 0);
    // The model servers' calibration caches stay, by design (a restart reuses them).
    let left: Vec<_> = std::fs::read_dir(agent.sockets())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".calibration.json"))
        .collect();
    assert!(left.is_empty(), "sockets left: {left:?}");
}
