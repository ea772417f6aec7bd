//! What the policy remembers between passes, and what of it is taken back.
//!
//! The reconciler keeps the memory in the resource's status, and a new leader reads it
//! back from there: from the apiserver, where whoever may write the status subresource,
//! an operator of another version or a clock gone wrong may have left anything the
//! schema admits. [`Memory::checked`] keeps what can be trusted and names what it drops
//! before [`crate::decide`] acts on it: a remembered throughput of 1e-300 images/s would
//! otherwise scale the fleet to `maxReplicas`, and a surplus clock started a day ahead
//! would keep every pod for a day.

use serde::{Deserialize, Serialize};

use crate::skew::CLOCK_SKEW_TOLERATED_SECONDS;
use crate::startup::{STARTUPS_REMEMBERED, Startup, plausible_startup_seconds};

/// What the policy remembers between passes. The reconciler keeps it in the resource's
/// status, so that a new leader decides as the old one would; its times are on the
/// clock of [`crate::Observation::now_seconds`], which must therefore be shared by every
/// replica of the operator (the wall clock).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, rename_all = "camelCase")]
pub struct Memory {
    /// The replicas last decided.
    // Kubernetes schemas know no unsigned formats; the CRD's replica counts are int32.
    #[cfg_attr(feature = "schema", schemars(with = "Option<i32>", range(min = 0)))]
    pub replicas: Option<u32>,
    /// Since when the fleet has been larger than needed, if it is.
    pub surplus_since_seconds: Option<f64>,
    /// The last measured throughput, for passes when no image was processed.
    #[cfg_attr(feature = "schema", schemars(range(min = PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN, max = PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX)))]
    pub images_per_pod_second: Option<f64>,
    /// The burst going on now, if clients are being refused.
    pub burst: Option<Burst>,
    /// The last few bursts, oldest first, at most eight (`BURSTS_REMEMBERED`).
    #[cfg_attr(feature = "schema", schemars(length(max = BURSTS_REMEMBERED)))]
    pub recent_bursts: Vec<Burst>,
    /// Since when requests have been arriving faster than the ready pods serve them, if
    /// they are.
    pub surge_since_seconds: Option<f64>,
    /// The start-ups of the last pods seen ready, oldest first, at most ten
    /// (`STARTUPS_REMEMBERED`): the plan's start-up is their median.
    #[cfg_attr(feature = "schema", schemars(length(max = STARTUPS_REMEMBERED)))]
    pub recent_startups: Vec<Startup>,
    /// When the pass that wrote it decided (unset in a memory written before it was
    /// kept): its clocks and replicas describe the fleet as of then
    /// ([`MEMORY_CONTINUOUS_SECONDS`]).
    pub decided_seconds: Option<f64>,
}

/// The longest gap between passes over which a memory's clocks (since when the fleet
/// has been larger than needed, since when arrivals have outrun it, the burst going
/// on) and its replicas still describe the fleet: longer than passes are ever apart
/// while autoscaling (the slowest scrape interval, 5 minutes, or an error's back-off
/// up to as long) with a leader change between. A memory older than that was left by
/// autoscaling switched off, or an operator stopped, for a while: a surplus clock kept
/// from a day before would have every surplus pod given back at once, whatever the
/// scale-down delay, and a surge clock would confirm a flow no pass has seen. Its
/// history (bursts, start-ups, throughput) stays true, and is kept.
pub const MEMORY_CONTINUOUS_SECONDS: f64 = 600.0;

/// How old the time a memory was decided may be, as kept where it is written, before
/// it is written anew: a pass that changed nothing else writes nothing (an idle
/// resource's status was otherwise written at every pass), and a memory read back after
/// a leader change is still far within [`MEMORY_CONTINUOUS_SECONDS`].
pub const DECIDED_TIME_REWRITTEN_AFTER_SECONDS: f64 = MEMORY_CONTINUOUS_SECONDS / 4.0;

