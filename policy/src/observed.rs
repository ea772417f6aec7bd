//! The one definition of every quantity the policy observes: its window and its
//! function. The operator turns these into PromQL; the simulator computes them with
//! [`queue_metrics`] from its scrapes of simulated pods, through Prometheus's own
//! extrapolation ([`crate::promql`]) and interpolation ([`crate::stats`]). Each field of
//! [`QueueMetrics`] is, in PromQL over the pods' series (`matte_common::metrics`) and
//! the gateway's (`matte_common::gateway_metrics`, prefixed `gateway_` here):
//!
//! | field | query |
//! | --- | --- |
//! | `age_seconds` | `time() - max(timestamp(queue_depth) or timestamp(gateway_queue_depth))` |
//! | `queue_depth` | `sum(queue_depth)` |
//! | `oldest_queued_age_seconds` | `max(oldest_queued_age_seconds)` |
//! | `queue_wait_p95_seconds` | `histogram_quantile(0.95, sum by (le) (rate(queue_wait_seconds_bucket[rate])))` |
//! | `images_per_pod_second` | `sum(rate(inference_rows_total[long])) / sum(rate(inference_seconds_sum[long]))`: rows, padding included, so that a lone image's padded run does not understate a pod's pace |
//! | `sustained_admitted_per_second` | `quantile_over_time(0.5, (sum(rate(admitted[rate])) unless sum(rate(refused[rate])) > 0 unless sum(max_over_time(gateway_queue_depth[rate])) > 0)[long:scrape])` |
//! | `rejected_recently` | `(sum(rate(gateway_refused[recent])) or sum(rate(pods_refused[recent]))) * scrape`: clients refused per scrape interval, the gateway's where it has a rate, the pods' otherwise |
//! | `gateway_queue_depth` | `sum(gateway_queue_depth)`: requests waiting in the gateway's FIFO |
//! | `gateway_oldest_queued_age_seconds` | `max(gateway_oldest_queued_age_seconds)` |
//! | `deferred_requests` | behind a gateway (its queue depth has a sample): `sum(gateway_deferred_requests)`; without one: `sum(deferred_requests)`. Clients sent away whose `Retry-After` has not passed |
//! | `new_arrivals_per_second` | behind a gateway: `sum(rate(gateway_received[arrivals])) - sum(rate(gateway_deferred_due[confirm]))`, requests reaching the gateway, less the clients due back (over the confirmation time: see [`Windows::dues`]); without one the same of the pods: `sum(rate(requests_total[arrivals])) - (sum(rate(deferred_due[confirm])) or vector(0))`, every request the pods answered, less the clients they refused whose `Retry-After` has passed (none from pods that do not count them) |
//! | `gateway_latest_arrivals_per_second` | `sum(rate(gateway_received[latest]))`: requests reaching the gateway over its latest two scrapes, returns included; none when the window holds fewer than two samples |
//! | `gateway_inflow_per_second` | `sum(rate(gateway_received[inflow])) - sum(rate(gateway_deferred_due[inflow]))`: the gateway's new arrivals over the rate window, the clients due back over the same window; 0 without a gateway |
//!
//! where `refused` is `pods_refused`, the pods' `requests_total{outcome="queue_full"}`,
//! together with `gateway_refused`, the gateway's
//! `gateway_requests_total{outcome=~"queue_full|no_capacity"}` (clients sent away to
//! come back after `Retry-After`), `gateway_received` the gateway's requests
//! counted as they arrive, and `admitted` every other outcome of the pods'. The gateway's gauges are summed (depth, clients away) and maxed (age)
//! over its replicas. There are metrics when either the pods' or the gateway's series have a
//! current sample: a service scaled to zero has no pod series, and its observation
//! comes from the gateway alone (the pods' gauges then read 0; their rates read what is
//! left of ended pods' series in each window, as Prometheus's range vectors do, and
//! nothing once those are out of every window). Without a gateway the gateway's fields
//! read 0, and the clients away and the new arrivals are the pods'. Behind a gateway the
//! pods' own refusals are not counted as clients away, nor as clients refused: the
//! gateway tries another pod or holds the request (in its queue's depth already), and
//! never waits out a pod's `Retry-After`. Counted, they made each rollout of the gateway
//! a burst: its replicas' shares of a pod's places overlap while an old replica drains
//! and a new one takes traffic, and the pods refuse the difference.

use std::time::Duration;

use matte_common::metrics::SECONDS_BUCKETS;

use crate::observation::QueueMetrics;
use crate::promql::{self, Point};
use crate::stats;

