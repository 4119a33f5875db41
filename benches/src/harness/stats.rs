//! Percentiles and summaries of measured samples.

use serde::Serialize;

/// Nearest-rank percentile of an ascending-sorted slice (`p` in 0..=100).
///
/// Returns `None` for an empty slice. Nearest rank (not interpolation) so that every
/// reported value is one that was actually measured.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Count, mean and the usual percentiles of a sample set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place); `None` when there are none. NaNs are dropped.
    pub fn of(samples: &mut Vec<f64>) -> Option<Summary> {
        samples.retain(|v| !v.is_nan());
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let sum: f64 = samples.iter().sum();
        Some(Summary {
            count: samples.len(),
            mean: sum / samples.len() as f64,
            min: samples[0],
            p50: percentile_sorted(samples, 50.0)?,
            p90: percentile_sorted(samples, 90.0)?,
            p99: percentile_sorted(samples, 99.0)?,
            max: samples[samples.len() - 1],
        })
    }
}

/// Median of a few repeated measurements (the harness quotes medians of repeats); the mean
/// of the two middle values for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_definition() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50.0));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99.0));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100.0));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&v, 0.5), Some(1.0));
        assert_eq!(percentile_sorted(&v, 99.1), Some(100.0));
    }

    #[test]
    fn small_sets_and_empty() {
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7.0], 99.0), Some(7.0));
        // With 3 samples, p50 is the 2nd and p99 the 3rd.
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0], 99.0), Some(3.0));
    }

    #[test]
    fn summary_sorts_and_drops_nan() {
        let mut v = vec![5.0, f64::NAN, 1.0, 3.0, 2.0, 4.0];
        let s = Summary::of(&mut v).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.mean, 3.0);
        assert!(Summary::of(&mut vec![f64::NAN]).is_none());
    }

    #[test]
    fn median_of_repeats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
