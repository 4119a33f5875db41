//! From a ring slot to a JPEG: one copy of the slot's pixels into the encoder's input
//! buffer (converting the layout on the way), a seqlock check, the overlay drawn into
//! that buffer, then the encoder.
//!
//! NV12 and I420 frames become full-range YCbCr 4:2:0 planes, which the encoder takes
//! as they are ([`super::jpeg`]: no RGB, no chroma upsampling). The kernel writes
//! limited-range (video) YUV, so Y is stretched from 16..235 and chroma from 16..240
//! to 0..255 with two lookup tables on the way (JFIF JPEGs are full range: without
//! this, blacks would show grey; it is about a fifth of the render's instructions),
//! and NV12's interleaved chroma is split into its two planes. BGR24 and RGB24 are
//! copied row by row (strides dropped).

use std::time::Duration;

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::{FrameInfo, ReadError, RingReader};

use super::draw::{draw_overlay, Canvas, Layout, Overlay};
use super::jpeg::{self, JpegError, Source};

/// Reads of a slot that the writer changed underneath (torn) before giving up for
/// this frame.
pub const TORN_RETRIES: usize = 4;

/// Why a frame could not be turned into a JPEG.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Nothing published in the ring yet.
    #[error("ring {ring}: no frame yet")]
    NoFrame {
        /// Ring name.
        ring: String,
    },
    /// Every try read a slot the writer was overwriting.
    #[error("ring {ring}: frame torn by the writer {tries} times in a row")]
    Torn {
        /// Ring name.
        ring: String,
        /// Reads tried.
        tries: usize,
    },
    /// The ring refused the read (closed, truncated, ...).
    #[error("ring {ring}: {source}")]
    Read {
        /// Ring name.
        ring: String,
        /// Underlying error.
        source: ReadError,
    },
    /// The frame is larger than JPEG allows (65535 pixels a side) or its bytes are
    /// shorter than its geometry says.
    #[error("ring {ring}: frame {width}x{height} cannot be encoded: {reason}")]
    Geometry {
        /// Ring name.
        ring: String,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The encoder failed.
    #[error("ring {ring}: JPEG encoder: {source}")]
    Encode {
        /// Ring name.
        ring: String,
        /// The encoder's error.
        #[source]
        source: JpegError,
    },
}

/// Limited-range (video) Y to full range.
fn luma_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = ((i as f32 - 16.0) * 255.0 / 219.0)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    t
}

/// Limited-range (video) Cb/Cr to full range.
fn chroma_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = ((i as f32 - 128.0) * 255.0 / 224.0 + 128.0)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    t
}

/// The layout the encoder gets for frames of `format`.
pub fn layout_of(format: PixelFormat) -> Layout {
    match format {
        PixelFormat::Nv12 | PixelFormat::I420 => Layout::I420,
        PixelFormat::Bgr24 => Layout::Bgr,
        PixelFormat::Rgb24 => Layout::Rgb,
    }
}

/// Whether `bytes` holds every row of every plane `g` names.
fn covers(g: &FrameGeometry, bytes: &[u8]) -> bool {
    // 4:2:0 chroma is read for each 2x2 block: odd sizes are not ring geometries.
    let yuv = matches!(g.format, PixelFormat::Nv12 | PixelFormat::I420);
    if yuv && !(g.width.is_multiple_of(2) && g.height.is_multiple_of(2)) {
        return false;
    }
    (0..g.format.planes()).all(|p| {
        let Some((row, rows)) = g.format.plane_extent(p, g.width, g.height) else {
            return false;
        };
        let (off, stride) = (g.offsets[p] as usize, g.strides[p] as usize);
        rows == 0
            || (stride >= row as usize
                && off
                    .checked_add(stride * (rows as usize - 1) + row as usize)
                    .is_some_and(|end| end <= bytes.len()))
    })
}

