//! Issue 10, defect 1, at the model server: a ring truncated under the server's mapping
//! (it would have been SIGBUS for the whole process) is a typed `unknown_ring` answer
//! for that ring only; other rings keep getting detections from the same process. A
//! ring file planted with another owner or a loose mode is refused the same way.
//! Issue 25: owner and mode are checked again while a ring is served (gap 6), and an
//! outside writer running as another uid is served only when trusted by flag (gap 3).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{decode_frame, error_code, Env, Ring, Server};
use proto_schema::error::ErrorCode;
use proto_schema::message::Request;
use proto_schema::pixel::PixelFormat;

fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn truncated_ring_is_a_typed_error_and_other_rings_keep_working() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let a = Ring::with_frame(&server.rings, "ringA", PixelFormat::Nv12, &frame);
    let b = Ring::with_frame(&server.rings, "ringB", PixelFormat::Nv12, &frame);
    let mut client = server.client();
    // Both rings served: the server has both mapped (cached readers).
    for (i, ring) in [&a, &b].into_iter().enumerate() {
        let r = client.infer(&ring.request(i as u64, &server.model_id));
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(!r.detections.is_empty());
    }

    // The owner truncates ring A under the server's live mapping.
    truncate(a.writer.path(), 0);
    // Ring A's writer mapping is truncated too: leak it instead of letting its drop
    // write the closed state into a page that no longer exists.
    let a_request = a.request(10, &server.model_id);
    std::mem::forget(a);

    let r = client.infer(&a_request);
    let e = r.error.expect("a truncated ring cannot give detections");
    assert_eq!(e.code, ErrorCode::UnknownRing, "{e:?}");
    assert!(e.message.contains("truncated"), "{e:?}");
    assert!(r.detections.is_empty());
    // Asked again: the cached mapping was dropped, the reopen sees the short file.
    let mut again = a_request.clone();
    again.id = 11;
    let r = client.infer(&again);
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::UnknownRing));

    // Same process, same connection: ring B still gives detections.
    let r = client.infer(&b.request(12, &server.model_id));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(!r.detections.is_empty());
    server.assert_alive(Some(&b.request(13, &server.model_id)));
}

#[test]
fn rings_with_untrusted_owner_or_loose_mode_are_refused() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let good = Ring::with_frame(&server.rings, "good", PixelFormat::Nv12, &frame);
    let planted = server.rings.join("planted.ring");
    std::fs::copy(good.writer.path(), &planted).unwrap();
    let mut req = good.request(1, &server.model_id);
    req.frame.ring = "planted".into();

    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let resp = server.client().call(&Request::Infer(req.clone()));
    assert_eq!(error_code(&resp), Some(ErrorCode::UnknownRing), "{resp:?}");
    assert!(
        format!("{resp:?}").contains("writable by group or others"),
        "{resp:?}"
    );

    if shm_ring::owned_dir::effective_uid() == 0 {
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        req.id = 2;
        let resp = server.client().call(&Request::Infer(req));
        assert_eq!(error_code(&resp), Some(ErrorCode::UnknownRing), "{resp:?}");
        assert!(
            format!("{resp:?}").contains("owned by uid 65534"),
            "{resp:?}"
        );
    } else {
        eprintln!("owner case skipped: chown to uid 65534 needs root (CI runs as root)");
    }
    server.assert_alive(Some(&good.request(3, &server.model_id)));
}

/// Issue 25, gap 6: owner and mode are checked again on an open, served ring (one
/// `fstat` at most every `RING_RECHECK_INTERVAL`): after `chmod 0666` or `chown nobody`
/// of the live ring the server stops serving it, with the error an open would give.
#[test]
fn a_ring_chmodded_or_chowned_while_served_is_dropped() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let ring = Ring::with_frame(&server.rings, "live", PixelFormat::Nv12, &frame);
    let path = ring.writer.path().to_path_buf();
    let mut client = server.client();
    let r = client.infer(&ring.request(1, &server.model_id));
    assert!(r.error.is_none(), "{:?}", r.error);
    // Past the interval, so the next request must recheck.
    let after_interval = model_server::frames::RING_RECHECK_INTERVAL + Duration::from_millis(300);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::thread::sleep(after_interval);
    let r = client.infer(&ring.request(2, &server.model_id));
    let e = r
        .error
        .expect("a ring writable by others is no longer served");
    assert_eq!(e.code, ErrorCode::UnknownRing, "{e:?}");
    assert!(e.message.contains("writable by group or others"), "{e:?}");
    // Put back: served again (reopened, checked).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = client.infer(&ring.request(3, &server.model_id));
    assert!(r.error.is_none(), "{:?}", r.error);

    if shm_ring::owned_dir::effective_uid() != 0 {
        eprintln!("chown case skipped: chown to uid 65534 needs root (CI runs as root)");
        return;
    }
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    std::thread::sleep(after_interval);
    let r = client.infer(&ring.request(4, &server.model_id));
    let e = r
        .error
        .expect("a ring chowned to nobody is no longer served");
    assert_eq!(e.code, ErrorCode::UnknownRing, "{e:?}");
    assert!(e.message.contains("owned by uid 65534"), "{e:?}");
    server.assert_alive(None);
}

