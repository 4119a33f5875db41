//! Launching the children: where their binaries are, and what each is started with
//! (command line, environment, readiness, owned files). Pure functions of the config:
//! the command lines are built with the launch contract the children parse
//! (`framebus_launch`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use framebus_launch::{KernelLaunch, LogFormat, ServerLaunch, Setting};
use shm_ring::ring_path;

use crate::agent::{AgentSpec, SubSpec};
use crate::config::{CameraConfig, Config, ModelConfig};
use crate::supervisor::child::{ChildSpec, StdinSecret};
use crate::supervisor::{ProcessSpec, Readiness};

/// File name of the frame kernel binary.
pub const KERNEL_BIN: &str = "frame-kernel";
/// File name of the model server binary.
pub const SERVER_BIN: &str = "model-server";

/// Where the child binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `frame-kernel`.
    pub kernel: PathBuf,
    /// `model-server`.
    pub server: PathBuf,
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A child binary is missing.
    #[error("{bin} not found at {path} (build the workspace first: cargo build --workspace [--release])")]
    MissingBinary {
        /// Binary name.
        bin: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A ring or socket directory could not be created, or exists and cannot be
    /// trusted (wrong owner, too open a mode, a symlink).
    #[error("ring/socket directory: {0}")]
    Dir(#[from] shm_ring::owned_dir::OwnedDirError),
}

impl Binaries {
    /// The binaries in `dir`, or next to the running executable.
    pub fn locate(dir: Option<&Path>) -> Result<Self, StartError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let kernel = dir.join(KERNEL_BIN);
        let server = dir.join(SERVER_BIN);
        for (bin, path) in [(KERNEL_BIN, &kernel), (SERVER_BIN, &server)] {
            if !path.is_file() {
                return Err(StartError::MissingBinary {
                    bin,
                    path: path.clone(),
                });
            }
        }
        Ok(Self { kernel, server })
    }
}

/// Creates `dir` (mode 0750) if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), StartError> {
    Ok(shm_ring::owned_dir::ensure_owned_dir(dir)?)
}

/// Log settings for the children (see `framebus_launch::logging`): the filter and the
/// format, which every binary reads from the same variables.
pub fn child_env(config: &Config) -> Vec<(String, String)> {
    let log = &config.agent.log;
    vec![
        (crate::config::ENV_LOG.to_owned(), log.clone()),
        (
            crate::config::ENV_LOG_FORMAT.to_owned(),
            config.agent.log_format.as_str().to_owned(),
        ),
        // Their output is a pipe into our log: no colour codes.
        ("NO_COLOR".to_owned(), "1".to_owned()),
    ]
}

/// The model server's command line for model `m`.
pub fn server_launch(config: &Config, m: &ModelConfig) -> ServerLaunch {
    let dir = &config.agent.socket_dir;
    let mut l = ServerLaunch::new(&m.path, m.socket_path(dir));
    l.model_id = Some(m.id.clone());
    l.control_socket = Some(m.control_socket_path(dir));
    l.idle_timeout_ms = config.limits.server_idle_timeout_ms;
    l.ring_dir = config.agent.ring_dir.clone();
    l.family = m.family;
    l.device = m.device;
    // Absent: `auto`, the server calibrates at load (issue 16).
    l.threads = Setting::from_option(m.threads);
    l.instances = Setting::from_option(m.instances);
    // Freshest frame over a late answer: shed requests that waited past the bound.
    l.max_queue_wait_ms = Setting::Auto;
    l.spin = m.spin;
    // A restarted server reuses its last calibration instead of measuring again (the
    // socket directory is private to the agent and its children).
    l.calibration_cache = Some(dir.join(format!("{}.calibration.json", m.id)));
    l.max_batch = Setting::Fixed(m.max_batch as usize);
    l.batch_delay_us = m.batch_delay_us;
    l.score_threshold = m.score_threshold;
    l.iou_threshold = m.iou_threshold;
    l.max_frame = config.limits.max_message_bytes;
    l.log_json = config.agent.log_format == LogFormat::Json;
    l
}

/// The frame kernel's command line for camera `c`. The source is not in it: it goes
/// through a pipe on the kernel's stdin (`--source-fd 0`).
pub fn kernel_launch(config: &Config, c: &CameraConfig) -> KernelLaunch {
    // The source may hold a password: it goes through a pipe on the kernel's stdin,
    // never into its command line, which every local user can read (issue 10,
    // defect 8).
    let mut l = KernelLaunch::new(&c.id, 0);
    l.ring = Some(c.ring_name().to_owned());
    l.ring_dir = config.agent.ring_dir.clone();
    l.format = c.format.as_str().to_owned();
    if let Some(n) = c.ring_slots {
        l.slots = n;
    }
    if let (Some(w), Some(h)) = (c.width, c.height) {
        (l.width, l.height) = (Some(w), Some(h));
    }
    if c.is_url() {
        l.transport = c.transport;
    } else {
        l.realtime = c.realtime;
        l.fast = !c.realtime;
        if c.realtime {
            l.speed = c.speed;
        }
        l.loop_file = c.loop_file;
    }
    // Only the detect `source` is decoded.
    c.decode.apply_to(&mut l, config.consumer_fps(&c.id));
    // Event clips: the kernel keeps the camera's packets in segments; with a
    // `record_source`, that stream's (undecoded), whose URL follows the source on the
    // same stdin pipe.
    config.clips.apply_to(&c.id, &mut l);
    if l.clip_dir.is_some() && c.record_source.is_some() {
        l.record_source_fd = Some(0);
    }
    l.log_format = config.agent.log_format;
    l
}

