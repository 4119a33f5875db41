//! The tokio client: one connection, any number of requests in flight, answers matched
//! to requests by id (the server answers in any order, `docs/protocol.md` §4).
//!
//! A reader task owns the read half and routes each answer to the call waiting for its
//! id. Calls share the write half behind an async mutex, so concurrent calls on one
//! `&Client` are pipelined. For callers that route answers themselves (the core-agent's
//! stream agent merges them into its own event loop), [`split`] gives the two halves
//! without the routing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto_schema::framing::FrameError;
use proto_schema::message::{
    InferenceRequest, InferenceResponse, Request, Response, StatsReport, StatusReport,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connection::{Connection, ReadError};
use crate::error::{CallError, Closed, ConnectError, InferError, SendError};
use crate::options::{Backoff, ClientOptions};

/// Connects to the socket at `path` within `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ConnectError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Err(ConnectError::Timeout {
            path: path.to_path_buf(),
            timeout,
        }),
    }
}

/// Splits a connected stream into a request sender and a response receiver (no id
/// matching: the caller keeps its own table of requests in flight).
pub fn split(stream: UnixStream, options: &ClientOptions) -> (RequestSender, ResponseReceiver) {
    let (read, write) = Connection::new(stream, options.max_frame).into_split();
    (
        RequestSender {
            conn: write,
            send_timeout: options.send_timeout,
        },
        ResponseReceiver { conn: read },
    )
}

/// The write half: sends requests, each within the send timeout.
#[derive(Debug)]
pub struct RequestSender {
    conn: Connection<OwnedWriteHalf>,
    send_timeout: Duration,
}

impl RequestSender {
    /// Sends one request. A [`SendError::Blocked`] or an I/O [`SendError::Frame`] leaves
    /// the connection unusable (drop it); a too-large message sends nothing.
    pub async fn send(&mut self, request: &Request) -> Result<(), SendError> {
        send_on(&mut self.conn, request, self.send_timeout).await
    }

    /// [`RequestSender::send`] with another time limit.
    pub async fn send_within(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(), SendError> {
        send_on(&mut self.conn, request, timeout).await
    }
}

async fn send_on(
    conn: &mut Connection<OwnedWriteHalf>,
    request: &Request,
    timeout: Duration,
) -> Result<(), SendError> {
    match tokio::time::timeout(timeout, conn.write_message(request)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendError::Frame(e)),
        Err(_) => Err(SendError::Blocked(timeout)),
    }
}

/// The read half: yields answers in arrival order.
#[derive(Debug)]
pub struct ResponseReceiver {
    conn: Connection<OwnedReadHalf>,
}

impl ResponseReceiver {
    /// The next answer; `Ok(None)` when the server closed between frames. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Response>, ReadError> {
        self.conn.read_response().await
    }
}

type Reply = Result<Response, Arc<Closed>>;

/// What the reader task and the calls share.
#[derive(Debug, Default)]
struct Routes {
    /// Calls waiting for an answer, by request id.
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection ended; every later call fails with it.
    closed: Option<Arc<Closed>>,
}

