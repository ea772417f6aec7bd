//! What Prometheus (2.x, the version Debian ships) does to a series' samples when the
//! operator's queries ask for them, so that a simulation computing them from simulated
//! scrapes gets what Prometheus would answer.

/// How far back an instant selector looks for a sample (Prometheus's default
/// `--query.lookback-delta`).
pub const LOOKBACK_DELTA_SECONDS: f64 = 300.0;

/// One sample of a series: (time in seconds, value).
pub type Point = (f64, f64);

/// The samples of a range selector `[range]` evaluated at `at`: those in
/// `[at − range, at]` (both ends included in Prometheus 2.x). `points` sorted by time.
pub fn in_range(points: &[Point], at: f64, range: f64) -> &[Point] {
    let start = points.partition_point(|(time, _)| *time < at - range);
    let end = points.partition_point(|(time, _)| *time <= at);
    &points[start..end.max(start)]
}

/// `increase(counter[range])` at `at`: the growth between the first and the last sample
/// in the range (counter resets added back), extrapolated towards the range's ends as
/// Prometheus does: all the way to an end closer than 1.1 average sample intervals, else
/// half an interval; never back past the counter's zero. `None` with fewer than two
/// samples (Prometheus drops the series).
pub fn increase(points: &[Point], at: f64, range: f64) -> Option<f64> {
    let samples = in_range(points, at, range);
    let (&(first_at, first), &(last_at, last)) = (samples.first()?, samples.last()?);
    if samples.len() < 2 {
        return None;
    }
    let mut growth = last - first;
    let mut previous = 0.0;
    for &(_, value) in samples {
        if value < previous {
            growth += previous;
        }
        previous = value;
    }
    let sampled = last_at - first_at;
    if sampled <= 0.0 {
        return None;
    }
    let average_interval = sampled / (samples.len() - 1) as f64;
    let mut to_start = first_at - (at - range);
    let to_end = at - last_at;
    if growth > 0.0 && first >= 0.0 {
        // A counter cannot have been below zero: extrapolate at most to where it was.
        to_start = to_start.min(sampled * (first / growth));
    }
    let threshold = 1.1 * average_interval;
    let extend = |gap: f64| if gap < threshold { gap } else { average_interval / 2.0 };
    Some(growth * (sampled + extend(to_start) + extend(to_end)) / sampled)
}

/// `rate(counter[range])` at `at`: [`increase`] per second of the range.
pub fn rate(points: &[Point], at: f64, range: f64) -> Option<f64> {
    increase(points, at, range).map(|growth| growth / range)
}

/// `max_over_time(gauge[range])` at `at`: the largest sample in the range; `None` when
/// the range holds none.
pub fn max_over_time(points: &[Point], at: f64, range: f64) -> Option<f64> {
    in_range(points, at, range).iter().map(|(_, value)| *value).reduce(f64::max)
}

/// The sample an instant selector yields at `at`: the newest at or before it, within the
/// lookback delta; `None` when there is none or the series went stale (its target
/// vanished) after it, at or before `at`.
pub fn instant(points: &[Point], stale_from: Option<f64>, at: f64) -> Option<Point> {
    if stale_from.is_some_and(|stale| stale <= at) {
        return None;
    }
    let end = points.partition_point(|(time, _)| *time <= at);
    let &(time, value) = points[..end].last()?;
    (at - time <= LOOKBACK_DELTA_SECONDS).then_some((time, value))
}

