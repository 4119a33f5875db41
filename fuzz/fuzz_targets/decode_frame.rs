//! Arbitrary bytes as a byte stream from a peer: split into chunks, framed by
//! `FrameDecoder`, every frame decoded as a request and as a response. Must never panic,
//! never hold more than one frame, and anything accepted must be valid and re-encodable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_schema::framing::{self, FrameDecoder, FrameError};
use proto_schema::message::{decode_request, decode_response};

const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size, so the fuzzer also explores split points.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    for piece in stream.chunks(chunk) {
        decoder.extend(piece);
        loop {
            match decoder.next() {
                Ok(Some(frame)) => check(&frame),
                Ok(None) => break,
                Err(FrameError::ZeroLength) => continue,
                Err(FrameError::TooLarge { len, max }) => {
                    assert!(len > max);
                    return;
                }
                Err(e) => panic!("decoder can only fail with ZeroLength/TooLarge, got {e}"),
            }
        }
        // Drained: at most one partial frame is held.
        assert!(decoder.buffered() < MAX_FRAME + framing::HEADER_LEN);
    }
    let _ = decoder.finish();
    // The raw input as one payload too (the decoders see it without framing).
    check(stream);
});

fn check(payload: &[u8]) {
    if let Ok(req) = decode_request(payload) {
        req.validate().expect("accepted request is valid");
        let frame = framing::encode(&req, usize::MAX).expect("encodes");
        let again = decode_request(&frame[framing::HEADER_LEN..]).expect("re-decodes");
        assert_eq!(again, req);
    }
    if let Ok(resp) = decode_response(payload) {
        resp.validate().expect("accepted response is valid");
        let frame = framing::encode(&resp, usize::MAX).expect("encodes");
        let again = decode_response(&frame[framing::HEADER_LEN..]).expect("re-decodes");
        assert_eq!(again, resp);
    }
}
