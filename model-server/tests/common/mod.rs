//! Helpers of model-server's integration tests: frames written into rings, the real
//! `model-server` binary on a temporary directory, a blocking client, and the reference
//! detector. Assets, ffmpeg decoding and the process guard come from `framebus-testkit`.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framebus_client::raw as blocking;
use framebus_testkit::process::ChildGuard;
use framebus_testkit::{self as testkit, assets};
use proto_schema::framing;
use proto_schema::message::{
    decode_response, FrameMeta, FrameRef, InferenceRequest, InferenceResponse, Request, Response,
};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::PROTOCOL_VERSION;
use shm_ring::{FrameInfo, RingWriter};

pub const MAX_FRAME: usize = framing::DEFAULT_MAX_FRAME;
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;

/// Everything a real-model test needs.
#[derive(Debug, Clone)]
pub struct Env {
    pub assets: PathBuf,
    pub ort_dylib: PathBuf,
    pub python: PathBuf,
}

impl Env {
    /// The environment, or `None` (after printing SKIP) outside CI when something is
    /// missing.
    pub fn get() -> Option<Env> {
        let assets = assets::assets_with(&[assets::YOLOV8, assets::YOLOX, assets::PEOPLE_WALK])?;
        let ort_dylib = assets::require_ort()?;
        let python = assets::python().or_else(|| testkit::missing("FRAMEBUS_PYTHON"))?;
        Some(Env {
            assets,
            ort_dylib,
            python,
        })
    }

    pub fn model(&self, name: &str) -> PathBuf {
        self.assets.join(format!("models/{name}.onnx"))
    }

    pub fn video(&self) -> PathBuf {
        self.assets.join(assets::PEOPLE_WALK)
    }
}

/// Frame `index` of the test video as raw `pix_fmt` bytes (`nv12`, `yuv420p`, `bgr24`,
/// `rgb24`), decoded by the ffmpeg CLI with its default conversion.
pub fn decode_frame(env: &Env, index: u32, pix_fmt: &str) -> Vec<u8> {
    testkit::ffmpeg::decode_frame(&env.video(), index, pix_fmt)
}

/// A ring holding one published frame.
pub struct Ring {
    pub writer: RingWriter,
    pub info: FrameInfo,
    pub name: String,
}

impl Ring {
    /// Creates ring `name` in `dir` for `format` frames and publishes `bytes`.
    pub fn with_frame(dir: &Path, name: &str, format: PixelFormat, bytes: &[u8]) -> Ring {
        let geometry = FrameGeometry::packed(WIDTH, HEIGHT, format).unwrap();
        let mut writer = RingWriter::builder(name)
            .dir(dir)
            .slots(4)
            .geometry(geometry)
            .create()
            .expect("ring created");
        let info = Self::write(&mut writer, bytes);
        Ring {
            writer,
            info,
            name: name.to_owned(),
        }
    }

    fn write(writer: &mut RingWriter, bytes: &[u8]) -> FrameInfo {
        let mut slot = writer.begin_write();
        slot.data_mut().copy_from_slice(bytes);
        slot.publish(0, 0)
    }

    /// Publishes another frame (into the next slot).
    pub fn publish(&mut self, bytes: &[u8]) -> FrameInfo {
        self.info = Self::write(&mut self.writer, bytes);
        self.info
    }

    /// A request for the last published frame.
    pub fn request(&self, id: u64, model_id: &str) -> InferenceRequest {
        let g = self.writer.geometry();
        InferenceRequest {
            v: PROTOCOL_VERSION,
            id,
            camera_id: format!("cam-{}", self.name),
            model_id: model_id.to_owned(),
            frame: FrameRef {
                ring: self.name.clone(),
                generation: self.writer.generation(),
                slot: self.info.slot,
                seq: self.info.seq,
            },
            meta: FrameMeta::from_geometry(self.info.frame_id, &g, self.info.capture_ts_ns),
            sent_ts_ns: 0,
            deadline_ts_ns: None,
        }
    }
}

/// A running `model-server` on a temporary directory; stopped (SIGTERM) on drop.
pub struct Server {
    pub child: ChildGuard,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The control socket (`<socket>.ctl`), when started with one.
    pub control: Option<PathBuf>,
    pub rings: PathBuf,
    pub model_id: String,
}

impl Server {
    /// Starts the server for `model` (a path) with extra flags and waits until it answers
    /// a ping.
    pub fn start(env: &Env, model: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let rings = dir.path().join("rings");
        // An owned ring directory, as the server requires (created 0750 like the agent's).
        shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
        Self::start_in(env, model, extra, dir, rings)
    }

    /// [`Server::start`] with a control socket at `<socket>.ctl` (what core-agent passes).
    pub fn start_with_control(env: &Env, model: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let rings = dir.path().join("rings");
        shm_ring::owned_dir::ensure_owned_dir(&rings).unwrap();
        Self::launch(env, model, extra, dir, rings, true)
    }

    pub fn start_in(
        env: &Env,
        model: &Path,
        extra: &[&str],
        dir: tempfile::TempDir,
        rings: PathBuf,
    ) -> Server {
        Self::launch(env, model, extra, dir, rings, false)
    }

