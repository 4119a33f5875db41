//! The running system: owns the supervisors of every frame kernel and model server and
//! the stream agents, applies control commands from the API, hot-reloads changed model
//! files and config edits, and shuts everything down in order.
//!
//! The decisions are pure and tested apart: what each child is started with
//! ([`launch`]), whether an API command is admitted ([`control`]), what the API reads
//! ([`view`]), and what a reload changes ([`crate::config::diff::ConfigDiff`]). `System`
//! only applies them to processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::agent::phase::PhaseRegistry;
use crate::agent::AgentHandle;
use crate::clock::Clock;
use crate::config::diff::ConfigDiff;
use crate::config::{validate, CameraConfig, Config, ModelConfig, SubscriptionConfig};
use crate::supervisor::watch::FileWatch;
use crate::supervisor::{ProcStatus, ProcessHandle, ProcessSpec};

pub mod control;
pub mod launch;
pub mod view;

pub use launch::{ensure_dir, Binaries, StartError, KERNEL_BIN, SERVER_BIN};

pub use control::{Command, ControlError};
pub use view::{CameraView, ModelView, Shared, View};

struct ModelRt {
    handle: ProcessHandle,
    file: FileWatch,
}

#[derive(Default)]
struct CameraRt {
    kernel: Option<ProcessHandle>,
    agent: Option<AgentHandle>,
}

/// The running system.
pub struct System {
    config: Config,
    config_watch: Option<(PathBuf, FileWatch)>,
    bins: Binaries,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    models: BTreeMap<String, ModelRt>,
    cameras: BTreeMap<String, CameraRt>,
    api_cameras: BTreeMap<String, (CameraConfig, Vec<SubscriptionConfig>)>,
    /// Phase positions of the subscriptions, per model (spreads each model's load).
    phases: Arc<PhaseRegistry>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("cameras", &self.cameras.keys().collect::<Vec<_>>())
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl System {
    /// A system for a validated `config` (read from `config_path` if given, which is
    /// then watched for edits).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        bins: Binaries,
        clock: Arc<dyn Clock>,
        shared: Arc<Shared>,
    ) -> Self {
        let config_watch = config_path.map(|p| (p.clone(), FileWatch::new(p)));
        Self {
            config,
            config_watch,
            bins,
            clock,
            shared,
            models: BTreeMap::new(),
            cameras: BTreeMap::new(),
            api_cameras: BTreeMap::new(),
            phases: PhaseRegistry::new(),
        }
    }

    fn server_spec(&self, m: &ModelConfig) -> ProcessSpec {
        launch::server_spec(&self.config, &self.bins, m)
    }

    fn kernel_spec(&self, c: &CameraConfig) -> ProcessSpec {
        let mut spec = launch::kernel_spec(&self.config, &self.bins, c);
        // Kept with the camera's metrics: shown by the API, gone with the camera.
        spec.child.last_problem = Some(self.shared.metrics.camera(&c.id).kernel_log.clone());
        spec
    }

    fn publish_view(&self) {
        let view = View::of(
            &self.config,
            |id| self.models.get(id).map(|rt| rt.handle.status()),
            |id| {
                let rt = self.cameras.get(id)?;
                rt.kernel.as_ref().map(|k| k.status())
            },
        );
        self.shared.publish(view);
    }

    fn start_model(&mut self, m: &ModelConfig) {
        let spec = self.server_spec(m);
        let handle = ProcessHandle::spawn(spec, self.config.supervisor.clone(), self.clock.clone());
        self.models.insert(
            m.id.clone(),
            ModelRt {
                handle,
                file: FileWatch::new(&m.path),
            },
        );
    }

    fn start_camera(&mut self, id: &str) {
        let Some(c) = self.config.camera(id).cloned() else {
            return;
        };
        if self.cameras.get(id).is_some_and(|rt| rt.kernel.is_some()) {
            return;
        }
        let kernel = ProcessHandle::spawn(
            self.kernel_spec(&c),
            self.config.supervisor.clone(),
            self.clock.clone(),
        );
        let agent = self.spawn_agent(&c, kernel.status());
        self.cameras.insert(
            id.to_owned(),
            CameraRt {
                kernel: Some(kernel),
                agent: Some(agent),
            },
        );
    }

