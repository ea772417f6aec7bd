//! The one definition of every quantity the policy observes: its window and its
//! function. The operator turns these into PromQL; the simulator computes them with
//! [`queue_metrics`] from its scrapes of simulated pods, through Prometheus's own
//! extrapolation ([`crate::promql`]) and interpolation ([`crate::stats`]). Each field of
//! [`QueueMetrics`] is, in PromQL over the pods' series (`matte_common::metrics`):
//!
//! | field | query |
//! | --- | --- |
//! | `age_seconds` | `time() - max(timestamp(queue_depth))` |
//! | `queue_depth` | `sum(queue_depth)` |
//! | `oldest_queued_age_seconds` | `max(oldest_queued_age_seconds)` |
//! | `queue_wait_p95_seconds` | `histogram_quantile(0.95, sum by (le) (rate(queue_wait_seconds_bucket[rate])))` |
//! | `images_per_pod_second` | `sum(rate(images_processed_total[long])) / sum(rate(inference_seconds_sum[long]))` |
//! | `sustained_admitted_per_second` | `quantile_over_time(0.5, (sum(rate(admitted[rate])) unless sum(rate(refused[rate])) > 0)[long:scrape])` |
//! | `rejected_per_second` | `sum(rate(refused[rate]))` |
//! | `rejected_recently` | `sum(rate(refused[recent])) * scrape`: refusals per scrape interval |
//!
//! where `refused` is `requests_total{outcome="queue_full"}` and `admitted` every other
//! outcome.

use std::time::Duration;

use matte_common::metrics::SECONDS_BUCKETS;

use crate::QueueMetrics;
use crate::promql::{self, Point};
use crate::stats;

/// The quantile of queue waits reported with each decision.
pub const QUEUE_WAIT_QUANTILE: f64 = 0.95;
/// The quantile over time of the refusal-free admission rate taken as sustained traffic.
pub const SUSTAINED_QUANTILE: f64 = 0.5;

/// The windows the quantities look through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// How often Prometheus scrapes the pods; also the subquery step.
    pub scrape_interval: Duration,
    /// Rates and the queue-wait quantile: short, to see a burst at once.
    pub rate: Duration,
    /// Per-pod throughput and the sustained admission rate: long, so a burst does not
    /// move them.
    pub long: Duration,
    /// The refusals counted as clients waiting right now, per scrape interval.
    pub recent: Duration,
}

impl Windows {
    /// Windows fitting a scrape interval: rates over four scrapes (at least 10 s), long
    /// figures over five minutes, recent refusals over two scrapes: the shortest window
    /// that always holds the two samples `rate` needs.
    pub fn for_scrape_interval(scrape_interval: Duration) -> Windows {
        Windows {
            scrape_interval,
            rate: (scrape_interval * 4).max(Duration::from_secs(10)),
            long: Duration::from_secs(300),
            recent: scrape_interval * 2,
        }
    }

    /// How much history [`queue_metrics`] reads: the long window, plus a rate window
    /// for the subquery's oldest step.
    pub fn history_seconds(&self) -> f64 {
        (self.long + self.rate).as_secs_f64()
    }
}

/// The queue-wait histogram's cumulative bucket counts, one per bound of
/// [`SECONDS_BUCKETS`] and +Inf.
pub type WaitBuckets = [f64; SECONDS_BUCKETS.len() + 1];

/// What one scrape of a pod reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodScrape {
    pub queue_depth: f64,
    pub oldest_queued_age_seconds: f64,
    /// `requests_total` of every outcome but `queue_full`.
    pub admitted: f64,
    /// `requests_total{outcome="queue_full"}`.
    pub refused: f64,
    pub images_processed: f64,
    /// `inference_seconds_sum`.
    pub inference_seconds: f64,
    pub queue_wait_buckets: WaitBuckets,
}

/// One target's series as Prometheus stores them. The `requests_total` series by
/// outcome appear at the first request with that outcome, as the pods create them.
#[derive(Debug, Clone, Default)]
pub struct Series {
    queue_depth: Vec<Point>,
    oldest_queued_age: Vec<Point>,
    admitted: Vec<Point>,
    refused: Vec<Point>,
    images_processed: Vec<Point>,
    inference_seconds: Vec<Point>,
    queue_wait_buckets: Vec<Vec<Point>>,
    /// When the target vanished: Prometheus marks its series stale then.
    stale_from: Option<f64>,
}

