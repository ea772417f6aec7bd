//! Every branch of the decision, each with numbers that make the expected answer clear.

use super::*;
use crate::memory::{BURSTS_REMEMBERED, Burst};
use crate::observation::MAX_OBSERVED;
use crate::startup::{STARTUPS_REMEMBERED, STARTUPS_TO_OUTWEIGH_THE_DEFAULT, Startup};

/// 1..10 replicas, 30 s target, 60 s start-up, 1 image/s per pod, 10 s of useful work.
/// Behind the gateway, where a pod drains a backlog at the whole planned pace; the tests
/// of a plain Service say so.
fn spec() -> PolicySpec {
    PolicySpec { planned_utilization: 1.0, behind_gateway: true, ..PolicySpec::new(1, 10, 30.0) }
}

fn plain_service() -> PolicySpec {
    PolicySpec { behind_gateway: false, ..spec() }
}

fn queue(queue_depth: f64) -> QueueMetrics {
    QueueMetrics {
        queue_depth,
        queue_wait_p95_seconds: Some(1.0),
        images_per_pod_second: Some(1.0),
        ..QueueMetrics::default()
    }
}

fn observation(replicas: u32, queue_metrics: Option<QueueMetrics>) -> Observation {
    Observation {
        now_seconds: 1000.0,
        replicas,
        ready_pods: replicas,
        starting_pod_ages_seconds: Vec::new(),
        unschedulable_pods: 0,
        ready_pod_startups: started_in(60.0),
        queue: queue_metrics,
    }
}

/// One ready pod's start-up of `seconds`.
/// Three pods seen ready, each after `seconds`: enough for the plan to count on
/// `seconds` alone (`STARTUPS_TO_OUTWEIGH_THE_DEFAULT`).
fn started_in(seconds: f64) -> Vec<Startup> {
    (0..STARTUPS_TO_OUTWEIGH_THE_DEFAULT).map(|pod| Startup { ready_seconds: pod as f64, seconds, pod: None }).collect()
}

fn decide_fresh(observation: &Observation) -> Decision {
    decide(&spec(), observation, &Memory::default())
}

#[test]
fn missing_metrics_hold_the_last_decision_instead_of_scaling_down() {
    let memory = Memory { replicas: Some(4), ..Memory::default() };
    let decision = decide(&spec(), &observation(4, None), &memory);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::MetricsMissing));
    assert!(decision.plan.is_none());
    assert!(decision.message.contains("no queue metrics"), "{}", decision.message);
}

#[test]
fn a_surplus_clock_runs_only_while_metrics_say_the_pods_are_unneeded() {
    // Surplus since 900; metrics missing from 950 to 1000, longer than a scale-down delay
    // would be: once they are back, the surplus has to be seen anew.
    let memory = Memory { replicas: Some(4), surplus_since_seconds: Some(900.0), ..Memory::default() };
    let held = decide(&spec(), &observation(4, None), &memory);
    assert_eq!((held.replicas, held.memory.surplus_since_seconds), (4, None));
    let back = Observation { now_seconds: 1001.0, ..observation(4, Some(queue(0.0))) };
    let decision = decide(&spec(), &back, &held.memory);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::KeepUntilIdleLongEnough), "{}", decision.message);
    assert_eq!(decision.memory.surplus_since_seconds, Some(1001.0));
}

#[test]
fn missing_metrics_on_the_first_pass_keep_the_current_replicas_within_bounds() {
    let decision = decide_fresh(&observation(40, None));
    assert_eq!((decision.replicas, decision.reason), (10, Reason::MetricsMissing));
}

#[test]
fn stale_metrics_hold_the_last_decision() {
    let memory = Memory { replicas: Some(3), ..Memory::default() };
    let stale = QueueMetrics { age_seconds: 120.0, ..queue(0.0) };
    let decision = decide(&spec(), &observation(3, Some(stale)), &memory);
    assert_eq!((decision.replicas, decision.reason), (3, Reason::MetricsStale));
    assert!(decision.message.contains("120s old"), "{}", decision.message);
}

#[test]
fn a_backlog_one_pod_drains_in_time_adds_nothing() {
    // 60 images, 1 image/s, deadline 70 s (start-up 60 + 10): one pod is enough.
    let decision = decide_fresh(&observation(1, Some(queue(60.0))));
    assert_eq!((decision.replicas, decision.reason), (1, Reason::Steady));
    let plan = decision.plan.expect("metrics were usable");
    assert_eq!(plan.deadline_seconds, 70.0);
    assert_eq!(plan.needed_replicas, 1);
}

#[test]
fn scales_up_at_once_by_just_enough_for_the_backlog_to_drain_by_the_deadline() {
    // 100 images: one ready pod does 70 by the deadline; each new pod, ready after 60 s,
    // does 10 more: 3 new pods.
    let decision = decide_fresh(&observation(1, Some(queue(100.0))));
    assert_eq!((decision.replicas, decision.reason), (4, Reason::ScaleUp));
    assert!(decision.message.contains("scaling up from 1 to 4"), "{}", decision.message);
}

#[test]
fn does_not_start_pods_that_would_only_be_ready_after_the_work_is_done() {
    // The target (30 s) is already missed for an image 20 s old, but one pod drains the
    // 40 images in 40 s, before any new pod (60 s) could help.
    let old = QueueMetrics { oldest_queued_age_seconds: 20.0, ..queue(40.0) };
    let decision = decide_fresh(&observation(1, Some(old)));
    assert_eq!((decision.replicas, decision.reason), (1, Reason::Steady));
}

#[test]
fn a_far_target_is_the_deadline_when_pods_start_in_time() {
    // Target 300 s: 400 images, one pod does 300 by then, a new pod 240: one more pod.
    let far = PolicySpec { target_queue_latency_seconds: 300.0, ..spec() };
    let decision = decide(&far, &observation(1, Some(queue(400.0))), &Memory::default());
    assert_eq!(decision.replicas, 2);
    assert!(decision.message.contains("drain within 300s:"), "the target sets it: {}", decision.message);
    let plan = decision.plan.expect("plan");
    assert_eq!((plan.deadline_seconds, plan.useful_work_seconds), (300.0, None));
}

#[test]
fn pods_still_starting_count_from_when_they_will_be_ready() {
    // 130 images, but 3 pods started 10 s ago (ready in 50 s, 20 images each by the
    // deadline): 70 + 60 >= 130, nothing to add.
    let starting = Observation {
        replicas: 4,
        ready_pods: 1,
        starting_pod_ages_seconds: vec![10.0, 10.0, 10.0],
        ..observation(1, Some(queue(130.0)))
    };
    let decision = decide_fresh(&starting);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::Steady));
}

#[test]
fn clients_refused_with_429_count_as_backlog() {
    // 20 queued in the pods, 80 clients they refused waiting outside.
    let refused = QueueMetrics { deferred_requests: 80.0, ..queue(20.0) };
    let decision = decide_fresh(&observation(1, Some(refused)));
    assert_eq!(decision.plan.expect("plan").backlog_images, 100.0);
    assert_eq!(decision.replicas, 4);
}

#[test]
fn a_burst_just_refused_counts_before_a_scrape_shows_the_clients_away() {
    let just_refused = QueueMetrics { deferred_requests: 10.0, rejected_recently: 80.0, ..queue(20.0) };
    let decision = decide_fresh(&observation(1, Some(just_refused)));
    assert_eq!(decision.plan.expect("plan").backlog_images, 100.0);
}

#[test]
fn clients_sent_away_are_all_still_waiting_until_their_time_comes() {
    // A sustained overload behind the gateway: 60 clients away, refused at 2/s; the
    // recent refusals see 10 of them.
    let overload =
        QueueMetrics { rejected_recently: 10.0, deferred_requests: 60.0, ..behind_gateway(16.0, 24.0, 20.0) };
    let plan = decide_fresh(&observation(1, Some(overload))).plan.expect("plan");
    assert_eq!((plan.waiting_clients, plan.backlog_images), (60.0, 100.0));
}

#[test]
fn clients_away_keep_a_burst_on_until_they_are_back() {
    // The gateway's queue is empty and nothing was refused lately, but clients sent
    // away have not come back yet: the burst is still on.
    let away = QueueMetrics { deferred_requests: 30.0, ..behind_gateway(4.0, 0.0, 0.0) };
    let decision = decide_fresh(&observation(1, Some(away)));
    assert!(decision.memory.burst.is_some(), "{decision:?}");
    assert_eq!(decision.plan.expect("plan").backlog_images, 34.0);
}

#[test]
fn steady_traffic_gets_pods_for_its_rate_at_the_planned_utilization() {
    let steady = QueueMetrics { sustained_admitted_per_second: 3.2, ..queue(0.0) };
    let planned = PolicySpec { planned_utilization: 0.8, ..spec() };
    let decision = decide(&planned, &observation(1, Some(steady)), &Memory::default());
    assert_eq!((decision.replicas, decision.reason), (4, Reason::ScaleUp));
}

#[test]
fn a_backlog_on_steady_traffic_gets_pods_for_both() {
    // Two pods serve 2 images/s of steady traffic. 70 images queue on top: the deadline
    // is a start-up and 10 s away (70 s), by which 140 more steady images arrive behind
    // them; the two ready pods do 140 of the 210, and each new pod 10.
    let burst_on_steady = QueueMetrics { sustained_admitted_per_second: 2.0, ..queue(70.0) };
    let decision = decide_fresh(&observation(2, Some(burst_on_steady)));
    let plan = decision.plan.expect("plan");
    assert_eq!((plan.deadline_seconds, plan.needed_replicas), (70.0, 9));
    assert_eq!((decision.replicas, decision.reason), (9, Reason::ScaleUp));
    assert!(decision.message.contains("backlog 70 images on 2.0 images/s of steady traffic"), "{}", decision.message);
    // The same backlog on an idle fleet: one of the two pods drains it on its own.
    let decision = decide_fresh(&observation(2, Some(queue(70.0))));
    assert_eq!(decision.plan.expect("plan").needed_replicas, 1);
    assert_eq!(decision.replicas, 2, "{}", decision.message);
}

