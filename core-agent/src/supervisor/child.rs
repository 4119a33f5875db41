//! One child process: spawned in its own process group (so a stop reaches everything it
//! started), optionally pinned to CPUs, with stdout and stderr forwarded line by line
//! under a prefix and the last lines kept for failure reports.
//!
//! This module and [`crate::supervisor::probe`] hold the crate's `unsafe`: the
//! `pre_exec` hook and `kill(2)` on a process group.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::config::LogFormat;

/// Size of the CPU mask: CPUs numbered at or above this cannot be named.
pub const MAX_CPUS: usize = 1024;
/// Longest forwarded log line; the rest of a longer line is cut.
const MAX_LINE: usize = 8 * 1024;
/// Lines kept per child for failure reports.
const TAIL_LINES: usize = 16;

/// Process groups of running children, for the emergency stop on a second signal.
static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Bytes handed to a child on its standard input and nowhere else: not in its command
/// line or environment (which `/proc` shows to every local user, or to the same user
/// respectively), not in `Debug` output. Used for a camera's source URL, which may hold
/// a password (`frame-kernel --source-fd 0`).
#[derive(Clone, PartialEq, Eq)]
pub struct StdinSecret(Vec<u8>);

impl StdinSecret {
    /// Longest secret: what a pipe is guaranteed to hold (`PIPE_BUF`), so that writing it
    /// before the child starts can never block.
    pub const MAX_LEN: usize = 4096;

    /// Wraps `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        StdinSecret(bytes.into())
    }
}

impl std::fmt::Debug for StdinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StdinSecret({} bytes)", self.0.len())
    }
}

/// How to start a child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Prefix of its log lines, e.g. `model:yolov8n`.
    pub name: String,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// CPUs it may run on (`None`: all).
    pub cpu_affinity: Option<Vec<usize>>,
    /// How forwarded lines are written.
    pub log_format: LogFormat,
    /// Written into a pipe that becomes the child's stdin, closed before the child
    /// starts (so it reads the bytes, then end of file). `None`: stdin is `/dev/null`.
    pub stdin: Option<StdinSecret>,
    /// Where the last warning or error line the child logs is kept (shared by its
    /// runs, so it outlives a restart); `None`: not kept.
    pub last_problem: Option<Arc<LastProblem>>,
}

/// Longest [`LoggedProblem::line`] kept, in characters.
pub const MAX_PROBLEM_CHARS: usize = 400;

/// The last warning or error line a process logged, e.g. a kernel's `camera
/// unreachable; retrying reason=... Connection refused`: the real reason a camera does
/// not come up, which the supervisor alone cannot tell.
#[derive(Debug, Default)]
pub struct LastProblem(Mutex<Option<LoggedProblem>>);

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoggedProblem {
    /// `WARN ...` / `ERROR ...`: the level and the message with its fields, without
    /// the timestamp and target; control and format characters dropped, at most
    /// [`MAX_PROBLEM_CHARS`]. Not redacted: the reader scrubs credentials.
    pub line: String,
    /// When it was logged (read), Unix ms.
    pub unix_ms: u64,
}

impl LastProblem {
    /// The last one, if any.
    pub fn get(&self) -> Option<LoggedProblem> {
        lock(&self.0).clone()
    }

    /// Keeps `line` when it is a warning or an error.
    pub fn offer(&self, line: &str) {
        if let Some(line) = problem_of(line) {
            let unix_ms = crate::clock::UnixNanos::now().get() / 1_000_000;
            *lock(&self.0) = Some(LoggedProblem { line, unix_ms });
        }
    }
}