impl Series {
    /// Stores one scrape taken `at`.
    pub fn record(&mut self, at: f64, scrape: &PodScrape) {
        self.queue_depth.push((at, scrape.queue_depth));
        self.oldest_queued_age.push((at, scrape.oldest_queued_age_seconds));
        for (points, value) in [(&mut self.admitted, scrape.admitted), (&mut self.refused, scrape.refused)] {
            if value > 0.0 || !points.is_empty() {
                points.push((at, value));
            }
        }
        self.images_processed.push((at, scrape.images_processed));
        self.inference_seconds.push((at, scrape.inference_seconds));
        self.queue_wait_buckets.resize_with(scrape.queue_wait_buckets.len(), Vec::new);
        for (points, &count) in self.queue_wait_buckets.iter_mut().zip(&scrape.queue_wait_buckets) {
            points.push((at, count));
        }
    }

    /// The `requests_total` series of every outcome (those that exist).
    pub fn requests(&self) -> [&[Point]; 2] {
        [&self.admitted, &self.refused]
    }

    /// The target is gone from `at` on.
    pub fn mark_stale(&mut self, at: f64) {
        self.stale_from.get_or_insert(at);
    }

    /// Whether nothing newer than `before` is left: the series can be dropped.
    pub fn ended_before(&self, before: f64) -> bool {
        self.stale_from.is_some() && self.queue_depth.last().is_none_or(|(at, _)| *at < before)
    }

    /// Drops samples older than `before`.
    pub fn forget_before(&mut self, before: f64) {
        let all = [
            &mut self.queue_depth,
            &mut self.oldest_queued_age,
            &mut self.admitted,
            &mut self.refused,
            &mut self.images_processed,
            &mut self.inference_seconds,
        ];
        for points in all.into_iter().chain(self.queue_wait_buckets.iter_mut()) {
            let old = points.partition_point(|(at, _)| *at < before);
            points.drain(..old);
        }
    }
}

/// `sum(f(series))` over the series for which `f` has a value; `None` when none has.
fn sum(fleet: &[&Series], f: impl Fn(&Series) -> Option<f64>) -> Option<f64> {
    fleet.iter().copied().filter_map(f).fold(None, |total, value| Some(total.unwrap_or(0.0) + value))
}

