//! The `ffmpeg` CLI as reference decoder.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Whether the `ffmpeg` CLI runs.
pub fn has_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `ffmpeg` CLI, or [`crate::missing`] (SKIP outside CI).
pub fn ffmpeg_cli() -> Option<()> {
    if has_ffmpeg() {
        Some(())
    } else {
        crate::missing("the ffmpeg CLI")
    }
}

/// Frames decoded once per test process: `(video, index, pix_fmt)` to bytes.
type FrameCache = Mutex<HashMap<(PathBuf, u32, String), Vec<u8>>>;

/// Frame `index` of `video` as raw `pix_fmt` bytes (`nv12`, `yuv420p`, `bgr24`, `rgb24`),
/// decoded by the ffmpeg CLI with its default conversion; cached per process. Panics when
/// ffmpeg fails (a broken fixture is a test failure).
pub fn decode_frame(video: &Path, index: u32, pix_fmt: &str) -> Vec<u8> {
    static FRAMES: OnceLock<FrameCache> = OnceLock::new();
    let cache = FRAMES.get_or_init(Default::default);
    let key = (video.to_path_buf(), index, pix_fmt.to_owned());
    if let Some(f) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return f.clone();
    }
    let frame = try_decode_frame(video, index, pix_fmt).unwrap_or_else(|e| panic!("{e}"));
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, frame.clone());
    frame
}

/// Frame `index` of `video` as raw `pix_fmt` bytes, uncached; the error says what ffmpeg
/// said. For callers that must not panic (the bench harness).
pub fn try_decode_frame(video: &Path, index: u32, pix_fmt: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(video)
        .args([
            "-vf",
            &format!("select=eq(n\\,{index})"),
            "-fps_mode",
            "passthrough",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-",
        ])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "ffmpeg could not decode frame {index} of {}: {}",
            video.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Decodes `input` to raw `pix_fmt` frames of `frame_size` bytes, calling `f(index, bytes)`
/// for each (streamed; nothing kept). Returns the number of frames.
pub fn frames(
    input: &Path,
    pix_fmt: &str,
    frame_size: usize,
    max: Option<usize>,
    mut f: impl FnMut(usize, &[u8]),
) -> usize {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-i"]).arg(input);
    if let Some(n) = max {
        cmd.args(["-frames:v", &n.to_string()]);
    }
    let mut child = cmd
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the ffmpeg CLI runs");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; frame_size];
    let mut i = 0;
    while stdout.read_exact(&mut buf).is_ok() {
        f(i, &buf);
        i += 1;
    }
    assert!(
        child.wait().is_ok_and(|s| s.success()),
        "ffmpeg failed on {}",
        input.display()
    );
    i
}

/// A 64-bit hash of a frame (comparisons without keeping frames).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Whether a frame has content: not constant (a real picture, not a blank slot).
pub fn has_content(bytes: &[u8]) -> bool {
    let (min, max) = bytes
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &b| (lo.min(b), hi.max(b)));
    max.saturating_sub(min) > 64
}

/// `video` scaled to `w`x`h` by the ffmpeg CLI (H.264 `veryfast`, 10 s GOP like the test
/// footage): a camera's low-resolution substream. Cached in the temp dir across runs under
/// a name made of the size and the video's path, length and mtime (written to a
/// per-process `.part` file, then renamed, so concurrent callers never see half a file).
pub fn scaled_copy(video: &Path, (w, h): (u32, u32)) -> Result<PathBuf, String> {
    let err = |e: std::io::Error| format!("{}: {e}", video.display());
    let meta = std::fs::metadata(video).map_err(err)?;
    let mut key = DefaultHasher::new();
    (video, meta.len(), meta.modified().map_err(err)?).hash(&mut key);
    let out =
        std::env::temp_dir().join(format!("framebus-scaled-{w}x{h}-{:016x}.mp4", key.finish()));
    if out.is_file() {
        return Ok(out);
    }
    let part = out.with_extension(format!("{}.part.mp4", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(video)
        .args(["-vf", &format!("scale={w}:{h}"), "-c:v", "libx264"])
        .args(["-preset", "veryfast", "-g", "250", "-an"])
        .arg(&part)
        .status()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        return Err(format!("ffmpeg exited with {status}"));
    }
    std::fs::rename(&part, &out).map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_check() {
        assert!(!has_content(&[10; 64]));
        assert!(has_content(&[0, 200, 10]));
        assert!(!has_content(&[]));
        assert_eq!(hash(b"abc"), hash(b"abc"));
        assert_ne!(hash(b"abc"), hash(b"abd"));
    }
}
