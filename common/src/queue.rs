//! The inference pod's queue: its default size, and the `Retry-After` a pod gives when
//! it is full, which the simulator's pods give by the same rule.

use std::time::Duration;

/// Default of the pod's `--queue-capacity` (requests admitted at once), which is also
/// the gateway's default `--upstream-capacity`: the gateway never holds more
/// outstanding on a pod than the pod admits.
pub const DEFAULT_CAPACITY: u32 = 32;

/// Weight of the newest run in a pod's time per image (an exponentially weighted
/// moving average of each run's time over its images): recent enough to follow a change
/// of load, smooth enough that one slow run does not double every client's wait.
pub const SERVICE_TIME_WEIGHT: f64 = 0.2;

/// The longest `Retry-After` a pod gives, however long its queue.
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The `Retry-After` of a server that is shutting down (a pod, or a gateway replica):
/// the retry, on a new connection, reaches another behind the Service, whose endpoints
/// stop sending clients here within a second or two.
pub const DRAINING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A pod's time per image with one more run's, `per_image`, taken in.
pub fn updated_service_time(average: Duration, per_image: Duration) -> Duration {
    let average = average.as_secs_f64();
    Duration::from_secs_f64((average + SERVICE_TIME_WEIGHT * (per_image.as_secs_f64() - average)).max(0.0))
}

/// When a client a full pod refuses should come back: the time the `requests_ahead`
/// of it take at `per_image` each, in whole seconds, at least one and at most
/// [`LONGEST_RETRY_AFTER`].
pub fn retry_after(requests_ahead: usize, per_image: Duration) -> Duration {
    let seconds = (requests_ahead as f64 * per_image.as_secs_f64()).ceil();
    Duration::from_secs((seconds as u64).clamp(1, LONGEST_RETRY_AFTER.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_work_ahead_in_whole_seconds_within_bounds() {
        let half = Duration::from_millis(500);
        assert_eq!(retry_after(8, half), Duration::from_secs(4));
        assert_eq!(retry_after(9, half), Duration::from_secs(5), "rounded up");
        assert_eq!(retry_after(0, half), Duration::from_secs(1), "never zero");
        assert_eq!(retry_after(100_000, Duration::from_secs(2)), LONGEST_RETRY_AFTER, "capped");
    }

    #[test]
    fn the_service_time_moves_a_fifth_of_the_way_to_each_run() {
        let updated = updated_service_time(Duration::from_secs(1), Duration::from_secs(2));
        assert!((updated.as_secs_f64() - 1.2).abs() < 1e-9, "{updated:?}");
        let mut average = Duration::from_millis(500);
        for _ in 0..50 {
            average = updated_service_time(average, Duration::from_secs(2));
        }
        assert!((average.as_secs_f64() - 2.0).abs() < 0.01, "{average:?}");
    }
}