/// How the model server of `m` is started and supervised.
pub fn server_spec(config: &Config, bins: &Binaries, m: &ModelConfig) -> ProcessSpec {
    let launch = server_launch(config, m);
    let socket = launch.socket.clone();
    let control = m.control_socket_path(&config.agent.socket_dir);
    ProcessSpec {
        child: ChildSpec {
            name: format!("model:{}", m.id),
            program: bins.server.clone(),
            args: launch.to_argv(),
            env: child_env(config),
            cpu_affinity: m.cpu_affinity.clone(),
            log_format: config.agent.log_format,
            stdin: None,
            last_problem: None,
        },
        // Health checks go to the control socket: data clients cannot exhaust it.
        readiness: Readiness::Server {
            socket: control.clone(),
            peer: crate::peer::PeerTrust::SpawnedPid,
        },
        rss_limit_bytes: m.rss_limit_mb.map(|mb| mb << 20),
        owned_files: vec![socket, control],
        max_message_bytes: config.limits.max_message_bytes,
        permanent_exit_codes: vec![],
    }
}

/// What the kernel launched as `l` for camera `c` reads on its stdin: the source, then
/// (when it keeps clips of a `record_source`) the record source on a second line.
fn kernel_stdin(l: &KernelLaunch, c: &CameraConfig) -> String {
    match (&c.record_source, l.record_source_fd) {
        (Some(r), Some(_)) => format!("{}\n{r}", c.source),
        _ => c.source.clone(),
    }
}

/// How the frame kernel of camera `c` is started and supervised.
pub fn kernel_spec(config: &Config, bins: &Binaries, c: &CameraConfig) -> ProcessSpec {
    let dir = &config.agent.ring_dir;
    let launch = kernel_launch(config, c);
    let args: Vec<OsString> = launch.to_argv();
    ProcessSpec {
        child: ChildSpec {
            name: format!("kernel:{}", c.id),
            program: bins.kernel.clone(),
            args,
            env: child_env(config),
            cpu_affinity: c.cpu_affinity.clone(),
            log_format: config.agent.log_format,
            stdin: Some(StdinSecret::new(kernel_stdin(&launch, c).as_bytes())),
            // The system hands the camera's slot in (`System::kernel_spec`).
            last_problem: None,
        },
        readiness: Readiness::Ring {
            dir: dir.clone(),
            name: c.ring_name().to_owned(),
        },
        rss_limit_bytes: c.rss_limit_mb.map(|mb| mb << 20),
        owned_files: vec![ring_path(dir, c.ring_name())],
        max_message_bytes: config.limits.max_message_bytes,
        // The kernel exits with these when its source can never work (not a video,
        // unsupported codec, bad command line): `failed`, not restarted forever.
        permanent_exit_codes: proto_schema::exit::KERNEL_PERMANENT.to_vec(),
    }
}

