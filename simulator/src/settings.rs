//! Every knob of a simulation run, with the meaning of each.

use std::time::Duration;

use clap::ValueEnum;
use matte_common::limits::{MAX_BATCH_SIZE, MAX_QUEUE_CAPACITY, MAX_REPLICAS};
use matte_policy::observed::Windows;
use matte_policy::{PLANNED_UTILIZATION_PERCENT_MAX, PLANNED_UTILIZATION_PERCENT_MIN};
use serde::Serialize;

use crate::error::Error;

/// How the Service spreads requests over ready pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// A plain Kubernetes Service: each request goes to a ready pod at random.
    Random,
    /// A balancer that sends each request to the pod with the fewest outstanding (pods
    /// still refuse with 429 when full).
    LeastOutstanding,
    /// `matte-gateway`: each request goes to the ready pod with the fewest requests
    /// outstanding from it, never past the pod's queue capacity; the rest wait in one
    /// FIFO, admitted only if their expected wait fits the budget (`max_wait_seconds`),
    /// refused with 429 and `Retry-After` otherwise, answered 503 if the budget runs out
    /// in the queue. Pods never refuse. With no ready pod requests wait within budget.
    Gateway,
}

impl Routing {
    pub fn label(self) -> &'static str {
        match self {
            Routing::Random => "random",
            Routing::LeastOutstanding => "least-outstanding",
            Routing::Gateway => "gateway",
        }
    }
}

/// The longest time a setting may name, the run's duration included: a week. A run
/// simulates its passes and scrapes one by one, so its length is computing time, and a
/// duration past a week is more likely a trace in Unix times than a week of traffic.
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// The most passes, scrapes or rule evaluations at its finest interval a run may take:
/// a million, a week at the gateway's 1 s and its tail, some 3 s of computing a policy.
/// Finer intervals over as long a run would take hours.
pub const MAX_STEPS: f64 = 1e6;

/// The widest spread of inference and start-up times (the standard deviation of their
/// logarithm): at 3 the 99th percentile is a thousand times the median, and past it a
/// draw overflows into times no run ends.
pub const MAX_SIGMA: f64 = 3.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Arrivals happen in [0, duration).
    pub duration_seconds: f64,
    /// Simulated time after the last arrival, so that every policy's fleet settles and
    /// is billed over the same horizon.
    pub tail_seconds: f64,
    /// An image meets the SLO when it is answered within this many seconds of its first try.
    pub slo_seconds: f64,
    /// `targetQueueLatencySeconds`, given to every policy in its own terms.
    pub target_queue_latency_seconds: f64,
    /// Median inference time of one image alone.
    pub service_seconds: f64,
    /// Spread of inference times (standard deviation of their logarithm).
    pub service_sigma: f64,
    /// Largest batch the GPU loop forms from what is queued.
    pub max_batch_size: usize,
    /// Median time for a pod to become ready once it has a GPU node (image, model, warm-up).
    pub startup_seconds: f64,
    pub startup_sigma: f64,
    /// Each pod's start-up is drawn by when it begins (the i-th pod to begin one in a
    /// 10 s bucket gets the same draw under every policy), so that policies starting
    /// pods for the same burst get the same start-ups; otherwise they are drawn in the
    /// order pods begin them, and a policy that started more pods before draws others.
    pub matched_startups: bool,
    /// GPU nodes that exist from the start and are never removed.
    pub warm_gpus: u32,
    /// Most GPU nodes the cluster can have; pods beyond it are unschedulable.
    pub max_gpus: u32,
    /// Median time to add a GPU node when none is free.
    pub node_provision_seconds: f64,
    /// An added node that stays free this long is removed (the cluster autoscaler's
    /// default scale-down-unneeded time).
    pub node_idle_timeout_seconds: f64,
    /// Requests a pod holds, queued or in inference, before it answers 429 (the pods'
    /// `--queue-capacity`).
    pub queue_capacity: usize,
    pub routing: Routing,
    /// The gateway's budget (`spec.gateway.maxWaitSeconds`): the longest a request may
    /// wait in its queue. Only with gateway routing.
    pub max_wait_seconds: f64,
    /// Matte's `autoscaling.plannedUtilizationPercent`; `None`: the policy's default.
    pub planned_utilization_percent: Option<u16>,
    /// Prometheus scrape interval of the pods.
    pub scrape_interval_seconds: f64,
    /// Prometheus scrape interval of the gateway's replicas, at most the pods' (only with
    /// gateway routing; any other front is scraped with the pods). Matte's windows follow
    /// the pods' interval but for the gateway's arrivals (`Windows::arrivals`): a shorter
    /// one makes the gateway's samples fresher and its arrivals window shorter.
    pub gateway_scrape_interval_seconds: f64,
    /// Each pod, and each gateway replica but the first, is scraped at its own offset
    /// within the interval after the first gateway replica (or the front), as
    /// Prometheus spreads its targets; otherwise every target is scraped at once.
    pub spread_scrapes: bool,
    /// Replicas of the gateway Prometheus scrapes, each reporting an equal share of its
    /// one queue and of its counters: with spread scrapes, each at its own offset. Only
    /// with gateway routing.
    pub gateway_replicas: u32,
    /// How long after the scrape it reads each of Matte's passes runs, at most one pass
    /// interval (`Windows::pass`: the front's scrape interval); `None`: a whole
    /// interval, so that every pass reads samples one interval old (the worst phase).
    /// With spread scrapes, the scrape of the first gateway replica (or the front). In a
    /// cluster the phase is arbitrary: the operator requeues a resource one interval
    /// after its pass ends, so it drifts through every phase.
    pub pass_after_scrape_seconds: Option<f64>,
    /// Prometheus rule evaluation interval: what the autoscalers query is this fresh.
    pub rule_interval_seconds: f64,
    /// The `rate()` window of the anchors' request-rate rule (Matte's windows follow
    /// the scrape interval, as in the operator: [`Settings::windows`]).
    pub rate_window_seconds: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The fleet size of the `static` policy.
    pub static_replicas: u32,
    /// Two replica changes in opposite directions within this window count as a flap.
    pub flap_window_seconds: f64,
    /// Arrivals separated by at least this much quiet belong to different bursts.
    pub burst_quiet_gap_seconds: f64,
}