#[test]
fn what_keeps_arriving_while_a_burst_drains_is_planned_for_once_the_burst_outlasts_the_inflow_window() {
    // 70 images in the gateway's queue on one ready pod: it drains them by the 70 s
    // deadline on its own. But requests kept coming, 3 a second over the 20 s window,
    // after a burst that began 30 s ago, and still come: 60 more are planned for (one
    // window of them), which six new pods, 10 images each by the deadline, take.
    let draining = QueueMetrics { gateway_queue_depth: 70.0, gateway_inflow_per_second: 3.0, ..queue(0.0) };
    let on_since = |started_seconds: f64| Memory {
        burst: Some(Burst { started_seconds, peak_backlog_images: 70.0 }),
        ..Memory::default()
    };
    let decision = decide(&spec(), &observation(1, Some(draining.clone())), &on_since(970.0));
    let plan = decision.plan.clone().expect("plan");
    assert_eq!((plan.inflow_images_per_second, plan.needed_replicas), (3.0, 7));
    assert_eq!((decision.replicas, decision.reason), (7, Reason::ScaleUp));
    assert!(decision.message.contains("with 3.0 images/s still arriving"), "{}", decision.message);
    // A burst on for less than the window still has its own first images in it: they
    // are the backlog, not more to come.
    for memory in [on_since(990.0), Memory::default()] {
        let decision = decide(&spec(), &observation(1, Some(draining.clone())), &memory);
        let plan = decision.plan.expect("plan");
        assert_eq!((plan.inflow_images_per_second, plan.needed_replicas), (0.0, 1));
    }
    // Once requests stop reaching the gateway, what the window holds came before: the
    // burst's last requests, already queued.
    let stopped = QueueMetrics { gateway_latest_arrivals_per_second: Some(0.0), ..draining.clone() };
    let plan = decide(&spec(), &observation(1, Some(stopped)), &on_since(970.0)).plan.expect("plan");
    assert_eq!((plan.inflow_images_per_second, plan.needed_replicas), (0.0, 1));
    // Steady traffic already planned for is not counted twice: 2 images/s of it leave 1
    // of the 3 as the burst's own.
    let on_steady = QueueMetrics { sustained_admitted_per_second: 2.0, ..draining.clone() };
    let decision = decide(&spec(), &observation(3, Some(on_steady)), &on_since(970.0));
    let plan = decision.plan.expect("plan");
    // 70 + 2 × 70 steady + 1 × 20 = 230 images; three ready pods do 210, two new ones
    // 10 each.
    assert_eq!((plan.inflow_images_per_second, plan.needed_replicas), (1.0, 5));
    assert!(
        decision.message.contains("on 2.0 images/s of steady traffic and 1.0 images/s more still arriving"),
        "{}",
        decision.message
    );
    // A flow confirmed has pods for its whole rate: what arrives is not planned twice.
    let flowing = QueueMetrics { new_arrivals_per_second: 3.0, ..draining.clone() };
    let memory = Memory { surge_since_seconds: Some(980.0), ..on_since(970.0) };
    let plan = decide(&spec(), &observation(1, Some(flowing)), &memory).plan.expect("plan");
    assert_eq!((plan.surge_replicas, plan.inflow_images_per_second), (3, 0.0));
    assert_eq!(plan.needed_replicas, 4, "1 for the backlog and 3 for the flow's rate");
    // Behind a plain Service there is no gateway to read the inflow from.
    let plain = decide(&plain_service(), &observation(1, Some(draining)), &on_since(970.0));
    assert_eq!(plain.plan.expect("plan").inflow_images_per_second, 0.0);
}

#[test]
fn negative_queue_metrics_take_nothing_off_a_plan() {
    // No count, depth, age or rate is below 0: series that read so are broken or forged,
    // and 100 queued images on one pod still need the pods they alone do.
    let forged = QueueMetrics {
        sustained_admitted_per_second: -50.0,
        gateway_queue_depth: -80.0,
        deferred_requests: -20.0,
        rejected_recently: f64::NAN,
        oldest_queued_age_seconds: -300.0,
        new_arrivals_per_second: -5.0,
        gateway_inflow_per_second: -40.0,
        ..queue(100.0)
    };
    let with_forged = decide_fresh(&observation(1, Some(forged)));
    let honest = decide_fresh(&observation(1, Some(queue(100.0))));
    assert_eq!((with_forged.replicas, with_forged.reason), (honest.replicas, honest.reason));
    assert_eq!(with_forged.plan, honest.plan);
    assert_eq!(with_forged.observation.queue, honest.observation.queue, "the decision reports what it used");
}

#[test]
fn huge_queue_metrics_are_taken_as_a_billion_so_that_what_is_remembered_stays_a_number() {
    // Each below infinity, their sum is not: a backlog of infinity would be remembered as
    // a burst's peak, which JSON cannot hold, and every status write would fail.
    let forged = QueueMetrics {
        gateway_queue_depth: f64::MAX,
        deferred_requests: f64::MAX,
        oldest_queued_age_seconds: 1e300,
        new_arrivals_per_second: f64::INFINITY,
        gateway_inflow_per_second: f64::INFINITY,
        ..queue(f64::MAX)
    };
    let decision = decide_fresh(&observation(1, Some(forged)));
    assert_eq!((decision.replicas, decision.reason), (10, Reason::ScaleUp), "{}", decision.message);
    let bounded = decision.observation.queue.as_ref().expect("queue");
    assert_eq!((bounded.queue_depth, bounded.oldest_queued_age_seconds), (MAX_OBSERVED, MAX_OBSERVED));
    assert_eq!(bounded.gateway_inflow_per_second, MAX_OBSERVED);
    let peak = decision.memory.burst.expect("a burst is on").peak_backlog_images;
    assert_eq!(peak, 3.0 * MAX_OBSERVED);
    let status = serde_json::to_string(&decision.memory).expect("serializes");
    assert!(status.contains(r#""peakBacklogImages":3000000000.0"#), "a number, not null: {status}");
    let (_, faults) = decision.memory.checked(1001.0);
    assert_eq!(faults, Vec::new(), "and the next pass keeps it");
}

#[test]
fn a_pod_stuck_starting_is_no_capacity_and_holds_no_surplus() {
    // Nine ready pods and one not ready fifteen start-ups after it was scheduled (a crash
    // loop): a few images queued now and then must not keep the fleet at ten.
    let stuck =
        Observation { ready_pods: 9, starting_pod_ages_seconds: vec![900.0], ..observation(10, Some(queue(2.0))) };
    let decision = decide_fresh(&stuck);
    assert_eq!(decision.plan.as_ref().expect("plan").starting_pods, 0, "not counted on");
    assert_ne!(decision.reason, Reason::KeepWhileStarting, "{}", decision.message);
    let unneeded_long_ago = Memory { surplus_since_seconds: Some(500.0), ..Memory::default() };
    let decision = decide(&spec(), &stuck, &unneeded_long_ago);
    assert_eq!(decision.reason, Reason::ScaleDown, "{}", decision.message);
    assert!(decision.replicas < 10, "{}", decision.message);
    // One starting for a start-up and a half is still counted on.
    let late = Observation { starting_pod_ages_seconds: vec![90.0], ..stuck };
    assert_eq!(decide_fresh(&late).plan.expect("plan").starting_pods, 1);
}

#[test]
fn a_surplus_clock_from_before_autoscaling_was_switched_off_gives_nothing_back_at_once() {
    // Four idle pods. Autoscaling, switched off a day ago while it held them as surplus,
    // comes back on: the day-old clock must not pass for a day of surplus.
    let idle = observation(4, Some(queue(0.0)));
    let last_pass = idle.now_seconds - 86_400.0;
    let memory = Memory {
        surplus_since_seconds: Some(last_pass - 30.0),
        decided_seconds: Some(last_pass),
        replicas: Some(4),
        ..Memory::default()
    };
    let decision = decide(&spec(), &idle, &memory);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::KeepUntilIdleLongEnough), "{}", decision.message);
    assert_eq!(decision.memory.surplus_since_seconds, Some(idle.now_seconds), "the clock starts again");
    assert_eq!(decision.memory_faults, vec![MemoryFault::Stale { age_seconds: 86_400.0 }]);
    // Had the last pass been a moment ago, the surplus would have gone.
    let continuous = Memory { decided_seconds: Some(idle.now_seconds - 5.0), ..memory };
    assert_eq!(decide(&spec(), &idle, &continuous).reason, Reason::ScaleDown);
}

#[test]
fn a_fleet_above_a_lowered_max_is_brought_within_it_whatever_it_would_keep() {
    // maxReplicas lowered from 10 to 3 under 10 ready pods serving 4 images/s: keeping
    // them until idle, or draining to the 6 the arrivals need, would hold the fleet above.
    let lowered = PolicySpec { max_replicas: 3, planned_utilization: 0.75, ..spec() };
    let busy = QueueMetrics { new_arrivals_per_second: 4.0, sustained_admitted_per_second: 4.0, ..queue(0.0) };
    let decision = decide(&lowered, &observation(10, Some(busy)), &Memory::default());
    assert_eq!(decision.replicas, 3, "{:?}: {}", decision.reason, decision.message);
    assert!(decision.message.contains("3 within minReplicas..maxReplicas"), "{}", decision.message);
}

#[test]
fn a_burst_a_clock_behind_saw_begin_is_remembered_in_order() {
    // The last leader remembered a burst beginning at 990; this one, its clock 20 s
    // behind, saw the next begin at 980 on its own, and sees it end now.
    let memory = Memory {
        recent_bursts: vec![Burst { started_seconds: 990.0, peak_backlog_images: 50.0 }],
        burst: Some(Burst { started_seconds: 980.0, peak_backlog_images: 80.0 }),
        ..Memory::default()
    };
    let decision = decide(&spec(), &observation(2, Some(queue(0.0))), &memory);
    let starts: Vec<f64> = decision.memory.recent_bursts.iter().map(|burst| burst.started_seconds).collect();
    assert_eq!(starts, [990.0, 990.0], "never before the last");
    let (_, faults) = decision.memory.checked(1001.0);
    assert_eq!(faults, Vec::new(), "what it wrote comes back whole");
}

