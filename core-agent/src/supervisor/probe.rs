//! Readiness and health probes: a model server answers `ping` / `get_status` on its
//! socket; a frame kernel's ring exists, belongs to the kernel and has a fresh
//! heartbeat; a process stays under its RSS limit (`/proc/<pid>/status`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use framebus_client::{CallError, Client, ClientOptions, ConnectError};
use proto_schema::message::{Request, Response, ServerState, StatusReport};
use shm_ring::{peek_header, RingState, RingTrust};

use crate::peer::{check_peer, ExpectedPeer, PeerError};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The socket could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Someone else than the expected model server listens on the socket; nothing was
    /// sent to it.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The exchange did not finish in time.
    #[error("no answer from {path} within {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// Reading or writing the socket failed, or the answer was not understood.
    #[error("{path}: {source}")]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: CallError,
    },
    /// The server answers but is not serving.
    #[error("model server is {state:?}")]
    NotServing {
        /// Its state.
        state: ServerState,
    },
    /// The ring could not be opened (missing, untrusted owner or mode, bad header), or
    /// its file was truncated while it was read.
    #[error("ring {name}: {source}")]
    Ring {
        /// Ring name.
        name: String,
        /// Why.
        #[source]
        source: shm_ring::RingOpenError,
    },
    /// The ring is written by another process than the one supervised.
    #[error("ring {name} belongs to pid {found}, not {expected}")]
    ForeignRing {
        /// Ring name.
        name: String,
        /// Pid in the ring header.
        found: u32,
        /// The supervised pid.
        expected: u32,
    },
    /// The ring's heartbeat has not moved for too long.
    #[error("ring {name}: heartbeat {age_ms} ms old (limit {limit_ms} ms)")]
    StaleHeartbeat {
        /// Ring name.
        name: String,
        /// Age of the last heartbeat.
        age_ms: u64,
        /// The limit.
        limit_ms: u64,
    },
    /// The writer closed the ring.
    #[error("ring {name} is closed")]
    RingClosed {
        /// Ring name.
        name: String,
    },
    /// `/proc/<pid>/status` could not be read.
    #[error("cannot read memory use of pid {pid}: {source}")]
    Proc {
        /// The pid.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ProbeError {
    /// Whether the probe failed in the agent's own process (it ran out of descriptors or
    /// memory while opening the socket, the ring or `/proc`): that says nothing about
    /// the child, so the supervisor never counts it against the child.
    pub fn is_local(&self) -> bool {
        use crate::fds::out_of_resources;
        match self {
            ProbeError::Connect(ConnectError::Io { source, .. }) => out_of_resources(source),
            ProbeError::Ring {
                source: shm_ring::RingOpenError::Io { source, .. },
                ..
            } => out_of_resources(source),
            ProbeError::Proc { source, .. } => out_of_resources(source),
            _ => false,
        }
    }
}

async fn exchange(
    socket: &Path,
    peer: ExpectedPeer,
    request: Request,
    timeout: Duration,
    max: usize,
) -> Result<Response, ProbeError> {
    let options = ClientOptions::default()
        .max_frame(max)
        .connect_timeout(timeout)
        .send_timeout(timeout)
        .request_timeout(timeout);
    let work = async {
        let stream = framebus_client::connect(socket, timeout).await?;
        check_peer(&stream, socket, peer)?;
        let client = Client::from_stream(stream, socket, options);
        client.call(request).await.map_err(|source| match source {
            // The client's own limit is the same as ours: the same timeout.
            CallError::Timeout { .. } => ProbeError::Timeout {
                path: socket.to_path_buf(),
                timeout,
            },
            source => ProbeError::Protocol {
                path: socket.to_path_buf(),
                source,
            },
        })
    };
    // One limit on the whole exchange, as before: connect, send and answer together.
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProbeError::Timeout {
            path: socket.to_path_buf(),
            timeout,
        })?
}

fn unexpected(socket: &Path, got: &Response, expected: &'static str) -> ProbeError {
    ProbeError::Protocol {
        path: socket.to_path_buf(),
        source: CallError::Unexpected {
            id: got.id().unwrap_or_default(),
            expected,
            got: got.type_name(),
        },
    }
}

/// Sends `ping` and waits for `pong` (after checking that `peer` listens).
pub async fn ping(
    socket: &Path,
    peer: ExpectedPeer,
    timeout: Duration,
    max: usize,
) -> Result<(), ProbeError> {
    match exchange(socket, peer, Request::ping(1), timeout, max).await? {
        Response::Pong { .. } => Ok(()),
        other => Err(unexpected(socket, &other, "pong")),
    }
}

/// Asks for the server's status; `Ok` only while it serves (`ready` or `degraded`).
pub async fn serving_status(
    socket: &Path,
    peer: ExpectedPeer,
    timeout: Duration,
    max: usize,
) -> Result<StatusReport, ProbeError> {
    match exchange(socket, peer, Request::get_status(2), timeout, max).await? {
        Response::Status(s) => match s.state {
            ServerState::Ready | ServerState::Degraded => Ok(s),
            state => Err(ProbeError::NotServing { state }),
        },
        other => Err(unexpected(socket, &other, "status")),
    }
}

/// What the ring header says, as far as the supervisor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingHealth {
    /// Ring generation.
    pub generation: u64,
    /// Writer state.
    pub state: RingState,
    /// Age of the heartbeat.
    pub heartbeat_age: Duration,
}