/// Share of an image's solo time that each further image in a batch costs: batching
/// amortises part of the GPU work, not all of it.
pub const BATCHED_IMAGE_COST: f64 = 0.6;

impl Settings {
    /// Mean inference time of one image (the log-normal's mean, not its median).
    pub fn mean_service_seconds(&self) -> f64 {
        self.service_seconds * (self.service_sigma * self.service_sigma / 2.0).exp()
    }

    /// What one pod processes per second when busy: in full batches, each image after
    /// the first at [`BATCHED_IMAGE_COST`] of its solo time (the anchors' targets are a
    /// share of it, as an operator would measure a pod's throughput under load). A
    /// batch's longest image is taken at the mean: with a spread of 0.3, a batch of four
    /// runs some 5 % longer than this says.
    pub fn nominal_images_per_pod_second(&self) -> f64 {
        let batch = self.max_batch_size.max(1) as f64;
        batch / (self.mean_service_seconds() * (1.0 + BATCHED_IMAGE_COST * (batch - 1.0)))
    }

    /// The windows of Matte's quantities, as the operator sets them for these scrape
    /// intervals.
    pub fn windows(&self) -> Windows {
        Windows::for_scrape_intervals(
            Duration::from_secs_f64(self.scrape_interval_seconds),
            Duration::from_secs_f64(self.front_scrape_interval_seconds()),
        )
    }

    /// The front's scrape targets: the gateway's replicas, or the one front that holds
    /// requests without a gateway.
    pub fn front_replicas(&self) -> u32 {
        if self.routing == Routing::Gateway { self.gateway_replicas } else { 1 }
    }

    /// How often the front's targets are scraped: see
    /// [`Settings::gateway_scrape_interval_seconds`].
    pub fn front_scrape_interval_seconds(&self) -> f64 {
        if self.routing == Routing::Gateway {
            self.gateway_scrape_interval_seconds
        } else {
            self.scrape_interval_seconds
        }
    }

    /// How often Matte decides, as the operator requeues a resource for these scrape
    /// intervals.
    pub fn pass_interval_seconds(&self) -> f64 {
        self.windows().pass.as_secs_f64()
    }

