//! Serving behaviour of the real binary: many concurrent clients, pipelined requests on one
//! connection, dynamic batching, control messages, socket handling and graceful shutdown.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::sync::Arc;

use common::{decode_frame, error_code, Client, Env, Ring, Server};
use proto_schema::error::ErrorCode;
use proto_schema::message::{Detection, Request, Response, ServerState};
use proto_schema::pixel::PixelFormat;

fn same_detections(a: &[Detection], b: &[Detection]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.class_id, y.class_id);
        assert!((x.confidence - y.confidence).abs() < 1e-4, "{x:?} vs {y:?}");
        assert!(common::iou(&x.bbox, &y.bbox) > 0.999, "{x:?} vs {y:?}");
    }
}

/// 16 clients on their own connections, 8 requests each over two rings holding different
/// frames: every response carries its request's id and the detections of its frame.
#[test]
fn concurrent_clients_get_their_own_answers() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &["--instances", "2"]);
    let rings = [
        Ring::with_frame(
            &server.rings,
            "cam-a",
            PixelFormat::Nv12,
            &decode_frame(&env, 100, "nv12"),
        ),
        Ring::with_frame(
            &server.rings,
            "cam-b",
            PixelFormat::Bgr24,
            &decode_frame(&env, 300, "bgr24"),
        ),
    ];
    let expected: Vec<Vec<Detection>> = rings
        .iter()
        .map(|r| {
            server
                .client()
                .infer(&r.request(0, &server.model_id))
                .detections
        })
        .collect();
    assert_ne!(expected[0].len(), 0);
    let rings = Arc::new(rings);
    let expected = Arc::new(expected);
    let socket = server.socket.clone();
    let model_id = server.model_id.clone();
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let (rings, expected, socket, model_id) = (
                rings.clone(),
                expected.clone(),
                socket.clone(),
                model_id.clone(),
            );
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).unwrap();
                for i in 0..8u64 {
                    let which = ((t + i) % 2) as usize;
                    let id = t * 1000 + i;
                    let r = c.infer(&rings[which].request(id, &model_id));
                    assert_eq!(r.id, id);
                    assert!(r.error.is_none(), "{:?}", r.error);
                    assert_eq!(r.camera_id, format!("cam-{}", rings[which].name));
                    same_detections(&r.detections, &expected[which]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let Response::Stats(stats) = server.client().call(&Request::get_stats(1)) else {
        panic!("stats")
    };
    assert_eq!(stats.requests, 2 + 16 * 8);
    assert_eq!(stats.ok, stats.requests);
    assert_eq!(stats.per_camera["cam-cam-a"], 1 + 64);
    let total = &stats.latency_us["total"];
    assert_eq!(total.count, stats.ok);
    assert!(total.p50 > 0 && total.p50 <= total.p99);
}

/// Many requests written back to back on one connection before reading: all answered,
/// matched by id.
#[test]
fn pipelined_requests_on_one_connection() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let ring = Ring::with_frame(
        &server.rings,
        "cam",
        PixelFormat::Nv12,
        &decode_frame(&env, 100, "nv12"),
    );
    let mut c = server.client();
    for id in 0..30 {
        c.send(&Request::Infer(ring.request(id, &server.model_id)));
        c.send(&Request::ping(10_000 + id));
    }
    let mut infer = BTreeSet::new();
    let mut pongs = BTreeSet::new();
    for _ in 0..60 {
        match c.recv().unwrap() {
            Response::InferResult(r) => {
                assert!(r.error.is_none());
                infer.insert(r.id);
            }
            Response::Pong { id, .. } => {
                pongs.insert(id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(infer, (0..30).collect());
    assert_eq!(pongs, (10_000..10_030).collect());
}

/// A dynamic-batch model (derived from YOLOX by the checked-in script) batches requests
/// that arrive within the delay, and batched results equal single-image results.
#[test]
fn dynamic_batching_groups_requests() {
    let Some(env) = Env::get() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("yolox_dyn.onnx");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/make_dynamic_batch.py"
    );
    let st = Command::new(&env.python)
        .arg(script)
        .arg(env.model("yolox_nano"))
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    let fixed = Server::start(&env, &env.model("yolox_nano"), &[]);
    let batched = Server::start(
        &env,
        &model,
        &["--max-batch", "4", "--batch-delay-us", "200000"],
    );
    let frames: Vec<Vec<u8>> = [100, 200, 300, 400]
        .iter()
        .map(|&i| decode_frame(&env, i, "nv12"))
        .collect();
    let mut expected = Vec::new();
    let mut rings = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let name = format!("cam{i}");
        let r_fixed = Ring::with_frame(&fixed.rings, &name, PixelFormat::Nv12, f);
        expected.push(
            fixed
                .client()
                .infer(&r_fixed.request(i as u64, &fixed.model_id))
                .detections,
        );
        rings.push(Ring::with_frame(
            &batched.rings,
            &name,
            PixelFormat::Nv12,
            f,
        ));
    }
    let Response::Status(status) = batched.client().call(&Request::get_status(1)) else {
        panic!()
    };
    assert_eq!(status.max_batch, 4);
    let mut c = batched.client();
    for (i, r) in rings.iter().enumerate() {
        c.send(&Request::Infer(r.request(i as u64, &batched.model_id)));
    }
    for _ in 0..4 {
        let Some(Response::InferResult(r)) = c.recv() else {
            panic!()
        };
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.timings.batch_size, 4, "all four arrived within the delay");
        same_detections(&r.detections, &expected[r.id as usize]);
    }
    // A lone request runs alone once the delay is up.
    let r = batched
        .client()
        .infer(&rings[0].request(9, &batched.model_id));
    assert_eq!(r.timings.batch_size, 1);
}

#[test]
fn status_reports_the_model_and_limits() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(
        &env,
        &env.model("yolov8n_int8"),
        &[
            "--instances",
            "2",
            "--max-connections",
            "7",
            "--max-inflight",
            "9",
        ],
    );
    let Response::Status(s) = server.client().call(&Request::get_status(42)) else {
        panic!()
    };
    assert_eq!(s.id, 42);
    assert_eq!(s.state, ServerState::Ready);
    assert_eq!(s.model_id, "det");
    assert_eq!(s.family, "yolov8");
    assert_eq!(s.provider, "cpu");
    assert_eq!(s.instances, 2);
    assert_eq!(s.input, [640, 640]);
    assert_eq!(
        (s.max_connections, s.queue_capacity, s.max_batch),
        (7, 9, 1)
    );
    assert_eq!(s.pid as i32, server.pid());
    assert_eq!(s.connections, 1);
    let meta = std::fs::symlink_metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

/// `cuda` on a runtime without CUDA falls back to CPU and says so.
#[test]
fn cuda_request_falls_back_to_cpu() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &["--device", "cuda"]);
    let Response::Status(s) = server.client().call(&Request::get_status(1)) else {
        panic!()
    };
    // The CPU wheel has no CUDA provider; a GPU build would report "cuda".
    assert!(s.provider == "cpu" || s.provider == "cuda");
}

