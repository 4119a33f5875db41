//! The harness's model-server client (a thin layer over `framebus_client::BlockingClient`
//! that times each exchange), and a model server started directly by the harness (for
//! `bench ipc`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use framebus_client::{BlockingClient, CallError, ClientOptions, ConnectError, InferError};
use proto_schema::message::{InferenceRequest, InferenceResponse};

use super::interrupt;
use super::ort_raw::SessionSettings;

/// A failed exchange with a model server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A request got no valid answer.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The server did not come up.
    #[error("model-server did not answer a ping within {waited:?} at {path}; last log lines:\n{log_tail}")]
    NotReady {
        path: PathBuf,
        waited: Duration,
        log_tail: String,
    },
    /// The server could not be started.
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
    inner: BlockingClient,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let options = ClientOptions::default()
            .send_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(30));
        Ok(Client {
            inner: BlockingClient::connect_with(path, options)?,
        })
    }

    /// One ping; returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        Ok(self.inner.ping()?)
    }

    /// One inference request (its id is replaced); returns the response (an error answer
    /// included: the harness counts those) and the round trip.
    pub fn infer(
        &mut self,
        mut req: InferenceRequest,
    ) -> Result<(InferenceResponse, Duration), ClientError> {
        req.sent_ts_ns = proto_schema::time::MonoNanos::now().get();
        let t = Instant::now();
        match self.inner.infer(req) {
            Ok(r) => Ok((r, t.elapsed())),
            Err(InferError::Server { response, .. }) => Ok((*response, t.elapsed())),
            Err(InferError::Call(e)) => Err(e.into()),
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
