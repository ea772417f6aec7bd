//! The resource's status, computed from what one reconcile pass observed: a pure
//! function, so that every condition and its transitions are unit-tested.
//!
//! Conditions follow the Kubernetes conventions: `lastTransitionTime` moves only when a
//! condition's status changes, each carries the generation it was computed for, and an
//! unchanged status is not written at all.

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::autoscaler::policy::{Decision, Reason};
use crate::crd::BackgroundRemovalServiceStatus;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SCALING_LIMITED: &str = "ScalingLimited";
/// Set while autoscaling is on: whether the queue metrics could be used.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";

/// The conditions the operator sets: any other in the status (written by whoever may
/// write the status subresource) is dropped, not applied again pass after pass, nor made
/// a metric series of its own.
pub const OWN_CONDITIONS: [&str; 5] = [READY, PROGRESSING, DEGRADED, SCALING_LIMITED, METRICS_AVAILABLE];

/// Pods the scheduler could not place, with its own words for the first of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unschedulable {
    pub pods: i32,
    /// e.g. "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pub message: String,
}

/// Pods that will not become ready by themselves (their images cannot be pulled, they
/// crash, their init container fails, or they take far longer than a start-up should),
/// with the kubelet's own words for the first of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailingPods {
    pub pods: i32,
    /// One word for the first: `ImagePullFailed`, `CrashLoopBackOff`, `OOMKilled`,
    /// `ContainerFailed`, `InitContainerFailed`, `ContainerCreateFailed`, `PodFailed`,
    /// `VolumeUnavailable`, `VolumeMountFailed`, `StartupTooSlow`, `RestartingRepeatedly`.
    pub reason: String,
    /// e.g. "pod portraits-7d9c-x2x4q, container inference: CrashLoopBackOff, last exit
    /// OOMKilled (code 137)".
    pub message: String,
}

/// Everything one pass learned that the status reports.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    /// The pods' label selector (for the scale subresource).
    pub selector: String,
    /// Spec problems found by validation; nothing was applied when there are any.
    pub problems: &'a [String],
    /// What validation advises against in a spec that builds.
    pub advice: &'a [String],
    /// Why applying the desired objects failed, if it did.
    pub apply_error: Option<String>,
    pub desired_replicas: i32,
    pub deployment: Option<&'a DeploymentStatus>,
    pub unschedulable: Unschedulable,
    pub failing: FailingPods,
    /// Pods not failing now that keep restarting.
    pub restarting: FailingPods,
    /// The autoscaler's decision, when autoscaling is on and it ran.
    pub decision: Option<&'a Decision>,
    /// The gateway's Deployment, when the gateway is on (`Some(None)` before it exists).
    pub gateway: Option<Option<&'a DeploymentStatus>>,
    /// The gateway's pods that will not become ready by themselves.
    pub gateway_failing: FailingPods,
    /// The gateway's pods not failing now that keep restarting.
    pub gateway_restarting: FailingPods,
}

/// Why a Deployment's pods do not run, if they do not: the apiserver refuses them
/// (copied by the Deployment controller from its ReplicaSet: a missing PriorityClass,
/// an exhausted quota, an admission webhook's refusal), some fail, its rollout stalled,
/// or some keep restarting though they come back; a reason and a message.
fn deployment_problem(
    status: &DeploymentStatus,
    failing: &FailingPods,
    restarting: &FailingPods,
) -> Option<(String, String)> {
    if let Some(refused) = pods_refused(status) {
        return Some((refused.reason.clone().unwrap_or_else(|| "FailedCreate".into()), refused_message(refused)));
    }
    let replicas = |pods: &FailingPods| status.replicas.unwrap_or(0).max(pods.pods);
    if failing.pods > 0 {
        let message = format!("{} of {} pod(s) failing; {}", failing.pods, replicas(failing), failing.message);
        return Some((failing.reason.clone(), message));
    }
    if let Some(stalled) = rollout_stalled(status) {
        return Some(("ProgressDeadlineExceeded".into(), stalled_message(stalled)));
    }
    (restarting.pods > 0).then(|| {
        let message =
            format!("{} of {} pod(s) keep restarting; {}", restarting.pods, replicas(restarting), restarting.message);
        (restarting.reason.clone(), message)
    })
}

