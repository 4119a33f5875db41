//! Issue 10, defect 1, at the model server: a ring truncated under the server's mapping
//! (it would have been SIGBUS for the whole process) is a typed `unknown_ring` answer
//! for that ring only; other rings keep getting detections from the same process. A
//! ring file planted with another owner or a loose mode is refused the same way.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{decode_frame, error_code, Env, Ring, Server};
use proto_schema::error::ErrorCode;
use proto_schema::message::Request;
use proto_schema::pixel::PixelFormat;

fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn truncated_ring_is_a_typed_error_and_other_rings_keep_working() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let a = Ring::with_frame(&server.rings, "ringA", PixelFormat::Nv12, &frame);
    let b = Ring::with_frame(&server.rings, "ringB", PixelFormat::Nv12, &frame);
    let mut client = server.client();
    // Both rings served: the server has both mapped (cached readers).
    for (i, ring) in [&a, &b].into_iter().enumerate() {
        let r = client.infer(&ring.request(i as u64, &server.model_id));
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(!r.detections.is_empty());
    }

    // The owner truncates ring A under the server's live mapping.
    truncate(a.writer.path(), 0);
    // Ring A's writer mapping is truncated too: leak it instead of letting its drop
    // write the closed state into a page that no longer exists.
    let a_request = a.request(10, &server.model_id);
    std::mem::forget(a);

    let r = client.infer(&a_request);
    let e = r.error.expect("a truncated ring cannot give detections");
    assert_eq!(e.code, ErrorCode::UnknownRing, "{e:?}");
    assert!(e.message.contains("truncated"), "{e:?}");
    assert!(r.detections.is_empty());
    // Asked again: the cached mapping was dropped, the reopen sees the short file.
    let mut again = a_request.clone();
    again.id = 11;
    let r = client.infer(&again);
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::UnknownRing));

    // Same process, same connection: ring B still gives detections.
    let r = client.infer(&b.request(12, &server.model_id));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(!r.detections.is_empty());
    server.assert_alive(Some(&b.request(13, &server.model_id)));
}

#[test]
fn rings_with_untrusted_owner_or_loose_mode_are_refused() {
    let Some(env) = Env::get() else { return };
    let server = Server::start(&env, &env.model("yolox_nano"), &[]);
    let frame = decode_frame(&env, 100, "nv12");
    let good = Ring::with_frame(&server.rings, "good", PixelFormat::Nv12, &frame);
    let planted = server.rings.join("planted.ring");
    std::fs::copy(good.writer.path(), &planted).unwrap();
    let mut req = good.request(1, &server.model_id);
    req.frame.ring = "planted".into();

    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let resp = server.client().call(&Request::Infer(req.clone()));
    assert_eq!(error_code(&resp), Some(ErrorCode::UnknownRing), "{resp:?}");
    assert!(
        format!("{resp:?}").contains("writable by group or others"),
        "{resp:?}"
    );

    if shm_ring::owned_dir::effective_uid() == 0 {
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        req.id = 2;
        let resp = server.client().call(&Request::Infer(req));
        assert_eq!(error_code(&resp), Some(ErrorCode::UnknownRing), "{resp:?}");
        assert!(
            format!("{resp:?}").contains("owned by uid 65534"),
            "{resp:?}"
        );
    } else {
        eprintln!("owner case skipped: chown to uid 65534 needs root (CI runs as root)");
    }
    server.assert_alive(Some(&good.request(3, &server.model_id)));
}
