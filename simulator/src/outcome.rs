//! The figures each policy is judged by, from what one run recorded.

use matte_policy::stats::{median, nearest_rank};
use serde::Serialize;

use super::record::{PodRecord, ReplicaChange, RunRecord};
use super::scalers::PolicyName;
use super::settings::Settings;
use super::trace::Burst;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub policy: PolicyName,
    pub images: usize,
    /// Images never answered before the run ended.
    pub unanswered: usize,
    /// End-to-end latency percentiles in seconds (first try to answer); `None` when the
    /// percentile falls on an image never answered.
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Share of images answered within the SLO.
    pub slo_attainment: f64,
    /// Pods billed from getting a GPU to ending, summed.
    pub gpu_seconds: f64,
    /// The nodes the cluster added on demand, from launch to removal, idle included
    /// (the warm nodes are the same for every policy and not counted).
    pub added_node_seconds: f64,
    /// Pods created after the start (the initial fleet is not counted).
    pub pod_starts: usize,
    /// Started pods that never became ready, served nothing, or became ready when
    /// nothing was waiting anywhere: the need had passed.
    pub wasted_starts: usize,
    /// Started pods that ended before they were ready: given back while starting or
    /// while waiting for a GPU (counted among the wasted too).
    pub cancelled_starts: usize,
    /// Replica changes that reverse the previous one within the flap window.
    pub flaps: usize,
    /// Median seconds from a burst's first image to the first pod started for it being
    /// ready, over the bursts that got one.
    pub reaction_median_seconds: Option<f64>,
    pub bursts_with_new_pods: usize,
    pub bursts: usize,
    /// 429 answers clients saw (each retry refused counts again): from a pod whose
    /// queue was full, or from the gateway when the expected wait exceeded its budget.
    pub rejections: u64,
    /// 503 answers from the gateway: the budget ran out while the request waited in its
    /// queue (no pod became free in time, as when scaling from zero).
    pub timeouts: u64,
}

pub fn outcome(policy: PolicyName, settings: &Settings, bursts: &[Burst], run: &RunRecord) -> Outcome {
    let mut latencies: Vec<f64> = run.latencies.iter().map(|latency| latency.unwrap_or(f64::INFINITY)).collect();
    latencies.sort_by(f64::total_cmp);
    let within_slo = latencies.iter().filter(|latency| **latency <= settings.slo_seconds).count();
    let started = &run.pods[run.initial_pods.min(run.pods.len())..];
    let reactions = reactions(bursts, started);
    Outcome {
        policy,
        images: latencies.len(),
        unanswered: run.latencies.iter().filter(|latency| latency.is_none()).count(),
        p50_seconds: nearest_rank(&latencies, 0.50),
        p95_seconds: nearest_rank(&latencies, 0.95),
        p99_seconds: nearest_rank(&latencies, 0.99),
        max_seconds: nearest_rank(&latencies, 1.0),
        slo_attainment: if latencies.is_empty() { 1.0 } else { within_slo as f64 / latencies.len() as f64 },
        gpu_seconds: run.pods.iter().map(billed_seconds).sum(),
        added_node_seconds: run.added_node_seconds,
        pod_starts: started.len(),
        wasted_starts: started.iter().filter(|pod| is_wasted(pod)).count(),
        // Given back before ready; one still starting or waiting for a GPU at the end
        // was never given back.
        cancelled_starts: started.iter().filter(|pod| pod.ready_seconds.is_none() && pod.given_back).count(),
        flaps: flaps(&run.changes, settings.flap_window_seconds),
        reaction_median_seconds: median(reactions.clone()),
        bursts_with_new_pods: reactions.len(),
        bursts: bursts.len(),
        rejections: run.rejections,
        timeouts: run.timeouts,
    }
}

fn billed_seconds(pod: &PodRecord) -> f64 {
    pod.billed_from_seconds.map_or(0.0, |from| (pod.ended_seconds - from).max(0.0))
}

/// How one burst's images fared under one policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLateness {
    /// Images answered after the SLO, or never.
    pub late: usize,
    /// The slowest image's seconds from first try to answer; `None` when one was never
    /// answered.
    pub slowest_seconds: Option<f64>,
}

/// Each burst's lateness, given the run's latencies in arrival order: the bursts split
/// the sorted arrivals into consecutive runs (`trace::bursts`), so the first burst's
/// images are the first latencies, and so on.
pub fn lateness_by_burst(bursts: &[Burst], latencies: &[Option<f64>], slo_seconds: f64) -> Vec<BurstLateness> {
    let mut rest = latencies;
    bursts
        .iter()
        .map(|burst| {
            let (own, after) = rest.split_at(burst.images.min(rest.len()));
            rest = after;
            let late = own.iter().filter(|latency| latency.is_none_or(|seconds| seconds > slo_seconds)).count();
            let slowest_seconds = own.iter().try_fold(0.0_f64, |slowest, latency| latency.map(|s| slowest.max(s)));
            BurstLateness { late, slowest_seconds }
        })
        .collect()
}

fn is_wasted(pod: &PodRecord) -> bool {
    pod.ready_seconds.is_none() || pod.images_served == 0 || !pod.backlog_when_ready
}

fn flaps(changes: &[ReplicaChange], window: f64) -> usize {
    changes
        .windows(2)
        .filter(|pair| {
            let up = |change: &ReplicaChange| change.to > change.from;
            up(&pair[0]) != up(&pair[1]) && pair[1].at_seconds - pair[0].at_seconds < window
        })
        .count()
}

/// For each burst, the time from its first image to the first pod created during it
/// (before the next burst) being ready.
fn reactions(bursts: &[Burst], started: &[PodRecord]) -> Vec<f64> {
    bursts
        .iter()
        .enumerate()
        .filter_map(|(index, burst)| {
            let until = bursts.get(index + 1).map_or(f64::INFINITY, |next| next.start_seconds);
            started
                .iter()
                .filter(|pod| pod.created_seconds >= burst.start_seconds && pod.created_seconds < until)
                .filter_map(|pod| pod.ready_seconds)
                .min_by(f64::total_cmp)
                .map(|ready| ready - burst.start_seconds)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_burst_is_judged_on_its_own_images() {
        let burst = |start_seconds, images| Burst { start_seconds, end_seconds: start_seconds + 1.0, images };
        let bursts = [burst(0.0, 2), burst(100.0, 3), burst(200.0, 1)];
        let latencies = [Some(10.0), Some(95.0), Some(30.0), Some(90.0), Some(20.0), None];
        let lateness = lateness_by_burst(&bursts, &latencies, 90.0);
        assert_eq!(lateness[0], BurstLateness { late: 1, slowest_seconds: Some(95.0) });
        assert_eq!(lateness[1], BurstLateness { late: 0, slowest_seconds: Some(90.0) }, "the SLO itself is met");
        assert_eq!(lateness[2], BurstLateness { late: 1, slowest_seconds: None }, "never answered");
    }

    #[test]
    fn a_reversal_within_the_window_is_a_flap() {
        let change = |at_seconds, from, to| ReplicaChange { at_seconds, from, to, why: None };
        let changes = [change(0.0, 1, 3), change(50.0, 3, 1), change(400.0, 1, 2), change(410.0, 2, 4)];
        assert_eq!(flaps(&changes, 120.0), 1);
    }
}
