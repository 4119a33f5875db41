//! The bounded request queue between the connection tasks and the model instances, with
//! dynamic batching.
//!
//! Policy: requests wait in one FIFO shared by every instance. An instance takes a batch
//! when `max_batch` requests are waiting, or when the oldest has waited `delay`, or at
//! once while draining; a fixed-batch model uses `max_batch = 1` and so runs requests one
//! by one. The queue holds at most `capacity` requests: a request arriving at a full queue
//! is handed back at once (the server answers `overloaded`), it never waits for space.
//!
//! [`BatchQueue`] is the pure decision logic, with time passed in so it is tested without
//! sleeping; [`Batcher`] wraps it with a mutex and condition variable for the worker
//! threads.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How requests are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Largest batch (1 for fixed-batch models).
    pub max_batch: usize,
    /// Longest time the oldest request waits for the batch to fill.
    pub delay: Duration,
    /// Queue capacity (requests waiting, not counting those running).
    pub capacity: usize,
}

/// Why [`BatchQueue::push`] handed an item back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// The queue holds `capacity` items.
    #[error("queue full ({capacity} waiting)")]
    Full {
        /// The rejected item.
        item: T,
        /// The queue capacity.
        capacity: usize,
    },
    /// The queue is closed (draining for shutdown).
    #[error("queue closed")]
    Closed {
        /// The rejected item.
        item: T,
    },
}

impl<T> PushError<T> {
    /// The rejected item.
    pub fn into_item(self) -> T {
        match self {
            PushError::Full { item, .. } | PushError::Closed { item } => item,
        }
    }
}

/// What a worker should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A batch of this many items was moved to the output.
    Ready(usize),
    /// Items are waiting for the batch to fill; ask again at this instant (or when an item
    /// arrives).
    WaitUntil(Instant),
    /// Nothing queued; wait for an item.
    Idle,
    /// Closed and empty: the worker exits.
    Finished,
}

/// Bounded FIFO with batching decisions.
#[derive(Debug)]
pub struct BatchQueue<T> {
    items: VecDeque<(Instant, T)>,
    policy: BatchPolicy,
    closed: bool,
}

