//! [`Connection`]: one framed byte stream (the shape of mini-redis `connection.rs`).
//!
//! Reading buffers bytes in a sans-IO [`FrameDecoder`] and takes a frame off the front
//! once it is complete. The 4-byte length prefix is checked against the limit *before*
//! any buffer is reserved for the payload, so an announced 4 GiB frame costs nothing but
//! the error. Because partial frames stay in the decoder, [`Connection::read_frame`] is
//! cancel-safe (usable inside `tokio::select!`).
//!
//! One type serves both ends and both halves: the read methods need `S: AsyncRead`, the
//! write methods `S: AsyncWrite`, so a reader task can own a `Connection<OwnedReadHalf>`
//! while a writer owns a `Connection<OwnedWriteHalf>` ([`Connection::into_split`]).

use std::io;

use bytes::Bytes;
use proto_schema::framing::{self, FrameDecoder, FrameError, DEFAULT_MAX_FRAME};
use proto_schema::message::{decode_request, decode_response, DecodeError, Request, Response};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Bytes reserved for reading when the buffer runs low (a frame larger than this is
/// reserved in full once its prefix passed the limit check).
const READ_CHUNK: usize = 16 * 1024;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Framing failed: I/O error, zero-length or oversized prefix, or the stream ended
    /// inside a frame. After [`FrameError::TooLarge`] the stream cannot be resynchronised.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A complete frame arrived but its payload is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[source] DecodeError),
}

/// A byte stream carrying length-prefixed JSON frames (`docs/protocol.md` §2).
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    decoder: FrameDecoder,
    /// Encoded frames waiting for [`Connection::flush`].
    write_buf: Vec<u8>,
}

impl<S> Connection<S> {
    /// A connection over `stream` accepting frames of up to `max_frame` payload bytes in
    /// both directions.
    pub fn new(stream: S, max_frame: usize) -> Self {
        Connection {
            stream,
            decoder: FrameDecoder::new(max_frame),
            write_buf: Vec::with_capacity(512),
        }
    }

    /// [`Connection::new`] with [`DEFAULT_MAX_FRAME`].
    pub fn with_default_limit(stream: S) -> Self {
        Connection::new(stream, DEFAULT_MAX_FRAME)
    }

    /// The payload limit.
    pub fn max_frame(&self) -> usize {
        self.decoder.max_frame()
    }

    /// Bytes received but not yet returned as frames (non-zero: a frame has started).
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably (writing to it directly bypasses the framing).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The next complete frame already buffered, without reading: `Ok(None)` means more
    /// bytes are needed. After [`FrameError::ZeroLength`] reading can go on; after
    /// [`FrameError::TooLarge`] it cannot.
    pub fn next_buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.decoder.next()
    }

    /// At end of stream: `Ok(())` if it ended between frames, else
    /// [`FrameError::Truncated`].
    pub fn finish(&self) -> Result<(), FrameError> {
        self.decoder.finish()
    }

    /// Appends `msg` as one frame to the write buffer (sent by [`Connection::flush`]).
    /// Fails with [`FrameError::TooLarge`] without buffering anything if the payload
    /// exceeds the limit: a frame the peer would refuse is never produced.
    pub fn queue<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), FrameError> {
        framing::encode_into(msg, self.max_frame(), &mut self.write_buf)
    }

    /// Appends already encoded frames (prefix included) to the write buffer.
    pub fn queue_encoded(&mut self, frames: &[u8]) {
        self.write_buf.extend_from_slice(frames);
    }

    /// Bytes waiting in the write buffer.
    pub fn pending_write(&self) -> usize {
        self.write_buf.len()
    }
}

impl<S: AsyncRead + Unpin> Connection<S> {
    /// Reads once from the stream into the buffer; returns the bytes read (0 at end of
    /// stream). Cancel-safe.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let buf = self.decoder.buffer_mut();
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(buf).await
    }

    /// The next frame's payload. `Ok(None)` means the stream ended cleanly between
    /// frames; an end inside a frame is [`FrameError::Truncated`]. Cancel-safe: a
    /// cancelled call leaves the bytes read so far in the buffer.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.next()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
        }
    }

    /// The next response, decoded and validated ([`decode_response`]).
    pub async fn read_response(&mut self) -> Result<Option<Response>, ReadError> {
        match self.read_frame().await? {
            Some(payload) => decode_response(&payload)
                .map(Some)
                .map_err(ReadError::Decode),
            None => Ok(None),
        }
    }

    /// The next request, decoded and validated ([`decode_request`]).
    pub async fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        match self.read_frame().await? {
            Some(payload) => decode_request(&payload)
                .map(Some)
                .map_err(ReadError::Decode),
            None => Ok(None),
        }
    }
}

impl<S: AsyncWrite + Unpin> Connection<S> {
    /// Writes the write buffer out and flushes the stream. Not cancel-safe: a cancelled
    /// flush may leave part of a frame on the wire, so drop the connection after one.
    pub async fn flush(&mut self) -> io::Result<()> {
        let result = async {
            self.stream.write_all(&self.write_buf).await?;
            self.stream.flush().await
        }
        .await;
        self.write_buf.clear();
        result
    }

