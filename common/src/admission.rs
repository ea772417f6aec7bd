//! The arithmetic of admission, pure: how long a request can expect to wait in the
//! gateway's queue, whether that fits its budget, and what `Retry-After` to give when
//! it does not: the time until its wait would be down to half its budget, so that the
//! client comes back to a queue with room for it. Told the whole expected wait, it
//! would come back when its turn had come and gone, to the back of a queue that has
//! filled again meanwhile, and wait a second time. Never more than the budget, though:
//! the wait counts the pods ready now, and a queue long enough to send clients away is
//! what the autoscaler starts pods for, so a client sent away for longer than it was
//! willing to wait would stay away past the pods that come up meanwhile.
//!
//! The model: every ready pod works through its requests one after another, one every
//! `per_image` on average, so together the pods free a place every
//! `per_image / ready` and a request with `ahead` requests in front of it gets its
//! place after `(ahead + 1)` of them.

use std::time::Duration;

/// Weight of the newest sample in the per-image estimate: recent enough to follow a
/// change of image sizes or pods within a few dozen requests, smooth enough that one
/// slow image does not swing admission.
const EWMA_WEIGHT: f64 = 0.2;

/// `Retry-After` when the wait cannot be estimated (no ready pod, or no measurement
/// yet): about the time a starting pod needs to load a small model and turn ready.
pub const UNKNOWN_WAIT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The time a pod takes per image, as seen from the gateway: an exponentially
/// weighted moving average of each served request's time on the pod divided by the
/// requests outstanding on that pod when it was sent (the pod serves them in turn, so
/// that request waited for all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerImageTime {
    seconds: Option<f64>,
}

impl PerImageTime {
    pub fn record(&mut self, on_pod: Duration, outstanding_when_sent: u32) {
        let sample = on_pod.as_secs_f64() / f64::from(outstanding_when_sent.max(1));
        self.seconds = Some(match self.seconds {
            None => sample,
            Some(previous) => previous + EWMA_WEIGHT * (sample - previous),
        });
    }

    pub fn get(&self) -> Option<Duration> {
        self.seconds.map(Duration::from_secs_f64)
    }
}

/// The expected wait of a request with `ahead` requests before it in the queue, or
/// `None` when it cannot be known: no ready pod, or no measurement yet.
pub fn expected_wait(ahead: usize, per_image: Option<Duration>, ready_pods: usize) -> Option<Duration> {
    let per_image = per_image?;
    if ready_pods == 0 {
        return None;
    }
    Some(per_image.mul_f64((ahead + 1) as f64 / ready_pods as f64))
}

/// Whether a request may join the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Its expected wait fits its budget, or is unknown (the first pod may be starting:
    /// the request waits out its budget).
    Admit,
    /// Its expected wait is over its budget; it is told when to come back.
    Refuse { expected: Duration, retry_after: Duration },
}

pub fn decide(expected: Option<Duration>, budget: Duration) -> Admission {
    match expected {
        Some(expected) if expected > budget => {
            Admission::Refuse { expected, retry_after: retry_after(expected, budget) }
        }
        _ => Admission::Admit,
    }
}

/// Whole seconds, rounded up and at least 1, until a wait of `expected` now is down
/// to half of `budget`: a client that comes back then is admitted and waits about
/// half its budget in the queue. At most the budget: a wait counted on the pods ready
/// now overstates it while the fleet grows (a burst on a fleet scaling from zero, told
/// 45 s by its first ready pod, came back after six more were up and missed its
/// deadline), and a client back sooner is weighed again. Capped at half the budget
/// instead, every refused client came back after the same time, when most were refused
/// again: a lottery in which the first to arrive could lose to later ones.
pub fn retry_after(expected: Duration, budget: Duration) -> Duration {
    let until_it_fits = expected.saturating_sub(budget / 2).min(budget);
    Duration::from_secs(until_it_fits.as_secs_f64().ceil().max(1.0) as u64)
}

