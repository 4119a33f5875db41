//! The Unix-socket server: accept loop, one reader task and one writer task per
//! connection, request dispatch, graceful shutdown.
//!
//! Limits (each with its overflow policy):
//! - connections: a semaphore of `max_connections`; a connection beyond it gets one
//!   `overloaded` error and is closed at once;
//! - in-flight inference requests: a semaphore of `max_inflight`; a request beyond it gets
//!   `overloaded` at once, and so does one that finds the batch queue full;
//! - message size: the length prefix is checked before the payload is read
//!   (`payload_too_large`, then the connection is closed);
//! - a started message must be complete within `read_timeout` (else `malformed_frame` and
//!   close); an idle connection (no request, nothing in flight) is closed after
//!   `idle_timeout`;
//! - the control socket (optional) has its own limit of [`CONTROL_CONNECTIONS`] and serves
//!   only control messages, so health checks never compete with data clients; `shutdown`
//!   is honoured only there (the data socket is open to the whole service group).
//! - a client that stops reading stalls only its own connection (its task stops reading
//!   while a write is pending), and a write that cannot finish within `read_timeout`
//!   closes it.
//!
//! One task per connection reads, dispatches and writes; control messages are answered
//! inline, inference requests go to the workers, whose answers come back over a channel.
//! Requests on one connection are handled concurrently: responses carry the request id
//! and may come back in another order than the requests.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framebus_client::Connection;
use proto_schema::error::{ErrorBody, ErrorCode};
use proto_schema::framing::{self, FrameError};
use proto_schema::message::{
    decode_request, InferenceRequest, InferenceResponse, Request, Response, ServerState,
    StatusReport,
};
use proto_schema::PROTOCOL_VERSION;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{Batcher, PushError};
use crate::frames::FrameResolver;
use crate::stats::Stats;
use crate::worker::{deadline_passed, Job, Reply};
use proto_schema::time::MonoNanos;

/// What the status report says about the model.
#[derive(Debug, Clone)]
pub struct ModelDescription {
    /// Model id (name rule).
    pub model_id: String,
    /// Model file.
    pub model_path: String,
    /// Family name.
    pub family: String,
    /// Execution provider.
    pub provider: String,
    /// Instances.
    pub instances: u32,
    /// Input `[width, height]`.
    pub input: [u32; 2],
    /// How the session settings were chosen.
    pub calibration: Option<proto_schema::calibration::Calibration>,
}

/// The message of the `invalid_message` error that answers `shutdown` on the data
/// socket (docs/protocol.md §5.5).
pub const SHUTDOWN_ON_DATA_SOCKET: &str =
    "shutdown is served only on the control socket (--control-socket); \
     stop the server there or with SIGTERM";

/// Connections the control socket accepts at once (the supervisor uses one at a time).
pub const CONTROL_CONNECTIONS: usize = 4;

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The data socket: every message but `shutdown` (answered `invalid_message`).
    Data,
    /// The control socket: `ping`, `get_status`, `get_stats`, `shutdown` only.
    Control,
}

/// Server limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Concurrent connections.
    pub max_connections: usize,
    /// Inference requests in flight.
    pub max_inflight: usize,
    /// Largest payload.
    pub max_frame: usize,
    /// Time to complete a started message (and to write a response).
    pub read_timeout: Duration,
    /// Idle connection timeout.
    pub idle_timeout: Option<Duration>,
    /// Longest wait for in-flight work at shutdown.
    pub drain_timeout: Duration,
}

