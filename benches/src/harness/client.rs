//! A blocking model-server client over its Unix socket (one persistent connection), and a
//! model server started directly by the harness (for `bench ipc`).

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto_schema::framing::{blocking, FrameError, DEFAULT_MAX_FRAME};
use proto_schema::message::{
    decode_response, InferenceRequest, InferenceResponse, Request, Response,
};

use super::interrupt;
use super::ort_raw::SessionSettings;

/// A failed exchange with a model server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Frame {
        path: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error("{path}: server closed the connection")]
    Closed { path: PathBuf },
    #[error("{path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("model-server did not answer a ping within {waited:?} at {path}; last log lines:\n{log_tail}")]
    NotReady {
        path: PathBuf,
        waited: Duration,
        log_tail: String,
    },
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
}

/// One persistent connection to a model server.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Client {
            path: path.to_path_buf(),
            stream,
            next_id: 1,
        })
    }

    fn exchange(&mut self, req: &Request) -> Result<Response, ClientError> {
        let frame = |source| ClientError::Frame {
            path: self.path.clone(),
            source,
        };
        blocking::write_message(&mut self.stream, req, DEFAULT_MAX_FRAME).map_err(frame)?;
        let payload = blocking::read_frame(&mut self.stream, DEFAULT_MAX_FRAME)
            .map_err(|source| ClientError::Frame {
                path: self.path.clone(),
                source,
            })?
            .ok_or_else(|| ClientError::Closed {
                path: self.path.clone(),
            })?;
        decode_response(&payload).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// One ping; returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let id = self.id();
        let t = Instant::now();
        match self.exchange(&Request::ping(id))? {
            Response::Pong { id: got, .. } if got == id => Ok(t.elapsed()),
            other => Err(ClientError::Protocol {
                path: self.path.clone(),
                reason: format!("expected pong {id}, got {}", other.type_name()),
            }),
        }
    }

    /// One inference request (its id is replaced); returns the response and the round trip.
    pub fn infer(
        &mut self,
        mut req: InferenceRequest,
    ) -> Result<(InferenceResponse, Duration), ClientError> {
        req.id = self.id();
        req.sent_ts_ns = proto_schema::time::MonoNanos::now().get();
        let t = Instant::now();
        match self.exchange(&Request::Infer(req))? {
            Response::InferResult(r) => Ok((r, t.elapsed())),
            other => Err(ClientError::Protocol {
                path: self.path.clone(),
                reason: format!("expected infer_result, got {}", other.type_name()),
            }),
        }
    }
}

/// A `model-server` process started by the harness, killed (with its process group) on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `<bin_dir>/model-server` and waits until it answers a ping.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        bin_dir: &Path,
        model: &Path,
        model_id: &str,
        socket: &Path,
        ring_dir: &Path,
        session: SessionSettings,
        log: &Path,
        timeout: Duration,
    ) -> Result<ServerProcess, ClientError> {
        let bin = bin_dir.join("model-server");
        let out = std::fs::File::create(log).map_err(|source| ClientError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ClientError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        let child = Command::new(&bin)
            .arg("--model")
            .arg(model)
            .arg("--model-id")
            .arg(model_id)
            .arg("--socket")
            .arg(socket)
            .arg("--ring-dir")
            .arg(ring_dir)
            .arg("--threads")
            .arg(session.threads.to_string())
            .arg("--instances")
            .arg(session.instances.to_string())
            .arg("--spin")
            .arg(session.spinning.to_string())
            .env("FRAMEBUS_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| ClientError::Spawn {
                bin: bin.clone(),
                source,
            })?;
        let mut server = ServerProcess {
            child: Some(child),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let start = Instant::now();
        while start.elapsed() < timeout {
            interrupt::check()?;
            if let Some(c) = server.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
            }
            if let Ok(mut c) = Client::connect(socket) {
                if c.ping().is_ok() {
                    return Ok(server);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Err(ClientError::NotReady {
            path: socket.to_path_buf(),
            waited: start.elapsed(),
            log_tail: lines[lines.len().saturating_sub(20)..].join("\n"),
        })
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: signals to the process group this harness created for the server.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}
