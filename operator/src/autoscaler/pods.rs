//! What the autoscaler and the status need to know about a resource's pods, read off
//! the pods themselves: which are ready, which are still starting and for how long,
//! which the scheduler cannot place (and why), which fail (in the kubelet's words),
//! which keep restarting though they come back each time, and how long the ready ones
//! took to start.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod, PodCondition};

use crate::autoscaler::mounts::MountFailure;
use crate::autoscaler::times::{seconds_between, unix_seconds};
use crate::status::{FailingPods, Unschedulable};
use matte_policy::Startup;

/// A pod keeps restarting when a container of it has failed (a non-zero exit, an OOM
/// kill) at least this many times, the last within [`RECENT_FAILURE_SECONDS`], and at
/// least [`RESTARTS_PER_HOUR`] over the pod's life. Between its crashes such a pod is
/// ready, and the kubelet's back-off, reset after ten minutes of running, never shows
/// `CrashLoopBackOff` for one that fails less often: each crash loses the images queued
/// in it, and would be seen only for the minute or two of its restart.
const RESTARTS_TO_REPORT: i32 = 2;
const RECENT_FAILURE_SECONDS: f64 = 3600.0;
const RESTARTS_PER_HOUR: f64 = 1.0;

/// How long a pod that failed for good (phase `Failed`: evicted, killed for a node's
/// shutdown) is reported after it failed, when it is the only one to have within
/// [`RECENT_FAILURE_SECONDS`]. Its ReplicaSet replaced it at once, but the pod object
/// stays until the pods' garbage collector reaches its threshold (12,500 ended pods by
/// default): reported for as long as it stayed, one eviction kept the resource
/// `Degraded`, and its alert firing, for days.
const FAILED_POD_REPORTED_SECONDS: f64 = 600.0;
/// Pods failed for good within [`RECENT_FAILURE_SECONDS`] that are pods failing in
/// turn (each replacement evicted again, minutes or an hour apart): each is reported
/// until that long after it ended, so that `Degraded` holds through the gaps rather
/// than come and go with each.
const FAILED_PODS_IN_TURN: usize = 2;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodCensus {
    pub ready: u32,
    /// Seconds since each pod that is scheduled (or may still be) but not Ready was
    /// scheduled (created, if it is not yet): counted from the moment the start-ups are
    /// measured from, so that a pod that waited for a node to be added does not look
    /// nearly ready when its start-up has just begun.
    pub starting_ages_seconds: Vec<f64>,
    pub unschedulable: Unschedulable,
    /// Pods among the starting ones that will not become ready by themselves.
    pub failing: FailingPods,
    /// Pods not failing now that keep restarting: ready between their crashes, but
    /// failing again and again.
    pub restarting: FailingPods,
    /// The ready pods' start-ups: when each turned Ready, and how long after it was
    /// scheduled.
    pub ready_startups: Vec<Startup>,
}

/// Counts `pods` as of `now`; terminating pods are leaving and count for nothing, as do
/// pods that ended for good and were replaced (a failure reported long enough, see
/// `FAILED_POD_REPORTED_SECONDS`). `startup_deadline_seconds` is the longest a pod may
/// take from scheduled to ready (`desired::startup_deadline_seconds`): one unready for
/// longer is failing, and one that took longer made no start-up the plans should count
/// on.
pub fn census(pods: &[Pod], now: Timestamp, startup_deadline_seconds: f64) -> PodCensus {
    census_explaining(pods, now, startup_deadline_seconds, None)
}

/// [`census`], with `mount`, a pod the kubelet cannot mount a volume for (its Events
/// say so, [`crate::autoscaler::mounts`]), counted as failing in the kubelet's words.
pub fn census_explaining(
    pods: &[Pod],
    now: Timestamp,
    startup_deadline_seconds: f64,
    mount: Option<&MountFailure>,
) -> PodCensus {
    let mut census = PodCensus::default();
    let failed_within_the_hour = pods
        .iter()
        .filter_map(|pod| failed_seconds_ago(pod, now))
        .filter(|ago| ago.is_none_or(|seconds| seconds <= RECENT_FAILURE_SECONDS))
        .count();
    let in_turn = failed_within_the_hour >= FAILED_PODS_IN_TURN;
    let counted =
        pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && !ended_and_replaced(p, now, in_turn));
    for pod in counted {
        let unmounted = mount.filter(|mount| pod.metadata.name.as_deref() == Some(mount.pod.as_str()));
        let failing = match unmounted {
            Some(mount) => {
                census.failing.add(pod, "VolumeMountFailed", &format!(": {}", mount.message));
                true
            }
            None => count_pod(&mut census, pod, now, startup_deadline_seconds),
        };
        if !failing && let Some(detail) = keeps_restarting(pod, now) {
            census.restarting.add(pod, "RestartingRepeatedly", &detail);
        }
    }
    census
}

