//! What the autoscaler and the status need to know about a resource's pods, read off
//! the pods themselves: which are ready, which are still starting and for how long,
//! which the scheduler cannot place (and why), and how long recent pods took to start.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodCondition};

use crate::status::Unschedulable;
use matte_policy::stats::median;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodCensus {
    pub ready: u32,
    /// Age in seconds of each pod that is scheduled (or may still be) but not Ready.
    pub starting_ages_seconds: Vec<f64>,
    pub unschedulable: Unschedulable,
    /// Median seconds from scheduled to Ready over the ready pods; `None` without any.
    pub median_startup_seconds: Option<f64>,
}

/// Counts `pods` as of `now`; terminating pods are leaving and count for nothing.
pub fn census(pods: &[Pod], now: Timestamp) -> PodCensus {
    let mut census = PodCensus::default();
    let mut startups = Vec::new();
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
        let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
        let ready = find("Ready").filter(|c| c.status == "True");
        let scheduled = find("PodScheduled");
        if let Some(ready) = ready {
            census.ready += 1;
            if let (Some(from), Some(to)) = (scheduled.and_then(transition), transition(ready)) {
                startups.push(seconds_between(from, to));
            }
        } else if let Some(unschedulable) = scheduled.filter(|c| c.reason.as_deref() == Some("Unschedulable")) {
            census.unschedulable.pods += 1;
            if census.unschedulable.message.is_empty() {
                census.unschedulable.message = unschedulable.message.clone().unwrap_or_default();
            }
        } else {
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            census.starting_ages_seconds.push(seconds_between(created, now));
        }
    }
    census.median_startup_seconds = median(startups);
    census
}

fn transition(condition: &PodCondition) -> Option<Timestamp> {
    condition.last_transition_time.as_ref().map(|t| t.0)
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(yaml: &str) -> Vec<Pod> {
        serde_yaml::from_str(yaml).expect("the fixture parses")
    }

    const NOW: &str = "2026-11-28T12:00:00Z";

    #[test]
    fn ready_starting_unschedulable_and_terminating_pods_are_told_apart() {
        let pods = pods(
            r#"
- metadata: {name: ready-a, creationTimestamp: "2026-11-28T11:50:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:50:01Z"}
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:51:01Z"}
- metadata: {name: ready-b, creationTimestamp: "2026-11-28T11:50:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:50:00Z"}
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:50:40Z"}
- metadata: {name: starting, creationTimestamp: "2026-11-28T11:59:30Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:59:31Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:59:31Z"}
- metadata: {name: pending, creationTimestamp: "2026-11-28T11:59:00Z"}
  status:
    conditions:
    - type: PodScheduled
      status: "False"
      reason: Unschedulable
      message: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
- metadata: {name: leaving, creationTimestamp: "2026-11-28T11:00:00Z", deletionTimestamp: "2026-11-28T11:59:59Z"}
  status:
    conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:01:00Z"}
"#,
        );
        let census = census(&pods, NOW.parse().expect("a time"));
        assert_eq!(census.ready, 2);
        assert_eq!(census.starting_ages_seconds, vec![30.0]);
        assert_eq!(census.unschedulable.pods, 1);
        assert_eq!(census.unschedulable.message, "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.");
        // 60 s and 40 s: the median of two is their mean.
        assert_eq!(census.median_startup_seconds, Some(50.0));
    }

    #[test]
    fn no_pods_no_numbers() {
        assert_eq!(census(&[], NOW.parse().expect("a time")), PodCensus::default());
    }
}
