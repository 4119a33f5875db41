//! Supervision of the child processes: one task per frame kernel or model server that
//! starts it, waits until it is ready, checks its health, and restarts it with backoff
//! when it exits, hangs or outgrows its memory limit, until too many restarts within the
//! window mark it failed.
//!
//! Each task publishes a [`ProcStatus`] on a watch channel; `ready_epoch` goes up every
//! time the process becomes ready, which is how stream agents learn that a ring was
//! recreated or a server came back.

pub mod child;
pub mod policy;
pub mod probe;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_schema::calibration::Calibration;
use serde::Serialize;
use tokio::sync::{mpsc, watch as wch};
use tokio::task::JoinHandle;

use crate::clock::{Clock, MonoNanos, UnixNanos};
use crate::config::SupervisorSettings;
use crate::peer::{ExpectedPeer, PeerTrust};
use child::{ChildSpec, RunningChild};
use policy::{Decision, RestartPolicy};

/// Life-cycle state of a supervised process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// Started, not ready yet (model loading, camera connecting).
    Starting,
    /// Ready and healthy.
    Ready,
    /// Failed; waiting before the next start.
    Backoff,
    /// Given up after too many restarts; see `last_error`. Tried again after the
    /// cool-down (`failed_retry_s`; see `next_retry_unix_ms`).
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped on request.
    Stopped,
}

impl ProcState {
    /// Name as shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Backoff => "backoff",
            ProcState::Failed => "failed",
            ProcState::Stopping => "stopping",
            ProcState::Stopped => "stopped",
        }
    }
}

/// What a supervisor reports about its process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcStatus {
    /// Current state.
    pub state: ProcState,
    /// Pid of the running child.
    pub pid: Option<u32>,
    /// Times the process was started again (after failures, reloads and requests).
    pub restarts: u32,
    /// Goes up each time the process becomes ready.
    pub ready_epoch: u64,
    /// Why it last failed (exit, hang, memory, not ready), kept after it recovered.
    pub last_error: Option<String>,
    /// Why it was last started again: the failure, or the request (reload, operator).
    pub last_restart: Option<String>,
    /// Milliseconds from the last start to ready (the model's load time, the camera's
    /// connect time).
    pub start_to_ready_ms: Option<u64>,
    /// Milliseconds from the last failure being noticed to ready again.
    pub last_recovery_ms: Option<u64>,
    /// Times the process was tried again after it had been marked failed.
    pub failed_retries: u32,
    /// While failed: when it will be tried again (Unix ms); `None` when not failed or
    /// never retried (`failed_retry_s = 0`).
    pub next_retry_unix_ms: Option<u64>,
    /// Leftover files (a ring, a socket of a process that died without cleaning up)
    /// removed before a start.
    pub leftovers_removed: u64,
    /// Probes refused because another process than the spawned one answered.
    pub peer_refused: u64,
    /// Health checks the agent could not make (it was out of descriptors or memory
    /// itself): never counted against the process.
    pub checks_inconclusive: u64,
    /// A model server's threads x instances x batch and how they were chosen, as its
    /// `status` said when it became ready.
    pub calibration: Option<Calibration>,
}

impl Default for ProcStatus {
    fn default() -> Self {
        Self {
            state: ProcState::Starting,
            pid: None,
            restarts: 0,
            ready_epoch: 0,
            last_error: None,
            last_restart: None,
            start_to_ready_ms: None,
            last_recovery_ms: None,
            failed_retries: 0,
            next_retry_unix_ms: None,
            leftovers_removed: 0,
            peer_refused: 0,
            checks_inconclusive: 0,
            calibration: None,
        }
    }
}

/// How readiness and health are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// A frame kernel: its ring exists, names its pid, is not closed and heartbeats.
    Ring {
        /// Ring directory.
        dir: PathBuf,
        /// Ring name.
        name: String,
    },
    /// A model server: `get_status` says ready; then `ping` answers. Every probe
    /// checks first that the peer is the spawned process (`SO_PEERCRED`).
    Server {
        /// Socket the probes use (the server's control socket).
        socket: PathBuf,
        /// Who must be listening.
        peer: PeerTrust,
    },
}

