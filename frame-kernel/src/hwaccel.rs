//! Hardware decoding (`--hwaccel`): VAAPI or CUDA (NVDEC) where FFmpeg and the machine
//! have them, the CPU otherwise.
//!
//! The decoder is given a hardware device context before it opens
//! (`AVCodecContext.hw_device_ctx`); libavcodec's default `get_format` then picks the
//! hardware surface format, and falls back to software decoding by itself when the
//! hardware cannot take the stream. Frames on a hardware surface are copied to system
//! memory (`av_hwframe_transfer_data`, see [`transfer`]) and go through the same
//! conversion into the ring slot as software frames.
//!
//! When the device cannot be created (no `/dev/dri`, no CUDA driver, an FFmpeg built
//! without it) or the decoder has no such hardware configuration, [`HwDevice::open`]
//! says why and the kernel decodes on the CPU, logging the reason once.
//!
//! All of the kernel's hardware-related `unsafe` is in this module.

use std::ffi::CStr;
use std::fmt;
use std::ptr;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

/// `--hwaccel`: what the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HwAccel {
    /// CPU decoding (the default).
    #[default]
    None,
    /// The first of CUDA, VAAPI that works, else the CPU.
    Auto,
    /// VAAPI (Intel/AMD, `/dev/dri/renderD*`), else the CPU.
    Vaapi,
    /// CUDA / NVDEC, else the CPU.
    Cuda,
}

impl HwAccel {
    /// Parses `none|auto|vaapi|cuda` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(HwAccel::None),
            "auto" => Some(HwAccel::Auto),
            "vaapi" => Some(HwAccel::Vaapi),
            "cuda" => Some(HwAccel::Cuda),
            _ => None,
        }
    }

    /// Name in logs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            HwAccel::None => "none",
            HwAccel::Auto => "auto",
            HwAccel::Vaapi => "vaapi",
            HwAccel::Cuda => "cuda",
        }
    }

    /// The device types to try, in order.
    pub fn candidates(self) -> &'static [HwKind] {
        match self {
            HwAccel::None => &[],
            HwAccel::Auto => &[HwKind::Cuda, HwKind::Vaapi],
            HwAccel::Vaapi => &[HwKind::Vaapi],
            HwAccel::Cuda => &[HwKind::Cuda],
        }
    }
}

/// One hardware device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    /// VAAPI.
    Vaapi,
    /// CUDA (NVDEC).
    Cuda,
}

impl HwKind {
    fn av_type(self) -> ffi::AVHWDeviceType {
        match self {
            HwKind::Vaapi => ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
            HwKind::Cuda => ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
        }
    }

    /// Name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HwKind::Vaapi => "vaapi",
            HwKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for HwKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why no hardware device is used (the kernel then decodes on the CPU).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    /// The decoder of this codec has no device-context configuration for this type.
    #[error("{kind}: the {codec:?} decoder has no {kind} hardware configuration in this FFmpeg")]
    NotSupported {
        /// Device type.
        kind: HwKind,
        /// Codec.
        codec: ffmpeg::codec::Id,
    },
    /// No decoder at all for the codec (the software open will report it).
    #[error("no decoder for {codec:?}")]
    NoDecoder {
        /// Codec.
        codec: ffmpeg::codec::Id,
    },
    /// `av_hwdevice_ctx_create` failed: no device, no driver.
    #[error("{kind}: cannot create the device: {error}")]
    Device {
        /// Device type.
        kind: HwKind,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// Every candidate failed; one reason each.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<HwError>),
}

/// An open hardware device context (a reference; released on drop).
pub struct HwDevice {
    kind: HwKind,
    buf: *mut ffi::AVBufferRef,
}

// SAFETY: an AVBufferRef to a device context may be used from any thread; the kernel
// only moves it between threads, never shares it.
unsafe impl Send for HwDevice {}

impl fmt::Debug for HwDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HwDevice")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for HwDevice {
    fn drop(&mut self) {
        // SAFETY: `buf` is the reference created in `create_one` and owned by `self`;
        // av_buffer_unref releases it and nulls the pointer.
        unsafe { ffi::av_buffer_unref(&mut self.buf) };
    }
}

