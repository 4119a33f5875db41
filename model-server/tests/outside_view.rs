//! Issue 18: the contract as an outside implementer sees it. The Python reader and client
//! printed in `docs/ring-format.md` §9 and `docs/protocol.md` §11 run, unchanged, against
//! the real server and a ring (`docs/examples/outside_view.py`); the other tests pin the
//! gaps that issue found between the docs and the server.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{decode_frame, error_code, Client, Env, Ring, Server};
use proto_schema::error::ErrorCode;
use proto_schema::message::{Request, Response};
use proto_schema::pixel::PixelFormat;
use shm_ring::RingState;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn docs(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `python` imports numpy; without it the test fails under CI and skips elsewhere.
fn python_with_numpy(env: &Env) -> bool {
    let ok = Command::new(&env.python)
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "{} cannot import numpy (CI=true: the outside-view test must run)",
            env.python.display()
        );
        println!("SKIP: {} cannot import numpy", env.python.display());
    }
    ok
}

/// The docs' Python examples against the real server: infer on a frame of a ring that
/// never left Starting, every documented error code, a futex wait for a publish, a
/// half-close mid-frame and a shutdown. The script exits 0 only if every check held.
#[test]
fn docs_python_examples_run_against_the_real_server() {
    let Some(env) = Env::get() else { return };
    if !python_with_numpy(&env) {
        return;
    }
    // The script stops the server on its control socket, `<socket>.ctl`.
    let mut server = Server::start_with_control(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let mut ring = Ring::with_frame(&server.rings, "outside", PixelFormat::Nv12, &frame);
    assert_eq!(ring.writer.state(), RingState::Starting);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/outside_view.py");
    let mut child = Command::new(&env.python)
        .arg(&script)
        .arg(&server.socket)
        .arg(&server.rings)
        .arg(&ring.name)
        .arg(&server.model_id)
        .arg(server.pid().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if line.starts_with("WAIT ") {
                    assert_eq!(line, format!("WAIT {}", ring.writer.write_seq()));
                    wait_until_in_futex(child.id());
                    ring.publish(&frame);
                }
                out.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "outside-view script hung; output so far:\n{}",
                    out.join("\n")
                );
            }
        }
    }
    let status = child.wait().unwrap();
    let out = out.join("\n");
    assert!(status.success(), "outside-view script failed:\n{out}");
    assert!(out.ends_with("ALL OK"), "{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("ok: ")).count() >= 30,
        "{out}"
    );
    // The script's shutdown drained and stopped the server.
    assert!(server.wait_exit().success());
}

