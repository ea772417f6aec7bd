//! This operator's policy, called exactly as the reconciler calls it.

use super::{ClusterView, Scaler};
use crate::autoscaler::policy::{self, Memory, Observation, PolicySpec, QueueMetrics};
use crate::simulate::settings::Settings;

/// How often the reconciler re-evaluates a resource.
const RECONCILE_INTERVAL_SECONDS: f64 = 5.0;

pub struct Matte {
    spec: PolicySpec,
    memory: Memory,
}

impl Matte {
    pub fn new(settings: &Settings) -> Self {
        let spec = PolicySpec {
            // The simulated clients wait Retry-After plus up to half again: 1.25x on average.
            retry_after_seconds: 1.25 * settings.retry_after_seconds,
            ..PolicySpec::new(settings.min_replicas, settings.max_replicas, settings.target_queue_latency_seconds)
        };
        Self { spec, memory: Memory::default() }
    }
}

impl Scaler for Matte {
    fn interval_seconds(&self) -> f64 {
        RECONCILE_INTERVAL_SECONDS
    }

    fn initial_replicas(&self) -> u32 {
        self.spec.min_replicas
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        let queue = view.metrics.map(|snapshot| QueueMetrics {
            age_seconds: view.now - snapshot.sampled_at,
            queue_depth: snapshot.gauges.queue_depth,
            oldest_queued_age_seconds: snapshot.gauges.oldest_queued_age_seconds,
            queue_wait_p95_seconds: snapshot.queue_wait_p95_seconds,
            images_per_pod_second: snapshot.images_per_pod_second,
            sustained_admitted_per_second: snapshot.sustained_admitted_per_second,
            rejected_per_second: snapshot.rejected_per_second,
            rejected_recently: snapshot.rejected_recently,
        });
        let observation = Observation {
            now_seconds: view.now,
            replicas: view.replicas,
            ready_pods: view.ready,
            starting_pod_ages_seconds: view.starting_ages.clone(),
            unschedulable_pods: view.unschedulable,
            measured_startup_seconds: view.measured_startup,
            queue,
        };
        let decision = policy::decide(&self.spec, &observation, &self.memory);
        self.memory = decision.memory;
        decision.replicas
    }
}
