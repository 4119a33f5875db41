//! Wake-ups from the ring: a small thread blocks in the ring's futex wait
//! ([`RingReader::wait_for_publish`]) and forwards the newest write sequence to the
//! agent's task through a watch channel. The channel keeps only the latest value, so a
//! slow agent sees the freshest frame, never a backlog.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use proto_schema::ring::{RingReader, WaitOutcome};
use tokio::sync::watch;

/// The latest news from a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wake {
    /// The ring's write sequence after the last publish seen.
    pub write_seq: u64,
    /// The writer closed the ring (or it was replaced, or its file was truncated).
    pub closed: bool,
}

/// The waiting thread of one ring; stops when dropped.
#[derive(Debug)]
pub struct RingWaiter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long one futex wait lasts before the stop flag is checked again.
const WAIT_SLICE: Duration = Duration::from_millis(200);

impl RingWaiter {
    /// Opens its own reader of `dir/name` and starts waiting. Reports `closed` at once if
    /// the ring's generation is no longer `generation`.
    pub fn start(
        dir: &Path,
        name: &str,
        generation: u64,
    ) -> std::io::Result<(Self, watch::Receiver<Wake>)> {
        let (tx, rx) = watch::channel(Wake::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, name, flag) = (dir.to_path_buf(), name.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ring-wait-{name}"))
            .spawn(move || {
                let reader = match RingReader::open(&dir, &name) {
                    Ok(r) if r.generation() == generation => r,
                    _ => {
                        let _ = tx.send(Wake {
                            write_seq: 0,
                            closed: true,
                        });
                        return;
                    }
                };
                let mut last = reader.header().write_seq;
                while !flag.load(Ordering::Relaxed) {
                    // A truncated ring (ReadError::Truncated) ends this reader like a
                    // closed one: the agent drops its mapping and reopens the ring.
                    let outcome = reader
                        .try_wait_for_publish(last, WAIT_SLICE)
                        .unwrap_or_else(|e| {
                            tracing::warn!(ring = %name, "{e}");
                            WaitOutcome::Closed
                        });
                    match outcome {
                        WaitOutcome::Published(seq) => {
                            last = seq;
                            if tx
                                .send(Wake {
                                    write_seq: seq,
                                    closed: false,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        WaitOutcome::TimedOut => {
                            if tx.is_closed() {
                                return;
                            }
                        }
                        WaitOutcome::Closed => {
                            let _ = tx.send(Wake {
                                write_seq: last,
                                closed: true,
                            });
                            return;
                        }
                    }
                }
            })?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            rx,
        ))
    }
}

impl Drop for RingWaiter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not joined: the thread notices the flag within one wait slice, and joining
        // here would block the async task that drops it.
        drop(self.thread.take());
    }
}
