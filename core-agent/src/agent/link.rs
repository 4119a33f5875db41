//! The persistent connection of one stream agent to one model server: requests go out
//! on the write half from the agent's task; a reader task turns every answer into a
//! [`LinkEvent`]. A dead connection is reported once; the agent reconnects on demand.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use framebus_client::{Backoff, ClientOptions, ConnectError, RequestSender, SendError};
use proto_schema::message::{Request, Response};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::peer::{check_peer, ExpectedPeer, PeerError};

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection and connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
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
    Send(#[source] SendError),
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
    options: ClientOptions,
    /// At most one connection attempt per 50 ms.
    retry: Backoff,
    writer: Option<RequestSender>,
    reader: Option<JoinHandle<()>>,
    conn: u64,
    /// Requests in flight by id.
    pub in_flight: HashMap<u64, Pending>,
}

impl Link {
    /// A disconnected link for subscription `sub`.
    pub fn new(sub: usize, socket: PathBuf, max_message: usize) -> Self {
        Self {
            sub,
            socket,
            options: ClientOptions::default().max_frame(max_message),
            retry: Backoff::constant(Duration::from_millis(50)),
            writer: None,
            reader: None,
            conn: 0,
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
        self.retry.reset();
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
        self.retry
            .attempt(Instant::now())
            .map_err(LinkError::Waiting)?;
        let stream = framebus_client::connect(&self.socket, self.options.connect_timeout).await?;
        check_peer(&stream, &self.socket, expected)?;
        let (write, mut read) = framebus_client::split(stream, &self.options);
        self.conn += 1;
        let (sub, conn, tx) = (self.sub, self.conn, events.clone());
        self.reader = Some(tokio::spawn(async move {
            let reason = loop {
                match read.recv().await {
                    Ok(Some(response)) => {
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
                    Ok(None) => break "closed by the server".to_owned(),
                    Err(e @ framebus_client::ReadError::Decode(_)) => {
                        break format!("undecodable answer: {}", error_chain(&e))
                    }
                    Err(e) => break error_chain(&e),
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
        match w.send_within(request, timeout).await {
            Ok(()) => Ok(()),
            Err(SendError::Blocked(d)) => Err(LinkError::Blocked(d)),
            Err(e) => Err(LinkError::Send(e)),
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

/// `e` and its causes, `: `-separated (the close reason is logged as one string).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}