/// Whether `pod` ended for good and its ReplicaSet has long replaced it: it succeeded
/// (a pod of a Deployment only does so when a node's shutdown stops it cleanly), or it
/// failed more than [`FAILED_POD_REPORTED_SECONDS`] ago, or, with pods failing
/// `in_turn`, more than [`RECENT_FAILURE_SECONDS`] ago. One whose end its status does
/// not tell is reported.
fn ended_and_replaced(pod: &Pod, now: Timestamp, in_turn: bool) -> bool {
    if pod.status.as_ref().and_then(|status| status.phase.as_deref()) == Some("Succeeded") {
        return true;
    }
    let reported_for = if in_turn { RECENT_FAILURE_SECONDS } else { FAILED_POD_REPORTED_SECONDS };
    failed_seconds_ago(pod, now).is_some_and(|ago| ago.is_some_and(|seconds| seconds > reported_for))
}

/// How long ago `pod` failed for good (phase `Failed`), if it did: as near as its
/// status tells, its latest condition's change (an evicted pod's `DisruptionTarget`,
/// its `Ready` turned false) or its containers' last exit, whichever is later
/// (`Some(None)` if it tells neither).
fn failed_seconds_ago(pod: &Pod, now: Timestamp) -> Option<Option<f64>> {
    let status = pod.status.as_ref().filter(|status| status.phase.as_deref() == Some("Failed"))?;
    let conditions = status.conditions.iter().flatten().filter_map(transition);
    let containers = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    let exits =
        containers.filter_map(|container| Some(container.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()?.0));
    Some(conditions.chain(exits).max().map(|at| seconds_between(at, now)))
}

/// Counts one pod that is not terminating into `census`: whether it is failing.
fn count_pod(census: &mut PodCensus, pod: &Pod, now: Timestamp, startup_deadline_seconds: f64) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let ready = find("Ready").filter(|c| c.status == "True");
    let scheduled = find("PodScheduled");
    if let Some(ready) = ready {
        census.ready += 1;
        // A pod that restarted, or went unready and came back, turned Ready again long
        // after it was scheduled: its readiness shows its age, not a start-up, and a few
        // such made every plan count on start-ups of twenty minutes and start nothing.
        // One that came back is known by its name while its first start-up is
        // remembered (`matte_policy::remember_startups`), and by taking longer than any
        // start-up may after that.
        if let (Some(from), Some(to), false) = (scheduled.and_then(transition), transition(ready), restarted(pod)) {
            let seconds = seconds_between(from, to);
            if seconds <= startup_deadline_seconds {
                let pod = pod.metadata.name.clone();
                census.ready_startups.push(Startup { ready_seconds: unix_seconds(to), seconds, pod });
            }
        }
        return false;
    }
    if let Some(unschedulable) = scheduled.filter(|c| c.reason.as_deref() == Some("Unschedulable")) {
        let message = unschedulable.message.as_deref().unwrap_or_default();
        if waits_for_a_volume(message) {
            // No node, added or freed, will place it.
            census.failing.add(pod, "VolumeUnavailable", &format!(": {message}"));
            return true;
        }
        census.unschedulable.pods += 1;
        if census.unschedulable.message.is_empty() {
            census.unschedulable.message = unschedulable.message.clone().unwrap_or_default();
        }
        return false;
    }
    let unready_since = find("Ready").and_then(transition).or_else(|| scheduled.and_then(transition));
    let unready_seconds = unready_since.map(|since| seconds_between(since, now));
    if let Some((reason, detail)) = failure(pod, unready_seconds, startup_deadline_seconds) {
        // It will not turn ready by itself: no capacity coming.
        census.failing.add(pod, reason, &detail);
        return true;
    }
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let scheduled_at = scheduled.filter(|c| c.status == "True").and_then(transition);
    census.starting_ages_seconds.push(seconds_between(scheduled_at.unwrap_or(created), now));
    false
}

/// Whether the scheduler's `message` says the pod's volume is missing or unbound (a
/// `persistentVolumeClaim` misspelt, or one no volume can bind): no GPU, and no node the
/// cluster adds, would place it, and reported as wanting one it sent whoever read it to
/// add GPUs.
fn waits_for_a_volume(message: &str) -> bool {
    (message.contains("persistentvolumeclaim \"") && message.contains("\" not found"))
        || message.contains("unbound immediate PersistentVolumeClaims")
}