#[test]
fn a_fleet_sized_for_steady_traffic_drains_a_few_queued_images_in_its_margin() {
    // At half their throughput, four pods are planned for 2 images/s; the other half is
    // the margin. Five images queued by chance are no reason for a fifth pod: the
    // steady traffic takes half of each pod's throughput, and what is left drains them.
    let half = PolicySpec { planned_utilization: 0.5, ..spec() };
    let a_few_queued = QueueMetrics { sustained_admitted_per_second: 2.0, ..queue(5.0) };
    let decision = decide(&half, &observation(4, Some(a_few_queued)), &Memory::default());
    assert_eq!(decision.plan.expect("plan").needed_replicas, 4);
    assert_eq!(decision.replicas, 4, "{}", decision.message);
    // A burst on top is another matter: 100 images more than the margin drains by the
    // deadline (70 s: 4 pods x 35 images, less the 70 the steady traffic takes).
    let burst = QueueMetrics { sustained_admitted_per_second: 2.0, ..queue(170.0) };
    let decision = decide(&half, &observation(4, Some(burst)), &Memory::default());
    assert_eq!((decision.replicas, decision.reason), (10, Reason::ScaleUp), "{}", decision.message);
}

#[test]
fn scale_up_is_capped_by_max_replicas_and_says_so() {
    let decision = decide_fresh(&observation(1, Some(queue(1000.0))));
    assert_eq!((decision.replicas, decision.reason), (10, Reason::ScaleUp));
    assert!(decision.message.contains("capped by maxReplicas"), "{}", decision.message);
}

#[test]
fn at_max_replicas_more_need_is_reported_not_acted_on() {
    let decision = decide_fresh(&observation(10, Some(queue(5000.0))));
    assert_eq!((decision.replicas, decision.reason), (10, Reason::AtMaxReplicas));
}

#[test]
fn unschedulable_pods_stop_further_scale_up() {
    let limited = Observation { unschedulable_pods: 2, ready_pods: 2, ..observation(4, Some(queue(500.0))) };
    let decision = decide_fresh(&limited);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::ScalingLimited));
    assert!(decision.message.contains("cannot be scheduled"), "{}", decision.message);
}

#[test]
fn a_flow_that_outruns_the_pods_with_a_gpu_asks_for_nodes_while_others_wait_for_one() {
    // 12 images/s on 6 pods of 1 image/s, 4 of them with a GPU and 2 waiting for a node.
    // A flow confirmed once (10 s) still holds the fleet: a burst landing over several
    // seconds reads like that for a pass or two. Confirmed twice (20 s) it outruns the 4
    // pods with a GPU, and all 12 pods its rate needs are asked for now, each a node the
    // cluster starts adding at once, rather than the next 6 after the first 2 nodes come.
    let at = |now_seconds: f64, rate: f64| Observation {
        now_seconds,
        ready_pods: 4,
        unschedulable_pods: 2,
        ..observation(6, Some(arriving(rate)))
    };
    let memory = Memory { surge_since_seconds: Some(1000.0), ..Memory::default() };
    let once = decide(&spec(), &at(1010.0, 12.0), &memory);
    assert_eq!((once.replicas, once.reason), (6, Reason::ScalingLimited), "{}", once.message);
    let twice = decide(&spec(), &at(1020.0, 12.0), &memory);
    assert_eq!((twice.replicas, twice.reason), (10, Reason::ScaleUp), "{}", twice.message);
    assert!(twice.message.contains("2 wait for a GPU"), "{}", twice.message);
    // A flow that outruns the 3 ready pods but not the 4 with a GPU (one starting) needs
    // no node for its sake, whatever its backlog wants.
    let served_with_a_gpu = Observation {
        ready_pods: 3,
        starting_pod_ages_seconds: vec![30.0],
        queue: Some(QueueMetrics { gateway_queue_depth: 200.0, ..arriving(3.5) }),
        ..at(1020.0, 3.5)
    };
    let served = decide(&spec(), &served_with_a_gpu, &memory);
    assert_eq!((served.replicas, served.reason), (6, Reason::ScalingLimited), "{}", served.message);
}

#[test]
fn pods_waiting_for_a_gpu_are_given_back_once_those_with_one_have_been_enough_for_the_confirm_window() {
    // 200 images, drain within 70 s: 3 ready pods do 210, so the 4 pods that asked for a
    // GPU when the burst looked larger, and wait for a node, are not needed.
    let waiting = |now_seconds: f64, arrivals: f64| Observation {
        now_seconds,
        ready_pods: 3,
        unschedulable_pods: 4,
        ..observation(7, Some(QueueMetrics { new_arrivals_per_second: arrivals, ..queue(200.0) }))
    };
    let first = decide_fresh(&waiting(1000.0, 0.0));
    assert_eq!((first.replicas, first.reason), (7, Reason::KeepUntilIdleLongEnough));
    assert_eq!(first.memory.surplus_since_seconds, Some(1000.0), "the clock runs while work waits");

    let not_yet = decide(&spec(), &waiting(1009.0, 0.0), &first.memory);
    assert_eq!(not_yet.replicas, 7, "not for a whole confirm window yet");

    let confirmed = decide(&spec(), &waiting(1010.0, 0.0), &not_yet.memory);
    assert_eq!((confirmed.replicas, confirmed.reason), (3, Reason::ScaleDown));
    assert!(confirmed.message.contains("giving back the 4 waiting for one"), "{}", confirmed.message);

    // Requests still arriving faster than the pods with a GPU serve them (3 images/s
    // at 1 image/s each) will need those pods, node or not.
    let flowing = decide(&spec(), &waiting(1010.0, 3.5), &not_yet.memory);
    assert_eq!(flowing.replicas, 7);

    // Wanting more than the pods with a GPU again restarts the clock.
    let more = Observation { queue: Some(queue(600.0)), ..waiting(1005.0, 0.0) };
    let limited = decide(&spec(), &more, &first.memory);
    assert_eq!(limited.reason, Reason::ScalingLimited);
    let after = decide(&spec(), &waiting(1012.0, 0.0), &limited.memory);
    assert_eq!(after.replicas, 7, "the clock restarted at 1012");
}

#[test]
fn never_below_min_replicas() {
    let at_least_two = PolicySpec { min_replicas: 2, ..spec() };
    let decision = decide(&at_least_two, &observation(2, Some(queue(0.0))), &Memory::default());
    assert_eq!((decision.replicas, decision.reason), (2, Reason::Steady));
}

#[test]
fn no_scale_down_while_pods_start_for_work_that_waits_and_the_idle_clock_waits_for_them() {
    // Five images: one ready pod would do, but they wait.
    let starting =
        Observation { ready_pods: 2, starting_pod_ages_seconds: vec![30.0], ..observation(3, Some(queue(5.0))) };
    let memory = Memory { surplus_since_seconds: Some(0.0), ..Memory::default() };
    let decision = decide(&spec(), &starting, &memory);
    assert_eq!((decision.replicas, decision.reason), (3, Reason::KeepWhileStarting));
    assert_eq!(decision.memory.surplus_since_seconds, Some(1000.0), "the clock restarts");
}

#[test]
fn pods_still_starting_are_given_back_once_nothing_has_waited_for_the_confirm_window() {
    let drained =
        Observation { ready_pods: 2, starting_pod_ages_seconds: vec![30.0, 40.0], ..observation(4, Some(queue(0.0))) };
    let first = decide_fresh(&drained);
    assert_eq!((first.replicas, first.reason), (4, Reason::KeepWhileStarting));
    assert_eq!(first.memory.surplus_since_seconds, Some(1000.0), "nothing waits: the clock runs");

    let not_yet = Observation { now_seconds: 1009.0, ..drained.clone() };
    let second = decide(&spec(), &not_yet, &first.memory);
    assert_eq!((second.replicas, second.reason), (4, Reason::KeepWhileStarting));

    // Kubernetes removes the pods that are not ready first: 4 → 2 gives back the two
    // starting ones; the ready pods keep their own hold, on the same clock.
    let confirmed = Observation { now_seconds: 1010.0, ..drained.clone() };
    let third = decide(&spec(), &confirmed, &second.memory);
    assert_eq!((third.replicas, third.reason), (2, Reason::ScaleDown));
    assert!(third.message.contains("giving back 2 pods not yet ready"), "{}", third.message);
    assert_eq!(third.memory.surplus_since_seconds, Some(1000.0), "the ready pods' clock keeps running");

    let ready_only = Observation { now_seconds: 1060.0, ..observation(2, Some(queue(0.0))) };
    let fourth = decide(&spec(), &ready_only, &third.memory);
    assert_eq!((fourth.replicas, fourth.reason), (1, Reason::ScaleDown), "one start-up after the work drained");
}

#[test]
fn pods_starting_for_a_flow_are_kept_while_it_outruns_the_ready_pods() {
    // Nothing queued this instant, but 5 images/s have been arriving for two ready pods
    // doing 1 image/s each since well before the confirm window.
    let flowing = QueueMetrics { new_arrivals_per_second: 5.0, ..queue(0.0) };
    let starting =
        Observation { ready_pods: 2, starting_pod_ages_seconds: vec![30.0, 40.0], ..observation(4, Some(flowing)) };
    let memory = Memory { surge_since_seconds: Some(900.0), surplus_since_seconds: Some(900.0), ..Memory::default() };
    let decision = decide(&spec(), &starting, &memory);
    assert_eq!(decision.plan.as_ref().map(|plan| plan.surge_replicas), Some(5));
    assert_eq!((decision.replicas, decision.reason), (5, Reason::ScaleUp));
}

#[test]
fn unneeded_pods_are_kept_for_one_start_up_then_given_back() {
    let idle = observation(3, Some(queue(0.0)));
    let first = decide_fresh(&idle);
    assert_eq!((first.replicas, first.reason), (3, Reason::KeepUntilIdleLongEnough));
    assert_eq!(first.memory.surplus_since_seconds, Some(1000.0));

    let later = Observation { now_seconds: 1059.0, ..idle.clone() };
    let second = decide(&spec(), &later, &first.memory);
    assert_eq!((second.replicas, second.reason), (3, Reason::KeepUntilIdleLongEnough));
    assert_eq!(second.memory.surplus_since_seconds, Some(1000.0), "the clock keeps running");

    let after = Observation { now_seconds: 1060.0, ..idle };
    let third = decide(&spec(), &after, &second.memory);
    assert_eq!((third.replicas, third.reason), (1, Reason::ScaleDown));
    assert_eq!(third.memory.surplus_since_seconds, None);
    assert_eq!(third.memory.replicas, Some(1));
}

