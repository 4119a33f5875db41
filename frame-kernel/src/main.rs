//! `frame-kernel --camera-id ID (--source URL|FILE | --source-fd FD) [options]`: see
//! `--help` and the library docs (`frame_kernel`).
//!
//! Exit status: 0 clean stop, 1 fatal error a restart may cure, 2 invalid command line,
//! 3 source unusable (permanent): `proto_schema::exit`.

use std::process::ExitCode;

use clap::Parser;
use frame_kernel::config::{Args, Config, LogFormat};
use frame_kernel::kernel::{self, Exit};
use frame_kernel::{ffmpeg_log, signals};

use proto_schema::exit::{KERNEL_CONFIG, KERNEL_FATAL, KERNEL_SOURCE_UNUSABLE};

/// Exit code for an invalid configuration (nothing was touched).
const EXIT_CONFIG: u8 = KERNEL_CONFIG as u8;
/// Exit code for a fatal runtime error that a restart may cure.
const EXIT_FATAL: u8 = KERNEL_FATAL as u8;
/// Exit code for a source that can never produce video (permanent; not retried by the
/// supervisor).
const EXIT_SOURCE_UNUSABLE: u8 = KERNEL_SOURCE_UNUSABLE as u8;

fn init_tracing(format: LogFormat) -> bool {
    framebus_launch::logging::init("frame-kernel", format, None, "info")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("frame-kernel: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let verbose = init_tracing(config.log_format);
    let span = tracing::info_span!("camera", id = %config.camera_id);
    let _span = span.enter();

    let stop = match signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    frame_kernel::init_ffmpeg();
    ffmpeg_log::install(&config.camera_id, verbose);
    if let frame_kernel::config::Source::Rtsp { url, .. } = &config.source {
        ffmpeg_log::hide_credentials_of(url);
    }
    tracing::info!(
        source = %config.source.redacted(),
        ring = %shm_ring::ring_path(&config.ring_dir, &config.ring_name).display(),
        format = %config.format,
        pace = ?config.pace,
        "starting"
    );
    match kernel::run(&config, stop) {
        Ok(exit) => {
            let why = match exit {
                Exit::Stopped => "stop signal",
                Exit::EndOfFile => "end of file",
                Exit::MaxFrames => "max frames reached",
            };
            tracing::info!(reason = why, "stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_source_unusable() => {
            tracing::error!(error = %e, "fatal");
            ExitCode::from(EXIT_SOURCE_UNUSABLE)
        }
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            ExitCode::from(EXIT_FATAL)
        }
    }
}
