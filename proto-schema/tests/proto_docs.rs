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
