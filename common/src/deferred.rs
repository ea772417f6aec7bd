//! The clients a server sent away with a `Retry-After`, by the second they may be back:
//! the gateway's and, behind a plain Service, the pods'. The autoscaler reads two
//! figures from it: how many are away now (requests that wait outside, each counted
//! once however long it was told to stay away) and how many have become due (so that
//! the requests arriving can be told apart from the clients coming back). Only the
//! server that refused knows when it told each client to return. The simulator counts
//! its simulated servers' clients with the same type, on its own clock.
//!
//! Time is the [`Duration`] since a start the caller keeps (a server's `Instant` at
//! start-up, the simulation's zero). Memory is bounded: one count per second up to
//! [`LONGEST_TRACKED_AWAY`] ahead, however many clients are sent away.

use std::collections::VecDeque;
use std::time::Duration;

/// A client told to stay away longer is counted due after this long: an hour's counts
/// are 3600 numbers.
pub const LONGEST_TRACKED_AWAY: Duration = Duration::from_secs(3600);

/// The clients away, counted by the whole second (since the start) at which their
/// `Retry-After` passes.
#[derive(Debug, Default)]
pub struct DeferredClients {
    /// The second the front of `counts` stands for.
    first_second: u64,
    counts: VecDeque<u64>,
    away: u64,
    due_total: u64,
}

impl DeferredClients {
    /// A client was sent away `now` (since the start) with `retry_after`.
    pub fn send_away(&mut self, now: Duration, retry_after: Duration) {
        self.advance(now);
        let back_at = now + retry_after.min(LONGEST_TRACKED_AWAY);
        // Due from the whole second at or after its time: never counted back early.
        let second = back_at.as_secs() + u64::from(back_at.subsec_nanos() > 0);
        let index = usize::try_from(second.saturating_sub(self.first_second)).unwrap_or(usize::MAX);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.away += 1;
    }

    /// Counts the clients whose time has come by `now` (since the start) as due.
    pub fn advance(&mut self, now: Duration) {
        let now_second = now.as_secs();
        while self.first_second <= now_second {
            let Some(count) = self.counts.pop_front() else {
                // Nothing is away: jump to now rather than walk an idle hour by seconds.
                self.first_second = now_second + 1;
                break;
            };
            self.away -= count;
            self.due_total += count;
            self.first_second += 1;
        }
    }

    /// Clients away whose `Retry-After` has not passed.
    pub fn away(&self) -> u64 {
        self.away
    }

    /// Clients whose `Retry-After` has passed, since the start.
    pub fn due_total(&self) -> u64 {
        self.due_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_client_is_away_until_its_retry_after_has_passed_then_due() {
        let start = Duration::ZERO;
        let mut clients = DeferredClients::default();
        clients.send_away(start, 30 * SECOND);
        clients.send_away(start + 2 * SECOND, 5 * SECOND);
        clients.advance(start + 6 * SECOND);
        assert_eq!((clients.away(), clients.due_total()), (2, 0));
        clients.advance(start + 7 * SECOND);
        assert_eq!((clients.away(), clients.due_total()), (1, 1), "due 7 s in");
        clients.advance(start + 29 * SECOND + SECOND / 2);
        assert_eq!(clients.away(), 1, "not before its 30 s");
        clients.advance(start + 30 * SECOND);
        assert_eq!((clients.away(), clients.due_total()), (0, 2));
    }

    #[test]
    fn a_retry_after_within_a_second_is_due_at_the_next_whole_second() {
        let start = Duration::ZERO;
        let mut clients = DeferredClients::default();
        clients.send_away(start + SECOND / 2, SECOND);
        clients.advance(start + SECOND + SECOND / 2 - Duration::from_millis(1));
        assert_eq!(clients.away(), 1);
        clients.advance(start + 2 * SECOND);
        assert_eq!(clients.away(), 0);
    }

    #[test]
    fn memory_is_bounded_by_the_longest_tracked_absence_however_many_are_sent_away() {
        let start = Duration::ZERO;
        let mut clients = DeferredClients::default();
        for _ in 0..10_000 {
            clients.send_away(start, Duration::from_secs(86_400));
        }
        assert_eq!(clients.away(), 10_000);
        assert!(clients.counts.len() <= LONGEST_TRACKED_AWAY.as_secs() as usize + 1, "{}", clients.counts.len());
        clients.advance(start + LONGEST_TRACKED_AWAY);
        assert_eq!((clients.away(), clients.due_total()), (0, 10_000));
    }

    #[test]
    fn an_idle_server_catches_up_at_once() {
        let start = Duration::ZERO;
        let mut clients = DeferredClients::default();
        clients.send_away(start, SECOND);
        clients.advance(start + Duration::from_secs(1_000_000));
        assert_eq!((clients.away(), clients.due_total()), (0, 1));
        clients.send_away(start + Duration::from_secs(1_000_000), 3 * SECOND);
        clients.advance(start + Duration::from_secs(1_000_002));
        assert_eq!(clients.away(), 1);
        clients.advance(start + Duration::from_secs(1_000_003));
        assert_eq!((clients.away(), clients.due_total()), (0, 2));
    }
}
