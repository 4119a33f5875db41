//! The built-in demo: a whole system from one command, with or without real data.
//!
//! With the real assets (`$FRAMEBUS_ASSETS`, else `../shared/assets` next to the
//! workspace or the working directory) two cameras replay `people_walk_540p.mp4` and the
//! real `yolov8n_int8.onnx` finds people. Without them, the demo makes its own: a
//! synthetic video of moving bright boxes (the `ffmpeg` CLI, `lavfi` sources) and a tiny
//! detector graph with a YOLOv8 output (`tools/make_demo_model.py`, run with
//! `$FRAMEBUS_PYTHON`), cached in the work directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{
    AgentSettings, CameraConfig, Config, ModelConfig, OutputConfig, SubscriptionConfig,
};

/// Environment variable naming the assets directory.
pub const ENV_ASSETS: &str = "FRAMEBUS_ASSETS";
/// Environment variable naming the Python that has `onnx` and `numpy`.
pub const ENV_PYTHON: &str = "FRAMEBUS_PYTHON";

const VIDEO: &str = "video/people_walk_540p.mp4";
const MODEL: &str = "models/yolov8n_int8.onnx";

/// Why the demo could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A generator (ffmpeg, python) could not run or failed.
    #[error("{what} failed: {detail}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// The command's error or output.
        detail: String,
    },
}

/// Which data the demo runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoData {
    /// The real model and video from this assets directory.
    Assets(PathBuf),
    /// Generated synthetic video and model.
    Synthetic,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where generated files, the generated config and the sockets go.
    pub work_dir: PathBuf,
    /// The results file (truncated at start).
    pub results: PathBuf,
    /// API address.
    pub api_addr: SocketAddr,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn has_assets(dir: &Path) -> bool {
    dir.join(VIDEO).is_file() && dir.join(MODEL).is_file()
}