/// A time of refusals: the pods' queues were full and clients waited outside them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Burst {
    pub started_seconds: f64,
    /// The largest backlog seen during it.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0)))]
    pub peak_backlog_images: f64,
}

/// How many past bursts the policy remembers.
pub const BURSTS_REMEMBERED: usize = 8;

/// The least throughput a pod is taken to have, images per pod-second: one image in
/// 1,000 s. A measurement below it (a pod whose histogram counts hours of inference for
/// one image) or a remembered value below it would make every plan ask for
/// `maxReplicas`; no background-removal model on one GPU is that slow.
pub const PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN: f64 = 1e-3;

/// The most throughput a pod is taken to have: 1,000 images per pod-second, a
/// millisecond an image, faster than any background-removal model on one GPU; above
/// it, every plan would ask for one pod whatever the backlog.
pub const PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX: f64 = 1e3;

/// Whether a throughput, measured or remembered, can be planned with.
pub fn plausible_images_per_pod_second(rate: f64) -> bool {
    (PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN..=PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX).contains(&rate)
}

/// What [`Memory::checked`] dropped from a memory, and why, naming the status field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryFault {
    #[error("{field} is {ahead_seconds:.0}s ahead of now")]
    InTheFuture { field: &'static str, ahead_seconds: f64 },
    #[error("{field} is {value}, not a time")]
    NotATime { field: &'static str, value: f64 },
    #[error("{field} has a peak backlog of {value} images")]
    ImpossibleBacklog { field: &'static str, value: f64 },
    #[error(
        "imagesPerPodSecond is {value:e}, outside {PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN}..={PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX}"
    )]
    ImplausibleThroughput { value: f64 },
    #[error("recentBursts has a burst starting at {started_seconds}, before the one remembered before it")]
    BurstsOutOfOrder { started_seconds: f64 },
    #[error("recentBursts holds {count} bursts, more than {BURSTS_REMEMBERED}; the oldest are dropped")]
    TooManyBursts { count: usize },
    #[error("recentStartups has a start-up of {seconds}s")]
    ImplausibleStartup { seconds: f64 },
    #[error("recentStartups holds {count} start-ups, more than {STARTUPS_REMEMBERED}; the oldest are dropped")]
    TooManyStartups { count: usize },
    #[error(
        "it was decided {age_seconds:.0}s ago, more than {MEMORY_CONTINUOUS_SECONDS}s: its clocks and replicas are dropped, its history kept"
    )]
    Stale { age_seconds: f64 },
}