impl Routes {
    fn close(&mut self, why: Closed) {
        let why = self.closed.get_or_insert_with(|| Arc::new(why)).clone();
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Err(why.clone()));
        }
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // A panic while holding the lock leaves the table consistent (plain inserts and
    // removes), so a poisoned lock is still usable.
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection to one model server with pipelined, id-matched requests.
///
/// Request ids are assigned by the client (any id in a request passed in is replaced).
/// Dropping the client closes the connection; calls still waiting then fail.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    options: ClientOptions,
    writer: tokio::sync::Mutex<Connection<OwnedWriteHalf>>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Client {
    /// Connects with default [`ClientOptions`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ConnectError> {
        Client::connect_with(path, ClientOptions::default()).await
    }

    /// Connects within `options.connect_timeout`.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        let path = path.as_ref();
        let stream = connect(path, options.connect_timeout).await?;
        Ok(Client::from_stream(stream, path, options))
    }

    /// A client on an already connected stream (e.g. after checking the peer's
    /// credentials); `path` names it in errors. Must run inside a tokio runtime.
    pub fn from_stream(
        stream: UnixStream,
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Client {
        let (read, write) = Connection::new(stream, options.max_frame).into_split();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader = tokio::spawn(route_answers(read, routes.clone()));
        Client {
            path: path.as_ref().to_path_buf(),
            options,
            writer: tokio::sync::Mutex::new(write),
            routes,
            next_id: AtomicU64::new(1),
            reader,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Whether the connection has ended (every call now fails; reconnect).
    pub fn is_closed(&self) -> bool {
        lock(&self.routes).closed.is_some()
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.routes).waiting.len()
    }

    /// Sends `request` (under a fresh id) and waits for the answer with that id.
    /// An `error` answer is [`CallError::Rejected`]; other answers are returned as they
    /// are (an `infer_result` with an error included).
    pub async fn call(&self, mut request: Request) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        set_id(&mut request, id);
        let rx = {
            let mut routes = lock(&self.routes);
            if let Some(why) = &routes.closed {
                return Err(SendError::Closed(why.clone()).into());
            }
            if routes.waiting.len() >= self.options.max_in_flight {
                return Err(SendError::TooManyInFlight {
                    max: self.options.max_in_flight,
                }
                .into());
            }
            let (tx, rx) = oneshot::channel();
            routes.waiting.insert(id, tx);
            rx
        };
        // Removes the entry however this call ends (answer, error, timeout, cancel).
        let _waiting = Forget {
            routes: &self.routes,
            id,
        };
        self.send(&request).await?;
        let timeout = self.options.request_timeout;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            // The sender is only dropped by `Routes::close`, after sending.
            Ok(Err(_)) => Err(Arc::new(Closed::Dropped)),
            Err(_) => return Err(CallError::Timeout { id, timeout }),
        };
        match reply {
            Ok(Response::Error { error, .. }) => Err(CallError::Rejected {
                id,
                code: error.code,
                message: error.message,
            }),
            Ok(response) => Ok(response),
            Err(source) => Err(CallError::Closed { id, source }),
        }
    }

    async fn send(&self, request: &Request) -> Result<(), SendError> {
        let mut writer = self.writer.lock().await;
        // A send cancelled or failed mid-frame desynchronises the stream: close then.
        let mut guard = MidFrame {
            routes: &self.routes,
            armed: true,
        };
        let result = send_on(&mut writer, request, self.options.send_timeout).await;
        guard.armed = matches!(
            result,
            Err(SendError::Blocked(_)) | Err(SendError::Frame(FrameError::Io(_)))
        );
        result
    }

    /// `ping` → `pong`; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, CallError> {
        let t = Instant::now();
        match self.call(Request::ping(0)).await? {
            Response::Pong { .. } => Ok(t.elapsed()),
            other => Err(unexpected(&other, "pong")),
        }
    }

    /// `get_status` → the server's [`StatusReport`].
    pub async fn status(&self) -> Result<StatusReport, CallError> {
        match self.call(Request::get_status(0)).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(&other, "status")),
        }
    }

    /// `get_stats` → the server's [`StatsReport`].
    pub async fn stats(&self) -> Result<StatsReport, CallError> {
        match self.call(Request::get_stats(0)).await? {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected(&other, "stats")),
        }
    }

    /// `shutdown` → `shutdown_ack` (the server then drains and exits).
    pub async fn shutdown(&self) -> Result<(), CallError> {
        match self.call(Request::shutdown(0)).await? {
            Response::ShutdownAck { .. } => Ok(()),
            other => Err(unexpected(&other, "shutdown_ack")),
        }
    }

    /// Runs one inference (the request's id is replaced). An answer carrying an error is
    /// [`InferError::Server`] with the code.
    pub async fn infer(&self, request: InferenceRequest) -> Result<InferenceResponse, InferError> {
        match self.call(Request::Infer(request)).await? {
            Response::InferResult(r) => infer_result(r),
            other => Err(unexpected(&other, "infer_result").into()),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        lock(&self.routes).close(Closed::Dropped);
    }
}

