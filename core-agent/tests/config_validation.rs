//! A broken config yields every problem in one message and starts nothing.

mod common;

use std::process::Command;

use common::{agent_bin, Dirs};

/// Writes `config` into `dirs` and runs `core-agent --check` on it.
fn check(dirs: &Dirs, config: &str) -> std::process::Output {
    std::fs::write(dirs.config(), config).unwrap();
    Command::new(agent_bin())
        .arg("--check")
        .arg("--config")
        .arg(dirs.config())
        .output()
        .unwrap()
}

#[test]
fn a_broken_config_reports_every_problem_and_starts_nothing() {
    let dirs = Dirs::new();
    let model = dirs.root.path().join("det.onnx");
    std::fs::write(&model, b"not really a model, never loaded").unwrap();
    let config = format!(
        r#"{agent}
[[cameras]]
id = "cam1"
source = "rtsp://127.0.0.1:1/a"
fps = 10

[[cameras]]
id = "cam1"
source = "rtsp://127.0.0.1:1/b"

[[cameras]]
id = "../etc"
source = "rtsp://127.0.0.1:1/c"

[[cameras]]
id = "cam3"
source = "/no/such/video.mp4"
ring = "cam1"

[[models]]
id = "det"
path = "{model}"
socket = "{sock}"

[[models]]
id = "det2"
path = "{model}"
socket = "{sock}"

[[models]]
id = "missing"
path = "/no/such/model.onnx"

[[subscriptions]]
camera = "cam1"
model = "nope"
fps = 5

[[subscriptions]]
camera = "cam1"
model = "det"
fps = 25
"#,
        agent = dirs.agent_table(),
        model = model.display(),
        sock = dirs.sockets().join("shared.sock").display(),
    );
    std::fs::write(dirs.config(), config).unwrap();
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(dirs.config())
        .env_remove("FRAMEBUS_RING_DIR")
        .env_remove("FRAMEBUS_SOCKET_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status for an invalid config"
    );
    // One message, every problem.
    assert!(stderr.contains("invalid config: 8 problems"), "{stderr}");
    for needle in [
        "duplicate camera id \"cam1\"",
        "camera id \"../etc\" is not a valid name",
        "camera \"cam3\": source file /no/such/video.mp4 does not exist",
        "cameras \"cam1\" and \"cam3\" both claim ring \"cam1\"",
        "models \"det\" and \"det2\" both claim socket",
        "model \"missing\": file /no/such/model.onnx does not exist",
        "names unknown model \"nope\"",
        "fps 25 is above the camera's 10 fps",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    // Nothing was started or created.
    assert!(!dirs.rings().exists(), "ring dir created");
    assert!(!dirs.sockets().exists(), "socket dir created");
    assert!(!dirs.results().exists(), "results file created");
}

#[test]
fn a_syntax_error_names_the_key_and_line() {
    let dirs = Dirs::new();
    std::fs::write(dirs.config(), "[agent]\napi_adr = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(dirs.config())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("api_adr") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_a_good_config() {
    let dirs = Dirs::new();
    let model = dirs.root.path().join("det.onnx");
    // The smallest file that passes the ONNX structure check: ir_version 8, a graph.
    std::fs::write(&model, [0x08, 0x08, 0x3a, 0x01, 0x00]).unwrap();
    let config = format!(
        "{}[[cameras]]\nid = \"cam1\"\nsource = \"rtsp://127.0.0.1:1/a\"\n\n[[models]]\nid = \"det\"\npath = \"{}\"\n\n\
         [[subscriptions]]\ncamera = \"cam1\"\nmodel = \"det\"\nfps = 5\n",
        dirs.agent_table(),
        model.display()
    );
    let out = check(&dirs, &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("config OK: 1 cameras, 1 models, 1 subscriptions, 1 outputs"),
        "{stdout}"
    );
    assert!(!dirs.rings().exists());
}

#[test]
fn the_example_configs_are_valid() {
    let dir = common::workspace_root().join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = core_agent::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            core_agent::config::validate(&config, false)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example configs in {}", dir.display());
}

/// Issue 10: an empty config used to be accepted silently. It is valid (cameras may come
/// through the API) but `--check` and a start say so, with a hint.
#[test]
fn an_empty_config_is_accepted_with_a_hint() {
    let dirs = Dirs::new();
    let out = check(&dirs, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: the config has no cameras and no models")
            && stderr.contains("core-agent --demo"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK: 0 cameras"));
}

/// Issue 10: a source with a newline (log forging, argument smuggling) is refused in the
/// config file too, and the message shows no password.
#[test]
fn a_source_with_a_control_character_is_refused() {
    let dirs = Dirs::new();
    let config = format!(
        "{}[[cameras]]\nid = \"cam1\"\nsource = \"rtsp://admin:hunter22@127.0.0.1:1/a\\nINFO forged\"\n",
        dirs.agent_table()
    );
    let out = check(&dirs, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("camera \"cam1\": source \"rtsp://***@127.0.0.1:1/a\\nINFO forged\" contains 1 control character(s), the first (U+000A) at byte"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter22"), "{stderr}");
}

/// Issue 25, item 4: a bidi override (TOML `\u202E`) or a zero-width space in a source
/// or record source is refused like a control character, named, never echoed.
#[test]
fn a_source_with_a_bidi_or_format_character_is_refused() {
    let dirs = Dirs::new();
    let config = format!(
        "{}[[cameras]]\nid = \"cam1\"\nsource = \"rtsp://admin:hunter22@127.0.0.1:1/x\\u202E\"\n\n\
         [[cameras]]\nid = \"cam2\"\nsource = \"rtsp://127.0.0.1:1/\\u200Bsub\"\nrecord_source = \"rtsp://127.0.0.1:1/main\\u2066\"\n",
        dirs.agent_table()
    );
    let out = check(&dirs, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "camera \"cam1\": source \"rtsp://***@127.0.0.1:1/x\\u{202e}\" contains 1 control character(s), the first (U+202E, a bidi control) at byte 35",
        "camera \"cam2\": source \"rtsp://127.0.0.1:1/\\u{200b}sub\" contains 1 control character(s), the first (U+200B, an invisible format character)",
        "camera \"cam2\": record_source \"rtsp://127.0.0.1:1/main\\u{2066}\" contains control or invisible format characters",
    ] {
        assert!(stderr.contains(needle), "{needle}\nnot in\n{stderr}");
    }
    assert!(!stderr.contains("hunter22"), "{stderr}");
    assert!(
        !stderr.contains(['\u{202e}', '\u{200b}', '\u{2066}']),
        "the message carries the characters themselves: {stderr:?}"
    );
}

/// `--check` refuses a model file that is not ONNX, naming the model and the file.
#[test]
fn check_refuses_a_model_file_that_is_not_onnx() {
    let dirs = Dirs::new();
    let model = dirs.root.path().join("det.onnx");
    std::fs::write(&model, b"this is not an ONNX model\n").unwrap();
    let config = format!(
        "{}[[models]]\nid = \"det\"\npath = \"{}\"\n",
        dirs.agent_table(),
        model.display()
    );
    let out = check(&dirs, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("model \"det\"")
            && stderr.contains(&model.display().to_string())
            && stderr.contains("not an ONNX model"),
        "{stderr}"
    );
}
