//! Every kind of bad input gets its typed error, and the server goes on serving: each test
//! ends by checking that a good inference request on a fresh connection still succeeds.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{decode_frame, error_code, Env, Ring, Server};
use proto_schema::error::ErrorCode;
use proto_schema::message::{InferenceRequest, Request, Response};
use proto_schema::pixel::PixelFormat;

/// A YOLOX server (the faster model) with one ring holding frame 100 as NV12.
struct Fixture {
    server: Server,
    ring: Ring,
}

impl Fixture {
    fn new(extra: &[&str]) -> Option<Fixture> {
        let env = Env::get()?;
        let server = Server::start(&env, &env.model("yolox_nano"), extra);
        let ring = Ring::with_frame(
            &server.rings,
            "cam1",
            PixelFormat::Nv12,
            &decode_frame(&env, 100, "nv12"),
        );
        Some(Fixture { server, ring })
    }

    fn good(&self) -> InferenceRequest {
        self.ring.request(1, &self.server.model_id)
    }

    fn assert_alive(&self) {
        self.server.assert_alive(Some(&self.good()));
    }

    /// Sends a modified request and returns the error code of the answer: an
    /// `infer_result` with an error, or an `error` when the request did not even decode.
    fn infer_code(&self, edit: impl FnOnce(&mut InferenceRequest)) -> Option<ErrorCode> {
        let mut req = self.good();
        edit(&mut req);
        let resp = self.server.client().call(&Request::Infer(req.clone()));
        assert_eq!(resp.id(), Some(req.id));
        assert!(matches!(
            resp,
            Response::InferResult(_) | Response::Error { .. }
        ));
        error_code(&resp)
    }

    /// Sends raw JSON as one frame and returns the response.
    fn raw(&self, json: &str) -> Response {
        let mut c = self.server.client();
        c.send_json(json);
        c.recv().expect("an answer")
    }
}

fn infer_json(f: &Fixture) -> serde_json::Value {
    serde_json::to_value(Request::Infer(f.good())).unwrap()
}

#[test]
fn oversized_length_prefix_is_refused_before_reading() {
    let Some(f) = Fixture::new(&[]) else { return };
    let mut c = f.server.client();
    c.send_raw(&u32::MAX.to_be_bytes());
    let r = c.recv().expect("answer");
    assert_eq!(error_code(&r), Some(ErrorCode::PayloadTooLarge));
    assert!(c.closed_within(Duration::from_secs(5)));
    // Just above the limit too.
    let mut c = f.server.client();
    c.send_raw(&((common::MAX_FRAME + 1) as u32).to_be_bytes());
    assert_eq!(
        error_code(&c.recv().unwrap()),
        Some(ErrorCode::PayloadTooLarge)
    );
    f.assert_alive();
}

#[test]
fn zero_length_and_non_utf8_and_non_json_keep_the_connection() {
    let Some(f) = Fixture::new(&[]) else { return };
    let mut c = f.server.client();
    c.send_raw(&[0, 0, 0, 0]);
    assert_eq!(
        error_code(&c.recv().unwrap()),
        Some(ErrorCode::MalformedFrame)
    );
    let bad_utf8 = [0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc];
    c.send_raw(&bad_utf8);
    assert_eq!(
        error_code(&c.recv().unwrap()),
        Some(ErrorCode::MalformedFrame)
    );
    c.send_json("{\"type\": \"ping\", \"v\": 1, ");
    assert_eq!(
        error_code(&c.recv().unwrap()),
        Some(ErrorCode::MalformedFrame)
    );
    c.send_json("[1, 2, 3]");
    assert_eq!(
        error_code(&c.recv().unwrap()),
        Some(ErrorCode::InvalidMessage)
    );
    // The same connection is still in sync.
    assert!(matches!(
        c.call(&Request::ping(5)),
        Response::Pong { id: 5, .. }
    ));
    let r = c.infer(&f.good());
    assert!(r.error.is_none());
    f.assert_alive();
}

