//! Phases of the subscriptions of one model: where in its FPS interval each camera's
//! slots start, so that the cameras of a model send their frames spread over the
//! interval instead of all at the same instant (issue 16, "spread the load in time").
//!
//! Every (camera, model) subscription leases the lowest free *position* `k` of its model
//! and keeps it while it runs; its phase is the bit-reversal fraction of `k` (the van der
//! Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, ...). Then:
//! - positions never move: adding or removing a camera keeps every other camera's phase
//!   (a removed camera's position goes to the next camera added);
//! - `N` cameras holding positions `0..N` are evenly spread: for `N` a power of two,
//!   camera `i` sits at exactly `i/N` of the interval in some order; otherwise no two
//!   phases are closer than `1/(2N)` and no gap is wider than `2/N`.
//!
//! Exactly `i/N` for every `N` would move every camera each time `N` changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The phase of position `k`: its bits mirrored behind the binary point.
pub fn phase_of(position: u32) -> f64 {
    f64::from(position.reverse_bits()) / 4_294_967_296.0
}

/// Positions held per model, shared by every stream agent of one system.
#[derive(Debug, Default)]
pub struct PhaseRegistry {
    held: Mutex<BTreeMap<String, BTreeSet<u32>>>,
}

/// A subscription's position; given back when dropped.
#[derive(Debug)]
pub struct PhaseLease {
    registry: Arc<PhaseRegistry>,
    model: String,
    position: u32,
}

impl PhaseRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<u32>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leases the lowest free position of `model`.
    pub fn lease(self: &Arc<Self>, model: &str) -> PhaseLease {
        let mut held = self.lock();
        let set = held.entry(model.to_owned()).or_default();
        // The first gap in 0, 1, 2, ...: at most `set.len()` steps.
        let position = (0u32..)
            .zip(set.iter())
            .find(|(want, have)| want != *have)
            .map_or(set.len() as u32, |(want, _)| want);
        set.insert(position);
        PhaseLease {
            registry: self.clone(),
            model: model.to_owned(),
            position,
        }
    }

    /// Positions of `model` held now.
    pub fn held(&self, model: &str) -> Vec<u32> {
        self.lock()
            .get(model)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl PhaseLease {
    /// The position held.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// The phase, a fraction of the interval in `[0, 1)`.
    pub fn phase(&self) -> f64 {
        phase_of(self.position)
    }
}

impl Drop for PhaseLease {
    fn drop(&mut self) {
        let mut held = self.registry.lock();
        if let Some(set) = held.get_mut(&self.model) {
            set.remove(&self.position);
            if set.is_empty() {
                held.remove(&self.model);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sorted_gaps(mut phases: Vec<f64>) -> Vec<f64> {
        phases.sort_by(f64::total_cmp);
        let mut gaps: Vec<f64> = phases.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.push(1.0 + phases[0] - phases[phases.len() - 1]);
        gaps
    }

    #[test]
    fn first_positions_halve_the_interval() {
        let p: Vec<f64> = (0..8).map(phase_of).collect();
        assert_eq!(p, [0.0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]);
    }

    #[test]
    fn a_freed_position_goes_to_the_next_camera_and_models_are_separate() {
        let r = PhaseRegistry::new();
        let a = r.lease("det");
        let b = r.lease("det");
        let c = r.lease("det");
        let other = r.lease("pose");
        assert_eq!((a.position(), b.position(), c.position()), (0, 1, 2));
        assert_eq!(other.position(), 0);
        drop(b);
        assert_eq!(r.held("det"), [0, 2]);
        let d = r.lease("det");
        assert_eq!(d.position(), 1);
        assert_eq!((a.phase(), c.phase()), (0.0, 0.25));
        drop((a, c, d, other));
        assert!(r.held("det").is_empty());
    }

    proptest! {
        /// N cameras leased in a row: exactly i/N for powers of two, otherwise no gap
        /// wider than 2/N and none narrower than 1/(2N).
        #[test]
        fn n_phases_are_evenly_spread(n in 1usize..300) {
            let r = PhaseRegistry::new();
            let leases: Vec<PhaseLease> = (0..n).map(|_| r.lease("m")).collect();
            let gaps = sorted_gaps(leases.iter().map(PhaseLease::phase).collect());
            let n = n as f64;
            for g in &gaps {
                prop_assert!(*g <= 2.0 / n + 1e-12, "gap {} for n {}", g, n);
                prop_assert!(*g >= 1.0 / (2.0 * n) - 1e-12, "gap {} for n {}", g, n);
            }
            if (n as usize).is_power_of_two() {
                prop_assert!(gaps.iter().all(|g| (g - 1.0 / n).abs() < 1e-12));
            }
        }

        /// Adding or removing cameras in any order never moves a camera that stays.
        #[test]
        fn cameras_that_stay_keep_their_phase(
            ops in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..200),
        ) {
            let r = PhaseRegistry::new();
            let mut live: Vec<(PhaseLease, f64)> = Vec::new();
            for (add, which) in ops {
                if add || live.is_empty() {
                    let l = r.lease("m");
                    let p = l.phase();
                    prop_assert!(live.iter().all(|(o, _)| o.position() != l.position()));
                    live.push((l, p));
                } else {
                    live.remove(which.index(live.len()));
                }
                for (l, p) in &live {
                    prop_assert_eq!(l.phase(), *p);
                }
                prop_assert_eq!(r.held("m").len(), live.len());
            }
        }
    }
}
