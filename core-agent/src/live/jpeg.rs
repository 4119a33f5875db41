//! The JPEG encoder: libjpeg-turbo's TurboJPEG API (Debian's `libturbojpeg0`, through
//! the `turbojpeg-sys` bindings), SIMD on every x86-64 and ARM64 CPU.
//!
//! YUV frames are encoded straight from their 4:2:0 planes
//! (`tjCompressFromYUVPlanes`): no RGB, no chroma upsampling and re-subsampling, just
//! the DCT and the entropy coder. Packed RGB/BGR frames go through `tjCompress2` at
//! 4:2:0. This is, with [`crate::clock`] and [`crate::supervisor::child`], the crate's
//! `unsafe`: the three calls into the library, each with its SAFETY note.
//!
//! One compressor per thread (a thread-local, created on first use): the TurboJPEG
//! handle is not thread-safe, and creating one per frame would allocate libjpeg's
//! state every frame.

use std::cell::RefCell;
use std::ffi::CStr;

use turbojpeg_sys as tj;

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// `tjInitCompress` returned no handle (out of memory).
    #[error("cannot create a TurboJPEG compressor")]
    Init,
    /// The planes or the buffer are shorter than the size says, or the size is 0 or
    /// beyond what JPEG allows (65535 pixels a side).
    #[error("{width}x{height}: {reason}")]
    Size {
        /// Width asked.
        width: usize,
        /// Height asked.
        height: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The library refused the frame; its message.
    #[error("TurboJPEG: {0}")]
    Compress(String),
}