#[test]
fn no_ready_pod_goes_while_requests_arrive_faster_than_the_ready_pods_serve_them() {
    // Unneeded for a whole start-up by the backlog (10 images, one pod would do), but
    // 4 images/s arrive at three pods of 1 image/s: perhaps a flow not confirmed yet.
    let queued = |per_second: f64| QueueMetrics { queue_depth: 10.0, ..arriving(per_second) };
    let arriving_fast = Observation { now_seconds: 1060.0, ..observation(3, Some(queued(4.0))) };
    let memory = Memory { surplus_since_seconds: Some(1000.0), ..Memory::default() };
    let kept = decide(&spec(), &arriving_fast, &memory);
    assert_eq!((kept.replicas, kept.reason), (3, Reason::KeepWhileTrafficArrives));
    assert!(kept.message.contains("faster than the 3 ready pods serve them"), "{}", kept.message);
    assert_eq!(kept.memory.surplus_since_seconds, Some(1000.0), "the idle clock keeps running");

    // Once they arrive no faster than the pods serve them, the surplus goes at once.
    let served = Observation { now_seconds: 1061.0, ..observation(3, Some(queued(0.5))) };
    let given_back = decide(&spec(), &served, &kept.memory);
    assert_eq!((given_back.replicas, given_back.reason), (1, Reason::ScaleDown));
}

#[test]
fn no_ready_pod_goes_that_the_queue_needs_while_requests_keep_arriving() {
    // A crowd at its peak: 480 images queued on eight pods of 1 image/s, 7.5 images/s
    // arriving. That is no flow (the pods serve 8/s), and the backlog alone would drain
    // by the 70 s deadline on seven; but with the arrivals, seven would serve 0.5/s
    // more than arrive, and the queue would take 16 minutes to drain.
    let crowd = |per_second: f64| QueueMetrics { queue_depth: 480.0, ..arriving(per_second) };
    let memory = Memory { surplus_since_seconds: Some(900.0), ..Memory::default() };
    let peak = decide(&spec(), &observation(8, Some(crowd(7.5))), &memory);
    assert_eq!(peak.plan.as_ref().map(|plan| plan.needed_replicas), Some(7));
    assert_eq!((peak.replicas, peak.reason), (8, Reason::KeepWhileTrafficArrives));
    assert!(peak.message.contains("while requests keep arriving at 7.5/s"), "{}", peak.message);

    // As it fades, the fleet shrinks to what drains the queue by the deadline on top of
    // the arrivals (480 / 70 + 1 = 7.9 images/s), not to what the queue alone needs.
    let fading = decide(&spec(), &observation(10, Some(crowd(1.0))), &memory);
    assert_eq!((fading.replicas, fading.reason), (8, Reason::ScaleDown));
}

#[test]
fn a_fleet_keeping_up_with_a_crowd_keeps_the_pods_that_serve_it() {
    // Eight pods of 1 image/s, nothing queued for a whole start-up, 6 images/s arriving:
    // no flow (the pods serve 8/s) and no backlog, but one pod left would see the
    // queue grow by 5 images a second.
    let memory = Memory { surplus_since_seconds: Some(900.0), ..Memory::default() };
    let crowd = decide(&spec(), &observation(8, Some(arriving(6.0))), &memory);
    assert_eq!((crowd.replicas, crowd.reason), (6, Reason::ScaleDown));
    // As it fades, the fleet follows it down.
    let fading = decide(&spec(), &observation(6, Some(arriving(1.5))), &memory);
    assert_eq!((fading.replicas, fading.reason), (2, Reason::ScaleDown));
}

#[test]
fn an_explicit_scale_down_delay_overrides_the_start_up_time() {
    let quick = PolicySpec { scale_down_delay_seconds: Some(0.0), ..spec() };
    let decision = decide(&quick, &observation(3, Some(queue(0.0))), &Memory::default());
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));
}

#[test]
fn a_need_returning_resets_the_idle_clock() {
    let memory = Memory { surplus_since_seconds: Some(900.0), ..Memory::default() };
    let decision = decide(&spec(), &observation(1, Some(queue(10.0))), &memory);
    assert_eq!(decision.reason, Reason::Steady);
    assert_eq!(decision.memory.surplus_since_seconds, None);
}

#[test]
fn throughput_falls_back_to_the_last_measured_then_to_the_spec() {
    let unmeasured = QueueMetrics { images_per_pod_second: None, ..queue(0.0) };
    let remembered = Memory { images_per_pod_second: Some(2.5), ..Memory::default() };
    let decision = decide(&spec(), &observation(1, Some(unmeasured.clone())), &remembered);
    assert_eq!(decision.plan.expect("plan").images_per_pod_second, 2.5);
    let decision = decide_fresh(&observation(1, Some(unmeasured)));
    assert_eq!(decision.plan.expect("plan").images_per_pod_second, 1.0);
    let nonsense = QueueMetrics { images_per_pod_second: Some(0.0), ..queue(0.0) };
    let decision = decide(&spec(), &observation(1, Some(nonsense)), &remembered);
    assert_eq!(decision.plan.expect("plan").images_per_pod_second, 2.5, "a zero rate is no measurement");
}

#[test]
fn the_start_up_planned_with_is_the_median_of_the_last_pods_seen_ready() {
    // A burst's ten pods started in 60 s and were given back; the one pod left after it
    // started in 30 s. Its start-up alone would make a pod started now look ready in 30 s.
    let burst_pods: Vec<Startup> =
        (0..10).map(|index| Startup { ready_seconds: 100.0 + f64::from(index), seconds: 60.0, pod: None }).collect();
    let memory = Memory { recent_startups: burst_pods, ..Memory::default() };
    let the_one_left = Observation {
        ready_pod_startups: vec![Startup { ready_seconds: 50.0, seconds: 30.0, pod: None }],
        ..observation(1, Some(queue(0.0)))
    };
    let decision = decide(&spec(), &the_one_left, &memory);
    assert_eq!(decision.plan.expect("plan").startup_seconds, 60.0);
    assert_eq!(decision.memory.recent_startups.len(), STARTUPS_REMEMBERED);
    assert_eq!(
        decision.memory.recent_startups[0],
        Startup { ready_seconds: 100.0, seconds: 60.0, pod: None },
        "the pod ready before the burst's is the oldest, and forgotten"
    );
    let held = decide(&spec(), &Observation { queue: None, ..the_one_left.clone() }, &Memory::default());
    assert_eq!(held.memory.recent_startups, the_one_left.ready_pod_startups, "a pass without metrics remembers too");
}

#[test]
fn a_node_clock_far_ahead_drops_nothing_from_the_memory_pass_after_pass() {
    // The kubelet stamped the pod ready ten minutes ahead of the operator's clock: were
    // it remembered, every next pass would drop it from the memory again, and say so.
    let observed = observation(1, Some(queue(0.0)));
    let ahead = Observation {
        ready_pod_startups: vec![Startup { ready_seconds: observed.now_seconds + 600.0, seconds: 30.0, pod: None }],
        ..observed
    };
    let first = decide(&spec(), &ahead, &Memory::default());
    let second = decide(&spec(), &ahead, &first.memory);
    assert_eq!((first.memory_faults, second.memory_faults), (Vec::new(), Vec::new()));
    assert!(second.memory.recent_startups.is_empty());
}

#[test]
fn start_up_falls_back_to_the_spec_until_measured() {
    let unmeasured = Observation { ready_pod_startups: Vec::new(), ..observation(1, Some(queue(0.0))) };
    let slow = PolicySpec { default_startup_seconds: 100.0, ..spec() };
    let decision = decide(&slow, &unmeasured, &Memory::default());
    assert_eq!(decision.plan.expect("plan").deadline_seconds, 110.0);
}

#[test]
fn bounds_given_the_wrong_way_round_do_not_panic() {
    let inverted = PolicySpec { min_replicas: 5, max_replicas: 2, ..spec() };
    let decision = decide(&inverted, &observation(1, Some(queue(0.0))), &Memory::default());
    assert_eq!(decision.replicas, 5);
}

#[test]
fn the_decision_carries_its_inputs() {
    let observed = observation(1, Some(queue(100.0)));
    let decision = decide_fresh(&observed);
    assert_eq!(decision.observation, observed);
    let json = serde_json::to_value(&decision).expect("serializable for status");
    assert_eq!(json["reason"], "ScaleUp");
    assert_eq!(json["plan"]["neededReplicas"], 4);
}

/// Bursts started at `starts`, each with a peak backlog of `peak` images.
fn bursts(starts: &[f64], peak: f64) -> Vec<Burst> {
    starts.iter().map(|&started_seconds| Burst { started_seconds, peak_backlog_images: peak }).collect()
}

fn refusing(queue_depth: f64, rejected_recently: f64) -> QueueMetrics {
    QueueMetrics { rejected_recently, ..queue(queue_depth) }
}

#[test]
fn a_burst_starts_with_the_first_refusal_and_ends_when_no_client_waits() {
    let first = decide_fresh(&observation(1, Some(refusing(16.0, 40.0))));
    assert_eq!(first.memory.burst, Some(Burst { started_seconds: 1000.0, peak_backlog_images: 56.0 }));

    let growing = Observation { now_seconds: 1005.0, ..observation(1, Some(refusing(16.0, 80.0))) };
    let second = decide(&spec(), &growing, &first.memory);
    assert_eq!(second.memory.burst, Some(Burst { started_seconds: 1000.0, peak_backlog_images: 96.0 }));

    let drained = Observation { now_seconds: 1060.0, ..observation(1, Some(queue(5.0))) };
    let third = decide(&spec(), &drained, &second.memory);
    assert_eq!(third.memory.burst, None);
    assert_eq!(third.memory.recent_bursts, vec![Burst { started_seconds: 1000.0, peak_backlog_images: 96.0 }]);
}