/// An `infer_result` as a result.
pub(crate) fn infer_result(r: InferenceResponse) -> Result<InferenceResponse, InferError> {
    match &r.error {
        Some(e) => Err(InferError::Server {
            code: e.code,
            message: e.message.clone(),
            response: Box::new(r),
        }),
        None => Ok(r),
    }
}

pub(crate) fn unexpected(got: &Response, expected: &'static str) -> CallError {
    CallError::Unexpected {
        id: got.id().unwrap_or_default(),
        expected,
        got: got.type_name(),
    }
}

/// Gives `request` the id `id`.
pub(crate) fn set_id(request: &mut Request, new: u64) {
    match request {
        Request::Infer(r) => r.id = new,
        Request::Ping { id, .. }
        | Request::GetStatus { id, .. }
        | Request::GetStats { id, .. }
        | Request::Shutdown { id, .. } => *id = new,
    }
}

struct Forget<'a> {
    routes: &'a Mutex<Routes>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.routes).waiting.remove(&self.id);
    }
}

struct MidFrame<'a> {
    routes: &'a Mutex<Routes>,
    armed: bool,
}

impl Drop for MidFrame<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.routes).close(Closed::SendFailed);
        }
    }
}

/// The reader task: hands each answer to the call waiting for its id, until the
/// connection ends; then fails every call still waiting.
async fn route_answers(mut conn: Connection<OwnedReadHalf>, routes: Arc<Mutex<Routes>>) {
    let why = loop {
        match conn.read_response().await {
            Ok(Some(Response::Error {
                id: None, error, ..
            })) => {
                break Closed::Refused {
                    code: error.code,
                    message: error.message,
                }
            }
            Ok(Some(response)) => {
                let id = response.id().unwrap_or_default();
                match lock(&routes).waiting.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(Ok(response));
                    }
                    // Its call timed out or was cancelled: the answer has nobody to go to.
                    None => tracing::debug!(id, "answer to no waiting request dropped"),
                }
            }
            Ok(None) => break Closed::Eof,
            Err(e) => break Closed::Read(e),
        }
    };
    lock(&routes).close(why);
}

/// A [`Client`] that reconnects when its connection has ended, no faster than its
/// [`Backoff`] allows.
#[derive(Debug)]
pub struct Reconnect {
    path: PathBuf,
    options: ClientOptions,
    backoff: Backoff,
    client: Option<Client>,
}

impl Reconnect {
    /// Not connected yet; the first [`Reconnect::client`] connects at once.
    pub fn new(path: impl AsRef<Path>, options: ClientOptions, backoff: Backoff) -> Self {
        Reconnect {
            path: path.as_ref().to_path_buf(),
            options,
            backoff,
            client: None,
        }
    }

