//! Keeps `docs/protocol.md` exact: every JSON example decodes with the validating decoders,
//! every message type has an example, the hex framing example is what the encoder
//! produces, and the error-code table matches `ErrorCode`.

use std::collections::BTreeSet;

use proto_schema::error::ErrorCode;
use proto_schema::framing::{self, DEFAULT_MAX_FRAME};
use proto_schema::message::{decode_request, decode_response, Request, Response};

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The bodies of the fenced blocks with the given info string.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            Some(body) if line.trim_end() == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```{lang} block");
    out
}

#[test]
fn every_json_example_decodes_and_every_type_has_one() {
    let doc = protocol_md();
    let mut seen = BTreeSet::new();
    let examples = blocks(&doc, "json");
    assert!(examples.len() >= 12, "only {} examples", examples.len());
    for example in examples {
        let value: serde_json::Value = serde_json::from_str(&example)
            .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{example}"));
        let ty = value["type"]
            .as_str()
            .expect("example has a type")
            .to_owned();
        if Request::TYPES.contains(&ty.as_str()) {
            let req =
                decode_request(example.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{example}"));
            assert_eq!(req.type_name(), ty);
        } else {
            let resp =
                decode_response(example.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{example}"));
            assert_eq!(resp.type_name(), ty);
        }
        seen.insert(ty);
    }
    for ty in Request::TYPES.iter().chain(Response::TYPES.iter()) {
        assert!(
            seen.contains(*ty),
            "docs/protocol.md has no example of {ty:?}"
        );
    }
}

#[test]
fn hex_example_is_the_encoders_output() {
    let doc = protocol_md();
    let hex = blocks(&doc, "hex");
    assert_eq!(hex.len(), 1);
    let bytes: Vec<u8> = hex[0]
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect();
    assert_eq!(
        bytes,
        framing::encode(&Request::ping(1), DEFAULT_MAX_FRAME).unwrap()
    );
}

#[test]
fn error_table_lists_every_code_with_its_number() {
    let doc = protocol_md();
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.as_u16());
        assert!(doc.contains(&row), "docs/protocol.md lacks the row {row}");
    }
}

#[test]
fn documented_default_limit_matches() {
    let doc = protocol_md();
    assert_eq!(DEFAULT_MAX_FRAME, 1_048_576);
    assert!(doc.contains("**1 048 576 bytes (1 MiB)**"));
}

fn ring_format_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ring-format.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Issue 18, gap 8: the `stale_frame` example is the message the server sends (the read
/// error's text, naming the ring once).
#[test]
fn stale_frame_example_is_the_read_error_text() {
    let e = proto_schema::ring::ReadError::Stale {
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

/// Issue 18, gap 2: `invalid_message` is listed where it appears, `error` and
/// `infer_result`, and 5.1 names it for a slot outside the ring.
#[test]
fn invalid_message_is_listed_for_both_places() {
    let doc = protocol_md();
    assert!(doc.contains("| `invalid_message` | 102 | `error`, or `infer_result` |"));
    assert!(doc.contains(
        "a slot outside the ring is answered with an `infer_result` failure `invalid_message`"
    ));
}

/// Issue 18, gaps 3 and 5: the ring doc states the layout version the writer writes, the
/// versions readers accept, and the 53-bit generation; the wire version did not change.
#[test]
fn ring_doc_versions_match_the_code() {
    use proto_schema::ring::layout::{LAYOUT_VERSION, MAX_GENERATION, MIN_LAYOUT_VERSION};
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
