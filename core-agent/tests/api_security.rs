//! Issue 10, defects 7, 8 and 10 against the real `core-agent`: the control API refuses
//! callers without the token, cross-origin and non-JSON requests and sources that would
//! make a kernel open arbitrary files or URLs; camera credentials appear in no API
//! answer and no log line; the token file is private.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{bin_dir, children_of, closed_port, serial, wait_for, Agent, Answer, Dirs};

const SECRET: &str = "s3cretpass";

/// The `[agent]` table of `dirs` with `media_dirs` and a live table every second.
fn config(dirs: &Dirs, media: &Path, cameras: &str) -> String {
    let agent = dirs.agent_table().replacen(
        "[agent]\n",
        &format!(
            "[agent]\nmedia_dirs = [\"{}\"]\ntable_interval_s = 1\n",
            media.display()
        ),
        1,
    );
    format!("{agent}{cameras}")
}

fn kernels(agent: &Agent) -> usize {
    children_of(agent.pid())
        .iter()
        .filter(|(_, comm)| comm.starts_with("frame-kernel"))
        .count()
}

fn camera_ids(agent: &Agent) -> Vec<String> {
    let (code, body) = agent.http("GET", "/cameras", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn json_error(a: &Answer) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.body));
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_api_refuses_strangers_foreign_origins_non_json_and_unsafe_sources() {
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    let media = dirs.root.path().join("media");
    std::fs::create_dir(&media).unwrap();
    std::fs::write(
        media.join("clip.mp4"),
        b"not decoded: the camera is disabled",
    )
    .unwrap();
    // A symlink inside the media directory that points out of it.
    std::os::unix::fs::symlink("/etc/passwd", media.join("escape.mp4")).unwrap();
    let outside = dirs.root.path().join("outside.mp4");
    std::fs::write(&outside, b"x").unwrap();
    let sockets = dirs.sockets();
    let cfg = config(&dirs, &media, "");
    // No FRAMEBUS_API_TOKEN: the agent generates its token file.
    let mut agent = Agent::start_with_token(dirs, &cfg, &[], None);

    // The token file: <socket_dir>/api.token, 0600, ours, 64 hex digits; the log says
    // where it is and never what it is.
    let token_file = sockets.join("api.token");
    let meta = std::fs::symlink_metadata(&token_file).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(meta.uid(), euid);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    assert!(agent
        .stderr
        .find(&format!("generated into {}", token_file.display()))
        .is_some());
    assert!(agent.stderr.all().iter().all(|l| !l.contains(&token)));

    let good =
        r#"{"camera": {"id": "sneaky", "source": "rtsp://127.0.0.1:1/x", "enabled": false}}"#;
    let json = ("Content-Type", "application/json".to_owned());
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));

    // No token: 401 with a Bearer challenge and a JSON error; nothing added.
    let a = agent.request("POST", "/cameras", std::slice::from_ref(&json), good);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
    assert!(json_error(&a).contains("Bearer"), "{}", a.body);
    // A wrong token, or a token of the right length that differs in the last byte.
    let mut near = token.clone();
    near.pop();
    near.push(if token.ends_with('0') { '1' } else { '0' });
    for wrong in ["wrong-token-wrong-token", near.as_str()] {
        let a = agent.request("POST", "/cameras", &[json.clone(), bearer(wrong)], good);
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.head.contains("invalid_token"), "{}", a.head);
    }
    for (method, path) in [
        ("POST", "/cameras/x/stop"),
        ("POST", "/cameras/x/start"),
        ("DELETE", "/cameras/x"),
        ("GET", "/cameras"),
        ("GET", "/cameras/x"),
        ("GET", "/models"),
    ] {
        let a = agent.request(method, path, &[], "");
        assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
    }
    // The probes stay open.
    for path in ["/health", "/ready", "/metrics"] {
        let a = agent.request("GET", path, &[], "");
        assert!(a.status == 200 || a.status == 503, "{path}: {}", a.status);
    }

    // The text/plain cross-origin POST a web page can send: refused even with the token.
    let text = ("Content-Type", "text/plain;charset=UTF-8".to_owned());
    let a = agent.request("POST", "/cameras", &[text, bearer(&token)], good);
    assert_eq!(a.status, 415, "{}", a.body);
    // A foreign Origin: 403, token or not.
    let evil = ("Origin", "http://evil.example".to_owned());
    let a = agent.request(
        "POST",
        "/cameras",
        &[json.clone(), bearer(&token), evil],
        good,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // DNS rebinding: a foreign Host name.
    let host = ("Host", format!("evil.example:{}", agent.api.port()));
    let a = agent.request("GET", "/health", &[host], "");
    assert_eq!(a.status, 403, "{}", a.body);

    agent.token = Some(token.clone());
    assert!(
        camera_ids(&agent).is_empty(),
        "a refused request added a camera"
    );

    // Sources that would make a (root) kernel open anything: every one refused with its
    // typed problem, no kernel started, no ring created.
    let kernels_before = kernels(&agent);
    let cases: [(&str, String, &str); 9] = [
        ("shadow", "file:///etc/shadow".into(), "scheme \\\"file\\\""),
        ("web", "http://127.0.0.1:1/x".into(), "scheme \\\"http\\\""),
        (
            "webs",
            "https://127.0.0.1:1/x".into(),
            "scheme \\\"https\\\"",
        ),
        ("abs", "/etc/shadow".into(), "not under agent.media_dirs"),
        (
            "out",
            outside.display().to_string(),
            "not under agent.media_dirs",
        ),
        (
            "link",
            media.join("escape.mp4").display().to_string(),
            "resolves to /etc/passwd",
        ),
        (
            "dots",
            format!("{}/../outside.mp4", media.display()),
            "must not contain `..`",
        ),
        ("rel", "media/clip.mp4".into(), "must be an absolute path"),
        (
            "nl",
            format!("rtsp://admin:{SECRET}@127.0.0.1:1/x\nFAKE LOG LINE"),
            "control character",
        ),
    ];
    for (id, source, needle) in &cases {
        let body = serde_json::json!({"camera": {"id": id, "source": source}}).to_string();
        let (code, body) = agent.http("POST", "/cameras", Some(&body));
        assert_eq!(code, 400, "{id}: {body}");
        assert!(body.contains(needle), "{id}: {needle} not in {body}");
        assert!(
            !body.contains(SECRET),
            "{id}: the answer shows the password: {body}"
        );
        assert!(!agent.rings().join(format!("{id}.ring")).exists());
    }
    // Every problem of one request at once: a bad scheme, a control character and an
    // unknown model.
    let body = serde_json::json!({
        "camera": {"id": "multi", "source": "http://h/\r"},
        "subscriptions": [{"model": "nope", "fps": 1}],
    })
    .to_string();
    let (code, body) = agent.http("POST", "/cameras", Some(&body));
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    for needle in ["U+000D", "scheme \\\"http\\\"", "unknown model"] {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
    assert!(camera_ids(&agent).is_empty());
    assert_eq!(
        kernels(&agent),
        kernels_before,
        "a refused camera started a kernel"
    );

    // What is allowed: rtsp(s), and a file under media_dirs (canonicalized).
    for (id, source) in [
        ("cam", "rtsps://127.0.0.1:1/x".to_owned()),
        ("clip", media.join("clip.mp4").display().to_string()),
    ] {
        let body = serde_json::json!({"camera": {"id": id, "source": source, "enabled": false}})
            .to_string();
        let (code, body) = agent.http("POST", "/cameras", Some(&body));
        assert_eq!(code, 201, "{id}: {body}");
    }
    assert_eq!(camera_ids(&agent), ["cam", "clip"]);
    let a = agent.stop(Duration::from_secs(20));
    assert!(a.success());
}

#[test]
fn camera_credentials_appear_in_no_answer_and_no_log_line() {
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    let media = dirs.root.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let port = closed_port();
    let cams = format!(
        "[[cameras]]\nid = \"door\"\nsource = \"rtsp://admin:{SECRET}@127.0.0.1:{port}/x\"\n"
    );
    let cfg = config(&dirs, &media, &cams);
    let mut agent = Agent::start(dirs, &cfg, &["--table"]);
    // One added through the API as well.
    let body = format!(
        r#"{{"camera": {{"id": "gate", "source": "rtsp://viewer:{SECRET}@127.0.0.1:{port}/y"}}}}"#
    );
    let (code, body) = agent.http("POST", "/cameras", Some(&body));
    assert_eq!(code, 201, "{body}");
    assert!(!body.contains(SECRET), "{body}");
    assert!(body.contains("rtsp://***@127.0.0.1"), "{body}");
    // Let both kernels try (and fail) to connect a few times, so their errors are logged.
    wait_for(
        Duration::from_secs(30),
        "the kernels' connect errors",
        || {
            let lines = agent.stderr.all();
            ["[kernel:door]", "[kernel:gate]"]
                .iter()
                .all(|k| lines.iter().filter(|l| l.starts_with(k)).count() >= 2)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    for path in [
        "/cameras",
        "/cameras/door",
        "/cameras/gate",
        "/metrics",
        "/health",
        "/ready",
        "/models",
    ] {
        let (code, body) = agent.http("GET", path, None);
        assert!(code == 200 || code == 503, "{path}: {code} {body}");
        assert!(!body.contains(SECRET), "{path} shows the password: {body}");
    }
    let (_, body) = agent.http("GET", "/cameras/door", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["source"],
        format!("rtsp://***@127.0.0.1:{port}/x"),
        "{body}"
    );
    let (code, _) = agent.http("DELETE", "/cameras/gate", None);
    assert_eq!(code, 204);
    assert!(agent.stop(Duration::from_secs(20)).success());
    let lines: Vec<String> = agent
        .stderr
        .all()
        .into_iter()
        .chain(agent.stdout.all())
        .collect();
    assert!(lines.len() > 10, "too little output to judge: {lines:#?}");
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "log lines with the password: {leaks:#?}");
}

/// As root (CI): another local user (uid 65534) can neither read the token file nor
/// plant one. Elsewhere the test explains why it is skipped.
#[test]
fn another_user_cannot_read_or_plant_the_token() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root to act as uid 65534 (CI runs as root)");
        return;
    }
    let _serial = serial();
    bin_dir();
    let dirs = Dirs::new();
    // A world-writable sticky directory, like /tmp, reachable by the other user.
    std::fs::set_permissions(dirs.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let public = dirs.root.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let token_file = public.join("api.token");
    let as_nobody = |script: &str| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };

    // 1. The attacker plants a token file it knows (0600, its own): the agent refuses
    //    to start rather than accept a token someone else chose.
    let planted = as_nobody(&format!(
        "umask 077; echo attacker-token-0123456789 > {}",
        token_file.display()
    ));
    assert!(planted.status.success(), "{planted:?}");
    let cfg = dirs.agent_table().replacen(
        "[agent]\n",
        &format!("[agent]\napi_token_file = \"{}\"\n", token_file.display()),
        1,
    );
    std::fs::write(dirs.config(), &cfg).unwrap();
    let out = std::process::Command::new(common::agent_bin())
        .arg("--config")
        .arg(dirs.config())
        .arg("--duration")
        .arg("5")
        .env_remove("FRAMEBUS_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a planted token: {stderr}"
    );
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    std::fs::remove_file(&token_file).unwrap();

    // 2. The agent generates it: the attacker cannot read it.
    let mut agent = Agent::start_with_token(dirs, &cfg, &[], None);
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o600));
    let read = as_nobody(&format!("cat {}", token_file.display()));
    assert!(!read.status.success(), "uid 65534 read the token");
    assert!(read.stdout.is_empty());
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(!String::from_utf8_lossy(&read.stderr).contains(token.trim()));
    assert!(agent.stop(Duration::from_secs(20)).success());
}