/// `LEVEL message fields` of a warning or error log line (the binaries' text or JSON
/// format, or a panic); `None` for any other line.
pub fn problem_of(raw: &str) -> Option<String> {
    let t = raw.trim();
    let text = if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let level = v.get("level")?.as_str()?;
        if level != "WARN" && level != "ERROR" {
            return None;
        }
        let fields = v.get("fields")?.as_object()?;
        let mut out = format!("{level} ");
        if let Some(m) = fields.get("message").and_then(|m| m.as_str()) {
            out.push_str(m);
        }
        for (k, val) in fields.iter().filter(|(k, _)| *k != "message") {
            match val.as_str() {
                Some(s) => out.push_str(&format!(" {k}={s}")),
                None => out.push_str(&format!(" {k}={val}")),
            }
        }
        out
    } else if t.contains("panicked") {
        format!("ERROR {t}")
    } else {
        // `2026-01-01T00:00:00.000000Z  WARN span{..}: target: message fields`.
        let mut words = t.split_whitespace();
        let (_, level) = (words.next()?, words.next()?);
        if level != "WARN" && level != "ERROR" {
            return None;
        }
        let mut rest = t[t.find(level)? + level.len()..].trim_start();
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        // Drop the spans (`name{fields}: `) and the target (`crate::module: `).
        loop {
            let span = rest
                .split_once('{')
                .filter(|(name, _)| ident(name))
                .and_then(|_| rest.split_once("}: "));
            if let Some((_, tail)) = span {
                rest = tail;
                continue;
            }
            if let Some((_, tail)) = rest.split_once(": ").filter(|(head, _)| ident(head)) {
                rest = tail;
            }
            break;
        }
        format!("{level} {rest}")
    };
    let clean: String = text
        .chars()
        .filter(|&c| !proto_schema::text::is_hidden(c))
        .take(MAX_PROBLEM_CHARS)
        .collect();
    Some(clean)
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `fork`/`exec` failed (missing binary, permissions).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// Executable.
        program: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The stdin secret does not fit a pipe buffer.
    #[error("cannot start {program}: stdin data of {len} bytes is over {max} bytes", max = StdinSecret::MAX_LEN)]
    StdinTooLong {
        /// Executable.
        program: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The stdin pipe could not be created or written.
    #[error("cannot start {program}: stdin pipe: {source}")]
    StdinPipe {
        /// Executable.
        program: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A pipe already holding `secret`, its write end closed: the read end, for a child's
/// stdin.
fn secret_pipe(program: &std::path::Path, secret: &StdinSecret) -> Result<Stdio, SpawnError> {
    if secret.0.len() > StdinSecret::MAX_LEN {
        return Err(SpawnError::StdinTooLong {
            program: program.to_path_buf(),
            len: secret.0.len(),
        });
    }
    let pipe_err = |source| SpawnError::StdinPipe {
        program: program.to_path_buf(),
        source,
    };
    // Both ends are close-on-exec; `Command` dup2s the read end onto the child's fd 0.
    let (reader, mut writer) = std::io::pipe().map_err(pipe_err)?;
    // At most PIPE_BUF bytes into an empty pipe: never blocks.
    writer.write_all(&secret.0).map_err(pipe_err)?;
    drop(writer);
    Ok(Stdio::from(reader))
}

/// A started child.
#[derive(Debug)]
pub struct RunningChild {
    child: Child,
    pid: u32,
    reaped: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Starts `spec` in a new process group with piped output.
pub fn spawn(spec: &ChildSpec) -> Result<RunningChild, SpawnError> {
    let stdin = match &spec.stdin {
        Some(secret) => secret_pipe(&spec.program, secret)?,
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mask = spec.cpu_affinity.as_deref().map(cpu_set);
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl, getppid, sched_setaffinity and _exit are plain system
    // calls, and `mask` was built before the fork (no allocation here).
    unsafe {
        cmd.pre_exec(move || {
            // Stop with the agent, even when it is killed with SIGKILL: SIGTERM, so the
            // kernel removes its ring and the server its sockets. A child that ignores
            // it leaves files that the next start removes and reports (leftovers).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            if let Some(mask) = &mask {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), mask) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    if pid > 0 {
        lock(&LIVE_GROUPS).insert(pid as i32);
    }
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(
            out,
            spec.name.clone(),
            spec.log_format,
            tail.clone(),
            spec.last_problem.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(
            err,
            spec.name.clone(),
            spec.log_format,
            tail.clone(),
            spec.last_problem.clone(),
        ));
    }
    Ok(RunningChild {
        child,
        pid,
        reaped: false,
        tail,
    })
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < MAX_CPUS) {
        // SAFETY: `cpu` is below CPU_SETSIZE (MAX_CPUS), so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `sig` to the process group `pgid`.
fn signal_group(pgid: u32, sig: libc::c_int) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill(2) takes no pointers; a negative pid addresses the group.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// SIGKILLs every child group still running: the second-signal emergency exit.
pub fn kill_all_groups() {
    for pgid in lock(&LIVE_GROUPS).iter() {
        signal_group(*pgid as u32, libc::SIGKILL);
    }
}

impl RunningChild {
    /// The child's pid (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.on_reaped();
        status
    }

    fn on_reaped(&mut self) {
        if !self.reaped {
            self.reaped = true;
            // Leftovers of the group (none expected) go with the leader.
            signal_group(self.pid, libc::SIGKILL);
            lock(&LIVE_GROUPS).remove(&(self.pid as i32));
        }
    }

    /// SIGKILLs the whole group and reaps the child.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if !self.reaped {
            signal_group(self.pid, libc::SIGKILL);
        }
        self.wait().await
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if !self.reaped {
            signal_group(self.pid, libc::SIGTERM);
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                self.on_reaped();
                return status;
            }
        }
        self.kill().await
    }

    /// The last lines the child printed.
    pub fn tail(&self) -> Vec<String> {
        lock(&self.tail).iter().cloned().collect()
    }

    /// A one-line reason for an exit: the status and the child's last error line.
    pub fn exit_reason(&self, status: &std::io::Result<ExitStatus>) -> String {
        let what = match status {
            Ok(s) => describe_status(s),
            Err(e) => format!("wait failed: {e}"),
        };
        match last_error_line(&self.tail()) {
            Some(line) => format!("{what}: {line}"),
            None => what,
        }
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        if !self.reaped {
            signal_group(self.pid, libc::SIGKILL);
            lock(&LIVE_GROUPS).remove(&(self.pid as i32));
        }
    }
}

/// `exited with status 1` / `killed by signal 9 (SIGKILL)`.
pub fn describe_status(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        _ => "exited".to_owned(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

/// The last line that looks like an error report: a tracing `ERROR` line, a panic, or a
/// `program: message` line (how the binaries report a fatal error on stderr). Plain
/// progress lines are never blamed for an exit.
pub fn last_error_line(lines: &[String]) -> Option<String> {
    let is_err = |l: &&String| {
        let t = l.trim();
        let prefixed = t.split_once(": ").is_some_and(|(head, _)| {
            !head.is_empty() && head.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        });
        t.contains("ERROR")
            || t.contains("panicked")
            || t.starts_with("Error")
            || t.starts_with("error")
            || prefixed
    };
    lines.iter().rev().find(is_err).map(|l| l.trim().to_owned())
}

async fn forward(
    stream: impl AsyncRead + Unpin,
    name: String,
    format: LogFormat,
    tail: Arc<Mutex<VecDeque<String>>>,
    problem: Option<Arc<LastProblem>>,
) {
    let problem = problem.as_deref();
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::new();
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&name, format, &tail, problem, &line);
            }
            break;
        }
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            emit(&name, format, &tail, problem, &line);
            line.clear();
        }
    }
}

