//! Line crossing with hysteresis.
//!
//! Each track has a *decided side* of the line: its reference point must be farther
//! than `hysteresis` from the line to be on a side; inside the band the previous side
//! holds. A crossing is a change of decided side whose movement (from the last point
//! decided on the old side to the first point decided on the new one) passes within
//! the segment's extent; a track going round an end changes side without counting.
//! So jitter on the line counts nothing, a track stopping on the line counts once it
//! leaves on the other side, and each track counts at most once per direction per
//! crossing.

use std::collections::HashMap;

use super::geometry::{crossing_param, signed_distance, Point};

/// Crossing direction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the left of `from -> to` to its right (on screen).
    In,
    /// From the right to the left.
    Out,
}

impl Direction {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Side {
    right: bool,
    at: Point,
}

/// The crossing state of one line for every track.
#[derive(Debug, Clone)]
pub struct LineCounter {
    a: Point,
    b: Point,
    hysteresis: f32,
    sides: HashMap<u64, Side>,
}

impl LineCounter {
    /// A line from `a` to `b`.
    pub fn new(a: Point, b: Point, hysteresis: f32) -> Self {
        Self {
            a,
            b,
            hysteresis,
            sides: HashMap::new(),
        }
    }

    /// Feeds the reference point of `track`; returns the crossing it completes.
    pub fn observe(&mut self, track: u64, p: Point) -> Option<Direction> {
        let d = signed_distance(self.a, self.b, p);
        let right = if d > self.hysteresis {
            true
        } else if d < -self.hysteresis {
            false
        } else {
            return None;
        };
        let prev = self.sides.insert(track, Side { right, at: p })?;
        if prev.right == right {
            return None;
        }
        // Crossing within the segment (with the hysteresis as slack at the ends)?
        let slack = self.hysteresis / self.a.dist(self.b).max(f32::EPSILON);
        let t = crossing_param(self.a, self.b, prev.at, p)?;
        if t < -slack || t > 1.0 + slack {
            return None;
        }
        Some(if right { Direction::In } else { Direction::Out })
    }

    /// Forgets an ended track.
    pub fn forget(&mut self, track: u64) {
        self.sides.remove(&track);
    }

    /// Tracks with a state.
    pub fn tracked(&self) -> usize {
        self.sides.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> LineCounter {
        // Horizontal, left to right at y = 0.5: `in` is moving down.
        LineCounter::new(Point::new(0.2, 0.5), Point::new(0.8, 0.5), 0.02)
    }

    fn run(l: &mut LineCounter, track: u64, ys: &[f32]) -> Vec<Direction> {
        ys.iter()
            .filter_map(|&y| l.observe(track, Point::new(0.5, y)))
            .collect()
    }

    #[test]
    fn crossings_in_both_directions() {
        let mut l = line();
        assert_eq!(run(&mut l, 1, &[0.3, 0.4, 0.6, 0.7]), vec![Direction::In]);
        assert_eq!(run(&mut l, 2, &[0.7, 0.6, 0.4, 0.3]), vec![Direction::Out]);
        // Back and forth: one of each per crossing.
        assert_eq!(
            run(&mut l, 3, &[0.3, 0.7, 0.3, 0.7]),
            vec![Direction::In, Direction::Out, Direction::In]
        );
    }

    #[test]
    fn jitter_on_the_line_counts_nothing() {
        let mut l = line();
        let ys = [0.3, 0.49, 0.51, 0.495, 0.515, 0.505, 0.485, 0.51, 0.3];
        assert!(run(&mut l, 1, &ys).is_empty());
    }

    #[test]
    fn a_track_stopping_on_the_line_counts_once_it_leaves() {
        let mut l = line();
        assert!(run(&mut l, 1, &[0.3, 0.4, 0.5, 0.5, 0.5, 0.5]).is_empty());
        assert_eq!(run(&mut l, 1, &[0.5, 0.6]), vec![Direction::In]);
        let mut l = line();
        // Stops on the line and goes back: nothing.
        assert!(run(&mut l, 1, &[0.3, 0.5, 0.5, 0.3]).is_empty());
    }

    #[test]
    fn going_round_the_end_does_not_count() {
        let mut l = line();
        assert_eq!(l.observe(1, Point::new(0.9, 0.3)), None);
        assert_eq!(l.observe(1, Point::new(0.95, 0.7)), None);
        assert_eq!(l.observe(1, Point::new(0.95, 0.3)), None);
        assert_eq!(l.observe(1, Point::new(0.5, 0.3)), None);
        // ... but through the segment it does.
        assert_eq!(l.observe(1, Point::new(0.5, 0.7)), Some(Direction::In));
    }

    #[test]
    fn tracks_are_independent_and_forgotten() {
        let mut l = line();
        l.observe(1, Point::new(0.5, 0.3));
        assert_eq!(l.observe(2, Point::new(0.5, 0.7)), None);
        assert_eq!(l.observe(1, Point::new(0.5, 0.7)), Some(Direction::In));
        l.forget(1);
        l.forget(2);
        assert_eq!(l.tracked(), 0);
    }
}
