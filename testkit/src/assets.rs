//! The shared real assets and the skip-or-fail rule for anything a test needs from outside
//! the repository.
//!
//! The assets are never copied into the repository (not even excerpts): tests that need
//! them look them up here. Outside CI a missing prerequisite prints `SKIP: ...` and the
//! test returns early; with `CI` set (and not `0`/`false`) it panics, so the real-data tests
//! cannot silently stop running in CI.

use std::path::{Path, PathBuf};

/// Environment variable naming the assets directory.
pub const ENV_ASSETS: &str = "FRAMEBUS_ASSETS";
/// The real footage: 960x540, 25 fps H.264, people walking.
pub const PEOPLE_WALK: &str = "video/people_walk_540p.mp4";
/// The real YOLOv8n detector (int8).
pub const YOLOV8: &str = "models/yolov8n_int8.onnx";
/// The real YOLOX-nano detector.
pub const YOLOX: &str = "models/yolox_nano.onnx";

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Whether a missing prerequisite must fail the test (`CI` set, and not `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Fails in CI (panics naming `what`), otherwise prints a `SKIP` line and returns `None`.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(
        !in_ci(),
        "CI is set but {what} is missing: real-data tests must run in CI"
    );
    println!("SKIP: {what} is missing");
    None
}

/// `path` when it exists, else [`missing`] (`what` names it in the message).
pub fn require(what: &str, path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        missing(&format!("{what} ({})", path.display()))
    }
}

/// The assets directory: `$FRAMEBUS_ASSETS` when set and not empty, else
/// `<workspace>/../shared/assets`. Existence is not checked.
pub fn assets_dir() -> PathBuf {
    assets_dir_from(std::env::var_os(ENV_ASSETS))
}

/// [`assets_dir`] for a given value of `$FRAMEBUS_ASSETS` (testable without the process
/// environment).
pub fn assets_dir_from(env: Option<std::ffi::OsString>) -> PathBuf {
    env.filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/assets"))
}

/// One asset by relative path (`video/...`, `models/...`), or [`missing`].
pub fn asset(rel: &str) -> Option<PathBuf> {
    let p = assets_dir().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        missing(&format!(
            "asset {} (set {ENV_ASSETS} to the assets directory)",
            p.display()
        ))
    }
}

/// The assets directory when every file of `rel` is in it, or [`missing`].
pub fn assets_with(rel: &[&str]) -> Option<PathBuf> {
    let dir = assets_dir();
    match rel.iter().find(|f| !dir.join(f).is_file()) {
        None => Some(dir),
        Some(f) => missing(&format!(
            "asset {} (set {ENV_ASSETS} to the assets directory)",
            dir.join(f).display()
        )),
    }
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else `<workspace>/.local/lib/libonnxruntime.so`,
/// when it exists. No skip or failure: callers decide.
pub fn ort_dylib() -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(".local/lib/libonnxruntime.so")))
        .filter(|p| p.is_file())
}

/// [`ort_dylib`], or [`missing`].
pub fn require_ort() -> Option<PathBuf> {
    ort_dylib().or_else(|| missing("ONNX Runtime (set ORT_DYLIB_PATH)"))
}

/// The Python with `onnx`, `numpy` and `onnxruntime`: `$FRAMEBUS_PYTHON`, else
/// `<workspace>/.local/venv/bin/python`, when it exists.
pub fn python() -> Option<PathBuf> {
    std::env::var_os("FRAMEBUS_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(".local/venv/bin/python")))
        .filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_dir_prefers_the_environment() {
        assert_eq!(
            assets_dir_from(Some("/srv/assets".into())),
            PathBuf::from("/srv/assets")
        );
        let default = assets_dir_from(None);
        assert!(
            default.ends_with("../shared/assets"),
            "{}",
            default.display()
        );
        assert_eq!(assets_dir_from(Some("".into())), default);
    }

    #[test]
    fn workspace_root_holds_the_workspace() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("testkit/Cargo.toml").is_file());
    }
}