impl Memory {
    /// This memory as it can be acted on at `now_seconds`, and what was dropped from it:
    /// times ahead of now by more than `CLOCK_SKEW_TOLERATED_SECONDS` or not finite,
    /// bursts with an impossible backlog, an implausible throughput, bursts out of order
    /// and more of them than are remembered, start-ups that cannot be and more of them
    /// than are remembered; and the clocks and replicas of a memory decided more than
    /// [`MEMORY_CONTINUOUS_SECONDS`] ago. A memory the policy wrote comes back whole.
    pub fn checked(&self, now_seconds: f64) -> (Memory, Vec<MemoryFault>) {
        let mut faults = Vec::new();
        let mut sound = |fault: Option<MemoryFault>| match fault {
            Some(fault) => {
                faults.push(fault);
                false
            }
            None => true,
        };
        let decided_seconds =
            self.decided_seconds.filter(|&decided| sound(time_fault("decidedSeconds", decided, now_seconds)));
        let age_seconds = decided_seconds.map_or(0.0, |decided| now_seconds - decided);
        let continuous = sound((age_seconds > MEMORY_CONTINUOUS_SECONDS).then_some(MemoryFault::Stale { age_seconds }));
        let surplus_since_seconds = self
            .surplus_since_seconds
            .filter(|&since| continuous && sound(time_fault("surplusSinceSeconds", since, now_seconds)));
        let surge_since_seconds = self
            .surge_since_seconds
            .filter(|&since| continuous && sound(time_fault("surgeSinceSeconds", since, now_seconds)));
        let burst = self.burst.filter(|burst| continuous && sound(burst_fault("burst", burst, now_seconds)));
        let mut recent_bursts: Vec<Burst> = Vec::with_capacity(self.recent_bursts.len());
        for burst in &self.recent_bursts {
            let out_of_order = recent_bursts.last().is_some_and(|last| burst.started_seconds < last.started_seconds);
            let fault = burst_fault("recentBursts", burst, now_seconds).or_else(|| {
                out_of_order.then_some(MemoryFault::BurstsOutOfOrder { started_seconds: burst.started_seconds })
            });
            if sound(fault) {
                recent_bursts.push(*burst);
            }
        }
        if recent_bursts.len() > BURSTS_REMEMBERED {
            sound(Some(MemoryFault::TooManyBursts { count: recent_bursts.len() }));
            recent_bursts.drain(..recent_bursts.len() - BURSTS_REMEMBERED);
        }
        let mut recent_startups: Vec<Startup> = Vec::with_capacity(self.recent_startups.len());
        for startup in &self.recent_startups {
            let fault = time_fault("recentStartups", startup.ready_seconds, now_seconds).or_else(|| {
                (!plausible_startup_seconds(startup.seconds))
                    .then_some(MemoryFault::ImplausibleStartup { seconds: startup.seconds })
            });
            if sound(fault) {
                recent_startups.push(startup.clone());
            }
        }
        if recent_startups.len() > STARTUPS_REMEMBERED {
            sound(Some(MemoryFault::TooManyStartups { count: recent_startups.len() }));
            recent_startups.drain(..recent_startups.len() - STARTUPS_REMEMBERED);
        }
        let images_per_pod_second = self.images_per_pod_second.filter(|&rate| {
            sound(
                (!plausible_images_per_pod_second(rate)).then_some(MemoryFault::ImplausibleThroughput { value: rate }),
            )
        });
        let memory = Memory {
            replicas: self.replicas.filter(|_| continuous),
            surplus_since_seconds,
            images_per_pod_second,
            burst,
            recent_bursts,
            surge_since_seconds,
            recent_startups,
            decided_seconds,
        };
        (memory, faults)
    }

    /// This memory as it is to be written over `written`: `written` itself when only
    /// the time it was decided differs, by less than
    /// [`DECIDED_TIME_REWRITTEN_AFTER_SECONDS`].
    pub fn to_write_over(&self, written: Option<&Memory>) -> Memory {
        let unchanged = written.filter(|written| {
            let (Some(then), Some(now)) = (written.decided_seconds, self.decided_seconds) else { return false };
            now - then < DECIDED_TIME_REWRITTEN_AFTER_SECONDS
                && Memory { decided_seconds: written.decided_seconds, ..self.clone() } == **written
        });
        unchanged.unwrap_or(self).clone()
    }
}

/// Why a remembered time cannot be acted on at `now_seconds`, if it cannot.
fn time_fault(field: &'static str, seconds: f64, now_seconds: f64) -> Option<MemoryFault> {
    if !seconds.is_finite() {
        Some(MemoryFault::NotATime { field, value: seconds })
    } else if seconds - now_seconds > CLOCK_SKEW_TOLERATED_SECONDS {
        Some(MemoryFault::InTheFuture { field, ahead_seconds: seconds - now_seconds })
    } else {
        None
    }
}

/// Why a remembered burst cannot be acted on at `now_seconds`, if it cannot.
fn burst_fault(field: &'static str, burst: &Burst, now_seconds: f64) -> Option<MemoryFault> {
    let backlog = burst.peak_backlog_images;
    time_fault(field, burst.started_seconds, now_seconds).or_else(|| {
        (!(0.0..=MAX_PEAK_BACKLOG_IMAGES).contains(&backlog))
            .then_some(MemoryFault::ImpossibleBacklog { field, value: backlog })
    })
}