/// How often Prometheus scrapes the inference pods unless told otherwise: the operator's
/// `--scrape-interval-seconds`, which its passes and [`Windows`] follow.
pub const DEFAULT_SCRAPE_INTERVAL_SECONDS: u64 = 5;
/// How often Prometheus scrapes the gateway's replicas unless told otherwise (at most the
/// pods' interval). A burst lands in the gateway's queue first, so its samples are the
/// ones a pass needs fresh: at 1 s a pass sees a burst a second after it lands, where at
/// the pods' interval it could be that interval late. The windows follow the pods'
/// interval but for the gateway's arrivals ([`Windows::arrivals`]), which a shorter
/// gateway interval lets read over a shorter window.
pub const DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS: u64 = 1;

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
    /// The refusals counted as clients waiting right now, per scrape interval: the
    /// shortest window that always holds two samples.
    pub recent: Duration,
    /// The gateway's new arrivals: one pods' scrape interval, and at least two of the
    /// gateway's scrapes, the shortest window that always holds the two samples `rate`
    /// needs. Short, so that a burst, which lands within a few seconds, has left it by
    /// the time a flow is confirmed ([`Windows::confirm`]).
    pub arrivals: Duration,
    /// Whether requests still reach the gateway: two of its scrapes, the shortest window
    /// that always holds the two samples `rate` needs. A flow still arriving reads its
    /// rate there, a burst whose last request came before it reads nothing, while the
    /// longer arrivals window still holds the burst's last seconds.
    pub latest: Duration,
    /// How often the autoscaler decides: at each scrape of the freshest target it reads,
    /// the gateway's when one is in front, so that a burst landing in the gateway's
    /// queue is acted on a second after it shows rather than up to a pods' interval
    /// later.
    pub pass: Duration,
}

impl Windows {
    /// Windows fitting one scrape interval for every target (see
    /// [`Windows::for_scrape_intervals`]).
    pub fn for_scrape_interval(scrape_interval: Duration) -> Windows {
        Windows::for_scrape_intervals(scrape_interval, scrape_interval)
    }

    /// Windows fitting the pods' and the gateway's scrape intervals: rates over four of
    /// the pods' scrapes (at least 10 s), long figures over five minutes, recent
    /// refusals over two of the pods' scrapes, the gateway's arrivals over one pods'
    /// interval and at least two of the gateway's scrapes, its latest arrivals over two
    /// of its scrapes, a pass every gateway's scrape (the shorter interval).
    pub fn for_scrape_intervals(pods: Duration, gateway: Duration) -> Windows {
        Windows {
            scrape_interval: pods,
            rate: (pods * 4).max(Duration::from_secs(10)),
            long: Duration::from_secs(300),
            recent: pods * 2,
            arrivals: pods.max(gateway * 2),
            latest: gateway * 2,
            pass: gateway.min(pods),
        }
    }

    /// How long a change must last before the policy acts on it
    /// (`PolicySpec::confirm_seconds`): arrivals outrunning the ready pods before pods
    /// are started for their rate, and nothing waiting anywhere before pods still
    /// starting are given back. The arrivals' window and one pods' scrape more: by then
    /// the samples that showed the change first have left the window, and only a change
    /// that lasted keeps it.
    pub fn confirm(&self) -> Duration {
        self.arrivals + self.scrape_interval
    }

    /// The clients due back, subtracted from the arrivals as their rate over
    /// this window: the confirmation time ([`Windows::confirm`]), longer than the
    /// arrivals' own window. A client comes back a little after its `Retry-After`, by
    /// its own jitter, so the returns of clients sent away together spread over the
    /// seconds after they fell due. Over the arrivals' short window the dues read first
    /// (arrivals read low) and the returns after them (arrivals read high), long enough
    /// for a flow that is not there to be confirmed; over the confirmation time the dues
    /// are spread as the returns are.
    pub fn dues(&self) -> Duration {
        self.confirm()
    }

    /// What keeps arriving while a burst drains, the gateway's new arrivals (the
    /// clients due back subtracted over the same window), is read over the rate window.
    /// A burst lands within a few seconds: once one has been on for this long, its
    /// landing, which would read as a rate, has left the window, and what the window
    /// holds came after it.
    pub fn inflow(&self) -> Duration {
        self.rate
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
    /// `deferred_requests`: clients refused whose `Retry-After` has not passed.
    pub deferred: f64,
    /// `deferred_due_total`: clients refused whose `Retry-After` has passed.
    pub deferred_due: f64,
    /// `inference_rows_total`: each run's images and its padding.
    pub inference_rows: f64,
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
    inference_rows: Vec<Point>,
    inference_seconds: Vec<Point>,
    deferred: Vec<Point>,
    deferred_due: Vec<Point>,
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
        self.inference_rows.push((at, scrape.inference_rows));
        self.inference_seconds.push((at, scrape.inference_seconds));
        self.deferred.push((at, scrape.deferred));
        self.deferred_due.push((at, scrape.deferred_due));
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
        ended_before(self.stale_from, &self.queue_depth, before)
    }

