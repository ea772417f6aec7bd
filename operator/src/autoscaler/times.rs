//! The apiserver's times as the policy counts them: seconds, on the Unix clock.

use jiff::Timestamp;

/// `at` on the clock the policy's times are on.
pub fn unix_seconds(at: Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}

/// Seconds from `from` to `to`, none if `to` is earlier (clocks of different writers
/// drift; a time in the future is no negative age).
pub fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_between_counts_forward_and_never_below_zero() {
        let earlier: Timestamp = "2026-11-28T12:00:00Z".parse().expect("a time");
        let later: Timestamp = "2026-11-28T12:01:30.5Z".parse().expect("a time");
        assert_eq!(seconds_between(earlier, later), 90.5);
        assert_eq!(seconds_between(later, earlier), 0.0);
        assert_eq!(unix_seconds(later) - unix_seconds(earlier), 90.5);
    }
}
