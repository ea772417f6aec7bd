//! What the policy is told on each pass: the fleet as the apiserver shows it and the
//! queue as Prometheus reports it.

use serde::Serialize;

use crate::startup::Startup;

/// What the operator sees on one reconcile pass (by default: no pod, no metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Seconds on the clock of the [`Memory`](crate::Memory)'s times (the operator: Unix time); only
    /// differences matter.
    pub now_seconds: f64,
    /// The Deployment's `spec.replicas` right now.
    pub replicas: u32,
    /// Pods that are Ready and not terminating.
    pub ready_pods: u32,
    /// Seconds since each pod that is not Ready yet was scheduled (given a GPU): counted
    /// from where [`Observation::ready_pod_startups`] count, so that a pod that
    /// waited for a node to be added is not taken for one nearly ready.
    pub starting_pod_ages_seconds: Vec<f64>,
    /// Pods the scheduler cannot place: no GPU is free and none can be added.
    pub unschedulable_pods: u32,
    /// The start-ups of the pods Ready now, from being scheduled to Ready (the pod's own
    /// start-up, without waiting for a node): remembered with those seen before, their
    /// median is the plan's start-up ([`crate::remember_startups`]).
    pub ready_pod_startups: Vec<Startup>,
    /// The queue metrics from Prometheus; `None` when the query returned nothing.
    pub queue: Option<QueueMetrics>,
}

/// The fleet's queue as Prometheus reports it (sums over pods, rates over windows); by
/// default an empty queue, just sampled, with nothing measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMetrics {
    /// How long ago the newest sample behind these numbers was taken.
    pub age_seconds: f64,
    /// `sum(matte_queue_depth)`.
    pub queue_depth: f64,
    /// `max(matte_oldest_queued_age_seconds)`, as of the sample.
    pub oldest_queued_age_seconds: f64,
    /// 95th percentile of `matte_queue_wait_seconds` over the rate window, if any request
    /// started inference in it. Reported with the decision; the oldest age leads it.
    pub queue_wait_p95_seconds: Option<f64>,
    /// Images per second of GPU time (`rate(inference_rows) / rate(inference_seconds_sum)`
    /// over the long window, padding counted), if any image was processed in it: what one
    /// busy pod can do.
    pub images_per_pod_second: Option<f64>,
    /// Requests admitted per second when no burst is on: the median over a long window
    /// of the rate at each scrape, leaving out those with refusals, which a burst does
    /// not move.
    pub sustained_admitted_per_second: f64,
    /// 429 responses in one scrape interval, read over the last two: quick to see a
    /// burst begin, before a scrape shows its clients away (`deferred_requests`), for
    /// which they stand in until then. A client refused again within the window counts
    /// again; a full pod's `Retry-After` (the time its queue holds) is usually longer.
    pub rejected_recently: f64,
    /// `sum(matte_gateway_queue_depth)`: requests waiting in the gateway's queue for a
    /// place on a pod (0 without a gateway). With the gateway in front, this is the
    /// backlog the pods' queues cannot show, and the only one when no pod runs.
    pub gateway_queue_depth: f64,
    /// `max(matte_gateway_oldest_queued_age_seconds)` (0 without a gateway).
    pub gateway_oldest_queued_age_seconds: f64,
    /// Clients sent away whose `Retry-After` has not passed: by the gateway (429, or 503
    /// when the budget ran out in its queue) where one is in front, else by the pods
    /// (429). The clients waiting outside, each counted once however long it was told to
    /// stay away, where a rate times a fixed `Retry-After` would count only those of the
    /// last few seconds.
    pub deferred_requests: f64,
    /// New work per second, seen a scrape after it changes: behind a gateway, the
    /// requests reaching it over the arrivals window (`observed::Windows::arrivals`),
    /// less the clients whose `Retry-After` passed, per second over the longer window
    /// their returns spread over (`observed::Windows::dues`); clients sent away together
    /// and coming back over more than that window still make it read a little low, then
    /// a little high. Without one the same of the pods: every request they answered,
    /// less the clients they refused whose `Retry-After` passed: a crowd the pods keep
    /// refusing reads as the pods' admissions, one growing as new clients join it.
    pub new_arrivals_per_second: f64,
    /// Requests reaching the gateway per second over its latest two scrapes
    /// (`observed::Windows::latest`), returns included: whether a flow still arrives.
    /// `None` without a gateway, or when the window holds fewer than two samples.
    pub gateway_latest_arrivals_per_second: Option<f64>,
    /// Behind a gateway, its new arrivals as in `new_arrivals_per_second` but over the
    /// rate window (`observed::Windows::inflow`, four pods' scrapes), the clients due
    /// back subtracted over the same window: once a burst has been on for longer than
    /// that, what keeps arriving while it drains. 0 without a gateway.
    pub gateway_inflow_per_second: f64,
}

/// The most any count, depth, age or rate is taken for: a billion images, seconds or
/// images a second is no fleet's. A larger number is a broken or forged series, and a
/// few of them added up could reach infinity, which a status cannot hold (JSON has no
/// such number: the write would fail on every pass).
pub const MAX_OBSERVED: f64 = 1e9;

impl QueueMetrics {
    /// The metrics with every count, depth, age and rate between 0 and [`MAX_OBSERVED`]
    /// (and any that is not a number at 0): none can be below, and one that reads so,
    /// from a broken or forged series, must not take work off a plan. The new arrivals,
    /// less the clients coming back, can read below 0 for a moment when more come back
    /// than arrive: no new work either. The sample's own age is left as it is: a clock a
    /// little ahead of the sample's reads it a little below 0, which is fresh, and one
    /// far behind is stale; the throughput is checked against its plausible range by
    /// the plan.
    pub fn bounded(&self) -> Self {
        let bounded = |value: f64| if value.is_nan() { 0.0 } else { value.clamp(0.0, MAX_OBSERVED) };
        Self {
            age_seconds: self.age_seconds,
            queue_depth: bounded(self.queue_depth),
            oldest_queued_age_seconds: bounded(self.oldest_queued_age_seconds),
            queue_wait_p95_seconds: self.queue_wait_p95_seconds.map(bounded),
            images_per_pod_second: self.images_per_pod_second,
            sustained_admitted_per_second: bounded(self.sustained_admitted_per_second),
            rejected_recently: bounded(self.rejected_recently),
            gateway_queue_depth: bounded(self.gateway_queue_depth),
            gateway_oldest_queued_age_seconds: bounded(self.gateway_oldest_queued_age_seconds),
            deferred_requests: bounded(self.deferred_requests),
            new_arrivals_per_second: bounded(self.new_arrivals_per_second),
            gateway_latest_arrivals_per_second: self.gateway_latest_arrivals_per_second.map(bounded),
            gateway_inflow_per_second: bounded(self.gateway_inflow_per_second),
        }
    }
}
