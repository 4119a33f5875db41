//! Who is at the other end of a model server's socket. A socket path proves nothing (a
//! file in a directory someone else could write, a server that died and was replaced),
//! so every client in the agent reads `SO_PEERCRED` of the connected socket and refuses
//! a peer that is not the model server the supervisor started: its pid when known, else
//! a process of the service's own uid or root. A refused peer gets no request.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

/// The peer a connection must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// The process the supervisor spawned (the listening socket's creator).
    Pid(u32),
    /// Pid not known: any process of the agent's effective uid, or root.
    ServiceUid,
}

/// How a supervisor probe picks its [`ExpectedPeer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerTrust {
    /// The pid it spawned (production).
    #[default]
    SpawnedPid,
    /// The service uid: for a server the supervisor does not start itself.
    ServiceUid,
}

/// A connection was refused because of who answered.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// `SO_PEERCRED` could not be read.
    #[error("{path}: cannot read the peer's credentials: {source}")]
    Credentials {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Another process than the one spawned listens on the socket.
    #[error("{path}: refusing peer pid {actual_pid} (uid {actual_uid}): expected the spawned model server, pid {expected_pid}")]
    WrongPid {
        /// Socket path.
        path: PathBuf,
        /// The spawned pid.
        expected_pid: u32,
        /// The peer's pid (0 when the kernel did not say).
        actual_pid: i64,
        /// The peer's uid.
        actual_uid: u32,
    },
    /// A process of another user listens on the socket.
    #[error("{path}: refusing peer uid {actual_uid} (pid {actual_pid}): expected uid {expected_uid} or root")]
    WrongUid {
        /// Socket path.
        path: PathBuf,
        /// The agent's effective uid.
        expected_uid: u32,
        /// The peer's uid.
        actual_uid: u32,
        /// The peer's pid (0 when the kernel did not say).
        actual_pid: i64,
    },
}

/// Checks the credentials of the process at the other end of `stream` (connected to
/// `path`) against `expected`.
pub fn check_peer(
    stream: &UnixStream,
    path: &Path,
    expected: ExpectedPeer,
) -> Result<(), PeerError> {
    let cred = stream
        .peer_cred()
        .map_err(|source| PeerError::Credentials {
            path: path.to_path_buf(),
            source,
        })?;
    check_cred(cred.pid().map(i64::from), cred.uid(), path, expected)
}

/// [`check_peer`] on credentials already read.
pub fn check_cred(
    pid: Option<i64>,
    uid: u32,
    path: &Path,
    expected: ExpectedPeer,
) -> Result<(), PeerError> {
    let actual_pid = pid.unwrap_or(0);
    match expected {
        ExpectedPeer::Pid(p) if pid == Some(i64::from(p)) => Ok(()),
        ExpectedPeer::Pid(p) => Err(PeerError::WrongPid {
            path: path.to_path_buf(),
            expected_pid: p,
            actual_pid,
            actual_uid: uid,
        }),
        ExpectedPeer::ServiceUid => {
            let own = shm_ring::owned_dir::effective_uid();
            if uid == own || uid == 0 {
                Ok(())
            } else {
                Err(PeerError::WrongUid {
                    path: path.to_path_buf(),
                    expected_uid: own,
                    actual_uid: uid,
                    actual_pid,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_and_uid_rules() {
        let p = Path::new("/s/m.sock");
        let own = shm_ring::owned_dir::effective_uid();
        check_cred(Some(42), own, p, ExpectedPeer::Pid(42)).unwrap();
        let e = check_cred(Some(43), own, p, ExpectedPeer::Pid(42)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/s/m.sock") && msg.contains("43") && msg.contains("pid 42"),
            "{msg}"
        );
        assert!(check_cred(None, own, p, ExpectedPeer::Pid(42)).is_err());
        check_cred(Some(1), own, p, ExpectedPeer::ServiceUid).unwrap();
        check_cred(Some(1), 0, p, ExpectedPeer::ServiceUid).unwrap();
        if own != 65534 {
            let e = check_cred(Some(7), 65534, p, ExpectedPeer::ServiceUid).unwrap_err();
            assert!(
                matches!(
                    e,
                    PeerError::WrongUid {
                        actual_uid: 65534,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_live_socket_reports_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let _l = tokio::net::UnixListener::bind(&path).unwrap();
        let s = UnixStream::connect(&path).await.unwrap();
        check_peer(&s, &path, ExpectedPeer::Pid(std::process::id())).unwrap();
        check_peer(&s, &path, ExpectedPeer::ServiceUid).unwrap();
        assert!(check_peer(&s, &path, ExpectedPeer::Pid(1)).is_err());
    }
}