/// Returns once process `pid` sleeps in the futex syscall (`/proc/<pid>/syscall`), so the
/// publish that follows must wake it; panics after 30 s (a hang guard, not a timing check).
fn wait_until_in_futex(pid: u32) {
    let futex = if cfg!(target_arch = "aarch64") {
        98
    } else {
        202
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if now.split_whitespace().next() == Some(&futex.to_string()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the script never slept in FUTEX_WAIT (/proc/{pid}/syscall: {now})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Both docs carry the Python blocks the script runs, and the reader's futex wait uses
/// the documented word (offset 136, shared futex).
#[test]
fn docs_carry_the_python_examples() {
    let ring = docs("ring-format.md");
    assert!(ring.contains("```python\nimport ctypes, errno, os, stat, struct, time\n"));
    assert!(ring.contains("ctypes.c_void_p(self.addr + 136)"));
    assert!(ring.contains("FUTEX_WAIT = 1, 1, 0"));
    let protocol = docs("protocol.md");
    assert!(protocol.contains("```python\nimport json, os, socket, struct, time\n"));
    // protocol.md §1: what a client checks, and the client that does it.
    assert!(protocol.contains("socket.SO_PEERCRED, struct.calcsize(\"3i\")"));
    assert!(
        protocol.contains("- **uid**: must be the uid the model server runs as, or `0` (root).")
    );
    // ring-format.md §8/§9: the group-member reader.
    assert!(ring.contains("def __init__(self, dir, name, trust_uid=None):"));
    assert!(ring.contains("st.st_gid in (os.getegid(), *os.getgroups())"));
}

/// §2: end of stream inside a frame is answered with `malformed_frame`, id null, saying
/// how much arrived; then the connection closes.
#[test]
fn half_close_inside_a_frame_is_answered_as_documented() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let mut c = server.client();
    c.send_raw(&33u32.to_be_bytes());
    c.send_raw(b"{\"type\":\"p");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let r = c.recv().expect("an answer after the half-close");
    let Response::Error { id, error, .. } = &r else {
        panic!("expected error, got {r:?}")
    };
    assert_eq!((*id, error.code), (None, ErrorCode::MalformedFrame));
    // The counts include the 4-byte prefix.
    assert!(error.message.contains("14 of 37"), "{}", error.message);
    assert!(c.recv().is_none(), "closed after the answer");
    let doc = docs("protocol.md");
    assert!(doc.contains("the server answers `malformed_frame` with `id` `null`"));
}

/// §5.5: `shutdown` is honoured on the control socket only; after `shutdown_ack` every
/// connection reaches end of stream; an `infer` read with the shutdown on the control
/// socket is answered (`invalid_message`: no inference there) before the close.
#[test]
fn shutdown_closes_connections_after_the_ack() {
    let Some(env) = Env::get() else { return };
    let mut server = Server::start_with_control(&env, &env.model("yolox_nano"), &[]);
    let ring = Ring::with_frame(
        &server.rings,
        "cam",
        PixelFormat::Nv12,
        &decode_frame(&env, 100, "nv12"),
    );
    let mut idle = server.client();
    assert!(matches!(
        idle.call(&Request::ping(1)),
        Response::Pong { .. }
    ));
    let mut c = Client::connect(server.control.as_ref().unwrap()).unwrap();
    // One write: the infer is read with the shutdown, after the drain began.
    let mut bytes =
        proto_schema::framing::encode(&Request::shutdown(2), common::MAX_FRAME).unwrap();
    bytes.extend(
        proto_schema::framing::encode(
            &Request::Infer(ring.request(3, &server.model_id)),
            common::MAX_FRAME,
        )
        .unwrap(),
    );
    c.send_raw(&bytes);
    assert!(matches!(
        c.recv(),
        Some(Response::ShutdownAck { id: 2, .. })
    ));
    let r = c
        .recv()
        .expect("the infer read with the shutdown is answered");
    assert_eq!(r.id(), Some(3));
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidMessage));
    assert!(c.recv().is_none(), "end of stream after the answers");
    assert!(
        idle.recv().is_none(),
        "idle connection closed without a message"
    );
    assert!(server.wait_exit().success());
    assert!(Client::connect(&server.socket).is_err());
}

/// ring-format.md §3.1: the server's YUV conversion is the documented BT.601
/// limited-range integer formula, for every Y and a grid of chroma values.
#[test]
fn yuv_conversion_is_the_documented_bt601_limited_formula() {
    let doc = docs("ring-format.md");
    for line in [
        "R = clip((298 * C + 409 * E + 128) >> 8)",
        "G = clip((298 * C - 100 * D - 208 * E + 128) >> 8)",
        "B = clip((298 * C + 516 * D + 128) >> 8)",
    ] {
        assert!(doc.contains(line), "ring-format.md lacks {line}");
    }
    let clip = |v: i32| v.clamp(0, 255) as u8;
    for y in 0..=255u8 {
        for u in (0..=255u8).step_by(3) {
            for v in (0..=255u8).step_by(5) {
                let (c, d, e) = (i32::from(y) - 16, i32::from(u) - 128, i32::from(v) - 128);
                let want = [
                    clip((298 * c + 409 * e + 128) >> 8),
                    clip((298 * c - 100 * d - 208 * e + 128) >> 8),
                    clip((298 * c + 516 * d + 128) >> 8),
                ];
                assert_eq!(
                    model_server::preprocess::yuv_to_rgb(y, u, v),
                    want,
                    "{y} {u} {v}"
                );
            }
        }
    }
}

// --- Issue 25, contract gaps 2 and 4: the docs' reader as a service-group member, and the
// docs' client checking who is on the other end. Run as root (CI does) to switch users.

/// The uid a ring's writer runs as in these tests (the "service user"), the service group,
/// and an owner nobody trusts. Numeric only: no account is needed for a file's owner.
const SERVICE_UID: u32 = 4242;
const SERVICE_GID: u32 = 4243;
const STRANGER_UID: u32 = 4244;
/// The unprivileged user the outside client runs as (`nobody`).
const NOBODY: u32 = 65534;

/// Whether this process may switch users; under CI=true it must (CI runs as root).
fn root_or_skip(what: &str) -> bool {
    if shm_ring::owned_dir::effective_uid() == 0 {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true but not root: {what} must run as another user"
    );
    println!("SKIP: {what} needs root to switch to uid {NOBODY}");
    false
}

/// A copy of the two docs and `docs/examples/outside_view.py`, byte for byte, in a
/// directory every user can traverse and read (the checkout may sit in a private home),
/// and the interpreter to run it with (the venv's interpreter resolved to its real file:
/// the steps run here need only the standard library).
struct Outside {
    root: tempfile::TempDir,
    python: std::path::PathBuf,
}