/// State shared by every task of the server.
#[derive(Debug)]
pub struct Shared {
    model: ModelDescription,
    limits: Limits,
    resolver: FrameResolver,
    batcher: Arc<Batcher<Job>>,
    stats: Arc<Stats>,
    inflight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    control_connections: Arc<Semaphore>,
    open_connections: AtomicU32,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    /// Server state over `batcher` (whose workers run elsewhere).
    pub fn new(
        model: ModelDescription,
        limits: Limits,
        ring_dir: PathBuf,
        ring_trust: shm_ring::RingTrust,
        batcher: Arc<Batcher<Job>>,
        stats: Arc<Stats>,
    ) -> Self {
        Shared {
            model,
            limits,
            resolver: FrameResolver::with_trust(ring_dir, ring_trust),
            batcher,
            stats,
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            control_connections: Arc::new(Semaphore::new(CONTROL_CONNECTIONS)),
            open_connections: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// The statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The token cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown: stop accepting, refuse new inference requests, finish
    /// the queued ones.
    pub fn begin_shutdown(&self) {
        if !self.shutdown.is_cancelled() {
            tracing::info!("shutting down: draining in-flight requests");
        }
        self.shutdown.cancel();
        self.batcher.close();
    }

    /// Encodes a response, counting it in the statistics. A response too large for the
    /// frame limit becomes an `internal` error.
    fn encode(&self, resp: &Response) -> Vec<u8> {
        match resp {
            Response::InferResult(r) => match &r.error {
                Some(e) => {
                    self.stats.record_error(e.code);
                    if matches!(e.code, ErrorCode::Overloaded | ErrorCode::DeadlineExceeded) {
                        self.stats.record_shed(&r.camera_id);
                    }
                }
                None => self.stats.record_ok(&r.timings),
            },
            Response::Error { error, .. } => self.stats.record_error(error.code),
            _ => {}
        }
        framing::encode(resp, self.limits.max_frame).unwrap_or_else(|e| {
            tracing::error!(error = %e, "response cannot be encoded");
            let err = ErrorBody::new(
                ErrorCode::Internal,
                format!("response cannot be encoded: {e}"),
            );
            self.stats.record_error(ErrorCode::Internal);
            framing::encode(&Response::error(resp.id(), err), self.limits.max_frame)
                .expect("a short error always encodes")
        })
    }

    fn status(&self, id: u64) -> StatusReport {
        let policy = self.batcher.policy();
        StatusReport {
            v: PROTOCOL_VERSION,
            id,
            state: if self.shutdown.is_cancelled() {
                ServerState::Draining
            } else {
                ServerState::Ready
            },
            model_id: self.model.model_id.clone(),
            model_path: self.model.model_path.clone(),
            family: self.model.family.clone(),
            provider: self.model.provider.clone(),
            instances: self.model.instances,
            input: self.model.input,
            uptime_s: self.stats.uptime_s(),
            pid: std::process::id(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            connections: self.open_connections.load(Ordering::Relaxed),
            max_connections: self.limits.max_connections as u32,
            queue_depth: self.batcher.depth() as u32,
            queue_capacity: policy.capacity as u32,
            max_batch: policy.max_batch as u32,
            max_frame: self.limits.max_frame as u32,
            calibration: self.model.calibration.clone().map(Box::new),
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something that is not a socket is in the way; it is left alone.
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A live server already listens there.
    #[error("{path}: another server is listening on this socket")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// Binds the listening socket at `path` with permission bits `mode`: a stale socket file
/// (nobody listening) is removed first; the mode is set explicitly after binding.
pub fn bind_socket(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener, BindError> {
    let io_err = |op, source| BindError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(|e| io_err("remove stale socket", e))?;
        }
        Ok(_) => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| io_err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("set_nonblocking", e))?;
    Ok(listener)
}

/// Accepts connections until shutdown, then waits (at most `drain_timeout`) for every
/// connection and request task to finish.
pub async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    accept_loop(&shared, listener, Role::Data).await;
    shared.begin_shutdown();
    shared.tracker.close();
    if tokio::time::timeout(shared.limits.drain_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = shared.limits.drain_timeout.as_secs(),
            "drain timed out; abandoning remaining requests"
        );
    }
}

/// Accepts control connections until shutdown; each counts against the control
/// socket's own limit, never against the data connections'.
pub async fn serve_control(shared: Arc<Shared>, listener: UnixListener) {
    accept_loop(&shared, listener, Role::Control).await;
}

/// Accepts connections of one role until shutdown, each holding a permit of that role's
/// own semaphore; one over the limit is refused with `overloaded`.
async fn accept_loop(shared: &Arc<Shared>, listener: UnixListener, role: Role) {
    let token = shared.shutdown.clone();
    let (permits, limit) = match role {
        Role::Data => (&shared.connections, shared.limits.max_connections),
        Role::Control => (&shared.control_connections, CONTROL_CONNECTIONS),
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; pending clients wait
                // in the backlog.
                tracing::warn!(error = %e, ?role, "accept failed");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                }
            }
        };
        match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => {
                let shared2 = Arc::clone(shared);
                shared
                    .tracker
                    .spawn(async move { connection(shared2, stream, permit, role).await });
            }
            Err(_) => refuse(shared, stream, limit),
        }
    }
}

/// Answers a connection over the limit with `overloaded` and closes it, without a task:
/// a fresh socket's send buffer always takes one short message.
fn refuse(shared: &Shared, stream: UnixStream, limit: usize) {
    let err = ErrorBody::new(
        ErrorCode::Overloaded,
        format!("connection limit of {limit} reached"),
    );
    let bytes = shared.encode(&Response::error(None, err));
    let _ = stream.try_write(&bytes);
}

