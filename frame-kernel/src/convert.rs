//! Decoded frame → ring slot, with no intermediate buffer: swscale writes straight into
//! the slot's planes (at the ring geometry's offsets and strides), or, when the decoder
//! already produces the ring's format and size, planes are copied row by row.

use std::ptr;

use ffmpeg::ffi;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{color, frame};
use ffmpeg_next as ffmpeg;
use proto_schema::pixel::{FrameGeometry, PixelFormat};

/// Why a frame could not be written into a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The decoder gave a frame without a pixel format or size.
    #[error("decoded frame has no usable format/size ({format:?} {width}x{height})")]
    EmptyFrame {
        /// Frame format.
        format: Pixel,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// The destination is smaller than the geometry says or the geometry is invalid.
    #[error("slot of {len} bytes does not hold geometry {geometry:?}")]
    BadDestination {
        /// Slot length.
        len: usize,
        /// Ring geometry.
        geometry: FrameGeometry,
    },
    /// swscale cannot convert between these formats/sizes.
    #[error("swscale cannot convert {from:?} {src_w}x{src_h} to {to} {dst_w}x{dst_h}")]
    Unsupported {
        /// Source format.
        from: Pixel,
        /// Source width.
        src_w: u32,
        /// Source height.
        src_h: u32,
        /// Ring format.
        to: PixelFormat,
        /// Ring width.
        dst_w: u32,
        /// Ring height.
        dst_h: u32,
    },
    /// swscale produced fewer rows than the slot holds.
    #[error("swscale wrote {rows} of {want} rows")]
    Short {
        /// Rows written.
        rows: i32,
        /// Rows expected.
        want: u32,
    },
}

/// FFmpeg's name for a ring pixel format.
pub fn av_pixel(format: PixelFormat) -> Pixel {
    match format {
        PixelFormat::Nv12 => Pixel::NV12,
        PixelFormat::I420 => Pixel::YUV420P,
        PixelFormat::Bgr24 => Pixel::BGR24,
        PixelFormat::Rgb24 => Pixel::RGB24,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    format: Pixel,
    width: u32,
    height: u32,
    space: color::Space,
    range: color::Range,
    geometry: FrameGeometry,
}

enum Plan {
    /// Same format and size: plane copy.
    Copy,
    /// swscale into the slot.
    Scale(scaling::Context),
}

/// Writes decoded frames into slots; rebuilds its swscale context when the input
/// changes (a camera switching resolution mid-stream).
pub struct Converter {
    flags: scaling::Flags,
    plan: Option<(Key, Plan)>,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plan = self
            .plan
            .as_ref()
            .map(|(k, p)| (k.format, k.width, k.height, matches!(p, Plan::Copy)));
        f.debug_struct("Converter")
            .field("plan(format,w,h,copy)", &plan)
            .finish()
    }
}

impl Default for Converter {
    fn default() -> Self {
        Converter::new()
    }
}

impl Converter {
    /// Bicubic, like the `ffmpeg` command line's automatic conversions, so a format
    /// conversion gives the same bytes as `ffmpeg -pix_fmt ...`.
    pub fn new() -> Self {
        Converter {
            flags: scaling::Flags::BICUBIC,
            plan: None,
        }
    }

    /// Whether the last conversion was a plain plane copy (no swscale).
    pub fn is_copy(&self) -> bool {
        matches!(self.plan, Some((_, Plan::Copy)))
    }

    /// Writes `src` into `dst`, laid out as `geometry` (scaled to its size if needed).
    pub fn convert(
        &mut self,
        src: &frame::Video,
        dst: &mut [u8],
        geometry: &FrameGeometry,
    ) -> Result<(), ConvertError> {
        if geometry.validate().is_err() || dst.len() < geometry.frame_size as usize {
            return Err(ConvertError::BadDestination {
                len: dst.len(),
                geometry: *geometry,
            });
        }
        let key = Key {
            format: src.format(),
            width: src.width(),
            height: src.height(),
            space: src.color_space(),
            range: src.color_range(),
            geometry: *geometry,
        };
        if key.format == Pixel::None || key.width == 0 || key.height == 0 {
            return Err(ConvertError::EmptyFrame {
                format: key.format,
                width: key.width,
                height: key.height,
            });
        }
        if self.plan.as_ref().is_none_or(|(k, _)| *k != key) {
            self.plan = Some((key, self.plan_for(&key)?));
        }
        match &mut self.plan {
            Some((_, Plan::Copy)) => {
                copy_planes(src, dst, geometry);
                Ok(())
            }
            Some((_, Plan::Scale(ctx))) => scale_into(ctx, src, dst, geometry),
            None => unreachable!("plan set above"),
        }
    }