/// Whether any container of `pod` has restarted.
fn restarted(pod: &Pod) -> bool {
    let containers = pod.status.as_ref().and_then(|status| status.container_statuses.as_deref()).unwrap_or_default();
    containers.iter().any(|container| container.restart_count > 0)
}

impl FailingPods {
    /// Counts `pod`, and says why in the kubelet's words if it is the first.
    fn add(&mut self, pod: &Pod, reason: &str, detail: &str) {
        self.pods += 1;
        if self.message.is_empty() {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            self.reason = reason.to_owned();
            self.message = format!("pod {name}{detail}");
        }
    }
}

/// Whether `pod` keeps restarting ([`RESTARTS_TO_REPORT`]), with the details (from ", "):
/// the container, its restarts and its last failure.
fn keeps_restarting(pod: &Pod, now: Timestamp) -> Option<String> {
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    let hours_alive = (seconds_between(created, now) / 3600.0).max(1.0 / 60.0);
    pod.status.as_ref()?.container_statuses.iter().flatten().find_map(|container| {
        let last = container.last_state.as_ref()?.terminated.as_ref()?;
        let ago = seconds_between(last.finished_at.as_ref()?.0, now);
        let restarts = container.restart_count;
        let failed = last.exit_code != 0 || last.reason.as_deref() == Some("OOMKilled");
        let often = f64::from(restarts) / hours_alive >= RESTARTS_PER_HOUR;
        (failed && restarts >= RESTARTS_TO_REPORT && ago <= RECENT_FAILURE_SECONDS && often).then(|| {
            format!(
                ", container {}: restarted {restarts} times in {}, the last {} ago: {}",
                container.name,
                duration_words(hours_alive * 3600.0),
                duration_words(ago),
                exit_words(last)
            )
        })
    })
}

/// `seconds` in the largest whole unit that fits: "40 s", "12 min", "3 h".
fn duration_words(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.0} h", s / 3600.0),
    }
}

/// Why a pod that is not ready will not become ready by itself, if it will not: a word
/// for the condition's reason, and the details (starting with ", " or ": ") in the
/// kubelet's own terms. `unready_seconds` is how long it has been scheduled and unready,
/// `deadline_seconds` the longest a start-up may take.
fn failure(pod: &Pod, unready_seconds: Option<f64>, deadline_seconds: f64) -> Option<(&'static str, String)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let reason = status.reason.as_deref().unwrap_or("Failed");
        let message = status.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
        return Some(("PodFailed", format!(": {reason}{message}")));
    }
    for init in status.init_container_statuses.iter().flatten() {
        if let Some((reason, detail)) = container_failure(init) {
            let reason = if reason == "ImagePullFailed" { reason } else { "InitContainerFailed" };
            return Some((reason, format!(", init container {}: {detail}", init.name)));
        }
    }
    for container in status.container_statuses.iter().flatten() {
        if let Some((reason, detail)) = container_failure(container) {
            return Some((reason, format!(", container {}: {detail}", container.name)));
        }
    }
    match unready_seconds {
        Some(seconds) if seconds > deadline_seconds => Some((
            "StartupTooSlow",
            format!(": not ready for {seconds:.0} s, longer than a start-up should take ({deadline_seconds:.0} s)"),
        )),
        _ => None,
    }
}

/// A container that failed, or waits for something that will not come by itself; the
/// normal waits (`ContainerCreating`, `PodInitializing`) are not failures.
fn container_failure(container: &ContainerStatus) -> Option<(&'static str, String)> {
    let state = container.state.as_ref()?;
    let last_exit = container.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let exit = exit_words;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        return match reason {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                Some(("ImagePullFailed", format!("{reason}{message}")))
            }
            "CrashLoopBackOff" => match last_exit {
                Some(last) if last.reason.as_deref() == Some("OOMKilled") => {
                    Some(("OOMKilled", format!("CrashLoopBackOff, last exit {}", exit(last))))
                }
                Some(last) => Some(("CrashLoopBackOff", format!("CrashLoopBackOff, last exit {}", exit(last)))),
                None => Some(("CrashLoopBackOff", format!("CrashLoopBackOff{message}"))),
            },
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                Some(("ContainerCreateFailed", format!("{reason}{message}")))
            }
            _ => None,
        };
    }
    // A container that keeps failing is, between its back-offs, starting again (running,
    // not ready) or just exited: the same loop throughout, told as one, or `Degraded`
    // would clear and come back, with a Warning each time, at every restart.
    let exited = state.terminated.as_ref().or(last_exit).filter(|exited| exited.exit_code != 0);
    if container.restart_count > 0
        && !container.ready
        && let Some(exited) = exited
    {
        let reason = if exited.reason.as_deref() == Some("OOMKilled") { "OOMKilled" } else { "CrashLoopBackOff" };
        return Some((reason, format!("CrashLoopBackOff, last exit {}", exit(exited))));
    }
    match &state.terminated {
        Some(terminated) if terminated.exit_code != 0 => {
            let reason =
                if terminated.reason.as_deref() == Some("OOMKilled") { "OOMKilled" } else { "ContainerFailed" };
            Some((reason, exit(terminated)))
        }
        _ => None,
    }
}