/// Everything needed to run one supervised process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Command line and logging.
    pub child: ChildSpec,
    /// Readiness and health checks.
    pub readiness: Readiness,
    /// Kill and restart above this resident memory.
    pub rss_limit_bytes: Option<u64>,
    /// Files the process owns (its ring, its socket): removed before each start and
    /// after the stop.
    pub owned_files: Vec<PathBuf>,
    /// Largest message accepted from a server probe.
    pub max_message_bytes: usize,
    /// Exit statuses by which the process says that restarting it cannot help (for
    /// `frame-kernel`: [`proto_schema::exit::KERNEL_PERMANENT`], e.g. a source that is
    /// not a video). Such an exit marks it `Failed` at once with its reason, without
    /// the restart backoff. Empty: every exit is retried.
    pub permanent_exit_codes: Vec<i32>,
}

/// Requests to a supervisor.
#[derive(Debug)]
pub enum Control {
    /// Stop the process and start it again (not counted as a failure).
    Restart(String),
    /// Start it again with a new spec (config or model file changed).
    Replace(Box<ProcessSpec>, String),
    /// Stop it and end supervision.
    Stop,
}

/// The owner's side of one supervisor task.
#[derive(Debug)]
pub struct ProcessHandle {
    name: String,
    status: wch::Receiver<ProcStatus>,
    ctrl: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl ProcessHandle {
    /// Starts supervising `spec`.
    pub fn spawn(spec: ProcessSpec, settings: SupervisorSettings, clock: Arc<dyn Clock>) -> Self {
        let (status_tx, status) = wch::channel(ProcStatus::default());
        let (ctrl_tx, ctrl) = mpsc::channel(8);
        let name = spec.child.name.clone();
        let sup = Supervisor {
            spec,
            settings,
            clock,
            status: status_tx,
            ctrl,
        };
        let task = tokio::spawn(sup.run());
        Self {
            name,
            status,
            ctrl: ctrl_tx,
            task,
        }
    }

    /// Process name (`kernel:cam1`, `model:yolov8n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of status updates.
    pub fn status(&self) -> wch::Receiver<ProcStatus> {
        self.status.clone()
    }

    /// The current status.
    pub fn current(&self) -> ProcStatus {
        self.status.borrow().clone()
    }

    /// Asks for a restart (also revives a failed process).
    pub async fn restart(&self, reason: impl Into<String>) {
        let _ = self.ctrl.send(Control::Restart(reason.into())).await;
    }

    /// Asks for a restart with a new spec.
    pub async fn replace(&self, spec: ProcessSpec, reason: impl Into<String>) {
        let _ = self
            .ctrl
            .send(Control::Replace(Box::new(spec), reason.into()))
            .await;
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace time) and waits for the
    /// supervisor to end.
    pub async fn stop(self) {
        let _ = self.ctrl.send(Control::Stop).await;
        let _ = self.task.await;
    }
}

/// Why one run of the child failed; it is restarted after the backoff.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The process could not be started.
    #[error(transparent)]
    Spawn(#[from] child::SpawnError),
    /// It started but never became ready (the readiness probe's reason).
    #[error("{0}")]
    NotReady(String),
    /// It exited (the exit status, described).
    #[error("{0}")]
    Exited(String),
    /// Its resident memory went over the configured limit; it was killed.
    #[error("resident memory {rss_mib} MiB over the limit of {limit_mib} MiB")]
    OverMemory {
        /// Resident memory when measured, MiB.
        rss_mib: u64,
        /// The limit, MiB.
        limit_mib: u64,
    },
    /// Too many health checks in a row failed; it was killed.
    #[error("unhealthy, killed: {0}")]
    Unhealthy(#[source] probe::ProbeError),
}

impl Failure {
    /// Whether the failure is the agent's own (out of descriptors or memory when
    /// starting the child), not the child's.
    fn is_local(&self) -> bool {
        match self {
            Failure::Spawn(
                child::SpawnError::Spawn { source, .. }
                | child::SpawnError::StdinPipe { source, .. },
            ) => crate::fds::out_of_resources(source),
            Failure::Unhealthy(reason) => reason.is_local(),
            _ => false,
        }
    }
}

enum Outcome {
    Failed(Failure),
    /// Exited with one of the spec's permanent exit codes.
    Permanent(String),
    Restart(String),
    Stop,
}

enum Event {
    Ready(Result<Option<Calibration>, NotReady>),
    Exited(std::io::Result<ExitStatus>),
    Control(Option<Control>),
    Tick,
}

struct Supervisor {
    spec: ProcessSpec,
    settings: SupervisorSettings,
    clock: Arc<dyn Clock>,
    status: wch::Sender<ProcStatus>,
    ctrl: mpsc::Receiver<Control>,
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut ProcStatus)) {
        self.status.send_modify(f);
    }

