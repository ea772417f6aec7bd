//! The decide stage: how many inference pods to ask for. From the spec alone when
//! autoscaling is off; otherwise from the policy (`matte_policy`), given what `observe`
//! found and what the policy remembers. Pure, so that what reaches the policy is tested.

use crate::autoscaler::policy::{self, Decision, Memory, Observation, PolicySpec};
use crate::autoscaler::prometheus::Windows;
use crate::autoscaler::times::unix_seconds;
use crate::crd::BackgroundRemovalServiceSpec;

use super::observe::Current;

/// The replicas to apply, and the policy's decision behind them when it made one.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub replicas: i32,
    /// `None` when autoscaling is off: `spec.replicas` decided.
    pub decision: Option<Decision>,
}

/// The replicas for `spec`, the autoscaler seeing `current` through `windows` and
/// remembering `memory`.
pub fn decide(spec: &BackgroundRemovalServiceSpec, current: &Current, memory: &Memory, windows: &Windows) -> Scale {
    if !spec.autoscaling.enabled {
        return Scale { replicas: spec.replicas.unwrap_or(1), decision: None };
    }
    let census = &current.census;
    let observation = Observation {
        now_seconds: unix_seconds(current.read_at),
        replicas: u32::try_from(current.replicas().unwrap_or(0)).unwrap_or(0),
        ready_pods: census.ready,
        starting_pod_ages_seconds: census.starting_ages_seconds.clone(),
        unschedulable_pods: u32::try_from(census.unschedulable.pods).unwrap_or(0),
        ready_pod_startups: census.ready_startups.clone(),
        queue: current.queue.clone(),
    };
    let decision = policy::decide(&policy_spec(spec, windows), &observation, memory);
    Scale { replicas: i32::try_from(decision.replicas).unwrap_or(i32::MAX), decision: Some(decision) }
}

