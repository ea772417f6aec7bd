//! How fast a client must move its bytes: an upload's body, or an answer once its
//! socket is full. A request holds its place while it uploads or takes its answer, so a
//! client that stalls or trickles must lose that place within seconds, not when it gives
//! up.
//!
//! The pace is a bucket of time ([`PaceCredit`]): it starts full, with a grace period;
//! every second the server waits on the client takes a second out, and every byte the
//! client moves puts back the time it earns at the minimum rate; the client is cut off
//! when the bucket is empty. The bucket holds at most the grace, so bytes sent fast
//! early earn no licence to stall later: wherever it stalls, a client keeps its place
//! for at most the grace, and one that trickles below the minimum rate loses it soon
//! after. An average since the start would let a client that sent half its body at once
//! stall for as long as the whole body takes at the minimum rate (minutes, for a large
//! one), holding its buffers all that time.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPace {
    /// Time allowed before the first bytes, and the most time a client may have in
    /// hand: how long a stalled upload keeps its place.
    pub grace: Duration,
    /// The rate at which the bytes received earn time: an upload must keep it up, on
    /// average, after the grace.
    pub min_bytes_per_second: u64,
}

impl UploadPace {
    /// The credit of an upload that began at `started`.
    pub fn credit(&self, started: std::time::Instant) -> PaceCredit {
        PaceCredit::new(self.grace, self.min_bytes_per_second, Instant::from_std(started))
    }
}

/// The time a client has in hand at its minimum pace (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct PaceCredit {
    /// Seconds in hand as of `since`; below zero once the client is out of time.
    seconds: f64,
    most_seconds: f64,
    seconds_per_byte: f64,
    /// Since when the server has been waiting on the client, if it is.
    since: Instant,
}

impl PaceCredit {
    /// A full credit of `grace`, whose time runs from `now`.
    pub fn new(grace: Duration, min_bytes_per_second: u64, now: Instant) -> PaceCredit {
        let most_seconds = grace.as_secs_f64();
        PaceCredit {
            seconds: most_seconds,
            most_seconds,
            seconds_per_byte: 1.0 / min_bytes_per_second.max(1) as f64,
            since: now,
        }
    }

    /// The server begins waiting on the client at `now`: the time before did not count
    /// (a client whose socket had room was not holding anything up).
    pub fn start_waiting(&mut self, now: Instant) {
        self.since = now;
    }

    /// The client moved `bytes` at `now`, after the server waited on it since the last
    /// time: that wait is spent, and the bytes earn their time, up to the grace.
    pub fn moved(&mut self, bytes: usize, now: Instant) {
        self.seconds -= now.saturating_duration_since(self.since).as_secs_f64();
        self.since = now;
        self.moved_without_waiting(bytes);
    }

    /// The client moved `bytes` without the server waiting on it: they earn their time,
    /// up to the grace, and no time is spent.
    pub fn moved_without_waiting(&mut self, bytes: usize) {
        self.seconds = (self.seconds + bytes as f64 * self.seconds_per_byte).min(self.most_seconds);
    }

    /// When the client runs out of time if it moves nothing more.
    pub fn deadline(&self) -> Instant {
        self.since + Duration::from_secs_f64(self.seconds.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: UploadPace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1000 };

    #[test]
    fn bytes_earn_time_at_the_minimum_rate_and_waiting_spends_it() {
        let started = Instant::now();
        let mut credit = PaceCredit::new(PACE.grace, PACE.min_bytes_per_second, started);
        assert_eq!(credit.deadline(), started + Duration::from_secs(5));
        // 3 s spent, 2,000 bytes earn 2 s: 4 s in hand.
        credit.moved(2000, started + Duration::from_secs(3));
        assert_eq!(credit.deadline(), started + Duration::from_secs(7));
    }

    #[test]
    fn bytes_sent_fast_earn_no_more_than_the_grace() {
        let started = Instant::now();
        let mut credit = PaceCredit::new(PACE.grace, PACE.min_bytes_per_second, started);
        // A megabyte at once would earn 1,000 s: it earns the grace.
        credit.moved(1_000_000, started + Duration::from_secs(1));
        assert_eq!(credit.deadline(), started + Duration::from_secs(6), "a stall from here keeps 5 s");
    }

    #[test]
    fn a_trickle_below_the_rate_runs_out() {
        let started = Instant::now();
        let mut credit = PaceCredit::new(PACE.grace, PACE.min_bytes_per_second, started);
        let mut now = started;
        // 100 bytes a second, a tenth of the rate: 0.9 s lost every second.
        for _ in 0..5 {
            now += Duration::from_secs(1);
            credit.moved(100, now);
        }
        assert!(credit.deadline() < now + Duration::from_secs(1), "{:?} left", credit.deadline() - now);
    }

    #[test]
    fn time_the_server_was_not_waiting_is_not_spent() {
        let started = Instant::now();
        let mut credit = PaceCredit::new(PACE.grace, PACE.min_bytes_per_second, started);
        credit.moved_without_waiting(10);
        credit.start_waiting(started + Duration::from_secs(60));
        assert_eq!(credit.deadline(), started + Duration::from_secs(65));
    }
}
