//! What the operator tells the people running it: JSON (or text) logs, Prometheus
//! metrics about its reconciles and decisions, and health endpoints for its probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::autoscaler::policy::Reason;
use crate::error::Error;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `level` is an `EnvFilter` directive such as `info`
/// or `matte_operator=debug,kube=info`.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

/// The operator's own metrics (prefix `matte_operator_`).
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    reconcile_seconds: HistogramVec,
    decisions: IntCounterVec,
    leader: IntGauge,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Metrics {
        let reconciliations = IntCounterVec::new(
            Opts::new("matte_operator_reconciliations_total", "Reconcile passes by result (ok, invalid_spec, error)"),
            &["result"],
        )
        .expect("a valid metric");
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new("matte_operator_reconcile_duration_seconds", "Time one reconcile pass took")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["result"],
        )
        .expect("a valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("matte_operator_scaling_decisions_total", "Autoscaler decisions by reason"),
            &["reason"],
        )
        .expect("a valid metric");
        let leader = IntGauge::new("matte_operator_leader", "1 while this replica holds the leader lease")
            .expect("a valid metric");
        let registry = Registry::new();
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_seconds.clone()),
            Box::new(decisions.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Metrics { registry, reconciliations, reconcile_seconds, decisions, leader, ready: AtomicBool::new(false) }
    }

    /// Counts one pass; the bool of a success is whether the spec was invalid.
    pub fn reconciled<T, E>(&self, result: &Result<(T, bool), E>, took: Duration) {
        let label = match result {
            Ok((_, false)) => "ok",
            Ok((_, true)) => "invalid_spec",
            Err(_) => "error",
        };
        self.reconciliations.with_label_values(&[label]).inc();
        self.reconcile_seconds.with_label_values(&[label]).observe(took.as_secs_f64());
    }

    pub fn decided(&self, reason: Reason) {
        self.decisions.with_label_values(&[&format!("{reason:?}")]).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Ready once the apiserver has answered this process.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let mut text = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Binds `address` now (so a taken port fails at start-up, not later) and returns the
/// server to run: `/metrics`, `/healthz` (the process is alive) and `/readyz` (it has
/// reached the apiserver; a standby replica is ready to take over).
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<impl std::future::Future<Output = std::io::Result<()>>, Error> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| Error::Listen { address, source })?;
    let app = Router::new()
        .route("/metrics", get(|State(m): State<Arc<Metrics>>| async move { m.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not connected to the apiserver yet")
                }
            }),
        )
        .with_state(metrics);
    Ok(async move { axum::serve(listener, app).await })
}