#[test]
fn truncated_frame_then_half_close_gets_an_answer() {
    let Some(f) = Fixture::new(&[]) else { return };
    let mut c = f.server.client();
    c.send_raw(&100u32.to_be_bytes());
    c.send_raw(&[b'{'; 50]);
    c.stream.shutdown(Shutdown::Write).unwrap();
    let r = c.recv().expect("answer");
    assert_eq!(error_code(&r), Some(ErrorCode::MalformedFrame));
    assert!(c.recv().is_none(), "closed after the answer");
    f.assert_alive();
}

#[test]
fn unknown_type_wrong_version_missing_fields() {
    let Some(f) = Fixture::new(&[]) else { return };
    let r = f.raw(r#"{"type":"dance","v":1,"id":5}"#);
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownMessageType));
    assert_eq!(r.id(), Some(5));
    let r = f.raw(r#"{"type":"ping","v":99,"id":6}"#);
    assert_eq!(error_code(&r), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(r.id(), Some(6));
    let mut missing = infer_json(&f);
    missing.as_object_mut().unwrap().remove("frame");
    let r = f.raw(&missing.to_string());
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidMessage));
    assert_eq!(r.id(), Some(1));
    assert!(r.error_body().unwrap().message.contains("frame"), "{r:?}");
    let mut wrong_type = infer_json(&f);
    wrong_type["frame"]["slot"] = serde_json::json!("zero");
    let r = f.raw(&wrong_type.to_string());
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidMessage));
    let mut extra = infer_json(&f);
    extra["surprise"] = serde_json::json!(true);
    assert_eq!(
        error_code(&f.raw(&extra.to_string())),
        Some(ErrorCode::InvalidMessage)
    );
    f.assert_alive();
}

#[test]
fn ring_names_cannot_escape_the_ring_dir() {
    let Some(f) = Fixture::new(&[]) else { return };
    for name in [
        "../../etc/passwd",
        "..",
        "/etc/passwd",
        "cam1/../cam1",
        ".hidden",
        "",
    ] {
        let code = f.infer_code(|r| r.frame.ring = name.to_owned());
        assert_eq!(code, Some(ErrorCode::InvalidMessage), "ring name {name:?}");
    }
    // A symlink named like a ring, pointing at a real ring: refused (O_NOFOLLOW).
    std::os::unix::fs::symlink(f.ring.writer.path(), f.server.rings.join("link.ring")).unwrap();
    assert_eq!(
        f.infer_code(|r| r.frame.ring = "link".into()),
        Some(ErrorCode::UnknownRing)
    );
    // A regular file that is not a ring.
    std::fs::write(f.server.rings.join("junk.ring"), vec![7u8; 100_000]).unwrap();
    assert_eq!(
        f.infer_code(|r| r.frame.ring = "junk".into()),
        Some(ErrorCode::UnknownRing)
    );
    f.assert_alive();
}

#[test]
fn unknown_ring_and_wrong_model() {
    let Some(f) = Fixture::new(&[]) else { return };
    assert_eq!(
        f.infer_code(|r| r.frame.ring = "nosuch".into()),
        Some(ErrorCode::UnknownRing)
    );
    assert_eq!(
        f.infer_code(|r| r.model_id = "other-model".into()),
        Some(ErrorCode::ModelUnavailable)
    );
    f.assert_alive();
}

