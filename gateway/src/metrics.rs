//! The gateway's Prometheus metrics. Names come from `matte_common::gateway_metrics`,
//! the contract the autoscaler reads; the queue and endpoint gauges are read from the
//! dispatcher at each scrape, so they cannot drift from it.

use matte_common::gateway_metrics as names;
use matte_common::metrics::SECONDS_BUCKETS;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use std::time::Duration;

use matte_serve::ConnectionGauges;
use matte_serve::sent_away::SentAway;

use crate::dispatcher::Snapshot;
use crate::error::UPSTREAM_FAILED_CODE;
use crate::upstream_state::EndpointState;

/// Why a request was sent to a pod again (label `reason` of the retries counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The pod answered 429.
    PodBusy,
    /// The pod answered 503.
    PodUnavailable,
    /// Nothing accepted the connection.
    ConnectionRefused,
    /// The connection failed before a complete answer.
    ConnectionFailed,
}

impl RetryReason {
    pub const ALL: [RetryReason; 4] = [
        RetryReason::PodBusy,
        RetryReason::PodUnavailable,
        RetryReason::ConnectionRefused,
        RetryReason::ConnectionFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RetryReason::PodBusy => "pod_busy",
            RetryReason::PodUnavailable => "pod_unavailable",
            RetryReason::ConnectionRefused => "connection_refused",
            RetryReason::ConnectionFailed => "connection_failed",
        }
    }
}

/// How a pod's image went on to its client (label `relay` of the answers counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Taken off the pod whole into the buffers when they had room for it: the pod's
    /// place goes back before the client reads a byte.
    TakeOffThePod,
    /// Passed on as the pod sends it, holding the pod's place until the client has
    /// read it.
    Stream,
}

impl Relay {
    pub const ALL: [Relay; 2] = [Relay::TakeOffThePod, Relay::Stream];

