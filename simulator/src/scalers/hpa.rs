//! The Kubernetes Horizontal Pod Autoscaler (autoscaling/v2) with its defaults, as
//! `pkg/controller/podautoscaler` computes it: every 15 s, desired = ceil(current ×
//! metric / target) outside a 10 % tolerance, pods that are not ready counted as using
//! nothing when scaling up, then a 300 s scale-down stabilization window, then the
//! scale-up limit of max(4 pods, 100 %) per 15 s.
//!
//! As configured here, the canonical custom-metric set-up: a Pods metric, each ready
//! pod's request rate (`rate(matte_requests_total[1m])` through a Prometheus adapter,
//! refusals included since that is what the counter counts), with an AverageValue
//! target of [`TARGET_UTILIZATION`] of what one pod processes per second. The same
//! utilization as Knative's default, so that the anchors differ only in their algorithms.

use super::{ClusterView, Scaler, ceil_u32};
use crate::settings::Settings;

const SYNC_PERIOD_SECONDS: f64 = 15.0;
const TOLERANCE: f64 = 0.1;
const SCALE_DOWN_STABILIZATION_SECONDS: f64 = 300.0;
const SCALE_UP_PERIOD_SECONDS: f64 = 15.0;
const SCALE_UP_PODS: u32 = 4;
const SCALE_UP_PERCENT: f64 = 100.0;

/// Share of a pod's throughput that HPA and KEDA are configured to target: Knative's
/// default, so that the anchors differ only in their algorithms.
pub use super::kpa::TARGET_UTILIZATION;

/// The HPA controller's replica calculation and behaviour, shared with KEDA (which
/// drives an HPA).
pub struct HpaController {
    min: u32,
    max: u32,
    /// Unstabilized recommendations of the last stabilization window.
    recommendations: Vec<(f64, u32)>,
    /// Replica changes (signed) for the rate limits.
    changes: Vec<(f64, i64)>,
}

impl HpaController {
    /// The HPA cannot go below one replica (scale to zero is KEDA's job).
    pub fn new(min: u32, max: u32) -> Self {
        Self { min: min.max(1), max: max.max(1), recommendations: Vec::new(), changes: Vec::new() }
    }

    pub fn sync_period_seconds() -> f64 {
        SYNC_PERIOD_SECONDS
    }

    /// `GetMetricReplicas` for a Pods metric with an AverageValue target: each ready pod
    /// reports `per_pod`; pods without metrics count as 0 when scaling up and as the
    /// target when scaling down, and a result that changes direction is dropped.
    pub fn replicas_for_pods_metric(current: u32, ready: u32, not_ready: u32, per_pod: f64, target: f64) -> u32 {
        if ready == 0 {
            // No pod reports the metric: the HPA cannot compute and changes nothing.
            return current;
        }
        let usage_ratio = per_pod / target;
        if not_ready == 0 {
            if (1.0 - usage_ratio).abs() <= TOLERANCE {
                return current;
            }
            return ceil_u32(usage_ratio * f64::from(ready));
        }
        let counted = f64::from(ready + not_ready);
        let assumed_for_missing = if usage_ratio > 1.0 { 0.0 } else { target };
        let new_ratio = (per_pod * f64::from(ready) + assumed_for_missing * f64::from(not_ready)) / (target * counted);
        let reverses = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
        if (1.0 - new_ratio).abs() <= TOLERANCE || reverses {
            return current;
        }
        let replicas = ceil_u32(new_ratio * counted);
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return current;
        }
        replicas
    }

    /// `GetExternalPerPodMetricReplicas`: an External metric with an AverageValue target.
    pub fn replicas_for_external_metric(current: u32, total: f64, target_per_pod: f64) -> u32 {
        let usage_ratio = total / (target_per_pod * f64::from(current));
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return current;
        }
        ceil_u32(total / target_per_pod)
    }

    /// `normalizeDesiredReplicasWithBehaviors`: stabilization, then rate limits, then bounds.
    pub fn normalize(&mut self, now: f64, current: u32, desired: u32) -> u32 {
        self.recommendations.retain(|(at, _)| now - at < SCALE_DOWN_STABILIZATION_SECONDS);
        // The scale-up window is 0 s: only the scale-down side is stabilized, to the
        // highest recommendation of the window.
        let highest = self.recommendations.iter().map(|(_, replicas)| *replicas).fold(desired, u32::max);
        self.recommendations.push((now, desired));
        let stabilized = current.max(desired).min(highest);

        self.changes.retain(|(at, _)| now - at < SCALE_UP_PERIOD_SECONDS);
        let mut replicas = stabilized;
        if stabilized > current {
            let changed: i64 = self.changes.iter().map(|(_, change)| *change).sum();
            let period_start = (i64::from(current) - changed).max(0) as f64;
            let by_pods = period_start + f64::from(SCALE_UP_PODS);
            let by_percent = (period_start * (1.0 + SCALE_UP_PERCENT / 100.0)).ceil();
            let limit = ceil_u32(by_pods.max(by_percent)).max(current);
            replicas = replicas.min(limit);
        }
        // The default scale-down policy allows 100 % per 15 s: only minReplicas bounds it.
        let replicas = replicas.clamp(self.min, self.max);
        if replicas != current {
            self.changes.push((now, i64::from(replicas) - i64::from(current)));
        }
        replicas
    }

    pub fn min(&self) -> u32 {
        self.min
    }
}

