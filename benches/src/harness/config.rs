//! Generation of the core-agent config (TOML) for a benchmark run.
//!
//! The structs mirror the parts of core-agent's config schema the harness sets; everything
//! else keeps core-agent's documented defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where a camera's frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file played as a live camera (realtime pacing, looped).
    File { path: PathBuf, realtime: bool },
    /// An RTSP URL (a fake camera on loopback); `record` is the camera's main stream
    /// when `url` is its detection substream (`record_source`).
    Rtsp { url: String, record: Option<String> },
}

/// How the harness provides the cameras.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The footage as a file source in realtime mode (default).
    #[default]
    File,
    /// The footage served by fake RTSP cameras on loopback.
    Rtsp,
    /// Fake RTSP cameras with two streams each: the footage as the main stream, kept for
    /// clips and never decoded (`record_source`, clips on), and the footage scaled to
    /// 480x270 as the substream that detection decodes (`source`).
    Substream,
    /// The footage scaled to 480x270 (a camera's detection substream) as realtime file
    /// sources, nothing recorded: what detection costs with a substream, without the
    /// fake camera server's load on the machine.
    SubstreamFile,
}

/// What to run: cameras, models and who subscribes to what.
#[derive(Debug, Clone)]
pub struct SystemSpec {
    /// File cameras are turned into fake RTSP cameras at start when this is `Rtsp`.
    pub source: SourceKind,
    pub cameras: Vec<CameraSpec>,
    pub models: Vec<ModelSpec>,
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Requests in flight per (camera, model).
    pub max_in_flight: u32,
    /// Log filter handed to core-agent and its children.
    pub log: String,
    /// The motion gate (`[cameras.motion] enabled`) on every camera.
    pub motion: bool,
}

#[derive(Debug, Clone)]
pub struct CameraSpec {
    pub id: String,
    pub source: Source,
    /// Nominal frame rate (used by core-agent to check subscriptions).
    pub fps: f64,
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub path: PathBuf,
    /// Intra-op threads per instance; `None`: the server calibrates (`auto`).
    pub threads: Option<u32>,
    /// Session instances; `None`: the server calibrates (`auto`).
    pub instances: Option<u32>,
    /// Idle intra-op threads spin (`models.<id>.spin`).
    pub spin: bool,
}

#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub camera: String,
    pub model: String,
    pub fps: f64,
}

/// Directories and addresses of one run (all inside temp dirs of the harness).
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub api_addr: SocketAddr,
    pub ring_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub results: PathBuf,
}

impl SystemSpec {
    /// `cameras` file cameras named `cam0..`, each subscribed to every model at `det_fps`.
    pub fn file_cameras(
        cameras: usize,
        video: &Path,
        camera_fps: f64,
        models: Vec<ModelSpec>,
        det_fps: f64,
    ) -> SystemSpec {
        let cams: Vec<CameraSpec> = (0..cameras)
            .map(|i| CameraSpec {
                id: format!("cam{i}"),
                source: Source::File {
                    path: video.to_path_buf(),
                    realtime: true,
                },
                fps: camera_fps,
            })
            .collect();
        let subscriptions = cams
            .iter()
            .flat_map(|c| {
                models.iter().map(move |m| SubscriptionSpec {
                    camera: c.id.clone(),
                    model: m.id.clone(),
                    fps: det_fps,
                })
            })
            .collect();
        SystemSpec {
            source: SourceKind::File,
            cameras: cams,
            models,
            subscriptions,
            max_in_flight: 1,
            log: "warn".to_string(),
            motion: false,
        }
    }

    /// Total requested inferences per second of `model`.
    pub fn requested_fps(&self, model: &str) -> f64 {
        self.subscriptions
            .iter()
            .filter(|s| s.model == model)
            .map(|s| s.fps)
            .sum()
    }