    pub fn label(self) -> &'static str {
        match self {
            Relay::TakeOffThePod => "taken_off_the_pod",
            Relay::Stream => "streamed",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    queue_depth: IntGauge,
    oldest_queued_age: Gauge,
    pub queue_wait: Histogram,
    requests: IntCounterVec,
    received: IntCounter,
    endpoints: IntGaugeVec,
    retries: IntCounterVec,
    answers: IntCounterVec,
    discovery_up: IntGauge,
    sent_away: SentAway,
    seconds_per_image: Gauge,
    pod_startup: Gauge,
    pub connections: ConnectionGauges,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let metrics = Metrics {
            registry: Registry::new(),
            queue_depth: IntGauge::new(names::QUEUE_DEPTH, "Requests waiting in the gateway for a place on a pod.")
                .expect("valid"),
            oldest_queued_age: Gauge::new(
                names::OLDEST_QUEUED_AGE_SECONDS,
                "Age of the oldest request waiting in the gateway, 0 when none waits.",
            )
            .expect("valid"),
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(names::QUEUE_WAIT_SECONDS, "Time from arrival to being first sent to a pod.")
                    .buckets(SECONDS_BUCKETS.to_vec()),
            )
            .expect("valid"),
            requests: IntCounterVec::new(
                Opts::new(names::REQUESTS_TOTAL, "Background-removal requests through the gateway by outcome."),
                &[names::OUTCOME_LABEL],
            )
            .expect("valid"),
            received: IntCounter::new(
                names::RECEIVED_TOTAL,
                "Background-removal requests received, counted as they arrive.",
            )
            .expect("valid"),
            endpoints: IntGaugeVec::new(
                Opts::new(names::ENDPOINTS, "Inference pods known to the gateway by state."),
                &[names::STATE_LABEL],
            )
            .expect("valid"),
            retries: IntCounterVec::new(
                Opts::new(names::UPSTREAM_RETRIES_TOTAL, "Requests sent to a pod again, by reason."),
                &[names::REASON_LABEL],
            )
            .expect("valid"),
            answers: IntCounterVec::new(
                Opts::new(
                    names::ANSWERS_TOTAL,
                    "Pods' images on their way to clients, by how: taken off the pod whole, its place given \
                     back at once, or streamed, its place held until the client has read it.",
                ),
                &[names::RELAY_LABEL],
            )
            .expect("valid"),
            discovery_up: IntGauge::new(
                names::DISCOVERY_UP,
                "1 while the gateway's set of pods is current; 0 while it serves on the last one it had \
                 (the EndpointSlice watch is failing, or has not listed yet).",
            )
            .expect("valid"),
            sent_away: SentAway::new(names::DEFERRED_REQUESTS, names::DEFERRED_DUE_TOTAL),
            seconds_per_image: Gauge::new(
                names::SECONDS_PER_IMAGE,
                "The time a pod takes per image as the gateway estimates it, from which it admits requests \
                 and sets Retry-After; 0 until a pod has served one.",
            )
            .expect("valid"),
            pod_startup: Gauge::new(
                names::POD_STARTUP_SECONDS,
                "The start-up the gateway counts on for pods starting (the upper quartile of the last it \
                 saw, first seen not ready to ready); 0 until it has seen one.",
            )
            .expect("valid"),
            connections: ConnectionGauges::new(names::OPEN_CONNECTIONS, names::MAX_CONNECTIONS),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 11] = [
            Box::new(metrics.queue_depth.clone()),
            Box::new(metrics.answers.clone()),
            Box::new(metrics.oldest_queued_age.clone()),
            Box::new(metrics.queue_wait.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.received.clone()),
            Box::new(metrics.endpoints.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.discovery_up.clone()),
            Box::new(metrics.seconds_per_image.clone()),
            Box::new(metrics.pod_startup.clone()),
        ];
        let shared = metrics.sent_away.collectors().into_iter().chain(metrics.connections.collectors());
        for collector in collectors.into_iter().chain(shared) {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        // Every state shows from the start, 0 included, so that a sum over states and
        // an alert on `ready == 0` work before the first pod appears.
        for state in EndpointState::ALL {
            metrics.endpoints.with_label_values(&[state.label()]).set(0);
        }
        // The refusals too: a counter that first appears at 200 has no rate in its first
        // window, and the autoscaler would miss the very refusals that say a burst began.
        for outcome in names::REFUSED_OUTCOMES {
            metrics.requests.with_label_values(&[outcome]).reset();
        }
        // And every reason a request is sent on to another pod, so that a dashboard's
        // rate by reason has a series before the first retry.
        for reason in RetryReason::ALL {
            metrics.retries.with_label_values(&[reason.label()]).reset();
        }
        for relay in Relay::ALL {
            metrics.answers.with_label_values(&[relay.label()]).reset();
        }
        metrics
    }
}

/// The count of one request answered with a pod's image, made once the answer's
/// delivery ends: `ok` when it reached the client whole, `upstream_failed` when it broke
/// off on its way, `client_gone` when the client left first (the answer dropped).
pub struct Delivery {
    requests: IntCounterVec,
    outcome: &'static str,
}

impl Delivery {
    pub fn arrived(&mut self) {
        self.outcome = matte_common::metrics::OK_OUTCOME;
    }

    pub fn broken(&mut self) {
        self.outcome = UPSTREAM_FAILED_CODE;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.requests.with_label_values(&[self.outcome]).inc();
    }
}

impl Metrics {
    /// The count of an answer on its way to the client.
    pub fn delivery(&self) -> Delivery {
        Delivery { requests: self.requests.clone(), outcome: matte_common::metrics::CLIENT_GONE_OUTCOME }
    }

    pub fn count_received(&self) {
        self.received.inc();
    }

