//! Knative's KPA with its defaults: every 2 s, the concurrency averaged over a 60 s
//! stable window and a 6 s panic window, a target of 70 % of the container
//! concurrency, panic mode when the panic window asks for twice the ready pods (then
//! only scaling up, until 60 s after the surge), scale-down at most halving the ready
//! pods per decision, and 30 s of grace before scaling to zero.
//!
//! Concurrency comes straight from the queue-proxies and the activator, sampled every
//! second, not from Prometheus. The container concurrency is what a pod holds before it
//! refuses: its queue capacity, the batch in inference included.

use std::collections::VecDeque;

use super::{ClusterView, Scaler, ceil_u32};
use crate::settings::Settings;

const TICK_SECONDS: f64 = 2.0;
const STABLE_WINDOW_SECONDS: f64 = 60.0;
const PANIC_WINDOW_SECONDS: f64 = 6.0;
const PANIC_THRESHOLD: f64 = 2.0;
/// Knative's default target utilization.
pub const TARGET_UTILIZATION: f64 = 0.7;
const MAX_SCALE_UP_RATE: f64 = 1000.0;
const MAX_SCALE_DOWN_RATE: f64 = 2.0;
const SCALE_TO_ZERO_GRACE_SECONDS: f64 = 30.0;

pub struct Kpa {
    min: u32,
    max: u32,
    /// Concurrency one pod should carry.
    target: f64,
    samples: VecDeque<(f64, f64)>,
    panicking_since: Option<f64>,
    max_panic_pods: u32,
    zero_wanted_since: Option<f64>,
}

impl Kpa {
    pub fn new(settings: &Settings) -> Self {
        let container_concurrency = settings.queue_capacity as f64;
        Self {
            min: settings.min_replicas,
            max: settings.max_replicas,
            target: TARGET_UTILIZATION * container_concurrency,
            samples: VecDeque::new(),
            panicking_since: None,
            max_panic_pods: 0,
            zero_wanted_since: None,
        }
    }

    /// The mean of the per-second samples in the window; a window not yet filled is
    /// averaged over the time there has been data, as Knative does. Over the samples
    /// taken, not the window's seconds: a decision comes before the sample of its own
    /// second, and dividing the window's others by all its seconds read 5/6 of the
    /// concurrency in the panic window.
    fn window_average(&self, now: f64, window: f64) -> f64 {
        let in_window: Vec<f64> =
            self.samples.iter().filter(|(at, _)| *at > now - window).map(|(_, value)| *value).collect();
        if in_window.is_empty() {
            return 0.0;
        }
        in_window.iter().sum::<f64>() / in_window.len() as f64
    }

    /// The decider of `autoscaler.go`: the pods KPA wants before the bounds.
    fn desired(&mut self, now: f64, ready: u32) -> u32 {
        let ready = f64::from(ready.max(1));
        let max_up = (MAX_SCALE_UP_RATE * ready).ceil();
        let max_down = (ready / MAX_SCALE_DOWN_RATE).floor();
        let stable_pods = (self.window_average(now, STABLE_WINDOW_SECONDS) / self.target).ceil();
        let panic_pods = (self.window_average(now, PANIC_WINDOW_SECONDS) / self.target).ceil();
        let desired_stable = ceil_u32(stable_pods.clamp(max_down, max_up));
        let desired_panic = ceil_u32(panic_pods.clamp(max_down, max_up));
        let over_threshold = panic_pods / ready >= PANIC_THRESHOLD;
        if over_threshold {
            self.panicking_since = Some(now);
        } else if self.panicking_since.is_some_and(|since| since + STABLE_WINDOW_SECONDS < now) {
            self.panicking_since = None;
            self.max_panic_pods = 0;
        }
        if self.panicking_since.is_none() {
            return desired_stable;
        }
        // In panic mode the count only ratchets up.
        self.max_panic_pods = self.max_panic_pods.max(desired_stable.max(desired_panic));
        self.max_panic_pods
    }
}

impl Scaler for Kpa {
    fn interval_seconds(&self) -> f64 {
        TICK_SECONDS
    }

    fn initial_replicas(&self) -> u32 {
        self.min
    }

    fn sample(&mut self, view: &ClusterView) {
        self.samples.push_back((view.now, view.inflight));
        while self.samples.front().is_some_and(|(at, _)| *at <= view.now - STABLE_WINDOW_SECONDS) {
            self.samples.pop_front();
        }
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        let desired = self.desired(view.now, view.ready).clamp(self.min, self.max.max(self.min));
        if desired > 0 {
            self.zero_wanted_since = None;
            return desired;
        }
        let since = *self.zero_wanted_since.get_or_insert(view.now);
        if view.now - since >= SCALE_TO_ZERO_GRACE_SECONDS { 0 } else { view.replicas }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn a_window_averages_the_samples_it_holds() {
        let mut kpa = Kpa::new(&Scenario::BurstTrain.settings());
        // A decision at 6 s comes before that second's sample: 1..=5 s are in the panic
        // window, and their mean is the concurrency (a sum over 6 s read 5/6 of it).
        kpa.samples.extend((1..=5).map(|second| (f64::from(second), 12.0)));
        assert_eq!(kpa.window_average(6.0, PANIC_WINDOW_SECONDS), 12.0);
        assert_eq!(kpa.window_average(6.0, STABLE_WINDOW_SECONDS), 12.0, "a window not yet filled");
        assert_eq!(Kpa::new(&Scenario::BurstTrain.settings()).window_average(6.0, PANIC_WINDOW_SECONDS), 0.0);
    }

    #[test]
    fn the_target_is_a_share_of_what_a_pod_holds_its_batch_included() {
        let settings = Settings { queue_capacity: 16, max_batch_size: 4, ..Scenario::BurstTrain.settings() };
        assert!((Kpa::new(&settings).target - TARGET_UTILIZATION * 16.0).abs() < 1e-9);
    }
}