    fn plan_for(&self, key: &Key) -> Result<Plan, ConvertError> {
        let g = &key.geometry;
        if key.format == av_pixel(g.format) && key.width == g.width && key.height == g.height {
            return Ok(Plan::Copy);
        }
        let unsupported = || ConvertError::Unsupported {
            from: key.format,
            src_w: key.width,
            src_h: key.height,
            to: g.format,
            dst_w: g.width,
            dst_h: g.height,
        };
        let mut ctx = scaling::Context::get(
            key.format,
            key.width,
            key.height,
            av_pixel(g.format),
            g.width,
            g.height,
            self.flags,
        )
        .map_err(|_| unsupported())?;
        set_colorspace(&mut ctx, key.space, key.range);
        Ok(Plan::Scale(ctx))
    }
}

/// Uses the frame's YUV matrix and range, as the `ffmpeg` CLI's scale filter does;
/// unspecified stays swscale's default (BT.601, limited range).
fn set_colorspace(ctx: &mut scaling::Context, space: color::Space, range: color::Range) {
    let sws_space = match space {
        color::Space::BT709 => ffi::SWS_CS_ITU709,
        color::Space::FCC => ffi::SWS_CS_FCC,
        color::Space::SMPTE240M => ffi::SWS_CS_SMPTE240M,
        color::Space::BT2020NCL | color::Space::BT2020CL => ffi::SWS_CS_BT2020,
        _ => ffi::SWS_CS_DEFAULT,
    };
    let full = i32::from(range == color::Range::JPEG);
    if sws_space == ffi::SWS_CS_DEFAULT && full == 0 {
        return;
    }
    // SAFETY: `ctx` is a valid SwsContext; sws_getCoefficients returns a pointer to a
    // static table that swscale copies. Brightness 0, contrast and saturation 1.0 (16.16).
    unsafe {
        let table = ffi::sws_getCoefficients(sws_space);
        ffi::sws_setColorspaceDetails(ctx.as_mut_ptr(), table, full, table, 0, 0, 1 << 16, 1 << 16);
    }
}

fn copy_planes(src: &frame::Video, dst: &mut [u8], g: &FrameGeometry) {
    for plane in 0..g.format.planes() {
        let (row_bytes, rows) = g
            .format
            .plane_extent(plane, g.width, g.height)
            .expect("plane below format.planes()");
        let (row_bytes, rows) = (row_bytes as usize, rows as usize);
        let src_plane = src.data(plane);
        let src_stride = src.stride(plane);
        let dst_stride = g.strides[plane] as usize;
        let offset = g.offsets[plane] as usize;
        for r in 0..rows {
            let s = &src_plane[r * src_stride..r * src_stride + row_bytes];
            let d = offset + r * dst_stride;
            dst[d..d + row_bytes].copy_from_slice(s);
        }
    }
}