/// Decrements the open-connection count when the connection ends, however it ends.
struct ConnectionGuard<'a>(&'a AtomicU32);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection, one task: it reads and dispatches requests, answers control messages
/// at once, and writes the inference answers the workers send back over `answers`. It
/// stops reading at end of stream, on a fatal framing error or at shutdown, and closes
/// once every request it handed to the workers has been answered.
async fn connection(
    shared: Arc<Shared>,
    stream: UnixStream,
    _permit: OwnedSemaphorePermit,
    role: Role,
) {
    // Control connections are not data connections: not in the status count.
    let counted = role == Role::Data;
    if counted {
        shared.open_connections.fetch_add(1, Ordering::Relaxed);
    }
    let _guard = counted.then(|| ConnectionGuard(&shared.open_connections));
    let limits = shared.limits;
    let (mut rd, wr) = Connection::new(stream, limits.max_frame).into_split();
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<InferenceResponse>();
    let mut conn = Conn {
        shared: &shared,
        answer_tx,
        out: wr,
        outstanding: 0,
        role,
    };
    let mut frame_started: Option<Instant> = None;
    let mut reading = true;
    loop {
        if reading {
            if let Some(body) = conn.take_frames(&mut rd) {
                conn.push(&Response::error(None, body));
                reading = false;
            }
        }
        if conn.out.pending_write() > 0 && !flush(&mut conn.out, limits.read_timeout).await {
            return; // client gone or not reading
        }
        if !reading && conn.outstanding == 0 {
            break;
        }
        frame_started = match (rd.buffered(), frame_started) {
            (0, _) => None,
            (_, Some(t)) => Some(t),
            (_, None) => Some(Instant::now()),
        };
        let wait = match frame_started {
            Some(t) => Some((t + limits.read_timeout).saturating_duration_since(Instant::now())),
            None => limits.idle_timeout,
        };
        let read = async {
            match wait {
                Some(d) => tokio::time::timeout(d, rd.fill()).await.ok(),
                None => Some(rd.fill().await),
            }
        };
        tokio::select! {
            biased;
            Some(answer) = answers.recv() => {
                conn.answered(answer);
                while let Ok(more) = answers.try_recv() {
                    conn.answered(more);
                }
            }
            _ = shared.shutdown.cancelled(), if reading => reading = false,
            result = read, if reading => match result {
                Some(Ok(0)) => {
                    reading = false;
                    if let Err(e) = rd.finish() {
                        // Half-closed mid-frame: the client may still read the answer.
                        let body = ErrorBody::new(ErrorCode::MalformedFrame, e.to_string());
                        conn.push(&Response::error(None, body));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    reading = false;
                }
                None => {
                    reading = false;
                    if frame_started.is_none() {
                        tracing::debug!("idle connection closed");
                    }
                    if frame_started.is_some() {
                        let body = ErrorBody::new(
                            ErrorCode::MalformedFrame,
                            format!(
                                "incomplete frame: {} bytes received, the rest did not arrive within {} ms",
                                rd.buffered(),
                                limits.read_timeout.as_millis()
                            ),
                        );
                        conn.push(&Response::error(None, body));
                    }
                }
            },
        }
    }
    let _ = conn.out.shutdown().await;
}

/// Writes the queued answers within `timeout`; `false` when the client is gone or does
/// not read.
async fn flush(out: &mut Connection<OwnedWriteHalf>, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, out.flush()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client went away");
            false
        }
        Err(_) => {
            tracing::warn!("client does not read its responses; closing the connection");
            false
        }
    }
}

/// Per-connection state of [`connection`].
struct Conn<'a> {
    shared: &'a Arc<Shared>,
    /// Handed to the workers with each queued request.
    answer_tx: mpsc::UnboundedSender<InferenceResponse>,
    /// The write half, with the encoded responses waiting to be written.
    out: Connection<OwnedWriteHalf>,
    /// Requests handed to the workers and not answered yet.
    outstanding: usize,
    /// Which socket the connection came in on.
    role: Role,
}

