//! The statistics Matte computes, each with the convention it follows stated once: the
//! policy, the simulator's metrics and its reports, and the gateway's admission all use
//! these.

/// Prometheus's `quantile` and `quantile_over_time`: linear interpolation between the
/// two values around rank `q·(n−1)`; `None` for no values. `q` outside 0..=1 is clamped.
pub fn quantile(q: f64, mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    Some(values[lower] * (1.0 - weight) + values[upper] * weight)
}

/// The median: the middle value, or the mean of the middle two; `None` for none.
pub fn median(values: Vec<f64>) -> Option<f64> {
    quantile(0.5, values)
}

/// Nearest-rank percentile of sorted values (the value at rank ⌈q·n⌉), for reporting
/// latencies an image actually had; infinite values (never answered) give `None`.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied().filter(|value| value.is_finite())
}

/// Prometheus's `histogram_quantile` over cumulative bucket counts, one per bound in
/// `bounds` and a last one for +Inf: linear interpolation inside the bucket holding the
/// rank, from 0 in the first; a rank in the +Inf bucket gives the highest finite bound.
/// `None` (Prometheus: NaN) when nothing was observed.
pub fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total <= 0.0 || !total.is_finite() || cumulative.len() != bounds.len() + 1 {
        return None;
    }
    let rank = q * total;
    let index = cumulative.iter().position(|count| *count >= rank)?;
    let Some(&upper) = bounds.get(index) else {
        return bounds.last().copied();
    };
    let (lower, below) = if index == 0 { (0.0, 0.0) } else { (bounds[index - 1], cumulative[index - 1]) };
    let inside = cumulative[index] - below;
    if inside <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        assert_eq!(quantile(0.5, vec![]), None);
        assert_eq!(quantile(0.5, vec![3.0]), Some(3.0));
        assert_eq!(median(vec![60.0, 40.0]), Some(50.0), "the mean of the middle two");
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(quantile(0.25, vec![0.0, 10.0, 20.0, 30.0, 40.0]), Some(10.0));
        assert!((quantile(0.9, vec![0.0, 10.0]).unwrap() - 9.0).abs() < 1e-12);
    }

    #[test]
    fn nearest_rank_reports_a_value_that_occurred_and_unanswered_as_none() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(nearest_rank(&sorted, 0.5), Some(2.0));
        assert_eq!(nearest_rank(&sorted, 1.0), Some(4.0));
        assert_eq!(nearest_rank(&[1.0, f64::INFINITY], 1.0), None);
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn histogram_quantile_interpolates_inside_the_bucket() {
        let bounds = [1.0, 2.5, 5.0];
        // Ten observations in (2.5, 5].
        let p95 = histogram_quantile(0.95, &bounds, &[0.0, 0.0, 10.0, 10.0]).unwrap();
        assert!((p95 - (2.5 + 2.5 * 0.95)).abs() < 1e-9, "{p95}");
        // Half in the first bucket, which starts at 0.
        assert_eq!(histogram_quantile(0.25, &bounds, &[2.0, 2.0, 4.0, 4.0]), Some(0.5));
        // The rank in +Inf: the highest finite bound.
        assert_eq!(histogram_quantile(0.95, &bounds, &[0.0, 0.0, 0.0, 3.0]), Some(5.0));
        assert_eq!(histogram_quantile(0.95, &bounds, &[0.0; 4]), None);
    }
}