    /// Drops samples older than `before`.
    pub fn forget_before(&mut self, before: f64) {
        let all = [
            &mut self.queue_depth,
            &mut self.oldest_queued_age,
            &mut self.admitted,
            &mut self.refused,
            &mut self.inference_rows,
            &mut self.inference_seconds,
            &mut self.deferred,
            &mut self.deferred_due,
        ];
        drop_before(all.into_iter().chain(self.queue_wait_buckets.iter_mut()), before);
    }
}

/// What one scrape of a gateway replica reads: its queue's gauges, its refusals, its
/// arrivals and the clients it sent away.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GatewayScrape {
    /// `matte_gateway_queue_depth`.
    pub queue_depth: f64,
    /// `matte_gateway_oldest_queued_age_seconds`.
    pub oldest_queued_age_seconds: f64,
    /// `matte_gateway_requests_total{outcome=~"queue_full|no_capacity"}`: requests sent
    /// away to come back after `Retry-After`, with 429 because their expected wait
    /// exceeded their budget or with 503 because it ran out in the queue.
    pub refused: f64,
    /// `matte_gateway_received_total`: every request received, counted as it arrives.
    pub received: f64,
    /// `matte_gateway_deferred_requests`: clients sent away whose `Retry-After` has
    /// not passed yet.
    pub deferred: f64,
    /// `matte_gateway_deferred_due_total`: clients sent away whose `Retry-After` has
    /// passed, so that they may be back.
    pub deferred_due: f64,
}

/// One gateway replica's gauges as Prometheus stores them.
#[derive(Debug, Clone, Default)]
pub struct GatewaySeries {
    queue_depth: Vec<Point>,
    oldest_queued_age: Vec<Point>,
    /// From the first scrape on: the gateway exports its refusals at 0 from the start
    /// (`gateway_metrics::REFUSED_OUTCOMES`).
    refused: Vec<Point>,
    /// Every request received, from the first scrape on like the refusals.
    received: Vec<Point>,
    deferred: Vec<Point>,
    deferred_due: Vec<Point>,
    /// When the target vanished: Prometheus marks its series stale then.
    stale_from: Option<f64>,
}

impl GatewaySeries {
    /// Stores one scrape taken `at`.
    pub fn record(&mut self, at: f64, scrape: &GatewayScrape) {
        self.queue_depth.push((at, scrape.queue_depth));
        self.oldest_queued_age.push((at, scrape.oldest_queued_age_seconds));
        self.refused.push((at, scrape.refused));
        self.received.push((at, scrape.received));
        self.deferred.push((at, scrape.deferred));
        self.deferred_due.push((at, scrape.deferred_due));
    }

    /// `received_total`: every request, counted as it arrives.
    pub fn received(&self) -> &[Point] {
        &self.received
    }

    /// The target is gone from `at` on.
    pub fn mark_stale(&mut self, at: f64) {
        self.stale_from.get_or_insert(at);
    }

    /// Whether nothing newer than `before` is left: the series can be dropped.
    pub fn ended_before(&self, before: f64) -> bool {
        ended_before(self.stale_from, &self.queue_depth, before)
    }

    /// Drops samples older than `before`.
    pub fn forget_before(&mut self, before: f64) {
        let all = [
            &mut self.queue_depth,
            &mut self.oldest_queued_age,
            &mut self.refused,
            &mut self.received,
            &mut self.deferred,
            &mut self.deferred_due,
        ];
        drop_before(all, before);
    }

    /// The depth's sample that an instant query at `at` sees.
    fn depth_at(&self, at: f64) -> Option<Point> {
        promql::instant(&self.queue_depth, self.stale_from, at)
    }

    fn oldest_age_at(&self, at: f64) -> Option<f64> {
        promql::instant(&self.oldest_queued_age, self.stale_from, at).map(|(_, value)| value)
    }
}

/// Whether a target marked stale has no sample of `scraped` (a series it exports at
/// every scrape) newer than `before`.
fn ended_before(stale_from: Option<f64>, scraped: &[Point], before: f64) -> bool {
    stale_from.is_some() && scraped.last().is_none_or(|(at, _)| *at < before)
}

/// Drops the samples older than `before` from each series, whose points are in time order.
fn drop_before<'a>(series: impl IntoIterator<Item = &'a mut Vec<Point>>, before: f64) {
    for points in series {
        let old = points.partition_point(|(at, _)| *at < before);
        points.drain(..old);
    }
}

