//! The bounded hand-off queue between async producers (stream agents, the analytics
//! stage) and a writer thread (result sinks, event/CSV sinks).
//!
//! Overflow policy: a push into a full queue drops the **oldest** entry and counts it
//! ([`DropOldestQueue::dropped`]); a producer never blocks, and what is written stays the
//! freshest. The writer takes everything queued at once ([`DropOldestQueue::pop_all`]).
//! Broker delivery, which must hold entries until a broker confirms them, has its own
//! buffer (`outputs::buffer::DeliveryBuffer`) with the same overflow policy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Bounded multi-producer, single-consumer queue that drops the oldest entry when full.
#[derive(Debug)]
pub struct DropOldestQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    pushed: AtomicU64,
}

impl<T> DropOldestQueue<T> {
    /// A queue of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an entry, dropping the oldest if full; `false` (entry discarded) once closed.
    pub fn push(&self, item: T) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        if st.items.len() >= self.capacity {
            st.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        st.items.push_back(item);
        self.pushed.fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Takes everything queued, waiting up to `wait` for the first entry. `None` once the
    /// queue is closed and empty.
    pub fn pop_all(&self, wait: Duration) -> Option<Vec<T>> {
        let mut st = self.lock();
        if st.items.is_empty() && !st.closed {
            st = self
                .ready
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if st.items.is_empty() && st.closed {
            return None;
        }
        Some(st.items.drain(..).collect())
    }

    /// Refuses further entries; what is queued is still handed out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Entries dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries accepted.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Entries waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let q = DropOldestQueue::new(2);
        for i in 0..5 {
            assert!(q.push(i));
        }
        assert_eq!((q.dropped(), q.pushed(), q.len()), (3, 5, 2));
        assert_eq!(q.pop_all(Duration::ZERO), Some(vec![3, 4]));
        assert!(q.is_empty());
    }

    #[test]
    fn closing_refuses_new_entries_but_hands_out_the_queued_ones() {
        let q = DropOldestQueue::new(4);
        q.push("a");
        q.close();
        assert!(!q.push("b"));
        assert_eq!(q.pop_all(Duration::ZERO), Some(vec!["a"]));
        assert_eq!(q.pop_all(Duration::ZERO), None);
    }

    #[test]
    fn a_waiting_writer_wakes_on_push() {
        let q = DropOldestQueue::new(1);
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.push(7u8);
            })
        };
        assert_eq!(q.pop_all(Duration::from_secs(10)), Some(vec![7]));
        producer.join().unwrap();
        assert_eq!(q.capacity(), 1);
    }
}