#[test]
fn only_the_last_bursts_are_remembered() {
    let starts: Vec<f64> = (0..BURSTS_REMEMBERED).map(|index| 100.0 * index as f64).collect();
    let memory = Memory {
        burst: Some(Burst { started_seconds: 900.0, peak_backlog_images: 50.0 }),
        recent_bursts: bursts(&starts, 50.0),
        ..Memory::default()
    };
    let decision = decide(&spec(), &observation(1, Some(queue(0.0))), &memory);
    let remembered = &decision.memory.recent_bursts;
    assert_eq!(remembered.len(), BURSTS_REMEMBERED);
    assert_eq!(remembered.first().map(|burst| burst.started_seconds), Some(100.0), "the oldest is forgotten");
    assert_eq!(remembered.last().map(|burst| burst.started_seconds), Some(900.0));
}

/// Bursts some 200 s apart, at random moments, with peaks of 90, 200 and 100 images, and
/// pods unneeded since they drained the last.
fn after_bursts_200_s_apart() -> Memory {
    let recent = vec![
        Burst { started_seconds: 450.0, peak_backlog_images: 90.0 },
        Burst { started_seconds: 700.0, peak_backlog_images: 200.0 },
        Burst { started_seconds: 900.0, peak_backlog_images: 100.0 },
    ];
    Memory { recent_bursts: recent, surplus_since_seconds: Some(0.0), ..Memory::default() }
}

#[test]
fn recurring_bursts_keep_warm_the_pods_a_large_one_needs_within_a_start_up() {
    // A large burst, larger than seven in ten of the peaks 90, 100 and 200 (140, where
    // the median is 100), takes three pods to drain within a 60 s start-up at 1 image/s:
    // the typical one would take two.
    let memory = after_bursts_200_s_apart();
    let down = decide(&spec(), &observation(5, Some(queue(0.0))), &memory);
    assert_eq!((down.replicas, down.reason), (3, Reason::ScaleDown));
    assert_eq!(down.plan.as_ref().map(|plan| plan.warm_replicas), Some(3));

    let kept = decide(&spec(), &observation(3, Some(queue(0.0))), &down.memory);
    assert_eq!((kept.replicas, kept.reason), (3, Reason::KeepWarmForBursts));
    assert!(kept.message.contains("keeping 3 warm"), "{}", kept.message);
    assert!(kept.message.contains("(pods for a burst of 140 images)"), "{}", kept.message);

    // Bursts of one size are sized on it: 100 images, two pods.
    let even = Memory { recent_bursts: bursts(&[450.0, 700.0, 900.0], 100.0), ..after_bursts_200_s_apart() };
    let down = decide(&spec(), &observation(5, Some(queue(0.0))), &even);
    assert_eq!(down.plan.map(|plan| plan.warm_replicas), Some(2));

    // Behind a plain Service the warm pods are sized for the typical burst (100): two.
    let plain = decide(&plain_service(), &observation(5, Some(queue(0.0))), &memory);
    assert_eq!(plain.plan.map(|plan| plan.warm_replicas), Some(2));
}

#[test]
fn warm_pods_for_bursts_on_steady_traffic_drain_a_large_one_on_top_of_it() {
    // The bursts above on 1 image/s of steady traffic: within the 60 s start-up the
    // steady traffic takes 60 images of the pods, so the large burst (140) needs four
    // pods, not three.
    let memory = after_bursts_200_s_apart();
    let steady = QueueMetrics { sustained_admitted_per_second: 1.0, ..queue(0.0) };
    let down = decide(&spec(), &observation(5, Some(steady)), &memory);
    assert_eq!(down.plan.as_ref().map(|plan| plan.warm_replicas), Some(4));
    assert_eq!((down.replicas, down.reason), (4, Reason::ScaleDown));
}

#[test]
fn behind_the_gateway_a_pod_started_on_top_of_the_warm_pods_must_have_more_work_than_one_before_a_pattern() {
    // 150 images on two ready pods with 60 s start-ups: without a pattern each new pod
    // must have 10 s of work once ready, so the deadline is 70 s, the two pods do 140 by
    // then and a third is started for the last 10 images. Kept warm for bursts of 100
    // (two pods), a pod on top must have 15 s: the deadline is 75 s and the two do all
    // 150 by then.
    let gateway = spec();
    let backlog = observation(2, Some(queue(150.0)));
    let before_a_pattern = decide(&gateway, &backlog, &Memory::default());
    assert_eq!((before_a_pattern.replicas, before_a_pattern.reason), (3, Reason::ScaleUp));
    assert_eq!(before_a_pattern.plan.map(|plan| plan.deadline_seconds), Some(70.0));

    let memory = Memory { recent_bursts: bursts(&[450.0, 700.0, 900.0], 100.0), ..Memory::default() };
    let warm = decide(&gateway, &backlog, &memory);
    assert_eq!((warm.replicas, warm.reason), (2, Reason::Steady));
    let plan = warm.plan.expect("plan");
    assert_eq!((plan.warm_replicas, plan.deadline_seconds, plan.useful_work_seconds), (2, 75.0, Some(15.0)));
    assert!(warm.message.contains("drain within 75s (a start-up and 15s of work)"), "{}", warm.message);

    // A burst that needs more than the warm pods still gets them: 170 images leave 20
    // past the deadline, two new pods' worth of 15 s.
    let larger = decide(&gateway, &observation(2, Some(queue(170.0))), &memory);
    assert_eq!((larger.replicas, larger.reason), (4, Reason::ScaleUp));

    // Behind a plain Service the pods idle while refused clients stay away: 10 s stands
    // (and the pods drain at 0.75 of their pace: the two do 105 by 70 s, the rest takes
    // six new pods' 7.5 each).
    let plain = decide(&plain_service(), &backlog, &memory);
    assert_eq!((plain.replicas, plain.plan.map(|plan| plan.deadline_seconds)), (8, Some(70.0)));
}

#[test]
fn behind_a_plain_service_pods_drain_a_backlog_at_a_lower_pace() {
    // 100 images on one ready pod at 1 image/s, 60 s start-ups: the deadline is 70 s.
    // Behind the gateway the pod does 70 and three new pods 10 each; behind a plain
    // Service, where the pods idle while refused clients stay away, the pod does 52.5
    // and each new one 7.5: seven more.
    let backlog = observation(1, Some(queue(100.0)));
    let gateway = decide_fresh(&backlog);
    assert_eq!((gateway.replicas, gateway.reason), (4, Reason::ScaleUp));
    let plain = decide(&plain_service(), &backlog, &Memory::default());
    assert_eq!((plain.replicas, plain.reason), (8, Reason::ScaleUp));
    assert_eq!(plain.plan.map(|plan| plan.deadline_seconds), Some(70.0));
    // Steady traffic alone is sized alike behind either: 3 images/s are three pods.
    let steady = observation(1, Some(QueueMetrics { sustained_admitted_per_second: 3.0, ..queue(0.0) }));
    let (gateway, plain) = (decide_fresh(&steady), decide(&plain_service(), &steady, &Memory::default()));
    assert_eq!((gateway.replicas, plain.replicas), (3, 3));
}

#[test]
fn with_start_ups_longer_than_twice_the_target_warm_pods_drain_a_large_burst_within_it() {
    // Start-ups of 120 s, a 30 s target, bursts of 100 images every 200 s at 1 image/s
    // per pod: within one start-up 1 pod would do, but the burst would wait 100 s, and a
    // pod started for it arrives after it is over. Within twice the target (60 s): 2.
    let memory = Memory {
        recent_bursts: bursts(&[500.0, 700.0, 900.0], 100.0),
        surplus_since_seconds: Some(0.0),
        ..Memory::default()
    };
    let slow = Observation { ready_pod_startups: started_in(120.0), ..observation(4, Some(queue(0.0))) };
    let decision = decide(&spec(), &slow, &memory);
    assert_eq!(decision.plan.as_ref().map(|plan| plan.warm_replicas), Some(2));
    assert_eq!((decision.replicas, decision.reason), (2, Reason::ScaleDown));
    // A 90 s target leaves the start-up the shorter: 100 images in 120 s, 1 pod.
    let lenient = PolicySpec { target_queue_latency_seconds: 90.0, ..spec() };
    let decision = decide(&lenient, &slow, &memory);
    assert_eq!(decision.plan.map(|plan| plan.warm_replicas), Some(1));
}

#[test]
fn after_bursts_that_come_far_apart_the_surplus_goes_once_the_drain_is_confirmed() {
    // Bursts 400 s apart, more than five 60 s start-ups: one within a start-up of the
    // last is the exception, so the pods left over go after the 15 s confirm window.
    let sparse = Memory {
        recent_bursts: bursts(&[0.0, 400.0, 800.0], 30.0),
        surplus_since_seconds: Some(985.0),
        ..Memory::default()
    };
    let decision = decide(&spec(), &observation(4, Some(queue(0.0))), &sparse);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));

    // One gap of 250 s among them: held for a whole start-up as usual.
    let one_close = Memory { recent_bursts: bursts(&[0.0, 550.0, 800.0], 30.0), ..sparse.clone() };
    let held = decide(&spec(), &observation(4, Some(queue(0.0))), &one_close);
    assert_eq!((held.replicas, held.reason), (4, Reason::KeepUntilIdleLongEnough));

    // An explicit scaleDownDelaySeconds is the user's, whatever the bursts.
    let explicit = PolicySpec { scale_down_delay_seconds: Some(120.0), ..spec() };
    let kept = decide(&explicit, &observation(4, Some(queue(0.0))), &sparse);
    assert_eq!((kept.replicas, kept.reason), (4, Reason::KeepUntilIdleLongEnough));
}

#[test]
fn warm_pods_are_kept_but_never_started_for_their_own_sake() {
    let memory = Memory { recent_bursts: bursts(&[450.0, 700.0, 900.0], 200.0), ..Memory::default() };
    let decision = decide(&spec(), &observation(1, Some(queue(0.0))), &memory);
    assert_eq!(decision.plan.as_ref().map(|plan| plan.warm_replicas), Some(4));
    assert_eq!((decision.replicas, decision.reason), (1, Reason::Steady));
}