    /// Serialises `msg` as one frame and writes it ([`Connection::queue`], then
    /// [`Connection::flush`]; not cancel-safe).
    pub async fn write_message<T: Serialize + ?Sized>(
        &mut self,
        msg: &T,
    ) -> Result<(), FrameError> {
        self.queue(msg)?;
        self.flush().await?;
        Ok(())
    }

    /// Writes an already serialised payload as one frame (checked like a received one:
    /// empty is [`FrameError::ZeroLength`], over the limit [`FrameError::TooLarge`]).
    pub async fn write_payload(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let frame = framing::frame_payload(payload, self.max_frame())?;
        self.queue_encoded(&frame);
        self.flush().await?;
        Ok(())
    }

    /// Half-closes the write direction (the peer reads end of stream after the last
    /// frame).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

impl Connection<UnixStream> {
    /// Splits into a read half (keeping the bytes already buffered) and a write half
    /// (keeping the frames queued), for a reader task next to a writer.
    pub fn into_split(self) -> (Connection<OwnedReadHalf>, Connection<OwnedWriteHalf>) {
        let (read, write) = self.stream.into_split();
        let max = self.decoder.max_frame();
        let reader = Connection {
            stream: read,
            decoder: self.decoder,
            write_buf: Vec::new(),
        };
        let writer = Connection {
            stream: write,
            decoder: FrameDecoder::new(max),
            write_buf: self.write_buf,
        };
        (reader, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::error::ErrorCode;

    #[tokio::test]
    async fn frames_cross_in_pieces_and_end_cleanly() {
        let (a, b) = tokio::io::duplex(7); // tiny pipe: every frame arrives in pieces
        let writer = tokio::spawn(async move {
            let mut w = Connection::with_default_limit(a);
            for id in 0..20 {
                w.write_message(&Request::ping(id)).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut r = Connection::with_default_limit(b);
        for id in 0..20 {
            let req = r.read_request().await.unwrap().unwrap();
            assert_eq!(req, Request::ping(id));
        }
        assert!(r.read_frame().await.unwrap().is_none());
        writer.await.unwrap();
    }

    /// The prefix announces 4 GiB - 1: refused from the prefix alone, before any buffer
    /// for the payload is reserved (and with no payload byte ever sent).
    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut r = Connection::new(b, 1024);
        let e = r.read_frame().await.unwrap_err();
        assert!(
            matches!(e, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize),
            "{e}"
        );
        assert_eq!(e.code(), Some(ErrorCode::PayloadTooLarge));
        assert!(
            r.decoder.buffer_mut().capacity() < 1 << 20,
            "reserved {} bytes for a refused frame",
            r.decoder.buffer_mut().capacity()
        );
    }

    #[tokio::test]
    async fn end_inside_a_frame_is_truncated() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, b'{']).await.unwrap();
        drop(a);
        let mut r = Connection::new(b, 1024);
        let e = r.read_frame().await.unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Truncated {
                    expected: 14,
                    received: 5
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn oversized_message_is_never_written() {
        let (a, _b) = tokio::io::duplex(64);
        let mut w = Connection::new(a, 8);
        let e = w.write_message(&Request::ping(1)).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e}");
        assert_eq!(w.pending_write(), 0);
        let e = w.write_payload(b"").await.unwrap_err();
        assert!(matches!(e, FrameError::ZeroLength), "{e}");
    }

    #[tokio::test]
    async fn undecodable_payload_is_a_decode_error_and_the_stream_goes_on() {
        let (a, b) = tokio::io::duplex(256);
        let mut w = Connection::with_default_limit(a);
        w.write_payload(br#"{"type":"pong","v":1,"id":1,"x":0}"#)
            .await
            .unwrap();
        w.write_message(&Response::pong(2)).await.unwrap();
        let mut r = Connection::with_default_limit(b);
        match r.read_response().await {
            Err(ReadError::Decode(e)) => assert_eq!(e.code(), ErrorCode::InvalidMessage),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.read_response().await.unwrap(), Some(Response::pong(2)));
    }

    /// `read_frame` inside `select!` loses nothing when the other branch wins mid-frame.
    #[tokio::test]
    async fn read_frame_is_cancel_safe() {
        let (mut a, b) = tokio::io::duplex(256);
        let frame = framing::encode(&Request::ping(7), 1024).unwrap();
        a.write_all(&frame[..5]).await.unwrap();
        let mut r = Connection::new(b, 1024);
        tokio::select! {
            biased;
            _ = r.read_frame() => panic!("only half a frame was sent"),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!(r.buffered(), 5, "the half frame stays buffered");
        a.write_all(&frame[5..]).await.unwrap();
        assert_eq!(r.read_request().await.unwrap(), Some(Request::ping(7)));
    }
}
