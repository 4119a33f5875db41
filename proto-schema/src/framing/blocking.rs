//! Blocking (std::io) twins of the async frame helpers, for threads and simple clients.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{check_len, encode, frame_payload, FrameError, HEADER_LEN};

/// Reads one frame's payload. `Ok(None)` means the stream ended cleanly between frames;
/// an end inside a frame is [`FrameError::Truncated`]. The prefix is checked before the
/// payload buffer is allocated.
pub fn read_frame<R: Read + ?Sized>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut prefix)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            received: got,
        });
    }
    let len = check_len(prefix, max_frame)?;
    let mut payload = BytesMut::zeroed(len);
    let filled = read_full(reader, &mut payload)?;
    if filled < len {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN + len,
            received: HEADER_LEN + filled,
        });
    }
    Ok(Some(payload.freeze()))
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Serialises `msg` and writes it as one frame, then flushes.
pub fn write_message<W, T>(writer: &mut W, msg: &T, max_frame: usize) -> Result<(), FrameError>
where
    W: Write + ?Sized,
    T: Serialize + ?Sized,
{
    let frame = encode(msg, max_frame)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Writes an already serialised payload as one frame, then flushes.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    payload: &[u8],
    max_frame: usize,
) -> Result<(), FrameError> {
    let frame = frame_payload(payload, max_frame)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}