#[test]
fn pods_that_start_within_the_target_are_not_kept_warm() {
    // A start-up and the 10 s confirmation time within the 30 s target: pods started
    // when a burst is seen serve it in time.
    let memory = Memory { recent_bursts: bursts(&[450.0, 700.0, 900.0], 200.0), ..Memory::default() };
    for (startup, warm) in [(0.0, 0), (20.0, 0), (21.0, 10)] {
        let quick = Observation { ready_pod_startups: started_in(startup), ..observation(3, Some(queue(0.0))) };
        let decision = decide(&spec(), &quick, &memory);
        assert_eq!(decision.plan.map(|plan| plan.warm_replicas), Some(warm), "start-up {startup}s");
    }
}

#[test]
fn pods_that_start_within_the_target_are_not_started_ahead_of_a_clock() {
    // Bursts of 200 images every 600 s, the next due at 1800: with 60 s start-ups their
    // pods start at 1730 (the test above); with 20 s ones, when the burst is seen.
    let memory = Memory { recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0), ..Memory::default() };
    let quick = |now_seconds: f64| Observation {
        now_seconds,
        ready_pod_startups: started_in(20.0),
        ..observation(1, Some(queue(0.0)))
    };
    for now in [1770.0, 1790.0, 1800.0] {
        let decision = decide(&spec(), &quick(now), &memory);
        assert_eq!((decision.replicas, decision.reason), (1, Reason::Steady), "at {now}s");
        assert_eq!(decision.plan.and_then(|plan| plan.clock), None);
    }
}

#[test]
fn two_bursts_are_not_yet_a_pattern() {
    let memory =
        Memory { recent_bursts: bursts(&[700.0, 900.0], 200.0), surplus_since_seconds: Some(0.0), ..Memory::default() };
    let decision = decide(&spec(), &observation(4, Some(queue(0.0))), &memory);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));
}

#[test]
fn warm_pods_are_given_back_when_no_burst_comes_for_longer_than_they_are_worth() {
    // Bursts some 200 s apart, the last at 900. Bursts that come at random moments may
    // well come after two or three typical gaps: the pods stay warm until the
    // break-even of fifteen 60 s start-ups (900 s) has passed with none.
    let memory = Memory {
        recent_bursts: bursts(&[450.0, 700.0, 900.0], 200.0),
        surplus_since_seconds: Some(0.0),
        ..Memory::default()
    };
    let overdue = Observation { now_seconds: 1500.0, ..observation(4, Some(queue(0.0))) };
    assert_eq!(decide(&spec(), &overdue, &memory).reason, Reason::KeepWarmForBursts);
    let over = Observation { now_seconds: 1801.0, ..observation(4, Some(queue(0.0))) };
    let decision = decide(&spec(), &over, &memory);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));
}

/// Arrivals the gateway counts at `per_second`, with nothing queued yet.
fn arriving(per_second: f64) -> QueueMetrics {
    QueueMetrics { new_arrivals_per_second: per_second, ..queue(0.0) }
}

#[test]
fn arrivals_that_keep_outrunning_the_pods_get_pods_for_their_rate() {
    // 6 images/s on two pods of 1 image/s: outrun from the first pass on, pods for the
    // rate only once it has lasted the confirmation time (10 s).
    let at = |now_seconds: f64| Observation { now_seconds, ..observation(2, Some(arriving(6.0))) };
    let first = decide(&spec(), &at(1000.0), &Memory::default());
    assert_eq!(first.memory.surge_since_seconds, Some(1000.0));
    assert_eq!(first.plan.as_ref().map(|plan| plan.surge_replicas), Some(0));
    assert_eq!(first.replicas, 2, "one pass is no flow");
    let early = decide(&spec(), &at(1009.0), &first.memory);
    assert_eq!((early.replicas, early.memory.surge_since_seconds), (2, Some(1000.0)));
    let confirmed = decide(&spec(), &at(1010.0), &early.memory);
    assert_eq!(confirmed.plan.as_ref().map(|plan| plan.surge_replicas), Some(6));
    assert_eq!((confirmed.replicas, confirmed.reason), (6, Reason::ScaleUp));
}

#[test]
fn a_burst_that_has_stopped_arriving_is_no_flow_when_it_is_confirmed() {
    // 6 images/s over the arrivals window on two pods of 1 image/s, outrunning them since
    // 1000 s: at 1010 s the confirmation time has passed. Over the gateway's latest two
    // scrapes nothing came (the burst's last requests are in the arrivals window only):
    // no pods for its rate, though the flow's clock keeps running, and its pods come as
    // soon as requests are seen arriving again, at half the ready pods' pace or more.
    let memory = Memory { surge_since_seconds: Some(1000.0), ..Memory::default() };
    let latest = |per_second: Option<f64>| Observation {
        now_seconds: 1010.0,
        ..observation(2, Some(QueueMetrics { gateway_latest_arrivals_per_second: per_second, ..arriving(6.0) }))
    };
    let stopped = decide(&spec(), &latest(Some(0.0)), &memory);
    assert_eq!(stopped.plan.as_ref().map(|plan| plan.surge_replicas), Some(0));
    assert_eq!(stopped.replicas, 2, "{}", stopped.message);
    assert_eq!(stopped.memory.surge_since_seconds, Some(1000.0));
    let trickling = decide(&spec(), &latest(Some(0.9)), &memory);
    assert_eq!(trickling.replicas, 2, "under half of the 2 images/s the ready pods serve");
    for still in [Some(1.0), Some(6.0), None] {
        let decision = decide(&spec(), &latest(still), &memory);
        assert_eq!(decision.replicas, 6, "latest arrivals {still:?}: {}", decision.message);
    }
}

#[test]
fn steady_traffic_the_ready_pods_serve_is_no_flow_even_above_their_planned_share() {
    // Three pods of 1 image/s planned at 75 %: 2.25 images/s is their planned share, 3
    // their throughput, and a sustained 2.2 images/s keeps them. Noise that reads 2.8
    // images/s pass after pass is served (the queue does not grow): no flow, no pod
    // started. 3.2 images/s outruns them and is a flow once confirmed.
    let planned = PolicySpec { planned_utilization: 0.75, ..spec() };
    let steady = |rate: f64| QueueMetrics { sustained_admitted_per_second: 2.2, ..arriving(rate) };
    let at = |now_seconds: f64, rate: f64| Observation { now_seconds, ..observation(3, Some(steady(rate))) };
    let mut memory = Memory::default();
    for now in [1000.0, 1005.0, 1010.0, 1015.0, 1020.0] {
        let served = decide(&planned, &at(now, 2.8), &memory);
        assert_eq!(served.memory.surge_since_seconds, None);
        assert_eq!((served.replicas, served.reason), (3, Reason::Steady), "{}", served.message);
        memory = served.memory;
    }
    let outrun = decide(&planned, &at(1025.0, 3.2), &memory);
    assert_eq!(outrun.memory.surge_since_seconds, Some(1025.0));
    let confirmed = decide(&planned, &at(1035.0, 3.2), &outrun.memory);
    // 3.2 images/s at 0.75 image/s planned per pod: 5 pods.
    assert_eq!((confirmed.replicas, confirmed.reason), (5, Reason::ScaleUp));
}

#[test]
fn a_surge_that_stops_before_it_is_confirmed_starts_nothing_and_is_forgotten() {
    let surging = Observation { now_seconds: 1000.0, ..observation(2, Some(arriving(30.0))) };
    let first = decide(&spec(), &surging, &Memory::default());
    // The burst is in: the rate falls within what the two pods serve.
    let over = Observation { now_seconds: 1015.0, ..observation(2, Some(arriving(1.5))) };
    let after = decide(&spec(), &over, &first.memory);
    assert_eq!(after.memory.surge_since_seconds, None);
    assert_eq!(after.plan.as_ref().map(|plan| plan.surge_replicas), Some(0));
    assert_eq!(after.replicas, 2);
}

#[test]
fn pods_for_a_flow_come_on_top_of_those_for_its_backlog() {
    // 90 images queued on one pod need two new ones by the 70 s deadline (one start-up
    // and 10 s: the ready pod does 70, each new one 10); a confirmed flow of 3 images/s
    // needs 3 more.
    let memory = Memory { surge_since_seconds: Some(900.0), ..Memory::default() };
    let flowing = QueueMetrics { gateway_queue_depth: 90.0, ..arriving(3.0) };
    let decision = decide(&spec(), &observation(1, Some(flowing)), &memory);
    let plan = decision.plan.as_ref().expect("a plan");
    assert_eq!((plan.surge_replicas, plan.needed_replicas), (3, 6), "{plan:?}");

    // Behind a plain Service both at 0.75 of the pace, the pods idling while refused
    // clients stay away: five new pods for the 90 (52.5 + 5 x 7.5), four for the flow.
    let plain =
        decide(&plain_service(), &observation(1, Some(QueueMetrics { queue_depth: 90.0, ..arriving(3.0) })), &memory);
    let plan = plain.plan.as_ref().expect("a plan");
    assert_eq!((plan.surge_replicas, plan.needed_replicas), (4, 10), "{plan:?}");
}

/// The queue as seen with a gateway in front: `gateway` requests in its queue, the
/// oldest `gateway_age` seconds old, and `pods` queued in the pods.
fn behind_gateway(pods: f64, gateway: f64, gateway_age: f64) -> QueueMetrics {
    QueueMetrics { gateway_queue_depth: gateway, gateway_oldest_queued_age_seconds: gateway_age, ..queue(pods) }
}

/// 0..10 replicas: the fleet may go to zero (the gateway holds requests meanwhile).
fn to_zero() -> PolicySpec {
    PolicySpec { min_replicas: 0, ..spec() }
}

/// No pod at all: nothing ready, nothing starting, no queue wait observed lately.
fn empty_fleet(queue_metrics: QueueMetrics) -> Observation {
    let idle = QueueMetrics { queue_wait_p95_seconds: None, ..queue_metrics };
    observation(0, Some(idle))
}

