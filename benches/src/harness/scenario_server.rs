//! `bench server`: what the model server costs on top of ONNX Runtime, measured in one run
//! on this machine, reported as differences and ratios against raw `session.run`.
//!
//! 1. Overhead: end-to-end request latency through the real `model-server` binary (client
//!    write to response read; the frame read from a ring, letterboxed, inferred, decoded)
//!    minus raw `session.run` latency on the same letterboxed tensor with the same intra-op
//!    threads, p50 and p99.
//! 2. Ping round trip on one persistent connection, p50 and p99, next to the same frame
//!    echoed by a bare blocking thread (the floor of any Unix-socket server here).
//! 3. Throughput with 1, 2, 4, 8 concurrent clients against the best raw ONNX Runtime
//!    configuration (threads x instances) found on this machine, which the server is then
//!    started with.
//!
//! Raw and server measurements alternate (blocks of requests for latency, half-windows
//! for throughput) so that both see the same machine load.
//!
//! ```text
//! cargo build --release -p model-server -p benches
//! target/release/bench server [--duration-s 8] [--models yolox_nano,yolov8n_int8]
//! ```
//! Needs `ORT_DYLIB_PATH` (source .local/env.sh), the ffmpeg CLI and the assets
//! (`FRAMEBUS_ASSETS`, default `../shared/assets`).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use framebus_testkit::process::ChildGuard;
use model_server::family::{self, FamilyChoice};
use model_server::preprocess;
use model_server::session::{self, Device, Instance, Runtime, SessionConfig};
use proto_schema::framing::DEFAULT_MAX_FRAME;
use proto_schema::message::{FrameMeta, FrameRef, InferenceRequest, Request};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::PROTOCOL_VERSION;
use serde::Serialize;
use shm_ring::RingWriter;