/// The assets directory to use, if any: `$FRAMEBUS_ASSETS` when set (and complete),
/// else `../shared/assets` beside the workspace or the working directory.
pub fn find_assets() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_ASSETS).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return has_assets(&dir).then_some(dir);
    }
    let mut candidates = vec![workspace_root().join("../shared/assets")];
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("../shared/assets"));
    }
    candidates
        .into_iter()
        .find(|d| has_assets(d))
        .map(|d| std::path::absolute(&d).unwrap_or(d))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_PYTHON).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".local/venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn run(what: &'static str, cmd: &mut Command) -> Result<(), DemoError> {
    let out = cmd.output().map_err(|e| DemoError::Generate {
        what,
        detail: format!("cannot run {:?}: {e}", cmd.get_program()),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DemoError::Generate {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Makes the synthetic video (16 s, 640x360, 25 fps, three bright boxes walking across
/// a dark scene) unless it exists.
pub fn synthetic_video(dir: &Path) -> Result<PathBuf, DemoError> {
    let out = dir.join("synthetic_walk.mp4");
    if out.is_file() {
        return Ok(out);
    }
    let tmp = dir.join("synthetic_walk.tmp.mp4");
    let filter = "[0][1]overlay=x='mod(t*70,W+w)-w':y=60[a];\
                  [a][2]overlay=x='W-mod(t*50+200,W+w)':y=200[b];\
                  [b][3]overlay=x='mod(t*35+300,W+w)-w':y=120:shortest=1,format=yuv420p";
    let mut args: Vec<String> = ["-y", "-loglevel", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for src in [
        "color=c=0x202020:s=640x360:r=25:d=16",
        "color=c=white:s=44x120:r=25:d=16",
        "color=c=0xf0f0f0:s=40x110:r=25:d=16",
        "color=c=0xe8e8e8:s=48x128:r=25:d=16",
    ] {
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), src.into()]);
    }
    args.extend(["-filter_complex".into(), filter.into()]);
    let h264 = [
        "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0",
    ];
    let mpeg4 = ["-c:v", "mpeg4", "-q:v", "3", "-g", "25", "-bf", "0"];
    let first = run(
        "ffmpeg (synthetic video)",
        Command::new("ffmpeg").args(&args).args(h264).arg(&tmp),
    );
    if first.is_err() {
        // An FFmpeg build without libx264 still has its own MPEG-4 encoder.
        run(
            "ffmpeg (synthetic video)",
            Command::new("ffmpeg").args(&args).args(mpeg4).arg(&tmp),
        )?;
    }
    std::fs::rename(&tmp, &out).map_err(|e| DemoError::Generate {
        what: "synthetic video",
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Makes the demo detector with `tools/make_demo_model.py` unless an up-to-date one
/// (newer than the script) exists.
pub fn demo_model(dir: &Path) -> Result<PathBuf, DemoError> {
    let out = dir.join("demo_detector.onnx");
    let script = workspace_root().join("tools/make_demo_model.py");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(model), Some(source)) = (mtime(&out), mtime(&script)) {
        if model >= source {
            return Ok(out);
        }
    }
    run(
        "tools/make_demo_model.py (set FRAMEBUS_PYTHON to a Python with onnx and numpy)",
        Command::new(python())
            .arg(&script)
            .arg("--output")
            .arg(&out),
    )?;
    Ok(out)
}

/// Builds the demo's config (and makes the synthetic data when there are no assets).
pub fn prepare(opts: &DemoOptions, data: &DemoData) -> Result<Config, DemoError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| DemoError::Dir {
        path: opts.work_dir.clone(),
        source,
    })?;
    let (video, model_path, model_id, fps) = match data {
        DemoData::Assets(dir) => (dir.join(VIDEO), dir.join(MODEL), "yolov8n", 25.0),
        DemoData::Synthetic => (
            synthetic_video(&opts.work_dir)?,
            demo_model(&opts.work_dir)?,
            "demo-detector",
            25.0,
        ),
    };
    let camera = |id: &str| CameraConfig {
        id: id.to_owned(),
        source: video.to_string_lossy().into_owned(),
        transport: Default::default(),
        format: proto_schema::pixel::PixelFormat::Nv12,
        width: None,
        height: None,
        fps: Some(fps),
        enabled: true,
        realtime: true,
        speed: 1.0,
        loop_file: true,
        ring: None,
        ring_slots: None,
        rss_limit_mb: None,
        cpu_affinity: None,
        motion: Default::default(),
        record_source: None,
        decode: Default::default(),
        analytics: None,
    };
    let model = ModelConfig {
        id: model_id.to_owned(),
        path: model_path,
        family: Default::default(),
        device: Default::default(),
        threads: Some(1),
        instances: Some(1),
        spin: false,
        max_batch: 1,
        batch_delay_us: 0,
        score_threshold: 0.4,
        iou_threshold: 0.45,
        socket: None,
        rss_limit_mb: Some(2048),
        cpu_affinity: None,
    };
    let cameras = vec![camera("lobby"), camera("entrance")];
    let subscriptions = cameras
        .iter()
        .map(|c| SubscriptionConfig {
            camera: c.id.clone(),
            model: model_id.to_owned(),
            fps: 5.0,
            classes: vec![],
            max_in_flight: None,
        })
        .collect();
    let ring_dir = std::env::var_os(crate::config::ENV_RING_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| AgentSettings::default().ring_dir);
    Ok(Config {
        agent: AgentSettings {
            api_addr: opts.api_addr,
            ring_dir,
            socket_dir: opts.work_dir.join("sockets"),
            live_table: true,
            ..AgentSettings::default()
        },
        cameras,
        models: vec![model],
        subscriptions,
        outputs: vec![OutputConfig::Jsonl {
            path: opts.results.clone(),
        }],
        ..Config::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_validates() {
        let dir = tempfile::tempdir().unwrap();
        // Pretend the assets exist, so nothing is generated.
        let assets = dir.path().join("assets");
        std::fs::create_dir_all(assets.join("video")).unwrap();
        std::fs::create_dir_all(assets.join("models")).unwrap();
        std::fs::write(assets.join(VIDEO), b"x").unwrap();
        std::fs::write(assets.join(MODEL), b"x").unwrap();
        assert!(has_assets(&assets));
        let opts = DemoOptions {
            work_dir: dir.path().join("work"),
            results: dir.path().join("results.jsonl"),
            api_addr: "127.0.0.1:0".parse().unwrap(),
        };
        let c = prepare(&opts, &DemoData::Assets(assets)).unwrap();
        crate::config::validate(&c, true).unwrap();
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(c.models[0].id, "yolov8n");
        // And the rendered file parses back to the same config.
        let again =
            Config::from_toml(&c.to_toml(), Path::new("demo.toml"), Path::new("/")).unwrap();
        assert_eq!(again, c);
    }
}
