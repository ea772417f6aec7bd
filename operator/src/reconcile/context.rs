//! What every pass shares: the operator's settings, the apiserver client, the Event
//! recorder and the metrics, and what outlives a pass: per resource, the autoscaler's
//! memory and the failures in a row (for as long as the resource is cached, and for
//! that object only); per process, whether PodMonitors can be made.
//! Kept apart from the stages so that each of them reads as what it does to a resource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::autoscaler::mounts::MountFailure;
use crate::autoscaler::policy::{Decision, Memory, Reason};
use crate::autoscaler::prometheus::{PrometheusClient, Windows};
use crate::crd::BackgroundRemovalService;
use crate::desired::{Defaults, ScrapeIntervals};
use crate::events::Recorder;
use crate::telemetry::Metrics;

/// How the operator was configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub defaults: Defaults,
    /// The Prometheus the autoscaler asks when a resource names none.
    pub prometheus_url: Option<String>,
    /// The one client (a connection pool and the bound on queries in flight) every
    /// Prometheus query goes through (`autoscaler::prometheus::http_client`).
    pub prometheus_client: PrometheusClient,
    /// How often the pods and the gateway are scraped; the autoscaler looks again every
    /// gateway's interval for a resource behind its gateway, every pods' otherwise
    /// (`Windows::pass`).
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
    remembered: Mutex<Remembering>,
    /// The resources the controller caches, whose absence says what to forget; `None`
    /// where nothing caches them (tests of one pass).
    resources: Option<Store<BackgroundRemovalService>>,
    /// Whether the PodMonitor CRD exists, and when that was last asked.
    pub(super) pod_monitors: Mutex<Option<(Instant, bool)>>,
}

/// How often what is kept for resources no longer cached is dropped: a map of a few
/// hundred entries walked once a minute, so that a cluster whose resources come and go
/// (one per branch, per test run) does not grow the operator's memory for ever.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// What outlives a pass, per resource, for the object it was kept for: a resource
/// deleted and made again under its name is another object (another uid), whose
/// autoscaler starts from its own status, not from its predecessor's bursts and writes.
#[derive(Debug, Default)]
struct Remembering {
    by_resource: HashMap<ObjectRef<BackgroundRemovalService>, Remembered>,
    forgotten_at: Option<Instant>,
}

impl Remembering {
    /// What is kept for `brs`, afresh if what was kept is another object's.
    fn of(&mut self, brs: &BackgroundRemovalService) -> &mut Remembered {
        let uid = brs.uid();
        let remembered = self.by_resource.entry(ObjectRef::from_obj(brs)).or_default();
        if remembered.uid != uid {
            *remembered = Remembered { uid, ..Remembered::default() };
        }
        remembered
    }

    /// Drops what is kept for objects that `exists` no longer finds, by reference and
    /// uid; at most once every `FORGET_EVERY`.
    fn forget_absent(&mut self, exists: impl Fn(&ObjectRef<BackgroundRemovalService>, Option<&str>) -> bool) {
        if self.forgotten_at.is_some_and(|at| at.elapsed() < FORGET_EVERY) {
            return;
        }
        self.forgotten_at = Some(Instant::now());
        self.by_resource.retain(|resource, remembered| exists(resource, remembered.uid.as_deref()));
    }
}