#[test]
fn stale_socket_is_replaced_and_foreign_files_are_not() {
    let Some(env) = Env::get() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let rings = dir.path().join("rings");
    shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
    let sock = dir.path().join("model.sock");
    // A socket file nobody listens on, as left by a crash.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut server = Server::start_in(
        &env,
        &env.model("yolox_nano"),
        &["--socket-mode", "0600"],
        dir,
        rings,
    );
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(server.stop().success());

    // A regular file in the way: refused, left alone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let sock = dir.path().join("model.sock");
    std::fs::write(&sock, "not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_model-server"))
        .arg("--model")
        .arg(env.model("yolox_nano"))
        .arg("--socket")
        .arg(&sock)
        .arg("--ring-dir")
        .arg(dir.path())
        .arg("--ort-dylib")
        .arg(&env.ort_dylib)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
}

#[test]
fn invalid_configuration_lists_every_problem() {
    let Some(env) = Env::get() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_model-server"))
        .args(["--model", "/nonexistent.onnx", "--socket", "/tmp/x.sock"])
        .args(["--ring-dir", "/nonexistent-dir", "--instances", "0"])
        .arg("--ort-dylib")
        .arg(&env.ort_dylib)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["--model", "--ring-dir", "--instances"] {
        assert!(err.contains(needle), "{needle} missing in {err}");
    }
}

/// A shutdown request on the control socket is acknowledged, requests already queued
/// are answered, new ones are not accepted, the process exits 0 and removes its sockets.
/// On the data socket (issue 25) it is refused with `invalid_message` and changes nothing.
#[test]
fn shutdown_request_drains_then_exits() {
    let Some(env) = Env::get() else { return };
    let mut server = Server::start_with_control(&env, &env.model("yolox_nano"), &[]);
    let ring = Ring::with_frame(
        &server.rings,
        "cam",
        PixelFormat::Nv12,
        &decode_frame(&env, 100, "nv12"),
    );
    let mut busy = server.client();
    for id in 0..5 {
        busy.send(&Request::Infer(ring.request(id, &server.model_id)));
    }
    // Make sure they are queued before the shutdown arrives.
    let first = busy.recv().unwrap();
    assert!(first.error_body().is_none());
    let mut data = server.client();
    for id in [70, 71] {
        let r = data.call(&Request::shutdown(id));
        assert_eq!(r.id(), Some(id), "{r:?}");
        assert_eq!(error_code(&r), Some(ErrorCode::InvalidMessage), "{r:?}");
        assert!(
            format!("{r:?}").contains("only on the control socket"),
            "{r:?}"
        );
    }
    assert!(matches!(
        data.call(&Request::ping(72)),
        Response::Pong { id: 72, .. }
    ));
    let mut ctl = Client::connect(server.control.as_ref().unwrap()).unwrap();
    assert!(matches!(
        ctl.call(&Request::shutdown(77)),
        Response::ShutdownAck { id: 77, .. }
    ));
    let mut answered = 1;
    while let Some(r) = busy.recv() {
        let code = r.error_body().map(|e| e.code);
        assert!(
            code.is_none() || code == Some(ErrorCode::ShuttingDown),
            "{r:?}"
        );
        answered += 1;
    }
    assert_eq!(
        answered, 5,
        "every queued request answered before the close"
    );
    assert!(server.wait_exit().success());
    assert!(!server.socket.exists(), "socket removed");
    assert!(
        !server.control.as_ref().unwrap().exists(),
        "control socket removed"
    );
    assert!(Client::connect(&server.socket).is_err());
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let Some(env) = Env::get() else { return };
    let mut server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let idle = server.client(); // an idle connection must not block the exit
    assert!(server.stop().success());
    assert!(!server.socket.exists());
    drop(idle);
}
