//! How long a pod takes to start, measured one way wherever the policy runs.
//!
//! The plan needs a pod's start-up: from being scheduled (given a GPU) to Ready. The
//! pods that show it are the ready ones, and a fleet after a burst keeps one or two of
//! them: a median over those alone rests on one or two draws, and a pod that happened
//! to start fast made every plan count on that. So the start-ups of the pods seen
//! ready are remembered ([`crate::Memory::recent_startups`], in the resource's status)
//! and the plan takes the median of the last [`STARTUPS_REMEMBERED`], those of pods
//! given back since included; until [`STARTUPS_TO_OUTWEIGH_THE_DEFAULT`] are known, the
//! start-up assumed counts as one of them. The simulator feeds the same function with
//! the pods it shows ready, so that what it measures is what the operator plans with.

use serde::{Deserialize, Serialize};

use crate::skew::plausible_time;
use crate::stats::median;

/// One pod's start-up, as seen once it was ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Startup {
    /// When it turned Ready, on the clock of the memory's other times (the operator's:
    /// Unix time).
    pub ready_seconds: f64,
    /// From being scheduled to Ready.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = STARTUP_SECONDS_MAX)))]
    pub seconds: f64,
    /// The pod's name, where it has one: a pod's first readiness is its start-up, and
    /// one that went unready (a run far past its time-out, failing runs) and came back
    /// shows its age again, not a second start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 253)))]
    pub pod: Option<String>,
}

/// How many start-ups the plan's median is taken over: enough that one fast or slow
/// draw does not set it, few enough that a new image or node type shows within a burst
/// or two.
pub const STARTUPS_REMEMBERED: usize = 10;

/// The longest time from scheduled to Ready taken for a start-up: a pod whose readiness
/// went and came back hours after it started shows its age, not a start-up.
pub const STARTUP_SECONDS_MAX: f64 = 3_600.0;

/// Whether `seconds` can be a start-up.
pub fn plausible_startup_seconds(seconds: f64) -> bool {
    (0.0..=STARTUP_SECONDS_MAX).contains(&seconds)
}

/// The start-ups remembered, with those of the pods ready now that are not among them
/// yet: the last [`STARTUPS_REMEMBERED`] to turn ready, oldest first. A pod is seen
/// ready on pass after pass and counts once, by its first readiness while that is
/// remembered; one whose time is no start-up counts not at all, nor one ready ahead of
/// `now_seconds` by more than a skew between clocks (its node's clock, which the
/// kubelet stamps it with, gone wrong): remembered, it would be dropped from the memory
/// and reported on every pass.
pub fn remember_startups(remembered: &[Startup], ready_now: &[Startup], now_seconds: f64) -> Vec<Startup> {
    let mut startups = remembered.to_vec();
    let plausible = |startup: &&Startup| {
        plausible_startup_seconds(startup.seconds) && plausible_time(startup.ready_seconds, now_seconds)
    };
    for startup in ready_now.iter().filter(plausible) {
        let same_pod = |known: &Startup| startup.pod.is_some() && known.pod == startup.pod;
        // One remembered before pods were named (an operator of an earlier version) is
        // the same start-up if its times are.
        let same_times = |known: &Startup| {
            (known.pod.is_none() || startup.pod.is_none())
                && known.ready_seconds == startup.ready_seconds
                && known.seconds == startup.seconds
        };
        match startups.iter_mut().find(|known| same_pod(known) || same_times(known)) {
            Some(known) => {
                if known.pod.is_none() {
                    known.pod.clone_from(&startup.pod);
                }
            }
            None => startups.push(startup.clone()),
        }
    }
    startups.sort_by(|a, b| a.ready_seconds.total_cmp(&b.ready_seconds));
    let forgotten = startups.len().saturating_sub(STARTUPS_REMEMBERED);
    startups.drain(..forgotten);
    startups
}

/// Start-ups remembered below which the one assumed (`PolicySpec::default_startup_seconds`)
/// still counts among them: a median of one or two pods' start-ups rests on one or two
/// draws, and a first pod that happened to start fast would have every plan count on it.
pub const STARTUPS_TO_OUTWEIGH_THE_DEFAULT: usize = 3;

