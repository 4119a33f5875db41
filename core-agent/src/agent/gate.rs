//! The FPS gate of one subscription, driven by the frames' own capture timestamps (the
//! injected clock: tests feed timestamps, nothing sleeps).
//!
//! Time is cut into slots of `1 / fps` on a grid aligned to the capture clock itself
//! (slot `k` starts at `k * interval + phase`), not to the first frame seen: cameras
//! started at different times share the grid, and each subscription's `phase` (see
//! [`super::phase`]) places its slots so that the cameras of one model interleave instead
//! of all sending at the same instant. The first frame of a slot that can be sent is sent; later frames of a served slot are not due. A slot
//! in which due frames came but none could be sent (the model was busy) is a *missed
//! slot*. Slots in which no frame came at all (the camera was away) are not missed: there
//! was nothing to skip. Frames are never queued: a busy model means the frame is dropped
//! and the next due frame is the freshest one.

/// What the gate says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its slot was already served: not due.
    NotDue,
    /// Send it (the slot is now served).
    Send,
    /// Due, but the caller could not send it; the slot counts as missed unless a later
    /// frame of the same slot is sent.
    Missed,
}

/// Per-subscription FPS gate.
#[derive(Debug, Clone)]
pub struct FpsGate {
    interval_ns: u64,
    phase_ns: u64,
    served_slot: Option<u64>,
    missed_slot: Option<u64>,
    missed: u64,
    sent: u64,
}

impl FpsGate {
    /// A gate for `fps` frames per second (`fps` > 0; validated by the config), slots
    /// starting on multiples of the interval.
    pub fn new(fps: f64) -> Self {
        Self::with_phase(fps, 0.0)
    }

    /// A gate whose slots start `phase` (a fraction of the interval, taken modulo 1)
    /// after the multiples of the interval.
    pub fn with_phase(fps: f64, phase: f64) -> Self {
        let interval_ns = (1e9 / fps.max(1e-3)).round().max(1.0) as u64;
        let phase = if phase.is_finite() {
            phase.rem_euclid(1.0)
        } else {
            0.0
        };
        let phase_ns = ((interval_ns as f64 * phase) as u64).min(interval_ns - 1);
        Self {
            interval_ns,
            phase_ns,
            served_slot: None,
            missed_slot: None,
            missed: 0,
            sent: 0,
        }
    }

    /// Slot length in nanoseconds.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Slots missed so far.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Frames let through so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Offset of the slot grid: the phase, moved one interval back so that every
    /// timestamp lies after it.
    fn origin(&self) -> u64 {
        self.phase_ns.wrapping_sub(self.interval_ns)
    }

    /// Capture time at which slot `slot` starts.
    pub fn slot_start_ns(&self, slot: u64) -> u64 {
        slot.saturating_mul(self.interval_ns)
            .wrapping_add(self.origin())
    }

    /// The capture time from which a frame is worth offering again: the start of the
    /// slot after the last one served or missed, or `0` (any frame) before the first.
    ///
    /// A missed slot may still be served late ([`Verdict::Missed`]): the caller retries
    /// it with the freshest frame when it has room again, instead of waking for every
    /// frame of that slot.
    pub fn next_due_ns(&self) -> u64 {
        self.served_slot
            .max(self.missed_slot)
            .map_or(0, |s| self.slot_start_ns(s + 1))
    }

    fn grid_slot(&self, ts_ns: u64) -> u64 {
        // `origin` is `phase - interval` (wrapping): ts - origin = ts + interval - phase.
        (ts_ns.wrapping_sub(self.origin())) / self.interval_ns
    }

    fn slot_of(&mut self, ts_ns: u64) -> u64 {
        let slot = self.grid_slot(ts_ns);
        if self.served_slot.is_some_and(|s| slot < s) || self.missed_slot.is_some_and(|m| slot < m)
        {
            // Time went backwards (should not happen with one capture clock): start over.
            self.served_slot = None;
            self.missed_slot = None;
        }
        slot
    }

    /// Whether a frame captured at `ts_ns` is due (without deciding anything).
    pub fn is_due(&self, ts_ns: u64) -> bool {
        self.served_slot != Some(self.grid_slot(ts_ns))
    }

