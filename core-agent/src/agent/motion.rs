//! The motion gate in front of inference (issue 16, "infer less when nothing moves"),
//! in the style of Frigate's motion detection: a small grey thumbnail of each frame the
//! agent looks at, taken straight from the ring's luma plane (NV12 and I420 have one; for
//! BGR24 and RGB24 the luma is computed), compared with a short running average of the
//! previous thumbnails. A frame in which too small a share of the unmasked thumbnail
//! pixels changed by more than `pixel_delta` is *still*; a still frame may skip inference
//! and reuse the subscription's last result, as long as an inference ran within the
//! keep-alive interval (`1 / keepalive_fps`).
//!
//! Everything here is pure (bytes in, decisions out); the agent reads the frame under the
//! ring's seqlock and drops any decision made on a torn frame.

use proto_schema::pixel::{FrameGeometry, PixelFormat};

use crate::config::MotionConfig;

/// Weight of the newest thumbnail in the running background average: about the last
/// three looks (at 5 fps, ~0.6 s) make the background, so something that stops moving
/// becomes background within a second or two.
pub const BACKGROUND_ALPHA: f32 = 0.35;

/// Samples averaged per thumbnail pixel, per axis (at most 4 x 4, whatever the frame
/// size: the cost does not grow with the resolution).
const SAMPLES: u32 = 4;

/// What the detector says about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Motion {
    /// No background yet (the first frame, or the frame size changed): infer.
    Learning,
    /// This share of the unmasked pixels changed: infer.
    Moving(f64),
    /// Only this share changed: inference may be skipped.
    Still(f64),
    /// The frame could not be read whole (torn, overwritten): no decision, infer.
    Unknown,
}

impl Motion {
    /// Whether this frame allows skipping inference.
    pub fn is_still(self) -> bool {
        matches!(self, Motion::Still(_))
    }
}

/// Thumbnail size for a frame of `width` x `height` and a wanted thumbnail width (never
/// larger than the frame; at least 1 x 1).
pub fn thumbnail_size(width: u32, height: u32, thumb_width: u32) -> (u32, u32) {
    let w = thumb_width.clamp(1, width.max(1));
    let h = ((u64::from(height) * u64::from(w) + u64::from(width) / 2) / u64::from(width.max(1)))
        .clamp(1, u64::from(height.max(1))) as u32;
    (w, h)
}

/// Writes the grey thumbnail (`tw` x `th`, row-major) of one frame into `out`. Each
/// thumbnail pixel averages up to 4 x 4 samples of its block of the frame. `bytes` may
/// be a torn frame: nothing here trusts the content, and a geometry that does not fit
/// `bytes` gives `false` (never a panic).
pub fn thumbnail(bytes: &[u8], g: &FrameGeometry, tw: u32, th: u32, out: &mut Vec<u8>) -> bool {
    out.clear();
    let (w, h) = (g.width as usize, g.height as usize);
    let (tw, th) = (tw as usize, th as usize);
    if w == 0 || h == 0 || tw == 0 || th == 0 || tw > w || th > h {
        return false;
    }
    let stride = g.strides[0] as usize;
    let base = g.offsets[0] as usize;
    let bpp = match g.format {
        PixelFormat::Nv12 | PixelFormat::I420 => 1,
        PixelFormat::Bgr24 | PixelFormat::Rgb24 => 3,
    };
    // The last byte any sample touches must lie inside the frame.
    let last = base + (h - 1) * stride + (w - 1) * bpp + (bpp - 1);
    if stride < w * bpp || last >= bytes.len() {
        return false;
    }
    let luma = |x: usize, y: usize| -> u32 {
        let i = base + y * stride + x * bpp;
        match g.format {
            PixelFormat::Nv12 | PixelFormat::I420 => u32::from(bytes[i]),
            // BT.601 weights in 8-bit fixed point.
            PixelFormat::Bgr24 => {
                (29 * u32::from(bytes[i])
                    + 150 * u32::from(bytes[i + 1])
                    + 77 * u32::from(bytes[i + 2]))
                    >> 8
            }
            PixelFormat::Rgb24 => {
                (77 * u32::from(bytes[i])
                    + 150 * u32::from(bytes[i + 1])
                    + 29 * u32::from(bytes[i + 2]))
                    >> 8
            }
        }
    };
    out.reserve(tw * th);
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, (ty + 1) * h / th);
        let ny = (y1 - y0).clamp(1, SAMPLES as usize);
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, (tx + 1) * w / tw);
            let nx = (x1 - x0).clamp(1, SAMPLES as usize);
            let mut sum = 0u32;
            for sy in 0..ny {
                let y = y0 + (2 * sy + 1) * (y1 - y0) / (2 * ny);
                for sx in 0..nx {
                    let x = x0 + (2 * sx + 1) * (x1 - x0) / (2 * nx);
                    sum += luma(x, y);
                }
            }
            out.push((sum / (nx * ny) as u32) as u8);
        }
    }
    true
}