impl<T> BatchQueue<T> {
    /// An empty open queue. `max_batch` and `capacity` are raised to at least 1.
    pub fn new(mut policy: BatchPolicy) -> Self {
        policy.max_batch = policy.max_batch.max(1);
        policy.capacity = policy.capacity.max(1);
        BatchQueue {
            items: VecDeque::with_capacity(policy.capacity),
            policy,
            closed: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends an item that arrived at `now`, or hands it back when full or closed.
    pub fn push(&mut self, item: T, now: Instant) -> Result<(), PushError<T>> {
        if self.closed {
            return Err(PushError::Closed { item });
        }
        if self.items.len() >= self.policy.capacity {
            return Err(PushError::Full {
                item,
                capacity: self.policy.capacity,
            });
        }
        self.items.push_back((now, item));
        Ok(())
    }

    /// Stops accepting items; queued items are still handed out (without waiting for a
    /// batch to fill).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Decides at `now` whether a batch is due and, if so, moves it (oldest first) to `out`.
    pub fn next_batch(&mut self, now: Instant, out: &mut Vec<T>) -> Decision {
        let Some(&(oldest, _)) = self.items.front() else {
            return if self.closed {
                Decision::Finished
            } else {
                Decision::Idle
            };
        };
        let due = oldest + self.policy.delay;
        if self.items.len() >= self.policy.max_batch || self.closed || now >= due {
            let n = self.items.len().min(self.policy.max_batch);
            out.extend(self.items.drain(..n).map(|(_, item)| item));
            Decision::Ready(n)
        } else {
            Decision::WaitUntil(due)
        }
    }
}

/// [`BatchQueue`] shared between the submitting tasks and the worker threads.
#[derive(Debug)]
pub struct Batcher<T> {
    queue: Mutex<BatchQueue<T>>,
    wake: Condvar,
}

impl<T> Batcher<T> {
    /// A new open batcher.
    pub fn new(policy: BatchPolicy) -> Self {
        Batcher {
            queue: Mutex::new(BatchQueue::new(policy)),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BatchQueue<T>> {
        // A worker that panicked while holding the lock left the queue consistent (every
        // operation is a single VecDeque call), so keep going.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an item, or hands it back at once when the queue is full or closed.
    pub fn submit(&self, item: T) -> Result<(), PushError<T>> {
        let mut q = self.lock();
        q.push(item, Instant::now())?;
        let full = q.len() >= q.policy().max_batch;
        drop(q);
        // A full batch may wake a worker that is waiting for its batch to fill.
        if full {
            self.wake.notify_all();
        } else {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Items waiting now.
    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    /// The policy in force.
    pub fn policy(&self) -> BatchPolicy {
        *self.lock().policy()
    }

    /// Stops accepting items and wakes every worker so they drain the queue and exit.
    pub fn close(&self) {
        self.lock().close();
        self.wake.notify_all();
    }

    /// Blocks until a batch is due and moves it to `out` (which should be empty).
    /// Returns `false` once the batcher is closed and empty.
    pub fn next_batch(&self, out: &mut Vec<T>) -> bool {
        let mut q = self.lock();
        loop {
            match q.next_batch(Instant::now(), out) {
                Decision::Ready(_) => {
                    let more = !q.is_empty();
                    drop(q);
                    if more {
                        self.wake.notify_one(); // another instance may take the rest
                    }
                    return true;
                }
                Decision::Finished => return false,
                Decision::Idle => {
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                Decision::WaitUntil(at) => {
                    let timeout = at.saturating_duration_since(Instant::now());
                    q = self
                        .wake
                        .wait_timeout(q, timeout)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policy(max_batch: usize, delay_ms: u64, capacity: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch,
            delay: Duration::from_millis(delay_ms),
            capacity,
        }
    }

    #[test]
    fn waits_for_delay_then_takes_partial_batch() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(4, 5, 16));
        let mut out = Vec::new();
        assert_eq!(q.next_batch(t0, &mut out), Decision::Idle);
        q.push(1, t0).unwrap();
        q.push(2, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(
            q.next_batch(t0 + Duration::from_millis(2), &mut out),
            Decision::WaitUntil(t0 + Duration::from_millis(5))
        );
        assert!(out.is_empty());
        assert_eq!(
            q.next_batch(t0 + Duration::from_millis(5), &mut out),
            Decision::Ready(2)
        );
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn full_batch_goes_at_once_in_order() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(3, 1000, 16));
        for i in 0..7 {
            q.push(i, t0).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(3));
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(3));
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        // The last one waits for company until its delay is up.
        assert!(matches!(q.next_batch(t0, &mut out), Decision::WaitUntil(_)));
    }

    #[test]
    fn fixed_batch_runs_one_by_one() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(1, 1000, 4));
        q.push('a', t0).unwrap();
        q.push('b', t0).unwrap();
        let mut out = Vec::new();
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(1));
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(1));
        assert_eq!(out, ['a', 'b']);
    }

    #[test]
    fn overflow_is_rejected_immediately() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(2, 0, 2));
        q.push(1, t0).unwrap();
        q.push(2, t0).unwrap();
        assert_eq!(
            q.push(3, t0),
            Err(PushError::Full {
                item: 3,
                capacity: 2
            })
        );
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn close_drains_without_waiting_then_finishes() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(4, 1000, 8));
        q.push(1, t0).unwrap();
        q.close();
        assert_eq!(q.push(2, t0).unwrap_err().into_item(), 2);
        let mut out = Vec::new();
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(1));
        assert_eq!(q.next_batch(t0, &mut out), Decision::Finished);
    }

    #[test]
    fn zero_delay_takes_what_is_there() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, 8));
        q.push(1, t0).unwrap();
        q.push(2, t0).unwrap();
        let mut out = Vec::new();
        assert_eq!(q.next_batch(t0, &mut out), Decision::Ready(2));
    }

    /// Threads: every submitted item comes out exactly once across several workers, and
    /// closing lets them all exit.
    #[test]
    fn workers_share_the_queue_and_exit_on_close() {
        let b = Arc::new(Batcher::new(policy(4, 0, 10_000)));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut batch = Vec::new();
                    while b.next_batch(&mut batch) {
                        assert!(!batch.is_empty() && batch.len() <= 4);
                        got.append(&mut batch);
                    }
                    got
                })
            })
            .collect();
        for i in 0..1000 {
            b.submit(i).unwrap();
        }
        b.close();
        assert!(b.submit(0).is_err());
        let mut all: Vec<i32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
