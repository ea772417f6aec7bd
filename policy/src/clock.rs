//! Bursts that recur on a clock: a cron job, a nightly export every ten minutes. Unlike
//! bursts that come at random moments, their next one is due at a known time, so the
//! pods that absorb one need not wait warm through the whole gap: they can be given
//! back after it and started again a start-up ahead of the next. A cron job also skips
//! runs (nothing to upload this time): a gap of two or three periods is a beat missed,
//! not the end of the clock, and the next beat is still prepared for.

use crate::stats::median;

/// Every gap between the bursts remembered must be within this share of the period (or
/// of a whole number of periods, for runs skipped) for the bursts to keep a clock: a
/// cron job's start drifts by seconds, bursts at random moments by as much as their
/// gaps.
pub const CLOCK_JITTER_SHARE: f64 = 0.1;

/// Bursts needed for a clock: two gaps that agree.
pub const CLOCK_MIN_BURSTS: usize = 3;

/// Beats in a row that may pass without a burst before the clock is taken to have
/// stopped: a job that skips a run or two still runs on its clock, one silent for longer
/// has most likely been stopped, and each beat prepared for costs a lead's pods.
pub const CLOCK_MISSED_BEATS_MAX: u32 = 2;

/// The rhythm of bursts that keep a clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// The median gap, start to start: the period, when fewer than half the runs were
    /// skipped.
    pub period_seconds: f64,
    /// The furthest any gap remembered strayed from its whole number of periods.
    pub jitter_seconds: f64,
    /// When the last burst began.
    pub last_started_seconds: f64,
}

impl Clock {
    /// The clock the bursts that began at `starts` (oldest first) keep, if they keep
    /// one: at least [`CLOCK_MIN_BURSTS`] of them, every gap within
    /// [`CLOCK_JITTER_SHARE`] of the median gap or of a whole multiple of it (runs
    /// skipped in between).
    pub fn of(starts: &[f64]) -> Option<Clock> {
        if starts.len() < CLOCK_MIN_BURSTS {
            return None;
        }
        let gaps: Vec<f64> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let period_seconds = median(gaps.clone()).filter(|period| *period > 0.0)?;
        let off_the_beat = |gap: f64| (gap - beats(gap, period_seconds) * period_seconds).abs();
        let jitter_seconds = gaps.iter().map(|gap| off_the_beat(*gap)).fold(0.0, f64::max);
        let last_started_seconds = *starts.last()?;
        (jitter_seconds <= CLOCK_JITTER_SHARE * period_seconds).then_some(Clock {
            period_seconds,
            jitter_seconds,
            last_started_seconds,
        })
    }

    /// When the next burst is due, as of `now`: the first beat after the last burst
    /// whose latest moment (its tolerance and `margin` after it) has not passed; `None` once
    /// more than [`CLOCK_MISSED_BEATS_MAX`] beats in a row have passed without one.
    pub fn next_due_seconds(&self, now: f64, margin_seconds: f64) -> Option<f64> {
        (1..=CLOCK_MISSED_BEATS_MAX + 1)
            .map(|beat| self.last_started_seconds + f64::from(beat) * self.period_seconds)
            .find(|due| now <= due + self.tolerance_seconds() + margin_seconds)
    }

    /// How long before the next burst is due its pods must be started: a start-up, the
    /// clock's tolerance (it may come that much early), and `margin` for the pass that
    /// sees the moment and pods slower than the median.
    pub fn lead_seconds(&self, startup_seconds: f64, margin_seconds: f64) -> f64 {
        startup_seconds + self.tolerance_seconds() + margin_seconds
    }

    /// How far from its beat the next burst may come: twice the furthest any gap
    /// remembered strayed. The furthest of a few gaps understates the spread (the next
    /// strays further than all of `n` seen one time in `n + 1`), and pods given back a
    /// few seconds before a late run cost that run a whole start-up.
    pub fn tolerance_seconds(&self) -> f64 {
        2.0 * self.jitter_seconds
    }

    /// Whether `now` is in the window in which the next burst's pods should be up: from
    /// `lead` before it is due to `margin` after the latest it may come.
    pub fn due_window_open(&self, now: f64, lead_seconds: f64, margin_seconds: f64) -> bool {
        self.next_due_seconds(now, margin_seconds).is_some_and(|due| now >= due - lead_seconds)
    }
}

/// How many periods `gap` spans: at least one.
fn beats(gap: f64, period: f64) -> f64 {
    (gap / period).round().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_every_ten_minutes_give_or_take_seconds_keep_a_clock() {
        let clock = Clock::of(&[120.0, 720.0, 1325.0, 1920.0]).expect("a clock");
        assert_eq!(clock.period_seconds, 600.0);
        assert_eq!((clock.jitter_seconds, clock.tolerance_seconds()), (5.0, 10.0));
        assert_eq!(clock.next_due_seconds(2400.0, 10.0), Some(2520.0));
        // A 60 s start-up, the 10 s tolerance and 10 s of margin ahead of it.
        assert_eq!(clock.lead_seconds(60.0, 10.0), 80.0);
        assert!(!clock.due_window_open(2439.0, 80.0, 10.0));
        assert!(clock.due_window_open(2440.0, 80.0, 10.0));
        // Until 10 s after the latest it may come.
        assert!(clock.due_window_open(2540.0, 80.0, 10.0));
        assert!(!clock.due_window_open(2541.0, 80.0, 10.0));
    }

    #[test]
    fn bursts_at_random_moments_keep_no_clock() {
        assert_eq!(Clock::of(&[100.0, 280.0, 700.0, 790.0]), None);
        // One gap off by more than a tenth of the period is enough to break it.
        assert_eq!(Clock::of(&[0.0, 600.0, 1200.0, 1870.0]), None);
        // Half a period is no beat.
        assert_eq!(Clock::of(&[0.0, 600.0, 1200.0, 1500.0]), None);
    }

    #[test]
    fn a_run_skipped_is_a_beat_missed_not_the_end_of_the_clock() {
        // The run due at 1800 did not come; the next came on its beat, 5 s late.
        let clock = Clock::of(&[0.0, 600.0, 1200.0, 2405.0, 3000.0]).expect("a clock");
        assert_eq!((clock.period_seconds, clock.jitter_seconds), (600.0, 5.0));
        // Once the beat at 3600 has passed (with its tolerance and margin) without a
        // burst, the next is the one at 4200, prepared for a lead ahead of it.
        assert_eq!(clock.next_due_seconds(3620.0, 10.0), Some(3600.0));
        assert_eq!(clock.next_due_seconds(3621.0, 10.0), Some(4200.0));
        assert!(!clock.due_window_open(3621.0, 80.0, 10.0));
        assert!(clock.due_window_open(4120.0, 80.0, 10.0));
        // Two beats missed in a row are followed; after a third the clock has stopped.
        assert_eq!(clock.next_due_seconds(4221.0, 10.0), Some(4800.0));
        assert_eq!(clock.next_due_seconds(4821.0, 10.0), None);
        assert!(!clock.due_window_open(4821.0, 80.0, 10.0));
    }

    #[test]
    fn a_clock_needs_two_gaps_that_agree() {
        assert_eq!(Clock::of(&[0.0, 600.0]), None);
        assert!(Clock::of(&[0.0, 600.0, 1200.0]).is_some());
    }
}
