//! The scaling decision: start-up aware and deadline driven.
//!
//! A pure function from what the operator observed to how many replicas it wants, with
//! the reason. The reconciler calls it on every pass and stores [`Memory`] in the
//! resource's status; the simulator calls the very same function, so what is measured
//! there is what runs in a cluster.
//!
//! The idea: a GPU pod takes tens of seconds to become useful, so a pod is only worth
//! starting if the work will still be there when it is ready. The policy therefore asks
//! how many pods are needed for the backlog to drain by a deadline, with the steady
//! traffic that keeps arriving meanwhile, counting pods that are still starting as
//! capacity from the moment they will be ready (but for one starting for over three
//! start-ups, stuck), and starts exactly that many, at once.
//! When the target cannot be met because new pods would arrive too late, the deadline
//! moves to the earliest time a new pod can do a useful amount of work, instead of
//! starting pods that would find nothing to do. Pods that are no longer needed are kept
//! for as long as a new one would take to start (the cost of being wrong either way is
//! the same), never given back while others are still starting for work that waits, and
//! never below the pods that drain what is queued by the deadline while requests keep
//! arriving at their present rate. Once nothing has waited for a little while, pods
//! still starting that the ready ones did without are given back before they are ready:
//! each would cost the rest of its start-up and a whole hold, for nothing. Pods waiting
//! for a GPU (a node being added) would be ready later still, a node's provisioning on
//! top: while they wait, more pods are asked for only for a flow that has outrun the
//! pods with a GPU for longer than a burst lands, and once the pods with one have been
//! enough for a while, they are given back before they have one.
//!
//! Bursts that recur teach the policy one more thing: a pod started for a burst is
//! ready only after a start-up, too late for the burst's first images, and it is
//! started again for the next one. So once bursts recur, the pods that drain a large
//! one (behind the gateway, larger than seven in ten of those remembered: sizes are
//! heavy-tailed) within a start-up on top of any steady traffic (and within twice the
//! target when start-ups take longer) stay warm between them, until none has come for
//! longer than keeping them is worth (`WARM_GAP_MAX_STARTUPS` start-ups). Only while
//! start-ups are long against the target: pods that start well within it, started when
//! a burst is seen, serve it in time, and pods kept warm (or started ahead of a clock)
//! would only cost their wait. Behind the gateway, once bursts make that pattern, a pod
//! started for one must find more work once ready than before
//! (`USEFUL_WORK_ON_A_WARM_FLEET`): the gateway keeps the pods already there busy, and
//! most pods started for the last few seconds of a burst came after they had drained
//! it. When bursts come far apart
//! instead (`SPARSE_GAP_MIN_STARTUPS`), the pods left over from one go as soon as its
//! drain is confirmed, rather than being held a start-up for a next one that is not
//! coming. Bursts that keep a clock (a cron job's) say when the next is due: their pods
//! are given back after each, like those of sparse bursts, and started again a lead
//! ahead of the next ([`crate::clock`]), when the period is long enough for that to
//! pay.
//!
//! With the gateway in front, requests that find every pod full wait in its queue
//! instead of being refused: that queue is backlog like the pods' own, and it is what
//! says a burst is on. It also lets a service run with no pod at all
//! (`minReplicas: 0`): a request waiting in the gateway of an empty fleet starts pods
//! at once, and a fleet that has had nothing queued and no traffic for the scale-down
//! delay is given back entirely, its last pod on its own clock. The gateway also counts
//! every request it receives: arrivals that outrun the ready pods (faster than they
//! serve at full throughput) pass after pass, and still arrive, are a flow (a crowd, a
//! long batch upload) rather than a burst already in, and pods for their rate are
//! started on top of those the backlog needs, since the backlog seen so far is only the
//! flow's beginning.

use serde::Serialize;

use crate::bursts::{
    SizedForBursts, bursts_come_sparsely, clock_lead, clock_worth_following, large_burst_replicas, remember_bursts,
    said_due_by_a_clock, warm_replicas,
};
use crate::memory::{Burst, Memory, MemoryFault};
use crate::observation::{Observation, QueueMetrics};
use crate::plan::{Plan, plan};
use crate::spec::PolicySpec;
use crate::startup::remember_startups;