/// Issue 25, gap 3: an outside program writing its own frames as another user (here a
/// real `frame-kernel` running as uid 65534, in its own ring directory). By default the
/// server refuses that directory at start (exit status 2, naming the owner and the flag)
/// and a ring of that owner in its own directory with `unknown_ring`; with
/// `--trust-ring-uid 65534` it serves the writer's frames.
#[test]
fn a_foreign_writer_is_served_only_when_trusted_by_flag() {
    let Some(env) = Env::get() else { return };
    if shm_ring::owned_dir::effective_uid() != 0 {
        eprintln!("SKIP: running a writer as uid 65534 needs root (CI runs as root)");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_model-server"))
        .parent()
        .unwrap()
        .to_path_buf();
    let kernel_bin = bin_dir.join("frame-kernel");
    assert!(
        kernel_bin.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        kernel_bin.display()
    );
    // The writer's staging: binary and video it can read, a parent it can traverse.
    let stage = tempfile::tempdir().unwrap();
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = stage.path().join("frame-kernel");
    std::fs::copy(&kernel_bin, &kernel).unwrap();
    let video = stage.path().join("video.mp4");
    std::fs::copy(env.video(), &video).unwrap();
    std::fs::set_permissions(&video, std::fs::Permissions::from_mode(0o644)).unwrap();
    // As docs/ring-format.md §6.1 sets it up: the administrator gives the writer its
    // own directory (here group 0, the server's, standing for the service group).
    let ring_dir = stage.path().join("writer-rings");
    std::fs::create_dir(&ring_dir).unwrap();
    std::os::unix::fs::chown(&ring_dir, Some(65534), Some(0)).unwrap();
    std::fs::set_permissions(&ring_dir, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let writer = Command::new(&kernel)
        .args(["--camera-id", "outside", "--source"])
        .arg(&video)
        .arg("--ring-dir")
        .arg(&ring_dir)
        .args(["--loop", "--slots", "16", "--speed", "0.25"])
        .uid(65534)
        .gid(65534)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("frame-kernel starts");
    let mut guard = framebus_testkit::process::ChildGuard::new(writer);
    let ring_file = shm_ring::ring_path(&ring_dir, "outside");
    let deadline = Instant::now() + Duration::from_secs(60);
    let trust = shm_ring::RingTrust::new().allow_uid(65534);
    let reader = loop {
        if let Ok(r) = shm_ring::RingReader::open_with(&ring_dir, "outside", &trust) {
            if r.latest().is_some() {
                break r;
            }
        }
        assert!(guard.try_wait().is_none(), "the writer exited");
        assert!(Instant::now() < deadline, "no frame from the writer");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(std::fs::metadata(&ring_file).unwrap().uid(), 65534);
    assert_eq!(std::fs::metadata(&ring_dir).unwrap().uid(), 65534);

    // Default: the writer's directory is refused at start.
    let socket_dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_model-server"))
        .arg("--model")
        .arg(env.model("yolox_nano"))
        .arg("--socket")
        .arg(socket_dir.path().join("m.sock"))
        .arg("--ring-dir")
        .arg(&ring_dir)
        .arg("--ort-dylib")
        .arg(&env.ort_dylib)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(proto_schema::exit::EXIT_CONFIG),
        "{err}"
    );
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains("--trust-ring-uid 65534"), "{err}");

    // Default, the ring in the server's own directory: unknown_ring.
    let own = Server::start(&env, &env.model("yolox_nano"), &[]);
    std::fs::copy(&ring_file, ring_path_in(&own.rings, "planted")).unwrap();
    let planted = ring_path_in(&own.rings, "planted");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let mut req = request_for(&reader, 1, &own.model_id);
    req.frame.ring = "planted".into();
    let r = own.client().infer(&req);
    let e = r.error.expect("an untrusted owner's ring is refused");
    assert_eq!(e.code, ErrorCode::UnknownRing, "{e:?}");
    assert!(e.message.contains("owned by uid 65534"), "{e:?}");
    drop(own);

    // Trusted by flag: the writer's own ring, from its own directory, is served.
    let trusted = Server::start_in(
        &env,
        &env.model("yolox_nano"),
        &["--trust-ring-uid", "65534"],
        tempfile::tempdir().unwrap(),
        ring_dir.clone(),
    );
    let mut client = trusted.client();
    let mut served = None;
    for id in 0..20 {
        let r = client.infer(&request_for(&reader, id, &trusted.model_id));
        match r.error {
            None => {
                served = Some(r);
                break;
            }
            // The writer moved on under a slow request: ask for a newer frame.
            Some(e) if e.code == ErrorCode::StaleFrame => continue,
            Some(e) => panic!("trusted writer's ring refused: {e:?}"),
        }
    }
    let r = served.expect("a frame of the trusted writer served");
    assert!(!r.detections.is_empty());
    drop(trusted);
    drop(guard);
}

fn ring_path_in(dir: &Path, name: &str) -> std::path::PathBuf {
    shm_ring::ring_path(dir, name)
}

/// An `infer` for the newest frame of `reader`.
fn request_for(
    reader: &shm_ring::RingReader,
    id: u64,
    model_id: &str,
) -> proto_schema::message::InferenceRequest {
    let f = reader.latest().expect("a frame");
    proto_schema::message::InferenceRequest {
        v: proto_schema::PROTOCOL_VERSION,
        id,
        camera_id: "outside".into(),
        model_id: model_id.into(),
        frame: proto_schema::message::FrameRef {
            ring: reader.name().into(),
            generation: reader.generation(),
            slot: f.slot,
            seq: f.seq,
        },
        meta: proto_schema::message::FrameMeta::from_geometry(
            f.frame_id,
            &reader.geometry(),
            f.capture_ts_ns,
        ),
        sent_ts_ns: 0,
        deadline_ts_ns: None,
    }
}
