//! What the operator tells the people running it besides its logs (`matte_serve::logging`,
//! as every Matte process writes them): Prometheus metrics about its reconciles and
//! decisions, and health endpoints for its probes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use matte_common::paths;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::autoscaler::policy::Reason;
use crate::crd::{BackgroundRemovalService, BackgroundRemovalServiceStatus};
use crate::error::Error;
use crate::status::OWN_CONDITIONS;

/// The operator's own metrics (prefix `matte_operator_`).
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    reconcile_seconds: HistogramVec,
    decisions: IntCounterVec,
    watch_errors: IntCounter,
    leader: IntGauge,
    conditions: IntGaugeVec,
    replicas: IntGaugeVec,
    /// The resources the acting controller caches, read at each scrape for `conditions`;
    /// `None` on a standby replica.
    resources: Mutex<Option<Store<BackgroundRemovalService>>>,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Metrics {
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "matte_operator_reconciliations_total",
                "Reconcile passes by result (ok, looked, invalid_spec, refused, error)",
            ),
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
            Opts::new("matte_operator_scaling_decisions_total", "Autoscaler decisions per resource by reason"),
            &["resource_namespace", "resource_name", "reason"],
        )
        .expect("a valid metric");
        let watch_errors = IntCounter::new(
            "matte_operator_watch_errors_total",
            "Lists and watches of the apiserver that failed (each is retried, backing off up to 3 s): \
             while they fail, the operator does not see what changes",
        )
        .expect("a valid metric");
        let leader = IntGauge::new("matte_operator_leader", "1 while this replica holds the leader lease")
            .expect("a valid metric");
        // Not `namespace`/`name`: Prometheus gives the scraped pod's own namespace that
        // label, and would rename this one.
        let conditions = IntGaugeVec::new(
            Opts::new(
                "matte_operator_condition",
                "1 while a BackgroundRemovalService's status condition is True, 0 while False or Unknown",
            ),
            &["resource_namespace", "resource_name", "condition"],
        )
        .expect("a valid metric");
        let replicas = IntGaugeVec::new(
            Opts::new(
                "matte_operator_replicas",
                "A BackgroundRemovalService's pods as its status counts them, by state: wanted, ready, \
                 starting, unschedulable, failing",
            ),
            &["resource_namespace", "resource_name", "state"],
        )
        .expect("a valid metric");
        let registry = Registry::new();
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_seconds.clone()),
            Box::new(decisions.clone()),
            Box::new(watch_errors.clone()),
            Box::new(leader.clone()),
            Box::new(conditions.clone()),
            Box::new(replicas.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Metrics {
            registry,
            reconciliations,
            reconcile_seconds,
            decisions,
            watch_errors,
            leader,
            conditions,
            replicas,
            resources: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one pass: `ok`, `looked` (observed and decided with nothing to write),
    /// `invalid_spec`, `refused` (by the apiserver, reported and retried slowly) or
    /// `error` (retried with backoff).
    pub fn reconciled(&self, label: &str, took: Duration) {
        self.reconciliations.with_label_values(&[label]).inc();
        self.reconcile_seconds.with_label_values(&[label]).observe(took.as_secs_f64());
    }

    pub fn decided(&self, resource: &BackgroundRemovalService, reason: Reason) {
        let (namespace, name) = (resource.namespace().unwrap_or_default(), resource.name_any());
        self.decisions.with_label_values(&[&namespace, &name, &format!("{reason:?}")]).inc();
    }

    /// Counts a list or watch of the apiserver that failed.
    pub fn watch_failed(&self) {
        self.watch_errors.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Reports the conditions of the resources in `store` from now on; `None` when this
    /// replica stops acting (the next leader reports them).
    pub fn follow_resources(&self, store: Option<Store<BackgroundRemovalService>>) {
        *self.resources.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = store;
    }

    /// Ready once the apiserver has answered this process.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        // Rebuilt from the cache at each scrape, so a deleted resource's series go with it.
        self.conditions.reset();
        self.replicas.reset();
        let mut live = std::collections::HashSet::new();
        if let Some(store) = self.resources.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
            for resource in store.state() {
                let (namespace, name) = (resource.namespace().unwrap_or_default(), resource.name_any());
                // The cache holds the status as written, by whoever may write it: another's
                // conditions are no series of the operator's, however many there are.
                let conditions = resource.status.iter().flat_map(|status| &status.conditions);
                for condition in conditions.filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str())) {
                    let value = i64::from(condition.status == "True");
                    self.conditions.with_label_values(&[&namespace, &name, &condition.type_]).set(value);
                }
                if let Some(status) = &resource.status {
                    for (state, count) in replica_states(status) {
                        self.replicas.with_label_values(&[&namespace, &name, state]).set(i64::from(count));
                    }
                }
                live.insert((namespace, name));
            }
        }
        self.forget_decisions_of_deleted(&live);
        let mut text = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Drops the decision counters of resources no longer in the cache (deleted, or no
    /// longer this replica's to act on), so that their series end.
    fn forget_decisions_of_deleted(&self, live: &std::collections::HashSet<(String, String)>) {
        use prometheus::core::Collector;
        for family in self.decisions.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                let resource = (label("resource_namespace"), label("resource_name"));
                if !live.contains(&resource) {
                    let reason = label("reason");
                    let _ = self.decisions.remove_label_values(&[&resource.0, &resource.1, &reason]);
                }
            }
        }
    }
}