#[test]
fn wrong_generation_stale_seq_and_bad_slot() {
    let Some(mut f) = Fixture::new(&[]) else {
        return;
    };
    assert_eq!(
        f.infer_code(|r| r.frame.generation += 1),
        Some(ErrorCode::StaleFrame)
    );
    assert_eq!(
        f.infer_code(|r| r.frame.slot = 1000),
        Some(ErrorCode::InvalidMessage)
    );
    assert_eq!(
        f.infer_code(|r| r.frame.seq += 1),
        Some(ErrorCode::InvalidMessage)
    );
    // Overwrite every slot: the old reference is now stale.
    let old = f.good();
    let frame = f.ring.writer.geometry().frame_size as usize;
    for _ in 0..f.ring.writer.slots() {
        f.ring.publish(&vec![128u8; frame]);
    }
    let resp = f.server.client().infer(&old);
    assert_eq!(resp.error.map(|e| e.code), Some(ErrorCode::StaleFrame));
    // A slot that was never written.
    let mut fresh = Ring::with_frame(
        &f.server.rings,
        "cam2",
        PixelFormat::Nv12,
        &vec![128u8; frame],
    );
    let mut req = fresh.request(3, &f.server.model_id);
    req.frame.slot = 2;
    assert_eq!(
        f.server.client().infer(&req).error.map(|e| e.code),
        Some(ErrorCode::StaleFrame)
    );
    // The current frame of the overwritten ring works.
    fresh.publish(&vec![100u8; frame]);
    assert!(f
        .server
        .client()
        .infer(&fresh.request(4, &f.server.model_id))
        .error
        .is_none());
    f.assert_alive();
}

#[test]
fn zero_absurd_and_mismatched_dimensions() {
    let Some(f) = Fixture::new(&[]) else { return };
    for (w, h) in [(0, 540), (960, 0), (100_000, 540), (960, u32::MAX)] {
        assert_eq!(
            f.infer_code(|r| {
                r.meta.width = w;
                r.meta.height = h;
            }),
            Some(ErrorCode::InvalidMessage),
            "{w}x{h}"
        );
    }
    assert_eq!(
        f.infer_code(|r| r.meta.strides = [u32::MAX, 960, 0]),
        Some(ErrorCode::InvalidMessage)
    );
    // Plausible but not the ring's geometry.
    assert_eq!(
        f.infer_code(|r| {
            r.meta.width = 640;
            r.meta.height = 480;
            r.meta.strides = [640, 640, 0];
        }),
        Some(ErrorCode::GeometryMismatch)
    );
    assert_eq!(
        f.infer_code(|r| r.meta.strides = [1024, 1024, 0]),
        Some(ErrorCode::GeometryMismatch)
    );
    assert_eq!(
        f.infer_code(|r| {
            r.meta.format = PixelFormat::Bgr24;
            r.meta.strides = [2880, 0, 0];
        }),
        Some(ErrorCode::GeometryMismatch)
    );
    f.assert_alive();
}

#[test]
fn expired_deadline_is_reported() {
    let Some(f) = Fixture::new(&[]) else { return };
    assert_eq!(
        f.infer_code(|r| r.deadline_ts_ns = Some(1)),
        Some(ErrorCode::DeadlineExceeded)
    );
    f.assert_alive();
}

