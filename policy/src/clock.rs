//! Bursts that recur on a clock: a cron job, a nightly export every ten minutes. Unlike
//! bursts that come at random moments, their next one is due at a known time, so the
//! pods that absorb one need not wait warm through the whole gap: they can be given
//! back after it and started again a start-up ahead of the next.

use crate::stats::median;

/// Every gap between the bursts remembered must be within this share of their median
/// for the bursts to keep a clock: a cron job's start drifts by seconds, bursts at
/// random moments by as much as their gaps.
pub const CLOCK_JITTER_SHARE: f64 = 0.1;

/// Bursts needed for a clock: two gaps that agree.
pub const CLOCK_MIN_BURSTS: usize = 3;

/// The rhythm of bursts that keep a clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// The median gap, start to start.
    pub period_seconds: f64,
    /// The furthest any gap remembered strayed from the period.
    pub jitter_seconds: f64,
    /// When the last burst began.
    pub last_started_seconds: f64,
}

impl Clock {
    /// The clock the bursts that began at `starts` (oldest first) keep, if they keep
    /// one: at least [`CLOCK_MIN_BURSTS`] of them, every gap within
    /// [`CLOCK_JITTER_SHARE`] of the median gap.
    pub fn of(starts: &[f64]) -> Option<Clock> {
        if starts.len() < CLOCK_MIN_BURSTS {
            return None;
        }
        let gaps: Vec<f64> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let period_seconds = median(gaps.clone()).filter(|period| *period > 0.0)?;
        let jitter_seconds = gaps.iter().map(|gap| (gap - period_seconds).abs()).fold(0.0, f64::max);
        let last_started_seconds = *starts.last()?;
        (jitter_seconds <= CLOCK_JITTER_SHARE * period_seconds).then_some(Clock {
            period_seconds,
            jitter_seconds,
            last_started_seconds,
        })
    }

    /// When the next burst is due.
    pub fn next_due_seconds(&self) -> f64 {
        self.last_started_seconds + self.period_seconds
    }

    /// How long before the next burst is due its pods must be started: a start-up, the
    /// clock's jitter (it may come that much early), and `margin` for the pass that
    /// sees the moment and pods slower than the median.
    pub fn lead_seconds(&self, startup_seconds: f64, margin_seconds: f64) -> f64 {
        startup_seconds + self.jitter_seconds + margin_seconds
    }

    /// Whether `now` is in the window in which the next burst's pods should be up: from
    /// `lead` before it is due to `margin` after the latest it may come.
    pub fn due_window_open(&self, now: f64, lead_seconds: f64, margin_seconds: f64) -> bool {
        let due = self.next_due_seconds();
        now >= due - lead_seconds && now <= due + self.jitter_seconds + margin_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_every_ten_minutes_give_or_take_seconds_keep_a_clock() {
        let clock = Clock::of(&[120.0, 720.0, 1325.0, 1920.0]).expect("a clock");
        assert_eq!(clock.period_seconds, 600.0);
        assert_eq!(clock.jitter_seconds, 5.0);
        assert_eq!(clock.next_due_seconds(), 2520.0);
        // A 60 s start-up, the 5 s jitter and 10 s of margin ahead of it.
        assert_eq!(clock.lead_seconds(60.0, 10.0), 75.0);
        assert!(!clock.due_window_open(2444.0, 75.0, 10.0));
        assert!(clock.due_window_open(2445.0, 75.0, 10.0));
        // Until 10 s after the latest it may come.
        assert!(clock.due_window_open(2535.0, 75.0, 10.0));
        assert!(!clock.due_window_open(2536.0, 75.0, 10.0));
    }

    #[test]
    fn bursts_at_random_moments_keep_no_clock() {
        assert_eq!(Clock::of(&[100.0, 280.0, 700.0, 790.0]), None);
        // One gap off by more than a tenth of the period is enough to break it.
        assert_eq!(Clock::of(&[0.0, 600.0, 1200.0, 1870.0]), None);
    }

    #[test]
    fn a_clock_needs_two_gaps_that_agree() {
        assert_eq!(Clock::of(&[0.0, 600.0]), None);
        assert!(Clock::of(&[0.0, 600.0, 1200.0]).is_some());
    }
}
