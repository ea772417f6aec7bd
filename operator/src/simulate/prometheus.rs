//! The metrics pipeline as the autoscalers see it: Prometheus scrapes the pods every
//! scrape interval, recording rules turn the samples into rates and quantiles every
//! rule interval, and an autoscaler querying at time t gets the last evaluation before
//! t. So every policy acts on delayed, windowed numbers, never on the truth.

use std::collections::VecDeque;

use crate::autoscaler::policy::median;

/// Bucket bounds of `matte_queue_wait_seconds` (the last bucket, +Inf, is implicit).
pub const QUEUE_WAIT_BUCKETS: [f64; 15] = matte_common::metrics::SECONDS_BUCKETS;

/// The fleet's counters, summed over pods since the start. Prometheus sums per-pod
/// series; keeping one sum that survives pods coming and going is the same thing
/// without counter resets.
/// The window of the refusal rate.
const REJECTION_WINDOW_SECONDS: f64 = 15.0;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests that reached a pod, admitted or refused, or were held in front while
    /// no pod was ready (the activator or interceptor counts those).
    pub requests: u64,
    /// Requests refused with 429 because the chosen pod's queue was full.
    pub rejected: u64,
    pub images_processed: u64,
    /// Sum of `matte_inference_seconds`: the time the GPUs were busy.
    pub inference_seconds: f64,
    /// Cumulative `matte_queue_wait_seconds` buckets, one per bound plus +Inf.
    pub queue_wait_buckets: [u64; QUEUE_WAIT_BUCKETS.len() + 1],
}

impl Counters {
    pub fn observe_queue_wait(&mut self, seconds: f64) {
        let first = QUEUE_WAIT_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(QUEUE_WAIT_BUCKETS.len());
        for bucket in &mut self.queue_wait_buckets[first..] {
            *bucket += 1;
        }
    }
}

/// The gauges of one scrape, summed (depth) or maximised (age) over pods.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub queue_depth: f64,
    pub oldest_queued_age_seconds: f64,
}

#[derive(Debug, Clone)]
struct Sample {
    at: f64,
    gauges: Gauges,
    counters: Counters,
}

/// What the recording rules produced at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the newest sample behind it was scraped.
    pub sampled_at: f64,
    pub gauges: Gauges,
    /// `histogram_quantile(0.95, rate(queue_wait_bucket[window]))`; `None` when no request
    /// started inference in the window.
    pub queue_wait_p95_seconds: Option<f64>,
    /// `rate(images_processed[long]) / rate(inference_seconds_sum[long])`; `None` when idle.
    pub images_per_pod_second: Option<f64>,
    /// `rate(requests_total[window])`: every request, admitted or refused.
    pub requests_per_second: f64,
    /// The median admission rate between scrapes over the long window, leaving out
    /// intervals with refusals (then admissions follow capacity, not demand); bursts,
    /// shorter than half the window, do not move it.
    /// `quantile_over_time(0.5, (rate(admitted[5s]) unless rate(rejected[5s]) > 0)[5m:])`
    pub sustained_admitted_per_second: f64,
    /// `rate(requests_total{outcome="rejected"}[15s])`: recent refusals. Short, to see a
    /// burst at once; not a single interval, because refused clients come back only
    /// every few seconds.
    pub rejected_per_second: f64,
    /// `increase(requests_total{outcome="rejected"})` over the refusal window: since the
    /// newest sample at least that old, or the one before the last.
    pub rejected_recently: f64,
}

pub struct Prometheus {
    rate_window: f64,
    long_rate_window: f64,
    refusal_window: f64,
    samples: VecDeque<Sample>,
    latest: Option<Snapshot>,
}

impl Prometheus {
    /// `refusal_window`: how far back `rejected_recently` looks (at least one scrape).
    pub fn new(rate_window: f64, long_rate_window: f64, refusal_window: f64) -> Self {
        Self { rate_window, long_rate_window, refusal_window, samples: VecDeque::new(), latest: None }
    }

    pub fn scrape(&mut self, at: f64, gauges: Gauges, counters: &Counters) {
        self.samples.push_back(Sample { at, gauges, counters: counters.clone() });
        let keep_after = at - self.rate_window.max(self.long_rate_window) - 1.0;
        while self.samples.front().is_some_and(|sample| sample.at < keep_after) {
            self.samples.pop_front();
        }
    }