/// The least useful work a new pod must find once ready, in multiples of
/// `min_useful_work_seconds`, behind the gateway once bursts that recur off any clock
/// make pods worth keeping warm (whether or not the fleet holds them at that moment). A
/// backlog whose target is already out of reach is planned to drain a start-up and that
/// work from now: the later that is, the more the pods already there count for and the
/// fewer are started. On burst-train, most pods started then to drain a burst within a
/// start-up and 10 s came after the pods already there, kept busy by the gateway, had
/// drained it, or waited for a node it did not need: at half as much again a run starts
/// 19.5 pods instead of 25.1, at 5 % fewer GPU-seconds, with its worst seed at 98.43 %
/// instead of 97.60 % (only while the fleet holds its warm pods, 21.7 starts and a worst
/// seed of 96.88 %). Elsewhere the least useful work stands: before bursts make a
/// pattern a fleet at its minimum needs its pods sooner (15 s everywhere lost
/// scale-from-zero and mixed traffic), bursts on a clock have their pods started ahead
/// of each, and behind a plain Service, whose pods idle while refused clients stay
/// away, the pods on top were needed (99.17 % → 99.00 %). Measured again once the warm
/// pods were sized for a large burst rather than the typical one: as much as before
/// (1.0) started 18.0 pods a run at 99.93 %, twice as much 11.5 at 99.72 % with a seed at
/// 98.00 %, half as much again 13.8 at 99.85 % (sized on the upper quartile of the
/// bursts then).
const USEFUL_WORK_ON_A_WARM_FLEET: f64 = 1.5;

/// Why the policy chose the replicas it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// More pods are needed for the backlog to drain by the deadline.
    ScaleUp,
    /// Pods have been unneeded for long enough: give them back.
    ScaleDown,
    /// The fleet has what it needs.
    Steady,
    /// More pods are needed but `maxReplicas` is reached.
    AtMaxReplicas,
    /// Pods cannot be scheduled (no free GPU): adding more would not help.
    ScalingLimited,
    /// Fewer pods are needed, but others are still starting: wait for them first.
    KeepWhileStarting,
    /// Fewer pods are needed, but not for long enough to be worth giving them back.
    KeepUntilIdleLongEnough,
    /// Fewer pods are needed now, but bursts keep coming: the pods that absorb a large
    /// one stay warm.
    KeepWarmForBursts,
    /// Bursts keep a clock and the next is due within a lead (a start-up and some
    /// margin): the pods that absorb a large one are started ahead of it.
    WarmUpForNextBurst,
    /// Fewer pods are needed for the backlog, but traffic still arrives: with
    /// `minReplicas: 0` the last pod stays until none has come for the scale-down delay,
    /// and no ready pod goes while requests arrive faster than the ready pods serve them.
    KeepWhileTrafficArrives,
    /// No queue metrics: keep the last decision rather than scale on nothing.
    MetricsMissing,
    /// The queue metrics are too old to act on: keep the last decision.
    MetricsStale,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub replicas: u32,
    pub reason: Reason,
    /// One sentence for status and Events.
    pub message: String,
    pub observation: Observation,
    /// `None` when the metrics could not be used.
    pub plan: Option<Plan>,
    /// To pass back on the next call.
    pub memory: Memory,
    /// What of the memory passed in could not be acted on, and was dropped.
    #[serde(skip)]
    pub memory_faults: Vec<MemoryFault>,
}

/// Decides the replicas for one pass.
///
/// The memory passed in is checked first ([`Memory::checked`]): it may come back from
/// the resource's status, written by anyone allowed to. The queue metrics are taken as
/// between 0 and [`crate::observation::MAX_OBSERVED`] ([`QueueMetrics::bounded`]), and
/// the decision reports them so.
pub fn decide(spec: &PolicySpec, observation: &Observation, memory: &Memory) -> Decision {
    let (memory, memory_faults) = memory.checked(observation.now_seconds);
    let observation =
        Observation { queue: observation.queue.as_ref().map(QueueMetrics::bounded), ..observation.clone() };
    Decision { memory_faults, ..decide_checked(spec, &observation, &memory) }
}