/// The largest peak backlog a pass can remember: the queue depths and the clients away,
/// each taken as at most [`crate::observation::MAX_OBSERVED`]. A larger one was written
/// by someone else, and would start pods for it on an idle fleet.
const MAX_PEAK_BACKLOG_IMAGES: f64 = 3.0 * crate::observation::MAX_OBSERVED;

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn burst(started_seconds: f64, peak_backlog_images: f64) -> Burst {
        Burst { started_seconds, peak_backlog_images }
    }

    fn remembered() -> Memory {
        Memory {
            replicas: Some(4),
            surplus_since_seconds: Some(NOW - 30.0),
            images_per_pod_second: Some(1.6),
            burst: Some(burst(NOW - 5.0, 120.0)),
            recent_bursts: (1..=BURSTS_REMEMBERED).rev().map(|ago| burst(NOW - 200.0 * ago as f64, 80.0)).collect(),
            surge_since_seconds: Some(NOW - 10.0),
            recent_startups: (1..=STARTUPS_REMEMBERED)
                .rev()
                .map(|ago| Startup { ready_seconds: NOW - 100.0 * ago as f64, seconds: 55.0, pod: None })
                .collect(),
            decided_seconds: Some(NOW - 5.0),
        }
    }

    #[test]
    fn a_memory_that_changed_only_its_time_is_written_as_it_was_until_that_time_is_old() {
        let written = remembered();
        let then = written.decided_seconds.expect("a time");
        let later = |seconds: f64| Memory { decided_seconds: Some(then + seconds), ..remembered() };
        assert_eq!(later(60.0).to_write_over(Some(&written)), written, "nothing else changed: nothing to write");
        let refreshed = later(DECIDED_TIME_REWRITTEN_AFTER_SECONDS);
        assert_eq!(refreshed.to_write_over(Some(&written)), refreshed, "the time written anew before it is old");
        let changed = Memory { replicas: Some(5), ..later(1.0) };
        assert_eq!(changed.to_write_over(Some(&written)), changed);
        assert_eq!(later(1.0).to_write_over(None), later(1.0));
    }

    #[test]
    fn a_memory_decided_long_ago_keeps_its_history_and_loses_its_clocks() {
        let last_pass = NOW - 86_400.0;
        let memory = Memory { decided_seconds: Some(last_pass), ..remembered() };
        let (checked, faults) = memory.checked(NOW);
        assert_eq!(faults, vec![MemoryFault::Stale { age_seconds: 86_400.0 }]);
        assert_eq!(
            (checked.replicas, checked.surplus_since_seconds, checked.surge_since_seconds, checked.burst),
            (None, None, None, None),
            "the fleet as of a day ago"
        );
        let history = (checked.recent_bursts, checked.recent_startups, checked.images_per_pod_second);
        let whole = remembered();
        assert_eq!(history, (whole.recent_bursts, whole.recent_startups, whole.images_per_pod_second));
        // Within the gap passes may have, and without a time (written before one was kept),
        // the memory is whole.
        let recent = Memory { decided_seconds: Some(NOW - MEMORY_CONTINUOUS_SECONDS), ..remembered() };
        assert_eq!(recent.checked(NOW), (recent.clone(), Vec::new()));
        let untimed = Memory { decided_seconds: None, ..remembered() };
        assert_eq!(untimed.checked(NOW), (untimed.clone(), Vec::new()));
    }

    #[test]
    fn a_memory_the_policy_could_have_written_comes_back_whole() {
        let memory = remembered();
        assert_eq!(memory.checked(NOW), (memory.clone(), Vec::new()));
        let skewed = Memory { surplus_since_seconds: Some(NOW + CLOCK_SKEW_TOLERATED_SECONDS), ..memory };
        assert_eq!(skewed.checked(NOW).1, Vec::new(), "a clock a little ahead is skew");
    }

    #[test]
    fn times_far_ahead_of_now_or_not_finite_are_dropped() {
        let memory = Memory {
            surplus_since_seconds: Some(NOW + 86_400.0),
            surge_since_seconds: Some(f64::INFINITY),
            burst: Some(burst(NOW + 3_600.0, 50.0)),
            ..remembered()
        };
        let (checked, faults) = memory.checked(NOW);
        assert_eq!((checked.surplus_since_seconds, checked.surge_since_seconds, checked.burst), (None, None, None));
        assert_eq!(checked.recent_bursts, remembered().recent_bursts, "the rest is kept");
        assert_eq!(
            faults,
            vec![
                MemoryFault::InTheFuture { field: "surplusSinceSeconds", ahead_seconds: 86_400.0 },
                MemoryFault::NotATime { field: "surgeSinceSeconds", value: f64::INFINITY },
                MemoryFault::InTheFuture { field: "burst", ahead_seconds: 3_600.0 },
            ]
        );
        assert_eq!(faults[0].to_string(), "surplusSinceSeconds is 86400s ahead of now");
    }

    #[test]
    fn an_implausible_throughput_is_dropped_for_the_measured_or_default_one() {
        for rate in [1e-300, 0.0, -1.0, 1e9, f64::NAN] {
            let (checked, faults) = Memory { images_per_pod_second: Some(rate), ..remembered() }.checked(NOW);
            assert_eq!(checked.images_per_pod_second, None, "{rate}");
            assert!(matches!(faults.as_slice(), [MemoryFault::ImplausibleThroughput { .. }]), "{rate}: {faults:?}");
        }
    }

    #[test]
    fn bursts_with_impossible_backlogs_out_of_order_or_too_many_are_dropped() {
        let mut recent: Vec<Burst> = (0..20).map(|index| burst(NOW - 1_000.0 + f64::from(index), 10.0)).collect();
        recent[3].peak_backlog_images = -5.0;
        recent[5].peak_backlog_images = 1e300;
        recent[4].started_seconds = NOW - 5_000.0;
        let (checked, faults) = Memory { recent_bursts: recent.clone(), ..remembered() }.checked(NOW);
        assert_eq!(
            faults,
            vec![
                MemoryFault::ImpossibleBacklog { field: "recentBursts", value: -5.0 },
                MemoryFault::BurstsOutOfOrder { started_seconds: NOW - 5_000.0 },
                MemoryFault::ImpossibleBacklog { field: "recentBursts", value: 1e300 },
                MemoryFault::TooManyBursts { count: 17 },
            ]
        );
        assert_eq!(checked.recent_bursts, recent[12..].to_vec(), "the newest are kept, oldest first");
    }

    #[test]
    fn start_ups_that_cannot_be_or_too_many_are_dropped() {
        let mut recent: Vec<Startup> = (0..15)
            .map(|index| Startup { ready_seconds: NOW - 1_000.0 + f64::from(index), seconds: 50.0, pod: None })
            .collect();
        recent[2].seconds = 86_400.0;
        recent[3].seconds = -1.0;
        recent[4].ready_seconds = NOW + 3_600.0;
        let (checked, faults) = Memory { recent_startups: recent.clone(), ..remembered() }.checked(NOW);
        assert_eq!(
            faults,
            vec![
                MemoryFault::ImplausibleStartup { seconds: 86_400.0 },
                MemoryFault::ImplausibleStartup { seconds: -1.0 },
                MemoryFault::InTheFuture { field: "recentStartups", ahead_seconds: 3_600.0 },
                MemoryFault::TooManyStartups { count: 12 },
            ]
        );
        assert_eq!(checked.recent_startups, recent[5..].to_vec(), "the newest are kept, oldest first");
        assert_eq!(faults[0].to_string(), "recentStartups has a start-up of 86400s");
    }
}
