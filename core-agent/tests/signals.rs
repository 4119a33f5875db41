//! Shutdown signals: the first SIGTERM starts the ordered shutdown (children get SIGTERM
//! and a grace time); a second one exits at once, killing every child group and removing
//! the rings and sockets. The children here are stand-in scripts that ignore SIGTERM, so
//! the ordered shutdown is guaranteed to be still waiting when the second signal comes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_bin, kill, wait_for, Lines};

#[test]
fn a_second_signal_exits_at_once_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    // A "model server" that ignores SIGTERM and never answers; the kernel is never used.
    for (name, body) in [
        ("model-server", "trap '' TERM; while true; do sleep 1; done"),
        ("frame-kernel", "exit 1"),
    ] {
        let p = bins.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b"x").unwrap();
    let sockets = dir.path().join("s");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\napi_addr = \"127.0.0.1:0\"\nring_dir = \"{}\"\nsocket_dir = \"{}\"\nbin_dir = \"{}\"\n\n\
             [supervisor]\nstop_grace_ms = 60000\n\n[[models]]\nid = \"m\"\npath = \"{}\"\n",
            dir.path().join("rings").display(),
            sockets.display(),
            bins.display(),
            model.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::default();
    stderr.pump(child.stderr.take().unwrap(), "[agent] ");
    let server_pid: u32 = wait_for(Duration::from_secs(20), "the model server to start", || {
        let line = stderr.find("started process=\"model:m\"")?;
        line.split("pid=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });

    kill(child.id(), libc::SIGTERM);
    wait_for(
        Duration::from_secs(10),
        "the ordered shutdown to begin",
        || stderr.find("stopping model servers").map(|_| ()),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for the stubborn child"
    );

    let second = Instant::now();
    kill(child.id(), libc::SIGTERM);
    let status = wait_for(Duration::from_secs(5), "the exit", || {
        child.try_wait().unwrap()
    });
    println!(
        "exited {:?} after the second signal: {status}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    // The child's whole group was killed (a zombie until init reaps it at most).
    wait_for(
        Duration::from_secs(5),
        "the model server to be gone",
        || {
            let stat =
                std::fs::read_to_string(format!("/proc/{server_pid}/stat")).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        },
    );
    assert!(!sockets.join("m.sock").exists());
}
