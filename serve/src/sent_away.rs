//! The clients a server sent away with a `Retry-After`, as the two metrics the
//! autoscaler reads: how many are away now and how many have become due since the
//! start (`matte_common::deferred`). The gateway exports them for its refusals and the
//! pods for theirs, under the names each takes from `matte_common`.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use matte_common::deferred::DeferredClients;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge};

pub struct SentAway {
    started: Instant,
    clients: Mutex<DeferredClients>,
    away: IntGauge,
    due: IntCounter,
}

impl SentAway {
    /// The gauge of clients away is named `away`, the counter of those due `due`.
    pub fn new(away: &str, due: &str) -> SentAway {
        SentAway {
            started: Instant::now(),
            clients: Mutex::new(DeferredClients::default()),
            away: IntGauge::new(
                away,
                "Clients sent away with a Retry-After that has not passed yet: requests waiting outside.",
            )
            .expect("a valid metric name"),
            due: IntCounter::new(due, "Clients sent away whose Retry-After has passed, so that they may be back.")
                .expect("a valid metric name"),
        }
    }

    /// Both metrics, to register.
    pub fn collectors(&self) -> [Box<dyn Collector>; 2] {
        [Box::new(self.away.clone()), Box::new(self.due.clone())]
    }

    /// A client was sent away now, told to come back after `retry_after`.
    pub fn send_away(&self, retry_after: Duration) {
        self.clients().send_away(self.started.elapsed(), retry_after);
    }

    /// Brings both metrics up to now; called before each exposition.
    pub fn refresh(&self) {
        let mut clients = self.clients();
        clients.advance(self.started.elapsed());
        self.away.set(i64::try_from(clients.away()).unwrap_or(i64::MAX));
        let newly_due = clients.due_total().saturating_sub(self.due.get());
        self.due.inc_by(newly_due);
    }

    fn clients(&self) -> MutexGuard<'_, DeferredClients> {
        // The counts stay consistent whatever a panicking holder left: every update is
        // a few additions.
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    #[test]
    fn a_client_sent_away_shows_as_away_until_its_retry_after_then_due() {
        let sent_away = SentAway::new("test_deferred_requests", "test_deferred_due_total");
        let registry = Registry::new();
        for collector in sent_away.collectors() {
            registry.register(collector).expect("unique names");
        }
        sent_away.send_away(Duration::ZERO);
        sent_away.send_away(Duration::from_secs(3600));
        sent_away.refresh();
        let text = crate::exposition::encode(&registry);
        assert!(text.contains("test_deferred_requests 2"), "{text}");
        assert!(text.contains("test_deferred_due_total 0"), "{text}");
        std::thread::sleep(Duration::from_millis(1100));
        sent_away.refresh();
        sent_away.refresh();
        let text = crate::exposition::encode(&registry);
        assert!(text.contains("test_deferred_requests 1"), "{text}");
        assert!(text.contains("test_deferred_due_total 1"), "counted once however often refreshed:\n{text}");
    }
}
