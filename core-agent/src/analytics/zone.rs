//! Zones: a polygon with hysteresis at its edge, per-track presence and dwell,
//! loitering, occupancy.

use std::collections::HashMap;

use super::geometry::{distance_to_boundary, point_in_polygon, Point};

/// What a zone observation produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneChange {
    /// The track entered.
    Enter,
    /// The track left after `dwell_ns`.
    Exit {
        /// Time inside.
        dwell_ns: u64,
    },
    /// The track has been inside for `dwell_ns`, past the loitering threshold (once
    /// per visit).
    Loiter {
        /// Time inside so far.
        dwell_ns: u64,
    },
}

#[derive(Debug, Clone)]
struct Presence {
    inside: bool,
    since_ns: u64,
    loitered: bool,
    class: String,
}

/// The state of one zone for every track.
#[derive(Debug, Clone)]
pub struct ZoneCounter {
    polygon: Vec<Point>,
    hysteresis: f32,
    loiter_ns: Option<u64>,
    tracks: HashMap<u64, Presence>,
}

impl ZoneCounter {
    /// A zone; `loiter_ns` is the loitering threshold, if any.
    pub fn new(polygon: Vec<Point>, hysteresis: f32, loiter_ns: Option<u64>) -> Self {
        Self {
            polygon,
            hysteresis,
            loiter_ns,
            tracks: HashMap::new(),
        }
    }

    /// Feeds the reference point of `track` (class `class`) at `now_ns`.
    pub fn observe(&mut self, track: u64, class: &str, p: Point, now_ns: u64) -> Vec<ZoneChange> {
        let mut out = Vec::new();
        let edge = distance_to_boundary(&self.polygon, p);
        let decided = (edge > self.hysteresis).then(|| point_in_polygon(&self.polygon, p));
        let st = self.tracks.entry(track).or_insert_with(|| Presence {
            inside: false,
            since_ns: now_ns,
            loitered: false,
            class: class.to_owned(),
        });
        match decided {
            Some(true) if !st.inside => {
                *st = Presence {
                    inside: true,
                    since_ns: now_ns,
                    loitered: false,
                    class: class.to_owned(),
                };
                out.push(ZoneChange::Enter);
            }
            Some(false) if st.inside => {
                st.inside = false;
                out.push(ZoneChange::Exit {
                    dwell_ns: now_ns.saturating_sub(st.since_ns),
                });
            }
            _ => {}
        }
        if st.inside && !st.loitered {
            let dwell_ns = now_ns.saturating_sub(st.since_ns);
            if self.loiter_ns.is_some_and(|l| dwell_ns >= l) {
                st.loitered = true;
                out.push(ZoneChange::Loiter { dwell_ns });
            }
        }
        out
    }

    /// Forgets an ended track; an exit if it was inside (dwell up to `last_seen_ns`).
    pub fn forget(&mut self, track: u64, last_seen_ns: u64) -> Option<ZoneChange> {
        let st = self.tracks.remove(&track)?;
        st.inside.then(|| ZoneChange::Exit {
            dwell_ns: last_seen_ns.saturating_sub(st.since_ns),
        })
    }

    /// Tracks inside now.
    pub fn occupancy(&self) -> usize {
        self.tracks.values().filter(|p| p.inside).count()
    }

    /// Tracks inside now, per class.
    pub fn occupancy_by_class(&self) -> std::collections::BTreeMap<&str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for p in self.tracks.values().filter(|p| p.inside) {
            *m.entry(p.class.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// Current dwell of `track` if it is inside.
    pub fn dwell_ns(&self, track: u64, now_ns: u64) -> Option<u64> {
        let p = self.tracks.get(&track)?;
        p.inside.then(|| now_ns.saturating_sub(p.since_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn zone(loiter: Option<u64>) -> ZoneCounter {
        let sq = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]];
        ZoneCounter::new(sq.iter().map(|&p| p.into()).collect(), 0.02, loiter)
    }

    #[test]
    fn enter_dwell_exit() {
        let mut z = zone(None);
        assert!(z.observe(1, "person", Point::new(0.1, 0.5), 0).is_empty());
        assert_eq!(
            z.observe(1, "person", Point::new(0.3, 0.5), S),
            vec![ZoneChange::Enter]
        );
        assert_eq!(z.occupancy(), 1);
        assert!(z
            .observe(1, "person", Point::new(0.5, 0.5), 3 * S)
            .is_empty());
        assert_eq!(z.dwell_ns(1, 3 * S), Some(2 * S));
        assert_eq!(
            z.observe(1, "person", Point::new(0.9, 0.5), 5 * S),
            vec![ZoneChange::Exit { dwell_ns: 4 * S }]
        );
        assert_eq!(z.occupancy(), 0);
    }

    #[test]
    fn edge_jitter_changes_nothing() {
        let mut z = zone(None);
        z.observe(1, "person", Point::new(0.5, 0.5), 0);
        for (i, x) in [0.79, 0.81, 0.795, 0.805, 0.79].iter().enumerate() {
            assert!(z
                .observe(1, "person", Point::new(*x, 0.5), i as u64 * S)
                .is_empty());
        }
        assert_eq!(z.occupancy(), 1);
    }

    #[test]
    fn loitering_fires_once_per_visit() {
        let mut z = zone(Some(10 * S));
        let p = Point::new(0.5, 0.5);
        let mut loiters = 0;
        for t in 0..30u64 {
            for c in z.observe(1, "person", p, t * S) {
                if let ZoneChange::Loiter { dwell_ns } = c {
                    assert_eq!(dwell_ns, 10 * S);
                    loiters += 1;
                }
            }
        }
        assert_eq!(loiters, 1);
        assert_eq!(
            z.forget(1, 29 * S),
            Some(ZoneChange::Exit { dwell_ns: 29 * S })
        );
        assert_eq!(z.forget(1, 29 * S), None);
    }

    #[test]
    fn occupancy_by_class() {
        let mut z = zone(None);
        z.observe(1, "person", Point::new(0.5, 0.5), 0);
        z.observe(2, "person", Point::new(0.4, 0.5), 0);
        z.observe(3, "car", Point::new(0.6, 0.5), 0);
        z.observe(4, "car", Point::new(0.95, 0.5), 0);
        let m = z.occupancy_by_class();
        assert_eq!((m["person"], m["car"], z.occupancy()), (2, 1, 3));
    }
}
