//! The metrics pipeline as the autoscalers see it: Prometheus scrapes each ready pod
//! every scrape interval and keeps one set of series per pod, marked stale when the pod
//! goes, and the gateway's queue gauges when one is in front. Matte's operator queries it at each reconcile; its quantities are computed here
//! through `matte_policy::observed`, the definitions its PromQL is written from. The
//! anchors read recording rules evaluated every rule interval, so they act on the last
//! evaluation before they look.

use matte_common::metrics::SECONDS_BUCKETS;
use matte_policy::QueueMetrics;
use matte_policy::observed::{self, GatewayScrape, GatewaySeries, PodScrape, Series, Windows};
use matte_policy::promql;

/// One pod's counters since it started, as its `/metrics` shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests queued (every outcome but `queue_full`).
    pub admitted: u64,
    /// Requests refused with 429 because the queue was full.
    pub refused: u64,
    /// Rows of the model's batch computed: the images, since simulated pods run batches
    /// at their own size.
    pub inference_rows: u64,
    /// Sum of `matte_inference_seconds`: the time the GPU was busy.
    pub inference_seconds: f64,
    /// Cumulative `matte_queue_wait_seconds` buckets, one per bound plus +Inf.
    pub queue_wait_buckets: [u64; SECONDS_BUCKETS.len() + 1],
    /// `matte_deferred_requests`: clients refused whose `Retry-After` has not passed.
    pub deferred: u64,
    /// `matte_deferred_due_total`: clients refused whose `Retry-After` has passed.
    pub deferred_due: u64,
}

impl Counters {
    pub fn observe_queue_wait(&mut self, seconds: f64) {
        let first = SECONDS_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(SECONDS_BUCKETS.len());
        for bucket in &mut self.queue_wait_buckets[first..] {
            *bucket += 1;
        }
    }
}

/// A pod's queue gauges at one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub queue_depth: f64,
    pub oldest_queued_age_seconds: f64,
}

/// What the anchors' recording rule produced at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the newest sample behind it was scraped.
    pub sampled_at: f64,
    /// `sum(rate(matte_requests_total[window]))`: every request, admitted or refused;
    /// behind a gateway `sum(rate(matte_gateway_received_total[window]))`, every request
    /// the service received (the pods' count only what the gateway passed on, and none
    /// while the fleet is at zero).
    pub requests_per_second: f64,
}

/// A scrape target: a pod, or the front that holds requests while no pod is ready.
pub type Target = usize;

pub struct Prometheus {
    windows: Windows,
    /// The anchors' `rate()` window.
    request_rate_window: f64,
    targets: Vec<(Target, Series)>,
    gateways: Vec<(Target, GatewaySeries)>,
    last_scrape: Option<f64>,
    latest: Option<Snapshot>,
}

impl Prometheus {
    pub fn new(windows: Windows, request_rate_window: f64) -> Self {
        Self {
            windows,
            request_rate_window,
            targets: Vec::new(),
            gateways: Vec::new(),
            last_scrape: None,
            latest: None,
        }
    }

    /// Stores one scrape of `target` taken `at`.
    pub fn scrape(&mut self, at: f64, target: Target, gauges: Gauges, counters: &Counters) {
        let scrape = PodScrape {
            queue_depth: gauges.queue_depth,
            oldest_queued_age_seconds: gauges.oldest_queued_age_seconds,
            admitted: counters.admitted as f64,
            refused: counters.refused as f64,
            inference_rows: counters.inference_rows as f64,
            inference_seconds: counters.inference_seconds,
            queue_wait_buckets: counters.queue_wait_buckets.map(|count| count as f64),
            deferred: counters.deferred as f64,
            deferred_due: counters.deferred_due as f64,
        };
        let index = match self.targets.iter().position(|(known, _)| *known == target) {
            Some(index) => index,
            None => {
                self.targets.push((target, Series::default()));
                self.targets.len() - 1
            }
        };
        self.targets[index].1.record(at, &scrape);
        self.scraped(at);
    }

    /// Stores one scrape of the gateway `target` taken `at`.
    pub fn scrape_gateway(&mut self, at: f64, target: Target, scrape: &GatewayScrape) {
        let index = match self.gateways.iter().position(|(known, _)| *known == target) {
            Some(index) => index,
            None => {
                self.gateways.push((target, GatewaySeries::default()));
                self.gateways.len() - 1
            }
        };
        self.gateways[index].1.record(at, scrape);
        self.scraped(at);
    }

    fn scraped(&mut self, at: f64) {
        if self.last_scrape != Some(at) {
            self.last_scrape = Some(at);
            self.forget(at);
        }
    }

    /// The target is gone: its series go stale.
    pub fn target_gone(&mut self, target: Target, at: f64) {
        if let Some((_, series)) = self.targets.iter_mut().find(|(known, _)| *known == target) {
            series.mark_stale(at);
        }
    }

    /// Keeps what the longest window still reads.
    fn forget(&mut self, at: f64) {
        let before = at - self.windows.history_seconds().max(self.request_rate_window) - 1.0;
        self.targets.retain(|(_, series)| !series.ended_before(before));
        for (_, series) in &mut self.targets {
            series.forget_before(before);
        }
        self.gateways.retain(|(_, series)| !series.ended_before(before));
        for (_, series) in &mut self.gateways {
            series.forget_before(before);
        }
    }

