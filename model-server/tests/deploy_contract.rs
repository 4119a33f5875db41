//! Issue 25, contract gaps 5 and 7: what a standalone model server needs from its
//! deployment.
//!
//! - Its socket directory gets core-agent's rule (`shm_ring::owned_dir`): a 0755
//!   directory, or one another uid owns, stops the server at start with exit status 2
//!   (`EXIT_CONFIG`, permanent) and an error naming the directory; no socket is created.
//! - The documented command lines (`docs/deploy.md` §1, `deploy/compose.yaml`'s
//!   `inference`, the systemd unit's `ExecStart`) parse with model-server's own command
//!   line definition, with no `ORT_DYLIB_PATH` from the test's environment: every flag is
//!   known, `--control-socket` is there, and the ONNX Runtime library is named by a flag
//!   or by the environment that deployment sets.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, FromArgMatches};
use common::Env;
use model_server::config::ServerConfig;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs model-server on a socket in `dir` until it exits (it must not start).
fn refused_start(env: &Env, dir: &Path) -> (Option<i32>, String, PathBuf) {
    let rings = tempfile::tempdir().unwrap();
    let ring_dir = rings.path().join("rings");
    shm_ring::owned_dir::ensure_owned_dir(&ring_dir).unwrap();
    let socket = dir.join("m.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_model-server"))
        .arg("--model")
        .arg(env.model("yolox_nano"))
        .arg("--socket")
        .arg(&socket)
        .arg("--ring-dir")
        .arg(&ring_dir)
        .arg("--ort-dylib")
        .arg(&env.ort_dylib)
        .args(["--threads", "1", "--calibration-ms", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        framebus_testkit::process::wait_timeout(&mut child, std::time::Duration::from_secs(60));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "model-server started on the socket directory {}",
            dir.display()
        );
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err, socket)
}

#[test]
fn a_socket_dir_that_is_too_open_or_foreign_is_refused() {
    let Some(env) = Env::get() else { return };
    let t = tempfile::tempdir().unwrap();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err, socket) = refused_start(&env, &open);
    assert_eq!(code, Some(proto_schema::exit::EXIT_CONFIG), "{err}");
    assert!(
        err.contains("--socket") && err.contains("too open"),
        "{err}"
    );
    assert!(err.contains(&open.display().to_string()), "{err}");
    assert!(!socket.exists(), "no socket created");

    if shm_ring::owned_dir::effective_uid() != 0 {
        println!("SKIP (foreign owner): chown to uid 65534 needs root (CI runs as root)");
        return;
    }
    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let (code, err, socket) = refused_start(&env, &foreign);
    assert_eq!(code, Some(proto_schema::exit::EXIT_CONFIG), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!socket.exists(), "no socket created");
}

/// Parses `args` (no program name) as model-server would, but without reading
/// `ORT_DYLIB_PATH` from this process: `ort_env` stands for the deployment's own.
fn parse_documented(what: &str, args: &[String], ort_env: Option<&str>) -> ServerConfig {
    let cmd = ServerConfig::command().mut_arg("ort_dylib", |a| a.env(None::<&str>));
    let mut argv = vec!["model-server".to_owned()];
    argv.extend(args.iter().cloned());
    if let (Some(ort), false) = (ort_env, args.iter().any(|a| a == "--ort-dylib")) {
        argv.extend(["--ort-dylib".to_owned(), ort.to_owned()]);
    }
    let matches = cmd
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("{what}: model-server refuses {argv:?}:\n{e}"));
    let config = ServerConfig::from_arg_matches(&matches).unwrap();
    assert!(
        config.control_socket.is_some(),
        "{what}: no --control-socket in {argv:?}"
    );
    for arg in args {
        assert!(!arg.contains("..."), "{what}: placeholder {arg:?}");
    }
    config
}

/// The value of `KEY=` in a Dockerfile `ENV` or a unit's `Environment=`.
fn env_value(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("{key}="))? + key.len() + 1;
    Some(
        text[at..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()?
            .to_owned(),
    )
}

#[test]
fn documented_standalone_command_lines_parse() {
    let image_ort = env_value(&repo_file("deploy/Dockerfile"), "ORT_DYLIB_PATH");
    assert!(image_ort.is_some(), "the image sets ORT_DYLIB_PATH");

    // docs/deploy.md §1: the drop-in inference container.
    let deploy = repo_file("docs/deploy.md");
    let row = deploy
        .lines()
        .find(|l| l.starts_with("| a drop-in inference container |"))
        .expect("the drop-in row of docs/deploy.md §1");
    let cmd = row.split('`').nth(1).expect("a command in backticks");
    let words: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
    let image = words
        .iter()
        .position(|w| w.starts_with("framebus:"))
        .expect("the image name");
    assert_eq!(words[..image], ["--entrypoint", "model-server"]);
    let c = parse_documented("deploy.md §1", &words[image + 1..], image_ort.as_deref());
    assert_eq!(c.ring_dir, PathBuf::from("/dev/shm/framebus"));
    assert!(deploy.contains("--ort-dylib PATH` or `ORT_DYLIB_PATH`"));

    // deploy/compose.yaml: the `inference` service (same image).
    let compose = repo_file("deploy/compose.yaml");
    let service = &compose[compose.find("\n  inference:").expect("inference service")..];
    let list = &service[service.find("command: [").unwrap() + "command: [".len()..];
    let list = &list[..list.find(']').unwrap()];
    let args: Vec<String> = list
        .split(',')
        .map(|w| w.trim().trim_matches('"').to_owned())
        .filter(|w| !w.is_empty())
        .collect();
    parse_documented("compose.yaml inference", &args, image_ort.as_deref());

    // deploy/systemd: the standalone unit's ExecStart, for instance `yolov8n`.
    let unit = repo_file("deploy/systemd/framebus-model-server@.service");
    let exec = unit
        .replace("\\\n", " ")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_owned))
        .expect("ExecStart");
    let mut words = exec.split_whitespace().map(|w| w.replace("%i", "yolov8n"));
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/model-server"));
    let args: Vec<String> = words.filter(|w| !w.starts_with('$')).collect();
    let unit_ort = env_value(&unit, "ORT_DYLIB_PATH");
    assert!(unit_ort.is_some(), "the unit sets ORT_DYLIB_PATH");
    parse_documented("systemd unit", &args, unit_ort.as_deref());

    // And a command that leaves out what is required is refused by the same check.
    let cmd = ServerConfig::command().mut_arg("ort_dylib", |a| a.env(None::<&str>));
    assert!(cmd
        .try_get_matches_from(["model-server", "--model", "m.onnx", "--socket", "s"])
        .is_err());
}
