//! The pod's Prometheus metrics. Names come from `matte_common::metrics`, the contract
//! the autoscaler reads; buckets span 10 ms to 5 min, the range a request can take.

use std::time::Duration;

use matte_common::metrics as names;
use matte_serve::ConnectionGauges;
use matte_serve::sent_away::SentAway;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// The images a run of the loaded model takes at most, and how many it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelBatch {
    pub max: usize,
    pub requested: usize,
}

pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGauge,
    pub oldest_queued_age: Gauge,
    pub queue_wait: Histogram,
    pub inference: Histogram,
    pub batch_size: Histogram,
    pub request_duration: Histogram,
    pub requests: IntCounterVec,
    pub images_processed: IntCounter,
    pub inference_rows: IntCounter,
    pub inflight: IntGauge,
    pub ready: IntGauge,
    model_info: IntGaugeVec,
    max_batch_size: IntGauge,
    requested_max_batch_size: IntGauge,
    sent_away: SentAway,
    pub connections: ConnectionGauges,
}

/// The count of one request answered with an image, made once the answer's delivery
/// ends: `ok` when it was handed to the client's connection whole, `client_gone` when
/// the connection was dropped first (the client left, or stopped reading until the
/// write timeout cut it). Counted `ok` as its head was ready, an answer no client
/// received read as served.
pub struct Delivery {
    requests: IntCounterVec,
    outcome: &'static str,
}

impl Delivery {
    pub fn arrived(&mut self) {
        self.outcome = names::OK_OUTCOME;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.requests.with_label_values(&[self.outcome]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let seconds = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(names::SECONDS_BUCKETS.to_vec()))
                .expect("static histogram options are valid")
        };
        let metrics = Metrics {
            queue_depth: IntGauge::new(names::QUEUE_DEPTH, "Requests decoded and waiting for the inference loop.")
                .expect("valid"),
            oldest_queued_age: Gauge::new(
                names::OLDEST_QUEUED_AGE_SECONDS,
                "Age of the oldest request waiting for the inference loop, 0 when none waits.",
            )
            .expect("valid"),
            queue_wait: seconds(
                names::QUEUE_WAIT_SECONDS,
                "Time from admission to the start of the request's inference batch.",
            ),
            inference: seconds(names::INFERENCE_SECONDS, "Wall time of one inference run (one batch)."),
            batch_size: Histogram::with_opts(
                HistogramOpts::new(names::BATCH_SIZE, "Images per inference run.").buckets(BATCH_BUCKETS.to_vec()),
            )
            .expect("valid"),
            request_duration: seconds(names::REQUEST_DURATION_SECONDS, "Whole request time from arrival to response."),
            requests: IntCounterVec::new(
                Opts::new(names::REQUESTS_TOTAL, "Background-removal requests by outcome."),
                &[names::OUTCOME_LABEL],
            )
            .expect("valid"),
            images_processed: IntCounter::new(names::IMAGES_PROCESSED_TOTAL, "Images that went through inference.")
                .expect("valid"),
            inference_rows: IntCounter::new(
                names::INFERENCE_ROWS_TOTAL,
                "Rows of the model's batch computed: each run's images and its padding.",
            )
            .expect("valid"),
            inflight: IntGauge::new(names::INFLIGHT_REQUESTS, "Requests admitted and not yet answered.")
                .expect("valid"),
            ready: IntGauge::new(
                names::READY,
                "1 when the pod takes work, 0 while loading, draining or failing (as /readyz answers).",
            )
            .expect("valid"),
            model_info: IntGaugeVec::new(
                Opts::new(names::MODEL_INFO, "The loaded model and execution provider; always 1."),
                &["model", "provider"],
            )
            .expect("valid"),
            max_batch_size: IntGauge::new(
                names::MAX_BATCH_SIZE,
                "The most images a run takes: --max-batch-size, or 1 where the model's batch stays fixed.",
            )
            .expect("valid"),
            requested_max_batch_size: IntGauge::new(
                names::REQUESTED_MAX_BATCH_SIZE,
                "The images a run was asked to take (--max-batch-size).",
            )
            .expect("valid"),
            sent_away: SentAway::new(names::DEFERRED_REQUESTS, names::DEFERRED_DUE_TOTAL),
            connections: ConnectionGauges::new(names::OPEN_CONNECTIONS, names::MAX_CONNECTIONS),
            registry,
        };
        metrics.register_all();
        metrics
    }
}

impl Metrics {
    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 14] = [
            Box::new(self.queue_depth.clone()),
            Box::new(self.oldest_queued_age.clone()),
            Box::new(self.queue_wait.clone()),
            Box::new(self.inference.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.images_processed.clone()),
            Box::new(self.inference_rows.clone()),
            Box::new(self.inflight.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.model_info.clone()),
            Box::new(self.max_batch_size.clone()),
            Box::new(self.requested_max_batch_size.clone()),
        ];
        for collector in collectors.into_iter().chain(self.sent_away.collectors()).chain(self.connections.collectors())
        {
            self.registry.register(collector).expect("metric names are unique");
        }
        for outcome in [names::OK_OUTCOME, names::QUEUE_FULL_OUTCOME] {
            self.requests.with_label_values(&[outcome]).reset();
        }
    }

    /// What the loaded model is and runs on, the most images a run of it takes, and how
    /// many a run was asked to take.
    pub fn set_model(&self, model: &str, provider: &str, batch: ModelBatch) {
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        self.model_info.with_label_values(&[model, provider]).set(1);
        self.max_batch_size.set(gauge(batch.max));
        self.requested_max_batch_size.set(gauge(batch.requested));
    }

    pub fn count_outcome(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    /// The count of an answer on its way to its client ([`Delivery`]).
    pub fn delivery(&self) -> Delivery {
        Delivery { requests: self.requests.clone(), outcome: names::CLIENT_GONE_OUTCOME }
    }

    /// A client was refused, told to come back after `retry_after`.
    pub fn count_sent_away(&self, retry_after: Duration) {
        self.sent_away.send_away(retry_after);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.sent_away.refresh();
        matte_serve::exposition::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exported() {
        let metrics = Metrics::default();
        metrics.set_model("isnet", "cpu", ModelBatch { max: 1, requested: 4 });
        metrics.count_outcome("ok");
        let text = metrics.render();
        for name in names::ALL {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(text.contains(r#"matte_model_info{model="isnet",provider="cpu"} 1"#));
        assert!(text.contains("matte_max_batch_size 1"), "{text}");
        assert!(text.contains("matte_requested_max_batch_size 4"), "{text}");
        assert!(text.contains(r#"matte_requests_total{outcome="ok"} 1"#));
        assert!(text.contains(r#"matte_queue_wait_seconds_bucket{le="60"} 0"#));
        assert!(text.contains("matte_deferred_requests 0\n"), "exported from the start:\n{text}");
        let fresh = Metrics::default().render();
        assert!(fresh.contains("matte_requests_total{outcome=\"queue_full\"} 0\n"), "from the start:\n{fresh}");
        assert!(fresh.contains("matte_requests_total{outcome=\"ok\"} 0\n"), "from the start:\n{fresh}");
        assert!(text.contains("matte_deferred_due_total 0\n"), "exported from the start:\n{text}");
        metrics.count_sent_away(Duration::from_secs(600));
        assert!(metrics.render().contains("matte_deferred_requests 1\n"));
    }
}
