//! Summary statistics of latency samples (seconds).

use serde::Serialize;

/// The shape of a set of samples: mean, extremes and nearest-rank percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Distribution {
    /// Summarises `samples` in any order; non-finite values are ignored.
    /// `None` when no finite sample remains.
    pub fn from_samples(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let pick = |p| percentile_of_sorted(&sorted, p);
        Some(Self {
            count,
            min: *sorted.first()?,
            mean: sorted.iter().sum::<f64>() / count as f64,
            p50: pick(50.0)?,
            p90: pick(90.0)?,
            p95: pick(95.0)?,
            p99: pick(99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Nearest-rank percentile of ascending `sorted` samples: the smallest sample such that at
/// least `p` percent of the samples are less than or equal to it. `p` is clamped to
/// 0..=100. `None` for no samples.
pub fn percentile_of_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_hundred() {
        // Shuffled so that sorting is exercised.
        let samples: Vec<f64> = (0..100).map(|i| ((i * 37) % 100 + 1) as f64).collect();
        let d = Distribution::from_samples(&samples).expect("samples given");
        assert_eq!(d.count, 100);
        assert_eq!(d.min, 1.0);
        assert_eq!(d.p50, 50.0);
        assert_eq!(d.p90, 90.0);
        assert_eq!(d.p95, 95.0);
        assert_eq!(d.p99, 99.0);
        assert_eq!(d.max, 100.0);
        assert!((d.mean - 50.5).abs() < 1e-12);
    }

    #[test]
    fn nearest_rank_on_a_few_samples() {
        let sorted = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(percentile_of_sorted(&sorted, 0.0), Some(0.1));
        assert_eq!(percentile_of_sorted(&sorted, 25.0), Some(0.1));
        assert_eq!(percentile_of_sorted(&sorted, 26.0), Some(0.2));
        assert_eq!(percentile_of_sorted(&sorted, 50.0), Some(0.2));
        assert_eq!(percentile_of_sorted(&sorted, 75.1), Some(0.4));
        assert_eq!(percentile_of_sorted(&sorted, 100.0), Some(0.4));
        assert_eq!(percentile_of_sorted(&sorted, 250.0), Some(0.4));
    }

    #[test]
    fn a_slow_tail_shows_in_p99_not_p50() {
        let mut samples = vec![0.1; 99];
        samples.push(5.0);
        let d = Distribution::from_samples(&samples).expect("samples given");
        assert_eq!(d.p50, 0.1);
        assert_eq!(d.p99, 0.1);
        assert_eq!(d.max, 5.0);
        assert!((d.mean - (0.1 * 99.0 + 5.0) / 100.0).abs() < 1e-12);
    }

    #[test]
    fn empty_input_has_no_distribution() {
        assert_eq!(Distribution::from_samples(&[]), None);
        assert_eq!(percentile_of_sorted(&[], 50.0), None);
        assert_eq!(Distribution::from_samples(&[f64::NAN, f64::INFINITY]), None);
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let d = Distribution::from_samples(&[0.25]).expect("one sample");
        assert_eq!(d.count, 1);
        for value in [d.min, d.mean, d.p50, d.p90, d.p95, d.p99, d.max] {
            assert_eq!(value, 0.25);
        }
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let d = Distribution::from_samples(&[2.0, f64::NAN, 1.0, f64::INFINITY]).expect("finite samples");
        assert_eq!(d.count, 2);
        assert_eq!(d.max, 2.0);
        assert_eq!(d.mean, 1.5);
    }
}