    fn name(&self) -> &str {
        &self.spec.child.name
    }

    /// Removes the process's files; returns those that existed.
    fn remove_owned_files(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for f in &self.spec.owned_files {
            match std::fs::remove_file(f) {
                Ok(()) => removed.push(f.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(process = self.name(), file = %f.display(), "cannot remove: {e}")
                }
            }
        }
        removed
    }

    /// Before a start: anything still there was left by a process that died without
    /// cleaning up (kill -9, an agent killed with it): removed, logged and counted.
    fn remove_leftovers(&self) {
        let removed = self.remove_owned_files();
        if !removed.is_empty() {
            let list: Vec<String> = removed.iter().map(|f| f.display().to_string()).collect();
            tracing::warn!(
                process = self.name(),
                files = %list.join(", "),
                "removed {} leftover file(s) of an earlier run",
                removed.len()
            );
            self.update(|s| s.leftovers_removed += removed.len() as u64);
        }
    }

    async fn run(mut self) {
        let mut policy = RestartPolicy::new(&self.settings, self.clock.clone());
        let mut failed_at: Option<Instant> = None;
        'outer: loop {
            let reason = match self.run_once(&mut failed_at).await {
                Outcome::Stop => break,
                Outcome::Restart(reason) => {
                    tracing::info!(process = self.name(), "restarting: {reason}");
                    policy.reset();
                    failed_at = None;
                    self.update(|s| {
                        s.restarts += 1;
                        s.last_restart = Some(reason);
                    });
                    continue;
                }
                Outcome::Failed(failure) => failure,
                Outcome::Permanent(reason) => {
                    // The child said retrying cannot help: failed now, no backoff; only
                    // an operator's restart or a new spec starts it again.
                    let why = format!("{reason} (permanent error; not restarted)");
                    tracing::error!(process = self.name(), "{why}");
                    self.update(|s| {
                        s.state = ProcState::Failed;
                        s.pid = None;
                        s.last_error = Some(why);
                    });
                    self.remove_owned_files();
                    match self.ctrl.recv().await {
                        None | Some(Control::Stop) => break 'outer,
                        Some(Control::Restart(_)) => {}
                        Some(Control::Replace(spec, _)) => self.spec = *spec,
                    }
                    policy.reset();
                    failed_at = None;
                    self.update(|s| s.restarts += 1);
                    continue;
                }
            };
            let local = reason.is_local();
            let reason = reason.to_string();
            tracing::warn!(process = self.name(), "failed: {reason}");
            failed_at.get_or_insert_with(Instant::now);
            // A start that failed for want of the agent's own descriptors is retried,
            // never counted towards giving up on the process.
            let decision = if local {
                Decision::RestartAfter(Duration::from_millis(self.settings.backoff_initial_ms))
            } else {
                policy.on_failure()
            };
            match decision {
                Decision::RestartAfter(delay) => {
                    self.update(|s| {
                        s.state = ProcState::Backoff;
                        s.pid = None;
                        s.last_restart = Some(reason.clone());
                        s.last_error = Some(reason);
                    });
                    let event = tokio::select! {
                        _ = tokio::time::sleep(delay) => None,
                        c = self.ctrl.recv() => Some(c),
                    };
                    match event {
                        None => {}
                        Some(None | Some(Control::Stop)) => break,
                        Some(Some(Control::Restart(_))) => policy.reset(),
                        Some(Some(Control::Replace(spec, _))) => {
                            self.spec = *spec;
                            policy.reset();
                        }
                    }
                    self.update(|s| s.restarts += 1);
                }
                Decision::GiveUp {
                    failures,
                    window,
                    retry_after,
                } => {
                    let retry = match retry_after {
                        Some(d) => format!("; retried in {}s", d.as_secs()),
                        None => String::new(),
                    };
                    let why = format!(
                        "{reason} ({failures} failures within {}s; given up{retry})",
                        window.as_secs()
                    );
                    tracing::error!(process = self.name(), "{why}");
                    let next = retry_after
                        .map(|d| UnixNanos::now().get() / 1_000_000 + d.as_millis() as u64);
                    self.update(|s| {
                        s.state = ProcState::Failed;
                        s.pid = None;
                        s.last_error = Some(why);
                        s.next_retry_unix_ms = next;
                    });
                    self.remove_owned_files();
                    let cool_down = policy.retry_in();
                    let event = tokio::select! {
                        _ = sleep_or_never(cool_down) => None,
                        c = self.ctrl.recv() => Some(c),
                    };
                    self.update(|s| s.next_retry_unix_ms = None);
                    match event {
                        None => {
                            policy.begin_failed_retry();
                            let n = policy.failed_retries();
                            tracing::info!(
                                process = self.name(),
                                retry = n,
                                "cool-down over: trying the failed process again"
                            );
                            self.update(|s| {
                                s.failed_retries = n;
                                s.restarts += 1;
                                s.last_restart = Some("retry after the failure cool-down".into());
                            });
                            continue 'outer;
                        }
                        Some(None | Some(Control::Stop)) => break 'outer,
                        Some(Some(Control::Restart(_))) => {}
                        Some(Some(Control::Replace(spec, _))) => self.spec = *spec,
                    }
                    policy.reset();
                    failed_at = None;
                    self.update(|s| s.restarts += 1);
                }
            }
        }
        self.remove_owned_files();
        self.update(|s| {
            s.state = ProcState::Stopped;
            s.pid = None;
        });
    }

    /// `Permanent` for an exit status listed in the spec's permanent exit codes.
    fn exit_outcome(&self, status: &std::io::Result<ExitStatus>, reason: String) -> Outcome {
        let code = status.as_ref().ok().and_then(ExitStatus::code);
        if code.is_some_and(|c| self.spec.permanent_exit_codes.contains(&c)) {
            Outcome::Permanent(reason)
        } else {
            Outcome::Failed(Failure::Exited(reason))
        }
    }

    async fn on_control(&mut self, control: Option<Control>, child: &mut RunningChild) -> Outcome {
        self.update(|s| s.state = ProcState::Stopping);
        let grace = Duration::from_millis(self.settings.stop_grace_ms);
        let outcome = match control {
            None | Some(Control::Stop) => Outcome::Stop,
            Some(Control::Restart(reason)) => Outcome::Restart(reason),
            Some(Control::Replace(spec, reason)) => {
                self.spec = *spec;
                Outcome::Restart(reason)
            }
        };
        match child.stop(grace).await {
            Ok(st) => tracing::info!(
                process = self.name(),
                "stopped ({})",
                child::describe_status(&st)
            ),
            Err(e) => tracing::warn!(process = self.name(), "stop: {e}"),
        }
        outcome
    }

    async fn run_once(&mut self, failed_at: &mut Option<Instant>) -> Outcome {
        self.remove_leftovers();
        let started = Instant::now();
        let mut child = match child::spawn(&self.spec.child) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.into()),
        };
        let pid = child.pid();
        tracing::info!(process = self.name(), pid, "started");
        self.update(|s| {
            s.state = ProcState::Starting;
            s.pid = Some(pid);
        });

        let readiness = self.spec.readiness.clone();
        let settings = self.settings.clone();
        let max = self.spec.max_message_bytes;
        let event = tokio::select! {
            r = wait_ready(&readiness, pid, &settings, max) => Event::Ready(r),
            st = child.wait() => Event::Exited(st),
            c = self.ctrl.recv() => Event::Control(c),
        };
        match event {
            Event::Ready(Ok(calibration)) => self.update(|s| s.calibration = calibration),
            Event::Ready(Err(reason)) => {
                let _ = child.kill().await;
                if reason.peer_refused {
                    self.update(|s| s.peer_refused += 1);
                }
                return Outcome::Failed(Failure::NotReady(reason.message));
            }
            Event::Exited(st) => {
                settle_output().await;
                let reason = format!("{} before it was ready", child.exit_reason(&st));
                return self.exit_outcome(&st, reason);
            }
            Event::Control(c) => return self.on_control(c, &mut child).await,
            Event::Tick => unreachable_tick(),
        }
        let load_ms = started.elapsed().as_millis() as u64;
        let recovery_ms = failed_at.take().map(|t| t.elapsed().as_millis() as u64);
        match recovery_ms {
            Some(r) => tracing::info!(
                process = self.name(),
                pid,
                "ready in {load_ms} ms; recovered {r} ms after the failure"
            ),
            None => tracing::info!(process = self.name(), pid, "ready in {load_ms} ms"),
        }
        self.update(|s| {
            s.state = ProcState::Ready;
            s.ready_epoch += 1;
            s.start_to_ready_ms = Some(load_ms);
            if recovery_ms.is_some() {
                s.last_recovery_ms = recovery_ms;
            }
        });

        let mut tick =
            tokio::time::interval(Duration::from_millis(self.settings.health_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut bad_checks = 0u32;
        let mut inconclusive = 0u64;
        loop {
            let event = tokio::select! {
                st = child.wait() => Event::Exited(st),
                c = self.ctrl.recv() => Event::Control(c),
                _ = tick.tick() => Event::Tick,
            };
            match event {
                Event::Exited(st) => {
                    settle_output().await;
                    let reason = child.exit_reason(&st);
                    return self.exit_outcome(&st, reason);
                }
                Event::Control(c) => return self.on_control(c, &mut child).await,
                Event::Ready(_) => unreachable_tick(),
                Event::Tick => {}
            }
            if let Some(limit) = self.spec.rss_limit_bytes {
                if let Ok(rss) = probe::rss_bytes(pid) {
                    if rss > limit {
                        let _ = child.kill().await;
                        return Outcome::Failed(Failure::OverMemory {
                            rss_mib: rss >> 20,
                            limit_mib: limit >> 20,
                        });
                    }
                }
            }
            match health_check(&readiness, pid, &settings, max).await {
                Ok(()) => {
                    bad_checks = 0;
                    inconclusive = 0;
                }
                // "I could not check" is not "the child is unhealthy": an error in the
                // agent's own process never kills a child (issue 25, break 1).
                Err(reason) if reason.is_local() => {
                    inconclusive += 1;
                    self.update(|s| s.checks_inconclusive += 1);
                    // The first of a run, then every tenth: one line per 5 s by default.
                    if inconclusive % 10 == 1 {
                        tracing::warn!(
                            process = self.name(),
                            "health check not made, {inconclusive} in a row (the agent's own fault, not counted): {reason}"
                        );
                    }
                }
                Err(reason) => {
                    inconclusive = 0;
                    if matches!(reason, probe::ProbeError::Peer(_)) {
                        tracing::warn!(process = self.name(), "{reason}");
                        self.update(|s| s.peer_refused += 1);
                    }
                    bad_checks += 1;
                    tracing::debug!(
                        process = self.name(),
                        "health check {bad_checks} failed: {reason}"
                    );
                    if bad_checks >= self.settings.unhealthy_after {
                        let _ = child.kill().await;
                        return Outcome::Failed(Failure::Unhealthy(reason));
                    }
                }
            }
        }
    }
}