/// The evaluation times of a subquery `[range:step]` at `at`: the multiples of `step`
/// in `[at − range, at]`, oldest first (Prometheus aligns them to the epoch).
pub fn subquery_steps(at: f64, range: f64, step: f64) -> impl Iterator<Item = f64> {
    let first = ((at - range) / step).ceil() as i64;
    let last = (at / step).floor() as i64;
    (first..=last).map(move |index| index as f64 * step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn max_over_time_is_the_largest_sample_in_the_range() {
        let gauge = [(0.0, 3.0), (5.0, 9.0), (10.0, 0.0), (15.0, 1.0)];
        assert_eq!(max_over_time(&gauge, 15.0, 10.0), Some(9.0), "both ends included");
        assert_eq!(max_over_time(&gauge, 15.0, 9.0), Some(1.0));
        assert_eq!(max_over_time(&gauge, 40.0, 10.0), None, "nothing in the range");
    }

    #[test]
    fn increase_extrapolates_to_the_window_ends_within_one_interval() {
        // Samples every 5 s, 10 a scrape; the window [78, 98] holds the scrapes at 82, 87,
        // 92 and 97: 4 s after its start and 1 s before its end.
        let points: Vec<Point> = (0..=20).map(|i| (f64::from(i) * 5.0 + 2.0, 10.0 * f64::from(i) + 100.0)).collect();
        let growth = increase(&points, 98.0, 20.0).unwrap();
        // 30 over 15 s sampled, extended by 4 s and 1 s: 30 · 20 / 15.
        assert!(close(growth, 40.0), "{growth}");
        assert!(close(rate(&points, 98.0, 20.0).unwrap(), 2.0));
    }

    #[test]
    fn a_gap_wider_than_an_interval_extends_by_half_of_one() {
        let points = [(10.0, 50.0), (15.0, 60.0)];
        // In [0, 25] the gaps are 10 s at each end: each extends by 2.5 s.
        assert!(close(increase(&points, 25.0, 25.0).unwrap(), 10.0 * 10.0 / 5.0));
    }

    #[test]
    fn a_young_counter_is_not_extrapolated_below_zero() {
        // 0 → 10 → 20 at 1 s, 6 s, 11 s in [−3, 12]: the start would extend 4 s, but the
        // counter was 0 at the first sample.
        let points = [(1.0, 0.0), (6.0, 10.0), (11.0, 20.0)];
        assert!(close(increase(&points, 12.0, 15.0).unwrap(), 20.0 * 11.0 / 10.0));
    }

    #[test]
    fn resets_count_the_value_before_them_and_one_sample_is_no_rate() {
        let points = [(0.0, 5.0), (5.0, 8.0), (10.0, 2.0)];
        // Growth 2 − 5 + 8 = 5 over 10 s sampled, window [0, 10]: no extrapolation.
        assert!(close(increase(&points, 10.0, 10.0).unwrap(), 5.0));
        assert_eq!(increase(&points[..1], 10.0, 10.0), None);
        assert_eq!(increase(&points, 30.0, 5.0), None, "nothing in the window");
    }

    #[test]
    fn ranges_include_both_ends() {
        let points = [(0.0, 1.0), (5.0, 2.0), (10.0, 3.0)];
        assert_eq!(in_range(&points, 10.0, 10.0).len(), 3);
        assert_eq!(in_range(&points, 9.0, 4.0), &[(5.0, 2.0)]);
    }

    #[test]
    fn instant_selectors_take_the_newest_sample_unless_stale() {
        let points = [(0.0, 1.0), (5.0, 2.0)];
        assert_eq!(instant(&points, None, 7.0), Some((5.0, 2.0)));
        assert_eq!(instant(&points, None, 4.0), Some((0.0, 1.0)));
        assert_eq!(instant(&points, Some(6.0), 7.0), None);
        assert_eq!(instant(&points, None, 400.0), None, "older than the lookback delta");
    }

    #[test]
    fn subquery_steps_are_aligned_to_the_epoch() {
        let steps: Vec<f64> = subquery_steps(23.0, 10.0, 5.0).collect();
        assert_eq!(steps, vec![15.0, 20.0]);
        let steps: Vec<f64> = subquery_steps(20.0, 10.0, 5.0).collect();
        assert_eq!(steps, vec![10.0, 15.0, 20.0]);
    }
}