fn stalled_message(condition: &DeploymentCondition) -> String {
    condition.message.clone().unwrap_or_else(|| "the rollout stalled".into())
}

fn rollout_stalled(status: &DeploymentStatus) -> Option<&DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
}

fn pods_refused(status: &DeploymentStatus) -> Option<&DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
}

fn refused_message(condition: &DeploymentCondition) -> String {
    format!("pods cannot be created: {}", condition.message.as_deref().unwrap_or("the ReplicaSet reports no reason"))
}

/// The new status, keeping from `previous` what has not changed.
pub fn compute(
    previous: &BackgroundRemovalServiceStatus,
    observed: &Observed,
    now: &Time,
) -> BackgroundRemovalServiceStatus {
    let deployment = observed.deployment.cloned().unwrap_or_default();
    let replicas = deployment.replicas.unwrap_or(0);
    let ready = deployment.ready_replicas.unwrap_or(0);
    let updated = deployment.updated_replicas.unwrap_or(0);
    let desired = observed.desired_replicas;
    let stalled = rollout_stalled(&deployment);
    let refused = pods_refused(&deployment);
    let failing = &observed.failing;
    let gateway_ready = observed.gateway.map(|status| status.and_then(|s| s.ready_replicas).unwrap_or(0));

    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|condition| OWN_CONDITIONS.contains(&condition.type_.as_str()))
        .cloned()
        .collect();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        set_condition(&mut conditions, type_, status, reason, message, observed.generation, now);
    };

    if !observed.problems.is_empty() {
        let message = format!("invalid spec: {}", observed.problems.join("; "));
        set(READY, false, "InvalidSpec", message.clone());
        set(PROGRESSING, false, "InvalidSpec", message.clone());
        set(DEGRADED, true, "InvalidSpec", message);
    } else {
        let ready_message = format!("{ready}/{desired} pods ready");
        match () {
            // Clients call the gateway: without one ready, they reach the pods directly
            // (`desired::Front`), with no queue to wait in when every pod is full.
            _ if gateway_ready == Some(0) => set(
                READY,
                false,
                "GatewayNotReady",
                format!(
                    "no gateway pod is ready, so clients reach the inference pods directly, refused when they are full; {ready_message}"
                ),
            ),
            _ if desired == 0 && gateway_ready.is_some() => set(
                READY,
                true,
                "ScaledToZero",
                "no pods run right now; the gateway holds requests while the first one starts".into(),
            ),
            _ if desired == 0 => set(READY, false, "ScaledToZero", "no pods are wanted right now".into()),
            _ if ready >= desired => set(READY, true, "AllPodsReady", ready_message),
            _ => set(READY, false, "PodsNotReady", ready_message),
        }
        let settled = replicas == desired && updated == desired && ready == desired;
        match (stalled, settled) {
            (Some(stalled), _) => set(PROGRESSING, false, "ProgressDeadlineExceeded", stalled_message(stalled)),
            (None, true) => set(PROGRESSING, false, "Complete", format!("{desired} pods up to date and ready")),
            (None, false) => set(
                PROGRESSING,
                true,
                "Reconciling",
                format!("{updated}/{desired} pods up to date, {ready} ready, {replicas} running or starting"),
            ),
        }
        // Without a gateway pod ready clients reach the pods without its queue, refused
        // whenever the pods are full: the gateway's problem first then, and after the
        // pods' own otherwise.
        let gateway = observed.gateway.flatten().and_then(|status| {
            let (reason, message) =
                deployment_problem(status, &observed.gateway_failing, &observed.gateway_restarting)?;
            Some((format!("Gateway{reason}"), format!("the gateway: {message}")))
        });
        let (gateway_first, gateway_last) = if gateway_ready == Some(0) { (gateway, None) } else { (None, gateway) };
        let problem = observed
            .apply_error
            .clone()
            .map(|error| ("ApplyFailed".to_owned(), error))
            .or(gateway_first)
            .or_else(|| deployment_problem(&deployment, failing, &observed.restarting))
            .or(gateway_last);
        match problem {
            Some((reason, message)) => set(DEGRADED, true, &reason, message),
            None => set(DEGRADED, false, "AsExpected", "no problem found".into()),
        }
    }

    let limited = &observed.unschedulable;
    let at_max = observed.decision.filter(|d| d.reason == Reason::AtMaxReplicas);
    match (limited.pods > 0, refused, at_max) {
        (true, _, _) => set(
            SCALING_LIMITED,
            true,
            "InsufficientResources",
            format!("{} pod(s) cannot be scheduled: {}", limited.pods, limited.message),
        ),
        (false, Some(refused), _) => {
            set(SCALING_LIMITED, true, refused.reason.as_deref().unwrap_or("FailedCreate"), refused_message(refused))
        }
        (false, None, Some(decision)) => set(SCALING_LIMITED, true, "AtMaxReplicas", decision.message.clone()),
        (false, None, None) => set(SCALING_LIMITED, false, "AsExpected", "every wanted pod can be scheduled".into()),
    }

    if let Some(decision) = observed.decision {
        match decision.reason {
            Reason::MetricsMissing => set(METRICS_AVAILABLE, false, "MetricsMissing", decision.message.clone()),
            Reason::MetricsStale => set(METRICS_AVAILABLE, false, "MetricsStale", decision.message.clone()),
            _ => set(METRICS_AVAILABLE, true, "QueueMetricsRead", "the pods' queue metrics are current".into()),
        }
    }

    let queue = observed.decision.and_then(|d| d.observation.queue.as_ref());
    let scaled = desired != previous.desired_replicas || previous.last_scale_time.is_none();
    BackgroundRemovalServiceStatus {
        replicas,
        ready_replicas: ready,
        desired_replicas: desired,
        unschedulable_replicas: observed.unschedulable.pods,
        failing_replicas: observed.failing.pods,
        gateway_ready_replicas: gateway_ready,
        selector: Some(observed.selector.clone()),
        observed_generation: observed.generation,
        conditions,
        observed_queue_latency_seconds: queue.and_then(|q| q.queue_wait_p95_seconds).map(round_millis),
        observed_images_per_second: queue.map(|q| round_millis(q.sustained_admitted_per_second)),
        last_scale_time: if scaled { Some(now.clone()) } else { previous.last_scale_time.clone() },
        last_scale_reason: match (scaled, observed.decision) {
            (true, Some(decision)) => Some(decision.message.clone()),
            (true, None) => Some(format!("{desired} replicas from the spec")),
            (false, _) => previous.last_scale_reason.clone(),
        },
        autoscaler_memory: match observed.decision {
            Some(decision) => Some(decision.memory.to_write_over(previous.autoscaler_memory.as_ref())),
            None => previous.autoscaler_memory.clone(),
        },
        advice: observed.advice.to_vec(),
    }
}

