//! KEDA's Prometheus scaler with its defaults: KEDA itself moves between 0 and 1
//! replica, checking every 30 s (pollingInterval) and going to zero after 300 s without
//! activity (cooldownPeriod); from 1 to N it feeds an HPA an External metric with an
//! AverageValue target.
//!
//! As configured here, like KEDA's own Prometheus example: the query
//! `sum(rate(matte_requests_total[1m]))`, a threshold of 70 % of what one pod processes
//! per second, activation above 0.

use super::hpa::{HpaController, TARGET_UTILIZATION};
use super::{ClusterView, Scaler};
use crate::settings::Settings;

const POLLING_INTERVAL_SECONDS: f64 = 30.0;
const COOLDOWN_SECONDS: f64 = 300.0;

pub struct Keda {
    hpa: HpaController,
    min: u32,
    threshold: f64,
    last_poll: Option<f64>,
    last_active: f64,
}

impl Keda {
    pub fn new(settings: &Settings) -> Self {
        Self {
            hpa: HpaController::new(settings.min_replicas, settings.max_replicas),
            min: settings.min_replicas,
            threshold: TARGET_UTILIZATION * settings.nominal_images_per_pod_second(),
            last_poll: None,
            last_active: 0.0,
        }
    }

    /// KEDA's own loop: activation and deactivation between zero and one replica.
    fn poll(&mut self, view: &ClusterView, request_rate: Option<f64>) -> Option<u32> {
        let due = self.last_poll.is_none_or(|last| view.now - last >= POLLING_INTERVAL_SECONDS);
        if self.min > 0 || !due {
            return None;
        }
        self.last_poll = Some(view.now);
        if request_rate.is_some_and(|rate| rate > 0.0) {
            self.last_active = view.now;
            return (view.replicas == 0).then_some(1);
        }
        (view.replicas > 0 && view.now - self.last_active >= COOLDOWN_SECONDS).then_some(0)
    }
}

impl Scaler for Keda {
    fn interval_seconds(&self) -> f64 {
        HpaController::sync_period_seconds()
    }

    fn initial_replicas(&self) -> u32 {
        self.min
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        let request_rate = view.metrics.map(|metrics| metrics.requests_per_second);
        if let Some(replicas) = self.poll(view, request_rate) {
            return replicas;
        }
        // At zero the HPA is idle; without a metric it changes nothing.
        let (Some(total), true) = (request_rate, view.replicas > 0) else {
            return view.replicas;
        };
        let desired = HpaController::replicas_for_external_metric(view.replicas, total, self.threshold);
        self.hpa.normalize(view.now, view.replicas, desired)
    }
}