#[test]
fn stalled_half_frame_is_cut_off_while_others_are_served() {
    let Some(f) = Fixture::new(&["--read-timeout-ms", "500"]) else {
        return;
    };
    let mut staller = f.server.client();
    staller.send_raw(&200u32.to_be_bytes());
    staller.send_raw(b"{\"type\":\"ping\"");
    let started = Instant::now();
    // Others are served while it stalls.
    f.assert_alive();
    let r = staller.recv().expect("an answer before the close");
    assert_eq!(error_code(&r), Some(ErrorCode::MalformedFrame));
    assert!(
        r.error_body().unwrap().message.contains("incomplete"),
        "{r:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(staller.closed_within(Duration::from_secs(5)));
    f.assert_alive();
}

#[test]
fn client_disconnecting_mid_request_harms_nobody() {
    let Some(f) = Fixture::new(&[]) else { return };
    for _ in 0..5 {
        // A complete request, then gone before the answer.
        let mut c = f.server.client();
        c.send(&Request::Infer(f.good()));
        drop(c);
        // Half a frame, then gone.
        let mut c = f.server.client();
        c.send_raw(&300u32.to_be_bytes());
        c.send_raw(&[b' '; 100]);
        drop(c);
    }
    f.assert_alive();
    // The abandoned requests were still processed and counted.
    let Response::Stats(stats) = f.server.client().call(&Request::get_stats(9)) else {
        panic!("stats")
    };
    assert!(stats.requests >= 6, "{stats:?}");
}

/// A client that sends and never reads: its responses back up, the server gives up on the
/// connection after the write timeout instead of buffering without bound, and serves
/// everyone else meanwhile.
#[test]
fn client_that_never_reads_is_cut_off() {
    let Some(f) = Fixture::new(&["--read-timeout-ms", "300"]) else {
        return;
    };
    let mut c = f.server.client();
    c.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let ping = proto_schema::framing::encode(&Request::ping(1), common::MAX_FRAME).unwrap();
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let started = Instant::now();
    let mut sent = 0usize;
    let cut_off = loop {
        match std::io::Write::write_all(&mut c.stream, &batch) {
            Ok(()) => sent += 1000,
            Err(e) => break e,
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never cut off");
        if sent.is_multiple_of(100_000) {
            f.server.assert_alive(None);
        }
    };
    println!("cut off after {sent} pings: {cut_off}");
    // Closed by the server, not our own write timeout expiring on a stuck connection.
    assert!(
        !matches!(
            cut_off.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{cut_off}"
    );
    f.assert_alive();
}

#[test]
fn inflight_limit_answers_overloaded_at_once() {
    let Some(f) = Fixture::new(&["--max-inflight", "1"]) else {
        return;
    };
    let mut c = f.server.client();
    let n = 20u64;
    for id in 0..n {
        let mut req = f.good();
        req.id = 100 + id;
        c.send(&Request::Infer(req));
    }
    let mut ok = 0;
    let mut overloaded = 0;
    let mut ids = Vec::new();
    for _ in 0..n {
        let Some(Response::InferResult(r)) = c.recv() else {
            panic!("infer_result expected")
        };
        ids.push(r.id);
        match r.error.map(|e| e.code) {
            None => ok += 1,
            Some(ErrorCode::Overloaded) => overloaded += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (100..100 + n).collect::<Vec<_>>());
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
    f.assert_alive();
}

/// ~2000 connections at once against a limit of 64: the excess get `overloaded` (or are
/// refused by the kernel's backlog) and closed; the server survives and serves again.
#[test]
fn thousands_of_connections() {
    let Some(f) = Fixture::new(&["--max-connections", "64"]) else {
        return;
    };
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match UnixStream::connect(&f.server.socket) {
            Ok(s) => conns.push(s),
            Err(_) => refused += 1,
        }
    }
    let mut overloaded = 0;
    let mut open = 0;
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut prefix = [0u8; 4];
        match s.read_exact(&mut prefix) {
            Ok(()) => {
                let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
                s.read_exact(&mut payload).unwrap();
                let r = proto_schema::message::decode_response(&payload).unwrap();
                assert_eq!(error_code(&r), Some(ErrorCode::Overloaded));
                overloaded += 1;
            }
            Err(_) => open += 1, // accepted and waiting for a request
        }
    }
    println!(
        "{} connected ({open} served, {overloaded} overloaded), {refused} refused",
        conns.len()
    );
    assert!(
        open <= 64,
        "{open} connections held open over the limit of 64"
    );
    assert!(overloaded + refused >= 2000 - 64 - 1);
    drop(conns);
    f.assert_alive();
    let Response::Status(status) = f.server.client().call(&Request::get_status(1)) else {
        panic!("status")
    };
    assert!(status.connections <= 64);
}

#[test]
fn many_bad_requests_do_not_leak_or_crash() {
    let Some(f) = Fixture::new(&[]) else { return };
    let mut c = f.server.client();
    let good = serde_json::to_string(&Request::Infer(f.good())).unwrap();
    // Every prefix of a valid request, and some byte flips, on one connection.
    for cut in (1..good.len()).step_by(7) {
        c.send_json(&good[..cut]);
        let r = c.recv().unwrap();
        assert!(error_code(&r).is_some(), "prefix {cut} accepted: {r:?}");
    }
    let mut bytes = good.clone().into_bytes();
    for i in (0..bytes.len()).step_by(11) {
        let orig = bytes[i];
        bytes[i] = b'#';
        c.send_json(std::str::from_utf8(&bytes).unwrap());
        let _ = c.recv().unwrap(); // any typed answer
        bytes[i] = orig;
    }
    assert!(matches!(c.call(&Request::ping(1)), Response::Pong { .. }));
    drop(c);
    f.assert_alive();
}

/// Issue 25, contract gap 1, pinned as docs/protocol.md §4, §6.6 and §7 now say: a
/// connection over the limit gets one unprompted `error`, code `overloaded`, `id` null,
/// whether or not it wrote a request (which is never answered), and is then closed; the
/// control socket's own limit of 4 behaves the same; connections under the limit are
/// untouched and a freed place is served again.
#[test]
fn a_connection_over_the_limit_gets_one_unprompted_overloaded_then_close() {
    let Some(env) = Env::get() else { return };
    let server =
        Server::start_with_control(&env, &env.model("yolox_nano"), &["--max-connections", "2"]);
    let control = server.control.clone().unwrap();
    let over_limit = |path: &std::path::Path, limit: usize, write_first: bool| {
        let mut c = common::Client::connect(path).unwrap();
        if write_first {
            // The server may already have closed it (EPIPE): never answered either way.
            let bytes = proto_schema::framing::encode(&Request::ping(5), common::MAX_FRAME);
            let _ = std::io::Write::write_all(&mut c.stream, &bytes.unwrap());
        }
        let r = c.recv().expect("the unprompted error");
        let Response::Error { id, error, .. } = &r else {
            panic!("expected the unprompted error, got {r:?}")
        };
        assert_eq!((*id, error.code), (None, ErrorCode::Overloaded), "{r:?}");
        assert!(
            error
                .message
                .contains(&format!("connection limit of {limit}")),
            "{r:?}"
        );
        // Then closed: end of stream, or ECONNRESET when a request was left unread.
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        match c.stream.read(&mut b) {
            Ok(0) => {}
            Err(e) if write_first && e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the close after the error, got {other:?}"),
        }
    };
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = server.client();
        assert!(matches!(c.call(&Request::ping(i)), Response::Pong { .. }));
        held.push(c);
    }
    over_limit(&server.socket, 2, false);
    over_limit(&server.socket, 2, true);
    let mut ctl_held = Vec::new();
    for i in 0..4 {
        let mut c = common::Client::connect(&control).unwrap();
        assert!(matches!(c.call(&Request::ping(i)), Response::Pong { .. }));
        ctl_held.push(c);
    }
    over_limit(&control, 4, true);
    // The held connections are untouched.
    for (i, c) in held.iter_mut().chain(&mut ctl_held).enumerate() {
        let id = 10 + i as u64;
        assert!(matches!(c.call(&Request::ping(id)), Response::Pong { id: got, .. } if got == id));
    }
    // A freed place is served again (the permit returns when the task ends).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.client();
        // Refused connections get their error at once; an accepted one stays silent.
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(c.stream.read(&mut b), Err(ref e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
        {
            c.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            assert!(matches!(c.call(&Request::ping(20)), Response::Pong { .. }));
            break;
        }
        assert!(Instant::now() < deadline, "a freed place was never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    for needle in [
        "one unprompted `error` message with code `overloaded` and `id` `null`",
        "Sent **unprompted**, with code `overloaded` and `id` `null`",
        "| `overloaded` | 301 | `infer_result`, or `error` (unprompted, `id` `null`, then the connection is closed) |",
    ] {
        assert!(doc.contains(needle), "docs/protocol.md lacks {needle:?}");
    }
}
