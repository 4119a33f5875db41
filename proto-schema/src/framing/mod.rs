//! Framing: each message is a 4-byte big-endian payload length followed by that many bytes
//! of UTF-8 JSON.
//!
//! The length is checked against the receiver's limit *before* any payload byte is read or
//! any buffer is allocated for it (check, then parse). This module is sans-IO: the
//! incremental [`FrameDecoder`] (feed bytes, take frames) and the encoders; the one framed
//! connection type over tokio is `framebus_client::Connection`, which drives a
//! [`FrameDecoder`]; blocking std::io clients use `framebus_client::BlockingClient`, and
//! tests that send raw frames `framebus_client::raw`. The payload is then decoded with
//! [`decode_request`](crate::message::decode_request) /
//! [`decode_response`](crate::message::decode_response).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;

use crate::error::{ErrorBody, ErrorCode};

/// Default limit on a frame's payload, in bytes (1 MiB). The largest normal message, a
/// response with a few hundred detections, is well under 100 KiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or, when encoding, the serialised message) exceeds the limit. On
    /// reads no payload byte has been consumed, so the stream is out of sync: answer
    /// `payload_too_large` and close the connection. A [`FrameDecoder`] keeps returning
    /// this error.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced (or serialised) payload length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A length prefix of 0. The 4 prefix bytes are consumed, so the stream stays in sync;
    /// answer `malformed_frame` and go on reading.
    #[error("zero-length frame")]
    ZeroLength,
    /// The stream ended inside a frame (inside the prefix or the payload).
    #[error("stream ended inside a frame: got {received} of {expected} bytes")]
    Truncated {
        /// Bytes this frame needed: 4 while the prefix is incomplete, else 4 + payload length.
        expected: usize,
        /// Bytes of this frame that arrived.
        received: usize,
    },
    /// The underlying reader or writer failed.
    #[error("frame I/O failed: {0}")]
    Io(#[from] io::Error),
    /// Serialising a message to JSON failed (only when encoding; e.g. a map with non-string
    /// keys). Received payloads are decoded by [`crate::message`], not here.
    #[error("serialising the message to JSON failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl FrameError {
    /// The wire code to answer the peer with, when there is one to tell: `TooLarge` is
    /// `payload_too_large`, `ZeroLength` is `malformed_frame`; I/O and truncation leave no
    /// peer to answer.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::TooLarge { .. } => Some(ErrorCode::PayloadTooLarge),
            FrameError::ZeroLength => Some(ErrorCode::MalformedFrame),
            FrameError::Truncated { .. } | FrameError::Io(_) | FrameError::Json(_) => None,
        }
    }

    /// [`FrameError::code`] with this error's text as the message.
    pub fn to_error_body(&self) -> Option<ErrorBody> {
        self.code()
            .map(|code| ErrorBody::new(code, self.to_string()))
    }
}

/// Checks a received length prefix against the limit; returns the payload length.
/// Checks a length prefix against `max_frame`: the payload length, or why the frame is
/// refused (before any payload byte is read).
pub fn check_len(prefix: [u8; HEADER_LEN], max_frame: usize) -> Result<usize, FrameError> {
    // u32 always fits usize on the 32/64-bit targets this runs on.
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        Err(FrameError::ZeroLength)
    } else if len > max_frame {
        Err(FrameError::TooLarge {
            len,
            max: max_frame,
        })
    } else {
        Ok(len)
    }
}

/// The largest payload a frame can carry under `max_frame` (the prefix is 32 bits).
fn effective_max(max_frame: usize) -> usize {
    max_frame.min(u32::MAX as usize)
}

/// Serialises `msg` as JSON into one frame (prefix + payload).
///
/// Fails with [`FrameError::TooLarge`] if the payload exceeds `max_frame`: a frame the peer
/// would reject is never produced.
pub fn encode<T: Serialize + ?Sized>(msg: &T, max_frame: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(512);
    encode_into(msg, max_frame, &mut out)?;
    Ok(out)
}

/// Appends one frame holding `msg` to `out` (which is left unchanged on error).
pub fn encode_into<T: Serialize + ?Sized>(
    msg: &T,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let result = serde_json::to_writer(&mut *out, msg)
        .map_err(FrameError::from)
        .and_then(|()| finish_prefix(&mut out[start..], max_frame));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Writes the prefix of `frame` (prefix placeholder + payload) after checking the limit.
fn finish_prefix(frame: &mut [u8], max_frame: usize) -> Result<(), FrameError> {
    let len = frame.len() - HEADER_LEN;
    if len > effective_max(max_frame) {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Prefixes an already serialised payload, checking it like a received frame would be.
pub fn frame_payload(payload: &[u8], max_frame: usize) -> Result<Vec<u8>, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::ZeroLength);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(payload);
    finish_prefix(&mut out, max_frame)?;
    Ok(out)
}

/// Takes one complete frame's payload off the front of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = match check_len(*prefix, max_frame) {
        Ok(len) => len,
        Err(e @ FrameError::ZeroLength) => {
            buf.advance(HEADER_LEN);
            return Err(e);
        }
        // TooLarge: leave the prefix in place, the stream cannot be resynchronised.
        Err(e) => return Err(e),
    };
    let frame_len = HEADER_LEN + len;
    if buf.len() < frame_len {
        // Allocate only now that the length passed the check.
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The error for a stream that ended with `buf` holding part of a frame, if it does.
fn check_clean_end(buf: &[u8]) -> Result<(), FrameError> {
    if buf.is_empty() {
        return Ok(());
    }
    let expected = match buf.first_chunk::<HEADER_LEN>() {
        Some(prefix) => HEADER_LEN + u32::from_be_bytes(*prefix) as usize,
        None => HEADER_LEN,
    };
    Err(FrameError::Truncated {
        expected,
        received: buf.len(),
    })
}

/// Incremental frame reader: [`extend`](FrameDecoder::extend) it with whatever bytes
/// arrived, then call [`next`](FrameDecoder::next) until it returns `Ok(None)` ("need more
/// bytes"). A partial frame is never an error; at end of stream,
/// [`finish`](FrameDecoder::finish) tells a clean end from a truncated frame.
///
/// Memory is bounded: a frame's buffer is reserved only after its length passed the
/// limit, so the decoder holds at most one frame plus the bytes fed since.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads of up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// The payload limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (e.g. with `AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete payload: `Ok(None)` means more bytes are needed.
    ///
    /// After [`FrameError::ZeroLength`] decoding can go on. After
    /// [`FrameError::TooLarge`] the stream is unusable and every call returns it again.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        take_frame(&mut self.buf, self.max_frame)
    }

    /// Call at end of stream: `Ok(())` if it ended between frames, else
    /// [`FrameError::Truncated`].
    pub fn finish(&self) -> Result<(), FrameError> {
        check_clean_end(&self.buf)
    }
}

#[cfg(test)]
mod tests;
