//! Keeps `docs/ring-format.md` and the ring's errors as `docs/protocol.md` quotes them
//! exact: the layout versions and generation bound the doc states are the code's.

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn ring_format_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ring-format.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Issue 18, gap 8: the `stale_frame` example is the message the server sends (the read
/// error's text, naming the ring once).
#[test]
fn stale_frame_example_is_the_read_error_text() {
    let e = shm_ring::ReadError::Stale {
        ring: "cam-entrance-01".into(),
        slot: 6,
        expected_seq: 90212,
        found_seq: 90214,
    };
    let text = e.to_string();
    assert_eq!(text.matches("cam-entrance-01").count(), 1, "{text}");
    let doc = protocol_md();
    assert!(
        doc.contains(&format!(
            "\"code\": \"stale_frame\", \"message\": \"{text}\""
        )),
        "docs/protocol.md's stale_frame example is not {text:?}"
    );
}

/// Issue 18, gaps 3 and 5: the ring doc states the layout version the writer writes, the
/// versions readers accept, and the 53-bit generation; the wire version did not change.
#[test]
fn ring_doc_versions_match_the_code() {
    use shm_ring::layout::{LAYOUT_VERSION, MAX_GENERATION, MIN_LAYOUT_VERSION};
    let doc = ring_format_md();
    assert!(doc.starts_with(&format!("# Ring format (layout version {LAYOUT_VERSION})")));
    assert!(doc.contains(&format!(
        "| 8 | u32 | `layout_version` | `{LAYOUT_VERSION}` when written by this implementation; readers accept `{MIN_LAYOUT_VERSION}` and `{LAYOUT_VERSION}`"
    )));
    assert_eq!(MAX_GENERATION, (1 << 53) - 1);
    assert!(doc.contains("`1..=2^53-1`"));
    assert!(doc.contains(&format!(
        "| {LAYOUT_VERSION} | `generation` is at most `2^53 - 1`"
    )));
    assert!(doc.contains("**Frames are served in every state but Closed**"));
    assert_eq!(proto_schema::PROTOCOL_VERSION, 1);
    assert!(protocol_md().starts_with("# Wire protocol (version 1)"));
}