/// Copies one frame of geometry `g` from `bytes` into `out` (resized to
/// [`Layout::frame_len`]) in [`layout_of`]`(g.format)`. `false` (and `out` untouched
/// in content) when `bytes` is too short for `g`; never panics on any byte content.
pub fn copy_frame(g: &FrameGeometry, bytes: &[u8], out: &mut Vec<u8>) -> bool {
    if !covers(g, bytes) {
        return false;
    }
    let (w, h) = (g.width as usize, g.height as usize);
    let Some(len) = layout_of(g.format).frame_len(w, h) else {
        return false;
    };
    out.resize(len, 0);
    let s = |p: usize| (g.offsets[p] as usize, g.strides[p] as usize);
    match g.format {
        PixelFormat::Bgr24 | PixelFormat::Rgb24 => {
            let (off, stride) = s(0);
            for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
                let src = off + y * stride;
                dst.copy_from_slice(&bytes[src..src + w * 3]);
            }
        }
        PixelFormat::Nv12 | PixelFormat::I420 => {
            let (ly, lc) = (luma_table(), chroma_table());
            let (luma, chroma) = out.split_at_mut(w * h);
            let (cb, cr) = chroma.split_at_mut(chroma.len() / 2);
            // Sizes are even ([`covers`]): chroma is (w / 2) x (h / 2).
            let cw = w / 2;
            let (yo, ys) = s(0);
            for (y, dst) in luma.chunks_exact_mut(w).enumerate() {
                let src = &bytes[yo + y * ys..yo + y * ys + w];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = ly[usize::from(v)];
                }
            }
            let rows = cb.chunks_exact_mut(cw).zip(cr.chunks_exact_mut(cw));
            if g.format == PixelFormat::Nv12 {
                let (uo, us) = s(1);
                for (cy, (u, v)) in rows.enumerate() {
                    let uv = &bytes[uo + cy * us..uo + cy * us + 2 * cw];
                    for ((u, v), pair) in u.iter_mut().zip(v.iter_mut()).zip(uv.chunks_exact(2)) {
                        *u = lc[usize::from(pair[0])];
                        *v = lc[usize::from(pair[1])];
                    }
                }
            } else {
                let ((uo, us), (vo, vs)) = (s(1), s(2));
                for (cy, (u, v)) in rows.enumerate() {
                    let su = &bytes[uo + cy * us..uo + cy * us + cw];
                    let sv = &bytes[vo + cy * vs..vo + cy * vs + cw];
                    for (d, &c) in u.iter_mut().zip(su) {
                        *d = lc[usize::from(c)];
                    }
                    for (d, &c) in v.iter_mut().zip(sv) {
                        *d = lc[usize::from(c)];
                    }
                }
            }
        }
    }
    true
}

