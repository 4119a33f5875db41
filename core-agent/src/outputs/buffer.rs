//! The delivery buffer between the analytics writer thread and one broker's worker.
//!
//! Items stay in the buffer until the broker confirmed them (MQTT QoS 1: `PUBACK`;
//! QoS 0: written to the socket; Redis: the `XADD` reply), so a connection lost with
//! items in flight sends them again, in order, after the reconnect (at-least-once:
//! a subscriber may see an item twice across a reconnect, never out of order after
//! de-duplicating by event id).
//!
//! Overflow policy: at most `capacity` items (sent-but-unconfirmed included); a push
//! into a full buffer drops the **oldest** item, counted in [`DeliveryBuffer::dropped`].
//! The writer thread never waits on a broker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug)]
struct Slot<T> {
    seq: u64,
    done: bool,
    item: T,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<Slot<T>>,
    next_seq: u64,
    closed: bool,
}

/// A bounded, in-order buffer of items awaiting delivery (see the module docs).
#[derive(Debug)]
pub struct DeliveryBuffer<T> {
    inner: Mutex<Inner<T>>,
    cond: Condvar,
    notify: tokio::sync::Notify,
    capacity: usize,
    dropped: AtomicU64,
    delivered: AtomicU64,
}

impl<T: Clone> DeliveryBuffer<T> {
    /// A buffer of at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                next_seq: 0,
                closed: false,
            }),
            cond: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item, dropping the oldest if full; `false` (item discarded) once closed.
    pub fn push(&self, item: T) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        if st.items.len() >= self.capacity {
            st.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.items.push_back(Slot {
            seq,
            done: false,
            item,
        });
        drop(st);
        self.cond.notify_one();
        self.notify.notify_one();
        true
    }

    /// Up to `max` items not yet confirmed with a sequence number `>= from`, oldest
    /// first, with their sequence numbers. `from = 0` after a reconnect resends
    /// everything still buffered.
    pub fn peek_from(&self, from: u64, max: usize) -> Vec<(u64, T)> {
        let st = self.lock();
        st.items
            .iter()
            .filter(|s| s.seq >= from && !s.done)
            .take(max)
            .map(|s| (s.seq, s.item.clone()))
            .collect()
    }

    /// Marks item `seq` delivered; confirmed items at the front leave the buffer.
    /// An item already dropped by an overflow is ignored.
    pub fn confirm(&self, seq: u64) {
        let mut st = self.lock();
        if let Some(s) = st.items.iter_mut().find(|s| s.seq == seq) {
            if !s.done {
                s.done = true;
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        while st.items.front().is_some_and(|s| s.done) {
            st.items.pop_front();
        }
    }

    /// Gives up on item `seq` (the broker can never take it, e.g. too large): it
    /// leaves the buffer and counts as dropped.
    pub fn reject(&self, seq: u64) {
        let mut st = self.lock();
        if let Some(s) = st.items.iter_mut().find(|s| s.seq == seq && !s.done) {
            s.done = true;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        while st.items.front().is_some_and(|s| s.done) {
            st.items.pop_front();
        }
    }

    /// Items in the buffer (sent-but-unconfirmed included).
    pub fn len(&self) -> usize {
        self.lock().items.iter().filter(|s| !s.done).count()
    }

    /// Whether nothing awaits delivery.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further items and wakes the worker; what is buffered may still go out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Blocks until an item with sequence `>= from` is pending, the buffer is closed,
    /// or `wait` passed (for a worker thread).
    pub fn wait_for(&self, from: u64, wait: Duration) {
        let st = self.lock();
        let ready = |st: &Inner<T>| st.closed || st.items.iter().any(|s| s.seq >= from && !s.done);
        if !ready(&st) {
            let _ = self
                .cond
                .wait_timeout_while(st, wait, |st| !ready(st))
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Resolves after the next push or close (for an async worker; re-check after).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Items dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Items the broker confirmed.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_buffer_drops_the_oldest_and_counts_it() {
        let b = DeliveryBuffer::new(3);
        for i in 0..5 {
            assert!(b.push(i));
        }
        assert_eq!(b.dropped(), 2);
        let got: Vec<i32> = b.peek_from(0, 10).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn unconfirmed_items_are_resent_in_order_after_a_reconnect() {
        let b = DeliveryBuffer::new(10);
        for i in 0..6 {
            b.push(i);
        }
        // Sent 0..4; the broker confirmed 0, 1 and (out of order, QoS 0) 3.
        let sent = b.peek_from(0, 4);
        assert_eq!(sent.len(), 4);
        b.confirm(sent[0].0);
        b.confirm(sent[1].0);
        b.confirm(sent[3].0);
        assert_eq!(b.delivered(), 3);
        // Connection lost: start again from the front.
        let again: Vec<i32> = b.peek_from(0, 10).into_iter().map(|(_, v)| v).collect();
        assert_eq!(again, vec![2, 4, 5]);
        // Next-after cursor.
        let after: Vec<i32> = b
            .peek_from(sent[3].0 + 1, 10)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(after, vec![4, 5]);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn confirming_a_dropped_item_is_harmless_and_sent_items_count_toward_the_bound() {
        let b = DeliveryBuffer::new(2);
        b.push("a");
        let a = b.peek_from(0, 1)[0].0;
        b.push("b");
        b.push("c"); // drops "a" although it is in flight
        b.confirm(a);
        assert_eq!(b.dropped(), 1);
        assert_eq!(b.delivered(), 0);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn closed_buffer_refuses_items_but_keeps_what_it_has() {
        let b = DeliveryBuffer::new(2);
        b.push(1);
        b.close();
        assert!(!b.push(2));
        assert!(b.is_closed());
        assert_eq!(b.len(), 1);
        // Does not block once closed.
        b.wait_for(100, Duration::from_secs(60));
    }
}