/// How a container ended, in the kubelet's words, with the last line of its message.
fn exit_words(terminated: &ContainerStateTerminated) -> String {
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    let message = terminated.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let message = message.map(|m| format!(": {}", tail_line(m))).unwrap_or_default();
    format!("{reason} (exit code {}){message}", terminated.exit_code)
}

/// The last line of a termination message (the log tail with `FallbackToLogsOnError`),
/// where a failing command says why.
fn tail_line(message: &str) -> &str {
    message.lines().rev().map(str::trim).find(|line| !line.is_empty()).unwrap_or(message)
}

fn transition(condition: &PodCondition) -> Option<Timestamp> {
    condition.last_transition_time.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest start-up of a resource that downloads no model.
    const DEADLINE: f64 = 600.0;

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
- metadata: {name: starting, creationTimestamp: "2026-11-28T11:59:29Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:59:30Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:59:30Z"}
- metadata: {name: waited-for-a-node, creationTimestamp: "2026-11-28T11:57:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:59:50Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:59:50Z"}
- metadata: {name: just-created, creationTimestamp: "2026-11-28T11:59:55Z"}
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
        let census = census(&pods, NOW.parse().expect("a time"), DEADLINE);
        assert_eq!(census.ready, 2);
        // Counted from scheduling, as start-ups are: the pod that waited 170 s for a node
        // has been starting for 10 s; one not yet seen by the scheduler, from creation.
        assert_eq!(census.starting_ages_seconds, vec![30.0, 10.0, 5.0]);
        assert_eq!(census.unschedulable.pods, 1);
        assert_eq!(census.unschedulable.message, "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.");
        let ready_at = |time: &str| unix_seconds(time.parse().expect("a time"));
        assert_eq!(
            census.ready_startups,
            vec![
                Startup { ready_seconds: ready_at("2026-11-28T11:51:01Z"), seconds: 60.0, pod: Some("ready-a".into()) },
                Startup { ready_seconds: ready_at("2026-11-28T11:50:40Z"), seconds: 40.0, pod: Some("ready-b".into()) },
            ]
        );
    }

    #[test]
    fn a_readiness_later_than_any_start_up_may_take_is_no_start_up() {
        // Ready an hour after it was scheduled, never restarted: it went unready (runs
        // far past their time-out) and came back.
        let pods = pods(
            r#"
- metadata: {name: came-back, creationTimestamp: "2026-11-28T10:58:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T10:58:00Z"}
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:58:00Z"}
"#,
        );
        let now = NOW.parse().expect("a time");
        let counted = census(&pods, now, DEADLINE);
        assert_eq!((counted.ready, counted.ready_startups.len()), (1, 0));
        // With a model downloaded within two hours, an hour can be a start-up.
        assert_eq!(census(&pods, now, 7_800.0).ready_startups.len(), 1);
    }

    #[test]
    fn a_pod_unready_past_a_download_and_the_margin_is_failing_and_not_before() {
        let pods = pods(
            r#"
- metadata: {name: downloading, creationTimestamp: "2026-11-28T11:40:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:40:00Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:40:00Z"}
"#,
        );
        let now = NOW.parse().expect("a time");
        let failing = census(&pods, now, DEADLINE);
        assert_eq!((failing.failing.pods, failing.failing.reason.as_str()), (1, "StartupTooSlow"));
        assert!(failing.failing.message.contains("not ready for 1200 s"), "{}", failing.failing.message);
        let downloading = census(&pods, now, 1_800.0);
        assert_eq!((downloading.failing.pods, downloading.starting_ages_seconds), (0, vec![1_200.0]));
    }

    /// Ready pods that have restarted, as a kubelet reports them.
    const RESTARTED: &str = r#"
