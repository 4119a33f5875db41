//! Writing kept packets into an MP4 (FFmpeg's `mp4` muxer, `-c copy` semantics: the
//! packets are written as they were demuxed, never decoded or encoded).

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use proto_schema::segment::{SegmentHeader, SegmentPacket};

/// Video codecs a clip may hold (what cameras send and MP4 carries).
const CODECS: [ffmpeg::ffi::AVCodecID; 6] = [
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_H264,
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_HEVC,
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_MPEG4,
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_MJPEG,
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_VP9,
    ffmpeg::ffi::AVCodecID::AV_CODEC_ID_AV1,
];

/// Why the MP4 could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The segments name a codec a clip does not carry.
    #[error("{path}: codec id {codec_id} is not one a clip carries (H.264, HEVC, MPEG-4, MJPEG, VP9, AV1)")]
    Codec {
        /// The file.
        path: PathBuf,
        /// The FFmpeg codec id from the segment header.
        codec_id: u32,
    },
    /// The output could not be opened or its header written.
    #[error("{path}: cannot start the mp4: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// A packet could not be written (disk full, I/O error).
    #[error("{path}: write failed: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
    /// The trailer (index) could not be written.
    #[error("{path}: cannot finish the mp4: {error}")]
    Finish {
        /// The file.
        path: PathBuf,
        /// FFmpeg's error.
        error: ffmpeg::Error,
    },
}

/// An MP4 being written, one video stream.
pub struct Mp4Writer {
    path: PathBuf,
    octx: ffmpeg::format::context::Output,
    in_tb: ffmpeg::Rational,
    out_tb: ffmpeg::Rational,
}

impl std::fmt::Debug for Mp4Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Writer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Mp4Writer {
    /// Starts `path` (which the caller created with the mode it wants; FFmpeg
    /// truncates it, keeping the mode) for a stream with the codec of `header`.
    pub fn create(path: &Path, header: &SegmentHeader) -> Result<Self, MuxError> {
        init();
        let codec_id = CODECS
            .into_iter()
            .find(|c| *c as u32 == header.codec_id)
            .ok_or_else(|| MuxError::Codec {
                path: path.to_path_buf(),
                codec_id: header.codec_id,
            })?;
        let open = |error| MuxError::Open {
            path: path.to_path_buf(),
            error,
        };
        let mut octx = ffmpeg::format::output_as(path, "mp4").map_err(open)?;
        let in_tb = ffmpeg::Rational::new(header.time_base.0, header.time_base.1);
        {
            let mut st = octx.add_stream(ffmpeg::codec::Id::None).map_err(open)?;
            st.set_time_base(in_tb);
            // SAFETY: `st` is the stream just added; its codecpar is allocated by
            // avformat_new_stream and owned by the stream. Only plain fields are set,
            // and extradata gets a buffer from av_mallocz with the padding FFmpeg
            // requires, which the stream frees with its codecpar.
            unsafe {
                let p = &mut *(*st.as_mut_ptr()).codecpar;
                p.codec_type = ffmpeg::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                p.codec_id = codec_id;
                p.codec_tag = 0;
                p.width = i32::try_from(header.width).unwrap_or(0);
                p.height = i32::try_from(header.height).unwrap_or(0);
                p.format = header.pix_fmt;
                p.profile = header.profile;
                p.level = header.level;
                if !header.extradata.is_empty() {
                    let n = header.extradata.len();
                    let buf = ffmpeg::ffi::av_mallocz(
                        n + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize,
                    ) as *mut u8;
                    if buf.is_null() {
                        return Err(open(ffmpeg::Error::Other {
                            errno: libc::ENOMEM,
                        }));
                    }
                    std::ptr::copy_nonoverlapping(header.extradata.as_ptr(), buf, n);
                    p.extradata = buf;
                    p.extradata_size = n as i32;
                }
            }
        }
        octx.write_header().map_err(open)?;
        let out_tb = octx.stream(0).map_or(in_tb, |s| s.time_base());
        Ok(Mp4Writer {
            path: path.to_path_buf(),
            octx,
            in_tb,
            out_tb,
        })
    }

    /// Writes one packet with these timestamps (in the header's time base).
    pub fn write(
        &mut self,
        p: &SegmentPacket,
        pts: i64,
        dts: i64,
        duration: i64,
    ) -> Result<(), MuxError> {
        let mut pkt = ffmpeg::Packet::copy(&p.data);
        pkt.set_pts(Some(pts));
        pkt.set_dts(Some(dts));
        pkt.set_duration(duration.max(0));
        if p.key {
            pkt.set_flags(ffmpeg::packet::Flags::KEY);
        }
        pkt.set_stream(0);
        pkt.rescale_ts(self.in_tb, self.out_tb);
        pkt.write_interleaved(&mut self.octx)
            .map_err(|error| MuxError::Write {
                path: self.path.clone(),
                error,
            })
    }

    /// Writes the trailer (the `moov` index): the file is a complete MP4 after this.
    pub fn finish(mut self) -> Result<(), MuxError> {
        self.octx.write_trailer().map_err(|error| MuxError::Finish {
            path: self.path.clone(),
            error,
        })
    }
}

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg::init() {
            tracing::error!(error = %e, "FFmpeg initialisation failed");
        }
        // The muxer's own messages would go to stderr unstructured.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}