impl HwDevice {
    /// Opens the first device of `accel`'s candidates that the `codec` decoder can use.
    /// `Ok(None)` for `--hwaccel none`.
    pub fn open(accel: HwAccel, codec: ffmpeg::codec::Id) -> Result<Option<HwDevice>, HwError> {
        let mut errors = Vec::new();
        for &kind in accel.candidates() {
            match Self::open_one(kind, codec) {
                Ok(d) => return Ok(Some(d)),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(None),
            1 => Err(errors.remove(0)),
            _ => Err(HwError::AllFailed(errors)),
        }
    }

    fn open_one(kind: HwKind, codec: ffmpeg::codec::Id) -> Result<HwDevice, HwError> {
        let decoder = ffmpeg::decoder::find(codec).ok_or(HwError::NoDecoder { codec })?;
        if !decoder_supports(&decoder, kind) {
            return Err(HwError::NotSupported { kind, codec });
        }
        let mut buf: *mut ffi::AVBufferRef = ptr::null_mut();
        // SAFETY: `buf` is a valid out-pointer; a null device string and options ask
        // for the default device. On failure nothing is stored.
        let rc = unsafe {
            ffi::av_hwdevice_ctx_create(&mut buf, kind.av_type(), ptr::null(), ptr::null_mut(), 0)
        };
        if rc < 0 || buf.is_null() {
            return Err(HwError::Device {
                kind,
                error: ffmpeg::Error::from(rc.min(-1)),
            });
        }
        Ok(HwDevice { kind, buf })
    }

    /// The device type.
    pub fn kind(&self) -> HwKind {
        self.kind
    }

    /// Gives a not yet opened codec context a reference to this device.
    pub fn attach(&self, ctx: &mut ffmpeg::codec::context::Context) {
        // SAFETY: `ctx` is a valid, not yet opened codec context (the only state in
        // which `hw_device_ctx` may be set); it takes ownership of the new reference
        // and releases it when freed. A previous reference, if any, is released first.
        unsafe {
            let raw = ctx.as_mut_ptr();
            if !(*raw).hw_device_ctx.is_null() {
                ffi::av_buffer_unref(&mut (*raw).hw_device_ctx);
            }
            (*raw).hw_device_ctx = ffi::av_buffer_ref(self.buf);
        }
    }
}

/// Whether `decoder` can decode onto `kind` surfaces through a device context.
fn decoder_supports(decoder: &ffmpeg::Codec, kind: HwKind) -> bool {
    for i in 0.. {
        // SAFETY: `decoder` wraps a valid static AVCodec; avcodec_get_hw_config
        // returns null past the last configuration and static data otherwise.
        let config = unsafe { ffi::avcodec_get_hw_config(decoder.as_ptr(), i) };
        if config.is_null() {
            return false;
        }
        // SAFETY: non-null, points to libavcodec's static configuration table.
        let config = unsafe { &*config };
        if config.device_type == kind.av_type()
            && config.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0
        {
            return true;
        }
    }
    false
}

/// Whether `frame` lies on a hardware surface (it then has a frames context).
pub fn is_hw_frame(frame: &ffmpeg::frame::Video) -> bool {
    // SAFETY: `frame` wraps a valid AVFrame; reading a pointer field only.
    unsafe { !(*frame.as_ptr()).hw_frames_ctx.is_null() }
}

/// Copies a hardware `frame` into system memory `dst` (its software format, usually
/// NV12), with its timestamps and other properties, so it goes through the normal
/// conversion path.
pub fn transfer(
    frame: &ffmpeg::frame::Video,
    dst: &mut ffmpeg::frame::Video,
) -> Result<(), ffmpeg::Error> {
    // SAFETY: both frames are valid AVFrames owned by the caller; `dst` is unreferenced
    // first so the transfer allocates fresh buffers in the source's software format.
    unsafe {
        ffi::av_frame_unref(dst.as_mut_ptr());
        let rc = ffi::av_hwframe_transfer_data(dst.as_mut_ptr(), frame.as_ptr(), 0);
        if rc < 0 {
            return Err(ffmpeg::Error::from(rc));
        }
        let rc = ffi::av_frame_copy_props(dst.as_mut_ptr(), frame.as_ptr());
        if rc < 0 {
            return Err(ffmpeg::Error::from(rc));
        }
    }
    Ok(())
}

/// The name FFmpeg gives a device type (for tests and logs).
pub fn ffmpeg_name(kind: HwKind) -> String {
    // SAFETY: av_hwdevice_get_type_name returns a static string or null.
    let p = unsafe { ffi::av_hwdevice_get_type_name(kind.av_type()) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated static string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_candidates() {
        assert_eq!(HwAccel::parse("VAAPI"), Some(HwAccel::Vaapi));
        assert_eq!(HwAccel::parse("nvdec"), None);
        assert!(HwAccel::None.candidates().is_empty());
        assert_eq!(HwAccel::Auto.candidates(), [HwKind::Cuda, HwKind::Vaapi]);
        assert_eq!(ffmpeg_name(HwKind::Vaapi), "vaapi");
        assert_eq!(ffmpeg_name(HwKind::Cuda), "cuda");
    }

    #[test]
    fn none_opens_nothing_and_a_missing_device_is_a_reason_not_a_panic() {
        crate::init_ffmpeg();
        let h264 = ffmpeg::codec::Id::H264;
        assert!(HwDevice::open(HwAccel::None, h264).unwrap().is_none());
        // On a machine with the hardware this opens; on CI (no /dev/dri, no CUDA
        // driver) it must fail with a reason per candidate.
        match HwDevice::open(HwAccel::Auto, h264) {
            Ok(Some(d)) => assert!(HwAccel::Auto.candidates().contains(&d.kind())),
            Ok(None) => panic!("auto has candidates"),
            Err(HwError::AllFailed(v)) => assert_eq!(v.len(), 2, "{v:?}"),
            Err(e) => panic!("auto tries two devices: {e}"),
        }
    }
}