/// The pixels to encode, `width x height`.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Full-range (JFIF) YCbCr 4:2:0, three planes without padding: Y `width` bytes a
    /// row, Cb and Cr `ceil(width / 2)` bytes a row, `ceil(height / 2)` rows.
    I420 {
        /// Luma.
        y: &'a [u8],
        /// Blue-difference chroma.
        cb: &'a [u8],
        /// Red-difference chroma.
        cr: &'a [u8],
    },
    /// Packed R, G, B, `width * 3` bytes a row.
    Rgb(&'a [u8]),
    /// Packed B, G, R, `width * 3` bytes a row.
    Bgr(&'a [u8]),
}

/// An owned TurboJPEG compressor handle.
struct Compressor(tj::tjhandle);

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitCompress, is not null, and is destroyed
        // once (this value owns it and is never copied).
        unsafe { tj::tjDestroy(self.0) };
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// Encodes `src` (`width x height`) at `quality` (1..=100, clamped) into `out`
/// (replacing its content; its capacity is reused from frame to frame).
pub fn encode(
    src: Source<'_>,
    width: usize,
    height: usize,
    quality: u8,
    out: &mut Vec<u8>,
) -> Result<(), JpegError> {
    let size = |reason| JpegError::Size {
        width,
        height,
        reason,
    };
    if width == 0 || height == 0 || width > 65535 || height > 65535 {
        return Err(size("JPEG frames are 1 to 65535 pixels a side"));
    }
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    match src {
        Source::I420 { y, cb, cr } => {
            if y.len() < width * height || cb.len() < cw * ch || cr.len() < cw * ch {
                return Err(size("a plane is shorter than the frame"));
            }
        }
        Source::Rgb(px) | Source::Bgr(px) => {
            if px.len() < width * height * 3 {
                return Err(size("the buffer is shorter than the frame"));
            }
        }
    }
    // Both sides are at most 65535, so every product below fits an i32 / c_ulong.
    let (w, h) = (width as i32, height as i32);
    let quality = i32::from(quality.clamp(1, 100));
    let samp = tj::TJSAMP_TJSAMP_420 as i32;
    // SAFETY: a pure function of its arguments.
    let cap = unsafe { tj::tjBufSize(w, h, samp) } as usize;
    out.clear();
    out.reserve(cap);
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: no arguments; a null return is handled.
            let handle = unsafe { tj::tjInitCompress() };
            if handle.is_null() {
                return Err(JpegError::Init);
            }
            *slot = Some(Compressor(handle));
        }
        let handle = slot.as_ref().map_or(std::ptr::null_mut(), |c| c.0);
        let mut dst = out.as_mut_ptr();
        let mut len = out.capacity() as std::os::raw::c_ulong;
        // TJFLAG_NOREALLOC: the library writes into `out`'s spare capacity (at least
        // tjBufSize, the worst case) and fails rather than reallocate it.
        let flags = tj::TJFLAG_NOREALLOC as i32;
        let rc = match src {
            Source::I420 { y, cb, cr } => {
                let mut planes = [y.as_ptr(), cb.as_ptr(), cr.as_ptr()];
                let strides = [w, cw as i32, cw as i32];
                // SAFETY: the handle is a live compressor used by this thread only; the
                // three planes hold at least `strides[i] * rows` bytes (checked above)
                // and are only read; `dst` points to `len` writable bytes of `out`'s
                // allocation and NOREALLOC keeps the library from freeing or
                // replacing it.
                unsafe {
                    tj::tjCompressFromYUVPlanes(
                        handle,
                        planes.as_mut_ptr(),
                        w,
                        strides.as_ptr(),
                        h,
                        samp,
                        &mut dst,
                        &mut len,
                        quality,
                        flags,
                    )
                }
            }
            Source::Rgb(px) | Source::Bgr(px) => {
                let format = if matches!(src, Source::Rgb(_)) {
                    tj::TJPF_TJPF_RGB
                } else {
                    tj::TJPF_TJPF_BGR
                };
                // SAFETY: as above; `px` holds `w * 3 * h` bytes (checked above).
                unsafe {
                    tj::tjCompress2(
                        handle,
                        px.as_ptr(),
                        w,
                        w * 3,
                        h,
                        format,
                        &mut dst,
                        &mut len,
                        samp,
                        quality,
                        flags,
                    )
                }
            }
        };
        if rc != 0 {
            // SAFETY: the handle is live; the library returns a pointer to a
            // NUL-terminated message it owns, copied out before the next call.
            let msg = unsafe { CStr::from_ptr(tj::tjGetErrorStr2(handle)) };
            return Err(JpegError::Compress(msg.to_string_lossy().into_owned()));
        }
        if len as usize > out.capacity() || dst != out.as_mut_ptr() {
            return Err(JpegError::Compress(
                "the library wrote outside the buffer it was given".into(),
            ));
        }
        // SAFETY: the library wrote `len` bytes at the start of `out`'s allocation
        // (its own buffer, not replaced: checked above), within the capacity.
        unsafe { out.set_len(len as usize) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(jpeg: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut d = jpeg_decoder::Decoder::new(jpeg);
        let px = d.decode().expect("a valid JPEG");
        let info = d.info().expect("a header");
        (info.width, info.height, px)
    }

    #[test]
    fn i420_planes_encode_to_a_jpeg_of_their_colours() {
        let (w, h) = (34, 18);
        let y = vec![76u8; w * h];
        let (cb, cr) = (vec![85u8; 17 * 9], vec![255u8; 17 * 9]);
        let mut out = Vec::new();
        encode(
            Source::I420 {
                y: &y,
                cb: &cb,
                cr: &cr,
            },
            w,
            h,
            90,
            &mut out,
        )
        .unwrap();
        let (dw, dh, px) = decode(&out);
        assert_eq!((dw, dh), (34, 18));
        // Full-range Y 76, Cb 85, Cr 255 is pure red.
        let c = &px[(9 * w + 17) * 3..][..3];
        assert!(c[0] > 240 && c[1] < 20 && c[2] < 20, "{c:?}");
    }

    #[test]
    fn packed_rgb_and_bgr_keep_their_channel_order() {
        let (w, h) = (16, 16);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [0u8, 0, 250]).collect();
        let mut out = Vec::new();
        encode(Source::Rgb(&rgb), w, h, 90, &mut out).unwrap();
        let blue = decode(&out).2;
        assert!(blue[2] > 230 && blue[0] < 25, "{:?}", &blue[..3]);
        encode(Source::Bgr(&rgb), w, h, 90, &mut out).unwrap();
        let red = decode(&out).2;
        assert!(red[0] > 230 && red[2] < 25, "{:?}", &red[..3]);
    }

    #[test]
    fn short_planes_and_bad_sizes_are_refused() {
        let mut out = vec![1, 2, 3];
        let y = vec![0u8; 15];
        let c = vec![0u8; 4];
        let short = Source::I420 {
            y: &y,
            cb: &c,
            cr: &c,
        };
        assert!(matches!(
            encode(short, 4, 4, 80, &mut out),
            Err(JpegError::Size { .. })
        ));
        assert!(matches!(
            encode(Source::Rgb(&[0; 3]), 0, 1, 80, &mut out),
            Err(JpegError::Size { .. })
        ));
        assert!(matches!(
            encode(Source::Rgb(&[0; 3]), 70000, 1, 80, &mut out),
            Err(JpegError::Size { .. })
        ));
    }
}