/// A status's pod counts by state; `starting` is what is neither ready nor stuck.
fn replica_states(status: &BackgroundRemovalServiceStatus) -> [(&'static str, i32); 5] {
    // Read back from the apiserver, where whoever may write the status may have left any
    // int32: saturating, a forged count cannot overflow the scrape.
    let stuck = status.unschedulable_replicas.saturating_add(status.failing_replicas);
    let starting = status.replicas.saturating_sub(status.ready_replicas).saturating_sub(stuck);
    [
        ("wanted", status.desired_replicas),
        ("ready", status.ready_replicas),
        ("starting", starting.max(0)),
        ("unschedulable", status.unschedulable_replicas),
        ("failing", status.failing_replicas),
    ]
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
        .route(paths::METRICS, get(|State(m): State<Arc<Metrics>>| async move { m.render() }))
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(
            paths::READYZ,
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

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn resource(namespace: &str, name: &str, conditions: &[(&str, &str)]) -> BackgroundRemovalService {
        let conditions: Vec<serde_json::Value> = conditions
            .iter()
            .map(|(type_, status)| {
                serde_json::json!({"type": type_, "status": status, "reason": "Test", "message": "",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "matte.dev/v1alpha1",
            "kind": "BackgroundRemovalService",
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"model": {"path": "/models/isnet.onnx"}},
            "status": {"conditions": conditions},
        }))
        .expect("a valid resource")
    }

    #[test]
    fn conditions_are_reported_per_resource_and_vanish_with_it() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("matte_operator_condition{"), "a standby reports none");

        let (store, mut writer) = reflector::store();
        // And another's condition, written to the status by whoever may.
        let portraits =
            resource("shop", "portraits", &[("Ready", "True"), ("Degraded", "False"), ("BackedUp-0001", "True")]);
        writer.apply_watcher_event(&watcher::Event::Apply(portraits.clone()));
        writer.apply_watcher_event(&watcher::Event::Apply(resource("lab", "sketches", &[("Ready", "Unknown")])));
        metrics.follow_resources(Some(store));
        let text = metrics.render();
        for line in [
            r#"matte_operator_condition{condition="Ready",resource_name="portraits",resource_namespace="shop"} 1"#,
            r#"matte_operator_condition{condition="Degraded",resource_name="portraits",resource_namespace="shop"} 0"#,
            r#"matte_operator_condition{condition="Ready",resource_name="sketches",resource_namespace="lab"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("BackedUp-0001"), "another's condition is no series of the operator's:\n{text}");

        writer.apply_watcher_event(&watcher::Event::Delete(portraits));
        let text = metrics.render();
        assert!(!text.contains(r#"resource_name="portraits""#), "a deleted resource leaves:\n{text}");
        assert!(text.contains(r#"resource_name="sketches""#), "{text}");

        metrics.follow_resources(None);
        assert!(!metrics.render().contains("matte_operator_condition{"), "no longer acting: none");
    }

    #[test]
    fn forged_counts_in_a_status_do_not_overflow_the_scrape() {
        let status = BackgroundRemovalServiceStatus {
            replicas: i32::MIN,
            ready_replicas: i32::MAX,
            unschedulable_replicas: i32::MAX,
            failing_replicas: i32::MAX,
            ..BackgroundRemovalServiceStatus::default()
        };
        let states = replica_states(&status);
        assert_eq!(states[2], ("starting", 0), "{states:?}");
        assert_eq!(states[3], ("unschedulable", i32::MAX), "{states:?}");
    }

    #[test]
    fn pods_and_decisions_are_reported_per_resource_and_vanish_with_it() {
        let metrics = Metrics::new();
        let (store, mut writer) = reflector::store();
        let mut portraits = resource("shop", "portraits", &[("Degraded", "True")]);
        if let Some(status) = portraits.status.as_mut() {
            (status.desired_replicas, status.replicas, status.ready_replicas) = (5, 5, 1);
            (status.unschedulable_replicas, status.failing_replicas) = (1, 2);
        }
        writer.apply_watcher_event(&watcher::Event::Apply(portraits.clone()));
        metrics.follow_resources(Some(store));
        metrics.decided(&portraits, Reason::ScaleUp);
        metrics.decided(&portraits, Reason::ScaleUp);
        let text = metrics.render();
        let series = |state: &str, value: i32| {
            format!(
                r#"matte_operator_replicas{{resource_name="portraits",resource_namespace="shop",state="{state}"}} {value}"#
            )
        };
        for line in [
            series("wanted", 5),
            series("ready", 1),
            series("starting", 1),
            series("unschedulable", 1),
            series("failing", 2),
            r#"matte_operator_scaling_decisions_total{reason="ScaleUp",resource_name="portraits",resource_namespace="shop"} 2"#
                .to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        writer.apply_watcher_event(&watcher::Event::Delete(portraits));
        let text = metrics.render();
        assert!(!text.contains("portraits"), "a deleted resource leaves:\n{text}");
    }
}