/// The policy's settings from the resource's `autoscaling` and whether its gateway is
/// on, and the windows its metrics are read through.
pub fn policy_spec(spec: &BackgroundRemovalServiceSpec, windows: &Windows) -> PolicySpec {
    let autoscaling = &spec.autoscaling;
    let count = |value: i32| u32::try_from(value).unwrap_or(0);
    let defaults = PolicySpec::new(
        count(autoscaling.min_replicas),
        count(autoscaling.max_replicas),
        autoscaling.target_queue_latency_seconds,
    );
    // Validation has refused a percentage out of range before the policy runs.
    let planned_utilization_percent =
        autoscaling.planned_utilization_percent.and_then(|percent| u16::try_from(percent).ok());
    PolicySpec {
        scale_down_delay_seconds: autoscaling.scale_down_delay_seconds.map(f64::from),
        confirm_seconds: windows.confirm().as_secs_f64(),
        inflow_window_seconds: windows.inflow().as_secs_f64(),
        behind_gateway: spec.gateway.enabled,
        ..defaults.with_planned_utilization_percent(planned_utilization_percent)
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};

    use super::*;
    use crate::autoscaler::policy::{QueueMetrics, Reason, Startup};
    use crate::desired::fixtures::resource;

    fn windows() -> Windows {
        Windows::for_scrape_interval(std::time::Duration::from_secs(5))
    }

    fn running(replicas: i32) -> Current {
        let deployment = Deployment {
            spec: Some(DeploymentSpec { replicas: Some(replicas), ..DeploymentSpec::default() }),
            ..Deployment::default()
        };
        Current {
            deployment: Some(deployment),
            read_at: Timestamp::from_second(1_800_000_000).expect("a valid time"),
            ..Current::default()
        }
    }

    #[test]
    fn without_autoscaling_the_spec_decides_and_the_policy_is_not_asked() {
        let mut spec = resource("minimal.yaml").spec;
        spec.autoscaling.enabled = false;
        spec.replicas = Some(4);
        assert_eq!(decide(&spec, &running(2), &Memory::default(), &windows()), Scale { replicas: 4, decision: None });
        spec.replicas = None;
        assert_eq!(decide(&spec, &running(2), &Memory::default(), &windows()).replicas, 1);
    }

    #[test]
    fn without_metrics_the_policy_keeps_what_it_remembers_or_what_runs() {
        let mut spec = resource("minimal.yaml").spec;
        spec.autoscaling.min_replicas = 0;
        spec.autoscaling.max_replicas = 5;
        spec.replicas = Some(4); // ignored while autoscaling is on

        let scale = decide(&spec, &running(2), &Memory::default(), &windows());
        let decision = scale.decision.expect("the policy decided");
        assert_eq!((scale.replicas, decision.reason), (2, Reason::MetricsMissing));
        assert_eq!(decision.observation.replicas, 2);
        assert_eq!(decision.observation.now_seconds, 1_800_000_000.0);

        let memory = Memory { replicas: Some(3), ..Memory::default() };
        assert_eq!(decide(&spec, &running(2), &memory, &windows()).replicas, 3);
    }

    #[test]
    fn the_census_and_the_queue_reach_the_policy() {
        let spec = resource("minimal.yaml").spec;
        let mut current = running(1);
        current.census.ready = 3;
        current.census.starting_ages_seconds = vec![12.0];
        current.census.unschedulable.pods = 2;
        current.census.ready_startups = [44.0, 40.0, 42.0]
            .into_iter()
            .enumerate()
            .map(|(pod, seconds)| Startup { ready_seconds: 1_800_000_000.0 - pod as f64, seconds, pod: None })
            .collect();
        current.queue = Some(QueueMetrics {
            age_seconds: 1.0,
            queue_depth: 3.0,
            oldest_queued_age_seconds: 0.5,
            images_per_pod_second: Some(2.0),
            ..QueueMetrics::default()
        });
        let decision = decide(&spec, &current, &Memory::default(), &windows()).decision.expect("the policy decided");
        let seen = &decision.observation;
        assert_eq!(
            (seen.ready_pods, seen.starting_pod_ages_seconds.as_slice(), seen.unschedulable_pods),
            (3, [12.0].as_slice(), 2)
        );
        assert_eq!(seen.ready_pod_startups, current.census.ready_startups);
        assert_eq!(decision.plan.as_ref().map(|plan| plan.startup_seconds), Some(42.0), "their median");
        let mut remembered = current.census.ready_startups.clone();
        remembered.reverse();
        assert_eq!(decision.memory.recent_startups, remembered, "remembered in status, oldest first");
        assert_eq!(seen.queue, current.queue);
        assert!(decision.plan.is_some(), "the metrics were used: {decision:?}");
    }

    #[test]
    fn the_policy_takes_the_bounds_target_delay_and_gateway_of_the_spec() {
        let mut resource_spec = resource("minimal.yaml").spec;
        let autoscaling = &mut resource_spec.autoscaling;
        autoscaling.min_replicas = 2;
        autoscaling.max_replicas = 7;
        autoscaling.target_queue_latency_seconds = 3.5;
        autoscaling.scale_down_delay_seconds = Some(90);
        let spec = policy_spec(&resource_spec, &windows());
        assert_eq!(
            (spec.min_replicas, spec.max_replicas, spec.target_queue_latency_seconds, spec.scale_down_delay_seconds),
            (2, 7, 3.5, Some(90.0))
        );
        let every_second = Windows::for_scrape_interval(std::time::Duration::from_secs(1));
        assert_eq!(spec.confirm_seconds, 15.0, "an arrivals window of two 5 s scrapes, and one scrape more");
        assert_eq!(policy_spec(&resource_spec, &every_second).confirm_seconds, 3.0);
        assert_eq!(spec.inflow_window_seconds, 20.0, "the rate window: four 5 s scrapes");
        assert_eq!(policy_spec(&resource_spec, &every_second).inflow_window_seconds, 10.0, "at least 10 s");
        assert_eq!(spec.planned_utilization, 0.75, "the policy's default when the spec says nothing");
        assert!(spec.behind_gateway, "the gateway is on by default");
        resource_spec.autoscaling.planned_utilization_percent = Some(60);
        assert_eq!(policy_spec(&resource_spec, &windows()).planned_utilization, 0.6);
        resource_spec.autoscaling.min_replicas = -1;
        assert_eq!(policy_spec(&resource_spec, &windows()).min_replicas, 0);
        resource_spec.gateway.enabled = false;
        assert!(!policy_spec(&resource_spec, &windows()).behind_gateway);
    }
}
