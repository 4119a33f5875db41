//! The video decoder: libavcodec with a configurable thread count, optional frame
//! skipping ([`crate::skip`]) and an optional hardware device ([`crate::hwaccel`]).

use ffmpeg::{codec, decoder, frame, threading, Packet};
use ffmpeg_next as ffmpeg;

use crate::hwaccel::{self, HwDevice, HwKind};
use crate::skip::{LoopFilter, SkipMode};

/// Why a decoder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stream's parameters could not be turned into a codec context.
    #[error("decoder for {codec:?}: bad stream parameters: {error}")]
    Parameters {
        /// Codec id of the stream.
        codec: codec::Id,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// No decoder for this codec, or it failed to open.
    #[error("decoder for {codec:?}: {error}")]
    Open {
        /// Codec id of the stream.
        codec: codec::Id,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
}

impl CodecError {
    /// Whether retrying cannot help: no decoder for this codec in this build
    /// (unsupported codec) for any source; any decoder failure for a file, whose stream
    /// parameters will be the same next time.
    pub fn is_permanent(&self, is_file: bool) -> bool {
        match self {
            CodecError::Open {
                error: ffmpeg::Error::DecoderNotFound,
                ..
            } => true,
            CodecError::Open { .. } | CodecError::Parameters { .. } => is_file,
        }
    }
}

/// One decoded frame's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A frame is in [`VideoDecoder::frame`].
    Frame,
    /// The decoder needs more input.
    NeedInput,
    /// The decoder is fully drained after [`VideoDecoder::send_eof`].
    Drained,
}

/// A video decoder and its reusable output frames.
pub struct VideoDecoder {
    decoder: decoder::Video,
    frame: frame::Video,
    /// A hardware frame copied to system memory (see [`hwaccel::transfer`]).
    sw_frame: frame::Video,
    /// Whether the last frame came from a hardware surface (then [`Self::frame`] is
    /// `sw_frame`).
    from_hw: bool,
    /// The hardware device the decoder was opened with, if any.
    hw: Option<HwKind>,
    skip: SkipMode,
}

impl std::fmt::Debug for VideoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoDecoder")
            .field("codec", &self.decoder.id())
            .field("size", &(self.decoder.width(), self.decoder.height()))
            .finish_non_exhaustive()
    }
}

impl VideoDecoder {
    /// Opens a decoder for `stream` with `threads` threads (0 = one per core, chosen by
    /// libavcodec; 1 = no threading, the lowest latency), on the hardware device `hw`
    /// when given (libavcodec falls back to software decoding by itself when the device
    /// cannot take the stream).
    pub fn new(
        stream: &ffmpeg::Stream<'_>,
        threads: u32,
        hw: Option<&HwDevice>,
    ) -> Result<Self, CodecError> {
        let params = stream.parameters();
        let codec = params.id();
        let mut ctx = codec::context::Context::from_parameters(params)
            .map_err(|error| CodecError::Parameters { codec, error })?;
        ctx.set_threading(if threads == 1 {
            threading::Config {
                kind: threading::Type::None,
                count: 1,
                ..Default::default()
            }
        } else {
            threading::Config {
                kind: threading::Type::Frame,
                count: threads as usize,
                ..Default::default()
            }
        });
        // Timestamps in the stream's time base, so `frame.timestamp()` is comparable.
        ctx.set_time_base(stream.time_base());
        if let Some(device) = hw {
            device.attach(&mut ctx);
        }
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|error| CodecError::Open { codec, error })?;
        Ok(VideoDecoder {
            decoder,
            frame: frame::Video::empty(),
            sw_frame: frame::Video::empty(),
            from_hw: false,
            hw: hw.map(HwDevice::kind),
            skip: SkipMode::None,
        })
    }

    /// Which frames the decoder leaves out from the next packet on (libavcodec reads
    /// `skip_frame` per packet, so this may change while decoding).
    pub fn set_skip(&mut self, mode: SkipMode) {
        self.skip = mode;
        self.decoder.skip_frame(mode.discard());
    }

    /// The skip mode in force.
    pub fn skip(&self) -> SkipMode {
        self.skip
    }

    /// Whether the in-loop deblocking filter runs (see [`LoopFilter`]).
    pub fn set_loop_filter(&mut self, filter: LoopFilter) {
        self.decoder.skip_loop_filter(filter.discard());
    }

    /// The hardware device the decoder was opened with.
    pub fn hw(&self) -> Option<HwKind> {
        self.hw
    }

    /// Feeds one packet. An error means this packet could not be decoded (corrupt data);
    /// the decoder stays usable.
    pub fn send(&mut self, packet: &Packet) -> Result<(), ffmpeg::Error> {
        self.decoder.send_packet(packet)
    }

    /// Signals the end of input; the remaining frames come out of [`Self::receive`].
    pub fn send_eof(&mut self) -> Result<(), ffmpeg::Error> {
        self.decoder.send_eof()
    }

    /// Takes the next decoded frame, if any, into [`Self::frame`]. A frame on a
    /// hardware surface is copied to system memory first; a failed copy is an error for
    /// this frame only.
    pub fn receive(&mut self) -> Result<Received, ffmpeg::Error> {
        self.from_hw = false;
        match self.decoder.receive_frame(&mut self.frame) {
            Ok(()) if hwaccel::is_hw_frame(&self.frame) => {
                hwaccel::transfer(&self.frame, &mut self.sw_frame)?;
                self.from_hw = true;
                Ok(Received::Frame)
            }
            Ok(()) => Ok(Received::Frame),
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => Ok(Received::NeedInput),
            Err(ffmpeg::Error::Eof) => Ok(Received::Drained),
            Err(e) => Err(e),
        }
    }

    /// Coded frame size as known from the stream parameters (0 if unknown).
    pub fn size(&self) -> (u32, u32) {
        (self.decoder.width(), self.decoder.height())
    }

    /// The codec.
    pub fn codec(&self) -> codec::Id {
        self.decoder.id()
    }

    /// The last frame received, in system memory.
    pub fn frame(&self) -> &frame::Video {
        if self.from_hw {
            &self.sw_frame
        } else {
            &self.frame
        }
    }

    /// Whether libavcodec flagged the last frame as corrupt or reported decode errors in
    /// it (it was output with errors concealed).
    pub fn frame_is_corrupt(&self) -> bool {
        // The flags are on the decoded frame (copied with the properties for a
        // hardware frame, but read at the source either way).
        self.frame.is_corrupt() || self.frame.has_decode_errors()
    }
}
