//! `bench <scenario>`: whole-system benchmarks of framebus on real processes, reported as
//! ratios against baselines measured in the same run. See docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use benches::harness::{
    assets,
    config::SourceKind,
    interrupt,
    load::LoadMonitor,
    machine::{MachineInfo, Versions},
    measure::RunTiming,
    ort_raw, peer,
    report::{now_utc, num, Report, Table},
    scenario_ipc, scenario_kernel, scenario_live, scenario_recovery, scenario_ring,
    scenario_saturate, scenario_server, system,
};
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Whole-system benchmarks of framebus (see docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// 1..N cameras at full rate on one model: delivered inferences/s vs raw ORT ceiling.
    Saturate,
    /// N cameras at 25 fps, 5 fps detection each: largest N keeping ≥99 % per model.
    Live,
    /// Ping RTT and model-server overhead over raw session.run.
    Ipc,
    /// Ring publish vs memcpy; publish → reader wake-up latency.
    Ring,
    /// kill -9 of a model server and a kernel under load: time to resume, losses.
    Recovery,
    /// Every scenario, one after the other.
    All,
    /// The raw ONNX Runtime ceiling alone.
    Raw,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// 1..N cameras at full rate on one model: delivered inferences/s vs the raw ORT ceiling.
    Saturate(Opts),
    /// N cameras at 25 fps, 5 fps detection each: the largest N keeping ≥99 % per model.
    Live(Opts),
    /// Ping round trip and model-server overhead over raw session.run.
    Ipc(Opts),
    /// Ring publish vs memcpy; publish → reader wake-up latency.
    Ring(Opts),
    /// kill -9 of a model server and a kernel under load: time to resume, losses.
    Recovery(Opts),
    /// Every scenario, one after the other.
    All(Opts),
    /// The raw ONNX Runtime ceiling alone (every threads x instances setting; no system).
    Raw(Opts),
    /// model-server alone: overhead over raw session.run, ping, throughput vs clients.
    Server(scenario_server::ServerArgs),
    /// frame-kernel alone: CPU per frame vs the ffmpeg CLI, decode options, live capacity.
    Kernel(scenario_kernel::KernelArgs),
    /// Internal: the reader process of `bench ring`.
    #[command(hide = true)]
    RingReader {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        samples: usize,
    },
}

/// `bench live --motion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
enum MotionMode {
    Off,
    On,
    /// One search with the gate off, one with it on.
    Both,
}