#[test]
fn the_gateways_queue_is_backlog_like_the_pods_queues() {
    // 20 in the pods, 80 in the gateway: as many as 20 queued and 80 refused.
    let decision = decide_fresh(&observation(1, Some(behind_gateway(20.0, 80.0, 0.0))));
    let plan = decision.plan.expect("plan");
    assert_eq!((plan.backlog_images, plan.waiting_clients), (100.0, 0.0));
    assert_eq!((decision.replicas, decision.reason), (4, Reason::ScaleUp));
}

#[test]
fn the_oldest_request_in_the_gateway_sets_the_deadline_when_it_is_older() {
    let far = PolicySpec { target_queue_latency_seconds: 300.0, ..spec() };
    let older_in_gateway = QueueMetrics { oldest_queued_age_seconds: 10.0, ..behind_gateway(16.0, 50.0, 100.0) };
    let decision = decide(&far, &observation(1, Some(older_in_gateway)), &Memory::default());
    assert_eq!(decision.plan.expect("plan").deadline_seconds, 200.0);
    let older_in_pods = QueueMetrics { oldest_queued_age_seconds: 120.0, ..behind_gateway(16.0, 50.0, 100.0) };
    let decision = decide(&far, &observation(1, Some(older_in_pods)), &Memory::default());
    assert_eq!(decision.plan.expect("plan").deadline_seconds, 180.0);
}

#[test]
fn with_no_refusals_the_gateways_queue_says_a_burst_is_on_and_how_large() {
    let first = decide_fresh(&observation(1, Some(behind_gateway(16.0, 60.0, 2.0))));
    assert_eq!(first.memory.burst, Some(Burst { started_seconds: 1000.0, peak_backlog_images: 76.0 }));
    let growing = Observation { now_seconds: 1005.0, ..observation(4, Some(behind_gateway(16.0, 90.0, 7.0))) };
    let second = decide(&spec(), &growing, &first.memory);
    assert_eq!(second.memory.burst, Some(Burst { started_seconds: 1000.0, peak_backlog_images: 106.0 }));
    let drained = Observation { now_seconds: 1070.0, ..observation(4, Some(behind_gateway(3.0, 0.0, 0.0))) };
    let third = decide(&spec(), &drained, &second.memory);
    assert_eq!(third.memory.burst, None, "the gateway's queue is empty: the burst is over");
    assert_eq!(third.memory.recent_bursts, vec![Burst { started_seconds: 1000.0, peak_backlog_images: 106.0 }]);
}

#[test]
fn a_request_waiting_at_zero_pods_starts_pods_at_once_sized_with_the_remembered_throughput() {
    // 30 requests in the gateway, no throughput measured lately, 2.5 images/s
    // remembered: a new pod does 25 between its start-up (60 s) and the deadline
    // (70 s): 2 pods.
    let waiting = QueueMetrics { images_per_pod_second: None, ..behind_gateway(0.0, 30.0, 4.0) };
    let remembered = Memory { replicas: Some(0), images_per_pod_second: Some(2.5), ..Memory::default() };
    let decision = decide(&to_zero(), &empty_fleet(waiting.clone()), &remembered);
    assert_eq!((decision.replicas, decision.reason), (2, Reason::ScaleUp));
    assert!(decision.message.contains("scaling up from 0 to 2"), "{}", decision.message);
    // One request is enough to start one pod.
    let one = QueueMetrics { gateway_queue_depth: 1.0, ..waiting };
    let decision = decide(&to_zero(), &empty_fleet(one), &remembered);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleUp));
}

#[test]
fn an_empty_fleet_with_nothing_waiting_stays_empty_whatever_old_rates_say() {
    // Ended pods' series still give a steady rate in the long window; nothing waits.
    let leftover = QueueMetrics { sustained_admitted_per_second: 3.0, ..behind_gateway(0.0, 0.0, 0.0) };
    let decision = decide(&to_zero(), &empty_fleet(leftover), &Memory::default());
    assert_eq!((decision.replicas, decision.reason), (0, Reason::Steady));
}

#[test]
fn the_last_pod_goes_after_the_scale_down_delay_with_no_traffic() {
    let idle = empty_fleet(queue(0.0));
    let idle = Observation { replicas: 1, ready_pods: 1, ..idle };
    let first = decide(&to_zero(), &idle, &Memory::default());
    assert_eq!((first.replicas, first.reason), (1, Reason::KeepUntilIdleLongEnough));
    let later = Observation { now_seconds: 1060.0, ..idle };
    let second = decide(&to_zero(), &later, &first.memory);
    assert_eq!((second.replicas, second.reason), (0, Reason::ScaleDown));
    // The same fleet with min 1 keeps its pod.
    let kept = decide(&spec(), &later, &first.memory);
    assert_eq!(kept.replicas, 1);
}

#[test]
fn traffic_with_nothing_queued_keeps_the_last_pod_and_restarts_the_idle_clock() {
    // An image began inference within the rate window (a queue-wait p95 exists), none
    // is queued, none is needed for a backlog.
    let trickle = observation(1, Some(queue(0.0)));
    let memory = Memory { surplus_since_seconds: Some(900.0), ..Memory::default() };
    let decision = decide(&to_zero(), &trickle, &memory);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::KeepWhileTrafficArrives));
    assert_eq!(decision.memory.surplus_since_seconds, None);
    assert_eq!(decision.plan.expect("plan").needed_replicas, 0);
    // Traffic never starts a pod for its own sake.
    let at_zero = observation(0, Some(queue(0.0)));
    assert_eq!(decide(&to_zero(), &at_zero, &Memory::default()).replicas, 0);
}

#[test]
fn a_larger_idle_fleet_steps_down_to_one_before_zero() {
    let idle = Observation { replicas: 3, ready_pods: 3, ..empty_fleet(queue(0.0)) };
    let memory = Memory { surplus_since_seconds: Some(900.0), ..Memory::default() };
    let first = decide(&to_zero(), &idle, &memory);
    assert_eq!((first.replicas, first.reason), (1, Reason::ScaleDown));
    assert!(first.message.contains("the last pod goes once idle for 60s"), "{}", first.message);
    let one = Observation { replicas: 1, ready_pods: 1, now_seconds: 1005.0, ..idle };
    let second = decide(&to_zero(), &one, &first.memory);
    assert_eq!((second.replicas, second.reason), (1, Reason::KeepUntilIdleLongEnough));
    let later = Observation { now_seconds: 1065.0, ..one };
    let third = decide(&to_zero(), &later, &second.memory);
    assert_eq!((third.replicas, third.reason), (0, Reason::ScaleDown));
}

#[test]
fn bursts_far_apart_keep_no_pod_warm() {
    // Bursts some 1000 s apart (at random moments: no clock), more than fifteen 60 s
    // start-ups.
    let memory = Memory {
        recent_bursts: bursts(&[0.0, 1200.0, 2000.0], 200.0),
        surplus_since_seconds: Some(2100.0),
        ..Memory::default()
    };
    let quiet = Observation { now_seconds: 2200.0, replicas: 4, ready_pods: 4, ..empty_fleet(queue(0.0)) };
    let decision = decide(&to_zero(), &quiet, &memory);
    assert_eq!(decision.plan.as_ref().map(|plan| plan.warm_replicas), Some(0));
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));
    // Some 800 s apart they would be kept.
    let rhythm = Memory { recent_bursts: bursts(&[400.0, 1300.0, 2000.0], 200.0), ..memory };
    let decision = decide(&to_zero(), &quiet, &rhythm);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::KeepWarmForBursts));
}

#[test]
fn bursts_on_a_clock_give_their_pods_back_between_them_and_get_them_back_a_lead_ahead_of_the_next() {
    // Bursts of 200 images every 600 s: four pods drain one within a 60 s start-up.
    let memory = Memory {
        recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0),
        surplus_since_seconds: Some(1285.0),
        ..Memory::default()
    };
    // Drained at 1300: the next is not due for 500 s, so the four go once the drain is
    // confirmed instead of waiting warm.
    let drained = Observation { now_seconds: 1300.0, ..observation(4, Some(queue(0.0))) };
    let down = decide(&spec(), &drained, &memory);
    assert_eq!(down.plan.as_ref().map(|plan| plan.warm_replicas), Some(0));
    assert_eq!((down.replicas, down.reason), (1, Reason::ScaleDown));

    // The next is due at 1800; its pods start a start-up (60 s) and a confirmation time
    // (10 s) ahead of it, the clock having no jitter.
    let early = Observation { now_seconds: 1729.0, ..observation(1, Some(queue(0.0))) };
    assert_eq!(decide(&spec(), &early, &down.memory).replicas, 1);
    let ahead = Observation { now_seconds: 1730.0, ..early };
    let up = decide(&spec(), &ahead, &down.memory);
    assert_eq!((up.replicas, up.reason), (4, Reason::WarmUpForNextBurst));
    assert!(up.message.contains("every 600s and the next is due in 70s"), "{}", up.message);

    // Started, they wait for it as warm pods do.
    let waiting = Observation { now_seconds: 1800.0, ..observation(4, Some(queue(0.0))) };
    let kept = decide(&spec(), &waiting, &up.memory);
    assert_eq!((kept.replicas, kept.reason), (4, Reason::KeepWarmForBursts));
}