    pub fn count_outcome(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    /// A client was sent away, told to come back after `retry_after`.
    pub fn count_sent_away(&self, retry_after: Duration) {
        self.sent_away.send_away(retry_after);
    }

    pub fn count_answer(&self, relay: Relay) {
        self.answers.with_label_values(&[relay.label()]).inc();
    }

    pub fn count_retry(&self, reason: RetryReason) {
        self.retries.with_label_values(&[reason.label()]).inc();
    }

    /// The Prometheus text exposition of every metric, with the dispatcher as it is.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.queue_depth.set(snapshot.queue_depth as i64);
        self.oldest_queued_age.set(snapshot.oldest_queued_age.as_secs_f64());
        self.discovery_up.set(i64::from(snapshot.discovery_up));
        self.seconds_per_image.set(snapshot.per_image.map_or(0.0, |per_image| per_image.as_secs_f64()));
        self.pod_startup.set(snapshot.pod_startup.map_or(0.0, |startup| startup.as_secs_f64()));
        self.sent_away.refresh();
        for (state, count) in [
            (EndpointState::Ready, snapshot.ready),
            (EndpointState::Unready, snapshot.unready),
            (EndpointState::Ejected, snapshot.ejected),
        ] {
            self.endpoints.with_label_values(&[state.label()]).set(count as i64);
        }
        matte_serve::exposition::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exported() {
        let metrics = Metrics::default();
        metrics.count_outcome("ok");
        metrics.count_retry(RetryReason::PodBusy);
        let text = metrics.render(&Snapshot { queue_depth: 3, ready: 2, discovery_up: true, ..Snapshot::default() });
        for name in names::ALL {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(text.contains("matte_gateway_queue_depth 3"), "{text}");
        assert!(text.contains(r#"matte_gateway_endpoints{state="ready"} 2"#), "{text}");
        let refusals = [
            crate::Error::QueueFull { expected: 9.0, budget: 1.0, retry_after: std::time::Duration::from_secs(9) },
            crate::Error::NoCapacity { budget: 1.0, retry_after: std::time::Duration::from_secs(5) },
        ];
        assert_eq!(refusals.map(|error| error.code()), names::REFUSED_OUTCOMES);
        for outcome in names::REFUSED_OUTCOMES {
            let zero = format!(r#"matte_gateway_requests_total{{outcome="{outcome}"}} 0"#);
            assert!(text.contains(&zero), "{outcome} is exported from the start:\n{text}");
        }
        assert!(text.contains(r#"matte_gateway_endpoints{state="ejected"} 0"#), "{text}");
        assert!(text.contains(r#"matte_gateway_upstream_retries_total{reason="pod_busy"} 1"#), "{text}");
        for reason in RetryReason::ALL.into_iter().filter(|&reason| reason != RetryReason::PodBusy) {
            let zero = format!(r#"matte_gateway_upstream_retries_total{{reason="{}"}} 0"#, reason.label());
            assert!(text.contains(&zero), "{zero} is exported from the start:\n{text}");
        }
        assert!(text.contains("matte_gateway_discovery_up 1"), "{text}");
        assert!(text.contains("matte_gateway_seconds_per_image 0\n"), "nothing served yet:\n{text}");
        assert!(text.contains("matte_gateway_pod_startup_seconds 0\n"), "no pod seen starting yet:\n{text}");
        let measured = Snapshot {
            per_image: Some(Duration::from_millis(600)),
            pod_startup: Some(Duration::from_secs(45)),
            ..Snapshot::default()
        };
        let text = metrics.render(&measured);
        assert!(text.contains("matte_gateway_seconds_per_image 0.6\n"), "{text}");
        assert!(text.contains("matte_gateway_pod_startup_seconds 45\n"), "{text}");
        let stale = metrics.render(&Snapshot { discovery_up: false, ..Snapshot::default() });
        assert!(stale.contains("matte_gateway_discovery_up 0"), "{stale}");
    }

    #[test]
    fn clients_sent_away_are_away_until_their_retry_after_then_due() {
        let metrics = Metrics::default();
        metrics.count_sent_away(Duration::from_secs(600));
        metrics.count_sent_away(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        let text = metrics.render(&Snapshot::default());
        assert!(text.contains("matte_gateway_deferred_requests 1"), "{text}");
        assert!(text.contains("matte_gateway_deferred_due_total 1"), "{text}");
        // Rendering again counts nobody twice.
        let again = metrics.render(&Snapshot::default());
        assert!(again.contains("matte_gateway_deferred_due_total 1"), "{again}");
    }
}
