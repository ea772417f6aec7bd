//! Pods that wait for a volume the kubelet cannot mount: a ConfigMap of a private CA
//! misspelt in `spec.model.download.caConfigMap`, a claim bound to a disk attached to
//! another node. The pod's status says only that its containers are being created, as
//! it does while a large image is pulled; the kubelet says why in a Warning Event of
//! the pod's (`FailedMount`), which the pass reads for a pod that has waited that way
//! longer than a mount takes ([`stuck_creating`], [`mount_failure`]). Without it such a
//! pod was reported only as too slow to start, 20 minutes later, its cause unnamed.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};

use crate::autoscaler::times::seconds_between;

/// How long a scheduled pod's containers may wait to be created before the kubelet's
/// Events are read for a mount that failed: volumes mount in seconds, and an attach
/// that is only slow says `FailedMount` once or twice within the first minute.
pub const MOUNT_GRACE_SECONDS: f64 = 60.0;

/// The kubelet's and the attach-detach controller's reasons for a volume they cannot
/// make ready.
const VOLUME_FAILURES: [&str; 3] = ["FailedMount", "FailedAttachVolume", "FailedMapVolume"];

/// A pod whose volume cannot be mounted, and the kubelet's words for why.
#[derive(Debug, Clone, PartialEq)]
pub struct MountFailure {
    pub pod: String,
    pub message: String,
}

/// The first of `pods` (by name) that was scheduled over [`MOUNT_GRACE_SECONDS`] before
/// `now` and whose containers all still wait to be created (`ContainerCreating`,
/// `PodInitializing`), or have no state yet: the one whose Events are worth reading.
pub fn stuck_creating(pods: &[Pod], now: Timestamp) -> Option<&Pod> {
    let mut stuck: Vec<&Pod> = pods.iter().filter(|pod| waits_to_be_created(pod, now)).collect();
    stuck.sort_by_key(|pod| pod.metadata.name.as_deref());
    stuck.first().copied()
}

fn waits_to_be_created(pod: &Pod, now: Timestamp) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    if pod.metadata.deletion_timestamp.is_some() || status.phase.as_deref() != Some("Pending") {
        return false;
    }
    let scheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "True");
    let Some(scheduled_at) = scheduled.and_then(|c| c.last_transition_time.as_ref()) else { return false };
    let waited = seconds_between(scheduled_at.0, now);
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    waited > MOUNT_GRACE_SECONDS
        && containers.into_iter().all(|container| {
            let waiting = container.state.as_ref().map(|state| state.waiting.as_ref());
            match waiting {
                None => true,
                Some(None) => false,
                Some(Some(waiting)) => {
                    matches!(waiting.reason.as_deref(), None | Some("ContainerCreating" | "PodInitializing"))
                }
            }
        })
}

/// The kubelet's summary every two minutes of a pod whose volumes are not ready, which
/// names them but not why; the Event it follows says why.
const SUMMARY: &str = "Unable to attach or mount volumes";