    /// Decides on a frame captured at `ts_ns`; `can_send` says whether the caller has
    /// room for one more request now.
    pub fn offer(&mut self, ts_ns: u64, can_send: bool) -> Verdict {
        let slot = self.slot_of(ts_ns);
        if self.served_slot == Some(slot) {
            return Verdict::NotDue;
        }
        if can_send {
            if self.missed_slot == Some(slot) {
                // Served late within the same slot after all.
                self.missed -= 1;
                self.missed_slot = None;
            }
            self.served_slot = Some(slot);
            self.sent += 1;
            Verdict::Send
        } else {
            if self.missed_slot != Some(slot) {
                self.missed_slot = Some(slot);
                self.missed += 1;
            }
            Verdict::Missed
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn twenty_five_fps_camera_gated_to_five() {
        let mut g = FpsGate::new(5.0);
        let sent: Vec<u64> = (0..50u64)
            .map(|i| 1_000 * MS + i * 40 * MS)
            .filter(|&ts| g.offer(ts, true) == Verdict::Send)
            .collect();
        // Two seconds of frames: ten slots, the first frame of each.
        assert_eq!(sent.len(), 10);
        assert!(sent.windows(2).all(|w| w[1] - w[0] == 200 * MS));
        assert_eq!(g.missed(), 0);
    }

    #[test]
    fn busy_slots_are_counted_once_and_frames_are_never_queued() {
        let mut g = FpsGate::new(5.0);
        assert_eq!(g.offer(0, true), Verdict::Send);
        // The model stays busy through slots 1 and 2.
        for ts in (200..600).step_by(40) {
            assert_eq!(g.offer(ts * MS, false), Verdict::Missed);
        }
        assert_eq!(g.missed(), 2);
        // Free again in slot 3: the freshest frame goes, nothing older.
        assert_eq!(g.offer(600 * MS, true), Verdict::Send);
        assert_eq!(g.offer(640 * MS, true), Verdict::NotDue);
        assert_eq!(g.missed(), 2);
    }

    #[test]
    fn a_slot_served_late_is_not_missed() {
        let mut g = FpsGate::new(5.0);
        assert_eq!(g.offer(0, true), Verdict::Send);
        assert_eq!(g.offer(200 * MS, false), Verdict::Missed);
        assert_eq!(g.missed(), 1);
        assert_eq!(g.offer(240 * MS, true), Verdict::Send);
        assert_eq!(g.missed(), 0);
    }

    #[test]
    fn a_camera_gap_is_not_missed() {
        let mut g = FpsGate::new(5.0);
        assert_eq!(g.offer(0, true), Verdict::Send);
        assert_eq!(g.offer(10_000 * MS, true), Verdict::Send);
        assert_eq!(g.missed(), 0);
        assert!(!g.is_due(10_100 * MS));
        assert!(g.is_due(10_200 * MS));
    }

    #[test]
    fn time_going_backwards_restarts_the_grid() {
        let mut g = FpsGate::new(1.0);
        assert_eq!(g.offer(5_000 * MS, true), Verdict::Send);
        assert_eq!(g.offer(1_000 * MS, true), Verdict::Send);
        assert_eq!(g.offer(1_500 * MS, true), Verdict::NotDue);
    }

    #[test]
    fn slots_follow_the_clock_grid_plus_the_phase() {
        // Half an interval of phase: 5 fps slots start at 100, 300, 500 ms ...
        let mut g = FpsGate::with_phase(5.0, 0.5);
        assert_eq!(g.offer(1_050 * MS, true), Verdict::Send);
        assert_eq!(g.next_due_ns(), 1_100 * MS);
        assert_eq!(g.offer(1_090 * MS, true), Verdict::NotDue);
        assert!(g.is_due(1_100 * MS));
        assert_eq!(g.offer(1_100 * MS, true), Verdict::Send);
        assert_eq!(g.next_due_ns(), 1_300 * MS);
        // Two cameras started at different times share the grid.
        let mut late = FpsGate::with_phase(5.0, 0.5);
        assert_eq!(late.offer(7_310 * MS, true), Verdict::Send);
        assert_eq!(late.next_due_ns(), 7_500 * MS);
        // A phase of 1 is a phase of 0.
        assert_eq!(
            FpsGate::with_phase(5.0, 1.0).slot_start_ns(10),
            FpsGate::new(5.0).slot_start_ns(10)
        );
    }

    #[test]
    fn next_due_skips_the_rest_of_a_missed_slot() {
        let mut g = FpsGate::new(5.0);
        assert_eq!(g.next_due_ns(), 0);
        assert_eq!(g.offer(0, true), Verdict::Send);
        assert_eq!(g.next_due_ns(), 200 * MS);
        assert_eq!(g.offer(200 * MS, false), Verdict::Missed);
        // The caller retries the missed slot when it has room; frames need not wake it.
        assert_eq!(g.next_due_ns(), 400 * MS);
        assert!(g.is_due(240 * MS));
        assert_eq!(g.offer(240 * MS, true), Verdict::Send);
        assert_eq!(g.missed(), 0);
        assert_eq!(g.next_due_ns(), 400 * MS);
        assert_eq!(g.offer(450 * MS, false), Verdict::Missed);
        assert_eq!(g.next_due_ns(), 600 * MS);
        assert_eq!(g.offer(600 * MS, true), Verdict::Send);
        assert_eq!(g.missed(), 1);
        assert_eq!(g.next_due_ns(), 800 * MS);
    }

    proptest! {
        /// A frame is due exactly from `next_due_ns` on (once a slot was served).
        #[test]
        fn next_due_is_where_is_due_turns_true(
            fps in 0.5f64..60.0,
            phase in 0.0f64..1.0,
            start in 0u64..10_000_000_000_000,
            offsets in prop::collection::vec(0u64..3_000_000_000, 1..50),
        ) {
            let mut g = FpsGate::with_phase(fps, phase);
            let mut ts = start;
            for off in offsets {
                ts += off;
                g.offer(ts, true);
                let due = g.next_due_ns();
                prop_assert!(due > ts);
                prop_assert!(due - ts <= g.interval_ns());
                prop_assert!(!g.is_due(due - 1));
                prop_assert!(g.is_due(due));
            }
        }

        /// Whatever the frame timing and busy pattern: at most one frame per slot, sends
        /// never exceed the slots elapsed, and with a free model every slot that had a
        /// frame is served.
        #[test]
        fn at_most_one_send_per_slot(
            fps in 0.5f64..60.0,
            gaps in prop::collection::vec(1u64..300, 1..400),
            busy in prop::collection::vec(any::<bool>(), 400),
        ) {
            let mut g = FpsGate::new(fps);
            let interval = g.interval_ns();
            let mut ts = 0u64;
            let mut slots_sent = std::collections::BTreeSet::new();
            let mut slots_seen = std::collections::BTreeSet::new();
            for (i, gap) in gaps.iter().enumerate() {
                ts += gap * MS;
                let slot = ts / interval;
                slots_seen.insert(slot);
                if g.offer(ts, !busy[i]) == Verdict::Send {
                    prop_assert!(slots_sent.insert(slot), "two sends in slot {}", slot);
                }
            }
            prop_assert_eq!(g.sent() as usize, slots_sent.len());
            prop_assert!(g.missed() as usize + slots_sent.len() <= slots_seen.len());
        }

        #[test]
        fn free_model_serves_every_slot_with_a_frame(
            fps in 0.5f64..30.0,
            gaps in prop::collection::vec(1u64..200, 1..300),
        ) {
            let mut g = FpsGate::new(fps);
            let interval = g.interval_ns();
            let mut ts = 0u64;
            let mut slots = std::collections::BTreeSet::new();
            for gap in gaps {
                ts += gap * MS;
                // The grid is aligned to the clock, not to the first frame.
                slots.insert(ts / interval);
                g.offer(ts, true);
            }
            prop_assert_eq!(g.sent() as usize, slots.len());
            prop_assert_eq!(g.missed(), 0);
        }
    }
}
