//! Server settings: command-line flags (each with its documented default) and their
//! validation, which reports every problem at once.

use std::time::Duration;

/// Every setting of one model server: the command line, defined once in the launch
/// contract that `core-agent` builds it with (see `framebus_launch`).
pub use framebus_launch::ServerLaunch as ServerConfig;
/// A count that is either given or chosen at load (`auto`).
pub use framebus_launch::Setting;

/// The settings were rejected; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Default of `--calibration-ms`.
pub use framebus_launch::server::DEFAULT_CALIBRATION_MS;
/// Largest `--calibration-ms`.
pub const MAX_CALIBRATION_MS: u64 = 5000;
/// Floor of the `auto` queue wait bound.
pub const AUTO_WAIT_FLOOR: Duration = Duration::from_millis(100);

/// Hard upper bounds, so a typo cannot ask for a million threads.
const MAX_INSTANCES: usize = 64;
const MAX_THREADS: usize = 256;
pub const MAX_BATCH: usize = 64;
const MAX_FRAME_LIMIT: usize = 64 << 20;
const MIN_FRAME_LIMIT: usize = 1024;

/// The queue wait bound policy of `--max-queue-wait-ms`.
pub fn max_wait(config: &ServerConfig) -> crate::batcher::MaxWait {
    use crate::batcher::MaxWait;
    match config.max_queue_wait_ms {
        Setting::Auto => MaxWait::Auto {
            floor: AUTO_WAIT_FLOOR,
        },
        Setting::Fixed(0) => MaxWait::Off,
        Setting::Fixed(ms) => MaxWait::Fixed(Duration::from_millis(ms as u64)),
    }
}

/// Which ring owners the server trusts: its own uid and root, plus `--trust-ring-uid`
/// and `--trust-ring-gid` (docs/ring-format.md §6.1).
pub fn ring_trust(config: &ServerConfig) -> shm_ring::RingTrust {
    let trust = config
        .trust_ring_uids
        .iter()
        .fold(shm_ring::RingTrust::new(), |t, &uid| t.allow_uid(uid));
    config
        .trust_ring_gids
        .iter()
        .fold(trust, |t, &gid| t.allow_gid(gid))
}

/// Checks the directory of a socket the server will create: the same rule as core-agent
/// applies to its socket directory (`shm_ring::owned_dir::check_owned_dir`: owned by
/// this uid or root, no group write, nothing for others, a parent others cannot replace
/// it in). A data client reaches the 0660 socket through the group's `x` bit; a 0755
/// directory, or one another user made, would let others list, squat or replace it.
fn check_socket_dir(flag: &str, socket: &std::path::Path, p: &mut Vec<String>) {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if let Err(e) = shm_ring::owned_dir::check_owned_dir(dir) {
        p.push(format!(
            "{flag} {}: its directory is not one the service owns: {e}",
            socket.display()
        ));
    }
}

