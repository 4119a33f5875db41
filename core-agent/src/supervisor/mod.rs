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

use serde::Serialize;
use tokio::sync::{mpsc, watch as wch};
use tokio::task::JoinHandle;

use crate::clock::{monotonic_now_ns, Clock};
use crate::config::SupervisorSettings;
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
    /// Given up after too many restarts; see `last_error`.
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
    /// A model server: `get_status` says ready; then `ping` answers.
    Server {
        /// Socket path.
        socket: PathBuf,
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

enum Outcome {
    Failed(String),
    /// Exited with one of the spec's permanent exit codes.
    Permanent(String),
    Restart(String),
    Stop,
}

enum Event {
    Ready(Result<(), String>),
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

    fn remove_owned_files(&self) {
        for f in &self.spec.owned_files {
            match std::fs::remove_file(f) {
                Ok(()) => tracing::debug!(process = self.name(), file = %f.display(), "removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(process = self.name(), file = %f.display(), "cannot remove: {e}")
                }
            }
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
                Outcome::Failed(reason) => reason,
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
            tracing::warn!(process = self.name(), "failed: {reason}");
            failed_at.get_or_insert_with(Instant::now);
            match policy.on_failure() {
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
                Decision::GiveUp { failures, window } => {
                    let why = format!(
                        "{reason} ({failures} failures within {}s; given up)",
                        window.as_secs()
                    );
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
            Outcome::Failed(reason)
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
        self.remove_owned_files();
        let started = Instant::now();
        let mut child = match child::spawn(&self.spec.child) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.to_string()),
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
            Event::Ready(Ok(())) => {}
            Event::Ready(Err(reason)) => {
                let _ = child.kill().await;
                return Outcome::Failed(reason);
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
                        return Outcome::Failed(format!(
                            "resident memory {} MiB over the limit of {} MiB",
                            rss >> 20,
                            limit >> 20
                        ));
                    }
                }
            }
            match health_check(&readiness, pid, &settings, max).await {
                Ok(()) => bad_checks = 0,
                Err(reason) => {
                    bad_checks += 1;
                    tracing::debug!(
                        process = self.name(),
                        "health check {bad_checks} failed: {reason}"
                    );
                    if bad_checks >= self.settings.unhealthy_after {
                        let _ = child.kill().await;
                        return Outcome::Failed(format!("unhealthy, killed: {reason}"));
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

/// Polls until the process is ready; `Err` after `ready_timeout_s`.
async fn wait_ready(
    readiness: &Readiness,
    pid: u32,
    s: &SupervisorSettings,
    max: usize,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s.ready_timeout_s);
    let poll = Duration::from_millis(20);
    let timeout = Duration::from_millis(s.ping_timeout_ms);
    let mut last = String::from("no probe yet");
    while tokio::time::Instant::now() < deadline {
        let r = match readiness {
            Readiness::Server { socket } => probe::serving_status(socket, timeout, max)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Readiness::Ring { dir, name } => ring_fresh(dir, name, pid, s),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(poll).await;
    }
    Err(format!(
        "not ready after {} s (last check: {last})",
        s.ready_timeout_s
    ))
}

async fn health_check(
    readiness: &Readiness,
    pid: u32,
    s: &SupervisorSettings,
    max: usize,
) -> Result<(), String> {
    match readiness {
        Readiness::Server { socket } => {
            probe::ping(socket, Duration::from_millis(s.ping_timeout_ms), max)
                .await
                .map_err(|e| e.to_string())
        }
        Readiness::Ring { dir, name } => ring_fresh(dir, name, pid, s),
    }
}

/// The kernel's ring exists, is written by `pid` and its heartbeat is recent.
fn ring_fresh(dir: &Path, name: &str, pid: u32, s: &SupervisorSettings) -> Result<(), String> {
    probe::check_ring(
        dir,
        name,
        pid,
        Duration::from_millis(s.heartbeat_timeout_ms),
        monotonic_now_ns(),
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
            },
            readiness: Readiness::Server { socket },
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
        use proto_schema::framing::{read_frame, write_message};
        use proto_schema::message::{decode_request, Request, Response, ServerState, StatusReport};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    while let Ok(Some(frame)) = read_frame(&mut s, 1 << 20).await {
                        if !answer.load(std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        let resp = match decode_request(&frame).unwrap() {
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
                            }),
                            _ => continue,
                        };
                        let _ = write_message(&mut s, &resp, 1 << 20).await;
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
}