/// The HPA on requests per second per pod.
pub struct Hpa {
    controller: HpaController,
    target_per_pod: f64,
}

impl Hpa {
    pub fn new(settings: &Settings) -> Self {
        Self {
            controller: HpaController::new(settings.min_replicas, settings.max_replicas),
            target_per_pod: TARGET_UTILIZATION * settings.nominal_images_per_pod_second(),
        }
    }
}

impl Scaler for Hpa {
    fn interval_seconds(&self) -> f64 {
        HpaController::sync_period_seconds()
    }

    fn initial_replicas(&self) -> u32 {
        self.controller.min()
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        let Some(metrics) = view.metrics else {
            return view.replicas;
        };
        let per_pod = metrics.requests_per_second / f64::from(view.ready.max(1));
        let desired = HpaController::replicas_for_pods_metric(
            view.replicas,
            view.ready,
            view.not_ready(),
            per_pod,
            self.target_per_pod,
        );
        self.controller.normalize(view.now, view.replicas, desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_tolerance_nothing_changes() {
        assert_eq!(HpaController::replicas_for_pods_metric(4, 4, 0, 10.5, 10.0), 4);
        assert_eq!(HpaController::replicas_for_pods_metric(4, 4, 0, 20.0, 10.0), 8);
    }

    #[test]
    fn starting_pods_count_as_idle_when_scaling_up() {
        // 2 ready pods at 3x the target; 4 more starting dampen the scale-up to 6 pods.
        assert_eq!(HpaController::replicas_for_pods_metric(6, 2, 4, 30.0, 10.0), 6);
        assert_eq!(HpaController::replicas_for_pods_metric(2, 2, 0, 30.0, 10.0), 6);
    }

    #[test]
    fn scale_up_is_limited_to_four_pods_or_double_per_period() {
        let mut controller = HpaController::new(1, 100);
        assert_eq!(controller.normalize(0.0, 1, 50), 5, "1 + 4 pods beats 100 %");
        assert_eq!(controller.normalize(5.0, 5, 50), 5, "same 15 s period");
        assert_eq!(controller.normalize(15.0, 5, 50), 10, "then doubling");
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut controller = HpaController::new(1, 100);
        assert_eq!(controller.normalize(0.0, 8, 8), 8);
        assert_eq!(controller.normalize(15.0, 8, 1), 8);
        assert_eq!(controller.normalize(299.0, 8, 1), 8);
        assert_eq!(controller.normalize(300.0, 8, 1), 1);
    }
}