fn scale_into(
    ctx: &mut scaling::Context,
    src: &frame::Video,
    dst: &mut [u8],
    g: &FrameGeometry,
) -> Result<(), ConvertError> {
    let mut planes = [ptr::null_mut::<u8>(); 4];
    let mut strides = [0i32; 4];
    let base = dst.as_mut_ptr();
    for p in 0..g.format.planes() {
        // In bounds: `g.validate()` passed and `dst.len() >= g.frame_size`, so every
        // plane's offset lies inside `dst`.
        planes[p] = base.wrapping_add(g.offsets[p] as usize);
        strides[p] = g.strides[p] as i32;
    }
    // SAFETY: the source pointers and line sizes come from a decoded AVFrame whose
    // format and size match the context (the plan's key). The destination planes are
    // inside `dst`, which we borrow mutably for the call: the geometry was validated
    // (each plane's `offset + stride * (rows - 1) + row_bytes <= frame_size`) and
    // `dst.len() >= frame_size`, and swscale writes exactly `rows` rows of at most
    // `row_bytes` per plane for the context's output size (the `convert` tests put
    // canary bytes after the frame to check this on every format). Nothing else
    // aliases `dst` during the call.
    let rows = unsafe {
        let f = src.as_ptr();
        ffi::sws_scale(
            ctx.as_mut_ptr(),
            (*f).data.as_ptr() as *const *const u8,
            (*f).linesize.as_ptr(),
            0,
            src.height() as i32,
            planes.as_ptr(),
            strides.as_ptr(),
        )
    };
    if rows != g.height as i32 {
        return Err(ConvertError::Short {
            rows,
            want: g.height,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A yuv420p frame with a deterministic pattern.
    fn yuv_frame(w: u32, h: u32) -> frame::Video {
        let mut f = frame::Video::new(Pixel::YUV420P, w, h);
        for plane in 0..3 {
            let stride = f.stride(plane);
            let data = f.data_mut(plane);
            for (i, b) in data.iter_mut().enumerate() {
                let (x, y) = (i % stride, i / stride);
                *b = (x * 3 + y * 7 + plane * 50) as u8;
            }
        }
        f
    }

    /// Converts into a buffer with canary bytes after the frame; the canaries must
    /// survive (swscale must not write past the geometry).
    fn convert_with_canary(src: &frame::Video, g: &FrameGeometry) -> Vec<u8> {
        const CANARY: usize = 4096;
        let mut buf = vec![0xA5u8; g.frame_size as usize + CANARY];
        let mut c = Converter::new();
        c.convert(src, &mut buf[..g.frame_size as usize], g)
            .unwrap();
        assert!(
            buf[g.frame_size as usize..].iter().all(|&b| b == 0xA5),
            "{:?} {}x{}: wrote past frame_size",
            g.format,
            g.width,
            g.height
        );
        buf.truncate(g.frame_size as usize);
        buf
    }

    #[test]
    fn swscale_never_writes_past_the_slot() {
        crate::init_ffmpeg();
        for (sw, sh) in [(960, 540), (1920, 1080), (322, 242), (66, 50)] {
            let src = yuv_frame(sw, sh);
            for format in PixelFormat::ALL {
                for (w, h) in [(sw, sh), (640, 360), (318, 182), (2, 2)] {
                    let g = FrameGeometry::packed(w, h, format).unwrap();
                    convert_with_canary(&src, &g);
                }
            }
        }
    }

    #[test]
    fn i420_at_source_size_is_an_exact_copy() {
        crate::init_ffmpeg();
        let src = yuv_frame(66, 50);
        let g = FrameGeometry::packed(66, 50, PixelFormat::I420).unwrap();
        let mut out = vec![0u8; g.frame_size as usize];
        let mut c = Converter::new();
        c.convert(&src, &mut out, &g).unwrap();
        assert!(c.is_copy());
        for plane in 0..3 {
            let (row, rows) = PixelFormat::I420.plane_extent(plane, 66, 50).unwrap();
            for r in 0..rows as usize {
                let s = &src.data(plane)[r * src.stride(plane)..][..row as usize];
                let d = &out[g.offsets[plane] as usize + r * g.strides[plane] as usize..]
                    [..row as usize];
                assert_eq!(s, d, "plane {plane} row {r}");
            }
        }
    }

    #[test]
    fn nv12_interleaves_chroma_exactly() {
        crate::init_ffmpeg();
        let src = yuv_frame(64, 48);
        let g = FrameGeometry::packed(64, 48, PixelFormat::Nv12).unwrap();
        let out = convert_with_canary(&src, &g);
        let y = &out[..64 * 48];
        for r in 0..48 {
            assert_eq!(&y[r * 64..][..64], &src.data(0)[r * src.stride(0)..][..64]);
        }
        let uv = &out[64 * 48..];
        for r in 0..24 {
            for x in 0..32 {
                assert_eq!(uv[r * 64 + 2 * x], src.data(1)[r * src.stride(1) + x]);
                assert_eq!(uv[r * 64 + 2 * x + 1], src.data(2)[r * src.stride(2) + x]);
            }
        }
    }

    #[test]
    fn grey_converts_to_grey_rgb_and_bgr() {
        crate::init_ffmpeg();
        let mut src = frame::Video::new(Pixel::YUV420P, 32, 16);
        src.data_mut(0).fill(126);
        src.data_mut(1).fill(128);
        src.data_mut(2).fill(128);
        for format in [PixelFormat::Bgr24, PixelFormat::Rgb24] {
            let g = FrameGeometry::packed(32, 16, format).unwrap();
            let out = convert_with_canary(&src, &g);
            // Limited-range Y 126 is mid grey (~128 full range).
            assert!(
                out.iter().all(|&b| (120..=136).contains(&b)),
                "{format}: {:?}",
                &out[..6]
            );
        }
    }

    #[test]
    fn rejects_short_destination_and_empty_frames() {
        crate::init_ffmpeg();
        let g = FrameGeometry::packed(64, 48, PixelFormat::Nv12).unwrap();
        let mut small = vec![0u8; 100];
        let mut c = Converter::new();
        assert!(matches!(
            c.convert(&yuv_frame(64, 48), &mut small, &g),
            Err(ConvertError::BadDestination { .. })
        ));
        let mut buf = vec![0u8; g.frame_size as usize];
        assert!(matches!(
            c.convert(&frame::Video::empty(), &mut buf, &g),
            Err(ConvertError::EmptyFrame { .. })
        ));
    }

    #[test]
    fn input_size_change_rebuilds_the_scaler() {
        crate::init_ffmpeg();
        let g = FrameGeometry::packed(64, 48, PixelFormat::Nv12).unwrap();
        let mut buf = vec![0u8; g.frame_size as usize];
        let mut c = Converter::new();
        c.convert(&yuv_frame(64, 48), &mut buf, &g).unwrap();
        c.convert(&yuv_frame(128, 96), &mut buf, &g).unwrap();
        c.convert(&yuv_frame(64, 48), &mut buf, &g).unwrap();
    }
}