/// The decision on a memory that can be trusted.
fn decide_checked(spec: &PolicySpec, observation: &Observation, memory: &Memory) -> Decision {
    let Some(queue) = &observation.queue else {
        return hold(spec, observation, memory, Reason::MetricsMissing, "no queue metrics".into());
    };
    if queue.age_seconds > spec.stale_after_seconds {
        let why =
            format!("queue metrics are {:.0}s old (stale after {:.0}s)", queue.age_seconds, spec.stale_after_seconds);
        return hold(spec, observation, memory, Reason::MetricsStale, why);
    }

    let recent_startups =
        remember_startups(&memory.recent_startups, &observation.ready_pod_startups, observation.now_seconds);
    let mut plan = plan(spec, observation, queue, memory, &recent_startups, spec.min_useful_work_seconds);
    let burst_on = plan.waiting_clients > 0.0 || queue.gateway_queue_depth > 0.0;
    let (burst, recent_bursts) = remember_bursts(memory, observation.now_seconds, burst_on, &plan);
    let now = observation.now_seconds;
    plan.clock = clock_worth_following(spec, &recent_bursts, burst.as_ref(), &plan);
    let clock = plan.clock;
    // Bursts on a clock need their pods only while one is on or the next is due: they
    // are given back in between and started a lead ahead of the next. Not being kept
    // through the gaps, they owe nothing to the break-even of pods that are: an hourly
    // job's pods come a lead ahead of each run like a ten-minute job's.
    let due_soon = clock.is_some_and(|clock| {
        burst.is_none() && clock.due_window_open(now, clock_lead(spec, &clock, &plan), spec.confirm_seconds)
    });
    let warm = match clock {
        Some(_) if burst.is_some() || due_soon => large_burst_replicas(spec, &recent_bursts, burst.as_ref(), &plan),
        Some(_) => SizedForBursts::default(),
        None => warm_replicas(spec, now, &recent_bursts, burst.as_ref(), &plan),
    };
    // The warm pods follow from the plan's start-up and throughput, so the plan that
    // asks more work of a new pod is made once they are known (off any clock: no clock
    // to carry over).
    if spec.behind_gateway && clock.is_none() && warm.replicas > 0 {
        let useful_work_seconds = USEFUL_WORK_ON_A_WARM_FLEET * spec.min_useful_work_seconds;
        plan = self::plan(spec, observation, queue, memory, &recent_startups, useful_work_seconds);
    }
    plan.warm_replicas = warm.replicas;
    plan.warm_burst_images = warm.burst_images;
    let started_ahead = if due_soon { plan.warm_replicas } else { 0 };
    // A burst the clock said was due, no larger so far than the largest of those
    // remembered, is the one expected, however fast it arrives: its pods were started
    // ahead of it, and pods for its rate would be ready after it is in. One no clock said
    // was due (the burst that makes the clock, or one after it stopped) had nothing
    // started ahead of it, and a flow it brings gets pods for its rate like any other.
    let largest_remembered = recent_bursts.iter().map(|burst| burst.peak_backlog_images).fold(0.0, f64::max);
    if clock.is_some()
        && burst.is_some_and(|burst| {
            said_due_by_a_clock(spec, &recent_bursts, &burst, &plan) && burst.peak_backlog_images <= largest_remembered
        })
    {
        plan.no_flow();
    }
    let current = observation.replicas;
    // Anything queued, or an image that began inference within the rate window: a
    // fleet allowed to go to zero keeps its last pod while traffic arrives.
    let traffic = plan.backlog_images > 0.0 || queue.queue_wait_p95_seconds.is_some();
    // Warm pods, and the pod kept for traffic, are kept, never started for their own
    // sake: a pod started in the quiet costs a whole start-up for a burst that may not
    // come.
    let kept = plan.warm_replicas.max(u32::from(traffic)).min(current);
    let wanted = spec.clamp(plan.needed_replicas.max(kept).max(started_ahead));
    let schedulable = current.saturating_sub(observation.unschedulable_pods);
    let mut next = Memory {
        replicas: Some(wanted),
        surplus_since_seconds: None,
        images_per_pod_second: Some(plan.images_per_pod_second),
        burst,
        recent_bursts,
        surge_since_seconds: plan.surge_since_seconds,
        recent_startups,
        decided_seconds: Some(now),
    };
    let summary = summary(&plan, queue);

    // Pods waiting for a GPU are pods waiting for a node: more of them bring nothing
    // sooner, unless a flow outruns even the pods that have one, when each asks the
    // cluster for one more node now rather than after the last has come.
    let flow_needs_nodes = plan.flow_outruns(spec, now, schedulable);
    let (replicas, reason, message) = if observation.unschedulable_pods > 0 && wanted > schedulable && !flow_needs_nodes
    {
        let message = format!(
            "{summary}: {wanted} pods wanted but {} cannot be scheduled (no free GPU); not adding more",
            observation.unschedulable_pods
        );
        (spec.clamp(current), Reason::ScalingLimited, message)
    } else if wanted > current && started_ahead > plan.needed_replicas.max(kept) {
        let (period, due) = clock
            .map_or((0.0, None), |clock| (clock.period_seconds, clock.next_due_seconds(now, spec.confirm_seconds)));
        let due_in = due.map_or(0.0, |due| due - now);
        let message = format!(
            "{summary}: bursts come every {period:.0}s and the next is due in {due_in:.0}s; starting {} pods ahead of it, from {current} to {wanted} (pods for a burst of {:.0} images)",
            wanted - current,
            plan.warm_burst_images
        );
        (wanted, Reason::WarmUpForNextBurst, message)
    } else if wanted > current {
        let capped = if plan.needed_replicas > wanted {
            format!(" (capped by maxReplicas, {} needed)", plan.needed_replicas)
        } else {
            String::new()
        };
        let nodes = if observation.unschedulable_pods > 0 {
            format!(
                " ({} wait for a GPU, but requests arrive at {:.1}/s, faster than the {schedulable} pods with one serve)",
                observation.unschedulable_pods, plan.arrivals_per_second
            )
        } else {
            String::new()
        };
        let message = format!("{summary}: scaling up from {current} to {wanted}{capped}{nodes}");
        (wanted, Reason::ScaleUp, message)
    } else if wanted == current {
        if plan.needed_replicas > wanted {
            let message = format!("{summary}: {} pods needed, holding at maxReplicas {wanted}", plan.needed_replicas);
            (wanted, Reason::AtMaxReplicas, message)
        } else if spec.clamp(plan.needed_replicas) < wanted && plan.warm_replicas >= wanted {
            let message = format!(
                "{summary}: {} pods would do, keeping {wanted} warm for the bursts that keep coming (pods for a burst of {:.0} images)",
                plan.needed_replicas, plan.warm_burst_images
            );
            (wanted, Reason::KeepWarmForBursts, message)
        } else if spec.clamp(plan.needed_replicas) < wanted {
            let message = format!("{summary}: nothing waits, but traffic still arrives; keeping {wanted}");
            (wanted, Reason::KeepWhileTrafficArrives, message)
        } else {
            (wanted, Reason::Steady, format!("{summary}: {current} pods are what is needed"))
        }
    } else {
        // The surplus clock runs from the first pass that found the fleet too large with
        // no pod starting or nothing waiting, or with pods waiting for a GPU: pods still
        // starting for work that waits are not idle, and neither are the ones they were
        // started to help, but a pod without a GPU helps nobody until it has one. Where
        // the hold is only the confirmation time (bursts on a clock or far apart), it is
        // the drain that is confirmed: the clock waits for nothing to wait, or a burst's
        // own pods would go while it drains.
        let idle = if quick_hold(spec, &plan, &next.recent_bursts) {
            plan.nothing_waits()
        } else {
            plan.starting_pods == 0 || plan.nothing_waits()
        };
        let since = if idle || observation.unschedulable_pods > 0 {
            memory.surplus_since_seconds.unwrap_or(observation.now_seconds)
        } else {
            observation.now_seconds
        };
        next.surplus_since_seconds = Some(since);
        scale_down_or_keep(spec, observation, &plan, &summary, wanted, since, &mut next)
    };
    // A fleet above its bounds (maxReplicas lowered, autoscaling just turned on) is
    // kept or drained down to no more than they allow: a branch that keeps the current
    // replicas, or drains to what the arrivals need, would otherwise hold it above them.
    let within = spec.clamp(replicas);
    let message =
        if within == replicas { message } else { format!("{message}; {within} within minReplicas..maxReplicas") };
    let replicas = within;
    next.replicas = Some(replicas);
    Decision {
        replicas,
        reason,
        message,
        observation: observation.clone(),
        plan: Some(plan),
        memory: next,
        memory_faults: Vec::new(),
    }
}

