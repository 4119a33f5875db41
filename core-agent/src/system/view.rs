//! What the API, the dashboard and the live table read of the running system: the
//! [`View`] (configs and process statuses), rebuilt by the system after every change,
//! and the [`Shared`] state it sits in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use shm_ring::ring_path;
use tokio::sync::watch;

use crate::config::{CameraConfig, Config, ModelConfig, SubscriptionConfig};
use crate::metrics::Metrics;
use crate::results::ResultQueue;
use crate::supervisor::ProcStatus;

/// A camera as the API sees it.
#[derive(Debug, Clone)]
pub struct CameraView {
    /// Its config.
    pub config: CameraConfig,
    /// Whether it runs (kernel and agent started).
    pub running: bool,
    /// Its kernel's status, while running.
    pub kernel: Option<watch::Receiver<ProcStatus>>,
}

/// A model as the API sees it.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Its config.
    pub config: ModelConfig,
    /// Its server's status.
    pub status: watch::Receiver<ProcStatus>,
}

/// What the API and the live table read.
#[derive(Debug, Default)]
pub struct View {
    /// Cameras by id.
    pub cameras: BTreeMap<String, CameraView>,
    /// Models by id.
    pub models: BTreeMap<String, ModelView>,
    /// All subscriptions.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Files the children own (rings, sockets), for the emergency cleanup.
    pub owned_files: BTreeSet<PathBuf>,
}

impl View {
    /// The view of `config` with the statuses of the processes that run:
    /// `server_status(model id)` for each started model server, `kernel_status(camera
    /// id)` for each running kernel. A model without a server is left out; a camera
    /// without a kernel is listed as stopped. Every configured ring and socket is an
    /// owned file, running or not.
    pub fn of(
        config: &Config,
        server_status: impl Fn(&str) -> Option<watch::Receiver<ProcStatus>>,
        kernel_status: impl Fn(&str) -> Option<watch::Receiver<ProcStatus>>,
    ) -> View {
        let models = config
            .models
            .iter()
            .filter_map(|m| {
                let status = server_status(&m.id)?;
                Some((
                    m.id.clone(),
                    ModelView {
                        config: m.clone(),
                        status,
                    },
                ))
            })
            .collect();
        let cameras = config
            .cameras
            .iter()
            .map(|c| {
                let kernel = kernel_status(&c.id);
                (
                    c.id.clone(),
                    CameraView {
                        config: c.clone(),
                        running: kernel.is_some(),
                        kernel,
                    },
                )
            })
            .collect();
        let rings = &config.agent.ring_dir;
        let sockets = &config.agent.socket_dir;
        let owned_files = config
            .cameras
            .iter()
            .map(|c| ring_path(rings, c.ring_name()))
            .chain(
                config
                    .models
                    .iter()
                    .flat_map(|m| [m.socket_path(sockets), m.control_socket_path(sockets)]),
            )
            .collect();
        View {
            cameras,
            models,
            subscriptions: config.subscriptions.clone(),
            owned_files,
        }
    }
}

/// State shared between the system task, the API and the live table.
#[derive(Debug)]
pub struct Shared {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The result queue.
    pub results: Arc<ResultQueue>,
    /// Analytics rules, counters and counts.
    pub analytics: Arc<crate::analytics::stage::AnalyticsShared>,
    /// Live view: newest results, encoders, viewers.
    pub live: Arc<crate::live::LiveShared>,
    /// Event clips, when a camera records them.
    pub clips: Option<Arc<crate::clips::Clips>>,
    /// What runs.
    pub view: RwLock<View>,
    /// Set once shutdown began.
    pub shutting_down: AtomicBool,
    /// The API's address.
    pub api_addr: SocketAddr,
    /// The broker sinks (MQTT, Redis), for `/health` and `/metrics`.
    pub brokers: Arc<crate::outputs::Brokers>,
    /// The API listener's connection counters, for `/metrics`.
    pub api_connections: Arc<crate::api::listener::ConnectionStats>,
}

impl Shared {
    /// Reads the view.
    pub fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the view.
    pub(super) fn publish(&self, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let text = r#"
[agent]
ring_dir = "/dev/shm/fb-view"
socket_dir = "/run/fb-view"

[[cameras]]
id = "lobby"
source = "rtsp://127.0.0.1:8554/lobby"
fps = 25

[[cameras]]
id = "door"
ring = "door-ring"
source = "rtsp://127.0.0.1:8554/door"
fps = 25
enabled = false

[[models]]
id = "yolox"
path = "/m/yolox_nano.onnx"

[[models]]
id = "spare"
path = "/m/spare.onnx"

[[subscriptions]]
camera = "lobby"
model = "yolox"
fps = 5
"#;
        Config::from_toml(text, Path::new("t.toml"), Path::new("/cfg")).unwrap()
    }

    #[test]
    fn the_view_lists_what_runs_and_every_owned_file() {
        let c = config();
        let (_tx, rx) = watch::channel(ProcStatus::default());
        let v = View::of(
            &c,
            |m| (m == "yolox").then(|| rx.clone()),
            |cam| (cam == "lobby").then(|| rx.clone()),
        );
        assert_eq!(v.models.keys().collect::<Vec<_>>(), ["yolox"]);
        assert_eq!(v.cameras.keys().collect::<Vec<_>>(), ["door", "lobby"]);
        assert!(v.cameras["lobby"].running && v.cameras["lobby"].kernel.is_some());
        assert!(!v.cameras["door"].running && v.cameras["door"].kernel.is_none());
        assert_eq!(v.subscriptions, c.subscriptions);
        let owned: Vec<&str> = v.owned_files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            owned,
            [
                "/dev/shm/fb-view/door-ring.ring",
                "/dev/shm/fb-view/lobby.ring",
                "/run/fb-view/spare.sock",
                "/run/fb-view/spare.sock.ctl",
                "/run/fb-view/yolox.sock",
                "/run/fb-view/yolox.sock.ctl"
            ]
        );
    }
}