fn emit(
    name: &str,
    format: LogFormat,
    tail: &Mutex<VecDeque<String>>,
    problem: Option<&LastProblem>,
    raw: &[u8],
) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    if let Some(p) = problem {
        p.offer(text);
    }
    match format {
        LogFormat::Text => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "[{name}] {text}");
        }
        LogFormat::Json => tracing::info!(target: "framebus::child", process = name, "{text}"),
    }
    let mut t = lock(tail);
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(text.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ChildSpec {
        ChildSpec {
            name: "test".into(),
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("FRAMEBUS_TEST_VAR".into(), "hello".into())],
            cpu_affinity: None,
            log_format: LogFormat::Text,
            stdin: None,
            last_problem: None,
        }
    }

    #[tokio::test]
    async fn stdin_secret_reaches_the_child_and_nothing_else() {
        let mut s = spec(
            "/bin/sh",
            &["-c", "cat; echo; tr '\\0' ' ' < /proc/$$/cmdline"],
        );
        s.stdin = Some(StdinSecret::new("rtsp://u:hunter2@h/x"));
        assert!(
            !format!("{s:?}").contains("hunter2"),
            "Debug shows the secret"
        );
        let mut c = spawn(&s).unwrap();
        c.wait().await.unwrap();
        for _ in 0..100 {
            if c.tail().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tail = c.tail();
        assert_eq!(tail[0], "rtsp://u:hunter2@h/x");
        assert!(!tail[1].contains("hunter2"), "{tail:?}");
        s.stdin = Some(StdinSecret::new(vec![b'a'; StdinSecret::MAX_LEN + 1]));
        assert!(matches!(spawn(&s), Err(SpawnError::StdinTooLong { .. })));
    }

    #[tokio::test]
    async fn keeps_the_tail_and_reports_the_error_line() {
        let mut c = spawn(&spec(
            "/bin/sh",
            &["-c", "echo starting; echo \"$FRAMEBUS_TEST_VAR\"; echo 'Error: bad model file' >&2; exit 3"],
        ))
        .unwrap();
        let status = c.wait().await;
        // The forwarders may lag the exit by a moment.
        for _ in 0..100 {
            if c.tail().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(c.tail().contains(&"hello".to_owned()));
        assert_eq!(
            c.exit_reason(&status),
            "exited with status 3: Error: bad model file"
        );
    }

    #[tokio::test]
    async fn stop_reaches_the_whole_group() {
        // The shell ignores SIGTERM; its `sleep` child must still die with the group.
        let mut c = spawn(&spec("/bin/sh", &["-c", "trap '' TERM; sleep 30 & wait"])).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pid = c.pid();
        let status = c.stop(Duration::from_millis(200)).await.unwrap();
        assert_eq!(describe_status(&status), "killed by signal 9 (SIGKILL)");
        // No process is left in the group (the orphaned `sleep` is reaped by init, which
        // may take a moment).
        let mut alive = true;
        for _ in 0..100 {
            // SAFETY: kill with signal 0 only checks for existence.
            alive = unsafe { libc::kill(-(pid as i32), 0) } == 0;
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "process group {pid} survived");
    }

    #[tokio::test]
    async fn affinity_is_applied() {
        let mut s = spec(
            "/bin/sh",
            &["-c", "grep Cpus_allowed_list /proc/self/status"],
        );
        s.cpu_affinity = Some(vec![0]);
        let mut c = spawn(&s).unwrap();
        c.wait().await.unwrap();
        for _ in 0..100 {
            if !c.tail().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c.tail(), vec!["Cpus_allowed_list:\t0".to_owned()]);
    }

    #[test]
    fn missing_binary_is_a_typed_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { spawn(&spec("/no/such/binary", &[])).unwrap_err() });
        assert!(err.to_string().contains("/no/such/binary"));
    }

    #[test]
    fn error_line_choice() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            last_error_line(&l(&["a", "ERROR x", "b"])).as_deref(),
            Some("ERROR x")
        );
        assert_eq!(
            last_error_line(&l(&[
                "2025 INFO x: ready",
                "model-server: cannot load m.onnx",
                "2025 INFO bye"
            ]))
            .as_deref(),
            Some("model-server: cannot load m.onnx")
        );
        assert_eq!(
            last_error_line(&l(&["2025 INFO model_server::app: ready socket=/s", " "])),
            None
        );
        assert_eq!(last_error_line(&[]), None);
    }

    #[test]
    fn warning_and_error_lines_are_kept_without_timestamp_and_target() {
        let text = "2026-12-07T23:10:00.123456Z  WARN kernel{camera=\"door\"}: frame_kernel::kernel: camera unreachable; retrying reason=cannot open input: Connection refused retry_in_ms=200 attempt=1";
        assert_eq!(
            problem_of(text).as_deref(),
            Some("WARN camera unreachable; retrying reason=cannot open input: Connection refused retry_in_ms=200 attempt=1")
        );
        assert_eq!(
            problem_of("2026-12-07T23:10:00Z ERROR frame_kernel: fatal error=404 Not Found")
                .as_deref(),
            Some("ERROR fatal error=404 Not Found")
        );
        let json = r#"{"timestamp":"2026-12-07T23:10:00Z","level":"WARN","fields":{"message":"camera unreachable; retrying","reason":"Connection refused","attempt":1},"target":"frame_kernel::kernel"}"#;
        assert_eq!(
            problem_of(json).as_deref(),
            Some("WARN camera unreachable; retrying attempt=1 reason=Connection refused")
        );
        assert_eq!(
            problem_of("thread 'main' panicked at src/x.rs:1:1").as_deref(),
            Some("ERROR thread 'main' panicked at src/x.rs:1:1")
        );
        for quiet in [
            "2026-12-07T23:10:00Z  INFO frame_kernel: ready",
            r#"{"level":"INFO","fields":{"message":"ready"}}"#,
            "WARN",
            "",
            "plain output",
        ] {
            assert_eq!(problem_of(quiet), None, "{quiet:?}");
        }
        // Bounded, and no control or format character survives (the page shows it).
        let long = format!("2026Z ERROR x: {}\u{202e}\u{1b}[31m", "a".repeat(5000));
        let kept = problem_of(&long).unwrap();
        assert_eq!(kept.chars().count(), MAX_PROBLEM_CHARS);
        let odd = problem_of("2026Z ERROR x: a\u{202e}b\u{1b}[31m").unwrap();
        assert_eq!(odd, "ERROR ab[31m");
    }

    #[tokio::test]
    async fn the_last_problem_outlives_the_run_that_logged_it() {
        let slot = Arc::new(LastProblem::default());
        let mut s = spec(
            "/bin/sh",
            &["-c", "echo '2026Z  WARN k: first' >&2; echo '2026Z  INFO k: fine' >&2; echo '2026Z ERROR k: Connection refused' >&2"],
        );
        s.last_problem = Some(slot.clone());
        let mut c = spawn(&s).unwrap();
        c.wait().await.unwrap();
        for _ in 0..200 {
            if slot.get().is_some_and(|p| p.line.contains("refused")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(slot.get().unwrap().line, "ERROR Connection refused");
        drop(c);
        // A later run that logs nothing wrong keeps it.
        s.args = vec!["-c".into(), "echo fine".into()];
        spawn(&s).unwrap().wait().await.unwrap();
        assert_eq!(slot.get().unwrap().line, "ERROR Connection refused");
    }
}