/// Keeps the decision of the last pass (or the current replicas on the first), within
/// the bounds, when the metrics cannot be trusted: scaling down on missing data is how
/// a monitoring outage becomes a service outage. Nothing is observed meanwhile, so the
/// surplus clock starts again once something is: kept through an outage longer than the
/// scale-down delay, it gave every surplus pod back on the first pass after, unneeded
/// or not.
fn hold(spec: &PolicySpec, observation: &Observation, memory: &Memory, reason: Reason, why: String) -> Decision {
    let replicas = spec.clamp(memory.replicas.unwrap_or(observation.replicas));
    Decision {
        replicas,
        reason,
        message: format!("{why}: keeping {replicas} replicas"),
        observation: observation.clone(),
        plan: None,
        memory: Memory {
            replicas: Some(replicas),
            recent_startups: remember_startups(
                &memory.recent_startups,
                &observation.ready_pod_startups,
                observation.now_seconds,
            ),
            decided_seconds: Some(observation.now_seconds),
            surplus_since_seconds: None,
            ..memory.clone()
        },
        memory_faults: Vec::new(),
    }
}

fn scale_down_or_keep(
    spec: &PolicySpec,
    observation: &Observation,
    plan: &Plan,
    summary: &str,
    wanted: u32,
    surplus_since: f64,
    memory: &mut Memory,
) -> (u32, Reason, String) {
    let current = observation.replicas;
    let starting = plan.starting_pods;
    let draining = plan.draining_while_arriving(spec);
    // Surplus pods are held for a start-up in case another burst comes (the cost of
    // being wrong either way is the same), but for `quick_hold`.
    let quick = quick_hold(spec, plan, &memory.recent_bursts);
    let delay =
        spec.scale_down_delay_seconds.unwrap_or(if quick { spec.confirm_seconds } else { plan.startup_seconds });
    let unneeded_for = observation.now_seconds - surplus_since;
    // Kubernetes removes pods that are not ready first, so scaling down to this gives
    // back the pods still starting and no other.
    let without_unneeded_starts = wanted.max(observation.ready_pods);
    // Here the plan wants no more than the pods that have a GPU (more would have held
    // the fleet as `ScalingLimited`).
    let waiting_for_gpu = observation.unschedulable_pods;
    let with_a_gpu = current.saturating_sub(waiting_for_gpu);
    let served_with_a_gpu = f64::from(with_a_gpu) * plan.images_per_pod_second * spec.planned_share();
    if waiting_for_gpu > 0 && unneeded_for >= spec.confirm_seconds && plan.arrivals_per_second <= served_with_a_gpu {
        // A pod waiting for a GPU (a node being added) is ready a node's provisioning and
        // a start-up from now, long after the pods with one: once those have been enough
        // for a while, and new requests arrive no faster than they serve, it would come
        // only to be held idle, and its node is better given to other work or removed.
        // Kubernetes removes unscheduled pods first.
        let message = format!(
            "{summary}: {wanted} pods would do and {with_a_gpu} have a GPU; giving back the {waiting_for_gpu} waiting for one, from {current} to {with_a_gpu}"
        );
        (with_a_gpu, Reason::ScaleDown, message)
    } else if starting > 0
        && plan.nothing_waits()
        && unneeded_for >= spec.confirm_seconds
        && without_unneeded_starts < current
    {
        // The ready pods drained the work without them: a pod that becomes ready with
        // nothing to do costs the rest of its start-up and a whole hold after it, and
        // another burst gets pods started for it like any other.
        let given_back = current - without_unneeded_starts;
        let message = format!(
            "{summary}: nothing has waited for {unneeded_for:.0}s; giving back {given_back} pods not yet ready, from {current} to {without_unneeded_starts}"
        );
        (without_unneeded_starts, Reason::ScaleDown, message)
    } else if starting > 0 {
        let message =
            format!("{summary}: {wanted} pods would do, but {starting} are still starting; keeping {current}");
        (current, Reason::KeepWhileStarting, message)
    } else if unneeded_for < delay {
        let message = format!(
            "{summary}: {wanted} pods would do; keeping {current} until unneeded for {delay:.0}s ({unneeded_for:.0}s so far)"
        );
        (current, Reason::KeepUntilIdleLongEnough, message)
    } else if plan.surge_since_seconds.is_some() {
        // Requests arriving faster than the ready pods serve them may be a flow that is
        // not confirmed yet: the backlog says fewer pods would do only because it has
        // not grown yet, and a pod given back now would be started again a few passes
        // later, a whole start-up too late.
        let message = format!(
            "{summary}: {wanted} pods would do, but requests arrive faster than the {} ready pods serve them; keeping {current}",
            observation.ready_pods
        );
        (current, Reason::KeepWhileTrafficArrives, message)
    } else if draining >= current {
        let message = format!(
            "{summary}: {wanted} pods would drain what is queued, but not while requests keep arriving at {:.1}/s; keeping {current}",
            plan.arrivals_per_second
        );
        (current, Reason::KeepWhileTrafficArrives, message)
    } else if wanted == 0 && current > 1 {
        // The surplus clock may have started while traffic still arrived: the last pod
        // goes only after a delay of its own with nothing to do.
        memory.surplus_since_seconds = None;
        let message = format!(
            "{summary}: unneeded for {unneeded_for:.0}s, scaling down from {current} to 1; the last pod goes once idle for {delay:.0}s"
        );
        (1, Reason::ScaleDown, message)
    } else {
        memory.surplus_since_seconds = None;
        let to = wanted.max(draining);
        let message = format!("{summary}: unneeded for {unneeded_for:.0}s, scaling down from {current} to {to}");
        (to, Reason::ScaleDown, message)
    }
}

