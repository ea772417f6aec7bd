//! Times another clock stamped (a node's kubelet, another replica of the operator, a
//! status anyone may have written), and when they can be acted on.

/// How far ahead of now a time is still taken as it is. The operator's replicas share
/// the wall clock, and a skew between their clocks only delays a scale-down by as much;
/// NTP keeps it well under a second. A time further ahead than this is no skew but a
/// clock gone wrong, or a corrupted or forged status.
pub(crate) const CLOCK_SKEW_TOLERATED_SECONDS: f64 = 60.0;

/// Whether a time can be acted on at `now_seconds`: finite, and not ahead of now by
/// more than a skew between clocks.
pub(crate) fn plausible_time(seconds: f64, now_seconds: f64) -> bool {
    seconds.is_finite() && seconds - now_seconds <= CLOCK_SKEW_TOLERATED_SECONDS
}