    /// The core-agent config file text.
    pub fn to_toml(&self, paths: &RunPaths) -> Result<String, toml::ser::Error> {
        let file = File {
            agent: Agent {
                api_addr: paths.api_addr.to_string(),
                ring_dir: paths.ring_dir.clone(),
                socket_dir: paths.socket_dir.clone(),
                bin_dir: paths.bin_dir.clone(),
                log: self.log.clone(),
                live_table: false,
            },
            limits: LimitsOut {
                max_in_flight: self.max_in_flight,
            },
            cameras: self
                .cameras
                .iter()
                .map(|c| {
                    let (source, realtime, record_source) = match &c.source {
                        Source::File { path, realtime } => {
                            (path.display().to_string(), Some(*realtime), None)
                        }
                        Source::Rtsp { url, record } => (url.clone(), None, record.clone()),
                    };
                    CameraOut {
                        id: c.id.clone(),
                        source,
                        record_source,
                        fps: c.fps,
                        realtime,
                        loop_file: realtime.map(|_| true),
                        motion: self.motion.then_some(MotionOut { enabled: true }),
                    }
                })
                .collect(),
            models: self
                .models
                .iter()
                .map(|m| ModelOut {
                    id: m.id.clone(),
                    path: m.path.clone(),
                    threads: m.threads,
                    instances: m.instances,
                    spin: m.spin,
                })
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| SubOut {
                    camera: s.camera.clone(),
                    model: s.model.clone(),
                    fps: s.fps,
                })
                .collect(),
            outputs: vec![OutputOut {
                kind: "jsonl",
                path: paths.results.clone(),
            }],
            // A main stream is only opened to keep clips of it.
            clips: self
                .cameras
                .iter()
                .any(|c| {
                    matches!(
                        c.source,
                        Source::Rtsp {
                            record: Some(_),
                            ..
                        }
                    )
                })
                .then(|| ClipsOut {
                    cameras: vec!["*".into()],
                    dir: paths.results.with_file_name("clips"),
                }),
        };
        toml::to_string_pretty(&file)
    }
}

#[derive(Serialize)]
struct File {
    agent: Agent,
    limits: LimitsOut,
    cameras: Vec<CameraOut>,
    models: Vec<ModelOut>,
    subscriptions: Vec<SubOut>,
    outputs: Vec<OutputOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clips: Option<ClipsOut>,
}

/// `[clips]`: which cameras keep clips, and where.
#[derive(Serialize)]
struct ClipsOut {
    cameras: Vec<String>,
    dir: PathBuf,
}

#[derive(Serialize)]
struct Agent {
    api_addr: String,
    ring_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    log: String,
    live_table: bool,
}

#[derive(Serialize)]
struct LimitsOut {
    max_in_flight: u32,
}

#[derive(Serialize)]
struct CameraOut {
    id: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_source: Option<String>,
    fps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    realtime: Option<bool>,
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    loop_file: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    motion: Option<MotionOut>,
}

/// `[cameras.motion]`: the gate on with its documented defaults.
#[derive(Serialize)]
struct MotionOut {
    enabled: bool,
}

#[derive(Serialize)]
struct ModelOut {
    id: String,
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<u32>,
    spin: bool,
}

#[derive(Serialize)]
struct SubOut {
    camera: String,
    model: String,
    fps: f64,
}

#[derive(Serialize)]
struct OutputOut {
    #[serde(rename = "type")]
    kind: &'static str,
    path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> RunPaths {
        RunPaths {
            api_addr: "127.0.0.1:4555".parse().unwrap(),
            ring_dir: "/dev/shm/fb-bench-x".into(),
            socket_dir: "/tmp/fb-bench-x/sock".into(),
            bin_dir: "/w/target/release".into(),
            results: "/tmp/fb-bench-x/results.jsonl".into(),
        }
    }

    fn spec() -> SystemSpec {
        SystemSpec::file_cameras(
            3,
            Path::new("/a/video.mp4"),
            25.0,
            vec![
                ModelSpec {
                    id: "yolov8".into(),
                    path: "/a/y8.onnx".into(),
                    threads: Some(2),
                    instances: Some(1),
                    spin: true,
                },
                ModelSpec {
                    id: "yolox".into(),
                    path: "/a/yx.onnx".into(),
                    threads: None,
                    instances: Some(2),
                    spin: false,
                },
            ],
            5.0,
        )
    }

    #[test]
    fn every_camera_subscribes_to_every_model() {
        let s = spec();
        assert_eq!(s.cameras.len(), 3);
        assert_eq!(s.subscriptions.len(), 6);
        assert_eq!(s.requested_fps("yolov8"), 15.0);
        assert_eq!(s.requested_fps("none"), 0.0);
    }