#[test]
fn an_hourly_jobs_pods_come_a_lead_ahead_of_each_run_and_after_a_run_skipped_of_the_next() {
    // Runs of 200 images every hour, the one due at 10800 skipped: far beyond the gap
    // over which keeping pods warm pays, but on a clock, so nothing is kept through it.
    let memory = Memory { recent_bursts: bursts(&[0.0, 3600.0, 7200.0], 200.0), ..Memory::default() };
    let quiet = |now_seconds: f64| Observation { now_seconds, ..observation(1, Some(queue(0.0))) };
    let between = decide(&spec(), &quiet(9000.0), &memory);
    assert_eq!((between.replicas, between.plan.as_ref().map(|plan| plan.warm_replicas)), (1, Some(0)));
    let ahead = decide(&spec(), &quiet(10730.0), &memory);
    assert_eq!((ahead.replicas, ahead.reason), (4, Reason::WarmUpForNextBurst));

    // The run due at 10800 never came: its window closed 10 s after it, and the pods
    // were given back; the next run, at 14400, is prepared for all the same.
    let skipped = decide(&spec(), &quiet(10811.0), &memory);
    assert_eq!(skipped.replicas, 1);
    let next = decide(&spec(), &quiet(14330.0), &memory);
    assert_eq!((next.replicas, next.reason), (4, Reason::WarmUpForNextBurst));
    assert!(next.message.contains("every 3600s and the next is due in 70s"), "{}", next.message);
    assert!(next.message.contains("from 1 to 4 (pods for a burst of 200 images)"), "{}", next.message);

    // Three runs in a row missed: the job has stopped, and nothing is started for it.
    assert_eq!(decide(&spec(), &quiet(21530.0), &memory).replicas, 1);
}

#[test]
fn the_short_hold_of_bursts_on_a_clock_starts_once_the_drain_is_done() {
    // Bursts every 600 s. At 1240 the one of 1200 still drains from the pods' queues (40
    // images, nothing in front of them): one pod would do by the deadline, and the pods
    // have been more than enough since 1220, but the hold of bursts on a clock (the
    // confirmation time) is for the pods left over once the drain is confirmed: its
    // clock starts when nothing waits, not while the burst's own pods drain it.
    let memory = Memory {
        recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0),
        surplus_since_seconds: Some(1220.0),
        ..Memory::default()
    };
    let draining = Observation { now_seconds: 1240.0, ..observation(4, Some(queue(40.0))) };
    let kept = decide(&spec(), &draining, &memory);
    assert_eq!((kept.replicas, kept.reason), (4, Reason::KeepUntilIdleLongEnough), "{}", kept.message);
    assert_eq!(kept.memory.surplus_since_seconds, Some(1240.0));
    let drained = |now_seconds: f64| Observation { now_seconds, ..observation(4, Some(queue(0.0))) };
    let not_yet = decide(&spec(), &drained(1249.0), &kept.memory);
    assert_eq!(not_yet.replicas, 4);
    let down = decide(&spec(), &drained(1250.0), &not_yet.memory);
    assert_eq!((down.replicas, down.reason), (1, Reason::ScaleDown), "{}", down.message);
}

#[test]
fn pods_started_for_a_burst_on_a_clock_that_does_not_come_are_given_back() {
    // Due at 1800, it may come up to 10 s later; none by 1821, with the pods unneeded
    // since the window closed: they go.
    let memory = Memory {
        recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0),
        surplus_since_seconds: Some(1811.0),
        ..Memory::default()
    };
    let missed = Observation { now_seconds: 1821.0, ..observation(4, Some(queue(0.0))) };
    let decision = decide(&spec(), &missed, &memory);
    assert_eq!((decision.replicas, decision.reason), (1, Reason::ScaleDown));
}

#[test]
fn bursts_on_a_clock_too_close_for_giving_back_to_pay_keep_their_pods_warm() {
    // Every 150 s: pods given back after one would have to start again 70 s ahead of the
    // next, after its drain and hold; less than a start-up of idleness saved.
    let memory = Memory {
        recent_bursts: bursts(&[600.0, 750.0, 900.0], 200.0),
        surplus_since_seconds: Some(0.0),
        ..Memory::default()
    };
    let decision = decide(&spec(), &observation(4, Some(queue(0.0))), &memory);
    assert_eq!((decision.replicas, decision.reason), (4, Reason::KeepWarmForBursts));
}

#[test]
fn a_burst_on_a_clock_keeps_its_warm_pods_while_it_is_on() {
    let memory = Memory {
        recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0),
        burst: Some(Burst { started_seconds: 1800.0, peak_backlog_images: 20.0 }),
        surplus_since_seconds: Some(0.0),
        ..Memory::default()
    };
    let on = Observation { now_seconds: 1830.0, ..observation(4, Some(refusing(16.0, 4.0))) };
    let decision = decide(&spec(), &on, &memory);
    assert_eq!(decision.plan.as_ref().map(|plan| plan.warm_replicas), Some(4));
    assert_eq!((decision.replicas, decision.reason), (4, Reason::KeepWarmForBursts));
}

#[test]
fn the_burst_a_clock_said_was_due_is_no_flow_however_fast_it_arrives() {
    // Bursts of up to 200 images every 600 s; the one due at 1800 arrives at 30 images/s
    // on four pods of 1 image/s, outrunning them since 1800.
    let memory = |peak_so_far: f64| Memory {
        recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0),
        burst: Some(Burst { started_seconds: 1800.0, peak_backlog_images: peak_so_far }),
        surge_since_seconds: Some(1800.0),
        ..Memory::default()
    };
    let arriving_fast = QueueMetrics { gateway_queue_depth: 100.0, ..arriving(30.0) };
    let on = Observation { now_seconds: 1812.0, ..observation(4, Some(arriving_fast)) };
    let expected = decide(&spec(), &on, &memory(100.0));
    assert_eq!(expected.plan.as_ref().map(|plan| plan.surge_replicas), Some(0));
    // Past the largest of the clock's bursts, it is more than the one due: a flow.
    let larger = decide(&spec(), &on, &memory(250.0));
    assert_eq!(larger.plan.as_ref().map(|plan| plan.surge_replicas), Some(30));
    assert!(larger.replicas > expected.replicas, "{} vs {}", larger.replicas, expected.replicas);
}

#[test]
fn a_burst_no_clock_said_was_due_brings_a_flow_like_any_other() {
    // Phases of traffic on a 600 s clock; one begins at `started` and takes 5 images/s on
    // the one pod there, outrunning it since it began.
    let decide_phase = |starts: &[f64], started: f64| {
        let memory = Memory {
            recent_bursts: bursts(starts, 200.0),
            burst: Some(Burst { started_seconds: started, peak_backlog_images: 30.0 }),
            surge_since_seconds: Some(started),
            ..Memory::default()
        };
        let flowing = QueueMetrics { gateway_queue_depth: 30.0, ..arriving(5.0) };
        decide(&spec(), &Observation { now_seconds: started + 12.0, ..observation(1, Some(flowing)) }, &memory)
    };
    let surge = |decision: &Decision| decision.plan.as_ref().map(|plan| plan.surge_replicas);
    // The third phase makes the clock: none said it was due, nothing was started ahead.
    let making_the_clock = decide_phase(&[0.0, 600.0], 1200.0);
    assert!(making_the_clock.plan.as_ref().is_some_and(|plan| plan.clock.is_some()), "three phases keep a clock");
    assert_eq!(surge(&making_the_clock), Some(5), "a flow like any other");
    assert_eq!((making_the_clock.replicas, making_the_clock.reason), (6, Reason::ScaleUp));
    // Three beats passed without a burst: the clock had stopped, and started nothing
    // ahead of this one, though it falls on a beat.
    let after_the_clock_stopped = decide_phase(&[0.0, 600.0, 1200.0], 3600.0);
    assert_eq!(surge(&after_the_clock_stopped), Some(5));
    // The same phase, when the clock said it was due, is the one expected.
    let on_the_clock = decide_phase(&[-600.0, 0.0, 600.0], 1200.0);
    assert_eq!(surge(&on_the_clock), Some(0));
    assert!(on_the_clock.replicas < making_the_clock.replicas);
}

#[test]
fn a_raised_minimum_between_bursts_on_a_clock_is_a_scale_up_not_a_warm_up() {
    let memory = Memory { recent_bursts: bursts(&[0.0, 600.0, 1200.0], 200.0), ..Memory::default() };
    let at_least_three = PolicySpec { min_replicas: 3, ..spec() };
    let between = Observation { now_seconds: 1300.0, ..observation(1, Some(queue(0.0))) };
    let decision = decide(&at_least_three, &between, &memory);
    assert_eq!((decision.replicas, decision.reason), (3, Reason::ScaleUp));
}

#[test]
fn a_forged_throughput_in_memory_does_not_scale_the_fleet_to_its_maximum() {
    // No image processed in the window: the remembered throughput would stand in, and
    // at 1e-300 images/s 20 queued images would need every pod there may be.
    let unmeasured = QueueMetrics { images_per_pod_second: None, ..queue(20.0) };
    let forged = Memory { images_per_pod_second: Some(1e-300), ..Memory::default() };
    let decision = decide(&spec(), &observation(1, Some(unmeasured.clone())), &forged);
    assert_eq!(decision.replicas, decide_fresh(&observation(1, Some(unmeasured))).replicas);
    assert_eq!(decision.replicas, 1, "the default throughput drains 20 images in time on one pod");
    assert!(matches!(decision.memory_faults.as_slice(), [MemoryFault::ImplausibleThroughput { .. }]));
    assert_eq!(decision.memory.images_per_pod_second, Some(1.0), "the memory passed on is sound again");
}

#[test]
fn a_measured_throughput_out_of_range_is_no_measurement() {
    let broken = QueueMetrics { images_per_pod_second: Some(1e-9), ..queue(20.0) };
    let memory = Memory { images_per_pod_second: Some(1.0), ..Memory::default() };
    let decision = decide(&spec(), &observation(1, Some(broken)), &memory);
    assert_eq!(decision.replicas, 1);
    assert_eq!(decision.plan.map(|plan| plan.images_per_pod_second), Some(1.0), "the remembered one stands in");
}

#[test]
fn a_surplus_clock_set_ahead_of_now_does_not_keep_unneeded_pods() {
    // A day ahead, the surplus clock as remembered would keep the 3 pods for a day: it
    // is dropped, and starts again now.
    let idle = observation(3, Some(queue(0.0)));
    let forged = Memory { surplus_since_seconds: Some(1000.0 + 86_400.0), ..Memory::default() };
    let first = decide(&spec(), &idle, &forged);
    assert_eq!(first.memory.surplus_since_seconds, Some(1000.0));
    assert_eq!(first.memory_faults.len(), 1);
    let after = decide(&spec(), &Observation { now_seconds: 1060.0, ..idle }, &first.memory);
    assert_eq!((after.replicas, after.reason), (1, Reason::ScaleDown));
}