/// `Retry-After` for a request with `budget` refused or timed out now, behind `ahead`
/// others.
pub fn retry_after_behind(ahead: usize, per_image: Option<Duration>, ready_pods: usize, budget: Duration) -> Duration {
    expected_wait(ahead, per_image, ready_pods).map_or(UNKNOWN_WAIT_RETRY_AFTER, |wait| retry_after(wait, budget))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_wait_grows_with_the_queue_and_shrinks_with_the_pods() {
        assert_eq!(expected_wait(0, Some(SECOND), 1), Some(SECOND));
        assert_eq!(expected_wait(9, Some(SECOND), 1), Some(10 * SECOND));
        assert_eq!(expected_wait(9, Some(SECOND), 4), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn the_wait_is_unknown_without_a_measurement_or_a_ready_pod() {
        assert_eq!(expected_wait(3, None, 2), None);
        assert_eq!(expected_wait(3, Some(SECOND), 0), None);
    }

    #[test]
    fn a_wait_over_the_budget_is_refused_with_the_seconds_until_it_would_fit() {
        assert_eq!(decide(Some(SECOND), 30 * SECOND), Admission::Admit);
        assert_eq!(decide(Some(30 * SECOND), 30 * SECOND), Admission::Admit, "exactly the budget fits");
        // 2.5 s expected against a 2 s budget: back in 1.5 s, rounded up.
        assert_eq!(
            decide(Some(Duration::from_millis(2500)), 2 * SECOND),
            Admission::Refuse { expected: Duration::from_millis(2500), retry_after: 2 * SECOND }
        );
        // 35.5 s against 30 s: back when 15 s are left, in 20.5 s, not after the whole
        // 35.5.
        assert_eq!(
            decide(Some(Duration::from_millis(35_500)), 30 * SECOND),
            Admission::Refuse { expected: Duration::from_millis(35_500), retry_after: 21 * SECOND }
        );
        assert_eq!(decide(None, SECOND), Admission::Admit, "unknown waits are admitted within the budget");
    }

    #[test]
    fn nobody_is_sent_away_for_longer_than_the_budget() {
        // 75 s against 30 s: 60 s until it would fit on the pods ready now, but the
        // fleet may grow meanwhile.
        assert_eq!(
            decide(Some(75 * SECOND), 30 * SECOND),
            Admission::Refuse { expected: 75 * SECOND, retry_after: 30 * SECOND }
        );
        assert_eq!(retry_after(Duration::from_secs(3600), 3 * SECOND), 3 * SECOND);
        // Its budget ran out with 19 ahead on 1 pod at 1 s, against a 10 s budget: 15 s
        // until it would fit; 10.
        assert_eq!(retry_after_behind(19, Some(SECOND), 1, 10 * SECOND), 10 * SECOND);
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after(Duration::ZERO, 30 * SECOND), SECOND);
        assert_eq!(retry_after(Duration::from_millis(15_010), 30 * SECOND), SECOND);
        assert_eq!(retry_after(Duration::from_millis(16_001), 30 * SECOND), 2 * SECOND);
        assert_eq!(retry_after_behind(4, None, 1, 30 * SECOND), UNKNOWN_WAIT_RETRY_AFTER);
        // Five turns of 1 s on 2 pods: 2.5 s, less half a 2 s budget.
        assert_eq!(retry_after_behind(4, Some(SECOND), 2, 2 * SECOND), 2 * SECOND);
    }

    #[test]
    fn the_per_image_time_divides_by_the_requests_served_before() {
        let mut per_image = PerImageTime::default();
        assert_eq!(per_image.get(), None);
        per_image.record(4 * SECOND, 4);
        assert_eq!(per_image.get(), Some(SECOND));
        per_image.record(3 * SECOND, 1);
        let seconds = per_image.get().unwrap().as_secs_f64();
        assert!((seconds - 1.4).abs() < 1e-9, "{seconds}");
        per_image.record(SECOND, 0);
        assert!(per_image.get().unwrap() < Duration::from_millis(1400), "a count of 0 reads as 1");
    }
}