/// `bench server`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Assets directory (models/, video/).
    #[arg(long, env = "FRAMEBUS_ASSETS")]
    assets: Option<PathBuf>,
    /// libonnxruntime.so.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: PathBuf,
    /// The model-server binary; default: next to this one.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seconds per throughput point (and the cap of each latency series).
    #[arg(long, default_value_t = 8.0)]
    duration_s: f64,
    /// Models to measure (file stems in `<assets>/models`).
    #[arg(long, value_delimiter = ',', default_value = "yolox_nano,yolov8n_int8")]
    models: Vec<String>,
    /// Concurrent client counts for the throughput table.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    clients: Vec<usize>,
    /// Most samples per latency series.
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
    /// Pings to time.
    #[arg(long, default_value_t = 20_000)]
    pings: usize,
    /// ONNX Runtime intra-op spinning, for the raw sessions and the server alike.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    spin: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        // Nearest rank.
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Dist {
            n: v.len(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
struct ModelResult {
    model: String,
    threads: usize,
    preprocess_ms: Dist,
    /// The same with reused buffers, as the server's workers run it.
    preprocess_reused_ms: Dist,
    raw: Dist,
    end_to_end: Dist,
    server_preprocess_ms_p50: f64,
    server_inference_ms_p50: f64,
    overhead_p50_ms: f64,
    overhead_p99_ms: f64,
    overhead_p50_pct: f64,
    raw_configs: Vec<RawConfig>,
    best: RawConfig,
    server_throughput: Vec<ClientPoint>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct RawConfig {
    threads: usize,
    instances: usize,
    per_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct ClientPoint {
    clients: usize,
    per_s: f64,
    /// Raw best configuration measured in the windows next to this point's.
    raw_per_s: f64,
    ratio: f64,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    duration_s: f64,
    /// Baseline: the same frames echoed by a blocking thread, no parsing.
    echo_us: Dist,
    ping_us: Dist,
    models: Vec<ModelResult>,
}

/// Runs `bench server`: prints the report (and writes `--json`).
pub fn run(cli: &ServerArgs) -> Result<()> {
    let assets = super::assets::assets_dir(cli.assets.as_deref());
    ensure!(
        assets.join("video/people_walk_540p.mp4").is_file(),
        "assets not found at {} (set FRAMEBUS_ASSETS)",
        assets.display()
    );
    let server_bin = match &cli.server_bin {
        Some(p) => p.clone(),
        None => super::system::default_bin_dir().join("model-server"),
    };
    ensure!(
        server_bin.is_file(),
        "no model-server at {} (cargo build --release -p model-server, or --server-bin)",
        server_bin.display()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = Runtime::init(&cli.ort_dylib)?;
    let frame = decode_frame(&assets.join("video/people_walk_540p.mp4"), 100)?;
    let duration = Duration::from_secs_f64(cli.duration_s);
    eprintln!(
        "bench server: {cores} cores, {} s per point",
        cli.duration_s
    );

    let echo_us = measure_echo(cli.pings)?;
    eprintln!(
        "bare UDS echo: p50 {:.1} us, p99 {:.1} us",
        echo_us.p50, echo_us.p99
    );
    let ping_us = {
        let server = ServerProc::start(
            cli,
            &server_bin,
            &assets.join("models/yolox_nano.onnx"),
            cores,
            1,
        )?;
        measure_ping(&server.socket, cli.pings)?
    };
    eprintln!("ping: p50 {:.1} us, p99 {:.1} us", ping_us.p50, ping_us.p99);

    let mut models = Vec::new();
    for name in &cli.models {
        let path = assets.join(format!("models/{name}.onnx"));
        ensure!(path.is_file(), "no model {}", path.display());
        models.push(bench_model(
            cli,
            &runtime,
            &server_bin,
            &path,
            name,
            &frame,
            cores,
            duration,
        )?);
    }
    let report = Report {
        cores,
        duration_s: cli.duration_s,
        echo_us,
        ping_us,
        models,
    };
    print_report(&report);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// Frame `index` of the video as NV12, decoded by the ffmpeg CLI.
fn decode_frame(video: &Path, index: u32) -> Result<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(video)
        .args(["-vf", &format!("select=eq(n\\,{index})"), "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "nv12", "-"])
        .output()
        .context("running ffmpeg")?;
    ensure!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

fn geometry() -> FrameGeometry {
    FrameGeometry::packed(960, 540, PixelFormat::Nv12).expect("960x540 NV12")
}

fn load(
    runtime: &Runtime,
    model: &Path,
    threads: usize,
    instances: usize,
    spin: bool,
) -> Result<session::LoadedModel> {
    Ok(session::load(
        runtime,
        &SessionConfig {
            model: model.to_path_buf(),
            device: Device::Cpu,
            intra_threads: threads,
            spinning: spin,
        },
        instances,
    )?)
}

#[allow(clippy::too_many_arguments)]
fn bench_model(
    cli: &ServerArgs,
    runtime: &Runtime,
    server_bin: &Path,
    model: &Path,
    name: &str,
    frame: &[u8],
    cores: usize,
    duration: Duration,
) -> Result<ModelResult> {
    eprintln!("== {name}");
    // The tensor the server would build, and the raw latency with all cores.
    let mut loaded = load(runtime, model, cores, 1, cli.spin)?;
    let info = loaded.info.clone();
    let layout = family::detect(
        FamilyChoice::Auto,
        &info.output_shape,
        info.input_width,
        info.input_height,
        &info.metadata,
    )?;
    let spec = layout
        .family
        .input_spec(info.input_width, info.input_height);
    let mut tensor = vec![0.0f32; info.image_len()];
    let mut pre = Vec::new();
    // Interleaved with the per-instance buffers the server's workers keep (issue 16).
    let (mut scratch, mut pre_reused) = (preprocess::Scratch::default(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        preprocess::letterbox_into(frame, &geometry(), &spec, &mut tensor)?;
        pre.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        scratch.letterbox_into(frame, &geometry(), &spec, &mut tensor)?;
        pre_reused.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let preprocess_ms = Dist::of(pre);
    let preprocess_reused_ms = Dist::of(pre_reused);
    eprintln!(
        "preprocess p50: fresh buffers {:.3} ms, reused {:.3} ms (ratio {:.3})",
        preprocess_ms.p50,
        preprocess_reused_ms.p50,
        preprocess_reused_ms.p50 / preprocess_ms.p50
    );
    // End to end through the server (same threads, one instance) and raw session.run,
    // interleaved in blocks so both see the same machine load.
    let server = ServerProc::start(cli, server_bin, model, cores, 1)?;
    let (_writer, ring) = server.ring(frame)?;
    let mut client = Client::connect(&server.socket)?;
    let inst = &mut loaded.instances[0];
    for _ in 0..3 {
        run_once(inst, &tensor)?;
        client.infer(&ring.request(0))?;
    }
    let (mut raw_v, mut e2e_v, mut srv_pre, mut srv_inf) = (vec![], vec![], vec![], vec![]);
    let start = Instant::now();
    let mut id = 0;
    while e2e_v.len() < cli.latency_samples && (start.elapsed() < 2 * duration || e2e_v.len() < 20)
    {
        for _ in 0..5 {
            let t = Instant::now();
            run_once(inst, &tensor)?;
            raw_v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..5 {
            id += 1;
            let t = Instant::now();
            let r = client.infer(&ring.request(id))?;
            e2e_v.push(t.elapsed().as_secs_f64() * 1e3);
            srv_pre.push(r.timings.preprocess_us as f64 / 1e3);
            srv_inf.push(r.timings.inference_us as f64 / 1e3);
        }
    }
    drop((client, server, loaded));
    let (raw, end_to_end) = (Dist::of(raw_v), Dist::of(e2e_v));
    let (srv_pre, srv_inf) = (Dist::of(srv_pre).p50, Dist::of(srv_inf).p50);
    eprintln!(
        "raw session.run ({cores} threads): p50 {:.2} ms, p99 {:.2} ms; end to end: p50 {:.2} ms, p99 {:.2} ms (n={})",
        raw.p50, raw.p99, end_to_end.p50, end_to_end.p99, end_to_end.n
    );

    // Raw throughput per configuration; the best one is the ceiling.
    let mut configs = vec![(cores, 1), (1, cores)];
    if cores >= 4 {
        configs.push((cores / 2, 2));
    }
    configs.dedup();
    let mut raw_configs = Vec::new();
    for &(threads, instances) in &configs {
        let mut loaded = load(runtime, model, threads, instances, cli.spin)?;
        let (n, secs) = raw_window(&mut loaded.instances, &tensor, duration)?;
        let per_s = n as f64 / secs;
        eprintln!("raw {threads} threads x {instances} instances: {per_s:.2}/s");
        raw_configs.push(RawConfig {
            threads,
            instances,
            per_s,
        });
    }
    let best = *raw_configs
        .iter()
        .max_by(|a, b| a.per_s.total_cmp(&b.per_s))
        .expect("at least one configuration");

    // The server with the best configuration; each point alternates raw (best) and server
    // windows so the ratio compares like with like.
    let mut raw_best = load(runtime, model, best.threads, best.instances, cli.spin)?;
    let server = ServerProc::start(cli, server_bin, model, best.threads, best.instances)?;
    let (_writer, ring) = server.ring(frame)?;
    let half = duration / 2;
    let mut points = Vec::new();
    for &clients in &cli.clients {
        let (mut raw_n, mut raw_s, mut srv_n, mut srv_s, mut errors) = (0, 0.0, 0, 0.0, 0);
        for _ in 0..2 {
            let (n, s) = raw_window(&mut raw_best.instances, &tensor, half)?;
            raw_n += n;
            raw_s += s;
            let (n, s, e) = server_window(&server.socket, &ring, clients, half)?;
            srv_n += n;
            srv_s += s;
            errors += e;
        }
        let (raw_rate, per_s) = (raw_n as f64 / raw_s, srv_n as f64 / srv_s);
        let ratio = per_s / raw_rate;
        eprintln!(
            "server, {clients} clients: {per_s:.2}/s vs raw {raw_rate:.2}/s = {ratio:.3}, {errors} errors"
        );
        points.push(ClientPoint {
            clients,
            per_s,
            raw_per_s: raw_rate,
            ratio,
            errors,
        });
    }
    Ok(ModelResult {
        model: name.to_owned(),
        threads: cores,
        preprocess_ms,
        preprocess_reused_ms,
        raw,
        end_to_end,
        server_preprocess_ms_p50: srv_pre,
        server_inference_ms_p50: srv_inf,
        overhead_p50_ms: end_to_end.p50 - raw.p50,
        overhead_p99_ms: end_to_end.p99 - raw.p99,
        overhead_p50_pct: 100.0 * (end_to_end.p50 - raw.p50) / raw.p50,
        raw_configs,
        best,
        server_throughput: points,
    })
}

fn run_once(inst: &mut Instance, tensor: &[f32]) -> Result<()> {
    inst.run(tensor, 1, |_, data| std::hint::black_box(data.len()))?;
    Ok(())
}

/// Runs every instance in its own thread for `duration`; returns (runs, seconds).
fn raw_window(
    instances: &mut [Instance],
    tensor: &[f32],
    duration: Duration,
) -> Result<(u64, f64)> {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(instances.len() + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = instances
            .iter_mut()
            .map(|inst| {
                let (done, stop, barrier) = (&done, &stop, &barrier);
                scope.spawn(move || -> Result<()> {
                    run_once(inst, tensor)?; // warm-up
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        run_once(inst, tensor)?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        let n = done.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("raw thread")?;
        }
        Ok((n, secs))
    })
}

/// `clients` connections each sending requests back to back for `duration`; returns
/// (answers, seconds, error answers).
fn server_window(
    socket: &Path,
    ring: &BenchRing,
    clients: usize,
    duration: Duration,
) -> Result<(u64, f64, u64)> {
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(clients + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (done, errors, stop, barrier) = (&done, &errors, &stop, &barrier);
                scope.spawn(move || -> Result<()> {
                    let mut client = Client::connect(socket)?;
                    let mut id = (c as u64) << 32;
                    client.infer(&ring.request(id))?; // warm-up
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        id += 1;
                        let r = client.infer(&ring.request(id))?;
                        if r.error.is_some() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        } else {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        let n = done.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("client thread")?;
        }
        Ok((n, secs, errors.load(Ordering::Relaxed)))
    })
}

/// Round trips of a ping-sized frame through a bare blocking echo thread: the floor any
/// Unix-socket server on this machine can reach.
fn measure_echo(n: usize) -> Result<Dist> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 4096];
        loop {
            let mut prefix = [0u8; 4];
            if s.read_exact(&mut prefix).is_err() {
                return Ok(()); // client done
            }
            let len = u32::from_be_bytes(prefix) as usize;
            s.read_exact(&mut buf[..len])?;
            s.write_all(&prefix)?;
            s.write_all(&buf[..len])?;
        }
    });
    let frame = proto_schema::framing::encode(&Request::ping(1), DEFAULT_MAX_FRAME)?;
    let mut s = UnixStream::connect(&path)?;
    let mut back = vec![0u8; frame.len()];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        s.write_all(&frame)?;
        s.read_exact(&mut back)?;
        if i >= 1000 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(s);
    echo.join().expect("echo thread")?;
    Ok(Dist::of(v))
}

fn measure_ping(socket: &Path, n: usize) -> Result<Dist> {
    let mut client = Client::connect(socket)?;
    for i in 0..1000 {
        client.ping(i)?;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        client.ping(i)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Dist::of(v))
}

/// Where the benchmark frame is: a ring in the server's ring directory.
#[derive(Debug, Clone, Copy)]
struct BenchRing {
    generation: u64,
    slot: u32,
    seq: u64,
    frame_id: u64,
}

impl BenchRing {
    fn request(&self, id: u64) -> InferenceRequest {
        InferenceRequest {
            v: PROTOCOL_VERSION,
            id,
            camera_id: "bench".into(),
            model_id: "bench".into(),
            frame: FrameRef {
                ring: "bench".into(),
                generation: self.generation,
                slot: self.slot,
                seq: self.seq,
            },
            meta: FrameMeta::from_geometry(self.frame_id, &geometry(), 0),
            sent_ts_ns: 0,
            deadline_ts_ns: None,
        }
    }
}

/// A `model-server` child process on a temporary directory; SIGTERM on drop (then
/// SIGKILL after 10 s).
struct ServerProc {
    child: ChildGuard,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    rings: PathBuf,
}

impl ServerProc {
    fn start(
        cli: &ServerArgs,
        bin: &Path,
        model: &Path,
        threads: usize,
        instances: usize,
    ) -> Result<Self> {
        // 0700: model-server requires an owned socket directory.
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        let rings = dir.path().join("rings");
        // An owned 0750 ring dir, as the server requires (a plain mkdir follows the umask).
        shm_ring::owned_dir::ensure_owned_dir(&rings)?;
        let socket = dir.path().join("bench.sock");
        let child = Command::new(bin)
            .arg("--model")
            .arg(model)
            .args(["--model-id", "bench", "--socket"])
            .arg(&socket)
            .arg("--ring-dir")
            .arg(&rings)
            .arg("--ort-dylib")
            .arg(&cli.ort_dylib)
            .args(["--threads", &threads.to_string()])
            .args(["--instances", &instances.to_string()])
            .args(["--max-inflight", "256"])
            .args(["--spin", &cli.spin.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = ServerProc {
            child: ChildGuard::new(child).grace(Duration::from_secs(10)),
            _dir: dir,
            socket,
            rings,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait() {
                bail!("model-server exited during start-up: {status}");
            }
            if let Ok(mut c) = Client::connect(&server.socket) {
                if c.ping(0).is_ok() {
                    return Ok(server);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "model-server not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Publishes `frame` into a new ring; the writer must stay alive while it is used.
    fn ring(&self, frame: &[u8]) -> Result<(RingWriter, BenchRing)> {
        let mut writer = RingWriter::builder("bench")
            .dir(&self.rings)
            .slots(2)
            .geometry(geometry())
            .create()?;
        let mut slot = writer.begin_write();
        slot.data_mut().copy_from_slice(frame);
        let info = slot.publish(0, 0);
        let ring = BenchRing {
            generation: writer.generation(),
            slot: info.slot,
            seq: info.seq,
            frame_id: info.frame_id,
        };
        Ok((writer, ring))
    }
}

/// Protocol calls go through the harness's client ([`super::client::Client`]); an error in
/// a response other than `overloaded` fails the run.
struct Client(super::client::Client);

impl Client {
    fn connect(path: &Path) -> Result<Client> {
        Ok(Client(super::client::Client::connect(path)?))
    }

    /// One ping (the client numbers its requests itself).
    fn ping(&mut self, _id: u64) -> Result<()> {
        self.0.ping()?;
        Ok(())
    }

    fn infer(
        &mut self,
        req: &InferenceRequest,
    ) -> Result<proto_schema::message::InferenceResponse> {
        let (r, _) = self.0.infer(req.clone())?;
        if let Some(e) = &r.error {
            if e.code != proto_schema::error::ErrorCode::Overloaded {
                bail!("inference failed: {e}");
            }
        }
        Ok(r)
    }
}

fn print_report(r: &Report) {
    println!(
        "\n## model-server benchmark ({} cores, {} s per point)\n",
        r.cores, r.duration_s
    );
    println!(
        "Ping round trip (one connection, n={}): p50 {:.1} us, p99 {:.1} us (goal <= 15 / 60 us); \
         bare blocking UDS echo of the same frame: p50 {:.1} us, p99 {:.1} us\n",
        r.ping_us.n, r.ping_us.p50, r.ping_us.p99, r.echo_us.p50, r.echo_us.p99
    );
    println!("### Latency: end to end through the server vs raw session.run (same tensor, {} intra-op threads)\n", r.cores);
    println!("| model | raw p50 | raw p99 | e2e p50 | e2e p99 | overhead p50 | overhead p99 | overhead p50 % | preprocess p50 (server) | n |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for m in &r.models {
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} % | {:.2} ms ({:.2}) | {} |",
            m.model,
            m.raw.p50,
            m.raw.p99,
            m.end_to_end.p50,
            m.end_to_end.p99,
            m.overhead_p50_ms,
            m.overhead_p99_ms,
            m.overhead_p50_pct,
            m.preprocess_ms.p50,
            m.server_preprocess_ms_p50,
            m.end_to_end.n
        );
    }
    println!("\n### Throughput (frames/s): server / raw best configuration (interleaved windows) = ratio\n");
    let clients: Vec<String> = r.models.first().map_or(Vec::new(), |m| {
        m.server_throughput
            .iter()
            .map(|p| format!("{} clients", p.clients))
            .collect()
    });
    println!(
        "| model | raw configs (threads x instances: /s) | best | {} |",
        clients.join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(clients.len()));
    for m in &r.models {
        let raw: Vec<String> = m
            .raw_configs
            .iter()
            .map(|c| format!("{}x{}: {:.2}", c.threads, c.instances, c.per_s))
            .collect();
        let pts: Vec<String> = m
            .server_throughput
            .iter()
            .map(|p| format!("{:.2} / {:.2} = {:.3}", p.per_s, p.raw_per_s, p.ratio))
            .collect();
        println!(
            "| {} | {} | {}x{} | {} |",
            m.model,
            raw.join(", "),
            m.best.threads,
            m.best.instances,
            pts.join(" | ")
        );
    }
}