/// The fleet's queue as the operator's queries would find it at `at`; `None` when no
/// target has a current sample (the operator's `sum(queue_depth)` is empty then).
pub fn queue_metrics(fleet: &[&Series], at: f64, windows: &Windows) -> Option<QueueMetrics> {
    let now =
        |series: &Series, points: fn(&Series) -> &Vec<Point>| promql::instant(points(series), series.stale_from, at);
    let queue_depth = sum(fleet, |series| now(series, |s| &s.queue_depth).map(|(_, value)| value))?;
    let newest_sample = fleet.iter().filter_map(|series| now(series, |s| &s.queue_depth)).map(|(time, _)| time);
    let age_seconds = at - newest_sample.fold(f64::NEG_INFINITY, f64::max);
    let oldest_queued_age_seconds = fleet
        .iter()
        .filter_map(|series| now(series, |s| &s.oldest_queued_age))
        .map(|(_, value)| value)
        .fold(0.0, f64::max);

    let (rate, long, recent) = (windows.rate.as_secs_f64(), windows.long.as_secs_f64(), windows.recent.as_secs_f64());
    let sum_rate = |at: f64, range: f64, points: fn(&Series) -> &Vec<Point>| {
        sum(fleet, |series| promql::rate(points(series), at, range))
    };

    let bucket_rates: Option<Vec<f64>> = (0..=SECONDS_BUCKETS.len())
        .map(|bucket| sum(fleet, |series| promql::rate(series.queue_wait_buckets.get(bucket)?, at, rate)))
        .collect();
    let queue_wait_p95_seconds = bucket_rates
        .and_then(|cumulative| stats::histogram_quantile(QUEUE_WAIT_QUANTILE, &SECONDS_BUCKETS, &cumulative));

    let images_per_pod_second =
        match (sum_rate(at, long, |s| &s.images_processed), sum_rate(at, long, |s| &s.inference_seconds)) {
            (Some(images), Some(busy)) => Some(images / busy).filter(|value| value.is_finite()),
            _ => None,
        };

    // While pods refuse work, admissions follow capacity, not demand: those steps are
    // left out of the quantile.
    let step = windows.scrape_interval.as_secs_f64();
    let refusal_free: Vec<f64> = promql::subquery_steps(at, long, step)
        .filter(|&step_at| !sum_rate(step_at, rate, |s| &s.refused).is_some_and(|refused| refused > 0.0))
        .filter_map(|step_at| sum_rate(step_at, rate, |s| &s.admitted))
        .collect();

    Some(QueueMetrics {
        age_seconds,
        queue_depth,
        oldest_queued_age_seconds,
        queue_wait_p95_seconds,
        images_per_pod_second,
        sustained_admitted_per_second: stats::quantile(SUSTAINED_QUANTILE, refusal_free).unwrap_or(0.0),
        rejected_per_second: sum_rate(at, rate, |s| &s.refused).unwrap_or(0.0),
        rejected_recently: sum(fleet, |series| promql::rate(&series.refused, at, recent)).unwrap_or(0.0) * step,
        gateway_queue_depth: 0.0,
        gateway_oldest_queued_age_seconds: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(admitted: f64, refused: f64, queue_depth: f64) -> PodScrape {
        PodScrape { admitted, refused, queue_depth, ..PodScrape::default() }
    }

    #[test]
    fn windows_follow_the_scrape_interval() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        assert_eq!(windows.rate, Duration::from_secs(20));
        assert_eq!(windows.recent, Duration::from_secs(10));
        assert_eq!(Windows::for_scrape_interval(Duration::from_secs(1)).rate, Duration::from_secs(10));
    }

    #[test]
    fn gauges_sum_and_max_over_live_targets_and_counters_rate_per_target() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut a, mut b) = (Series::default(), Series::default());
        for step in 0..=12 {
            let at = 5.0 * f64::from(step);
            // Pod a admits 2/s throughout; pod b 1/s and refuses 3/s from 40 s on.
            a.record(at, &PodScrape { oldest_queued_age_seconds: 1.0, ..scrape(2.0 * at, 0.0, 4.0) });
            let refused = if at >= 40.0 { 3.0 * (at - 35.0) } else { 0.0 };
            b.record(at, &PodScrape { oldest_queued_age_seconds: 3.0, ..scrape(at, refused, 6.0) });
        }
        let fleet = [&a, &b];
        let queue = queue_metrics(&fleet, 61.0, &windows).expect("live targets");
        assert_eq!(queue.age_seconds, 1.0);
        assert_eq!(queue.queue_depth, 10.0);
        assert_eq!(queue.oldest_queued_age_seconds, 3.0);
        // Refusals 15, 30, 45, 60, 75 at 40..60: the window [41, 61] holds 30..75 over
        // 15 s sampled, 4 s and 1 s from its ends: 45 · 20 / 15 in 20 s.
        assert!((queue.rejected_per_second - 3.0).abs() < 1e-9, "{queue:?}");
        // [51, 61] holds 60 and 75, 4 s and 1 s from its ends: 30 in 10 s, 15 a scrape.
        assert!((queue.rejected_recently - 15.0).abs() < 1e-9, "{queue:?}");
        // Steps up to 40 s have no refusal rate; the first of them see the series begin
        // (a counter appears at its first request), the rest the full 3/s.
        assert!((queue.sustained_admitted_per_second - 3.0).abs() < 1e-9, "{queue:?}");
        assert_eq!(queue.queue_wait_p95_seconds, None, "no waits observed");
        assert_eq!(queue.images_per_pod_second, None, "nothing processed");
    }

    #[test]
    fn a_vanished_target_leaves_the_gauges_but_not_the_rates() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let mut gone = Series::default();
        gone.record(0.0, &scrape(5.0, 0.0, 7.0));
        gone.record(5.0, &scrape(15.0, 0.0, 7.0));
        gone.mark_stale(6.0);
        let mut live = Series::default();
        live.record(5.0, &scrape(0.0, 0.0, 1.0));
        let queue = queue_metrics(&[&gone, &live], 7.0, &windows).expect("one live target");
        assert_eq!(queue.queue_depth, 1.0);
        assert!(queue.sustained_admitted_per_second > 0.0, "the gone pod's admissions still count");
        assert!(queue_metrics(&[], 7.0, &windows).is_none());
    }
}