    /// See [`Settings::pass_after_scrape_seconds`].
    pub fn pass_after_scrape_seconds(&self) -> f64 {
        self.pass_after_scrape_seconds.unwrap_or_else(|| self.pass_interval_seconds())
    }

    pub fn end_seconds(&self) -> f64 {
        self.duration_seconds + self.tail_seconds
    }

    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("duration", self.duration_seconds),
            ("SLO", self.slo_seconds),
            ("target queue latency", self.target_queue_latency_seconds),
            ("service time", self.service_seconds),
            ("start-up time", self.startup_seconds),
            ("node provisioning time", self.node_provision_seconds),
            ("gateway's max wait", self.max_wait_seconds),
            ("scrape interval", self.scrape_interval_seconds),
            ("rule interval", self.rule_interval_seconds),
            ("rate window", self.rate_window_seconds),
        ];
        if let Some((name, value)) =
            positive.iter().find(|(_, value)| !(value.is_finite() && *value > 0.0 && *value <= MAX_SECONDS))
        {
            return Err(Error::InvalidSetting(format!(
                "the {name} must be a positive number of seconds, at most a week ({MAX_SECONDS}), not {value}"
            )));
        }
        let non_negative = [
            ("tail", self.tail_seconds),
            ("node idle timeout", self.node_idle_timeout_seconds),
            ("flap window", self.flap_window_seconds),
            ("burst quiet gap", self.burst_quiet_gap_seconds),
        ];
        if let Some((name, value)) =
            non_negative.iter().find(|(_, value)| !(value.is_finite() && *value >= 0.0 && *value <= MAX_SECONDS))
        {
            return Err(Error::InvalidSetting(format!(
                "the {name} must be a number of seconds >= 0, at most a week ({MAX_SECONDS}), not {value}"
            )));
        }
        let spreads = [("service time spread", self.service_sigma), ("start-up spread", self.startup_sigma)];
        if let Some((name, value)) =
            spreads.iter().find(|(_, value)| !(value.is_finite() && *value >= 0.0 && *value <= MAX_SIGMA))
        {
            return Err(Error::InvalidSetting(format!("the {name} must be from 0 to {MAX_SIGMA}, not {value}")));
        }
        let counts = [
            ("minReplicas", self.min_replicas, MAX_REPLICAS),
            ("maxReplicas", self.max_replicas, MAX_REPLICAS),
            ("static replicas", self.static_replicas, MAX_REPLICAS),
            ("warm GPU nodes", self.warm_gpus, MAX_REPLICAS),
            ("most GPU nodes", self.max_gpus, MAX_REPLICAS),
            ("gateway replicas", self.gateway_replicas, MAX_REPLICAS),
            ("queue capacity", u32::try_from(self.queue_capacity).unwrap_or(u32::MAX), MAX_QUEUE_CAPACITY),
            ("batch size", u32::try_from(self.max_batch_size).unwrap_or(u32::MAX), MAX_BATCH_SIZE),
        ];
        if let Some((name, value, max)) = counts.iter().find(|(_, value, max)| value > max) {
            return Err(Error::InvalidSetting(format!("the {name} must be at most {max}, not {value}")));
        }
        let gateway_interval = self.gateway_scrape_interval_seconds;
        if self.routing == Routing::Gateway
            && !(gateway_interval.is_finite()
                && gateway_interval > 0.0
                && gateway_interval <= self.scrape_interval_seconds)
        {
            return Err(Error::InvalidSetting(format!(
                "the gateway's scrape interval must be positive and at most the pods', {}, so that every window holds its samples, not {gateway_interval}",
                self.scrape_interval_seconds
            )));
        }
        let pass_interval = self.pass_interval_seconds();
        if let Some(value) = self
            .pass_after_scrape_seconds
            .filter(|value| !(value.is_finite() && *value > 0.0 && *value <= pass_interval))
        {
            return Err(Error::InvalidSetting(format!(
                "a pass must run after the scrape it reads and before the next one: from 0 (exclusive) to the pass interval, {pass_interval}, not {value}"
            )));
        }
        let intervals = [
            self.scrape_interval_seconds,
            self.rule_interval_seconds,
            self.front_scrape_interval_seconds(),
            pass_interval,
        ];
        let finest = intervals.into_iter().fold(f64::INFINITY, f64::min);
        let steps = self.end_seconds() / finest;
        if steps > MAX_STEPS {
            return Err(Error::InvalidSetting(format!(
                "a run of {:.0}s at a {finest}s interval is {steps:.0} steps, more than {MAX_STEPS}: shorten the run or lengthen the interval",
                self.end_seconds()
            )));
        }
        let utilization_percent = PLANNED_UTILIZATION_PERCENT_MIN..=PLANNED_UTILIZATION_PERCENT_MAX;
        if let Some(percent) = self.planned_utilization_percent.filter(|percent| !utilization_percent.contains(percent))
        {
            return Err(Error::InvalidSetting(format!(
                "the planned utilization must be from {PLANNED_UTILIZATION_PERCENT_MIN} to {PLANNED_UTILIZATION_PERCENT_MAX} percent, not {percent}"
            )));
        }
        if self.min_replicas > self.max_replicas {
            return Err(Error::InvalidSetting(format!(
                "minReplicas {} is above maxReplicas {}",
                self.min_replicas, self.max_replicas
            )));
        }
        if self.max_replicas == 0 {
            return Err(Error::InvalidSetting("maxReplicas must be at least 1".into()));
        }
        if self.gateway_replicas == 0 {
            return Err(Error::InvalidSetting("the gateway needs at least 1 replica".into()));
        }
        if self.queue_capacity == 0 || self.max_batch_size == 0 {
            return Err(Error::InvalidSetting("the queue capacity and the batch size must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn burst_train() -> Settings {
        Scenario::BurstTrain.settings()
    }

    fn refusal(settings: &Settings) -> String {
        settings.validate().expect_err("refused").to_string()
    }

    #[test]
    fn every_scenario_s_settings_are_valid() {
        for scenario in Scenario::value_variants() {
            let settings = scenario.settings();
            assert_eq!(settings.validate().ok(), Some(()), "{}", scenario.name());
        }
    }

    #[test]
    fn a_busy_pod_runs_full_batches_each_image_after_the_first_at_its_batched_cost() {
        let solo = burst_train();
        let batched = Settings { max_batch_size: 4, ..solo.clone() };
        let ratio = batched.nominal_images_per_pod_second() / solo.nominal_images_per_pod_second();
        assert!((ratio - 4.0 / (1.0 + 3.0 * BATCHED_IMAGE_COST)).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn settings_that_would_run_for_ever_are_refused_by_name() {
        let forever = Settings { duration_seconds: 1e300, ..burst_train() };
        assert!(refusal(&forever).contains("the duration must be a positive number of seconds, at most a week"));
        // Past what a `Duration` holds: refused before any window is built from it.
        let never_scraped = Settings { scrape_interval_seconds: 1e300, ..burst_train() };
        assert!(refusal(&never_scraped).contains("the scrape interval"));
        let spread = Settings { service_sigma: 50.0, ..burst_train() };
        assert!(refusal(&spread).contains("the service time spread must be from 0 to 3"));
        let fine = Settings { routing: Routing::Gateway, gateway_scrape_interval_seconds: 0.001, ..burst_train() };
        assert!(refusal(&fine).contains("steps, more than 1000000"), "{}", refusal(&fine));
        let week = Settings { duration_seconds: MAX_SECONDS, ..burst_train() };
        assert_eq!(week.validate().ok(), Some(()), "a week at the defaults runs");
    }

    #[test]
    fn counts_beyond_a_resource_s_bounds_are_refused_by_name() {
        let nodes = Settings { warm_gpus: 4_000_000_000, ..burst_train() };
        assert_eq!(
            refusal(&nodes),
            "invalid simulation setting: the warm GPU nodes must be at most 1000, not 4000000000"
        );
        let queue = Settings { queue_capacity: 1 << 40, ..burst_train() };
        assert!(refusal(&queue).contains("the queue capacity must be at most 10000"));
        let replicas = Settings { max_replicas: MAX_REPLICAS + 1, ..burst_train() };
        assert!(refusal(&replicas).contains("maxReplicas must be at most 1000"));
    }
}