/// Whether the point lies inside the polygon (even-odd rule).
fn inside(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    let mut odd = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            odd = !odd;
        }
        j = i;
    }
    odd
}

/// The thumbnail pixels the masks hide (`true`: ignored), pixel centres tested against
/// polygons in normalised coordinates (0..1 across the frame).
pub fn rasterize_masks(masks: &[Vec<[f64; 2]>], tw: u32, th: u32) -> Vec<bool> {
    let mut out = Vec::with_capacity(tw as usize * th as usize);
    for y in 0..th {
        for x in 0..tw {
            let (px, py) = (
                (f64::from(x) + 0.5) / f64::from(tw),
                (f64::from(y) + 0.5) / f64::from(th),
            );
            out.push(masks.iter().any(|p| p.len() >= 3 && inside(p, px, py)));
        }
    }
    out
}

/// Frame differencing against a running background, for one camera.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    threshold: f64,
    pixel_delta: f32,
    thumb_width: u32,
    masks: Vec<Vec<[f64; 2]>>,
    size: (u32, u32),
    hidden: Vec<bool>,
    background: Vec<f32>,
    scratch: Vec<u8>,
}

impl MotionDetector {
    /// A detector with the camera's settings.
    pub fn new(c: &MotionConfig) -> Self {
        Self {
            threshold: c.threshold,
            pixel_delta: f32::from(c.pixel_delta),
            thumb_width: c.thumbnail_width,
            masks: c.masks.clone(),
            size: (0, 0),
            hidden: Vec::new(),
            background: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Thumbnail size used for frames of `g`.
    pub fn size_for(&self, g: &FrameGeometry) -> (u32, u32) {
        thumbnail_size(g.width, g.height, self.thumb_width)
    }

    /// Makes the thumbnail of a frame of geometry `g` from its bytes (see [`thumbnail`]),
    /// into the detector's own buffer; `false` if the geometry does not fit the bytes.
    pub fn capture(&mut self, bytes: &[u8], g: &FrameGeometry) -> bool {
        let (tw, th) = self.size_for(g);
        let mut buf = std::mem::take(&mut self.scratch);
        let ok = thumbnail(bytes, g, tw, th, &mut buf);
        self.scratch = buf;
        ok
    }

    /// Judges the thumbnail made by the last successful [`Self::capture`] (of size
    /// `size`), then folds it into the background.
    pub fn judge_captured(&mut self, size: (u32, u32)) -> Motion {
        let thumb = std::mem::take(&mut self.scratch);
        let m = self.observe(&thumb, size);
        self.scratch = thumb;
        m
    }

    /// Judges one thumbnail of `size` (row-major grey bytes) against the background, then
    /// folds it into the background.
    pub fn observe(&mut self, thumb: &[u8], size: (u32, u32)) -> Motion {
        let n = size.0 as usize * size.1 as usize;
        if thumb.len() != n || n == 0 {
            return Motion::Unknown;
        }
        if self.size != size || self.background.len() != n {
            self.size = size;
            self.hidden = rasterize_masks(&self.masks, size.0, size.1);
            self.background = thumb.iter().map(|&p| f32::from(p)).collect();
            return Motion::Learning;
        }
        let mut seen = 0usize;
        let mut changed = 0usize;
        for ((bg, &p), &hide) in self.background.iter_mut().zip(thumb).zip(&self.hidden) {
            let p = f32::from(p);
            if !hide {
                seen += 1;
                if (p - *bg).abs() > self.pixel_delta {
                    changed += 1;
                }
            }
            *bg += BACKGROUND_ALPHA * (p - *bg);
        }
        if seen == 0 {
            // Everything masked: motion can never be seen, so it never stops inference.
            return Motion::Moving(0.0);
        }
        let share = changed as f64 / seen as f64;
        if share >= self.threshold {
            Motion::Moving(share)
        } else {
            Motion::Still(share)
        }
    }
}

/// The keep-alive rule: a still frame skips inference only if the subscription has a
/// result to reuse and its last inference was sent less than `1 / keepalive_fps` ago
/// (capture time; `keepalive_fps = 0`: no keep-alive, still frames always skip).
pub fn may_skip(
    motion: Motion,
    has_result: bool,
    last_inferred_ts_ns: Option<u64>,
    ts_ns: u64,
    keepalive_fps: f64,
) -> bool {
    if !motion.is_still() || !has_result {
        return false;
    }
    let Some(last) = last_inferred_ts_ns else {
        return false;
    };
    if keepalive_fps <= 0.0 {
        return true;
    }
    let keepalive_ns = (1e9 / keepalive_fps) as u64;
    // A timestamp before the last inference (clock reset) counts as "long ago".
    ts_ns >= last && ts_ns - last < keepalive_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MotionConfig {
        MotionConfig {
            enabled: true,
            ..MotionConfig::default()
        }
    }

    /// A grey NV12 frame with a bright `size`-pixel square at (x, y), plus noise.
    fn nv12(w: u32, h: u32, square: Option<(u32, u32, u32)>, noise_seed: u32) -> Vec<u8> {
        let g = FrameGeometry::packed(w, h, PixelFormat::Nv12).unwrap();
        let mut f = vec![128u8; g.frame_size as usize];
        let mut s = noise_seed.wrapping_mul(2_654_435_761).max(1);
        for y in 0..h {
            for x in 0..w {
                // xorshift noise of +-6 levels: sensor noise, not motion.
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let mut v = 100 + (s % 13) as i32 - 6;
                if let Some((sx, sy, n)) = square {
                    if (sx..sx + n).contains(&x) && (sy..sy + n).contains(&y) {
                        v = 230;
                    }
                }
                f[(y * w + x) as usize] = v as u8;
            }
        }
        f
    }

    fn judge(d: &mut MotionDetector, frame: &[u8], g: &FrameGeometry) -> Motion {
        assert!(d.capture(frame, g));
        d.judge_captured(d.size_for(g))
    }

    #[test]
    fn thumbnail_sizes_keep_the_aspect_and_never_upscale() {
        assert_eq!(thumbnail_size(960, 540, 96), (96, 54));
        assert_eq!(thumbnail_size(1920, 1080, 64), (64, 36));
        assert_eq!(thumbnail_size(32, 16, 96), (32, 16));
        assert_eq!(thumbnail_size(4000, 2, 8), (8, 1));
    }

    #[test]
    fn thumbnails_of_every_format_see_the_same_grey() {
        let (w, h) = (64u32, 32u32);
        for format in [
            PixelFormat::Nv12,
            PixelFormat::I420,
            PixelFormat::Bgr24,
            PixelFormat::Rgb24,
        ] {
            let g = FrameGeometry::packed(w, h, format).unwrap();
            let frame = vec![77u8; g.frame_size as usize];
            let mut out = Vec::new();
            assert!(thumbnail(&frame, &g, 16, 8, &mut out), "{format}");
            assert_eq!(out.len(), 16 * 8);
            assert!(
                out.iter().all(|&p| (76..=77).contains(&p)),
                "{format}: {out:?}"
            );
            // Bytes shorter than the geometry: refused, no panic.
            assert!(!thumbnail(&frame[..100], &g, 16, 8, &mut out));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_moving_square_is_motion_and_noise_is_not() {
        let (w, h) = (320u32, 180u32);
        let g = FrameGeometry::packed(w, h, PixelFormat::Nv12).unwrap();
        let mut d = MotionDetector::new(&settings());
        assert_eq!(judge(&mut d, &nv12(w, h, None, 1), &g), Motion::Learning);
        for seed in 2..10 {
            let m = judge(&mut d, &nv12(w, h, None, seed), &g);
            assert!(m.is_still(), "noise only, frame {seed}: {m:?}");
        }
        // A 20-pixel square (~0.7 % of the frame) walks in and keeps walking.
        for step in 0..6 {
            let m = judge(
                &mut d,
                &nv12(w, h, Some((40 + 15 * step, 60, 20)), 20 + step),
                &g,
            );
            assert!(matches!(m, Motion::Moving(_)), "step {step}: {m:?}");
        }
        // It stops: within a few looks it is background.
        let still: Vec<bool> = (0..8)
            .map(|i| judge(&mut d, &nv12(w, h, Some((115, 60, 20)), 40 + i), &g).is_still())
            .collect();
        assert!(still[4..].iter().all(|&s| s), "{still:?}");
    }

    #[test]
    fn masked_motion_is_ignored() {
        let (w, h) = (320u32, 180u32);
        let g = FrameGeometry::packed(w, h, PixelFormat::Nv12).unwrap();
        // The left half is masked (a flag waving, a road...).
        let masked = MotionConfig {
            masks: vec![vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]],
            ..settings()
        };
        let mut d = MotionDetector::new(&masked);
        judge(&mut d, &nv12(w, h, None, 1), &g);
        for step in 0..5 {
            let m = judge(
                &mut d,
                &nv12(w, h, Some((10 + 20 * step, 60, 30)), 2 + step),
                &g,
            );
            assert!(m.is_still(), "masked step {step}: {m:?}");
        }
        let m = judge(&mut d, &nv12(w, h, Some((250, 60, 30)), 9), &g);
        assert!(matches!(m, Motion::Moving(_)), "{m:?}");
        let hidden = rasterize_masks(&masked.masks, 10, 4);
        assert_eq!(hidden.iter().filter(|&&h| h).count(), 20);
        assert!(hidden[0] && !hidden[9]);
    }

    #[test]
    fn a_new_frame_size_starts_learning_again_and_bad_input_is_unknown() {
        let mut d = MotionDetector::new(&settings());
        assert_eq!(d.observe(&[1, 2, 3, 4], (2, 2)), Motion::Learning);
        assert!(d.observe(&[1, 2, 3, 4], (2, 2)).is_still());
        assert_eq!(d.observe(&[1, 2, 3, 4, 5, 6], (3, 2)), Motion::Learning);
        assert_eq!(d.observe(&[1, 2], (3, 2)), Motion::Unknown);
    }

    #[test]
    fn keepalive_bounds_how_long_a_result_is_reused() {
        const S: u64 = 1_000_000_000;
        let still = Motion::Still(0.0);
        assert!(may_skip(still, true, Some(10 * S), 10 * S + S / 2, 1.0));
        assert!(!may_skip(still, true, Some(10 * S), 11 * S, 1.0));
        assert!(!may_skip(
            Motion::Moving(0.1),
            true,
            Some(10 * S),
            10 * S,
            1.0
        ));
        assert!(!may_skip(Motion::Learning, true, Some(10 * S), 10 * S, 1.0));
        assert!(!may_skip(Motion::Unknown, true, Some(10 * S), 10 * S, 1.0));
        // Nothing to reuse yet.
        assert!(!may_skip(still, false, Some(10 * S), 10 * S, 1.0));
        assert!(!may_skip(still, true, None, 10 * S, 1.0));
        // No keep-alive.
        assert!(may_skip(still, true, Some(S), 1_000 * S, 0.0));
        // Clock went backwards: infer.
        assert!(!may_skip(still, true, Some(10 * S), 9 * S, 1.0));
    }
}
