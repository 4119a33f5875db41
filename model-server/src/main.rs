//! `model-server` command line: one ONNX model, one Unix socket.
//!
//! ```text
//! model-server --model models/yolov8n_int8.onnx --socket /run/framebus/yolov8n.sock \
//!              [--model-id yolov8n] [--ring-dir /dev/shm] [--family auto|yolov8|yolox] \
//!              [--device cpu|cuda] [--threads N] [--instances N] [--max-batch N] ...
//! ```
//! `--help` lists every flag with its default. Logs go to stderr (`RUST_LOG` filters,
//! `--log-json` for JSON lines).

use std::io::{IsTerminal, Write};

use clap::Parser;
use model_server::config::ServerConfig;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = ServerConfig::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // When the agent that reads our stderr dies, writes fail with EPIPE; the default
        // reports that with `eprintln!`, which panics, killing whichever task logged
        // (the signal task: the server would never shut down and remove its sockets).
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match model_server::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "model-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