    fn spawn_agent(&self, c: &CameraConfig, kernel: watch::Receiver<ProcStatus>) -> AgentHandle {
        let spec = launch::agent_spec(&self.config, c);
        let statuses = spec
            .subs
            .iter()
            .map(|s| match self.models.get(&s.model) {
                Some(rt) => rt.handle.status(),
                // Validation guarantees the model exists; a closed channel reads as down.
                None => watch::channel(ProcStatus::default()).1,
            })
            .collect();
        AgentHandle::spawn(
            spec,
            kernel,
            statuses,
            &self.shared.metrics,
            self.shared.results.clone(),
            &self.phases,
        )
    }

    async fn stop_camera(&mut self, id: &str) {
        if let Some(rt) = self.cameras.remove(id) {
            if let Some(a) = rt.agent {
                a.stop().await;
            }
            if let Some(k) = rt.kernel {
                k.stop().await;
            }
        }
    }

    /// Starts every model server, then every enabled camera.
    pub fn start(&mut self) {
        let models = self.config.models.clone();
        for m in &models {
            self.start_model(m);
        }
        let ids: Vec<String> = self
            .config
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.start_camera(&id);
        }
        self.publish_view();
    }

    /// Serves commands and watches files until `shutdown` turns true, then stops
    /// everything in order.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let watch_every = self.config.supervisor.watch_interval_ms;
        let mut tick = tokio::time::interval(Duration::from_millis(watch_every.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(cmd) = commands.recv() => self.on_command(cmd).await,
                _ = tick.tick(), if watch_every > 0 => self.poll_files().await,
            }
        }
        self.shutdown().await;
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AddCamera {
                camera,
                subscriptions,
                reply,
            } => {
                let r = self.add_camera(*camera, subscriptions).await;
                let _ = reply.send(r);
            }
            Command::StartCamera { id, reply } => {
                let r = match self.config.camera(&id) {
                    None => Err(ControlError::NotFound(id)),
                    Some(_) => {
                        self.start_camera(&id);
                        self.publish_view();
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Command::StopCamera { id, reply } => {
                let r = match self.config.camera(&id) {
                    None => Err(ControlError::NotFound(id)),
                    Some(_) => {
                        self.stop_camera(&id).await;
                        self.publish_view();
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Command::RemoveCamera { id, reply } => {
                let r = match self.config.camera(&id) {
                    None => Err(ControlError::NotFound(id)),
                    Some(_) => {
                        self.stop_camera(&id).await;
                        control::forget_camera(&mut self.config, &id);
                        self.api_cameras.remove(&id);
                        self.shared.metrics.remove_camera(&id);
                        self.publish_view();
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
        }
    }

    /// Validates the camera against the running config (same checks as the file) and
    /// starts it when enabled.
    async fn add_camera(
        &mut self,
        camera: CameraConfig,
        subs: Vec<SubscriptionConfig>,
    ) -> Result<(), ControlError> {
        let (candidate, camera) = control::admit_camera(&self.config, camera, subs.clone())?;
        tracing::info!(camera = %camera.id, "camera added through the API");
        self.config = candidate;
        self.api_cameras
            .insert(camera.id.clone(), (camera.clone(), subs));
        if camera.enabled {
            self.start_camera(&camera.id);
        }
        self.publish_view();
        Ok(())
    }

    async fn poll_files(&mut self) {
        for (id, rt) in &mut self.models {
            if rt.file.poll() {
                tracing::info!(model = %id, file = %rt.file.path().display(), "model file changed: restarting its server");
                rt.handle.restart("model file changed").await;
            }
        }
        let changed = match &mut self.config_watch {
            Some((_, w)) => w.poll(),
            None => false,
        };
        if changed {
            self.reload_config().await;
        }
    }

    async fn reload_config(&mut self) {
        let Some((path, _)) = &self.config_watch else {
            return;
        };
        let path = path.clone();
        let mut next = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "config changed but cannot be loaded, keeping the running one: {e}"
                );
                return;
            }
        };
        // Cameras added through the API survive a reload.
        for (cam, subs) in self.api_cameras.values() {
            if next.camera(&cam.id).is_none() {
                next.cameras.push(cam.clone());
                next.subscriptions.extend(subs.iter().cloned());
            }
        }
        if let Err(e) = validate(&next, true) {
            tracing::error!("config changed but is invalid, keeping the running one: {e}");
            return;
        }
        let diff = ConfigDiff::between(&self.config, &next);
        self.config = next;
        if !diff.needs_restart.is_empty() {
            tracing::warn!(
                sections = ?diff.needs_restart,
                "config: these sections' changes apply at the next start"
            );
        }
        self.apply(&diff).await;
        self.publish_view();
    }

    /// Applies a reload's diff (the config is already the new one): restarts exactly
    /// what it lists.
    async fn apply(&mut self, diff: &ConfigDiff) {
        let new = self.config.clone();
        // Rules apply at the stage's next record; they restart nothing.
        if diff.rules_changed
            && self.shared.analytics.set_rules(
                new.analytics.clone(),
                crate::analytics::stage::AnalyticsShared::rules_of(&new),
            )
        {
            tracing::info!("config: analytics rules reloaded");
        }
        for id in &diff.models_removed {
            if let Some(rt) = self.models.remove(id) {
                tracing::info!(model = %id, "model removed from the config");
                rt.handle.stop().await;
            }
        }
        for id in &diff.models_changed {
            let Some(n) = new.model(id) else { continue };
            tracing::info!(model = %id, "model config changed: restarting its server");
            let spec = self.server_spec(n);
            if let Some(rt) = self.models.get_mut(id) {
                rt.file = FileWatch::new(&n.path);
                rt.handle.replace(spec, "config changed").await;
            }
        }
        for id in &diff.models_added {
            if let Some(m) = new.model(id) {
                tracing::info!(model = %id, "model added to the config");
                self.start_model(m);
            }
        }
        for id in &diff.cameras_removed {
            tracing::info!(camera = %id, "camera removed from the config");
            self.stop_camera(id).await;
            self.shared.metrics.remove_camera(id);
        }
        for id in &diff.cameras_changed {
            tracing::info!(camera = %id, "camera config changed: restarting it");
            self.stop_camera(id).await;
            if new.camera(id).is_some_and(|c| c.enabled) {
                self.start_camera(id);
            }
        }
        for id in &diff.kernels_restarted {
            let Some(n) = new.camera(id) else { continue };
            if let Some(k) = self.cameras.get(id).and_then(|rt| rt.kernel.as_ref()) {
                tracing::info!(camera = %id, "subscription rates changed: restarting its kernel");
                k.replace(self.kernel_spec(n), "subscription rates changed")
                    .await;
            }
        }
        for id in &diff.cameras_added {
            tracing::info!(camera = %id, "camera added to the config");
            self.start_camera(id);
        }
        for id in &diff.agents_restarted {
            let Some(c) = new.camera(id).cloned() else {
                continue;
            };
            let kernel = self.cameras.get_mut(id).and_then(|rt| {
                let k = rt.kernel.as_ref()?.status();
                Some((rt.agent.take(), k))
            });
            if let Some((agent, kstatus)) = kernel {
                tracing::info!(camera = %id, "subscriptions changed: restarting its agent");
                if let Some(a) = agent {
                    a.stop().await;
                }
                let a = self.spawn_agent(&c, kstatus);
                if let Some(rt) = self.cameras.get_mut(id) {
                    rt.agent = Some(a);
                }
            }
        }
    }

    /// Stops agents (draining answers in flight), then model servers, then kernels; the
    /// supervisors remove the rings and sockets.
    async fn shutdown(mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!("stopping stream agents");
        let mut kernels = Vec::new();
        let mut agents = Vec::new();
        for (_, rt) in std::mem::take(&mut self.cameras) {
            agents.extend(rt.agent);
            kernels.extend(rt.kernel);
        }
        futures_join(agents.into_iter().map(|a| a.stop())).await;
        tracing::info!("stopping model servers");
        futures_join(
            std::mem::take(&mut self.models)
                .into_values()
                .map(|m| m.handle.stop()),
        )
        .await;
        tracing::info!("stopping frame kernels");
        futures_join(kernels.into_iter().map(|k| k.stop())).await;
        self.publish_view();
        tracing::info!("all children stopped");
    }
}

/// Runs futures concurrently and waits for all (tasks, so one slow stop does not
/// serialise the others).
async fn futures_join<F>(futs: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Removes `files` (emergency cleanup on the second signal).
pub fn remove_files(files: &BTreeSet<PathBuf>) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}