/// The message of the latest Warning among `events` (a pod's) that says why a volume
/// cannot be made ready, or else of the latest summary of one, if any.
pub fn mount_failure(events: &[Event]) -> Option<String> {
    let failures = events.iter().filter(|event| {
        event.type_.as_deref() == Some("Warning")
            && VOLUME_FAILURES.contains(&event.reason.as_deref().unwrap_or_default())
    });
    let latest = failures.max_by_key(|event| {
        let says_why = !event.message.as_deref().unwrap_or_default().starts_with(SUMMARY);
        let series = event.series.as_ref().and_then(|series| series.last_observed_time.as_ref()).map(|t| t.0);
        let last = event.last_timestamp.as_ref().map(|t| t.0);
        (says_why, series.or(last).or_else(|| event.event_time.as_ref().map(|t| t.0)))
    })?;
    Some(latest.message.clone().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-28T12:00:00Z";

    fn pods(yaml: &str) -> Vec<Pod> {
        serde_yaml::from_str(yaml).expect("the fixture parses")
    }

    /// A pod scheduled at `scheduled`, its init container and container in these states.
    fn creating(name: &str, scheduled: &str, init: &str, main: &str) -> String {
        format!(
            r#"
- metadata: {{name: {name}, creationTimestamp: "2026-11-28T11:50:00Z"}}
  status:
    phase: Pending
    conditions:
    - {{type: PodScheduled, status: "True", lastTransitionTime: "{scheduled}"}}
    - {{type: Ready, status: "False", lastTransitionTime: "{scheduled}", reason: ContainersNotReady}}
    initContainerStatuses:
    - {{name: fetch-model, image: matte-inference, imageID: "", ready: false, restartCount: 0, state: {init}}}
    containerStatuses:
    - {{name: inference, image: matte-inference, imageID: "", ready: false, restartCount: 0, state: {main}}}
"#
        )
    }

    #[test]
    fn a_pod_whose_containers_wait_to_be_created_past_the_grace_is_the_one_to_ask_about() {
        let now = NOW.parse().expect("a time");
        let initializing = "{waiting: {reason: PodInitializing}}";
        let creating_ = "{waiting: {reason: ContainerCreating}}";
        let long = creating("portraits-b", "2026-11-28T11:58:00Z", initializing, initializing);
        let also_long = creating("portraits-a", "2026-11-28T11:57:00Z", creating_, initializing);
        let recent = creating("portraits-0", "2026-11-28T11:59:30Z", initializing, initializing);
        let running = creating("portraits-1", "2026-11-28T11:50:00Z", "{running: {}}", initializing);
        let crashing =
            creating("portraits-2", "2026-11-28T11:50:00Z", "{waiting: {reason: CrashLoopBackOff}}", initializing);
        let all = pods(&[long.clone(), recent.clone(), running, crashing, also_long].concat());
        let stuck = stuck_creating(&all, now).and_then(|pod| pod.metadata.name.as_deref());
        assert_eq!(stuck, Some("portraits-a"), "the first by name of those past the grace");
        assert_eq!(stuck_creating(&pods(&recent), now), None, "30 s is within the grace");
        let others = pods(&[creating("p-1", "2026-11-28T11:50:00Z", "{running: {}}", initializing)].concat());
        assert_eq!(stuck_creating(&others, now), None, "an init container that runs is no mount");
        assert!(stuck_creating(&pods(&long), now).is_some());
    }

    fn events(yaml: &str) -> Vec<Event> {
        serde_yaml::from_str(yaml).expect("the fixture parses")
    }

    #[test]
    fn the_latest_warning_about_a_volume_is_the_kubelets_word() {
        let events = events(
            r#"
- metadata: {name: a}
  involvedObject: {kind: Pod, name: portraits-a}
  type: Warning
  reason: FailedMount
  message: 'MountVolume.SetUp failed for volume "model-ca" : configmap "corp-ca" not found'
  lastTimestamp: "2026-11-28T11:59:00Z"
- metadata: {name: b}
  involvedObject: {kind: Pod, name: portraits-a}
  type: Warning
  reason: FailedMount
  message: 'Unable to attach or mount volumes: unmounted volumes=[model-ca], unattached volumes=[]: timed out waiting for the condition'
  lastTimestamp: "2026-11-28T11:59:30Z"
- metadata: {name: c}
  involvedObject: {kind: Pod, name: portraits-a}
  type: Warning
  reason: BackOff
  message: 'Back-off restarting failed container'
  lastTimestamp: "2026-11-28T11:59:50Z"
- metadata: {name: d}
  involvedObject: {kind: Pod, name: portraits-a}
  type: Normal
  reason: Scheduled
  message: 'Successfully assigned shop/portraits-a to gpu-1'
  lastTimestamp: "2026-11-28T11:58:00Z"
"#,
        );
        let why = "MountVolume.SetUp failed for volume \"model-ca\" : configmap \"corp-ca\" not found";
        assert_eq!(mount_failure(&events).as_deref(), Some(why), "why, rather than the later summary");
        let summary = mount_failure(&events[1..]).expect("the summary, when nothing says why");
        assert!(summary.starts_with("Unable to attach or mount volumes: unmounted volumes=[model-ca]"), "{summary}");
        assert_eq!(mount_failure(&events[2..]), None, "no Warning about a volume");
    }
}
