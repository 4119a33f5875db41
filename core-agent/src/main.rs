//! `core-agent --config FILE` runs the system a config describes; `core-agent --demo`
//! runs the built-in demo; `--check` only validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use core_agent::config::{validate, Config, LogFormat};
use core_agent::demo::{self, DemoData, DemoOptions};

/// Exit status for a config that does not load or validate.
const EXIT_CONFIG: u8 = proto_schema::exit::EXIT_CONFIG as u8;

/// The frame bus control plane: supervises frame kernels and model servers, gates
/// frames per subscription, writes results and serves a status API.
#[derive(Debug, Parser)]
#[command(name = "core-agent", version)]
struct Cli {
    /// Config file (TOML). Relative paths inside it are relative to its directory.
    #[arg(short, long, required_unless_present = "demo", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Run the built-in demo: the real model and video from ../shared/assets (or
    /// $FRAMEBUS_ASSETS) when present, else a generated video and model.
    #[arg(long)]
    demo: bool,
    /// Stop after this many seconds (an ordered shutdown, as on SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Validate the config, print every problem, and exit.
    #[arg(long)]
    check: bool,
    /// Directory holding frame-kernel and model-server (default: next to core-agent).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Status API address (overrides agent.api_addr; loopback only).
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// Print the live table (overrides agent.live_table).
    #[arg(long)]
    table: bool,
    /// Demo only: results file, truncated at start.
    #[arg(long, default_value = "results.jsonl", value_name = "FILE")]
    results: PathBuf,
    /// Demo only: where generated files and sockets go (default: $TMPDIR/framebus-demo).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Demo only: use the generated video and model even when the real assets exist.
    #[arg(long)]
    synthetic: bool,
}

fn load(cli: &Cli) -> Result<(Config, Option<PathBuf>), String> {
    if cli.demo {
        let data = match demo::find_assets() {
            Some(dir) if !cli.synthetic => DemoData::Assets(dir),
            _ => DemoData::Synthetic,
        };
        match &data {
            DemoData::Assets(dir) => eprintln!(
                "core-agent: demo with the real model and video from {}",
                dir.display()
            ),
            DemoData::Synthetic => {
                eprintln!("core-agent: demo with a generated video and model (no assets found)")
            }
        }
        let work_dir = cli
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("framebus-demo"));
        let results = std::path::absolute(&cli.results).unwrap_or_else(|_| cli.results.clone());
        let _ = std::fs::remove_file(&results);
        let opts = DemoOptions {
            work_dir: work_dir.clone(),
            results,
            api_addr: cli
                .api
                .unwrap_or_else(|| "127.0.0.1:7878".parse().expect("literal address")),
        };
        let mut config = demo::prepare(&opts, &data).map_err(|e| e.to_string())?;
        config
            .apply_env(|k| std::env::var(k).ok())
            .map_err(|e| e.to_string())?;
        let path = work_dir.join("demo.toml");
        if std::fs::write(&path, config.to_toml()).is_ok() {
            eprintln!("core-agent: demo config written to {}", path.display());
        }
        return Ok((config, None));
    }
    let path = cli.config.clone().ok_or("--config is required")?;
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    Ok((config, Some(path)))
}

fn init_logging(filter: &str, format: LogFormat) {
    framebus_launch::logging::init("core-agent", format, Some(filter), "info");
}

/// Points the model servers at the project's ONNX Runtime when the environment does not.
fn default_ort_path() {
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        return;
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/lib/libonnxruntime.so");
    if lib.is_file() {
        // Single-threaded here: no other thread reads the environment yet.
        std::env::set_var("ORT_DYLIB_PATH", lib);
    }
}

fn main() -> ExitCode {
    // Read the API token once and drop it from the environment (single-threaded here),
    // so the children do not inherit it.
    let api_token = std::env::var(core_agent::api::auth::ENV_API_TOKEN).ok();
    std::env::remove_var(core_agent::api::auth::ENV_API_TOKEN);
    let cli = Cli::parse();
    let (mut config, path) = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("core-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(api) = cli.api {
        config.agent.api_addr = api;
    }
    if let Some(dir) = &cli.bin_dir {
        config.agent.bin_dir = Some(dir.clone());
    }
    if cli.table {
        config.agent.live_table = true;
    }
    if let Err(errors) = validate(&config, true) {
        eprintln!("core-agent: {errors}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for w in validate::warnings(&config) {
        eprintln!("core-agent: warning: {w}");
    }
    if cli.check {
        // The deep file checks only `--check` runs (see `check_model_formats`).
        let bad = core_agent::config::validate::check_model_formats(&config);
        if !bad.is_empty() {
            eprintln!("core-agent: {}", core_agent::config::ValidationErrors(bad));
            return ExitCode::from(EXIT_CONFIG);
        }
        println!(
            "config OK: {} cameras, {} models, {} subscriptions, {} outputs",
            config.cameras.len(),
            config.models.len(),
            config.subscriptions.len(),
            config.outputs.len()
        );
        return ExitCode::SUCCESS;
    }
    default_ort_path();
    init_logging(&config.agent.log, config.agent.log_format);
    let duration = cli
        .duration
        .filter(|d| *d > 0.0)
        .map(Duration::from_secs_f64);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("core-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(core_agent::app::run(config, path, duration, api_token)) {
        Ok(summary) => {
            println!(
                "core-agent: stopped; {} results written, {} dropped",
                summary.written, summary.dropped
            );
            for c in &summary.cameras {
                for s in &c.subscriptions {
                    println!(
                        "  {} -> {}: {} results, {} missed slots, {} stale, p50 {:.1} ms",
                        c.id, s.model, s.results, s.missed, s.stale, s.latency_ms.p50
                    );
                }
            }
            for m in &summary.models {
                if let Some(r) = m.server.last_recovery_ms {
                    println!(
                        "  model {}: {} restarts, last recovery {r} ms",
                        m.id, m.server.restarts
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("core-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