    /// The open client; if there is none (or its connection ended), waits until the
    /// back-off allows an attempt and connects once. A failed attempt is returned (and
    /// lengthens the next wait); call again to retry.
    pub async fn client(&mut self) -> Result<&Client, ConnectError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            loop {
                match self.backoff.attempt(Instant::now()) {
                    Ok(()) => break,
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            }
            let client = Client::connect_with(&self.path, self.options).await?;
            self.backoff.succeeded();
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// Drops the connection (the next [`Reconnect::client`] reconnects).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// The back-off, e.g. to [`Backoff::reset`] it when the server just became ready.
    pub fn backoff_mut(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::error::{ErrorBody, ErrorCode};
    use tokio::net::UnixListener;

    /// A server that reads `n` requests, then answers them in reverse order.
    async fn reversing_server(listener: UnixListener, n: usize) {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Connection::with_default_limit(stream);
        let mut got = Vec::new();
        while got.len() < n {
            got.push(conn.read_request().await.unwrap().unwrap());
        }
        for req in got.into_iter().rev() {
            let answer = match req {
                Request::Ping { id, .. } => Response::pong(id),
                Request::GetStatus { id, .. } => Response::error(
                    Some(id),
                    ErrorBody::new(ErrorCode::UnknownMessageType, "not here"),
                ),
                other => panic!("unexpected {other:?}"),
            };
            conn.queue(&answer).unwrap();
        }
        conn.flush().await.unwrap();
        // Keep the connection open until the client is done.
        let _ = conn.read_frame().await;
    }

    #[tokio::test]
    async fn answers_out_of_order_reach_their_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(reversing_server(listener, 4));
        let client = Client::connect(&path).await.unwrap();
        let (a, b, c, d) = tokio::join!(
            client.ping(),
            client.call(Request::ping(0)),
            client.status(),
            client.call(Request::ping(0)),
        );
        a.unwrap();
        // Each call got the answer to its own id, although they came in reverse order.
        match b.unwrap() {
            Response::Pong { id, .. } => assert_eq!(id, 2),
            other => panic!("{other:?}"),
        }
        match c.unwrap_err() {
            CallError::Rejected { id, code, .. } => {
                assert_eq!((id, code), (3, ErrorCode::UnknownMessageType))
            }
            other => panic!("{other}"),
        }
        match d.unwrap() {
            Response::Pong { id, .. } => assert_eq!(id, 4),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.in_flight(), 0);
        drop(client);
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_times_out_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut conn = Connection::with_default_limit(s);
            while let Ok(Some(_)) = conn.read_frame().await {} // never answers
        });
        let options = ClientOptions::default().request_timeout(Duration::from_secs(5));
        let client = Client::connect_with(&path, options).await.unwrap();
        // Paused clock: the 5 s pass at once once every task waits.
        let e = client.ping().await.unwrap_err();
        assert!(
            matches!(e, CallError::Timeout { id: 1, timeout } if timeout == Duration::from_secs(5)),
            "{e}"
        );
        assert_eq!(client.in_flight(), 0, "the timed-out call left an entry");
        assert!(!client.is_closed());
    }

    #[tokio::test]
    async fn a_closing_server_fails_the_waiting_calls_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut conn = Connection::with_default_limit(s);
            let _ = conn.read_frame().await;
            let refusal = ErrorBody::new(ErrorCode::Overloaded, "connection limit of 1 reached");
            conn.write_message(&Response::error(None, refusal))
                .await
                .unwrap();
        });
        let client = Client::connect(&path).await.unwrap();
        match client.ping().await.unwrap_err() {
            CallError::Closed { source, .. } => assert!(
                matches!(
                    *source,
                    Closed::Refused {
                        code: ErrorCode::Overloaded,
                        ..
                    }
                ),
                "{source}"
            ),
            other => panic!("{other}"),
        }
        assert!(client.is_closed());
        assert!(matches!(
            client.ping().await.unwrap_err(),
            CallError::Send(SendError::Closed(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_flight_bound_refuses_without_sending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (count_tx, count_rx) = oneshot::channel();
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut conn = Connection::with_default_limit(s);
            let mut n = 0;
            // Reads without answering until the client goes away.
            while let Ok(Some(_)) = conn.read_frame().await {
                n += 1;
            }
            let _ = count_tx.send(n);
        });
        let options = ClientOptions::default()
            .max_in_flight(2)
            .request_timeout(Duration::from_secs(5));
        let client = Client::connect_with(&path, options).await.unwrap();
        let third = async {
            // The first two calls register before this one.
            tokio::task::yield_now().await;
            client.ping().await
        };
        let (a, b, c) = tokio::join!(client.ping(), client.ping(), third);
        assert!(matches!(a.unwrap_err(), CallError::Timeout { id: 1, .. }));
        assert!(matches!(b.unwrap_err(), CallError::Timeout { id: 2, .. }));
        assert!(
            matches!(
                c.unwrap_err(),
                CallError::Send(SendError::TooManyInFlight { max: 2 })
            ),
            "the third request was not refused"
        );
        drop(client);
        assert_eq!(count_rx.await.unwrap(), 2, "the refused request went out");
    }

    #[tokio::test]
    async fn connect_to_nowhere_is_an_io_error_and_reconnect_retries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let e = Client::connect(&path).await.unwrap_err();
        assert!(
            matches!(&e, ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        let mut r = Reconnect::new(
            &path,
            ClientOptions::default(),
            Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
        );
        assert!(r.client().await.is_err());
        let listener = UnixListener::bind(&path).unwrap();
        let _server = tokio::spawn(reversing_server(listener, 1));
        let c = r.client().await.unwrap();
        c.ping().await.unwrap();
    }
}