/// The start-up plans count on: the median of those remembered, with `assumed` counted
/// as one more while fewer than [`STARTUPS_TO_OUTWEIGH_THE_DEFAULT`] are (so `assumed`
/// alone before any).
pub fn planned_startup_seconds(startups: &[Startup], assumed: f64) -> f64 {
    let measured = startups.iter().map(|startup| startup.seconds);
    let prior = (startups.len() < STARTUPS_TO_OUTWEIGH_THE_DEFAULT).then_some(assumed);
    median(measured.chain(prior).collect()).unwrap_or(assumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_000.0;

    fn startup(ready_seconds: f64, seconds: f64) -> Startup {
        Startup { ready_seconds, seconds, pod: None }
    }

    #[test]
    fn a_pod_ready_again_after_a_spell_unready_counts_by_its_first_readiness() {
        let pod = |name: &str, ready_seconds: f64, seconds: f64| Startup {
            pod: Some(name.to_owned()),
            ..startup(ready_seconds, seconds)
        };
        let first = remember_startups(&[], &[pod("a", 100.0, 50.0), pod("b", 110.0, 60.0)], NOW);
        // Pod a was unready for a minute from 800 s: ready again, 750 s after scheduled.
        let again = remember_startups(&first, &[pod("a", 860.0, 810.0), pod("b", 110.0, 60.0)], NOW);
        assert_eq!(again, first, "its age is no start-up");
        let unnamed = remember_startups(&first, &[startup(860.0, 810.0)], NOW);
        assert_eq!(unnamed.len(), 3, "a start-up of no known pod is its own");
    }

    #[test]
    fn a_start_up_remembered_before_pods_were_named_is_not_counted_twice() {
        let remembered = [startup(100.0, 50.0), startup(110.0, 60.0)];
        let named = Startup { pod: Some("a".to_owned()), ..startup(100.0, 50.0) };
        let again = remember_startups(&remembered, std::slice::from_ref(&named), NOW);
        assert_eq!(again, vec![named, startup(110.0, 60.0)], "the same times, now named");
    }

    #[test]
    fn a_pod_seen_ready_pass_after_pass_counts_once() {
        let first = remember_startups(&[], &[startup(100.0, 50.0), startup(100.0, 70.0)], NOW);
        let again = remember_startups(&first, &[startup(100.0, 70.0)], NOW);
        assert_eq!(again, vec![startup(100.0, 50.0), startup(100.0, 70.0)]);
        assert_eq!(planned_startup_seconds(&again, 60.0), 60.0);
    }

    #[test]
    fn the_start_ups_of_pods_given_back_still_count_until_newer_ones_replace_them() {
        // A burst's pods, ready at 100..=110 s, were given back; the one pod left started fast.
        let burst: Vec<Startup> = (0..10).map(|i| startup(100.0 + f64::from(i), 60.0 + f64::from(i))).collect();
        let remembered = remember_startups(&[], &burst, NOW);
        let with_the_one_left = remember_startups(&remembered, &[startup(105.5, 30.0)], NOW);
        assert_eq!(
            planned_startup_seconds(&with_the_one_left, 60.0),
            64.5,
            "the oldest is forgotten, and one fast pod does not set the median"
        );
        let newer: Vec<Startup> = (0..10).map(|i| startup(500.0 + f64::from(i), 90.0)).collect();
        assert_eq!(planned_startup_seconds(&remember_startups(&with_the_one_left, &newer, NOW), 60.0), 90.0);
    }

    #[test]
    fn a_time_that_is_no_start_up_is_not_counted() {
        let seen = [startup(100.0, -1.0), startup(100.0, f64::NAN), startup(100.0, 7_200.0), startup(100.0, 45.0)];
        assert_eq!(remember_startups(&[], &seen, NOW), vec![startup(100.0, 45.0)]);
    }

    #[test]
    fn a_start_up_stamped_by_a_clock_far_ahead_is_not_counted() {
        let seen = [startup(NOW + 600.0, 50.0), startup(NOW + 30.0, 55.0), startup(NOW - 5.0, 45.0)];
        assert_eq!(
            remember_startups(&[], &seen, NOW),
            vec![startup(NOW - 5.0, 45.0), startup(NOW + 30.0, 55.0)],
            "a little ahead is skew"
        );
    }

    #[test]
    fn the_start_up_assumed_counts_until_three_are_measured() {
        assert_eq!(planned_startup_seconds(&[], 60.0), 60.0, "none measured: the one assumed");
        assert_eq!(planned_startup_seconds(&[startup(10.0, 20.0)], 60.0), 40.0, "one fast first pod moves it halfway");
        let two = [startup(10.0, 20.0), startup(20.0, 24.0)];
        assert_eq!(planned_startup_seconds(&two, 60.0), 24.0, "two measured outvote it");
        let three = [startup(10.0, 20.0), startup(20.0, 24.0), startup(30.0, 22.0)];
        assert_eq!(planned_startup_seconds(&three, 60.0), 22.0, "three alone make the median");
    }
}
