//! The policy's memory survives a leader change: each pass writes it into the resource's
//! status, and a new leader reading that status back (as JSON, the way the apiserver
//! hands it over) decides exactly as the old leader would have. Mid-rhythm of recurring
//! bursts, that means keeping warm the pods a leader starting from nothing gives back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use matte_operator::autoscaler::policy::{
    DECIDED_TIME_REWRITTEN_AFTER_SECONDS, Decision, Memory, Observation, PolicySpec, QueueMetrics, Reason, Startup,
    decide,
};
use matte_operator::crd::BackgroundRemovalServiceStatus;
use matte_operator::status::{Observed, compute};

/// One pass every 5 s.
const PASS_SECONDS: f64 = 5.0;

/// Bursts some 200 s apart at random moments (keeping no clock, whose pods would be
/// given back between them), each refusing clients for 30 s.
const BURST_STARTS: [f64; 4] = [1000.0, 1230.0, 1400.0, 1650.0];

fn spec() -> PolicySpec {
    PolicySpec::new(1, 10, 30.0)
}

fn observation(now_seconds: f64, replicas: u32) -> Observation {
    let in_burst = BURST_STARTS.iter().any(|start| (*start..start + 30.0).contains(&now_seconds));
    let queue = QueueMetrics {
        age_seconds: 1.0,
        queue_depth: if in_burst { 16.0 * f64::from(replicas) } else { 0.0 },
        oldest_queued_age_seconds: if in_burst { 12.0 } else { 0.0 },
        queue_wait_p95_seconds: Some(if in_burst { 12.0 } else { 0.1 }),
        images_per_pod_second: Some(1.6),
        deferred_requests: if in_burst { 80.0 } else { 0.0 },
        rejected_recently: if in_burst { 300.0 } else { 0.0 },
        ..QueueMetrics::default()
    };
    Observation {
        now_seconds,
        replicas,
        ready_pods: replicas,
        starting_pod_ages_seconds: Vec::new(),
        unschedulable_pods: 0,
        ready_pod_startups: vec![Startup { ready_seconds: 0.0, seconds: 60.0, pod: None }],
        queue: Some(queue),
    }
}

/// The status a pass writes, as the next reader gets it from the apiserver.
fn written(previous: &BackgroundRemovalServiceStatus, decision: &Decision) -> BackgroundRemovalServiceStatus {
    let observed = Observed {
        selector: "app=x".into(),
        desired_replicas: i32::try_from(decision.replicas).unwrap(),
        decision: Some(decision),
        ..Observed::default()
    };
    let status = compute(previous, &observed, &Time(jiff::Timestamp::UNIX_EPOCH));
    serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap()
}

/// Passes from `from` to `to` seconds, as one leader makes them; returns its decisions.
fn lead(from: f64, to: f64, mut replicas: u32, mut memory: Memory) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let mut now = from;
    while now < to {
        let decision = decide(&spec(), &observation(now, replicas), &memory);
        replicas = decision.replicas;
        memory = decision.memory.clone();
        decisions.push(decision);
        now += PASS_SECONDS;
    }
    decisions
}

/// The old leader sees three bursts, writing status after every pass: its last
/// decision, and the status it leaves.
fn three_bursts_led() -> (Decision, BackgroundRemovalServiceStatus) {
    let mut status = BackgroundRemovalServiceStatus::default();
    let before = lead(900.0, 1450.0, 1, Memory::default());
    for decision in &before {
        status = written(&status, decision);
    }
    (before.last().expect("passes were made").clone(), status)
}

#[test]
fn a_new_leader_reading_the_status_keeps_the_warm_pods_the_old_one_kept() {
    let (last, status) = three_bursts_led();
    // The time it was decided is written anew only now and then when nothing else
    // changed, so that an idle resource's status is not written at every pass.
    let in_status = status.autoscaler_memory.clone().expect("memory in status");
    let written_at = in_status.decided_seconds.expect("the time it was decided");
    let decided_at = last.memory.decided_seconds.expect("the time it was decided");
    assert!(decided_at - written_at < DECIDED_TIME_REWRITTEN_AFTER_SECONDS, "{written_at} for {decided_at}");
    assert_eq!(
        Memory { decided_seconds: last.memory.decided_seconds, ..in_status },
        last.memory,
        "the memory is in status"
    );
    assert_eq!(last.memory.recent_bursts.len(), 3, "three bursts ended: {:?}", last.memory);

    // It goes on leading, or a new leader takes over with the memory read from status.
    let handover = status.autoscaler_memory.clone().expect("memory in status");
    let stayed = lead(1450.0, 1600.0, last.replicas, last.memory.clone());
    let took_over = lead(1450.0, 1600.0, last.replicas, handover);
    assert_eq!(stayed, took_over, "the new leader decides as the old one would");
    assert!(
        took_over.iter().any(|decision| decision.reason == Reason::KeepWarmForBursts && decision.replicas >= 2),
        "the warm pods are kept between bursts: {:?}",
        took_over.iter().map(|d| (d.replicas, d.reason)).collect::<Vec<_>>()
    );

    // A leader that starts from nothing has no rhythm and gives the warm pods back.
    let forgot = lead(1450.0, 1600.0, last.replicas, Memory::default());
    assert_eq!(forgot.last().map(|decision| decision.replicas), Some(1), "without the memory the pods go");
}

#[test]
fn a_new_leader_drops_what_no_leader_would_have_written_in_status() {
    let (last, status) = three_bursts_led();
    // Whoever may write the status subresource sets the surplus clock a day ahead and
    // the throughput to nearly nothing.
    let mut json = serde_json::to_value(&status).unwrap();
    json["autoscalerMemory"]["surplusSinceSeconds"] = (1450.0 + 86_400.0).into();
    json["autoscalerMemory"]["imagesPerPodSecond"] = 1e-300.into();
    let forged: BackgroundRemovalServiceStatus = serde_json::from_value(json).unwrap();

    let took_over = lead(1450.0, 1600.0, last.replicas, forged.autoscaler_memory.expect("memory in status"));
    let faults: Vec<String> = took_over[0].memory_faults.iter().map(ToString::to_string).collect();
    assert_eq!(
        faults,
        ["surplusSinceSeconds is 86400s ahead of now", "imagesPerPodSecond is 1e-300, outside 0.001..=1000"]
    );
    assert!(took_over[1..].iter().all(|decision| decision.memory_faults.is_empty()), "what it passes on is sound");
    // The surplus clock starts again at the handover: the fleet goes down as the old
    // leader's did, one hold (a start-up) later at most, not a day later.
    let stayed = lead(1450.0, 1600.0, last.replicas, last.memory.clone());
    let first_below = |decisions: &[Decision]| {
        decisions.iter().position(|decision| decision.replicas < last.replicas).map(|pass| pass as f64 * PASS_SECONDS)
    };
    let (forged_down, stayed_down) = (first_below(&took_over), first_below(&stayed));
    assert!(
        forged_down.zip(stayed_down).is_some_and(|(forged, stayed)| forged <= stayed + 60.0),
        "scaled down after {forged_down:?}s, the old leader after {stayed_down:?}s"
    );
    assert_eq!(took_over.last().map(|d| d.replicas), stayed.last().map(|d| d.replicas));
}