/// What the stream agent of camera `c` does: its ring and its subscriptions.
pub fn agent_spec(config: &Config, c: &CameraConfig) -> AgentSpec {
    let subs = config
        .subscriptions_of(&c.id)
        .filter_map(|s| {
            let m = config.model(&s.model)?;
            Some(SubSpec {
                model: s.model.clone(),
                socket: m.socket_path(&config.agent.socket_dir),
                fps: s.fps,
                classes: s.classes.clone(),
                max_in_flight: s.max_in_flight.unwrap_or(config.limits.max_in_flight),
            })
        })
        .collect();
    AgentSpec {
        camera: c.id.clone(),
        ring_dir: config.agent.ring_dir.clone(),
        ring: c.ring_name().to_owned(),
        subs,
        request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        drain_timeout: Duration::from_millis(config.limits.drain_timeout_ms),
        max_message: config.limits.max_message_bytes,
        motion: (*c.motion).clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    fn config(extra_agent: &str) -> Config {
        let text = format!(
            r#"
[agent]
ring_dir = "/dev/shm/fb-test"
socket_dir = "/run/fb-test"
{extra_agent}

[[cameras]]
id = "lobby"
source = "rtsp://user:hunter2@127.0.0.1:8554/lobby"
transport = "udp"
fps = 25

[[cameras]]
id = "door"
ring = "door-ring"
source = "/v/door.mp4"
format = "BGR24"
width = 640
height = 360
ring_slots = 16
fps = 25
speed = 2.0
loop = true

[[models]]
id = "yolox"
path = "/m/yolox_nano.onnx"
family = "yolox"
threads = 2
max_batch = 4

[[subscriptions]]
camera = "lobby"
model = "yolox"
fps = 5

[[subscriptions]]
camera = "door"
model = "yolox"
fps = 2
"#
        );
        Config::from_toml(&text, Path::new("t.toml"), Path::new("/cfg")).unwrap()
    }

    fn bins() -> Binaries {
        Binaries {
            kernel: "/bin/frame-kernel".into(),
            server: "/bin/model-server".into(),
        }
    }

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// An RTSP camera: the source through stdin, never in argv; its transport and
    /// subscription rate on the command line; the kernel parses exactly what was built.
    #[test]
    fn rtsp_camera_argv() {
        let c = config("");
        let cam = c.camera("lobby").unwrap();
        let spec = kernel_spec(&c, &bins(), cam);
        let argv = strings(&spec.child.args);
        assert_eq!(
            argv,
            [
                "--camera-id",
                "lobby",
                "--ring",
                "lobby",
                "--source-fd",
                "0",
                "--ring-dir",
                "/dev/shm/fb-test",
                "--transport",
                "udp",
                "--skip-frames",
                "auto",
                "--consumer-fps",
                "5",
                "--log-format",
                "text"
            ]
        );
        assert!(!argv.iter().any(|a| a.contains("hunter2")));
        assert!(spec.child.stdin.is_some(), "the source goes through stdin");
        assert_eq!(
            spec.permanent_exit_codes,
            proto_schema::exit::KERNEL_PERMANENT
        );
        assert_eq!(
            spec.owned_files,
            [PathBuf::from("/dev/shm/fb-test/lobby.ring")]
        );
        let parsed = KernelLaunch::try_parse_from(
            std::iter::once("frame-kernel".into()).chain(spec.child.args),
        )
        .unwrap();
        assert_eq!(parsed, kernel_launch(&c, cam));
    }

    /// A file camera: pacing, speed, loop, size, ring and format flags; no transport.
    #[test]
    fn file_camera_argv() {
        let c = config(r#"log_format = "json""#);
        let l = kernel_launch(&c, c.camera("door").unwrap());
        assert_eq!(
            strings(&l.to_argv()),
            [
                "--camera-id",
                "door",
                "--ring",
                "door-ring",
                "--source-fd",
                "0",
                "--ring-dir",
                "/dev/shm/fb-test",
                "--slots",
                "16",
                "--format",
                "BGR24",
                "--width",
                "640",
                "--height",
                "360",
                "--realtime",
                "--speed",
                "2",
                "--loop",
                "--skip-frames",
                "auto",
                "--consumer-fps",
                "2",
                "--log-format",
                "json"
            ]
        );
    }

    /// A model: sockets in the socket directory, calibration cache next to them, the
    /// config's settings, `auto` where the config leaves them out.
    #[test]
    fn model_argv() {
        let c = config(r#"log_format = "json""#);
        let m = c.model("yolox").unwrap();
        let spec = server_spec(&c, &bins(), m);
        assert_eq!(spec.child.program, PathBuf::from("/bin/model-server"));
        let argv = strings(&spec.child.args);
        assert_eq!(
            argv,
            [
                "--model",
                "/m/yolox_nano.onnx",
                "--model-id",
                "yolox",
                "--socket",
                "/run/fb-test/yolox.sock",
                "--control-socket",
                "/run/fb-test/yolox.sock.ctl",
                "--ring-dir",
                "/dev/shm/fb-test",
                "--family",
                "yolox",
                "--threads",
                "2",
                "--instances",
                "auto",
                "--max-queue-wait-ms",
                "auto",
                "--spin",
                "false",
                "--calibration-cache",
                "/run/fb-test/yolox.calibration.json",
                "--max-batch",
                "4",
                "--log-json"
            ]
        );
        assert_eq!(
            spec.owned_files,
            [
                PathBuf::from("/run/fb-test/yolox.sock"),
                PathBuf::from("/run/fb-test/yolox.sock.ctl")
            ]
        );
        let mut parsed = ServerLaunch::try_parse_from(
            std::iter::once("model-server".into())
                .chain(spec.child.args)
                .chain(["--ort-dylib".into(), "/x.so".into()]),
        )
        .unwrap();
        parsed.ort_dylib = PathBuf::new();
        assert_eq!(parsed, server_launch(&c, m));
    }

    #[test]
    fn agent_spec_lists_the_camera_subscriptions() {
        let c = config("");
        let a = agent_spec(&c, c.camera("door").unwrap());
        assert_eq!((a.camera.as_str(), a.ring.as_str()), ("door", "door-ring"));
        assert_eq!(a.subs.len(), 1);
        assert_eq!(a.subs[0].socket, PathBuf::from("/run/fb-test/yolox.sock"));
        assert_eq!(a.subs[0].fps, 2.0);
    }
}