fn unreachable_tick() -> ! {
    unreachable!("event not produced by this select")
}

/// Lets the log forwarders print the child's last lines before its exit is reported.
async fn settle_output() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Sleeps `d`, or forever when `None`.
async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Why a process did not get ready.
struct NotReady {
    message: String,
    /// An impostor answered the probes.
    peer_refused: bool,
}

fn expected_peer(trust: PeerTrust, pid: u32) -> ExpectedPeer {
    match trust {
        PeerTrust::SpawnedPid => ExpectedPeer::Pid(pid),
        PeerTrust::ServiceUid => ExpectedPeer::ServiceUid,
    }
}

/// Polls until the process is ready; `Err` after `ready_timeout_s`, or at once when
/// another process than `pid` answers on its socket (an impostor is never waited out).
async fn wait_ready(
    readiness: &Readiness,
    pid: u32,
    s: &SupervisorSettings,
    max: usize,
) -> Result<Option<Calibration>, NotReady> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s.ready_timeout_s);
    let poll = Duration::from_millis(20);
    let timeout = Duration::from_millis(s.ping_timeout_ms);
    let mut last = String::from("no probe yet");
    while tokio::time::Instant::now() < deadline {
        let r = match readiness {
            Readiness::Server { socket, peer } => {
                match probe::serving_status(socket, expected_peer(*peer, pid), timeout, max).await {
                    Ok(status) => Ok(status.calibration.map(|c| *c)),
                    Err(e @ probe::ProbeError::Peer(_)) => {
                        tracing::warn!("{e}");
                        return Err(NotReady {
                            message: e.to_string(),
                            peer_refused: true,
                        });
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Readiness::Ring { dir, name } => ring_fresh(dir, name, pid, s).map(|()| None),
        };
        match r {
            Ok(calibration) => return Ok(calibration),
            Err(e) => last = e,
        }
        tokio::time::sleep(poll).await;
    }
    Err(NotReady {
        message: format!(
            "not ready after {} s (last check: {last})",
            s.ready_timeout_s
        ),
        peer_refused: false,
    })
}

async fn health_check(
    readiness: &Readiness,
    pid: u32,
    s: &SupervisorSettings,
    max: usize,
) -> Result<(), probe::ProbeError> {
    match readiness {
        Readiness::Server { socket, peer } => {
            probe::ping(
                socket,
                expected_peer(*peer, pid),
                Duration::from_millis(s.ping_timeout_ms),
                max,
            )
            .await
        }
        Readiness::Ring { dir, name } => probe::check_ring(
            dir,
            name,
            pid,
            Duration::from_millis(s.heartbeat_timeout_ms),
            MonoNanos::now().get(),
        )
        .map(|_| ()),
    }
}

/// The kernel's ring exists, is written by `pid` and its heartbeat is recent.
fn ring_fresh(dir: &Path, name: &str, pid: u32, s: &SupervisorSettings) -> Result<(), String> {
    probe::check_ring(
        dir,
        name,
        pid,
        Duration::from_millis(s.heartbeat_timeout_ms),
        MonoNanos::now().get(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::LogFormat;

    fn settings() -> SupervisorSettings {
        SupervisorSettings {
            backoff_initial_ms: 10,
            backoff_max_ms: 40,
            restart_limit: 3,
            restart_window_s: 60,
            health_interval_ms: 50,
            ping_timeout_ms: 100,
            unhealthy_after: 1,
            ready_timeout_s: 1,
            stop_grace_ms: 200,
            ..SupervisorSettings::default()
        }
    }

    fn sh(script: &str, socket: PathBuf) -> ProcessSpec {
        ProcessSpec {
            child: ChildSpec {
                name: "test:sh".into(),
                program: "/bin/sh".into(),
                args: vec![OsString::from("-c"), OsString::from(script)],
                env: vec![],
                cpu_affinity: None,
                log_format: LogFormat::Text,
                stdin: None,
                last_problem: None,
            },
            // The fake server runs in this test process, not in the spawned `sleep`.
            readiness: Readiness::Server {
                socket,
                peer: PeerTrust::ServiceUid,
            },
            rss_limit_bytes: None,
            owned_files: vec![],
            max_message_bytes: 1 << 20,
            permanent_exit_codes: vec![],
        }
    }

    async fn wait_for(
        rx: &mut wch::Receiver<ProcStatus>,
        what: impl Fn(&ProcStatus) -> bool,
    ) -> ProcStatus {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if what(&rx.borrow_and_update()) {
                    return rx.borrow().clone();
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("status not reached in 10 s")
    }

    /// Answers `get_status` (ready) and `ping` on `path` while `answer` is set; the
    /// supervised process itself is a plain `sleep`.
    fn fake_server(
        path: &std::path::Path,
        answer: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        use framebus_client::Connection;
        use proto_schema::message::{Request, Response, ServerState, StatusReport};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut s = Connection::with_default_limit(s);
                    while let Ok(Some(request)) = s.read_request().await {
                        if !answer.load(std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        let resp = match request {
                            Request::Ping { id, .. } => Response::pong(id),
                            Request::GetStatus { id, .. } => Response::Status(StatusReport {
                                v: 1,
                                id,
                                state: ServerState::Ready,
                                model_id: "fake".into(),
                                model_path: "/fake.onnx".into(),
                                family: "yolov8".into(),
                                provider: "cpu".into(),
                                instances: 1,
                                input: [640, 640],
                                uptime_s: 1,
                                pid: 1,
                                server_version: "0".into(),
                                connections: 1,
                                max_connections: 1,
                                queue_depth: 0,
                                queue_capacity: 1,
                                max_batch: 1,
                                max_frame: 1 << 20,
                                calibration: None,
                            }),
                            _ => continue,
                        };
                        let _ = s.write_message(&resp).await;
                    }
                });
            }
        })
    }

    fn kill9(pid: u32) {
        // SAFETY: kill(2) takes no pointers.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }

    #[tokio::test]
    async fn kill_9_is_noticed_and_the_process_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let answer = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let _server = fake_server(&socket, answer);
        let handle = ProcessHandle::spawn(
            sh("exec sleep 30", socket),
            settings(),
            Arc::new(SystemClock),
        );
        let mut rx = handle.status();
        let first = wait_for(&mut rx, |s| s.state == ProcState::Ready).await;
        assert_eq!(first.ready_epoch, 1);
        assert!(first.last_recovery_ms.is_none());
        kill9(first.pid.unwrap());
        let again = wait_for(&mut rx, |s| {
            s.state == ProcState::Ready && s.ready_epoch == 2
        })
        .await;
        assert_ne!(again.pid, first.pid);
        assert_eq!(again.restarts, 1);
        assert!(
            again.last_error.as_deref().unwrap().contains("SIGKILL"),
            "{again:?}"
        );
        let recovery = again.last_recovery_ms.expect("recovery measured");
        println!("recovered {recovery} ms after kill -9 (backoff 10 ms)");
        handle.stop().await;
    }

    #[tokio::test]
    async fn a_hung_server_is_killed_and_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let answer = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let _server = fake_server(&socket, answer.clone());
        let handle = ProcessHandle::spawn(
            sh("exec sleep 30", socket),
            settings(),
            Arc::new(SystemClock),
        );
        let mut rx = handle.status();
        wait_for(&mut rx, |s| s.state == ProcState::Ready).await;
        answer.store(false, std::sync::atomic::Ordering::SeqCst);
        let st = wait_for(&mut rx, |s| s.restarts >= 1).await;
        let err = st.last_error.unwrap();
        assert!(
            err.contains("unhealthy") && err.contains("no answer"),
            "{err}"
        );
        answer.store(true, std::sync::atomic::Ordering::SeqCst);
        wait_for(&mut rx, |s| {
            s.state == ProcState::Ready && s.ready_epoch >= 2
        })
        .await;
        handle.stop().await;
    }

    #[tokio::test]
    async fn exceeding_the_rss_limit_kills_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let _server = fake_server(&socket, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        // The shell holds a 40 MB string, well above the 16 MiB limit.
        let mut spec = sh(
            "x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 30",
            socket,
        );
        spec.rss_limit_bytes = Some(16 << 20);
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("resident memory"))
        })
        .await;
        assert!(st.last_error.unwrap().contains("over the limit of 16 MiB"));
        handle.stop().await;
    }

    #[tokio::test]
    async fn a_crashing_process_is_restarted_then_given_up_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sh(
            "echo 'error: cannot load model: bad magic' >&2; exit 2",
            dir.path().join("x.sock"),
        );
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Failed).await;
        assert_eq!(st.restarts, 3);
        let err = st.last_error.unwrap();
        assert!(err.contains("exited with status 2"), "{err}");
        assert!(err.contains("bad magic"), "{err}");
        assert!(err.contains("given up"), "{err}");
        // An operator's restart revives it (and it fails again, counted anew).
        handle.restart("operator").await;
        let st = wait_for(&mut rx, |s| s.restarts >= 4).await;
        assert!(st.restarts >= 4);
        handle.stop().await;
    }

    #[tokio::test]
    async fn a_permanent_exit_is_failed_at_once_with_its_reason_and_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh(
            "echo 'ERROR fatal error=source unusable: /x.txt: no video stream' >&2; exit 3",
            dir.path().join("x.sock"),
        );
        spec.permanent_exit_codes = proto_schema::exit::KERNEL_PERMANENT.to_vec();
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Failed).await;
        assert_eq!(st.restarts, 0, "a permanent error is not retried: {st:?}");
        let err = st.last_error.unwrap();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(err.contains("no video stream"), "{err}");
        assert!(err.contains("permanent"), "{err}");
        // Still failed, not restarted, a while later (backoff here is 10-40 ms).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = handle.current();
        assert_eq!((later.state, later.restarts), (ProcState::Failed, 0));
        // An operator's restart starts it again.
        handle.restart("operator").await;
        wait_for(&mut rx, |s| s.restarts == 1).await;
        handle.stop().await;
    }

    #[tokio::test]
    async fn a_process_that_never_gets_ready_is_killed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sh("sleep 30", dir.path().join("never.sock"));
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Backoff).await;
        let err = st.last_error.unwrap();
        assert!(err.contains("not ready after 1 s"), "{err}");
        handle.stop().await;
    }

    #[tokio::test]
    async fn stop_ends_a_starting_process_and_removes_owned_files() {
        let dir = tempfile::tempdir().unwrap();
        let owned = dir.path().join("owned.ring");
        let mut spec = sh("touch \"$0\"; exec sleep 30", dir.path().join("s.sock"));
        spec.child.args.push(owned.clone().into_os_string());
        spec.owned_files = vec![owned.clone()];
        let mut s = settings();
        s.ready_timeout_s = 30;
        let handle = ProcessHandle::spawn(spec, s, Arc::new(SystemClock));
        let mut rx = handle.status();
        wait_for(&mut rx, |s| s.pid.is_some()).await;
        for _ in 0..100 {
            if owned.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(owned.exists());
        let started = Instant::now();
        handle.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "sleep ignores nothing: SIGTERM suffices"
        );
        assert!(!owned.exists());
        assert_eq!(rx.borrow().state, ProcState::Stopped);
    }

    /// The supervised process is `sleep`, the in-process fake server another pid: with
    /// the production rule (the spawned pid) the fake is an impostor and never makes
    /// the process ready.
    #[tokio::test]
    async fn an_impostor_on_the_socket_never_makes_the_process_ready() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let _server = fake_server(&socket, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let mut spec = sh("exec sleep 30", socket);
        spec.readiness = Readiness::Server {
            socket: match &spec.readiness {
                Readiness::Server { socket, .. } => socket.clone(),
                Readiness::Ring { .. } => unreachable!(),
            },
            peer: PeerTrust::SpawnedPid,
        };
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.peer_refused >= 1).await;
        assert_eq!(st.ready_epoch, 0, "never ready: {st:?}");
        let err = st.last_error.unwrap_or_default();
        assert!(err.contains("refusing peer pid"), "{err}");
        handle.stop().await;
    }

    /// A process failing until a file appears is given up on, then tried again after
    /// the cool-down, and becomes ready without anyone asking.
    #[tokio::test]
    async fn a_failed_process_is_retried_after_the_cool_down() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let fixed = dir.path().join("fixed");
        let _server = fake_server(&socket, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let mut spec = sh(
            "[ -e \"$0\" ] || { echo 'error: broken' >&2; exit 2; }; exec sleep 30",
            socket,
        );
        spec.child.args.push(fixed.clone().into_os_string());
        let mut s = settings();
        s.failed_retry_s = 1;
        let handle = ProcessHandle::spawn(spec, s, Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Failed).await;
        assert!(st.next_retry_unix_ms.is_some(), "{st:?}");
        assert!(st.last_error.unwrap().contains("retried in 1s"));
        std::fs::write(&fixed, b"").unwrap();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Ready).await;
        assert_eq!(st.failed_retries, 1, "{st:?}");
        assert_eq!(st.next_retry_unix_ms, None);
        handle.stop().await;
    }

    #[tokio::test]
    async fn leftovers_of_an_earlier_run_are_removed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let stale = dir.path().join("stale.ring");
        std::fs::write(&stale, b"left by a killed kernel").unwrap();
        let _server = fake_server(&socket, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let mut spec = sh("exec sleep 30", socket);
        spec.owned_files = vec![stale.clone()];
        let handle = ProcessHandle::spawn(spec, settings(), Arc::new(SystemClock));
        let mut rx = handle.status();
        let st = wait_for(&mut rx, |s| s.state == ProcState::Ready).await;
        assert_eq!(st.leftovers_removed, 1);
        assert!(!stale.exists());
        handle.stop().await;
    }
}