- metadata: {name: oom-every-45-min, creationTimestamp: "2026-11-28T09:00:00Z"}
  status:
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T09:00:01Z"}
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:49:30Z"}
    containerStatuses:
    - name: inference
      ready: true
      restartCount: 4
      state: {running: {startedAt: "2026-11-28T11:48:10Z"}}
      lastState:
        terminated: {exitCode: 137, reason: OOMKilled, startedAt: "2026-11-28T11:05:00Z", finishedAt: "2026-11-28T11:48:00Z"}
- metadata: {name: twice-in-three-days, creationTimestamp: "2026-11-25T12:00:00Z"}
  status:
    conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:32:00Z"}
    containerStatuses:
    - name: inference
      ready: true
      restartCount: 2
      state: {running: {startedAt: "2026-11-28T11:31:00Z"}}
      lastState:
        terminated: {exitCode: 1, reason: Error, startedAt: "2026-11-26T08:00:00Z", finishedAt: "2026-11-28T11:30:00Z"}
- metadata: {name: crashed-often-long-ago, creationTimestamp: "2026-11-28T09:00:00Z"}
  status:
    conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T10:31:00Z"}
    containerStatuses:
    - name: inference
      ready: true
      restartCount: 5
      state: {running: {startedAt: "2026-11-28T10:30:00Z"}}
      lastState:
        terminated: {exitCode: 1, reason: Error, startedAt: "2026-11-28T10:20:00Z", finishedAt: "2026-11-28T10:29:00Z"}
- metadata: {name: stopped-cleanly, creationTimestamp: "2026-11-28T11:00:00Z"}
  status:
    conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T11:56:00Z"}
    containerStatuses:
    - name: inference
      ready: true
      restartCount: 3
      state: {running: {startedAt: "2026-11-28T11:55:00Z"}}
      lastState:
        terminated: {exitCode: 0, reason: Completed, startedAt: "2026-11-28T11:40:00Z", finishedAt: "2026-11-28T11:54:00Z"}
