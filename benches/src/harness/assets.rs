//! The real test assets (models, footage) and frames decoded from them with the `ffmpeg` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A problem finding or decoding an asset.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The asset file is not there.
    #[error("asset {path} not found (set --assets or FRAMEBUS_ASSETS to the assets directory)")]
    Missing { path: PathBuf },
    /// A model name that is neither a known id nor an existing `.onnx` path.
    #[error("unknown model {name:?}: expected yolov8, yolox or a path to an .onnx file")]
    UnknownModel { name: String },
    /// `ffmpeg` failed to produce the frame.
    #[error("ffmpeg could not decode frame {frame} of {path}: {reason}")]
    Decode {
        path: PathBuf,
        frame: u32,
        reason: String,
    },
}

/// The assets directory: `explicit`, else `$FRAMEBUS_ASSETS`, else `<workspace>/../shared/assets`.
pub fn assets_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    framebus_testkit::assets_dir()
}

/// A model the harness can run: its short id (used as model id in the system) and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAsset {
    pub id: String,
    pub path: PathBuf,
}

/// Resolves `yolov8`, `yolox` (the real test models) or a path to an `.onnx` file.
pub fn model(assets: &Path, name: &str) -> Result<ModelAsset, AssetError> {
    let (id, path) = match name {
        "yolov8" | "yolov8n" | "yolov8n_int8" => (
            "yolov8".to_string(),
            assets.join("models/yolov8n_int8.onnx"),
        ),
        "yolox" | "yolox_nano" => ("yolox".to_string(), assets.join("models/yolox_nano.onnx")),
        other if other.ends_with(".onnx") => {
            let p = PathBuf::from(other);
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>();
            (stem, p)
        }
        other => {
            return Err(AssetError::UnknownModel {
                name: other.to_string(),
            })
        }
    };
    if !path.is_file() {
        return Err(AssetError::Missing { path });
    }
    Ok(ModelAsset { id, path })
}

/// The real footage (960x540, 25 fps H.264).
pub fn video(assets: &Path) -> Result<PathBuf, AssetError> {
    let path = assets.join("video/people_walk_540p.mp4");
    if path.is_file() {
        Ok(path)
    } else {
        Err(AssetError::Missing { path })
    }
}

/// Frame `index` of `video` as raw pixels in ffmpeg's `pix_fmt` (e.g. `rgb24`, `nv12`).
pub fn decode_frame(video: &Path, index: u32, pix_fmt: &str) -> Result<Vec<u8>, AssetError> {
    framebus_testkit::ffmpeg::try_decode_frame(video, index, pix_fmt).map_err(|reason| {
        AssetError::Decode {
            path: video.to_path_buf(),
            frame: index,
            reason,
        }
    })
}

/// Width and height of the first video stream of `video` (`ffprobe`).
pub fn video_size(video: &Path) -> Result<(u32, u32), AssetError> {
    let err = |reason: String| AssetError::Decode {
        path: video.to_path_buf(),
        frame: 0,
        reason,
    };
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(video)
        .output()
        .map_err(|e| err(format!("cannot run ffprobe: {e}")))?;
    parse_size(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
}

/// Parses ffprobe's `W,H` line.
pub fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.lines().next()?.trim().split_once(',')?;
    let (w, h) = (w.parse().ok()?, h.trim_end_matches(',').parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffprobe_size() {
        assert_eq!(parse_size("960,540\n"), Some((960, 540)));
        assert_eq!(parse_size("960,540,\n"), Some((960, 540)));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("0,5"), None);
    }

    #[test]
    fn model_names_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/yolox_nano.onnx"), b"x").unwrap();
        let m = model(dir.path(), "yolox").unwrap();
        assert_eq!(m.id, "yolox");
        assert!(matches!(
            model(dir.path(), "yolov8"),
            Err(AssetError::Missing { .. })
        ));
        assert!(matches!(
            model(dir.path(), "resnet"),
            Err(AssetError::UnknownModel { .. })
        ));
        let custom = dir.path().join("my model.onnx");
        std::fs::write(&custom, b"x").unwrap();
        assert_eq!(
            model(dir.path(), custom.to_str().unwrap()).unwrap().id,
            "my-model"
        );
    }
}
