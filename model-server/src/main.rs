//! `model-server` command line: one ONNX model, one Unix socket.
//!
//! ```text
//! model-server --model models/yolov8n_int8.onnx --socket /run/framebus/yolov8n.sock \
//!              [--model-id yolov8n] [--ring-dir /dev/shm] [--family auto|yolov8|yolox] \
//!              [--device cpu|cuda] [--threads N] [--instances N] [--max-batch N] ...
//! ```
//! `--help` lists every flag with its default. Logs go to stderr (filter: `FRAMEBUS_LOG`, else `RUST_LOG`;
//! `--log-json` for JSON lines). Exit statuses: `proto_schema::exit`.

use std::io::Write;

use clap::Parser;
use model_server::config::ServerConfig;

fn main() -> std::process::ExitCode {
    let cli = ServerConfig::parse();
    let format = if cli.log_json {
        framebus_launch::LogFormat::Json
    } else {
        framebus_launch::LogFormat::Text
    };
    // ONNX Runtime's own info lines (session setup per instance) drown the server's:
    // quiet unless the filter names `ort` itself.
    let mut filter = framebus_launch::logging::filter_text(None, "info", |k| std::env::var(k).ok());
    if !filter.contains("ort") {
        filter.push_str(",ort=warn");
    }
    framebus_launch::logging::init("model-server", format, Some(&filter), "info,ort=warn");
    match model_server::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "model-server: {e:#}");
            // Invalid settings are permanent for this command line (the exit table of
            // `proto_schema::exit`); anything else may pass on a restart.
            let code = if e
                .downcast_ref::<model_server::config::ConfigError>()
                .is_some()
            {
                proto_schema::exit::EXIT_CONFIG
            } else {
                proto_schema::exit::EXIT_FATAL
            };
            std::process::ExitCode::from(code as u8)
        }
    }
}
