//! Fake RTSP cameras for the system under test: the project's own
//! `tools/fake_rtsp_camera.py` (GStreamer's RTSP server on 127.0.0.1) serving the footage
//! as endless live H.264, one mount per camera.

use std::path::{Path, PathBuf};
use std::time::Duration;

use framebus_testkit::camera::{CameraError, RtspCamera};

/// A problem starting the fake cameras.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("fake RTSP cameras")]
    Camera(#[from] CameraError),
    #[error("scaling the footage into a substream: {0}")]
    Substream(String),
}

/// Size of the substreams of `SourceKind::Substream` (a camera's detection stream: still
/// more pixels than the 416x234 YOLOX-nano sees of a 16:9 picture).
pub const SUBSTREAM: (u32, u32) = (480, 270);

/// The mount of camera `id`'s substream.
pub fn substream_name(id: &str) -> String {
    format!("{id}-sub")
}

/// The fake camera script of this workspace.
pub fn default_script() -> PathBuf {
    framebus_testkit::camera::rtsp_script()
}

/// The python that has GStreamer's bindings: `$FRAMEBUS_PYTHON`, else Debian's.
pub fn python() -> String {
    std::env::var("FRAMEBUS_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/bin/python3".to_string())
}

/// The running fake camera server; killed with its process group on drop.
#[derive(Debug)]
pub struct FakeCameras {
    cam: RtspCamera,
    pub port: u16,
}

impl FakeCameras {
    /// Serves `video` as `rtsp://127.0.0.1:<port>/<name>` for every name, and with
    /// `substream = Some((w, h))` also the video scaled to `w`x`h` (same GOP: 10 s,
    /// B-frames) as `<name>-sub`.
    pub fn start(
        script: &Path,
        names: &[String],
        video: &Path,
        substream: Option<(u32, u32)>,
        timeout: Duration,
    ) -> Result<FakeCameras, RtspError> {
        let mut b = RtspCamera::builder(python())
            .script(script)
            .timeout(timeout);
        let sub = match substream {
            Some(size) => Some(scaled_copy(video, size)?),
            None => None,
        };
        for n in names {
            b = b.camera(n, video);
            if let Some(sub) = &sub {
                b = b.camera(&substream_name(n), sub);
            }
        }
        let cam = b.start()?;
        Ok(FakeCameras {
            port: cam.port,
            cam,
        })
    }

    pub fn url(&self, name: &str) -> String {
        self.cam.url(name)
    }
}

/// `video` scaled to `size` (see `framebus_testkit::ffmpeg::scaled_copy`: cached in the
/// temp dir across runs).
pub fn scaled_copy(video: &Path, size: (u32, u32)) -> Result<PathBuf, RtspError> {
    framebus_testkit::ffmpeg::scaled_copy(video, size).map_err(RtspError::Substream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_part_of_the_workspace() {
        assert!(default_script().is_file(), "{}", default_script().display());
    }
}