/// Whether unneeded pods are held only the confirmation time rather than a start-up
/// (unless `scale_down_delay_seconds` says how long): when the bursts keep a clock that
/// says when the next is due, or have all come far apart, one within a start-up is the
/// exception, and the hold only costs.
fn quick_hold(spec: &PolicySpec, plan: &Plan, recent_bursts: &[Burst]) -> bool {
    spec.scale_down_delay_seconds.is_none()
        && (plan.clock.is_some() || bursts_come_sparsely(recent_bursts, plan.startup_seconds))
}

fn summary(plan: &Plan, queue: &QueueMetrics) -> String {
    let wait =
        queue.queue_wait_p95_seconds.map_or_else(|| "no recent waits".to_string(), |p95| format!("p95 wait {p95:.1}s"));
    // A deadline past the target says why: no pod started sooner would help.
    let deadline =
        plan.useful_work_seconds.map_or_else(String::new, |work| format!(" (a start-up and {work:.0}s of work)"));
    // Steady traffic is served by the same pods by the same deadline: a plan that asks
    // more pods than the backlog alone would says what else they serve.
    let steady = if plan.sustained_images_per_second > 0.0 {
        format!(" on {:.1} images/s of steady traffic", plan.sustained_images_per_second)
    } else {
        String::new()
    };
    // So is what keeps arriving while a burst drains, beyond the steady traffic.
    let inflow = match (plan.inflow_images_per_second, plan.sustained_images_per_second) {
        (inflow, _) if inflow <= 0.0 => String::new(),
        (inflow, steady) if steady > 0.0 => format!(" and {inflow:.1} images/s more still arriving"),
        (inflow, _) => format!(" with {inflow:.1} images/s still arriving"),
    };
    format!(
        "backlog {:.0} images{steady}{inflow} ({wait}), {:.2} images/s per pod, start-up {:.0}s, drain within {:.0}s{deadline}",
        plan.backlog_images, plan.images_per_pod_second, plan.startup_seconds, plan.deadline_seconds
    )
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