impl Outside {
    fn new() -> Option<Outside> {
        use std::os::unix::fs::PermissionsExt;
        let python = framebus_testkit::assets::python()
            .or_else(|| framebus_testkit::missing("FRAMEBUS_PYTHON"))?;
        let python = std::fs::canonicalize(&python).unwrap();
        let root = tempfile::Builder::new()
            .prefix("fb-outside")
            .tempdir()
            .unwrap();
        let docs_dir = root.path().join("docs");
        std::fs::create_dir_all(docs_dir.join("examples")).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        for file in ["ring-format.md", "protocol.md", "examples/outside_view.py"] {
            std::fs::copy(src.join(file), docs_dir.join(file)).unwrap();
            std::fs::set_permissions(docs_dir.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        for dir in [root.path(), &docs_dir, &docs_dir.join("examples")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Some(Outside { root, python })
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// `python outside_view.py ARGS` as `user` (uid, gid, supplementary groups), or as
    /// this process when `None`.
    fn command(&self, user: Option<(u32, u32, &[u32])>, args: &[&std::ffi::OsStr]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.path().join("docs/examples/outside_view.py"))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some((uid, gid, groups)) = user {
            as_user(&mut cmd, uid, gid, groups);
        }
        cmd
    }

    /// Runs one step; returns (exit code, stdout, stderr).
    fn run(
        &self,
        user: Option<(u32, u32, &[u32])>,
        args: &[&std::ffi::OsStr],
    ) -> (i32, String, String) {
        let out = self.command(user, args).output().expect("python starts");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Makes `cmd` drop root before exec: exactly `groups` as supplementary groups, then gid,
/// then uid (the order `runuser`/`setpriv` use; the uid goes last, it takes the right to
/// change the others).
fn as_user(cmd: &mut Command, uid: u32, gid: u32, groups: &[u32]) {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe set*id system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// ring-format.md §6.1, §8, §9: in the service-user deployment a client in the service
/// group (here uid 65534 with the ring's group as a supplementary group) reads a frame of
/// a ring owned by the service user (another uid, mode 0640), with the docs' reader
/// unchanged, when it names that uid as trusted. The same reader refuses a world-writable
/// ring and a ring of an owner it does not trust, saying which rule failed.
#[test]
fn docs_ring_reader_as_a_service_group_member() {
    if !root_or_skip("the group-member reader test") {
        return;
    }
    let Some(outside) = Outside::new() else {
        return;
    };
    use std::os::unix::fs::{chown, PermissionsExt};
    // The service's ring directory: 0750 with the service group, like /dev/shm/framebus.
    let rings = outside.path().join("rings");
    shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
    chown(&rings, None, Some(SERVICE_GID)).unwrap();
    let geometry = proto_schema::pixel::FrameGeometry::packed(64, 32, PixelFormat::Bgr24).unwrap();
    let bytes: Vec<u8> = (0..geometry.frame_size as usize)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
    let mut writers = Vec::new();
    for (name, owner, mode) in [
        ("svc", SERVICE_UID, 0o640),
        ("loose", SERVICE_UID, 0o646),
        ("stranger", STRANGER_UID, 0o640),
    ] {
        let mut writer = shm_ring::RingWriter::builder(name)
            .dir(&rings)
            .slots(2)
            .geometry(geometry)
            .create()
            .expect("ring created");
        let mut slot = writer.begin_write();
        slot.data_mut().copy_from_slice(&bytes);
        slot.publish(0, 0);
        // As if the service user's frame-kernel had written it.
        chown(writer.path(), Some(owner), Some(SERVICE_GID)).unwrap();
        std::fs::set_permissions(writer.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        writers.push(writer);
    }
    let member = Some((NOBODY, NOBODY, &[SERVICE_GID][..]));
    let read = |name: &str, trust: Option<u32>| {
        let trust = trust.map(|u| u.to_string());
        let mut args = vec![
            std::ffi::OsStr::new("read"),
            rings.as_os_str(),
            std::ffi::OsStr::new(name),
        ];
        if let Some(t) = &trust {
            args.push(std::ffi::OsStr::new(t));
        }
        outside.run(member, &args)
    };

    // The group member, trusting the service user: reads the frame, byte for byte.
    let (code, out, err) = read("svc", Some(SERVICE_UID));
    let want = format!("READ frame_id=0 bytes={} sum={sum}", geometry.frame_size);
    assert_eq!((code, out.as_str()), (0, want.as_str()), "{err}");

    // Refusals, each naming its rule (exit 3: the docs' code raised PermissionError).
    for (name, trust, why) in [
        // The owner is trusted only when named: not by default.
        ("svc", None, "owned by uid 4242, not by a trusted uid"),
        // Anyone could write it: refused although the owner is trusted.
        (
            "loose",
            Some(SERVICE_UID),
            "mode 0o646 is writable by group or others",
        ),
        // An owner it was not told to trust, same group and mode as the good ring.
        (
            "stranger",
            Some(SERVICE_UID),
            "owned by uid 4244, not by a trusted uid",
        ),
    ] {
        let (code, out, err) = read(name, trust);
        assert_eq!(
            code, 3,
            "{name} (trust {trust:?}) was not refused: {out}\n{err}"
        );
        assert!(
            out.starts_with("REFUSED PermissionError: ") && out.contains(why),
            "{name}: {out}\n{err}"
        );
    }
    drop(writers);
}

/// A Unix-socket listener that answers every frame with a pong: an impostor at a socket
/// path, run as `uid`.
const FAKE_LISTENER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
print("LISTENING", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        head = c.recv(4, socket.MSG_WAITALL)
        if len(head) == 4:
            c.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL)
            pong = b'{"type":"pong","v":1,"id":1}'
            c.sendall(struct.pack(">I", len(pong)) + pong)
    except OSError:
        pass
    c.close()
"#;

/// protocol.md §1, §11: the docs' `connect` reads SO_PEERCRED and accepts the real server
/// (root here, or the given pid), and refuses a listener of another uid at the socket
/// path even though it speaks the protocol, unless told that uid is the server's.
#[test]
fn docs_client_checks_the_peer_uid_and_pid() {
    if !root_or_skip("the peer-check test") {
        return;
    }
    let Some(env) = Env::get() else { return };
    let Some(outside) = Outside::new() else {
        return;
    };
    use std::ffi::OsStr;
    use std::os::unix::fs::{chown, PermissionsExt};
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let pid = server.pid().to_string();
    let other_pid = (server.pid() + 1).to_string();
    let peer = |user: Option<(u32, u32, &[u32])>, sock: &Path, rest: &[&str]| {
        let mut args = vec![OsStr::new("peer"), sock.as_os_str()];
        args.extend(rest.iter().map(OsStr::new));
        outside.run(user, &args)
    };

    // The real server (root, like this test): accepted by default (own uid or root), and
    // with its pid; refused when another pid was expected.
    for rest in [&[][..], &["0", &pid]] {
        let (code, out, err) = peer(None, &server.socket, rest);
        assert_eq!((code, out.as_str()), (0, "PONG"), "{rest:?}: {err}");
    }
    let (code, out, err) = peer(None, &server.socket, &["0", &other_pid]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains(&format!("peer pid {pid} uid 0 is not the model server")),
        "{out}"
    );

    // The impostor: uid 65534 listening in a directory of its own.
    let fake_dir = outside.path().join("fake");
    std::fs::create_dir(&fake_dir).unwrap();
    chown(&fake_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&fake_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fake_sock = fake_dir.join("det.sock");
    let mut fake = Command::new(&outside.python);
    fake.args(["-c", FAKE_LISTENER])
        .arg(&fake_sock)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    as_user(&mut fake, NOBODY, NOBODY, &[]);
    let mut fake = framebus_testkit::process::ChildGuard::new(fake.spawn().unwrap());
    let stdout = fake.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "LISTENING", "the fake listener did not start");

    // A client expecting root or its own uid, and one expecting the service user: both
    // refuse the impostor before sending anything.
    for rest in [&[][..], &["4242"]] {
        let (code, out, err) = peer(None, &fake_sock, rest);
        assert_eq!(code, 3, "{rest:?}: the impostor was accepted: {out}\n{err}");
        assert!(
            out.starts_with("REFUSED PermissionError: ")
                && out.contains("uid 65534 is not the model server"),
            "{out}"
        );
    }
    // A service-group member (uid 65534 itself) told the server's uid is 4242 refuses
    // a fellow member's listener too, though that runs as its own uid.
    let member = Some((NOBODY, NOBODY, &[SERVICE_GID][..]));
    let (code, out, err) = peer(member, &fake_sock, &["4242"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("uid 65534 is not the model server"), "{out}");
    // Told that 65534 is the server's uid, the same client talks to it: the refusals
    // above came from the uid check, not from the listener.
    let (code, out, err) = peer(None, &fake_sock, &["65534"]);
    assert_eq!((code, out.as_str()), (0, "PONG"), "{err}");
    fake.kill();
    server.assert_alive(None);
}
