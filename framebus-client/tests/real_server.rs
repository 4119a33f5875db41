//! The client against the real `model-server` (yolox_nano from `$FRAMEBUS_ASSETS`) on a
//! real ring: pipelined inference on one connection, answers matched by id, a stale
//! frame surfaced as a typed error code, and the blocking client doing the same.
//!
//! Needs the workspace binaries built (`cargo build --bins`) and the assets; outside CI
//! a missing prerequisite prints SKIP, in CI (`CI=true`) it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framebus_client::{ring, BlockingClient, Client, ClientOptions, InferError};
use framebus_testkit::assets::{self, require};
use proto_schema::error::ErrorCode;
use proto_schema::message::ServerState;
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::RingWriter;

struct Server {
    child: Child,
    socket: PathBuf,
    rings: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Option<Server> {
    let model = assets::asset(assets::YOLOX)?;
    let ort = assets::require_ort()?;
    // target/<profile>/deps/<this test> -> target/<profile>/model-server
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent()?.parent()?.join("model-server");
    let bin = require("model-server binary (cargo build --bins)", bin)?;
    // An owned 0700 directory for the socket, as model-server requires.
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let rings = dir.path().join("rings");
    shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
    let socket = dir.path().join("m.sock");
    let child = Command::new(bin)
        .arg("--model")
        .arg(model)
        .args(["--model-id", "det", "--socket"])
        .arg(&socket)
        .arg("--ring-dir")
        .arg(&rings)
        .arg("--ort-dylib")
        .arg(ort)
        .args(["--threads", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("model-server starts");
    Some(Server {
        child,
        socket,
        rings,
        _dir: dir,
    })
}

/// Waits (bounded) until the server answers a status request as ready.
fn wait_ready(server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("model-server exited during start-up: {status}");
        }
        if let Ok(mut c) = BlockingClient::connect(&server.socket) {
            if c.status().is_ok_and(|s| s.state == ServerState::Ready) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "model-server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A grey-ish NV12 frame with a gradient, so the model has something to look at.
fn fill(bytes: &mut [u8], k: usize) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = ((i / 7 + k * 13) % 256) as u8;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_inference_on_a_real_ring() {
    let Some(mut server) = start_server() else {
        return;
    };
    wait_ready(&mut server);
    let geometry = FrameGeometry::packed(320, 240, PixelFormat::Nv12).unwrap();
    let mut writer = RingWriter::builder("cam1")
        .dir(&server.rings)
        .slots(8)
        .geometry(geometry)
        .create()
        .unwrap();
    let reader = ring::open_ring(&server.rings, "cam1").unwrap();

    // Eight frames in eight slots, one request per frame, all in flight at once.
    let mut targets = Vec::new();
    for k in 0..8 {
        let mut slot = writer.begin_write();
        fill(slot.data_mut(), k);
        let info = slot.publish(k as i64, proto_schema::time::UnixNanos::now().get());
        targets.push(ring::FrameTarget::new(&reader, &info));
    }
    assert_eq!(
        ring::latest_frame(&reader).unwrap().as_ref(),
        targets.last()
    );
    let client = Arc::new(
        Client::connect_with(
            &server.socket,
            ClientOptions::default().request_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap(),
    );
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let client = client.clone();
            let request = t.request("cam1", "det", None);
            tokio::spawn(async move { client.infer(request).await })
        })
        .collect();
    for (t, task) in targets.iter().zip(tasks) {
        let answer = task.await.unwrap().expect("inference succeeds");
        // Each call got the answer to its own request, whatever order they came in.
        assert_eq!(answer.frame_id, t.meta.frame_id);
        assert_eq!(answer.camera_id, "cam1");
        assert!(answer.timings.total_us > 0);
    }
    assert_eq!(client.in_flight(), 0);

    // The writer laps the ring: the first frame's slot now holds another frame.
    for k in 8..16 {
        let mut slot = writer.begin_write();
        fill(slot.data_mut(), k);
        slot.publish(k as i64, proto_schema::time::UnixNanos::now().get());
    }
    match client.infer(targets[0].request("cam1", "det", None)).await {
        Err(e @ InferError::Server { .. }) => assert_eq!(e.code(), Some(ErrorCode::StaleFrame)),
        other => panic!("expected stale_frame, got {other:?}"),
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.model_id, "det");

    // The blocking client: pipelined too, answers taken in another order than sent.
    let newest = ring::latest_frame(&reader).unwrap().unwrap();
    let socket = server.socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = BlockingClient::connect(&socket).unwrap();
        let ids: Vec<u64> = (0..4)
            .map(|_| {
                c.send(proto_schema::message::Request::Infer(
                    newest.request("cam1", "det", None),
                ))
                .unwrap()
            })
            .collect();
        for &id in ids.iter().rev() {
            let r = c.recv_infer(id).expect("inference succeeds");
            assert_eq!((r.id, r.frame_id), (id, newest.meta.frame_id));
        }
        assert_eq!(c.in_flight(), 0);
    })
    .await
    .unwrap();
}