/// `previous` with `Degraded` set to `ReconcileFailed` and `message`: a pass the apiserver
/// refused before anything could be observed; the other conditions are left as they were.
pub fn refused(
    previous: &BackgroundRemovalServiceStatus,
    generation: Option<i64>,
    message: String,
    now: &Time,
) -> BackgroundRemovalServiceStatus {
    let mut status = previous.clone();
    set_condition(&mut status.conditions, DEGRADED, true, "ReconcileFailed", message, generation, now);
    status
}

/// What to announce when `Degraded` changes between two statuses: `Some(true)` when it
/// became True or its reason changed (a new problem), `Some(false)` when it cleared, `None`
/// otherwise: one Event per problem, however often the pass runs or its message changes.
pub fn degraded_change(
    previous: &BackgroundRemovalServiceStatus,
    next: &BackgroundRemovalServiceStatus,
) -> Option<bool> {
    let before = condition(previous, DEGRADED).filter(|c| c.status == "True");
    let after = condition(next, DEGRADED).filter(|c| c.status == "True");
    match (before, after) {
        (None, Some(_)) => Some(true),
        (Some(before), Some(after)) if before.reason != after.reason => Some(true),
        (Some(_), None) => Some(false),
        _ => None,
    }
}

/// Sets one condition; its transition time moves only when its status does.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Metric values change in their last digits every pass; three decimals are plenty
/// for people and keep the status from being rewritten for noise.
fn round_millis(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The condition of `type_`, if set.
pub fn condition<'a>(status: &'a BackgroundRemovalServiceStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("a valid time"))
    }

    fn deployment(replicas: i32, updated: i32, ready: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        }
    }

    fn observed<'a>(desired: i32, deployment: Option<&'a DeploymentStatus>) -> Observed<'a> {
        Observed {
            generation: Some(3),
            selector: "matte.dev/service=x".into(),
            desired_replicas: desired,
            deployment,
            ..Observed::default()
        }
    }

    fn state(status: &BackgroundRemovalServiceStatus, type_: &str) -> (String, String) {
        let c = condition(status, type_).unwrap_or_else(|| panic!("{type_} is set"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_rollout_in_progress_then_complete() {
        let starting = deployment(3, 3, 1);
        let first = compute(&Default::default(), &observed(3, Some(&starting)), &time(0));
        assert_eq!(state(&first, READY), ("False".into(), "PodsNotReady".into()));
        assert_eq!(state(&first, PROGRESSING), ("True".into(), "Reconciling".into()));
        assert_eq!(state(&first, DEGRADED), ("False".into(), "AsExpected".into()));
        assert_eq!((first.replicas, first.ready_replicas, first.desired_replicas), (3, 1, 3));
        assert_eq!(first.selector.as_deref(), Some("matte.dev/service=x"));
        assert_eq!(condition(&first, READY).and_then(|c| c.observed_generation), Some(3));

        let done = deployment(3, 3, 3);
        let second = compute(&first, &observed(3, Some(&done)), &time(30));
        assert_eq!(state(&second, READY), ("True".into(), "AllPodsReady".into()));
        assert_eq!(state(&second, PROGRESSING), ("False".into(), "Complete".into()));
        assert_eq!(condition(&second, READY).map(|c| c.last_transition_time.clone()), Some(time(30)));
    }

    #[test]
    fn conditions_the_operator_does_not_set_are_dropped() {
        let ready = deployment(2, 2, 2);
        let first = compute(&Default::default(), &observed(2, Some(&ready)), &time(0));
        let mut written = first.clone();
        for index in 0..100 {
            let mut foreign = written.conditions[0].clone();
            foreign.type_ = format!("Foo{index}");
            written.conditions.push(foreign);
        }
        let next = compute(&written, &observed(2, Some(&ready)), &time(30));
        assert_eq!(next.conditions, first.conditions);
    }

    #[test]
    fn transition_times_move_only_when_a_status_changes() {
        let ready = deployment(2, 2, 2);
        let first = compute(&Default::default(), &observed(2, Some(&ready)), &time(0));
        let again = compute(&first, &observed(2, Some(&ready)), &time(60));
        assert_eq!(first, again, "nothing changed, so nothing is rewritten");
        let degraded_time =
            |s: &BackgroundRemovalServiceStatus| condition(s, DEGRADED).map(|c| c.last_transition_time.clone());
        let failing = Observed { apply_error: Some("the apiserver said no".into()), ..observed(2, Some(&ready)) };
        let broken = compute(&again, &failing, &time(90));
        assert_eq!(degraded_time(&broken), Some(time(90)));
        assert_eq!(condition(&broken, READY).map(|c| c.last_transition_time.clone()), Some(time(0)));
    }

    #[test]
    fn an_invalid_spec_is_degraded_and_not_ready_with_every_problem() {
        let problems = vec!["spec.image is not set".to_owned(), "spec.model.std is zero".to_owned()];
        let status = compute(&Default::default(), &Observed { problems: &problems, ..observed(1, None) }, &time(0));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "InvalidSpec".into()));
        assert_eq!(state(&status, READY), ("False".into(), "InvalidSpec".into()));
        let message = &condition(&status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("spec.image") && message.contains("spec.model.std"), "{message}");
    }

    #[test]
    fn advice_stays_in_the_status_while_the_spec_stands_and_goes_with_it() {
        let ready = deployment(2, 2, 2);
        let advice = vec!["spec.queue.capacity (6) holds fewer than two batches".to_owned()];
        let advised =
            compute(&Default::default(), &Observed { advice: &advice, ..observed(2, Some(&ready)) }, &time(0));
        assert_eq!(advised.advice, advice);
        assert_eq!(state(&advised, READY), ("True".into(), "AllPodsReady".into()), "advice degrades nothing");
        let heeded = compute(&advised, &observed(2, Some(&ready)), &time(60));
        assert!(heeded.advice.is_empty(), "{heeded:?}");
    }

    #[test]
    fn unschedulable_pods_limit_scaling_in_the_schedulers_words() {
        let partial = deployment(3, 3, 2);
        let message = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.";
        let limited = Observed {
            unschedulable: Unschedulable { pods: 1, message: message.into() },
            ..observed(3, Some(&partial))
        };
        let status = compute(&Default::default(), &limited, &time(0));
        assert_eq!(state(&status, SCALING_LIMITED), ("True".into(), "InsufficientResources".into()));
        assert!(condition(&status, SCALING_LIMITED).is_some_and(|c| c.message.contains("Insufficient nvidia.com/gpu")));
        let freed = compute(&status, &observed(3, Some(&deployment(3, 3, 3))), &time(20));
        assert_eq!(state(&freed, SCALING_LIMITED), ("False".into(), "AsExpected".into()));
    }

    /// A Deployment none of whose pods the apiserver admits, as the Deployment controller
    /// copies it from its ReplicaSet.
    fn refused_pods(message: &str) -> DeploymentStatus {
        DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(message.into()),
                ..DeploymentCondition::default()
            }]),
            ..deployment(0, 0, 0)
        }
    }

    #[test]
    fn a_stalled_rollout_is_degraded() {
        let mut stalled = deployment(2, 1, 1);
        stalled.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"x-1\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        let status = compute(&Default::default(), &observed(2, Some(&stalled)), &time(0));
        assert_eq!(state(&status, PROGRESSING), ("False".into(), "ProgressDeadlineExceeded".into()));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "ProgressDeadlineExceeded".into()));
    }

    #[test]
    fn missing_metrics_hold_and_raise_a_condition() {
        use crate::autoscaler::policy::{Memory, Observation, PolicySpec, decide};
        let observation = Observation { replicas: 2, ready_pods: 2, ..Observation::default() };
        let decision = decide(&PolicySpec::new(1, 4, 30.0), &observation, &Memory::default());
        let ready = deployment(2, 2, 2);
        let status = compute(
            &Default::default(),
            &Observed { decision: Some(&decision), ..observed(2, Some(&ready)) },
            &time(0),
        );
        assert_eq!(state(&status, METRICS_AVAILABLE), ("False".into(), "MetricsMissing".into()));
        assert_eq!(state(&status, READY), ("True".into(), "AllPodsReady".into()));
        let without_autoscaling = compute(&Default::default(), &observed(2, Some(&ready)), &time(0));
        assert!(condition(&without_autoscaling, METRICS_AVAILABLE).is_none());
    }

    #[test]
    fn zero_replicas_is_not_ready_and_says_why() {
        let status = compute(&Default::default(), &observed(0, Some(&deployment(0, 0, 0))), &time(0));
        assert_eq!(state(&status, READY), ("False".into(), "ScaledToZero".into()));
        assert_eq!(state(&status, PROGRESSING), ("False".into(), "Complete".into()));
    }

    #[test]
    fn with_the_gateway_a_service_is_ready_only_when_its_gateway_is_and_ready_at_zero() {
        let pods = deployment(2, 2, 2);
        let gateway = deployment(2, 2, 1);
        let served = Observed { gateway: Some(Some(&gateway)), ..observed(2, Some(&pods)) };
        let status = compute(&Default::default(), &served, &time(0));
        assert_eq!(state(&status, READY), ("True".into(), "AllPodsReady".into()));
        assert_eq!(status.gateway_ready_replicas, Some(1));

        let down = deployment(2, 2, 0);
        for gateway in [Some(&down), None] {
            let unreachable = Observed { gateway: Some(gateway), ..observed(2, Some(&pods)) };
            let status = compute(&Default::default(), &unreachable, &time(0));
            assert_eq!(state(&status, READY), ("False".into(), "GatewayNotReady".into()));
            assert_eq!(status.gateway_ready_replicas, Some(0));
            let message = &condition(&status, READY).expect("Ready is set").message;
            assert!(message.contains("clients reach the inference pods directly"), "{message}");
        }

        let none = deployment(0, 0, 0);
        let idle = Observed { gateway: Some(Some(&gateway)), ..observed(0, Some(&none)) };
        let status = compute(&Default::default(), &idle, &time(0));
        assert_eq!(state(&status, READY), ("True".into(), "ScaledToZero".into()), "the gateway wakes it");
        let without = compute(&Default::default(), &observed(2, Some(&pods)), &time(0));
        assert_eq!(without.gateway_ready_replicas, None);
    }

    #[test]
    fn a_gateway_that_cannot_run_degrades_the_service_first_when_none_of_it_is_ready() {
        let pods = deployment(2, 2, 2);
        let pulling = FailingPods {
            pods: 2,
            reason: "ImagePullFailed".into(),
            message: "pod x-gateway-1, container gateway: ImagePullBackOff".into(),
        };
        let down = deployment(2, 2, 0);
        let unreachable =
            Observed { gateway: Some(Some(&down)), gateway_failing: pulling.clone(), ..observed(2, Some(&pods)) };
        let status = compute(&Default::default(), &unreachable, &time(0));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "GatewayImagePullFailed".into()));
        let message = &condition(&status, DEGRADED).unwrap().message;
        assert!(message.starts_with("the gateway: 2 of 2 pod(s) failing; pod x-gateway-1"), "{message}");

        // Refused by a quota, it has no pod to fail.
        let refused = refused_pods("exceeded quota: compute");
        let status = compute(
            &Default::default(),
            &Observed { gateway: Some(Some(&refused)), ..observed(2, Some(&pods)) },
            &time(0),
        );
        assert_eq!(state(&status, DEGRADED), ("True".into(), "GatewayFailedCreate".into()));

        // With a gateway pod still serving, the pods' own failure comes first.
        let serving = deployment(2, 2, 1);
        let crashing = FailingPods { pods: 1, reason: "CrashLoopBackOff".into(), message: "pod x-0".into() };
        let both = Observed {
            gateway: Some(Some(&serving)),
            gateway_failing: pulling,
            failing: crashing,
            ..observed(2, Some(&pods))
        };
        assert_eq!(
            state(&compute(&Default::default(), &both, &time(0)), DEGRADED),
            ("True".into(), "CrashLoopBackOff".into())
        );
        let gateway_only = Observed { failing: FailingPods::default(), ..both };
        let status = compute(&Default::default(), &gateway_only, &time(0));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "GatewayImagePullFailed".into()));
        assert_eq!(state(&status, READY), ("True".into(), "AllPodsReady".into()), "still served");
    }

    #[test]
    fn the_scale_time_and_reason_move_only_with_the_replicas() {
        let ready = deployment(2, 2, 2);
        let first = compute(&Default::default(), &observed(2, Some(&ready)), &time(0));
        assert_eq!(first.last_scale_reason.as_deref(), Some("2 replicas from the spec"));
        let same = compute(&first, &observed(2, Some(&ready)), &time(50));
        assert_eq!(same.last_scale_time, Some(time(0)));
        let scaled = compute(&same, &observed(4, Some(&ready)), &time(60));
        assert_eq!(scaled.last_scale_time, Some(time(60)));
        assert_eq!(scaled.last_scale_reason.as_deref(), Some("4 replicas from the spec"));
    }

    #[test]
    fn pods_the_apiserver_refuses_are_degraded_and_limit_scaling() {
        let refused =
            refused_pods("pods \"portraits-5d8f7c9b4-\" is forbidden: no PriorityClass with name gpu-urgent was found");
        let status = compute(&Default::default(), &observed(2, Some(&refused)), &time(0));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "FailedCreate".into()));
        assert_eq!(state(&status, SCALING_LIMITED), ("True".into(), "FailedCreate".into()));
        assert_eq!(state(&status, READY), ("False".into(), "PodsNotReady".into()));
        let message = condition(&status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("no PriorityClass with name gpu-urgent"), "{message}");

        let fixed = compute(&status, &observed(2, Some(&deployment(2, 2, 2))), &time(30));
        assert_eq!(state(&fixed, DEGRADED), ("False".into(), "AsExpected".into()));
        assert_eq!(state(&fixed, SCALING_LIMITED), ("False".into(), "AsExpected".into()));
    }

    #[test]
    fn failing_pods_are_degraded_with_their_own_reason() {
        let running = deployment(3, 3, 1);
        let failing = Observed {
            failing: FailingPods {
                pods: 2,
                reason: "OOMKilled".into(),
                message: "pod x-1, container inference: CrashLoopBackOff, last exit OOMKilled (exit code 137)".into(),
            },
            ..observed(3, Some(&running))
        };
        let status = compute(&Default::default(), &failing, &time(0));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "OOMKilled".into()));
        let message = condition(&status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert_eq!(
            message,
            "2 of 3 pod(s) failing; pod x-1, container inference: CrashLoopBackOff, last exit OOMKilled (exit code 137)"
        );
        assert_eq!(state(&status, PROGRESSING), ("True".into(), "Reconciling".into()));

        let applying = Observed { apply_error: Some("the apiserver said no".into()), ..failing };
        let status = compute(&status, &applying, &time(10));
        assert_eq!(
            state(&status, DEGRADED),
            ("True".into(), "ApplyFailed".into()),
            "what the operator did wrong first"
        );
    }

    #[test]
    fn pods_that_keep_restarting_are_degraded_though_ready_and_after_failing_ones() {
        let running = deployment(3, 3, 3);
        let restarting = FailingPods {
            pods: 1,
            reason: "RestartingRepeatedly".into(),
            message:
                "pod x-1, container inference: restarted 4 times in 3 h, the last 12 min ago: OOMKilled (exit code 137)"
                    .into(),
        };
        let flapping = Observed { restarting: restarting.clone(), ..observed(3, Some(&running)) };
        let status = compute(&Default::default(), &flapping, &time(0));
        assert_eq!(state(&status, READY), ("True".into(), "AllPodsReady".into()));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "RestartingRepeatedly".into()));
        let message = condition(&status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert_eq!(message, format!("1 of 3 pod(s) keep restarting; {}", restarting.message));
        assert_eq!(status.failing_replicas, 0, "a pod that comes back is not failing");

        let crashing = FailingPods { pods: 1, reason: "CrashLoopBackOff".into(), message: "pod x-2, …".into() };
        let both = Observed { failing: crashing, ..flapping };
        let status = compute(&status, &both, &time(10));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "CrashLoopBackOff".into()), "the pod down first");

        let gateway = deployment(2, 2, 2);
        let gateway_flapping =
            Observed { gateway: Some(Some(&gateway)), gateway_restarting: restarting, ..observed(3, Some(&running)) };
        let status = compute(&status, &gateway_flapping, &time(20));
        assert_eq!(state(&status, DEGRADED), ("True".into(), "GatewayRestartingRepeatedly".into()));
    }

    #[test]
    fn a_refused_pass_is_degraded_once_and_keeps_the_rest() {
        let ready = compute(&Default::default(), &observed(2, Some(&deployment(2, 2, 2))), &time(0));
        let message = "cannot list the pods of BackgroundRemovalService shop/x: forbidden".to_owned();
        let stuck = refused(&ready, Some(4), message.clone(), &time(10));
        assert_eq!(state(&stuck, DEGRADED), ("True".into(), "ReconcileFailed".into()));
        assert_eq!(
            condition(&stuck, DEGRADED).map(|c| (c.message.clone(), c.observed_generation)),
            Some((message.clone(), Some(4)))
        );
        assert_eq!(condition(&stuck, READY), condition(&ready, READY));
        assert_eq!(degraded_change(&ready, &stuck), Some(true));
        let again = refused(&stuck, Some(4), message, &time(20));
        assert_eq!(again, stuck, "the same refusal writes nothing");
        assert_eq!(degraded_change(&stuck, &again), None, "and announces nothing");
    }

    #[test]
    fn degraded_is_announced_per_problem_not_per_pass() {
        let fine = compute(&Default::default(), &observed(2, Some(&deployment(2, 2, 2))), &time(0));
        let one_ready = deployment(2, 2, 1);
        let failing = |reason: &str, message: &str| Observed {
            failing: FailingPods { pods: 1, reason: reason.into(), message: message.into() },
            ..observed(2, Some(&one_ready))
        };
        let crashing = compute(&fine, &failing("CrashLoopBackOff", "back-off 10s"), &time(10));
        assert_eq!(degraded_change(&fine, &crashing), Some(true));
        let still = compute(&crashing, &failing("CrashLoopBackOff", "back-off 20s"), &time(20));
        assert_eq!(degraded_change(&crashing, &still), None, "a new message is no new problem");
        let oom = compute(&still, &failing("OOMKilled", "OOMKilled"), &time(30));
        assert_eq!(degraded_change(&still, &oom), Some(true));
        let healed = compute(&oom, &observed(2, Some(&deployment(2, 2, 2))), &time(40));
        assert_eq!(degraded_change(&oom, &healed), Some(false));
    }
}