#[derive(Debug, Clone, clap::Args, Serialize)]
struct Opts {
    /// Cameras: saturate tries 1..=N (default 3), live searches 1..=N (default 12), recovery runs N (default 2).
    #[arg(long)]
    cameras: Option<usize>,
    /// Detection rate per camera: default 25 (saturate), 5 (live) or 2 (recovery).
    #[arg(long)]
    fps: Option<f64>,
    /// Seconds of each measurement window: default 15 (saturate), 20 (live), 12 of
    /// alternating raw runs and requests per model and thread count (ipc), 5 of steady
    /// running before each kill (recovery).
    #[arg(long)]
    duration: Option<f64>,
    /// Models, comma separated: yolov8, yolox or .onnx paths. Default: yolov8 for
    /// saturate, yolov8,yolox otherwise.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Assets directory; default $FRAMEBUS_ASSETS, else ../shared/assets.
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Where the JSON and markdown reports go.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Directory of core-agent, frame-kernel and model-server; default: next to `bench`.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Intra-op threads per model instance (live, recovery); default: live `auto` (the
    /// server calibrates), recovery 1.
    #[arg(long)]
    threads: Option<u32>,
    /// Model instances (live, recovery); live default: the server calibrates threads x
    /// instances (`auto`), recovery default 1.
    #[arg(long)]
    instances: Option<u32>,
    /// Idle ONNX Runtime intra-op threads spin (live, recovery; `model-server --spin`).
    /// Saturate and ipc set it themselves, the same on the raw and the server side.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    spin: bool,
    /// Requests in flight per camera and model (saturate).
    #[arg(long, default_value_t = 1)]
    in_flight: u32,
    /// Repeats of each kill (recovery).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Camera sources: the footage as realtime file sources, or fake RTSP cameras serving it.
    #[arg(long, value_enum, default_value_t = SourceKind::File)]
    source: SourceKind,
    /// Warn when other load on the machine averaged above this share of all cores (%).
    #[arg(long, default_value_t = 5.0)]
    load_warn_pct: f64,
    /// Seconds of running before a window starts (after every subscription delivered).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// live: also search the Python peer (`benches/peer/peer.py`, run with
    /// `$FRAMEBUS_PYTHON`) in the same run, and compare CPU and overload with it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    peer: bool,
    /// live: intra-op threads of the peer's shared session.
    #[arg(long, default_value_t = 1)]
    peer_threads: u32,
    /// live: the peer reads the footage scaled to 480x270 (a camera's substream: the
    /// copy `--source substream-file` plays) instead of the footage.
    #[arg(long)]
    peer_substream: bool,
    /// live: the smallest N of the search (with `--cameras N` as well: run N only, for
    /// A/B comparisons at one load).
    #[arg(long, default_value_t = 1)]
    min_cameras: usize,
    /// live: capture-to-result latency p99 bound of a sustained N, ms.
    #[arg(long, default_value_t = 200.0)]
    max_p99_ms: f64,
    /// live: cameras at which both sides' CPU is compared (0: skip).
    #[arg(long, default_value_t = 8)]
    cpu_at: usize,
    /// live: the motion gate of every camera in the system's searches.
    #[arg(long, value_enum, default_value_t = MotionMode::Off)]
    motion: MotionMode,
    /// live: also run both sides at twice their sustained N.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    overload: bool,
}

fn main() {
    let cli = Cli::parse();
    let (scenario, opts) = match cli.command {
        Cmd::RingReader { dir, name, samples } => {
            let code = match scenario_ring::run_reader_process(&dir, &name, samples) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ring-reader: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Cmd::Server(args) => single("server", || scenario_server::run(&args)),
        Cmd::Kernel(args) => single("kernel", || scenario_kernel::run(&args)),
        Cmd::Saturate(o) => (Scenario::Saturate, o),
        Cmd::Live(o) => (Scenario::Live, o),
        Cmd::Ipc(o) => (Scenario::Ipc, o),
        Cmd::Ring(o) => (Scenario::Ring, o),
        Cmd::Recovery(o) => (Scenario::Recovery, o),
        Cmd::All(o) => (Scenario::All, o),
        Cmd::Raw(o) => (Scenario::Raw, o),
    };
    interrupt::install();
    system::become_subreaper();
    let list = if scenario == Scenario::All {
        vec![
            Scenario::Ring,
            Scenario::Ipc,
            Scenario::Saturate,
            Scenario::Live,
            Scenario::Recovery,
        ]
    } else {
        vec![scenario]
    };
    let mut code = 0;
    for s in list {
        if let Err(e) = run_scenario(s, &opts) {
            eprintln!("bench {}: error: {}", name(s), error_chain(&e));
            if interrupt::interrupted() {
                code = 130;
                break;
            }
            code = 1;
        }
    }
    std::process::exit(code);
}

/// Runs a single-process scenario (`server`, `kernel`: their own tables on stdout, no
/// whole-system report) and exits.
fn single(name: &str, run: impl FnOnce() -> Result<()>) -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench {name}: error: {}", error_chain(&e));
            1
        }
    };
    std::process::exit(code);
}

/// The error and its causes, each cause shown only if its text is not already part of
/// what was printed (the harness's errors quote their sources).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

fn name(s: Scenario) -> &'static str {
    match s {
        Scenario::Saturate => "saturate",
        Scenario::Live => "live",
        Scenario::Ipc => "ipc",
        Scenario::Ring => "ring",
        Scenario::Recovery => "recovery",
        Scenario::All => "all",
        Scenario::Raw => "raw",
    }
}

fn progress(msg: &str) {
    eprintln!("  {msg}");
}

fn models(assets_dir: &Path, opts: &Opts, default: &[&str]) -> Result<Vec<assets::ModelAsset>> {
    let names: Vec<String> = opts
        .models
        .clone()
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    if names.is_empty() {
        bail!("--models is empty");
    }
    names
        .iter()
        .map(|n| assets::model(assets_dir, n.trim()).map_err(Into::into))
        .collect()
}

