//! The API's TCP listener. Every local user can connect to it, so nothing about it may
//! be exhaustible (issue 25: ~1000 idle connections used up the agent's descriptors and
//! the supervisor then killed healthy children):
//! - at most [`Limits::max_connections`] connections are served at once; one more is
//!   answered `503` with `Connection: close` and closed (by a small, bounded set of
//!   refusal tasks that each live at most [`REFUSAL_DEADLINE`]; past that set it is
//!   closed at once);
//! - a request's headers must arrive within [`Limits::header_timeout`], and the same
//!   deadline closes a keep-alive connection that sends no next request, so an idle
//!   connection gives its slot back;
//! - an `accept` that fails for want of descriptors (`EMFILE`, `ENFILE`) is retried after
//!   a pause instead of spinning, and counted;
//! - one shutdown signal: no more accepts, every connection is told to finish its
//!   current answer and close (streams end on the same signal), then the listener waits
//!   for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Refusals (`503` answers to connections over the cap) in progress at once; more are
/// closed without an answer.
pub const MAX_REFUSALS: usize = 32;
/// Longest a refusal waits for the request before it answers and closes.
pub const REFUSAL_DEADLINE: Duration = Duration::from_millis(500);
/// Pause after an `accept` that failed for want of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Least time between two warnings about failed accepts.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline on a request's headers, and on the next request of a keep-alive
    /// connection.
    pub header_timeout: Duration,
}

impl From<&crate::config::api::ApiSettings> for Limits {
    fn from(a: &crate::config::api::ApiSettings) -> Self {
        Self {
            max_connections: a.max_connections,
            header_timeout: Duration::from_secs(a.header_timeout_s),
        }
    }
}

/// Counters of the listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
}

impl ConnectionStats {
    /// Connections being served now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted and served since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused because `max_connections` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// `accept` calls that failed (out of descriptors or memory, mostly).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
}

/// Decrements `open` when a served connection ends, however it ends.
struct OpenGuard(Arc<ConnectionStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to a connection over the cap.
fn refusal(max: usize) -> Arc<[u8]> {
    let body = format!("{{\"error\":\"too many connections (api.max_connections = {max})\"}}");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

/// Reads what the client sends (at most a few KiB, until the end of its headers) so that
/// closing does not reset the connection before it reads the answer, then answers.
async fn refuse(mut stream: TcpStream, answer: Arc<[u8]>) {
    let read_head = async {
        let mut buf = [0u8; 4096];
        let mut seen = 0usize;
        loop {
            match stream.read(&mut buf[seen.min(4092)..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen += n;
                    if buf[..seen.min(buf.len())]
                        .windows(4)
                        .any(|w| w == b"\r\n\r\n")
                        || seen >= 4092
                    {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, read_head).await;
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, stream.write_all(&answer)).await;
    let _ = stream.shutdown().await;
}

/// Serves `router` on `listener` under `limits` until `shutdown` turns true, then waits
/// for the open connections to finish (streams end on the same signal).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let answer = refusal(limits.max_connections);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut tasks = JoinSet::new();
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => continue,
            // Reap finished connections as they end, so the set stays as small as the cap.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if crate::fds::out_of_resources(&e) {
                    // One line per burst, not one per pause.
                    if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        last_warning = Some(std::time::Instant::now());
                        tracing::warn!(
                            errors = stats.accept_errors(),
                            "API: accept failed ({e}); pausing accepts"
                        );
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                let answer = answer.clone();
                tokio::spawn(async move {
                    refuse(stream, answer).await;
                    drop(permit);
                });
            }
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(stats.clone());
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let _guard = guard;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("API connection: {e}");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => {}
            }
            // Finish the answer in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};

    async fn start(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        Arc<ConnectionStats>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/health", get(|| async { "ok" }));
        let stats = Arc::new(ConnectionStats::default());
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, router, limits, stats.clone(), rx));
        (addr, stats, tx, task)
    }

    fn get_health(s: &mut std::net::TcpStream) -> String {
        s.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Blocks until `f` holds or 10 s pass.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_the_cap_is_a_503_and_idle_connections_give_their_slot_back() {
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(1),
        };
        let (addr, stats, stop, task) = start(limits).await;
        let held = tokio::task::spawn_blocking(move || {
            // Four keep-alive connections, each after one answered request.
            let mut held: Vec<std::net::TcpStream> = (0..4)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    assert!(get_health(&mut s).starts_with("HTTP/1.1 200"));
                    s
                })
                .collect();
            // The fifth is refused with a 503 and closed.
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            let answer = get_health(&mut extra);
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("api.max_connections = 4"), "{answer}");
            // The held ones are closed by the server after the header deadline.
            for s in &mut held {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 16];
                assert_eq!(
                    s.read(&mut b).unwrap(),
                    0,
                    "an idle connection was kept open"
                );
            }
        })
        .await;
        held.unwrap();
        until("slots given back", || stats.open() == 0).await;
        assert_eq!(stats.accepted(), 4);
        assert_eq!(stats.refused(), 1);
        // And a new connection is served again.
        let ok = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            get_health(&mut s)
        })
        .await
        .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the listener stops")
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_never_sends_headers_is_closed() {
        let limits = Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(1),
        };
        let (addr, stats, stop, _task) = start(limits).await;
        let closed = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            // Half a request line, then nothing (slowloris).
            s.write_all(b"GET /hea").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // End of stream (after a 408 answer, perhaps) well before the read timeout.
            let mut all = Vec::new();
            s.read_to_end(&mut all).is_ok()
        })
        .await
        .unwrap();
        assert!(closed, "a connection without headers was held open");
        until("slot given back", || stats.open() == 0).await;
        stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn shutdown_with_open_connections_finishes() {
        let limits = Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(30),
        };
        let (addr, stats, stop, task) = start(limits).await;
        let conns: Vec<TcpStream> = futures_open(addr, 5).await;
        until("connections served", || stats.open() == 5).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the listener stops with idle connections open")
            .unwrap()
            .unwrap();
        drop(conns);
    }

    async fn futures_open(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(TcpStream::connect(addr).await.unwrap());
        }
        v
    }
}