#[derive(Debug, Default, Clone)]
struct Remembered {
    /// The object this is kept for.
    uid: Option<String>,
    memory: Memory,
    failures: u32,
    /// The resource's generation for which the gateway's objects were found gone.
    gateway_gone_at: Option<i64>,
    /// The last pass that applied the objects and wrote the status: when, and for
    /// which generation of the resource.
    written: Option<(Instant, Option<i64>)>,
    /// The replicas and reason of the last decision, for logging only changes at `info`.
    last_decision: Option<(u32, Reason)>,
    /// The objects (kind, name) found to be the resource's own, or made by it, and their
    /// uids as its last apply found them: looked up once, before the first apply, not
    /// on every pass; each apply after it asks the apiserver to refuse another object
    /// of that name (`apply::apply_object`).
    ours: HashMap<(&'static str, String), String>,
    /// The last read of a stuck pod's Events: its uid, when, and what they said.
    mount_read: Option<(String, Instant, Option<MountFailure>)>,
}

/// How long what a stuck pod's Events said stands before they are read again: the
/// kubelet retries a mount about every two minutes and says so in an Event, and a pass
/// behind a gateway comes every second.
const EVENTS_READ_EVERY: Duration = Duration::from_secs(30);

/// Whether a pass must write (apply the objects and the status) rather than only look,
/// the last write having been `since_written` ago for `written_generation`: when the
/// replicas change, when the spec did, and at least once per pods' scrape interval
/// (half a pass early, so that passes a pods' interval apart all write), so that drift
/// is repaired and the status refreshed within it.
fn write_due(
    written: Option<(Duration, Option<i64>)>,
    generation: Option<i64>,
    replicas_change: bool,
    windows: &Windows,
) -> bool {
    let Some((since_written, written_generation)) = written else {
        return true;
    };
    replicas_change || written_generation != generation || since_written + windows.pass / 2 >= windows.scrape_interval
}

impl Context {
    /// `resources`: the controller's cache of the resources, if any.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        resources: Option<Store<BackgroundRemovalService>>,
    ) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), settings.reporter.clone()),
            client,
            settings,
            metrics,
            remembered: Mutex::default(),
            resources,
            pod_monitors: Mutex::default(),
        }
    }

    fn remember<T>(&self, brs: &BackgroundRemovalService, change: impl FnOnce(&mut Remembered) -> T) -> T {
        let mut remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(remembered.of(brs))
    }

    /// Drops what is kept for resources the cache no longer holds (deleted, or made
    /// again as another object), at most once every `FORGET_EVERY`.
    pub(super) fn forget_deleted(&self) {
        let Some(resources) = &self.resources else { return };
        let mut remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        remembered.forget_absent(|resource, uid| {
            resources.get(resource).is_some_and(|cached| cached.uid().as_deref() == uid)
        });
    }

    /// The autoscaler's memory of `brs`: this process's, or after a leader change the
    /// one the last leader left in status.
    pub(super) fn memory(&self, brs: &BackgroundRemovalService) -> Memory {
        let kept = self.remember(brs, |r| (r.memory != Memory::default()).then(|| r.memory.clone()));
        kept.or_else(|| brs.status.as_ref().and_then(|s| s.autoscaler_memory.clone())).unwrap_or_default()
    }

    /// Keeps the memory `decision` passes on, counts its reason and logs it: at `info`
    /// when its replicas or reason differ from the last decision's, at `debug` when it
    /// repeats it (a resource behind its gateway is decided every second).
    pub(super) fn decided(&self, brs: &BackgroundRemovalService, decision: &Decision) {
        let last = self.remember(brs, |r| {
            r.memory = decision.memory.clone();
            r.last_decision.replace((decision.replicas, decision.reason))
        });
        self.metrics.decided(brs, decision.reason);
        let resource = ObjectRef::from_obj(brs);
        let (replicas, reason, message) = (decision.replicas, decision.reason, &decision.message);
        if last == Some((replicas, reason)) {
            tracing::debug!(%resource, replicas, ?reason, %message, "scaling decision");
        } else {
            tracing::info!(%resource, replicas, ?reason, %message, "scaling decision");
        }
    }

    /// Counts one more failed pass of `brs` in a row; returns how many there are now.
    /// The next pass writes whatever this one did.
    pub(super) fn failed(&self, brs: &BackgroundRemovalService) -> u32 {
        self.remember(brs, |r| {
            r.failures = r.failures.saturating_add(1);
            r.written = None;
            r.failures
        })
    }

    /// Whether this pass of `brs`, read through `windows` and changing the replicas or
    /// not, must apply the objects and write the status, or only look ([`write_due`]). Without autoscaling every
    /// pass writes: it runs only when something changed.
    pub(super) fn write_due(&self, brs: &BackgroundRemovalService, windows: &Windows, replicas_change: bool) -> bool {
        if !brs.spec.autoscaling.enabled {
            return true;
        }
        let written = self.remember(brs, |r| r.written).map(|(at, generation)| (at.elapsed(), generation));
        write_due(written, brs.metadata.generation, replicas_change, windows)
    }

    /// This pass of `brs` applied its objects and wrote its status.
    pub(super) fn written(&self, brs: &BackgroundRemovalService) {
        self.remember(brs, |r| r.written = Some((Instant::now(), brs.metadata.generation)));
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
        // Its names are free again: whoever takes one before the gateway comes back is
        // not taken over.
        let gateway = crate::desired::gateway_name(brs);
        self.remember(brs, |r| {
            r.gateway_gone_at = brs.metadata.generation;
            r.ours.retain(|(_, name), _| *name != gateway);
        });
    }

    /// The uid of the `kind` named `name`, if it is known to be `brs`'s own.
    pub(super) fn known_ours(&self, brs: &BackgroundRemovalService, kind: &'static str, name: &str) -> Option<String> {
        self.remember(brs, |r| r.ours.get(&(kind, name.to_owned())).cloned())
    }

    /// The `kind` named `name`, of uid `uid`, is `brs`'s own (it controls it, or just
    /// applied it).
    pub(super) fn found_ours(&self, brs: &BackgroundRemovalService, kind: &'static str, name: &str, uid: String) {
        self.remember(brs, |r| r.ours.insert((kind, name.to_owned()), uid));
    }

    /// The `kind` named `name` is no longer known to be `brs`'s own: the object of that
    /// uid is gone, and whoever holds the name now is to be looked up.
    pub(super) fn lost_ours(&self, brs: &BackgroundRemovalService, kind: &'static str, name: &str) {
        self.remember(brs, |r| r.ours.remove(&(kind, name.to_owned())));
    }

    /// What the Events of `brs`'s pod `uid` said when last read, if that was within
    /// `EVENTS_READ_EVERY`; `None` when they are to be read again.
    pub(super) fn mount_read_lately(&self, brs: &BackgroundRemovalService, uid: &str) -> Option<Option<MountFailure>> {
        self.remember(brs, |r| match &r.mount_read {
            Some((read_for, at, said)) if read_for == uid && at.elapsed() < EVENTS_READ_EVERY => Some(said.clone()),
            _ => None,
        })
    }

    /// The Events of `brs`'s pod `uid` were read just now and said `said`.
    pub(super) fn mount_read(&self, brs: &BackgroundRemovalService, uid: &str, said: Option<MountFailure>) {
        self.remember(brs, |r| r.mount_read = Some((uid.to_owned(), Instant::now(), said)));
    }

    /// A pass of `brs` that did not fail ends its failures in a row.
    pub(super) fn succeeded(&self, brs: &BackgroundRemovalService) {
        self.remember(brs, |r| r.failures = 0);
    }
}