fn run_scenario(scenario: Scenario, opts: &Opts) -> Result<()> {
    let machine = MachineInfo::detect();
    let ort_version = match ort_raw::init() {
        Ok(v) => v,
        Err(e) if scenario == Scenario::Ring => format!("not loaded ({e})"),
        Err(e) => return Err(e).context("ONNX Runtime is needed for this scenario"),
    };
    let versions = Versions::detect(&ort_version);
    eprintln!("bench {}: {}", name(scenario), machine.line());
    eprintln!("bench {}: {}", name(scenario), versions.line());
    let me = std::process::id() as i32;
    let monitor = LoadMonitor::start(me, Duration::from_millis(500));
    let assets_dir = assets::assets_dir(opts.assets.as_deref());
    let bin_dir = opts.bin_dir.clone().unwrap_or_else(system::default_bin_dir);
    let cores = machine.cores;
    let timing = |window: f64| RunTiming {
        ready_timeout: Duration::from_secs(90),
        warmup: Duration::from_secs_f64(opts.warmup),
        window: Duration::from_secs_f64(window),
        tail: Duration::from_secs(2),
    };

    let (data, tables, summary, params): (
        serde_json::Value,
        Vec<Table>,
        Vec<String>,
        serde_json::Value,
    ) = match scenario {
        Scenario::Ring => {
            let p = scenario_ring::RingParams::default();
            let dir = tempfile::Builder::new()
                .prefix("fb-bench-ring-")
                // An owned 0700 ring dir: frame-kernel and model-server refuse looser ones.
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir_in("/dev/shm")?;
            let frame = assets::video(&assets_dir)
                .ok()
                .and_then(|v| assets::decode_frame(&v, 100, "nv12").ok());
            let (d, t, s) = scenario_ring::run(dir.path(), &p, frame.as_deref())?;
            (serde_json::to_value(d)?, t, s, serde_json::to_value(&p)?)
        }
        Scenario::Ipc => {
            let video = assets::video(&assets_dir)?;
            let ms = models(&assets_dir, opts, &["yolov8", "yolox"])?;
            // One thread has no pool to spin; with more, compare both spin settings.
            let threads = match opts.threads {
                Some(t) => vec![t as usize],
                None if cores > 1 => vec![1, cores],
                None => vec![1],
            };
            let sessions = threads
                .iter()
                .flat_map(|&t| {
                    let spins: &[bool] = if t > 1 { &[false, true] } else { &[false] };
                    spins.iter().map(move |&spinning| ort_raw::SessionSettings {
                        threads: t,
                        instances: 1,
                        spinning,
                    })
                })
                .collect();
            let p = scenario_ipc::IpcParams {
                pings: 5000,
                seconds: opts.duration.unwrap_or(12.0),
                min_runs: 20,
                gap_ms: 20,
                frame_index: 100,
                sessions,
            };
            let (d, t, s) = scenario_ipc::run(&bin_dir, &video, &ms, &p)?;
            (serde_json::to_value(d)?, t, s, serde_json::to_value(&p)?)
        }
        Scenario::Saturate => {
            let video = assets::video(&assets_dir)?;
            let ms = models(&assets_dir, opts, &["yolov8"])?;
            let model = &ms[0];
            progress(&format!("saturate: preparing {} input tensor...", model.id));
            let prepared = ort_raw::prepare(&model.path, &video, 100)?;
            let p = scenario_saturate::SaturateParams {
                source: opts.source,
                max_cameras: opts.cameras.unwrap_or(3),
                camera_fps: 25.0,
                detect_fps: opts.fps.unwrap_or(25.0),
                raw_seconds: 4.0,
                in_flight: opts.in_flight,
                settings: ort_raw::configurations(cores, true),
            };
            let (d, t, s) = scenario_saturate::run(
                &bin_dir,
                &video,
                model,
                &prepared,
                &p,
                timing(opts.duration.unwrap_or(15.0)),
                &monitor,
                progress,
            )?;
            (serde_json::to_value(d)?, t, s, serde_json::to_value(&p)?)
        }
        Scenario::Live => {
            let video = assets::video(&assets_dir)?;
            let ms = models(&assets_dir, opts, &["yolov8", "yolox"])?;
            let p = scenario_live::LiveParams {
                source: opts.source,
                max_cameras: opts.cameras.unwrap_or(12),
                min_cameras: opts.min_cameras.max(1),
                camera_fps: 25.0,
                detect_fps: opts.fps.unwrap_or(5.0),
                threshold: 0.99,
                max_p99_ms: opts.max_p99_ms,
                threads: opts.threads,
                spin: opts.spin,
                instances: opts.instances,
                motion: match opts.motion {
                    MotionMode::Off => vec![false],
                    MotionMode::On => vec![true],
                    MotionMode::Both => vec![false, true],
                },
                peer: opts.peer.then(|| peer::PeerParams {
                    substream: opts.peer_substream,
                    ..peer::PeerParams::from_env(opts.peer_threads, false)
                }),
                cpu_at: opts.cpu_at,
                overload: opts.overload,
            };
            let (d, t, s) = scenario_live::run(
                &bin_dir,
                &video,
                &ms,
                &p,
                timing(opts.duration.unwrap_or(20.0)),
                &monitor,
                progress,
            )?;
            (serde_json::to_value(d)?, t, s, serde_json::to_value(&p)?)
        }
        Scenario::Recovery => {
            let video = assets::video(&assets_dir)?;
            let ms = models(&assets_dir, opts, &["yolov8", "yolox"])?;
            let instances = opts.instances.unwrap_or(1);
            let p = scenario_recovery::RecoveryParams {
                source: opts.source,
                cameras: opts.cameras.unwrap_or(2),
                camera_fps: 25.0,
                detect_fps: opts.fps.unwrap_or(2.0),
                repeats: opts.repeats.max(1),
                settle: Duration::from_secs_f64(opts.duration.unwrap_or(5.0)),
                resume_timeout: Duration::from_secs(30),
                // Two models share the cores: one thread per instance each by default.
                threads: opts.threads.unwrap_or(1),
                spin: opts.spin,
                instances,
            };
            let (d, t, s) = scenario_recovery::run(
                &bin_dir,
                &video,
                &ms,
                &p,
                Duration::from_secs(90),
                progress,
            )?;
            (serde_json::to_value(d)?, t, s, serde_json::to_value(&p)?)
        }
        Scenario::Raw => {
            let video = assets::video(&assets_dir)?;
            let ms = models(&assets_dir, opts, &["yolov8", "yolox"])?;
            let secs = opts.duration.unwrap_or(10.0);
            let mut t = Table::new(
                "Raw session.run ceiling (tight loop on a fixed tensor)",
                &[
                    "model",
                    "threads x instances",
                    "inferences/s",
                    "p50 ms",
                    "p99 ms",
                ],
            );
            let mut all = Vec::new();
            for m in &ms {
                let prepared = ort_raw::prepare(&m.path, &video, 100)?;
                for s in ort_raw::configurations(cores, true) {
                    interrupt::check()?;
                    progress(&format!("raw: {} {}x{}...", m.id, s.threads, s.instances));
                    let r = ort_raw::measure(&prepared, s, 3, Duration::from_secs_f64(secs))?;
                    t.row(vec![
                        m.id.clone(),
                        format!("{} x {}", s.threads, s.instances),
                        format!("{:.2}", r.inferences_per_s),
                        num(r.latency_ms.map(|l| l.p50), 1),
                        num(r.latency_ms.map(|l| l.p99), 1),
                    ]);
                    all.push((m.id.clone(), r));
                }
            }
            (
                serde_json::to_value(&all)?,
                vec![t],
                Vec::new(),
                serde_json::json!({ "seconds": secs }),
            )
        }
        Scenario::All => bail!("`all` runs the scenarios one by one"),
    };

    let load = monitor.report();
    let mut warnings = Vec::new();
    if let Some(w) = load.warning(opts.load_warn_pct) {
        warnings.push(w);
    }
    let report = Report {
        scenario: name(scenario).to_string(),
        date_utc: now_utc(),
        machine,
        versions,
        parameters: serde_json::json!({ "options": opts, "scenario": params }),
        load: Some(load),
        warnings,
        tables,
        summary,
        data,
    };
    println!("{}", report.markdown());
    let path = report
        .write(&opts.out)
        .with_context(|| format!("writing the report to {}", opts.out.display()))?;
    eprintln!(
        "bench {}: report written to {}",
        name(scenario),
        path.display()
    );
    Ok(())
}