/// Reads the latest frame of `reader` into `buf` (one copy, checked by the slot's
/// seqlock after the copy; a torn read is retried up to [`TORN_RETRIES`] times and
/// never returned). Returns the frame's metadata.
pub fn read_latest(reader: &RingReader, buf: &mut Vec<u8>) -> Result<FrameInfo, FrameError> {
    let ring = || reader.name().to_owned();
    let g = reader.geometry();
    for _ in 0..TORN_RETRIES {
        let info = reader
            .try_latest()
            .map_err(|source| FrameError::Read {
                ring: ring(),
                source,
            })?
            .ok_or_else(|| FrameError::NoFrame { ring: ring() })?;
        match reader.read(info.slot, info.seq, |bytes| copy_frame(&g, bytes, buf)) {
            Ok(true) => return Ok(info),
            Ok(false) => {
                return Err(FrameError::Geometry {
                    ring: ring(),
                    width: g.width,
                    height: g.height,
                    reason: "the slot is shorter than the geometry",
                })
            }
            // The writer lapped the slot during the copy: the buffer may be torn; take
            // the newer frame instead.
            Err(ReadError::Stale { .. }) => {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            Err(source) => {
                return Err(FrameError::Read {
                    ring: ring(),
                    source,
                })
            }
        }
    }
    Err(FrameError::Torn {
        ring: ring(),
        tries: TORN_RETRIES,
    })
}

/// Draws `overlay` into `buf` (a frame copied by [`copy_frame`]) and encodes it.
pub fn draw_and_encode(
    ring: &str,
    g: &FrameGeometry,
    buf: &mut [u8],
    overlay: &Overlay,
    quality: u8,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let geometry = |reason| FrameError::Geometry {
        ring: ring.to_owned(),
        width: g.width,
        height: g.height,
        reason,
    };
    let (Ok(w16), Ok(h16)) = (u16::try_from(g.width), u16::try_from(g.height)) else {
        return Err(geometry("JPEG frames are at most 65535 pixels a side"));
    };
    let (w, h) = (usize::from(w16), usize::from(h16));
    let layout = layout_of(g.format);
    let mut canvas = Canvas::new(buf, w, h, layout)
        .map_err(|_| geometry("the buffer does not match the geometry"))?;
    draw_overlay(&mut canvas, overlay);
    let src = match layout {
        Layout::Rgb => Source::Rgb(buf),
        Layout::Bgr => Source::Bgr(buf),
        Layout::I420 => {
            // Canvas::new checked the length: Y, then two equal chroma planes.
            let (y, chroma) = buf.split_at(w * h);
            let (cb, cr) = chroma.split_at(chroma.len() / 2);
            Source::I420 { y, cb, cr }
        }
    };
    jpeg::encode(src, w, h, quality, out).map_err(|source| FrameError::Encode {
        ring: ring.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nv12_becomes_full_range_i420_planes() {
        let g = FrameGeometry::packed(4, 2, PixelFormat::Nv12).unwrap();
        let mut bytes = vec![0u8; g.frame_size as usize];
        bytes[..8].copy_from_slice(&[16, 235, 126, 126, 16, 16, 16, 16]);
        bytes[8..12].copy_from_slice(&[16, 240, 128, 128]);
        let mut out = Vec::new();
        assert!(copy_frame(&g, &bytes, &mut out));
        assert_eq!(out.len(), 4 * 2 + 2 * 2);
        assert_eq!(&out[..8], &[0, 255, 128, 128, 0, 0, 0, 0]);
        // Cb plane, then Cr plane: NV12's pairs split.
        assert_eq!(&out[8..], &[1, 128, 255, 128]);
    }

    #[test]
    fn i420_and_bgr_are_copied_with_their_strides() {
        let g = FrameGeometry::packed(2, 2, PixelFormat::I420).unwrap();
        let bytes = vec![16, 16, 235, 235, 100, 200];
        let mut out = Vec::new();
        assert!(copy_frame(&g, &bytes, &mut out));
        assert_eq!(out, [0, 0, 255, 255, luma_or(100), luma_or(200)]);
        let g = FrameGeometry::packed(2, 1, PixelFormat::Bgr24).unwrap();
        assert!(copy_frame(&g, &[1, 2, 3, 4, 5, 6], &mut out));
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6]);
    }

    fn luma_or(c: u8) -> u8 {
        chroma_table()[usize::from(c)]
    }

    #[test]
    fn short_slots_are_refused_not_read() {
        let g = FrameGeometry::packed(4, 4, PixelFormat::Nv12).unwrap();
        let mut out = Vec::new();
        assert!(!copy_frame(&g, &[0u8; 10], &mut out));
        assert!(out.is_empty());
        let g = FrameGeometry::packed(4, 4, PixelFormat::Rgb24).unwrap();
        assert!(!copy_frame(&g, &[0u8; 47], &mut out));
    }

    #[test]
    fn encodes_a_jpeg_of_the_frame_size_with_the_overlay() {
        let g = FrameGeometry::packed(64, 48, PixelFormat::Rgb24).unwrap();
        let mut buf = vec![128u8; 64 * 48 * 3];
        let mut out = Vec::new();
        draw_and_encode("r", &g, &mut buf, &Overlay::default(), 80, &mut out).unwrap();
        assert_eq!(&out[..2], &[0xFF, 0xD8]);
        assert_eq!(&out[out.len() - 2..], &[0xFF, 0xD9]);
        let mut wrong = vec![0u8; 5];
        assert!(matches!(
            draw_and_encode("r", &g, &mut wrong, &Overlay::default(), 80, &mut out),
            Err(FrameError::Geometry { .. })
        ));
    }
}
