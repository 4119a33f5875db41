//! The persistent connection of one stream agent to one model server: requests go out
//! on the write half from the agent's task; a reader task turns every answer into a
//! [`LinkEvent`]. A dead connection is reported once; the agent reconnects on demand.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proto_schema::framing::{read_frame, write_message};
use proto_schema::message::{decode_response, Request, Response};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::peer::{check_peer, ExpectedPeer, PeerError};

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection and connecting failed.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Someone else than the model server the supervisor started listens on the
    /// socket; the connection was closed without sending anything.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Connecting was tried too recently.
    #[error("not connected (next attempt in {0:?})")]
    Waiting(Duration),
    /// There is no connection to send on.
    #[error("send failed: not connected")]
    NotConnected,
    /// Writing the request failed; the connection was dropped.
    #[error("send failed: {0}")]
    Send(#[source] proto_schema::framing::FrameError),
    /// The socket did not take the request within the send timeout.
    #[error("send failed: write blocked for {0:?}")]
    Blocked(Duration),
}

/// What a reader task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// An answer arrived.
    Answer {
        /// Subscription index in the agent.
        sub: usize,
        /// Connection generation.
        conn: u64,
        /// The answer.
        response: Response,
    },
    /// The connection ended.
    Closed {
        /// Subscription index.
        sub: usize,
        /// Connection generation.
        conn: u64,
        /// Why.
        reason: String,
    },
}

/// A request waiting for its answer.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Frame id.
    pub frame_id: u64,
    /// Capture time from the ring slot, CLOCK_REALTIME (Unix) ns.
    pub capture_ts_ns: u64,
    /// When it was sent.
    pub sent_at: Instant,
    /// The frame asked about.
    pub frame: Option<proto_schema::message::FrameRef>,
}

/// One agent-to-server connection with its requests in flight.
#[derive(Debug)]
pub struct Link {
    sub: usize,
    socket: PathBuf,
    max_message: usize,
    retry_every: Duration,
    writer: Option<OwnedWriteHalf>,
    reader: Option<JoinHandle<()>>,
    conn: u64,
    last_attempt: Option<Instant>,
    /// Requests in flight by id.
    pub in_flight: HashMap<u64, Pending>,
}

impl Link {
    /// A disconnected link for subscription `sub`.
    pub fn new(sub: usize, socket: PathBuf, max_message: usize) -> Self {
        Self {
            sub,
            socket,
            max_message,
            retry_every: Duration::from_millis(50),
            writer: None,
            reader: None,
            conn: 0,
            last_attempt: None,
            in_flight: HashMap::new(),
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.writer.is_some()
    }

    /// Current connection generation.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Allows an immediate reconnect attempt (the server just became ready).
    pub fn reset_retry(&mut self) {
        self.last_attempt = None;
    }

    /// Connects if not connected, at most once per retry interval, and only to
    /// `expected` (checked with `SO_PEERCRED` before anything is sent).
    pub async fn ensure_connected(
        &mut self,
        events: &mpsc::Sender<LinkEvent>,
        expected: ExpectedPeer,
    ) -> Result<(), LinkError> {
        if self.writer.is_some() {
            return Ok(());
        }
        if let Some(t) = self.last_attempt {
            let since = t.elapsed();
            if since < self.retry_every {
                return Err(LinkError::Waiting(self.retry_every - since));
            }
        }
        self.last_attempt = Some(Instant::now());
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| LinkError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        check_peer(&stream, &self.socket, expected)?;
        let (read, write) = stream.into_split();
        self.conn += 1;
        let (sub, conn, max, tx) = (self.sub, self.conn, self.max_message, events.clone());
        self.reader = Some(tokio::spawn(async move {
            let mut read = read;
            let reason = loop {
                match read_frame(&mut read, max).await {
                    Ok(Some(frame)) => match decode_response(&frame) {
                        Ok(response) => {
                            if tx
                                .send(LinkEvent::Answer {
                                    sub,
                                    conn,
                                    response,
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => break format!("undecodable answer: {e}"),
                    },
                    Ok(None) => break "closed by the server".to_owned(),
                    Err(e) => break e.to_string(),
                }
            };
            let _ = tx.send(LinkEvent::Closed { sub, conn, reason }).await;
        }));
        self.writer = Some(write);
        Ok(())
    }

    /// Sends one request; on failure the connection is dropped (and the caller counts
    /// the requests that were in flight, see [`Link::disconnect`]).
    pub async fn send(&mut self, request: &Request, timeout: Duration) -> Result<(), LinkError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(LinkError::NotConnected);
        };
        match tokio::time::timeout(timeout, write_message(w, request, self.max_message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LinkError::Send(e)),
            Err(_) => Err(LinkError::Blocked(timeout)),
        }
    }

    /// Drops the connection; returns how many requests were lost with it.
    pub fn disconnect(&mut self) -> usize {
        self.writer = None;
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        let lost = self.in_flight.len();
        self.in_flight.clear();
        lost
    }

    /// Removes requests older than `limit`; returns how many.
    pub fn expire(&mut self, limit: Duration) -> usize {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, p| p.sent_at.elapsed() < limit);
        before - self.in_flight.len()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}
