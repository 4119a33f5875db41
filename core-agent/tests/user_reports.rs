//! Issue 25, items 4 and 5, against the real `core-agent` (each shown to fail before
//! the fix):
//! - a source with a bidi override (`rtsp://127.0.0.1:1/x\u202e`) added through the API
//!   is refused with a 400 naming the character (item 4);
//! - removing a camera that `[clips] cameras` names no longer makes every later add fail
//!   with `clips.cameras: no camera "…"` (item 5a);
//! - a camera whose source refuses connections shows the kernel's own reason
//!   (`Connection refused`) in `GET /cameras` within seconds, not a readiness timeout
//!   after 60 s (item 5c);
//! - every `core-agent --flag` that the docs name is a flag of `core-agent --help`
//!   (item 5d: the docs said `--check-config`).
//!
//! The MQTT part of item 5 (5b) is in `outputs_mqtt.rs`, beside the broker helpers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent_bin, bin_dir, closed_port, serial, wait_for, Agent, Dirs};
use serde_json::Value;

const SECRET: &str = "s3cretpass";

fn camera_ids(agent: &Agent) -> Vec<String> {
    let (code, body) = agent.http("GET", "/cameras", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_bidi_override_in_an_added_source_is_refused_by_name() {
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    let cfg = dirs.agent_table();
    let mut agent = Agent::start(dirs, &cfg, &[]);
    for (id, source, named) in [
        (
            "rlo",
            format!("rtsp://admin:{SECRET}@127.0.0.1:1/x\u{202e}"),
            "U+202E, a bidi control",
        ),
        (
            "iso",
            "rtsp://127.0.0.1:1/\u{2066}x".to_owned(),
            "U+2066, a bidi control",
        ),
        (
            "zwsp",
            "rtsp://127.0.0.1:1/a\u{200b}b".to_owned(),
            "U+200B, an invisible format character",
        ),
    ] {
        let body = serde_json::json!({"camera": {"id": id, "source": source}}).to_string();
        let (code, answer) = agent.http("POST", "/cameras", Some(&body));
        assert_eq!(code, 400, "{id}: {answer}");
        assert!(answer.contains(named), "{id}: {named} not in {answer}");
        assert!(!answer.contains(SECRET), "{id}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        let text = v.to_string();
        assert!(
            text.chars().all(
                |c| !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}')
            ),
            "{id}: the answer carries the character itself: {text:?}"
        );
    }
    // The record source too.
    let body = serde_json::json!({"camera": {
        "id": "rec", "source": "rtsp://127.0.0.1:1/sub",
        "record_source": "rtsp://127.0.0.1:1/main\u{202e}", "enabled": false,
    }})
    .to_string();
    let (code, answer) = agent.http("POST", "/cameras", Some(&body));
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("format characters"), "{answer}");
    assert!(camera_ids(&agent).is_empty());
    assert!(agent.stop(Duration::from_secs(20)).success());
}

#[test]
fn removing_a_clips_camera_lets_the_next_add_through() {
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    let port = closed_port();
    let cfg = format!(
        "{}[clips]\ncameras = [\"door\"]\ndir = \"{}\"\n\n[[cameras]]\nid = \"door\"\nsource = \"rtsp://127.0.0.1:{port}/door\"\nenabled = false\n",
        dirs.agent_table(),
        dirs.root.path().join("clips").display()
    );
    let mut agent = Agent::start(dirs, &cfg, &[]);
    assert_eq!(camera_ids(&agent), ["door"]);
    let (code, body) = agent.http("DELETE", "/cameras/door", None);
    assert!((200..300).contains(&code), "{code} {body}");
    assert!(camera_ids(&agent).is_empty());
    // Before the fix: 400 `clips.cameras: no camera "door"`, for this and every add.
    for id in ["gate", "yard"] {
        let body = serde_json::json!({"camera": {
            "id": id, "source": format!("rtsp://127.0.0.1:{port}/{id}"), "enabled": false,
        }})
        .to_string();
        let (code, answer) = agent.http("POST", "/cameras", Some(&body));
        assert_eq!(code, 201, "{id}: {answer}");
    }
    assert_eq!(camera_ids(&agent), ["gate", "yard"]);
    // The same id again is a new camera, without the clips of the removed one.
    let body = serde_json::json!({"camera": {
        "id": "door", "source": format!("rtsp://127.0.0.1:{port}/door"), "enabled": false,
    }})
    .to_string();
    let (code, answer) = agent.http("POST", "/cameras", Some(&body));
    assert_eq!(code, 201, "{answer}");
    assert!(agent.stop(Duration::from_secs(20)).success());
}

#[test]
fn an_unreachable_camera_shows_the_kernels_reason_within_seconds() {
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    let port = closed_port();
    let cfg = format!(
        "{}[[cameras]]\nid = \"door\"\nsource = \"rtsp://admin:{SECRET}@127.0.0.1:{port}/x\"\n",
        dirs.agent_table()
    );
    let started = Instant::now();
    let mut agent = Agent::start(dirs, &cfg, &[]);
    // The supervisor's readiness timeout is 60 s; the kernel says why at its first try.
    let cam = wait_for(
        Duration::from_secs(20),
        "the kernel's reason in the API",
        || {
            let cam = agent.camera("door");
            cam["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("Connection refused"))
                .then_some(cam)
        },
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(cam["state"], "starting", "{cam}");
    let line = cam["last_error"].as_str().unwrap();
    eprintln!("door last_error after {took:?}: {line}");
    assert!(
        line.starts_with("WARN ") || line.starts_with("ERROR "),
        "{line}"
    );
    assert!(!line.contains(SECRET) && !line.contains("admin"), "{line}");
    assert!(line.chars().count() <= 400, "{line}");
    assert!(
        cam["last_error_unix_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{cam}"
    );
    // The list says the same.
    let (_, list) = agent.http("GET", "/cameras", None);
    assert!(list.contains("Connection refused"), "{list}");
    assert!(!list.contains(SECRET), "{list}");
    assert!(agent.stop(Duration::from_secs(20)).success());
}

/// Every `--flag` that follows `core-agent` in a code span or a code block of the docs.
fn documented_flags(text: &str) -> Vec<String> {
    let mut snippets: Vec<String> = Vec::new();
    let mut in_block = false;
    let mut prose = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            snippets.push(line.to_owned());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    // Inline code spans (they may wrap over a line end).
    snippets.extend(prose.split('`').skip(1).step_by(2).map(str::to_owned));
    let mut flags = Vec::new();
    for s in snippets {
        let words: Vec<&str> = s.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "core-agent" && !w.ends_with("/core-agent") {
                continue;
            }
            for arg in &words[i + 1..] {
                if ["|", "||", "&&", ";", ">", "2>&1"].contains(arg) {
                    break;
                }
                if let Some(flag) = arg.strip_prefix("--") {
                    let name = flag.split('=').next().unwrap_or_default();
                    let name = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                    if !name.is_empty() {
                        flags.push(format!("--{name}"));
                    }
                }
            }
        }
    }
    flags
}

#[test]
fn every_core_agent_flag_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let out = std::process::Command::new(agent_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let known: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w))
        .map(|w| w.split('<').next().unwrap_or(w))
        .collect();
    let mut named = 0;
    let mut unknown = Vec::new();
    for f in &files {
        for flag in documented_flags(&std::fs::read_to_string(f).unwrap()) {
            named += 1;
            if !known.contains(&flag.as_str()) {
                unknown.push(format!(
                    "{}: {flag}",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        named >= 3,
        "the scan found only {named} flags: is it still reading the docs?"
    );
    assert!(
        unknown.is_empty(),
        "flags the docs name that `core-agent --help` does not list: {unknown:?}\n{help}"
    );
    // The scan itself: a renamed flag is caught.
    assert_eq!(
        documented_flags("run `core-agent --check-config` or\n```\n/usr/bin/core-agent --config x | grep --y\n```\n"),
        ["--config", "--check-config"]
    );
}
