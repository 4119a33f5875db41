//! The blocking client (std::io, no runtime): the same protocol, timeouts and errors as
//! [`crate::Client`], for threads, tools and tests.
//!
//! Pipelining: [`BlockingClient::send`] returns the id it gave the request and
//! [`BlockingClient::recv`] waits for the answer with a given id; answers to other
//! requests in flight that arrive first are kept until asked for (at most
//! [`ClientOptions::max_in_flight`] of them, since at most that many requests are in
//! flight).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto_schema::framing::{self, FrameDecoder, FrameError};
use proto_schema::message::{
    decode_response, InferenceRequest, InferenceResponse, Request, Response, StatsReport,
    StatusReport,
};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::client::{infer_result, set_id, unexpected};
use crate::connection::ReadError;
use crate::error::{CallError, Closed, ConnectError, InferError, SendError};
use crate::options::ClientOptions;

/// How often a connect whose backlog is full is retried.
const CONNECT_RETRY: Duration = Duration::from_millis(1);

/// Connects to the socket at `path` within `timeout` (a non-blocking connect retried
/// while the server's accept backlog is full), returning a blocking stream.
pub fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    let io_err = |e: Errno| ConnectError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let addr = SocketAddrUnix::new(path).map_err(io_err)?;
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io_err)?;
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::INTR) => {}
            // AF_UNIX: a full backlog is EAGAIN for a non-blocking connect.
            Err(Errno::AGAIN) if Instant::now() < deadline => std::thread::sleep(CONNECT_RETRY),
            Err(Errno::AGAIN) => {
                return Err(ConnectError::Timeout {
                    path: path.to_path_buf(),
                    timeout,
                })
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|source| ConnectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(stream)
}

/// A blocking connection to one model server with pipelined, id-matched requests.
#[derive(Debug)]
pub struct BlockingClient {
    path: PathBuf,
    options: ClientOptions,
    stream: UnixStream,
    decoder: FrameDecoder,
    write_buf: Vec<u8>,
    next_id: u64,
    /// Ids sent and not yet returned by `recv`.
    in_flight: HashSet<u64>,
    /// Answers that arrived before they were asked for.
    early: HashMap<u64, Response>,
    closed: Option<std::sync::Arc<Closed>>,
}

impl BlockingClient {
    /// Connects with default [`ClientOptions`].
    pub fn connect(path: impl AsRef<Path>) -> Result<BlockingClient, ConnectError> {
        BlockingClient::connect_with(path, ClientOptions::default())
    }

