use super::*;
use crate::message::Request;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn encode_layout_is_be_length_then_json() {
    let bytes = encode(&Request::ping(1), DEFAULT_MAX_FRAME).unwrap();
    let json = br#"{"type":"ping","v":1,"id":1}"#;
    assert_eq!(&bytes[..4], &[0, 0, 0, json.len() as u8]);
    assert_eq!(&bytes[4..], json);
}

#[test]
fn encode_refuses_frames_over_the_limit_and_leaves_buffer_intact() {
    let mut out = b"keep".to_vec();
    let e = encode_into(&"x".repeat(100), 50, &mut out).unwrap_err();
    assert!(
        matches!(e, FrameError::TooLarge { len: 102, max: 50 }),
        "{e}"
    );
    assert_eq!(out, b"keep");
    assert!(matches!(
        frame_payload(b"", 10),
        Err(FrameError::ZeroLength)
    ));
}

#[test]
fn decoder_waits_for_partial_frames() {
    let bytes = [frame(b"{\"a\":1}"), frame(b"[2]")].concat();
    let mut d = FrameDecoder::new(64);
    for (i, b) in bytes.iter().enumerate() {
        d.extend(std::slice::from_ref(b));
        let got = d.next().unwrap();
        match i {
            10 => assert_eq!(got.as_deref(), Some(&b"{\"a\":1}"[..])),
            17 => assert_eq!(got.as_deref(), Some(&b"[2]"[..])),
            _ => assert_eq!(got, None, "byte {i}"),
        }
    }
    d.finish().unwrap();
}

#[test]
fn decoder_zero_length_is_an_error_but_stays_in_sync() {
    let mut d = FrameDecoder::new(64);
    d.extend(&[0, 0, 0, 0]);
    d.extend(&frame(b"{}"));
    assert!(matches!(d.next(), Err(FrameError::ZeroLength)));
    assert_eq!(d.next().unwrap().as_deref(), Some(&b"{}"[..]));
}

#[test]
fn decoder_too_large_reserves_nothing_and_stays_failed() {
    let mut d = FrameDecoder::new(1024);
    d.extend(&u32::MAX.to_be_bytes());
    for _ in 0..2 {
        match d.next() {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (u32::MAX as usize, 1024));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(d.buffer_mut().capacity() < 1024);
    assert_eq!(
        d.next().unwrap_err().code(),
        Some(crate::error::ErrorCode::PayloadTooLarge)
    );
}

#[test]
fn decoder_finish_reports_truncation() {
    let mut d = FrameDecoder::new(64);
    d.extend(&[0, 0]);
    assert!(matches!(
        d.finish(),
        Err(FrameError::Truncated {
            expected: 4,
            received: 2
        })
    ));
    d.extend(&[0, 10, b'{']);
    assert_eq!(d.next().unwrap(), None);
    assert!(matches!(
        d.finish(),
        Err(FrameError::Truncated {
            expected: 14,
            received: 5
        })
    ));
}
