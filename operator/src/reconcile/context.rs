//! What every pass shares: the operator's settings, the apiserver client, the Event
//! recorder and the metrics, and what outlives a pass: per resource, the autoscaler's
//! memory and the failures in a row; per process, whether PodMonitors can be made.
//! Kept apart from the stages so that each of them reads as what it does to a resource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use crate::autoscaler::policy::{Decision, Memory};
use crate::autoscaler::prometheus::Windows;
use crate::crd::BackgroundRemovalService;
use crate::desired::{Defaults, ScrapeIntervals};
use crate::telemetry::Metrics;

/// How the operator was configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub defaults: Defaults,
    /// The Prometheus the autoscaler asks when a resource names none.
    pub prometheus_url: Option<String>,
    /// The one HTTP client (and connection pool) every Prometheus query goes through
    /// (`autoscaler::prometheus::http_client`).
    pub prometheus_http: reqwest::Client,
    /// How often the pods and the gateway are scraped; the autoscaler looks again every
    /// pods' interval.
    pub scrape_intervals: ScrapeIntervals,
    /// Only resources in this namespace; all when `None`.
    pub watch_namespace: Option<String>,
    /// The name Events are reported under, and this replica's identity.
    pub reporter: Reporter,
}

impl Settings {
    /// The windows the autoscaler reads `brs`'s metrics through: with its gateway in
    /// front, the gateway's samples come at the gateway's interval; without it, every
    /// sample comes at the pods'.
    pub fn windows(&self, brs: &BackgroundRemovalService) -> Windows {
        let gateway = if brs.spec.gateway.enabled { self.scrape_intervals.gateway } else { self.scrape_intervals.pods };
        Windows::for_scrape_intervals(self.scrape_intervals.pods, gateway)
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub(super) client: Client,
    pub(super) settings: Settings,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    /// Per resource: the autoscaler's memory and the failures in a row.
    remembered: Mutex<HashMap<ObjectRef<BackgroundRemovalService>, Remembered>>,
    /// Whether the PodMonitor CRD exists, and when that was last asked.
    pub(super) pod_monitors: Mutex<Option<(Instant, bool)>>,
}

#[derive(Debug, Default, Clone)]
struct Remembered {
    memory: Memory,
    failures: u32,
    /// The resource's generation for which the gateway's objects were found gone.
    gateway_gone_at: Option<i64>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), settings.reporter.clone()),
            client,
            settings,
            metrics,
            remembered: Mutex::default(),
            pod_monitors: Mutex::default(),
        }
    }

    fn remember<T>(&self, brs: &BackgroundRemovalService, change: impl FnOnce(&mut Remembered) -> T) -> T {
        let mut remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(remembered.entry(ObjectRef::from_obj(brs)).or_default())
    }

    /// The autoscaler's memory of `brs`: this process's, or after a leader change the
    /// one the last leader left in status.
    pub(super) fn memory(&self, brs: &BackgroundRemovalService) -> Memory {
        let kept = self.remember(brs, |r| (r.memory != Memory::default()).then(|| r.memory.clone()));
        kept.or_else(|| brs.status.as_ref().and_then(|s| s.autoscaler_memory.clone())).unwrap_or_default()
    }

    /// Keeps the memory `decision` passes on, counts its reason and logs it.
    pub(super) fn decided(&self, brs: &BackgroundRemovalService, decision: &Decision) {
        self.remember(brs, |r| r.memory = decision.memory.clone());
        self.metrics.decided(brs, decision.reason);
        tracing::info!(
            resource = %ObjectRef::from_obj(brs),
            replicas = decision.replicas,
            reason = ?decision.reason,
            message = %decision.message,
            "scaling decision"
        );
    }

    /// Counts one more failed pass of `brs` in a row; returns how many there are now.
    pub(super) fn failed(&self, brs: &BackgroundRemovalService) -> u32 {
        self.remember(brs, |r| {
            r.failures = r.failures.saturating_add(1);
            r.failures
        })
    }

    /// Whether the gateway's objects, with the gateway off, may still exist and must be
    /// looked for: not once they were found gone for this generation of `brs`. Five
    /// reads a pass for every resource without a gateway would otherwise load the
    /// apiserver for nothing; a new leader looks once.
    pub(super) fn gateway_may_linger(&self, brs: &BackgroundRemovalService) -> bool {
        let gone_at = self.remember(brs, |r| r.gateway_gone_at);
        gone_at.is_none() || gone_at != brs.metadata.generation
    }

    /// The gateway's objects are gone for this generation of `brs`.
    pub(super) fn gateway_gone(&self, brs: &BackgroundRemovalService) {
        self.remember(brs, |r| r.gateway_gone_at = brs.metadata.generation);
    }

    /// A pass of `brs` that did not fail ends its failures in a row.
    pub(super) fn succeeded(&self, brs: &BackgroundRemovalService) {
        self.remember(brs, |r| r.failures = 0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::desired::fixtures::{defaults, resource};

    #[test]
    fn a_resource_behind_its_gateway_reads_arrivals_at_the_gateways_interval_and_one_without_at_the_pods() {
        let settings = Settings {
            defaults: defaults(),
            prometheus_url: None,
            prometheus_http: reqwest::Client::new(),
            scrape_intervals: ScrapeIntervals { pods: Duration::from_secs(5), gateway: Duration::from_secs(1) },
            watch_namespace: None,
            reporter: Reporter { controller: "matte-operator".into(), instance: None },
        };
        let mut brs = resource("minimal.yaml");
        assert!(brs.spec.gateway.enabled, "the gateway is on by default");
        let behind = settings.windows(&brs);
        assert_eq!((behind.arrivals, behind.confirm()), (Duration::from_secs(5), Duration::from_secs(10)));
        brs.spec.gateway.enabled = false;
        let without = settings.windows(&brs);
        assert_eq!((without.arrivals, without.confirm()), (Duration::from_secs(10), Duration::from_secs(15)));
        assert_eq!((behind.rate, behind.recent), (without.rate, without.recent), "the pods' windows are the same");
    }
}