/// `sum(f(target))` over the targets for which `f` has a value; `None` when none has,
/// as PromQL's `sum` over no series is empty.
fn sum<T>(targets: &[&T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    targets.iter().copied().filter_map(f).fold(None, |total, value| Some(total.unwrap_or(0.0) + value))
}

/// The service's queue as the operator's queries would find it at `at`, from the pods'
/// series and the gateway replicas'; `None` when no target of either has a current
/// sample (the operator's queries are empty then).
pub fn queue_metrics(
    fleet: &[&Series],
    gateways: &[&GatewaySeries],
    at: f64,
    windows: &Windows,
) -> Option<QueueMetrics> {
    let now =
        |series: &Series, points: fn(&Series) -> &Vec<Point>| promql::instant(points(series), series.stale_from, at);
    let pods_depth = sum(fleet, |series| now(series, |s| &s.queue_depth).map(|(_, value)| value));
    let gateway_depth = sum(gateways, |gateway| gateway.depth_at(at).map(|(_, value)| value));
    if pods_depth.is_none() && gateway_depth.is_none() {
        return None;
    }
    let newest_sample = fleet
        .iter()
        .filter_map(|series| now(series, |s| &s.queue_depth))
        .chain(gateways.iter().filter_map(|gateway| gateway.depth_at(at)))
        .map(|(time, _)| time);
    let age_seconds = at - newest_sample.fold(f64::NEG_INFINITY, f64::max);
    let oldest_queued_age_seconds = fleet
        .iter()
        .filter_map(|series| now(series, |s| &s.oldest_queued_age))
        .map(|(_, value)| value)
        .fold(0.0, f64::max);
    let gateway_oldest_queued_age_seconds =
        gateways.iter().filter_map(|gateway| gateway.oldest_age_at(at)).fold(0.0, f64::max);

    let (rate, long, recent) = (windows.rate.as_secs_f64(), windows.long.as_secs_f64(), windows.recent.as_secs_f64());
    let arrivals = windows.arrivals.as_secs_f64();
    let sum_rate = |at: f64, range: f64, points: fn(&Series) -> &Vec<Point>| {
        sum(fleet, |series| promql::rate(points(series), at, range))
    };
    // The gateway's refusals, as `sum` gives them: none where no replica has a rate.
    let gateway_refused_rate = |at: f64, range: f64| {
        let by_gateways = gateways.iter().filter_map(|gateway| promql::rate(&gateway.refused, at, range));
        by_gateways.fold(None, |total: Option<f64>, value| Some(total.unwrap_or(0.0) + value))
    };
    // Refusals by the pods and by the gateway alike.
    let refused_rate =
        |at: f64, range: f64| match (sum_rate(at, range, |s| &s.refused), gateway_refused_rate(at, range)) {
            (Some(pods), Some(gateways)) => Some(pods + gateways),
            (pods, gateways) => pods.or(gateways),
        };

    let gateway_rate = |points: fn(&GatewaySeries) -> &Vec<Point>, range: f64| -> f64 {
        gateways.iter().filter_map(|gateway| promql::rate(points(gateway), at, range)).sum()
    };

    let bucket_rates: Option<Vec<f64>> = (0..=SECONDS_BUCKETS.len())
        .map(|bucket| sum(fleet, |series| promql::rate(series.queue_wait_buckets.get(bucket)?, at, rate)))
        .collect();
    let queue_wait_p95_seconds = bucket_rates
        .and_then(|cumulative| stats::histogram_quantile(QUEUE_WAIT_QUANTILE, &SECONDS_BUCKETS, &cumulative));

    let images_per_pod_second =
        match (sum_rate(at, long, |s| &s.inference_rows), sum_rate(at, long, |s| &s.inference_seconds)) {
            (Some(rows), Some(busy)) => Some(rows / busy).filter(|value| value.is_finite()),
            _ => None,
        };

    // While pods refuse work, or the gateway holds requests back for want of a free
    // slot, admissions follow capacity, not demand: those steps are left out of the
    // quantile.
    let step = windows.scrape_interval.as_secs_f64();
    // The depths are never negative: their sum is above 0 when any replica's is.
    let gateway_held = |step_at: f64| {
        gateways
            .iter()
            .filter_map(|gateway| promql::max_over_time(&gateway.queue_depth, step_at, rate))
            .any(|held| held > 0.0)
    };
    let refusal_free: Vec<f64> = promql::subquery_steps(at, long, step)
        .filter(|&step_at| !refused_rate(step_at, rate).is_some_and(|refused| refused > 0.0))
        .filter(|&step_at| !gateway_held(step_at))
        .filter_map(|step_at| sum_rate(step_at, rate, |s| &s.admitted))
        .collect();

    // Behind a gateway (its depth has a sample) the clients away and coming back are the
    // gateway's; behind a plain Service every try reaches a pod, and they are the pods'.
    let dues = windows.dues().as_secs_f64();
    let new_at_the_gateway = |arrivals: f64, dues: f64| {
        gateway_rate(|gateway| &gateway.received, arrivals) - gateway_rate(|gateway| &gateway.deferred_due, dues)
    };
    let inflow = windows.inflow().as_secs_f64();
    let (deferred_requests, new_arrivals_per_second, gateway_inflow_per_second) = if gateway_depth.is_some() {
        let away = gateways.iter().filter_map(|gateway| promql::instant(&gateway.deferred, gateway.stale_from, at));
        (away.map(|(_, value)| value).sum(), new_at_the_gateway(arrivals, dues), new_at_the_gateway(inflow, inflow))
    } else {
        let answered = sum_rate(at, arrivals, |s| &s.admitted).unwrap_or(0.0)
            + sum_rate(at, arrivals, |s| &s.refused).unwrap_or(0.0);
        (
            sum(fleet, |series| now(series, |s| &s.deferred).map(|(_, value)| value)).unwrap_or(0.0),
            answered - sum_rate(at, dues, |s| &s.deferred_due).unwrap_or(0.0),
            0.0,
        )
    };

    Some(QueueMetrics {
        age_seconds,
        queue_depth: pods_depth.unwrap_or(0.0),
        oldest_queued_age_seconds,
        queue_wait_p95_seconds,
        images_per_pod_second,
        sustained_admitted_per_second: stats::quantile(SUSTAINED_QUANTILE, refusal_free).unwrap_or(0.0),
        rejected_recently: gateway_refused_rate(at, recent)
            .or_else(|| sum_rate(at, recent, |s| &s.refused))
            .unwrap_or(0.0)
            * step,
        gateway_queue_depth: gateway_depth.unwrap_or(0.0),
        gateway_oldest_queued_age_seconds,
        deferred_requests,
        new_arrivals_per_second,
        gateway_inflow_per_second,
        gateway_latest_arrivals_per_second: sum(gateways, |gateway| {
            promql::rate(&gateway.received, at, windows.latest.as_secs_f64())
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(admitted: f64, refused: f64, queue_depth: f64) -> PodScrape {
        PodScrape { admitted, refused, queue_depth, ..PodScrape::default() }
    }

    #[test]
    fn windows_follow_the_scrape_intervals() {
        let seconds = Duration::from_secs;
        let windows = Windows::for_scrape_intervals(seconds(5), seconds(1));
        assert_eq!((windows.rate, windows.recent, windows.arrivals), (seconds(20), seconds(10), seconds(5)));
        assert_eq!(windows.confirm(), seconds(10), "arrivals over 5 s, and one pods' scrape more");
        assert_eq!(windows.dues(), seconds(10), "the clients due back, over the confirmation time");
        assert_eq!(windows.latest, seconds(2), "two of the gateway's scrapes");
        assert_eq!(windows.inflow(), seconds(20), "the inflow over the rate window");
        assert_eq!(windows.pass, seconds(1), "a pass at every scrape of the gateway");
        assert_eq!(Windows::for_scrape_interval(seconds(5)).pass, seconds(5), "and of the pods without one");
        let one_interval = Windows::for_scrape_interval(seconds(5));
        assert_eq!(
            (one_interval.arrivals, one_interval.confirm()),
            (seconds(10), seconds(15)),
            "two scrapes, and one more"
        );
        assert_eq!(Windows::for_scrape_interval(seconds(1)).rate, seconds(10));
        let defaults = Windows::for_scrape_intervals(
            seconds(DEFAULT_SCRAPE_INTERVAL_SECONDS),
            seconds(DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS),
        );
        let spec = crate::PolicySpec::new(1, 2, 30.0);
        assert_eq!(
            (defaults.confirm().as_secs_f64(), defaults.inflow().as_secs_f64()),
            (spec.confirm_seconds, spec.inflow_window_seconds),
            "the spec's defaults fit the default scrape intervals"
        );
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
        let queue = queue_metrics(&fleet, &[], 61.0, &windows).expect("live targets");
        assert_eq!(queue.age_seconds, 1.0);
        assert_eq!(queue.queue_depth, 10.0);
        assert_eq!(queue.oldest_queued_age_seconds, 3.0);
        // Refusals 15, 30, 45, 60, 75 at 40..60: [51, 61] holds 60 and 75, 4 s and 1 s
        // from its ends: 30 in 10 s, 15 a scrape.
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
        let queue = queue_metrics(&[&gone, &live], &[], 7.0, &windows).expect("one live target");
        assert_eq!(queue.queue_depth, 1.0);
        assert!(queue.sustained_admitted_per_second > 0.0, "the gone pod's admissions still count");
        assert!(queue_metrics(&[], &[], 7.0, &windows).is_none());
    }

    #[test]
    fn the_gateway_alone_makes_an_observation_with_the_pods_at_zero() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut first, mut second) = (GatewaySeries::default(), GatewaySeries::default());
        first.record(
            0.0,
            &GatewayScrape { queue_depth: 2.0, oldest_queued_age_seconds: 1.0, ..GatewayScrape::default() },
        );
        first.record(
            5.0,
            &GatewayScrape { queue_depth: 7.0, oldest_queued_age_seconds: 6.0, ..GatewayScrape::default() },
        );
        second.record(
            4.0,
            &GatewayScrape { queue_depth: 3.0, oldest_queued_age_seconds: 9.0, ..GatewayScrape::default() },
        );
        let queue = queue_metrics(&[], &[&first, &second], 7.0, &windows).expect("the gateway's series");
        assert_eq!((queue.gateway_queue_depth, queue.gateway_oldest_queued_age_seconds), (10.0, 9.0));
        assert_eq!(queue.age_seconds, 2.0, "the newest sample, the gateway's");
        assert_eq!((queue.queue_depth, queue.oldest_queued_age_seconds), (0.0, 0.0));
        assert_eq!((queue.queue_wait_p95_seconds, queue.images_per_pod_second), (None, None));
        assert_eq!((queue.sustained_admitted_per_second, queue.rejected_recently), (0.0, 0.0));

        first.mark_stale(8.0);
        second.mark_stale(8.0);
        assert!(queue_metrics(&[], &[&first, &second], 9.0, &windows).is_none(), "nothing current is left");
    }

    #[test]
    fn the_gateway_and_the_pods_are_read_side_by_side() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut pod, mut gateway) = (Series::default(), GatewaySeries::default());
        pod.record(0.0, &PodScrape { oldest_queued_age_seconds: 4.0, ..scrape(1.0, 0.0, 5.0) });
        gateway.record(
            3.0,
            &GatewayScrape { queue_depth: 40.0, oldest_queued_age_seconds: 2.0, ..GatewayScrape::default() },
        );
        let queue = queue_metrics(&[&pod], &[&gateway], 4.0, &windows).expect("both");
        assert_eq!((queue.queue_depth, queue.oldest_queued_age_seconds), (5.0, 4.0));
        assert_eq!((queue.gateway_queue_depth, queue.gateway_oldest_queued_age_seconds), (40.0, 2.0));
        assert_eq!(queue.age_seconds, 1.0);
        let without = queue_metrics(&[&pod], &[], 4.0, &windows).expect("the pod");
        assert_eq!((without.gateway_queue_depth, without.age_seconds), (0.0, 4.0));
    }

    #[test]
    fn behind_the_gateway_the_clients_refused_are_the_gateways_not_the_pods() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut pod, mut gateway) = (Series::default(), GatewaySeries::default());
        for step in 0..=4 {
            let at = 5.0 * f64::from(step);
            // From 5 s on the pod turns away 4 of the gateway's requests a second (a
            // rollout of the gateway, its replicas' shares overlapping), which the gateway
            // holds in its queue.
            pod.record(at, &scrape(at, if at >= 10.0 { 4.0 * (at - 5.0) } else { 0.0 }, 16.0));
            // 120 clients sent away between 15 s and 20 s, a counter exported at 0 from
            // the start: its rate sees them at once. The queue fills from 15 s on.
            let refused = if at >= 20.0 { 120.0 } else { 0.0 };
            gateway.record(
                at,
                &GatewayScrape {
                    queue_depth: if at >= 15.0 { 50.0 } else { 0.0 },
                    oldest_queued_age_seconds: 3.0,
                    refused,
                    ..GatewayScrape::default()
                },
            );
        }
        let queue = queue_metrics(&[&pod], &[&gateway], 20.0, &windows).expect("both");
        // Read over the last two scrapes, per scrape interval: half of the gateway's.
        assert!((queue.rejected_recently - 60.0).abs() < 1e-9, "{queue:?}");
        assert!(queue.sustained_admitted_per_second > 0.0, "the steps before the refusals count: {queue:?}");
        // Without the gateway the pod's refusals are the clients refused: 4/s, 20 a scrape.
        let without = queue_metrics(&[&pod], &[], 20.0, &windows).expect("the pod");
        assert!((without.rejected_recently - 20.0).abs() < 1e-9, "{without:?}");
    }

    #[test]
    fn admissions_while_the_gateway_holds_requests_are_capacity_not_sustained_traffic() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut pod, mut gateway) = (Series::default(), GatewaySeries::default());
        let mut admitted = 0.0;
        for step in 0..=36 {
            let at = 5.0 * f64::from(step);
            // One image a second for the first minute; then a burst waits in the
            // gateway for two minutes, and the pod admits as fast as it serves, 2/s.
            let holding = at > 60.0;
            admitted += if step == 0 {
                0.0
            } else if holding {
                10.0
            } else {
                5.0
            };
            pod.record(at, &scrape(admitted, 0.0, 16.0));
            let queue_depth = if holding { 30.0 } else { 0.0 };
            gateway.record(at, &GatewayScrape { queue_depth, ..GatewayScrape::default() });
        }
        let queue = queue_metrics(&[&pod], &[&gateway], 180.0, &windows).expect("both");
        assert!((queue.sustained_admitted_per_second - 1.0).abs() < 1e-9, "{queue:?}");
        // The same admissions without a gateway in front are demand met: two minutes at
        // 2/s outweigh one at 1/s.
        let without = queue_metrics(&[&pod], &[], 180.0, &windows).expect("the pod");
        assert!((without.sustained_admitted_per_second - 2.0).abs() < 1e-9, "{without:?}");
    }

    #[test]
    fn clients_coming_back_over_the_seconds_after_their_retry_after_are_not_read_as_a_flow() {
        // 40 clients fall due at 20 s and come back over the next 12 (a 24 s
        // `Retry-After` and up to half again of jitter); nothing new arrives. The
        // gateway is scraped every second.
        let windows = Windows::for_scrape_intervals(Duration::from_secs(5), Duration::from_secs(1));
        let mut gateway = GatewaySeries::default();
        for second in 0..=45 {
            let at = f64::from(second);
            let deferred_due = if at >= 20.0 { 40.0 } else { 0.0 };
            let received = 40.0 * ((at - 20.0) / 12.0).clamp(0.0, 1.0);
            gateway.record(at, &GatewayScrape { received, deferred_due, ..GatewayScrape::default() });
        }
        // How long the reading stays above what one pod serves (1.5/s) at a stretch.
        let longest_above = |reading: &dyn Fn(f64) -> f64| {
            (15..=45).map(f64::from).fold((0, 0), |(run, longest), at| {
                let run = if reading(at) > 1.5 { run + 1 } else { 0 };
                (run, longest.max(run))
            })
        };
        let read = |at: f64| {
            let queue = queue_metrics(&[], &[&gateway], at, &windows).expect("the gateway's series");
            queue.new_arrivals_per_second
        };
        let (_, longest) = longest_above(&read);
        assert!(longest <= 5, "above one pod's rate for {longest} s, half the confirmation time at most");
        assert!((15..=45).all(|second| read(f64::from(second)) <= 40.0 / 12.0 + 1e-9));
        // The dues over the arrivals' window alone read the returns as new work for the
        // whole confirmation time: a flow that is not there.
        let arrivals = windows.arrivals.as_secs_f64();
        let over_arrivals_window = |at: f64| {
            let rate = |points: &[Point]| promql::rate(points, at, arrivals).unwrap_or(0.0);
            rate(&gateway.received) - rate(&gateway.deferred_due)
        };
        let (_, longest) = longest_above(&over_arrivals_window);
        assert!(longest as f64 >= windows.confirm().as_secs_f64(), "{longest} s");
    }

    #[test]
    fn a_burst_over_leaves_the_latest_arrivals_while_the_arrivals_window_still_holds_it() {
        // 20 requests a second from 10 s to 22 s, then nothing; the gateway is scraped
        // every second.
        let windows = Windows::for_scrape_intervals(Duration::from_secs(5), Duration::from_secs(1));
        let mut gateway = GatewaySeries::default();
        for second in 0..=30 {
            let at = f64::from(second);
            gateway.record(at, &GatewayScrape { received: 20.0 * (at.clamp(10.0, 22.0) - 10.0), ..Default::default() });
        }
        let read = |at: f64| queue_metrics(&[], &[&gateway], at, &windows).expect("the gateway's series");
        let during = read(20.0);
        assert_eq!(during.gateway_latest_arrivals_per_second, Some(20.0));
        assert_eq!(during.new_arrivals_per_second, 20.0);
        // Two seconds after the last request the arrivals window still reads the burst;
        // the latest two scrapes read nothing.
        let after = read(24.0);
        assert!(after.new_arrivals_per_second >= 8.0, "{after:?}");
        assert_eq!(after.gateway_latest_arrivals_per_second, Some(0.0));
        // Without a gateway there is nothing to read.
        let mut pod = Series::default();
        pod.record(30.0, &scrape(1.0, 0.0, 1.0));
        let alone = queue_metrics(&[&pod], &[], 30.0, &windows).expect("the pod");
        assert_eq!(alone.gateway_latest_arrivals_per_second, None);
    }

    #[test]
    fn clients_away_are_the_gateways_gauge_and_new_arrivals_its_requests_less_those_due_back() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let (mut first, mut second) = (GatewaySeries::default(), GatewaySeries::default());
        for step in 0..=6 {
            let at = 5.0 * f64::from(step);
            // Replica one receives 10 requests a second throughout, 4 of them clients
            // coming back from 10 s on; replica two received 20 new ones by 10 s and no
            // more. 70 and 5 clients are away at the end.
            let due = if at > 10.0 { 4.0 * (at - 10.0) } else { 0.0 };
            first.record(
                at,
                &GatewayScrape { received: 10.0 * at, deferred: 70.0, deferred_due: due, ..GatewayScrape::default() },
            );
            let received = if at >= 10.0 { 20.0 } else { 2.0 * at };
            second.record(at, &GatewayScrape { received, deferred: 5.0, ..GatewayScrape::default() });
        }
        // At 30 s the window [20, 30] holds three samples of each, no extrapolation:
        // 10/s new and returning at one replica, 4/s of them due back, none at the other.
        let queue = queue_metrics(&[], &[&first, &second], 30.0, &windows).expect("the gateway's series");
        assert_eq!(queue.deferred_requests, 75.0);
        assert!((queue.new_arrivals_per_second - 6.0).abs() < 1e-9, "{queue:?}");
        // The inflow, over the 20 s rate window [10, 30]: the same 10/s and 4/s due back
        // at one replica, extrapolated from its samples 15 s apart; the other replica's
        // last new request came at 10 s.
        assert!((queue.gateway_inflow_per_second - 6.0).abs() < 1e-9, "{queue:?}");
        // At 20 s the arrivals window [10, 20] has none of the other replica's requests,
        // the rate window [0, 20] has those of its first 10 s.
        let earlier = queue_metrics(&[], &[&first, &second], 20.0, &windows).expect("the gateway's series");
        assert!(earlier.gateway_inflow_per_second > earlier.new_arrivals_per_second + 1.0, "{earlier:?}");
        // A replica that is gone leaves the gauge at once.
        second.mark_stale(31.0);
        let later = queue_metrics(&[], &[&first, &second], 32.0, &windows).expect("one replica");
        assert_eq!(later.deferred_requests, 70.0);
        // Without a gateway, one sample of a pod's requests makes no rate of arrivals.
        let mut pod = Series::default();
        pod.record(30.0, &scrape(1.0, 0.0, 1.0));
        let alone = queue_metrics(&[&pod], &[], 30.0, &windows).expect("the pod");
        assert_eq!((alone.deferred_requests, alone.new_arrivals_per_second), (0.0, 0.0));
        assert_eq!(alone.gateway_inflow_per_second, 0.0, "no gateway, no inflow read from it");
    }

    #[test]
    fn without_a_gateway_clients_away_and_new_arrivals_are_the_pods() {
        // One pod admits an image a second throughout and refuses 8 tries a second until
        // 30 s, 13 after, each client told to come back 5 s later: a crowd it keeps
        // refusing, joined by 5 new clients a second from 30 s on. Scraped every 5 s.
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let refused = |at: f64| if at <= 30.0 { 8.0 * at } else { 240.0 + 13.0 * (at - 30.0) };
        let mut pod = Series::default();
        for step in 0..=12 {
            let at = 5.0 * f64::from(step);
            let away = refused(at) - refused((at - 5.0).max(0.0));
            let due = refused((at - 5.0).max(0.0));
            pod.record(at, &PodScrape { deferred: away, deferred_due: due, ..scrape(at, refused(at), 4.0) });
        }
        let read = |at: f64| queue_metrics(&[&pod], &[], at, &windows).expect("the pod");
        // A steady crowd trying again is no new work: only the admitted image a second.
        assert!((read(30.0).new_arrivals_per_second - 1.0).abs() < 1e-9, "{:?}", read(30.0));
        assert_eq!(read(30.0).deferred_requests, 40.0);
        // The new clients read as new until their returns fall due over the dues window.
        for at in [35.0, 40.0] {
            assert!(read(at).new_arrivals_per_second > 3.0, "at {at}: {:?}", read(at));
        }
        assert!((read(50.0).new_arrivals_per_second - 1.0).abs() < 1e-9, "the larger crowd steady: {:?}", read(50.0));
        assert_eq!(read(50.0).deferred_requests, 65.0);
        // Behind a gateway the pods' own refusals are not clients away: the gateway
        // tried another pod or held the request.
        let mut gateway = GatewaySeries::default();
        gateway.record(50.0, &GatewayScrape { deferred: 3.0, ..GatewayScrape::default() });
        assert_eq!(queue_metrics(&[&pod], &[&gateway], 50.0, &windows).expect("both").deferred_requests, 3.0);
    }
}