    fn launch(
        env: &Env,
        model: &Path,
        extra: &[&str],
        dir: tempfile::TempDir,
        rings: PathBuf,
        with_control: bool,
    ) -> Server {
        // The socket directory must be one the service owns (0700 here; tempdir makes it
        // 0755 under the usual umask, which the server refuses).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.path().join("model.sock");
        let control = with_control.then(|| dir.path().join("model.sock.ctl"));
        let model_id = "det".to_owned();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_model-server"));
        if let Some(c) = &control {
            cmd.arg("--control-socket").arg(c);
        }
        let child = cmd
            .arg("--model")
            .arg(model)
            .args(["--model-id", &model_id, "--socket"])
            .arg(&socket)
            .arg("--ring-dir")
            .arg(&rings)
            .arg("--ort-dylib")
            .arg(&env.ort_dylib)
            .args(["--threads", "1"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("model-server starts");
        let mut server = Server {
            child: ChildGuard::new(child).grace(Duration::from_secs(10)),
            dir,
            socket,
            control,
            rings,
            model_id,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait() {
                panic!("model-server exited during start-up: {status}");
            }
            if let Ok(mut c) = Client::connect(&self.socket) {
                if matches!(c.call(&Request::ping(0)), Response::Pong { .. }) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "model-server not ready in 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    /// Asserts the server still answers a ping and (when given) a good inference request.
    pub fn assert_alive(&self, good: Option<&InferenceRequest>) {
        let mut c = self.client();
        assert!(matches!(
            c.call(&Request::ping(99)),
            Response::Pong { id: 99, .. }
        ));
        if let Some(req) = good {
            let r = c.infer(req);
            assert!(r.error.is_none(), "good request failed: {:?}", r.error);
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        assert!(self.child.is_held(), "model-server is not running");
        self.child
            .terminate(Duration::from_secs(30))
            .expect("model-server did not exit within 30 s of SIGTERM")
    }

    /// Waits for the server to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        assert!(self.child.is_held(), "model-server is not running");
        self.child
            .wait_timeout(Duration::from_secs(30))
            .expect("model-server did not exit within 30 s")
    }
}

/// A blocking client speaking the framing of `proto_schema`.
pub struct Client {
    pub stream: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client { stream })
    }

    pub fn send(&mut self, req: &Request) {
        blocking::write_message(&mut self.stream, req, MAX_FRAME).expect("send");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send raw");
    }

    /// Sends a JSON text as one frame.
    pub fn send_json(&mut self, json: &str) {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        self.send_raw(&frame);
    }

    /// Reads one response; `None` at a clean end of stream.
    pub fn recv(&mut self) -> Option<Response> {
        let payload = blocking::read_frame(&mut self.stream, MAX_FRAME).expect("read frame")?;
        Some(decode_response(&payload).expect("server sent a valid response"))
    }

    pub fn call(&mut self, req: &Request) -> Response {
        self.send(req);
        self.recv().expect("response")
    }

    pub fn infer(&mut self, req: &InferenceRequest) -> InferenceResponse {
        match self.call(&Request::Infer(req.clone())) {
            Response::InferResult(r) => r,
            other => panic!("expected infer_result, got {other:?}"),
        }
    }

    /// Whether the server closed the connection (reads EOF within `limit`).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

/// The error code of a response, if it is an error.
pub fn error_code(r: &Response) -> Option<proto_schema::error::ErrorCode> {
    r.error_body().map(|e| e.code)
}

/// One reference detection from `tests/reference/detect_reference.py`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RefDetection {
    pub class_id: u32,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Runs the checked-in reference script on one raw frame (`pix_fmt` as ffmpeg names it).
pub fn reference(
    env: &Env,
    model: &Path,
    family: &str,
    bytes: &[u8],
    pix_fmt: &str,
    score: f32,
) -> Vec<RefDetection> {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("frame.raw");
    std::fs::write(&frame, bytes).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/detect_reference.py");
    let out = Command::new(&env.python)
        .arg(script)
        .arg("--model")
        .arg(model)
        .args(["--family", family, "--format", pix_fmt, "--frame"])
        .arg(&frame)
        .args([
            "--width",
            &WIDTH.to_string(),
            "--height",
            &HEIGHT.to_string(),
        ])
        .args(["--score", &score.to_string()])
        .output()
        .expect("reference script runs");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

/// Asserts the server's detections match the reference: every detection scoring at least
/// `margin` above the threshold on either side has a partner of the same class on the
/// other side with IoU >= 0.95 and a score within 0.02. Returns the matched person count.
pub fn assert_matches(
    got: &[proto_schema::message::Detection],
    want: &[RefDetection],
    threshold: f32,
    margin: f32,
) -> usize {
    let firm = threshold + margin;
    let mut persons = 0;
    for w in want.iter().filter(|w| w.score >= firm) {
        let best = got
            .iter()
            .filter(|g| g.class_id == w.class_id)
            .max_by(|a, b| iou(&a.bbox, &w.bbox).total_cmp(&iou(&b.bbox, &w.bbox)))
            .unwrap_or_else(|| panic!("reference {w:?} has no server detection; got {got:#?}"));
        let i = iou(&best.bbox, &w.bbox);
        assert!(
            i >= 0.95,
            "IoU {i} < 0.95: server {best:?} vs reference {w:?}"
        );
        let d = (best.confidence - w.score).abs();
        assert!(
            d <= 0.02,
            "score differs by {d}: server {best:?} vs reference {w:?}"
        );
        if w.class_id == 0 {
            persons += 1;
        }
    }
    for g in got.iter().filter(|g| g.confidence >= firm) {
        assert!(
            want.iter()
                .any(|w| w.class_id == g.class_id && iou(&g.bbox, &w.bbox) >= 0.95),
            "server detection {g:?} has no reference partner; reference {want:#?}"
        );
    }
    persons
}