    /// Connects within `options.connect_timeout`.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<BlockingClient, ConnectError> {
        let path = path.as_ref();
        let stream = connect(path, options.connect_timeout)?;
        Ok(BlockingClient::from_stream(stream, path, options))
    }

    /// A client on an already connected stream; `path` names it in errors.
    pub fn from_stream(
        stream: UnixStream,
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> BlockingClient {
        BlockingClient {
            path: path.as_ref().to_path_buf(),
            options,
            stream,
            decoder: FrameDecoder::new(options.max_frame),
            write_buf: Vec::with_capacity(512),
            next_id: 1,
            in_flight: HashSet::new(),
            early: HashMap::new(),
            closed: None,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket (e.g. to half-close it, or to write raw bytes in a test; raw writes
    /// bypass the framing).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Requests sent and not yet received.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `request` under a fresh id (returned) without waiting for the answer.
    pub fn send(&mut self, mut request: Request) -> Result<u64, SendError> {
        if let Some(why) = &self.closed {
            return Err(SendError::Closed(why.clone()));
        }
        if self.in_flight.len() >= self.options.max_in_flight {
            return Err(SendError::TooManyInFlight {
                max: self.options.max_in_flight,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        set_id(&mut request, id);
        self.write_buf.clear();
        framing::encode_into(&request, self.options.max_frame, &mut self.write_buf)
            .map_err(SendError::Frame)?;
        let timeout = self.options.send_timeout;
        let written = self
            .stream
            .set_write_timeout(Some(nonzero(timeout)))
            .and_then(|()| self.stream.write_all(&self.write_buf));
        match written {
            Ok(()) => {
                self.in_flight.insert(id);
                Ok(id)
            }
            Err(e) => {
                // Part of the frame may be on the wire: the stream is out of sync.
                self.closed = Some(std::sync::Arc::new(Closed::SendFailed));
                if is_timeout(&e) {
                    Err(SendError::Blocked(timeout))
                } else {
                    Err(SendError::Frame(FrameError::Io(e)))
                }
            }
        }
    }

    /// Waits for the answer to request `id` (sent by [`BlockingClient::send`]), keeping
    /// answers to other requests that come first. An `error` answer is
    /// [`CallError::Rejected`].
    pub fn recv(&mut self, id: u64) -> Result<Response, CallError> {
        let deadline = Instant::now() + self.options.request_timeout;
        let response = loop {
            if let Some(r) = self.early.remove(&id) {
                break r;
            }
            if let Some(why) = &self.closed {
                self.in_flight.remove(&id);
                return Err(CallError::Closed {
                    id,
                    source: why.clone(),
                });
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(CallError::Timeout {
                    id,
                    timeout: self.options.request_timeout,
                });
            };
            match self.read_response(left) {
                Ok(r) => {
                    let rid = r.id().unwrap_or_default();
                    if rid == id {
                        break r;
                    }
                    if self.in_flight.contains(&rid) {
                        self.early.insert(rid, r);
                    }
                }
                Err(Some(why)) => self.closed = Some(std::sync::Arc::new(why)),
                Err(None) => {
                    return Err(CallError::Timeout {
                        id,
                        timeout: self.options.request_timeout,
                    })
                }
            }
        };
        self.in_flight.remove(&id);
        match response {
            Response::Error { error, .. } => Err(CallError::Rejected {
                id,
                code: error.code,
                message: error.message,
            }),
            r => Ok(r),
        }
    }

    /// Reads one answer within `left`: `Err(None)` on timeout (nothing lost: a partial
    /// frame stays buffered), `Err(Some(why))` when the connection ended.
    fn read_response(&mut self, left: Duration) -> Result<Response, Option<Closed>> {
        loop {
            match self.decoder.next() {
                Ok(Some(payload)) => {
                    return match decode_response(&payload) {
                        Ok(Response::Error {
                            id: None, error, ..
                        }) => Err(Some(Closed::Refused {
                            code: error.code,
                            message: error.message,
                        })),
                        Ok(r) => Ok(r),
                        Err(e) => Err(Some(Closed::Read(ReadError::Decode(e)))),
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Some(Closed::Read(ReadError::Frame(e)))),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .set_read_timeout(Some(nonzero(left)))
                .and_then(|()| self.stream.read(&mut chunk));
            match n {
                Ok(0) => {
                    return Err(Some(match self.decoder.finish() {
                        Ok(()) => Closed::Eof,
                        Err(e) => Closed::Read(ReadError::Frame(e)),
                    }))
                }
                Ok(n) => self.decoder.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(None),
                Err(e) => return Err(Some(Closed::Read(ReadError::Frame(FrameError::Io(e))))),
            }
        }
    }

    /// Sends `request` and waits for its answer.
    pub fn call(&mut self, request: Request) -> Result<Response, CallError> {
        let id = self.send(request)?;
        self.recv(id)
    }

    /// `ping` → `pong`; returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, CallError> {
        let t = Instant::now();
        match self.call(Request::ping(0))? {
            Response::Pong { .. } => Ok(t.elapsed()),
            other => Err(unexpected(&other, "pong")),
        }
    }

    /// `get_status` → the server's [`StatusReport`].
    pub fn status(&mut self) -> Result<StatusReport, CallError> {
        match self.call(Request::get_status(0))? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(&other, "status")),
        }
    }

    /// `get_stats` → the server's [`StatsReport`].
    pub fn stats(&mut self) -> Result<StatsReport, CallError> {
        match self.call(Request::get_stats(0))? {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected(&other, "stats")),
        }
    }

    /// `shutdown` → `shutdown_ack`.
    pub fn shutdown(&mut self) -> Result<(), CallError> {
        match self.call(Request::shutdown(0))? {
            Response::ShutdownAck { .. } => Ok(()),
            other => Err(unexpected(&other, "shutdown_ack")),
        }
    }

    /// Runs one inference (the request's id is replaced). An answer carrying an error is
    /// [`InferError::Server`] with the code.
    pub fn infer(&mut self, request: InferenceRequest) -> Result<InferenceResponse, InferError> {
        let id = self
            .send(Request::Infer(request))
            .map_err(CallError::from)?;
        self.recv_infer(id)
    }

    /// The answer to the inference request `id` sent with [`BlockingClient::send`].
    pub fn recv_infer(&mut self, id: u64) -> Result<InferenceResponse, InferError> {
        match self.recv(id)? {
            Response::InferResult(r) => infer_result(r),
            other => Err(unexpected(&other, "infer_result").into()),
        }
    }
}

/// `set_*_timeout` refuses a zero duration.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve(
        listener: UnixListener,
        f: impl FnOnce(UnixStream) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            f(s)
        })
    }

    fn read_requests(s: &mut UnixStream, n: usize) -> Vec<Request> {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            while let Some(p) = dec.next().unwrap() {
                out.push(proto_schema::message::decode_request(&p).unwrap());
            }
            if out.len() < n {
                let k = s.read(&mut chunk).unwrap();
                assert!(k > 0, "client closed early");
                dec.extend(&chunk[..k]);
            }
        }
        out
    }

    #[test]
    fn pipelined_answers_out_of_order_are_matched_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = serve(UnixListener::bind(&path).unwrap(), |mut s| {
            let reqs = read_requests(&mut s, 3);
            for r in reqs.iter().rev() {
                let bytes = framing::encode(&Response::pong(r.id()), 1 << 20).unwrap();
                s.write_all(&bytes).unwrap();
            }
            let _ = s.read(&mut [0u8; 1]);
        });
        let mut c = BlockingClient::connect(&path).unwrap();
        let ids: Vec<u64> = (0..3).map(|_| c.send(Request::ping(0)).unwrap()).collect();
        assert_eq!(c.in_flight(), 3);
        for id in ids {
            match c.recv(id).unwrap() {
                Response::Pong { id: got, .. } => assert_eq!(got, id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(c.in_flight(), 0);
        assert!(c.early.is_empty());
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn a_silent_server_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = serve(UnixListener::bind(&path).unwrap(), |mut s| {
            let _ = read_requests(&mut s, 1);
            let _ = s.read(&mut [0u8; 1]);
        });
        let options = ClientOptions::default().request_timeout(Duration::from_millis(50));
        let mut c = BlockingClient::connect_with(&path, options).unwrap();
        let e = c.ping().unwrap_err();
        assert!(matches!(e, CallError::Timeout { id: 1, .. }), "{e}");
        assert!(!c.is_closed());
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn an_oversized_answer_closes_the_connection_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = serve(UnixListener::bind(&path).unwrap(), |mut s| {
            let _ = read_requests(&mut s, 1);
            s.write_all(&u32::MAX.to_be_bytes()).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        });
        let mut c =
            BlockingClient::connect_with(&path, ClientOptions::default().max_frame(64)).unwrap();
        match c.ping().unwrap_err() {
            CallError::Closed { source, .. } => assert!(
                matches!(
                    &*source,
                    Closed::Read(ReadError::Frame(FrameError::TooLarge { max: 64, .. }))
                ),
                "{source}"
            ),
            other => panic!("{other}"),
        }
        assert!(matches!(
            c.ping().unwrap_err(),
            CallError::Send(SendError::Closed(_))
        ));
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn connect_to_nowhere_and_to_a_non_socket() {
        let dir = tempfile::tempdir().unwrap();
        let e = BlockingClient::connect(dir.path().join("none.sock")).unwrap_err();
        assert!(
            matches!(&e, ConnectError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            BlockingClient::connect(&file).unwrap_err(),
            ConnectError::Io { .. }
        ));
    }
}