/// The operator's settings as the chart's defaults give them, with no Prometheus.
#[cfg(test)]
pub(super) fn test_settings() -> Settings {
    Settings {
        defaults: crate::desired::fixtures::defaults(),
        prometheus_url: None,
        prometheus_client: crate::autoscaler::prometheus::http_client(
            crate::autoscaler::prometheus::DEFAULT_MAX_CONCURRENT_QUERIES,
        )
        .expect("a client"),
        scrape_intervals: ScrapeIntervals { pods: Duration::from_secs(5), gateway: Duration::from_secs(1) },
        watch_namespace: None,
        reporter: Reporter { controller: "matte-operator".into(), instance: None },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::desired::fixtures::resource;

    #[test]
    fn a_resource_behind_its_gateway_reads_arrivals_at_the_gateways_interval_and_one_without_at_the_pods() {
        let settings = test_settings();
        let mut brs = resource("minimal.yaml");
        assert!(brs.spec.gateway.enabled, "the gateway is on by default");
        let behind = settings.windows(&brs);
        assert_eq!((behind.arrivals, behind.confirm()), (Duration::from_secs(5), Duration::from_secs(10)));
        brs.spec.gateway.enabled = false;
        let without = settings.windows(&brs);
        assert_eq!((without.arrivals, without.confirm()), (Duration::from_secs(10), Duration::from_secs(15)));
        assert_eq!((behind.rate, behind.recent), (without.rate, without.recent), "the pods' windows are the same");
        assert_eq!((behind.pass, without.pass), (Duration::from_secs(1), Duration::from_secs(5)));
    }

    fn with_uid(uid: &str) -> BackgroundRemovalService {
        let mut brs = resource("minimal.yaml");
        brs.metadata.uid = Some(uid.to_owned());
        brs
    }

    #[test]
    fn a_resource_made_again_under_its_name_starts_afresh() {
        let mut remembering = Remembering::default();
        let first = with_uid("0001");
        remembering.of(&first).failures = 3;
        assert_eq!(remembering.of(&first).failures, 3, "the same object: kept");
        let again = with_uid("0002");
        assert_eq!(remembering.of(&again).failures, 0, "another object under the same name");
        assert_eq!(remembering.by_resource.len(), 1);
    }

    #[test]
    fn what_is_kept_for_a_resource_no_longer_cached_is_forgotten() {
        let mut remembering = Remembering::default();
        let (kept, deleted) = (with_uid("0001"), {
            let mut other = with_uid("0002");
            other.metadata.name = Some("sketches".into());
            other
        });
        remembering.of(&kept).failures = 1;
        remembering.of(&deleted).failures = 1;
        let cached = ObjectRef::from_obj(&kept);
        remembering.forget_absent(|resource, uid| resource == &cached && uid == Some("0001"));
        assert_eq!(remembering.by_resource.keys().collect::<Vec<_>>(), [&cached]);
        // Not again before `FORGET_EVERY`: every pass asks, one in a minute walks the map.
        remembering.forget_absent(|_, _| false);
        assert_eq!(remembering.by_resource.len(), 1);
    }

    #[test]
    fn passes_between_writes_only_look_unless_the_replicas_or_the_spec_change() {
        let behind = Windows::for_scrape_intervals(Duration::from_secs(5), Duration::from_secs(1));
        let seconds = Duration::from_secs_f64;
        assert!(write_due(None, Some(1), false, &behind), "the first pass writes");
        assert!(!write_due(Some((seconds(1.0), Some(1))), Some(1), false, &behind), "a second later it looks");
        assert!(!write_due(Some((seconds(4.4), Some(1))), Some(1), false, &behind));
        assert!(write_due(Some((seconds(4.5), Some(1))), Some(1), false, &behind), "once a pods' interval");
        assert!(write_due(Some((seconds(1.0), Some(1))), Some(1), true, &behind), "a change of replicas");
        assert!(write_due(Some((seconds(1.0), Some(1))), Some(2), false, &behind), "an edited spec");
        // Without the gateway a pass comes every pods' interval, and each writes.
        let without = Windows::for_scrape_interval(Duration::from_secs(5));
        assert!(write_due(Some((seconds(2.5), Some(1))), Some(1), false, &without));
    }
}