    /// The queue as Matte's operator reads it at `at`.
    pub fn queue_metrics(&self, at: f64) -> Option<QueueMetrics> {
        let fleet: Vec<&Series> = self.targets.iter().map(|(_, series)| series).collect();
        let gateways: Vec<&GatewaySeries> = self.gateways.iter().map(|(_, series)| series).collect();
        observed::queue_metrics(&fleet, &gateways, at, &self.windows)
    }

    /// Runs the anchors' recording rule at `at`; before any scrape the previous result
    /// (none) stays.
    pub fn evaluate(&mut self, at: f64) {
        let Some(sampled_at) = self.last_scrape.filter(|scraped| *scraped <= at) else {
            return;
        };
        let requests_per_second = if self.gateways.is_empty() {
            self.targets
                .iter()
                .flat_map(|(_, series)| series.requests())
                .filter_map(|points| promql::rate(points, at, self.request_rate_window))
                .sum()
        } else {
            self.gateways
                .iter()
                .filter_map(|(_, series)| promql::rate(series.received(), at, self.request_rate_window))
                .sum()
        };
        self.latest = Some(Snapshot { sampled_at, requests_per_second });
    }

    /// The result of the last evaluation, if any.
    pub fn latest(&self) -> Option<&Snapshot> {
        self.latest.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prometheus() -> Prometheus {
        Prometheus::new(Windows::for_scrape_interval(std::time::Duration::from_secs(5)), 60.0)
    }

    #[test]
    fn queue_waits_fill_cumulative_buckets() {
        let mut counters = Counters::default();
        counters.observe_queue_wait(3.0); // bucket (2.5, 5]
        let first = SECONDS_BUCKETS.iter().position(|bound| 3.0 <= *bound).expect("a bound above 3 s");
        assert_eq!(counters.queue_wait_buckets[first - 1], 0);
        assert!(counters.queue_wait_buckets[first..].iter().all(|count| *count == 1));
    }

    #[test]
    fn the_operator_sees_a_scrape_at_once_the_anchors_at_the_next_evaluation() {
        let mut prometheus = prometheus();
        // The admitted series exists from the first scrape, the refused one appears at the
        // second (as a pod creates a counter with its first request of that outcome).
        let mut counters = Counters { admitted: 1, ..Counters::default() };
        prometheus.scrape(0.0, 1, Gauges::default(), &counters);
        prometheus.evaluate(1.0);
        assert_eq!(prometheus.latest().map(|s| s.requests_per_second), Some(0.0), "no series has two samples");
        counters.admitted = 41;
        counters.refused = 10;
        prometheus.scrape(5.0, 1, Gauges { queue_depth: 16.0, oldest_queued_age_seconds: 4.0 }, &counters);
        let queue = prometheus.queue_metrics(6.0).expect("a live target");
        assert_eq!((queue.queue_depth, queue.oldest_queued_age_seconds, queue.age_seconds), (16.0, 4.0, 1.0));
        assert_eq!(prometheus.latest().map(|s| s.sampled_at), Some(0.0), "not evaluated since");
        prometheus.evaluate(6.0);
        let snapshot = prometheus.latest().expect("evaluated");
        assert_eq!(snapshot.sampled_at, 5.0);
        // 40 admissions in 5 s, extended within the window [-54, 6] back to where the
        // counter was zero (0.125 s) and on to the evaluation (1 s); the refusals' one
        // sample has no rate yet.
        let expected = 40.0 * (5.0 + 0.125 + 1.0) / 5.0 / 60.0;
        assert!((snapshot.requests_per_second - expected).abs() < 1e-9, "{snapshot:?}");
    }

    #[test]
    fn a_gone_pod_leaves_the_gauges_at_once_and_the_store_once_out_of_every_window() {
        let mut prometheus = prometheus();
        let busy = Gauges { queue_depth: 3.0, oldest_queued_age_seconds: 1.0 };
        prometheus.scrape(0.0, 1, busy, &Counters::default());
        prometheus.scrape(0.0, 2, Gauges::default(), &Counters::default());
        prometheus.target_gone(1, 2.0);
        assert_eq!(prometheus.queue_metrics(3.0).map(|queue| queue.queue_depth), Some(0.0));
        prometheus.scrape(1000.0, 2, Gauges::default(), &Counters::default());
        assert_eq!(prometheus.targets.len(), 1);
    }

    #[test]
    fn behind_the_gateway_the_operator_reads_its_queue_and_the_anchors_its_requests() {
        let mut prometheus = prometheus();
        let waiting = GatewayScrape { queue_depth: 40.0, oldest_queued_age_seconds: 12.0, ..GatewayScrape::default() };
        prometheus.scrape_gateway(0.0, 0, &waiting);
        prometheus.scrape_gateway(5.0, 0, &GatewayScrape { received: 60.0, ..waiting });
        // No pod at all: the gateway alone makes the observation.
        let queue = prometheus.queue_metrics(6.0).expect("the gateway's series");
        assert_eq!((queue.gateway_queue_depth, queue.gateway_oldest_queued_age_seconds), (40.0, 12.0));
        assert_eq!((queue.queue_depth, queue.age_seconds), (0.0, 1.0));
        // A pod's requests are those the gateway passed on: the rule reads the gateway's.
        prometheus.scrape(5.0, 1, Gauges::default(), &Counters { admitted: 16, ..Counters::default() });
        prometheus.evaluate(6.0);
        let rate = prometheus.latest().expect("evaluated").requests_per_second;
        // 60 requests in 5 s, within a 60 s window from the counter's zero on.
        assert!((rate - 60.0 * 6.0 / 5.0 / 60.0).abs() < 1e-9, "{rate}");
    }
}