    #[test]
    fn toml_has_the_schema_core_agent_reads() {
        let text = spec().to_toml(&paths()).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["agent"]["api_addr"].as_str(), Some("127.0.0.1:4555"));
        assert_eq!(v["agent"]["ring_dir"].as_str(), Some("/dev/shm/fb-bench-x"));
        assert_eq!(v["agent"]["live_table"].as_bool(), Some(false));
        assert_eq!(v["limits"]["max_in_flight"].as_integer(), Some(1));
        let cams = v["cameras"].as_array().unwrap();
        assert_eq!(cams[2]["id"].as_str(), Some("cam2"));
        assert_eq!(cams[0]["source"].as_str(), Some("/a/video.mp4"));
        assert_eq!(cams[0]["realtime"].as_bool(), Some(true));
        assert_eq!(cams[0]["loop"].as_bool(), Some(true));
        assert_eq!(cams[0]["fps"].as_float(), Some(25.0));
        let models = v["models"].as_array().unwrap();
        assert_eq!(models[1]["instances"].as_integer(), Some(2));
        assert!(models[1].get("threads").is_none(), "absent: calibrated");
        assert!(cams[0].get("motion").is_none());
        assert_eq!(v["subscriptions"].as_array().unwrap().len(), 6);
        assert_eq!(v["outputs"][0]["type"].as_str(), Some("jsonl"));
    }

    #[test]
    fn core_agent_accepts_the_generated_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = paths();
        p.ring_dir = dir.path().join("rings");
        p.socket_dir = dir.path().join("sock");
        p.results = dir.path().join("results.jsonl");
        let mut spec = spec();
        spec.motion = true;
        let text = spec.to_toml(&p).unwrap();
        let config =
            core_agent::config::Config::from_toml(&text, Path::new("bench.toml"), dir.path())
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        // Files are not checked: the paths of this test do not exist.
        core_agent::config::validate(&config, false).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.cameras.len(), 3);
        assert_eq!(config.subscriptions.len(), 6);
        assert_eq!(config.limits.max_in_flight, 1);
        assert!(config.cameras.iter().all(|c| c.motion.enabled));
        assert_eq!(config.models[0].threads, Some(2));
        assert_eq!(config.models[1].threads, None);
    }

    #[test]
    fn rtsp_cameras_have_no_file_options() {
        let mut s = spec();
        s.cameras[0].source = Source::Rtsp {
            url: "rtsp://127.0.0.1:8554/cam".into(),
            record: None,
        };
        let v: toml::Value = toml::from_str(&s.to_toml(&paths()).unwrap()).unwrap();
        let cam = &v["cameras"][0];
        assert_eq!(cam["source"].as_str(), Some("rtsp://127.0.0.1:8554/cam"));
        assert!(cam.get("realtime").is_none() && cam.get("loop").is_none());
        assert!(cam.get("record_source").is_none() && v.get("clips").is_none());
    }

    /// A substream camera: `source` is the substream, `record_source` the main stream,
    /// and clips are on (the main stream is only opened to keep clips of it); core-agent
    /// accepts the file.
    #[test]
    fn substream_cameras_record_their_main_stream() {
        let mut s = spec();
        for c in &mut s.cameras {
            c.source = Source::Rtsp {
                url: format!("rtsp://127.0.0.1:8554/{}-sub", c.id),
                record: Some(format!("rtsp://127.0.0.1:8554/{}", c.id)),
            };
        }
        let text = s.to_toml(&paths()).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        let cam = &v["cameras"][1];
        assert_eq!(
            cam["source"].as_str(),
            Some("rtsp://127.0.0.1:8554/cam1-sub")
        );
        assert_eq!(
            cam["record_source"].as_str(),
            Some("rtsp://127.0.0.1:8554/cam1")
        );
        assert_eq!(v["clips"]["cameras"][0].as_str(), Some("*"));
        assert_eq!(v["clips"]["dir"].as_str(), Some("/tmp/fb-bench-x/clips"));
        let config: core_agent::config::Config = toml::from_str(&text).unwrap();
        core_agent::config::validate(&config, false).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
