//! Small generated fixtures checked into `testkit/fixtures/` (see its README.md), so a
//! fresh clone runs meaningful tests without the shared assets:
//!
//! - [`demo_model`]: the demo detector of `tools/make_demo_model.py` (8 KB ONNX, 320x320
//!   input, YOLOv8 output layout): it reports bright blobs as class 0, `person`.
//! - [`boxes_video`]: 4 s of 640x360 25 fps H.264, three bright boxes walking across a dark
//!   scene (the demo's synthetic scene), generated with ffmpeg's lavfi (9 KB).
//!
//! Both are generated, never excerpts of the shared assets.

use std::path::PathBuf;

/// The fixtures directory (`testkit/fixtures`).
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// The demo detector (`fixtures/demo_detector.onnx`).
pub fn demo_model() -> PathBuf {
    dir().join("demo_detector.onnx")
}

/// The demo detector's input size (square).
pub const DEMO_MODEL_INPUT: u32 = 320;

/// The class the demo detector reports for a bright box (COCO `person`).
pub const DEMO_CLASS_ID: u32 = 0;

/// The synthetic footage (`fixtures/boxes_640x360.mp4`).
pub fn boxes_video() -> PathBuf {
    dir().join("boxes_640x360.mp4")
}

/// Width and height of [`boxes_video`].
pub const BOXES_SIZE: (u32, u32) = (640, 360);
/// Frame rate of [`boxes_video`].
pub const BOXES_FPS: u32 = 25;
/// Frames in [`boxes_video`].
pub const BOXES_FRAMES: usize = 100;
/// Boxes in every frame of [`boxes_video`] once they entered (from about frame 20 on,
/// each is fully inside the picture): 44x120, 40x110 and 48x128 pixels.
pub const BOXES: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_small_and_present() {
        for (p, max) in [(demo_model(), 16 * 1024), (boxes_video(), 64 * 1024)] {
            let len = std::fs::metadata(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .len();
            assert!(len > 0 && len <= max, "{} is {len} bytes", p.display());
        }
    }
}