impl Conn<'_> {
    fn push(&mut self, resp: &Response) {
        self.out.queue_encoded(&self.shared.encode(resp));
    }

    fn answered(&mut self, answer: InferenceResponse) {
        self.outstanding -= 1;
        self.push(&Response::InferResult(answer));
    }

    /// Handles every complete message buffered in `dec`. Returns the error to send before
    /// closing when the stream cannot go on.
    fn take_frames(&mut self, rd: &mut Connection<OwnedReadHalf>) -> Option<ErrorBody> {
        loop {
            match rd.next_buffered() {
                Ok(Some(payload)) => self.dispatch(&payload),
                Ok(None) => return None,
                Err(e @ FrameError::ZeroLength) => {
                    let body = e.to_error_body().expect("zero length has a code");
                    self.push(&Response::error(None, body));
                }
                Err(e) => {
                    return Some(e.to_error_body().unwrap_or_else(|| {
                        ErrorBody::new(ErrorCode::MalformedFrame, e.to_string())
                    }))
                }
            }
        }
    }

    /// Handles one complete message: answers it now, or queues it for a worker.
    fn dispatch(&mut self, payload: &[u8]) {
        let received = Instant::now();
        let shared = self.shared;
        let response = match decode_request(payload) {
            Err(e) => e.into_response(),
            Ok(Request::Ping { id, .. }) => Response::pong(id),
            Ok(Request::GetStatus { id, .. }) => Response::Status(shared.status(id)),
            Ok(Request::GetStats { id, .. }) => Response::Stats(shared.stats.report(id)),
            // The data socket is the service group's (mode 0660): any member could stop
            // the model for everyone. Stopping is the owner's, on the 0600 control socket.
            Ok(Request::Shutdown { id, .. }) if self.role == Role::Data => Response::error(
                Some(id),
                ErrorBody::new(ErrorCode::InvalidMessage, SHUTDOWN_ON_DATA_SOCKET),
            ),
            Ok(Request::Shutdown { id, .. }) => {
                self.push(&Response::shutdown_ack(id));
                shared.begin_shutdown();
                return;
            }
            Ok(Request::Infer(req)) if self.role == Role::Control => {
                Response::InferResult(failure(
                    &req,
                    ErrorCode::InvalidMessage,
                    "inference is not served on the control socket; use the data socket".into(),
                ))
            }
            Ok(Request::Infer(req)) => match start_infer(shared, req, received, &self.answer_tx) {
                Some(resp) => Response::InferResult(resp),
                None => {
                    self.outstanding += 1;
                    return;
                }
            },
        };
        self.push(&response);
    }
}

fn failure(req: &InferenceRequest, code: ErrorCode, message: String) -> InferenceResponse {
    InferenceResponse::failure(req, ErrorBody::new(code, message))
}

/// Validates and queues an inference request. Returns the immediate answer when it is
/// refused; otherwise the worker sends the answer over `answers`.
fn start_infer(
    shared: &Arc<Shared>,
    req: InferenceRequest,
    received: Instant,
    answers: &mpsc::UnboundedSender<InferenceResponse>,
) -> Option<InferenceResponse> {
    shared.stats.record_request(&req.camera_id);
    if req.model_id != shared.model.model_id {
        let msg = format!(
            "model {:?} is not served here; this server serves {:?}",
            req.model_id, shared.model.model_id
        );
        return Some(failure(&req, ErrorCode::ModelUnavailable, msg));
    }
    if shared.shutdown.is_cancelled() {
        return Some(failure(
            &req,
            ErrorCode::ShuttingDown,
            "server is draining".into(),
        ));
    }
    if deadline_passed(&req, MonoNanos::now().get()) {
        let msg = "deadline passed before the request was queued".into();
        return Some(failure(&req, ErrorCode::DeadlineExceeded, msg));
    }
    // Without a permit the request may still take the place of a waiting one (a newer
    // frame of its camera, or of the camera furthest ahead): the fair queue decides.
    let permit = Arc::clone(&shared.inflight).try_acquire_owned().ok();
    let frame = match shared.resolver.resolve(&req.frame, &req.meta) {
        Ok(f) => f,
        Err(e) => return Some(failure(&req, e.code(), e.to_string())),
    };
    let job = Job {
        reply: Reply::new(&req, answers.clone(), permit),
        request: req,
        frame,
        received,
    };
    let source = job.request.frame.ring.clone();
    let need_room = !job.reply.has_permit();
    let mut shed = Vec::new();
    let pushed = shared
        .batcher
        .submit(&source, job, need_room, &mut shed, |old, new| {
            new.reply.take_permit_from(&mut old.reply)
        });
    for (why, old) in shed {
        crate::worker::answer_shed(why, old);
    }
    // A refused job answers through its own reply (counted as outstanding), so that
    // dropping it never sends a second, `internal`, answer.
    let (item, code, msg) = match pushed {
        Ok(()) => return None,
        Err(PushError::Full { item, capacity }) if need_room => {
            let msg = format!(
                "{} inference requests in flight (limit), {capacity} queued",
                shared.limits.max_inflight
            );
            (item, ErrorCode::Overloaded, msg)
        }
        Err(PushError::Full { item, capacity }) => {
            let msg = format!("queue full ({capacity} requests waiting)");
            (item, ErrorCode::Overloaded, msg)
        }
        Err(PushError::Closed { item }) => {
            (item, ErrorCode::ShuttingDown, "server is draining".into())
        }
    };
    let resp = failure(&item.request, code, msg);
    item.reply.send(resp);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_stale_sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // stale file
        let listener = bind_socket(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: refused, left in place.
        assert!(matches!(
            bind_socket(&path, 0o660),
            Err(BindError::InUse { .. })
        ));
        drop(listener);
        let file = dir.path().join("f.sock");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            bind_socket(&file, 0o660),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }
}