/// Checks every setting; the error lists all problems found.
pub fn validate(config: &ServerConfig) -> Result<(), ConfigError> {
    let mut p = Vec::new();
    let id = config.model_id();
    if !proto_schema::message::is_valid_name(&id) {
        p.push(format!(
            "model id {id:?} breaks the name rule ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$ \
                 (set --model-id)"
        ));
    }
    if !config.model.is_file() {
        p.push(format!("--model {}: no such file", config.model.display()));
    } else if let Err(e) = proto_schema::onnx_sniff::check_onnx_file(&config.model) {
        p.push(format!("--model {e}"));
    }
    // The server only reads rings, so it never creates their directory: it must
    // be one the service owns (frame-kernel or core-agent created it), never a
    // world-writable one where another user could plant or truncate rings.
    // An outside writer's own directory is accepted when its owner (or group) is
    // trusted for rings too (`--trust-ring-uid`/`--trust-ring-gid`).
    let trust = ring_trust(config);
    if let Err(e) = shm_ring::owned_dir::check_owned_dir_trusting(&config.ring_dir, |uid, gid| {
        trust.trusts_file(uid, gid)
    }) {
        let hint = match &e {
            shm_ring::owned_dir::OwnedDirError::WrongOwner { owner, .. } => format!(
                " (a directory of a writer running as uid {owner} is accepted with \
                 --trust-ring-uid {owner})"
            ),
            _ => String::new(),
        };
        p.push(format!("--ring-dir: {e}{hint}"));
    }
    if config.socket.as_os_str().is_empty() {
        p.push("--socket: empty path".into());
    } else if config.socket.as_os_str().len() > 107 {
        p.push(format!(
            "--socket {}: longer than the 107 bytes a Unix socket path may have",
            config.socket.display()
        ));
    } else {
        check_socket_dir("--socket", &config.socket, &mut p);
    }
    if let Some(ctl) = &config.control_socket {
        if ctl.as_os_str().len() > 107 || ctl.as_os_str().is_empty() {
            p.push(format!(
                "--control-socket {}: empty or longer than 107 bytes",
                ctl.display()
            ));
        } else if *ctl == config.socket {
            p.push("--control-socket: must differ from --socket".into());
        } else if ctl.parent() != config.socket.parent() {
            check_socket_dir("--control-socket", ctl, &mut p);
        }
    }
    if let Some(labels) = &config.labels {
        if !labels.is_file() {
            p.push(format!("--labels {}: no such file", labels.display()));
        }
    }
    let mut range = |name: &str, v: usize, lo: usize, hi: usize| {
        if !(lo..=hi).contains(&v) {
            p.push(format!("{name} {v}: must be {lo}..={hi}"));
        }
    };
    if let Some(n) = config.instances.fixed() {
        range("--instances", n, 1, MAX_INSTANCES);
    }
    if let Some(n) = config.threads.fixed() {
        range("--threads", n, 1, MAX_THREADS);
    }
    if let Some(n) = config.max_batch.fixed() {
        range("--max-batch", n, 1, MAX_BATCH);
    }
    if let Some(n) = config.max_queue_wait_ms.fixed() {
        range("--max-queue-wait-ms", n, 0, 3_600_000);
    }
    range(
        "--max-queue-per-source",
        config.max_queue_per_source,
        1,
        1 << 20,
    );
    range(
        "--calibration-ms",
        config.calibration_ms as usize,
        0,
        MAX_CALIBRATION_MS as usize,
    );
    range("--io-threads", config.io_threads, 1, MAX_THREADS);
    range("--max-detections", config.max_detections, 1, 10_000);
    range("--max-connections", config.max_connections, 1, 1 << 20);
    range("--max-inflight", config.max_inflight, 1, 1 << 20);
    range(
        "--max-frame",
        config.max_frame,
        MIN_FRAME_LIMIT,
        MAX_FRAME_LIMIT,
    );
    if config.batch_delay_us > 1_000_000 {
        p.push(format!(
            "--batch-delay-us {}: at most 1000000 (1 s)",
            config.batch_delay_us
        ));
    }
    for (name, v) in [
        ("--score-threshold", config.score_threshold),
        ("--iou-threshold", config.iou_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            p.push(format!("{name} {v}: must be within 0..=1"));
        }
    }
    if config.read_timeout_ms == 0 {
        p.push("--read-timeout-ms: must be positive".into());
    }
    if !config.ort_dylib.is_file() {
        p.push(format!(
            "ONNX Runtime library {}: no such file (set --ort-dylib or ORT_DYLIB_PATH)",
            config.ort_dylib.display()
        ));
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems: p })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        let mut all = vec!["model-server", "--ort-dylib", "/nonexistent/libort.so"];
        all.extend_from_slice(args);
        ServerConfig::try_parse_from(all)
    }

    #[test]
    fn defaults() {
        let c = parse(&["--model", "/m/yolox_nano.onnx", "--socket", "/tmp/s.sock"]).unwrap();
        assert_eq!(c.model_id(), "yolox_nano");
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.ring_dir, std::path::PathBuf::from("/dev/shm/framebus"));
        assert_eq!(
            (c.threads, c.instances, c.max_batch),
            (Setting::Auto, Setting::Auto, Setting::Auto)
        );
        assert_eq!(c.max_inflight, 64);
        assert_eq!(c.family, crate::family::FamilyChoice::Auto);
        assert_eq!(c.calibration_ms, DEFAULT_CALIBRATION_MS);
        assert_eq!(c.max_queue_per_source, 64);
        assert_eq!(max_wait(&c), crate::batcher::MaxWait::Off);
        assert!(!c.spin);
        let fixed = parse(&[
            "--model",
            "m.onnx",
            "--socket",
            "s",
            "--threads",
            "1",
            "--instances",
            "2",
            "--max-batch",
            "4",
            "--max-queue-wait-ms",
            "auto",
        ])
        .unwrap();
        assert_eq!(
            (fixed.threads, fixed.instances, fixed.max_batch),
            (Setting::Fixed(1), Setting::Fixed(2), Setting::Fixed(4))
        );
        assert_eq!(
            max_wait(&fixed),
            crate::batcher::MaxWait::Auto {
                floor: AUTO_WAIT_FLOOR
            }
        );
        assert!(parse(&["--model", "m", "--socket", "s", "--threads", "two"]).is_err());
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = parse(&[
            "--model",
            "/nonexistent/model.onnx",
            "--model-id",
            "../evil",
            "--socket",
            "/tmp/x.sock",
            "--ring-dir",
            "/nonexistent-dir",
            "--instances",
            "0",
            "--score-threshold",
            "1.5",
            "--max-frame",
            "10",
            "--calibration-ms",
            "60000",
        ])
        .unwrap();
        let e = validate(&c).unwrap_err();
        let all = e.problems.join("\n");
        for needle in [
            "model id",
            "--model ",
            "--ring-dir",
            "--instances",
            "--score-threshold",
            "--max-frame",
            "--calibration-ms",
            "ONNX Runtime library",
            "--socket /tmp/x.sock: its directory",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(e.problems.len(), 9, "{all}");
    }

    /// Issue 25, gap 5: the socket directories get core-agent's rule. A 0755 directory
    /// (anyone may list it) or one another user owns is refused; a 0750 or 0700 one of
    /// this uid is accepted. The control socket's directory is checked too.
    #[test]
    fn socket_dir_must_be_an_owned_directory() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let ring_dir = t.path().join("rings");
        shm_ring::owned_dir::ensure_owned_dir(&ring_dir).unwrap();
        let problems = |socket: &std::path::Path, ctl: Option<&std::path::Path>| {
            let mut args = vec![
                "--model".to_owned(),
                "m.onnx".into(),
                "--socket".into(),
                socket.to_str().unwrap().into(),
                "--ring-dir".into(),
                ring_dir.to_str().unwrap().into(),
            ];
            if let Some(c) = ctl {
                args.extend(["--control-socket".into(), c.to_str().unwrap().into()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let e = validate(&parse(&args).unwrap()).unwrap_err();
            e.problems
                .into_iter()
                .filter(|p| p.contains("socket"))
                .collect::<Vec<_>>()
        };
        let dir = |name: &str, mode: u32| {
            let d = t.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            d
        };
        let good = dir("good", 0o750);
        assert_eq!(problems(&good.join("m.sock"), None), Vec::<String>::new());
        let open = dir("open", 0o755);
        let p = problems(&open.join("m.sock"), None);
        assert!(
            p.len() == 1 && p[0].starts_with("--socket") && p[0].contains("too open"),
            "{p:?}"
        );
        let p = problems(&good.join("m.sock"), Some(&open.join("m.ctl")));
        assert!(
            p.len() == 1 && p[0].starts_with("--control-socket") && p[0].contains("too open"),
            "{p:?}"
        );
        if shm_ring::owned_dir::effective_uid() != 0 {
            eprintln!("skipped the foreign-owner case: chown needs root");
            return;
        }
        let foreign = dir("foreign", 0o750);
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let p = problems(&foreign.join("m.sock"), None);
        assert!(p.len() == 1 && p[0].contains("owned by uid 65534"), "{p:?}");
    }

    /// Issue 10: rings are only read from a directory the service owns; a world-writable
    /// one (like `/dev/shm` itself) or one another user created is refused.
    #[test]
    fn ring_dir_must_be_an_owned_directory() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let problems = |dir: &std::path::Path| {
            let c = parse(&[
                "--model",
                "m.onnx",
                "--socket",
                "/tmp/x.sock",
                "--ring-dir",
                dir.to_str().unwrap(),
            ])
            .unwrap();
            let e = validate(&c).unwrap_err();
            e.problems
                .into_iter()
                .filter(|p| p.starts_with("--ring-dir"))
                .collect::<Vec<_>>()
        };
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(problems(t.path()), Vec::<String>::new());
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let p = problems(&open);
        assert!(p.len() == 1 && p[0].contains("too open"), "{p:?}");
        if shm_ring::owned_dir::effective_uid() != 0 {
            eprintln!("skipped the foreign-owner case: chown needs root");
            return;
        }
        let foreign = t.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let p = problems(&foreign);
        assert!(p.len() == 1 && p[0].contains("owned by uid 65534"), "{p:?}");
        assert!(p[0].contains("--trust-ring-uid 65534"), "{p:?}");
        // Issue 25, gap 3: an outside writer's own directory, trusted by flag.
        let trusted = |flag: &str| {
            let c = parse(&[
                "--model",
                "m.onnx",
                "--socket",
                "/tmp/x.sock",
                "--ring-dir",
                foreign.to_str().unwrap(),
                flag,
                "65534",
            ])
            .unwrap();
            validate(&c)
                .unwrap_err()
                .problems
                .into_iter()
                .filter(|p| p.starts_with("--ring-dir"))
                .count()
        };
        assert_eq!(trusted("--trust-ring-uid"), 0);
        assert_eq!(trusted("--trust-ring-gid"), 0);
    }
}