"#;

    #[test]
    fn a_ready_pod_that_keeps_restarting_is_reported_and_one_that_restarted_rarely_is_not() {
        let census = census(&pods(RESTARTED), NOW.parse().expect("a time"), DEADLINE);
        assert_eq!(census.ready, 4);
        assert_eq!((census.failing.pods, census.restarting.pods), (0, 1));
        assert_eq!(census.restarting.reason, "RestartingRepeatedly");
        assert_eq!(
            census.restarting.message,
            "pod oom-every-45-min, container inference: restarted 4 times in 3 h, the last 12 min ago: OOMKilled (exit code 137)"
        );
    }

    #[test]
    fn a_pod_ready_again_after_a_restart_shows_no_start_up() {
        // Both scheduled at 11:00; one turned ready a minute later, the other restarted
        // and turned ready again at 11:20, its Ready condition's time moved with it.
        let ready = |name: &str, ready_at: &str, restarts: u32| {
            format!(
                "- metadata: {{name: {name}, creationTimestamp: \"2026-11-28T11:00:00Z\"}}
  status:
    conditions:
    - {{type: PodScheduled, status: \"True\", lastTransitionTime: \"2026-11-28T11:00:00Z\"}}
    - {{type: Ready, status: \"True\", lastTransitionTime: \"{ready_at}\"}}
    containerStatuses:
    - {{name: inference, ready: true, restartCount: {restarts}, image: i, imageID: \"\"}}
"
            )
        };
        let yaml = ready("started-once", "2026-11-28T11:01:00Z", 0) + &ready("restarted", "2026-11-28T11:20:00Z", 1);
        let census = census(&pods(&yaml), NOW.parse().expect("a time"), DEADLINE);
        assert_eq!(census.ready, 2);
        let measured: Vec<f64> = census.ready_startups.iter().map(|startup| startup.seconds).collect();
        assert_eq!(measured, [60.0], "the restarted pod's 20 minutes are its age, not a start-up");
    }

    #[test]
    fn a_crashing_pod_is_failing_and_not_also_restarting() {
        let census = census(&pods(FAILING), NOW.parse().expect("a time"), DEADLINE);
        assert!(census.failing.pods > 0);
        assert_eq!(census.restarting.pods, 0);
    }

    #[test]
    fn no_pods_no_numbers() {
        assert_eq!(census(&[], NOW.parse().expect("a time"), DEADLINE), PodCensus::default());
    }

    /// Pods as a kubelet reports them in each way of failing (fields it always sets kept,
    /// container IDs and image digests left out).
    const FAILING: &str = r#"
- metadata: {name: portraits-6f7d9c-pull, creationTimestamp: "2026-11-28T11:58:00Z"}
  status:
    phase: Pending
    conditions:
    - {type: PodReadyToStartContainers, status: "True", lastTransitionTime: "2026-11-28T11:58:02Z"}
    - {type: Initialized, status: "True", lastTransitionTime: "2026-11-28T11:58:01Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:58:01Z", reason: ContainersNotReady, message: "containers with unready status: [inference]"}
    - {type: ContainersReady, status: "False", lastTransitionTime: "2026-11-28T11:58:01Z", reason: ContainersNotReady, message: "containers with unready status: [inference]"}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:58:00Z"}
    containerStatuses:
    - name: inference
      image: registry.example/matte-inference:typo
      imageID: ""
      ready: false
      restartCount: 0
      started: false
      state:
        waiting:
          reason: ImagePullBackOff
          message: 'Back-off pulling image "registry.example/matte-inference:typo"'
- metadata: {name: portraits-6f7d9c-oom, creationTimestamp: "2026-11-28T11:50:00Z"}
  status:
    phase: Running
    conditions:
    - {type: Initialized, status: "True", lastTransitionTime: "2026-11-28T11:50:01Z"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:50:01Z", reason: ContainersNotReady, message: "containers with unready status: [inference]"}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:50:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 4
      started: false
      lastState:
        terminated: {exitCode: 137, reason: OOMKilled, startedAt: "2026-11-28T11:57:40Z", finishedAt: "2026-11-28T11:58:10Z"}
      state:
        waiting:
          reason: CrashLoopBackOff
          message: "back-off 1m20s restarting failed container=inference pod=portraits-6f7d9c-oom_shop(4b1e)"
- metadata: {name: portraits-6f7d9c-crash, creationTimestamp: "2026-11-28T11:55:00Z"}
  status:
    phase: Running
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:55:01Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:55:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 2
      started: false
      lastState:
        terminated: {exitCode: 1, reason: Error, message: "cannot load the model /models/isnet.onnx: not an ONNX file\n"}
      state:
        waiting:
          reason: CrashLoopBackOff
          message: "back-off 20s restarting failed container=inference pod=portraits-6f7d9c-crash_shop(7c2a)"
- metadata: {name: portraits-6f7d9c-between, creationTimestamp: "2026-11-28T11:55:00Z"}
  status:
    phase: Running
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:55:01Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:55:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 3
      started: true
      lastState:
        terminated: {exitCode: 1, reason: Error, message: "cannot load the model /models/isnet.onnx: not an ONNX file\n"}
      state:
        running: {startedAt: "2026-11-28T11:59:30Z"}
- metadata: {name: portraits-6f7d9c-exited, creationTimestamp: "2026-11-28T11:55:00Z"}
  status:
    phase: Running
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:55:01Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:55:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 3
      started: false
      lastState:
        terminated: {exitCode: 1, reason: Error}
      state:
        terminated: {exitCode: 137, reason: OOMKilled, startedAt: "2026-11-28T11:59:30Z", finishedAt: "2026-11-28T11:59:50Z"}
- metadata: {name: portraits-6f7d9c-sha, creationTimestamp: "2026-11-28T11:56:00Z"}
  status:
    phase: Pending
    conditions:
    - {type: Initialized, status: "False", lastTransitionTime: "2026-11-28T11:56:01Z", reason: ContainersNotInitialized, message: "containers with incomplete status: [fetch-model]"}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:56:01Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:56:00Z"}
    initContainerStatuses:
    - name: fetch-model
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 3
      started: false
      lastState:
        terminated:
          exitCode: 1
          reason: Error
          message: "sha256 mismatch for https://models.example/isnet.onnx: expected 8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4, got 0b3f9c1e5a27d8e4c6b1a9f0e2d3c4b5a6978877665544332211ffeeddccbbaa (88093427 bytes); the model was not installed\n"
      state:
        waiting:
          reason: CrashLoopBackOff
          message: "back-off 40s restarting failed container=fetch-model pod=portraits-6f7d9c-sha_shop(9d3f)"
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ""
      ready: false
      restartCount: 0
      started: false
      state:
        waiting: {reason: PodInitializing}
- metadata: {name: portraits-6f7d9c-slow, creationTimestamp: "2026-11-28T11:40:00Z"}
  status:
    phase: Running
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:40:05Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:40:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 0
      started: true
      state:
        running: {startedAt: "2026-11-28T11:40:06Z"}
- metadata: {name: portraits-6f7d9c-evicted, creationTimestamp: "2026-11-28T11:30:00Z"}
  status:
    phase: Failed
    reason: Evicted
    message: "The node was low on resource: memory."
    conditions:
    - {type: DisruptionTarget, status: "True", lastTransitionTime: "2026-11-28T11:56:00Z", reason: TerminationByKubelet, message: "The node was low on resource: memory."}
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:56:02Z", reason: PodFailed}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:30:00Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ghcr.io/matte-dev/matte-inference@sha256:0123
      ready: false
      restartCount: 0
      started: false
      state:
        terminated: {exitCode: 137, reason: ContainerStatusUnknown, startedAt: "2026-11-28T11:30:05Z", finishedAt: "2026-11-28T11:56:01Z"}
- metadata: {name: portraits-6f7d9c-creating, creationTimestamp: "2026-11-28T11:59:50Z"}
  status:
    phase: Pending
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:59:51Z", reason: ContainersNotReady}
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:59:50Z"}
    containerStatuses:
    - name: inference
      image: ghcr.io/matte-dev/matte-inference:0.1.0
      imageID: ""
      ready: false
      restartCount: 0
      started: false
      state:
        waiting: {reason: ContainerCreating}
"#;

    #[test]
    fn each_way_of_failing_is_told_in_the_kubelets_words() {
        let all = pods(FAILING);
        let now = NOW.parse().expect("a time");
        let one = |name: &str| {
            let pod: Vec<Pod> = all.iter().filter(|p| p.metadata.name.as_deref() == Some(name)).cloned().collect();
            let census = census(&pod, now, DEADLINE);
            (census.failing.pods, census.failing.reason, census.failing.message)
        };
        let (pods, reason, message) = one("portraits-6f7d9c-pull");
        assert_eq!((pods, reason.as_str()), (1, "ImagePullFailed"));
        assert_eq!(
            message,
            "pod portraits-6f7d9c-pull, container inference: ImagePullBackOff: \
             Back-off pulling image \"registry.example/matte-inference:typo\""
        );
        let (_, reason, message) = one("portraits-6f7d9c-oom");
        assert_eq!(reason, "OOMKilled");
        assert!(
            message.ends_with("container inference: CrashLoopBackOff, last exit OOMKilled (exit code 137)"),
            "{message}"
        );
        let (_, reason, message) = one("portraits-6f7d9c-crash");
        assert_eq!(reason, "CrashLoopBackOff");
        assert!(
            message
                .ends_with("last exit Error (exit code 1): cannot load the model /models/isnet.onnx: not an ONNX file"),
            "{message}"
        );
        // The same loop caught running between its crashes, and just exited: told alike.
        let (pods, reason, message) = one("portraits-6f7d9c-between");
        assert_eq!((pods, reason.as_str()), (1, "CrashLoopBackOff"));
        assert!(message.ends_with("CrashLoopBackOff, last exit Error (exit code 1): cannot load the model /models/isnet.onnx: not an ONNX file"), "{message}");
        let (_, reason, message) = one("portraits-6f7d9c-exited");
        assert_eq!(reason, "OOMKilled");
        assert!(message.ends_with("CrashLoopBackOff, last exit OOMKilled (exit code 137)"), "{message}");
        let (_, reason, message) = one("portraits-6f7d9c-sha");
        assert_eq!(reason, "InitContainerFailed");
        assert!(
            message.contains("init container fetch-model: CrashLoopBackOff, last exit Error (exit code 1)"),
            "{message}"
        );
        assert!(message.ends_with("the model was not installed"), "the log's last line: {message}");
        let (_, reason, message) = one("portraits-6f7d9c-slow");
        assert_eq!(reason, "StartupTooSlow");
        assert!(message.contains("not ready for 1195 s"), "{message}");
        let (_, reason, message) = one("portraits-6f7d9c-evicted");
        assert_eq!(
            (reason.as_str(), message.as_str()),
            ("PodFailed", "pod portraits-6f7d9c-evicted: Evicted (The node was low on resource: memory.)")
        );
        assert_eq!(one("portraits-6f7d9c-creating").0, 0, "creating containers is starting, not failing");

        let census = census(&all, now, DEADLINE);
        assert_eq!(census.failing.pods, 8);
        assert_eq!(census.failing.reason, "ImagePullFailed", "the first pod speaks for all");
        assert_eq!(census.starting_ages_seconds.len(), 1, "only the pod creating its containers is coming");
    }

    #[test]
    fn a_pod_the_kubelet_cannot_mount_a_volume_for_is_failing_in_its_words() {
        let pods = pods(
            r#"
- metadata: {name: portraits-6f7d9c-ca, creationTimestamp: "2026-11-28T11:55:00Z"}
  status:
    phase: Pending
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:55:00Z"}
    containerStatuses:
    - {name: inference, image: matte-inference, imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}
- metadata: {name: portraits-6f7d9c-other, creationTimestamp: "2026-11-28T11:59:00Z"}
  status:
    phase: Pending
    conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T11:59:00Z"}
"#,
        );
        let now = NOW.parse().expect("a time");
        assert_eq!(census(&pods, now, DEADLINE).starting_ages_seconds.len(), 2, "without the Events: both starting");
        let message = "MountVolume.SetUp failed for volume \"model-ca\" : configmap \"corp-ca\" not found".to_owned();
        let mount = MountFailure { pod: "portraits-6f7d9c-ca".into(), message };
        let census = census_explaining(&pods, now, DEADLINE, Some(&mount));
        assert_eq!((census.failing.pods, census.failing.reason.as_str()), (1, "VolumeMountFailed"));
        assert_eq!(
            census.failing.message,
            "pod portraits-6f7d9c-ca: MountVolume.SetUp failed for volume \"model-ca\" : configmap \"corp-ca\" not found"
        );
        assert_eq!(census.starting_ages_seconds, vec![60.0], "the other is still coming");
    }

    #[test]
    fn a_pod_whose_volume_is_missing_is_failing_not_waiting_for_a_gpu() {
        let unschedulable = |message: &str| {
            pods(&format!(
                r#"
- metadata: {{name: portraits-6f7d9c-volume, creationTimestamp: "2026-11-28T11:59:00Z"}}
  status:
    phase: Pending
    conditions:
    - {{type: PodScheduled, status: "False", reason: Unschedulable, message: '{message}'}}
"#
            ))
        };
        let now = NOW.parse().expect("a time");
        let missing = r#"0/3 nodes are available: persistentvolumeclaim "isnet-modle" not found. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."#;
        let census_of = |message: &str| census(&unschedulable(message), now, DEADLINE);
        let census = census_of(missing);
        assert_eq!((census.unschedulable.pods, census.failing.pods), (0, 1));
        assert_eq!(census.failing.reason, "VolumeUnavailable");
        assert_eq!(census.failing.message, format!("pod portraits-6f7d9c-volume: {missing}"));
        let unbound = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
        assert_eq!(census_of(unbound).failing.reason, "VolumeUnavailable");
        let no_gpu = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.";
        assert_eq!((census_of(no_gpu).unschedulable.pods, census_of(no_gpu).failing.pods), (1, 0), "waits for a GPU");
    }

    #[test]
    fn a_pod_that_ended_for_good_is_reported_until_it_has_long_been_replaced() {
        let evicted = |failed_at: &str| {
            pods(&format!(
                r#"
- metadata: {{name: portraits-6f7d9c-evicted, creationTimestamp: "2026-11-28T09:00:00Z"}}
  status:
    phase: Failed
    reason: Evicted
    message: "The node was low on resource: ephemeral-storage."
    conditions:
    - {{type: DisruptionTarget, status: "True", lastTransitionTime: "{failed_at}", reason: TerminationByKubelet}}
    - {{type: Ready, status: "False", lastTransitionTime: "{failed_at}", reason: PodFailed}}
    - {{type: PodScheduled, status: "True", lastTransitionTime: "2026-11-28T09:00:00Z"}}
"#
            ))
        };
        let now = NOW.parse().expect("a time");
        let failing = |pods: &[Pod]| census(pods, now, DEADLINE).failing.pods;
        assert_eq!(failing(&evicted("2026-11-28T11:52:00Z")), 1, "evicted 8 minutes ago: reported");
        let replaced = census(&evicted("2026-11-28T11:48:00Z"), now, DEADLINE);
        assert_eq!(replaced, PodCensus::default(), "evicted 12 minutes ago: long replaced, counted for nothing");
        // Evicted in turn, 40 and 12 minutes ago: reported through the gap to the next.
        let in_turn = [evicted("2026-11-28T11:20:00Z"), evicted("2026-11-28T11:48:00Z")].concat();
        assert_eq!(failing(&in_turn), 2);
        let hours_apart = [evicted("2026-11-28T10:20:00Z"), evicted("2026-11-28T11:48:00Z")].concat();
        assert_eq!(failing(&hours_apart), 0, "an eviction an hour and a half ago is no pattern");
        let stopped_cleanly = pods(
            r#"
- metadata: {name: portraits-6f7d9c-shutdown, creationTimestamp: "2026-11-28T09:00:00Z"}
  status:
    phase: Succeeded
    conditions:
    - {type: Ready, status: "False", lastTransitionTime: "2026-11-28T11:59:00Z"}
"#,
        );
        assert_eq!(census(&stopped_cleanly, now, DEADLINE), PodCensus::default(), "neither starting nor failing");
    }
}
