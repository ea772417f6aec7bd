//! How fast an upload must arrive. A request holds its place while it uploads, so an
//! upload that stalls or trickles must lose that place within seconds, not when the
//! client gives up: after a grace period, the bytes received must keep up a minimum
//! average rate.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPace {
    /// Time allowed before the minimum rate applies: how long a stalled upload keeps
    /// its place.
    pub grace: Duration,
    /// Average rate, since the upload began, that must be kept up after the grace.
    pub min_bytes_per_second: u64,
}

impl UploadPace {
    /// When an upload that began at `started` and has delivered `received` bytes so
    /// far must deliver more, or be cut off.
    pub fn deadline(&self, started: Instant, received: usize) -> Instant {
        started + self.grace + Duration::from_secs_f64(received as f64 / self.min_bytes_per_second as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_moves_with_the_bytes_received() {
        let started = Instant::now();
        let pace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1000 };
        assert_eq!(pace.deadline(started, 0), started + Duration::from_secs(5));
        assert_eq!(pace.deadline(started, 3000), started + Duration::from_secs(8));
    }
}
