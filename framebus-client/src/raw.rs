//! Raw framed I/O on a blocking `std::io` stream: one frame in, one frame out, with no
//! id matching. For tests and tools that must send what a client never would (chosen
//! ids, malformed or oversized frames); everything else uses [`crate::BlockingClient`].

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use proto_schema::framing::{check_len, encode, frame_payload, FrameError, HEADER_LEN};

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

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::framing::DEFAULT_MAX_FRAME;
    use proto_schema::message::{decode_request, Request};

    #[test]
    fn round_trip_and_errors() {
        let mut wire = Vec::new();
        write_message(&mut wire, &Request::get_stats(3), DEFAULT_MAX_FRAME).unwrap();
        write_frame(&mut wire, b"[]", DEFAULT_MAX_FRAME).unwrap();
        let mut r: &[u8] = &wire;
        let p = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(decode_request(&p).unwrap(), Request::get_stats(3));
        let p = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(&p[..], b"[]");
        assert!(read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().is_none());

        let mut cut: &[u8] = &wire[..wire.len() - 1];
        read_frame(&mut cut, DEFAULT_MAX_FRAME).unwrap();
        assert!(matches!(
            read_frame(&mut cut, DEFAULT_MAX_FRAME),
            Err(FrameError::Truncated {
                expected: 6,
                received: 5
            })
        ));
        let mut big: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut big, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(big, &[1, 2, 3]);
    }
}
