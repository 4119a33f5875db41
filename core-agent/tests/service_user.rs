//! The documented service-user deployment (docs/architecture.md, "Running as a service
//! user"), run for real: `core-agent` and its children as a dedicated system user
//! `fbsvc` whose primary group is the service group; a client user in that group reads
//! rings and talks to the model server; an outsider (`nobody`) can do neither.
//!
//! Needs root (to create the users and switch to them, as `runuser` does); CI runs as
//! root. Elsewhere it prints why it is skipped.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assets, bin_dir, ort_dylib, wait_for};

const SERVICE: &str = "fbsvc";
const CLIENT: &str = "fbclient";

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates the service user (with its own group) and a client user in that group, as an
/// administrator following the docs would; idempotent.
fn ensure_users() -> (u32, u32) {
    let users: [(&str, &[&str]); 2] = [
        (SERVICE, &["--user-group"]),
        (CLIENT, &["--groups", SERVICE]),
    ];
    for (user, group_args) in users {
        if !Command::new("id")
            .arg(user)
            .output()
            .unwrap()
            .status
            .success()
        {
            run(Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .args(group_args)
                .arg(user));
        }
    }
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").args([flag, SERVICE]));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// Runs `python3 -c code args...` as `user` (with that user's groups, via runuser).
fn python_as(user: &str, code: &str, args: &[&Path]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--", "/usr/bin/python3", "-c", code])
        .args(args)
        .output()
        .expect("runuser python3")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn uid_of_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok() // effective uid
}

fn copy_into(dir: &Path, from: &Path) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

#[test]
fn the_system_runs_as_a_service_user_and_only_its_group_gets_in() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: creating and switching users needs root (CI runs as root)");
        return;
    }
    let Some(assets) = assets() else { return };
    let _serial = common::serial();
    let (svc_uid, svc_gid) = ensure_users();

    // What the administrator installs: binaries, the ONNX Runtime library, a model and
    // a video, all readable by the service user (the build tree may not be).
    let stage = tempfile::Builder::new()
        .prefix("fb-svc-stage")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bins = bin_dir();
    for b in ["core-agent", "frame-kernel", "model-server"] {
        copy_into(stage.path(), &bins.join(b));
    }
    let ort =
        std::fs::canonicalize(ort_dylib().expect("ORT_DYLIB_PATH (scripts/setup.sh)")).unwrap();
    let ort = copy_into(stage.path(), &ort);
    let model = copy_into(stage.path(), &assets.join("models/yolox_nano.onnx"));
    let video = copy_into(stage.path(), &assets.join("video/people_walk_540p.mp4"));

    // /dev/shm stand-in: a world-writable sticky parent; the service creates its ring
    // dir inside. /run stand-in: root-owned 0755, where the init system pre-creates the
    // socket dir for the service (systemd: RuntimeDirectory=framebus, mode 0750).
    let shm = tempfile::Builder::new()
        .prefix("fb-svc-shm")
        .tempdir_in("/dev/shm")
        .unwrap();
    std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let ring_dir = shm.path().join("framebus");
    let run_root = tempfile::Builder::new()
        .prefix("fb-svc-run")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(run_root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket_dir = run_root.path().join("framebus");
    std::fs::create_dir(&socket_dir).unwrap();
    std::os::unix::fs::chown(&socket_dir, Some(svc_uid), Some(svc_gid)).unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    // The service's state dir (systemd: StateDirectory=framebus): config and results.
    let state = run_root.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(svc_uid), Some(svc_gid)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();

    let results = state.join("results.jsonl");
    let config = state.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\napi_addr = \"127.0.0.1:0\"\nring_dir = \"{ring}\"\nsocket_dir = \"{sock}\"\n\
             bin_dir = \"{bin}\"\n\n\
             [[cameras]]\nid = \"lobby\"\nsource = \"{video}\"\nfps = 25\n\n\
             [[models]]\nid = \"yolox\"\npath = \"{model}\"\n\n\
             [[subscriptions]]\ncamera = \"lobby\"\nmodel = \"yolox\"\nfps = 5\n\n\
             [[outputs]]\ntype = \"jsonl\"\npath = \"{results}\"\n",
            ring = ring_dir.display(),
            sock = socket_dir.display(),
            bin = stage.path().display(),
            video = video.display(),
            model = model.display(),
            results = results.display(),
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(svc_uid), Some(svc_gid)).unwrap();

    let mut agent = Command::new("runuser")
        .args(["-u", SERVICE, "--"])
        .arg(stage.path().join("core-agent"))
        .arg("--config")
        .arg(&config)
        .env("ORT_DYLIB_PATH", &ort)
        .env_remove("FRAMEBUS_RING_DIR")
        .env_remove("FRAMEBUS_SOCKET_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runuser core-agent");
    let mut stderr = agent.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The agent is runuser's child; signal it directly at the end.
    let agent_pid = wait_for(Duration::from_secs(20), "core-agent under runuser", || {
        common::children_of(agent.id())
            .into_iter()
            .find(|(_, name)| name.contains("core-agent"))
            .map(|(pid, _)| pid)
    });

    let outcome = std::panic::catch_unwind(|| {
        wait_for(
            Duration::from_secs(120),
            "5 results with detections",
            || {
                let text = std::fs::read_to_string(&results).unwrap_or_default();
                (text
                    .lines()
                    .filter(|l| l.contains("\"class_name\""))
                    .count()
                    >= 5)
                    .then_some(())
            },
        );

        // Every process of the system runs as the service user.
        assert_eq!(uid_of_pid(agent_pid), Some(svc_uid), "core-agent's uid");
        let children = common::children_of(agent_pid);
        for want in ["frame-kernel", "model-server"] {
            let (pid, _) = children
                .iter()
                .find(|(_, n)| n.contains(want))
                .unwrap_or_else(|| panic!("no {want} child in {children:?}"));
            assert_eq!(uid_of_pid(*pid), Some(svc_uid), "{want}'s uid");
        }

        // Directories and files: owned by the service, group = the service group.
        let ring = ring_dir.join("lobby.ring");
        let sock = socket_dir.join("yolox.sock");
        for (p, want_mode) in [(&ring_dir, 0o750), (&ring, 0o640), (&sock, 0o660)] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!((m.uid(), m.gid()), (svc_uid, svc_gid), "{}", p.display());
            assert_eq!(mode(p), want_mode, "{}: mode", p.display());
        }

        // A member of the service group reads the ring and pings the model server.
        let client = r#"
import socket, struct, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(8)
assert len(head) == 8, head
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[2])
req = b'{"type":"ping","v":1,"id":7}'
s.sendall(struct.pack(">I", len(req)) + req)
n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
print(s.recv(n, socket.MSG_WAITALL).decode())
"#;
        let out = python_as(CLIENT, client, &[&ring, &sock]);
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && answer.contains("pong"),
            "group member: {}\n{answer}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        // An outsider gets into neither the ring dir nor the socket dir.
        for (what, code, path) in [
            ("ring", "open(__import__('sys').argv[1], 'rb')", &ring),
            (
                "socket",
                "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
                &sock,
            ),
        ] {
            let out = python_as("nobody", code, &[path]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("PermissionError"),
                "nobody opened the {what}: {} {err}",
                out.status
            );
        }
    });

    common::kill(agent_pid, libc::SIGTERM);
    let status = wait_for(Duration::from_secs(20), "core-agent to stop", || {
        agent.try_wait().unwrap()
    });
    let log = log.join().unwrap();
    if let Err(p) = outcome {
        eprintln!("core-agent log:\n{log}");
        std::panic::resume_unwind(p);
    }
    assert!(status.success(), "core-agent exit: {status}\n{log}");
    // Clean shutdown removes the service's files.
    assert!(!ring_dir.join("lobby.ring").exists(), "ring left behind");
    assert!(
        !socket_dir.join("yolox.sock").exists(),
        "socket left behind"
    );
    let _ = std::io::stdout().flush();
}