    /// Runs the recording rules at `at`; with fewer than two samples there are no rates
    /// yet and the previous result stays.
    pub fn evaluate(&mut self, at: f64) {
        let inside: Vec<&Sample> = self.samples.iter().filter(|sample| sample.at <= at).collect();
        let [.., previous, last] = inside.as_slice() else {
            return;
        };
        let refusals_since = inside
            .iter()
            .find(|sample| sample.at >= last.at - self.refusal_window)
            .filter(|sample| sample.at < last.at)
            .unwrap_or(previous);
        let recent = inside.iter().find(|sample| sample.at >= at - REJECTION_WINDOW_SECONDS).unwrap_or(last);
        let in_window = |window: f64| inside.iter().copied().filter(move |sample| sample.at >= at - window);
        let Some(short) = in_window(self.rate_window).next() else {
            return;
        };
        let Some(long) = in_window(self.long_rate_window).next() else {
            return;
        };
        let (now, before) = (&last.counters, &short.counters);
        let mut buckets = [0u64; QUEUE_WAIT_BUCKETS.len() + 1];
        for (bucket, (new, old)) in
            buckets.iter_mut().zip(now.queue_wait_buckets.iter().zip(&before.queue_wait_buckets))
        {
            *bucket = new - old;
        }
        let busy = now.inference_seconds - long.counters.inference_seconds;
        let admitted_rates: Vec<f64> = in_window(self.long_rate_window)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[1].counters.rejected == pair[0].counters.rejected)
            .map(|pair| (admitted(&pair[1].counters) - admitted(&pair[0].counters)) / (pair[1].at - pair[0].at))
            .collect();
        self.latest = Some(Snapshot {
            sampled_at: last.at,
            gauges: last.gauges,
            queue_wait_p95_seconds: histogram_quantile(0.95, &buckets),
            images_per_pod_second: (busy > 0.0)
                .then(|| (now.images_processed - long.counters.images_processed) as f64 / busy),
            requests_per_second: (now.requests - before.requests) as f64 / (last.at - short.at),
            // `quantile_over_time(0.5, …)` interpolates: the mean of the middle two.
            sustained_admitted_per_second: median(admitted_rates).unwrap_or(0.0),
            rejected_recently: (now.rejected - refusals_since.counters.rejected) as f64,
            rejected_per_second: if last.at > recent.at {
                (now.rejected - recent.counters.rejected) as f64 / (last.at - recent.at)
            } else {
                0.0
            },
        });
    }

    /// The result of the last evaluation, if any.
    pub fn latest(&self) -> Option<&Snapshot> {
        self.latest.as_ref()
    }
}

fn admitted(counters: &Counters) -> f64 {
    (counters.requests - counters.rejected) as f64
}

/// Prometheus's `histogram_quantile`: linear interpolation inside the bucket that holds
/// the rank; a rank in the +Inf bucket gives the highest finite bound.
fn histogram_quantile(quantile: f64, cumulative: &[u64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = quantile * total as f64;
    let index = cumulative.iter().position(|count| *count as f64 >= rank)?;
    let Some(&upper) = QUEUE_WAIT_BUCKETS.get(index) else {
        return QUEUE_WAIT_BUCKETS.last().copied();
    };
    let lower = if index == 0 { 0.0 } else { QUEUE_WAIT_BUCKETS[index - 1] };
    let below = if index == 0 { 0 } else { cumulative[index - 1] };
    let inside = (cumulative[index] - below) as f64;
    Some(lower + (upper - lower) * (rank - below as f64) / inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        let mut counters = Counters::default();
        for _ in 0..10 {
            counters.observe_queue_wait(3.0); // bucket (2.5, 5]
        }
        let p95 = histogram_quantile(0.95, &counters.queue_wait_buckets).expect("observations");
        assert!((p95 - (2.5 + 2.5 * 0.95)).abs() < 1e-9, "{p95}");
        assert_eq!(histogram_quantile(0.95, &Counters::default().queue_wait_buckets), None);
    }

    #[test]
    fn autoscalers_see_rates_only_after_two_scrapes_and_only_as_of_the_last_one() {
        let mut prometheus = Prometheus::new(60.0, 300.0, 5.0);
        let mut counters = Counters::default();
        prometheus.scrape(0.0, Gauges::default(), &counters);
        prometheus.evaluate(1.0);
        assert!(prometheus.latest().is_none(), "one sample has no rate");
        counters.requests = 50;
        counters.rejected = 10;
        prometheus.scrape(5.0, Gauges { queue_depth: 40.0, oldest_queued_age_seconds: 4.0 }, &counters);
        prometheus.evaluate(6.0);
        let snapshot = prometheus.latest().expect("two samples");
        assert_eq!(snapshot.sampled_at, 5.0);
        assert!((snapshot.requests_per_second - 10.0).abs() < 1e-9);
        assert_eq!(snapshot.sustained_admitted_per_second, 0.0, "an interval with refusals is not demand");
        assert!((snapshot.rejected_per_second - 2.0).abs() < 1e-9);
        assert_eq!(snapshot.rejected_recently, 10.0);
        assert_eq!(snapshot.gauges.queue_depth, 40.0);
        assert_eq!(snapshot.images_per_pod_second, None, "nothing processed yet");

        // A scrape after the evaluation is invisible until the next evaluation.
        counters.requests = 100;
        prometheus.scrape(10.0, Gauges::default(), &counters);
        assert_eq!(prometheus.latest().map(|snapshot| snapshot.sampled_at), Some(5.0));
        prometheus.evaluate(11.0);
        let snapshot = prometheus.latest().expect("three samples");
        assert_eq!(snapshot.sampled_at, 10.0);
        assert!((snapshot.sustained_admitted_per_second - 10.0).abs() < 1e-9, "the refusal-free interval");
    }

    #[test]
    fn recent_refusals_span_the_refusal_window_not_just_one_scrape() {
        // Scrapes every second, ten refusals in each: over a 5 s window that is 50, the
        // clients refused since the oldest of them could come back.
        let mut prometheus = Prometheus::new(60.0, 300.0, 5.0);
        let mut counters = Counters::default();
        for second in 0..=8 {
            counters.requests += 10;
            counters.rejected += 10;
            prometheus.scrape(f64::from(second), Gauges::default(), &counters);
        }
        prometheus.evaluate(8.5);
        assert_eq!(prometheus.latest().map(|snapshot| snapshot.rejected_recently), Some(50.0));

        // A window shorter than a scrape interval still spans one.
        let mut coarse = Prometheus::new(60.0, 300.0, 1.0);
        coarse.scrape(0.0, Gauges::default(), &Counters::default());
        coarse.scrape(5.0, Gauges::default(), &counters);
        coarse.evaluate(6.0);
        assert_eq!(coarse.latest().map(|snapshot| snapshot.rejected_recently), Some(90.0));
    }
}