/// Opens the ring and checks that `pid` writes it and that its heartbeat is younger
/// than `limit` (measured against `now_ns`, CLOCK_MONOTONIC).
pub fn check_ring(
    dir: &Path,
    name: &str,
    pid: u32,
    limit: Duration,
    now_ns: u64,
) -> Result<RingHealth, ProbeError> {
    // A 256-byte pread, not a mapping: this runs every probe interval per camera, and
    // a ring truncated under it is a short read (a typed error), never a SIGBUS.
    let h = peek_header(dir, name, &RingTrust::new()).map_err(|source| ProbeError::Ring {
        name: name.to_owned(),
        source,
    })?;
    if h.writer_pid != pid {
        return Err(ProbeError::ForeignRing {
            name: name.to_owned(),
            found: h.writer_pid,
            expected: pid,
        });
    }
    if h.state == RingState::Closed {
        return Err(ProbeError::RingClosed {
            name: name.to_owned(),
        });
    }
    let age = heartbeat_age(h.heartbeat_ns, now_ns);
    if age > limit {
        return Err(ProbeError::StaleHeartbeat {
            name: name.to_owned(),
            age_ms: age.as_millis() as u64,
            limit_ms: limit.as_millis() as u64,
        });
    }
    Ok(RingHealth {
        generation: h.generation,
        state: h.state,
        heartbeat_age: age,
    })
}

/// Age of a heartbeat stamped `heartbeat_ns` at `now_ns` (a heartbeat from the future,
/// which a monotonic clock cannot produce, counts as fresh).
pub fn heartbeat_age(heartbeat_ns: u64, now_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(heartbeat_ns))
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, ProbeError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| ProbeError::Proc { pid, source })?;
    parse_vm_rss(&text).ok_or_else(|| ProbeError::Proc {
        pid,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS line"),
    })
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let mult = match unit {
        "kB" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed() {
        let status = "Name:\tmodel-server\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(51200 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(matches!(rss_bytes(u32::MAX), Err(ProbeError::Proc { .. })));
    }

    /// Issue 10, defect 1: the ring probe on a truncated ring reports a typed error; the
    /// probing process lives.
    #[test]
    fn truncated_ring_is_a_probe_error_not_a_crash() {
        use proto_schema::pixel::{FrameGeometry, PixelFormat};
        use shm_ring::{RingState, RingWriter};
        let dir = tempfile::tempdir().unwrap();
        let w = RingWriter::builder("cam")
            .dir(dir.path())
            .slots(2)
            .geometry(FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap())
            .create()
            .unwrap();
        w.set_state(RingState::Live);
        let now = proto_schema::time::MonoNanos::now().get();
        let ok = check_ring(
            dir.path(),
            "cam",
            std::process::id(),
            Duration::from_secs(60),
            now,
        );
        assert!(ok.is_ok(), "{ok:?}");
        for len in [w.geometry().frame_size as u64, 0] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(w.path())
                .unwrap()
                .set_len(len)
                .unwrap();
            let e = check_ring(
                dir.path(),
                "cam",
                std::process::id(),
                Duration::from_secs(60),
                now,
            )
            .unwrap_err();
            assert!(matches!(e, ProbeError::Ring { .. }), "{e}");
        }
        // The writer's own mapping is truncated too: leak it rather than let its drop
        // write the closed state into a page that no longer exists.
        std::mem::forget(w);
    }

    #[test]
    fn heartbeat_age_saturates() {
        assert_eq!(
            heartbeat_age(1_000, 3_000_000_000),
            Duration::from_nanos(2_999_999_000)
        );
        assert_eq!(heartbeat_age(5, 1), Duration::ZERO);
    }

    /// Issue 25, break 1: the agent's own `Too many open files` is its fault, not the
    /// child's; the peer's refusals and silence are the child's.
    #[test]
    fn the_agent_s_own_exhaustion_is_told_from_an_unhealthy_child() {
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        let connect = |errno| {
            ProbeError::Connect(ConnectError::Io {
                path: "m.sock".into(),
                source: io(errno),
            })
        };
        assert!(connect(libc::EMFILE).is_local());
        assert!(connect(libc::ENFILE).is_local());
        assert!(!connect(libc::ECONNREFUSED).is_local());
        assert!(!connect(libc::ENOENT).is_local());
        let ring = |errno| ProbeError::Ring {
            name: "cam".into(),
            source: shm_ring::RingOpenError::Io {
                path: "cam".into(),
                op: "open",
                source: io(errno),
            },
        };
        assert!(ring(libc::EMFILE).is_local());
        assert!(!ring(libc::EACCES).is_local());
        assert!(ProbeError::Proc {
            pid: 1,
            source: io(libc::EMFILE)
        }
        .is_local());
        let stale = ProbeError::StaleHeartbeat {
            name: "cam".into(),
            age_ms: 9000,
            limit_ms: 3000,
        };
        assert!(!stale.is_local());
        assert!(!ProbeError::Timeout {
            path: "m.sock".into(),
            timeout: Duration::from_secs(1)
        }
        .is_local());
    }

    #[tokio::test]
    async fn ping_to_nowhere_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ping(
            &dir.path().join("none.sock"),
            ExpectedPeer::ServiceUid,
            Duration::from_millis(200),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let _keep = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = ping(
            &path,
            ExpectedPeer::Pid(std::process::id()),
            Duration::from_millis(100),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    }

    /// An impostor listening where the model server should: refused before anything is
    /// sent (it never sees a byte).
    #[tokio::test]
    async fn an_impostor_gets_no_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let got = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf),
            )
            .await;
            buf.len()
        });
        // The spawned server would be another pid than this test process.
        let err = serving_status(&path, ExpectedPeer::Pid(1), Duration::from_secs(1), 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProbeError::Peer(PeerError::WrongPid { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("m.sock"), "{err}");
        assert_eq!(got.await.unwrap(), 0, "the impostor received bytes");
    }
}
