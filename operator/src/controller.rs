//! The reconciler. For each `BackgroundRemovalService`, one pass is a pipeline:
//! read (the resource, its Deployment and pods) → validate → decide the replicas →
//! build the desired objects ([`crate::desired`]) → apply them with server-side apply →
//! write the status ([`crate::status`]) and Events. Everything but the reading and
//! writing is a pure function tested on its own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::autoscaler::pods::{PodCensus, census};
use crate::autoscaler::policy::{Decision, Memory, Observation, PolicySpec, decide};
use crate::autoscaler::prometheus::{PrometheusSource, Windows};
use crate::crd::{AutoscalingSpec, BackgroundRemovalService, BackgroundRemovalServiceStatus};
use crate::desired::{self, Defaults, MANAGER, Valid};
use crate::error::Error;
use crate::status::{self, Observed};
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
    /// The pods' scrape interval: how often the autoscaler looks again.
    pub scrape_interval: Duration,
    /// Only resources in this namespace; all when `None`.
    pub watch_namespace: Option<String>,
    /// The name Events are reported under, and this replica's identity.
    pub reporter: Reporter,
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    settings: Settings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Per resource: the autoscaler's memory and the failures in a row.
    remembered: Mutex<HashMap<ObjectRef<BackgroundRemovalService>, Remembered>>,
    /// Whether the PodMonitor CRD exists, and when that was last asked.
    pod_monitors: Mutex<Option<(Instant, bool)>>,
}

#[derive(Debug, Default, Clone)]
struct Remembered {
    memory: Memory,
    failures: u32,
}

/// How long the answer to "does the PodMonitor CRD exist" is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);
/// How often a resource without autoscaling is looked at again, drift aside.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = settings.watch_namespace.clone();
    let api = |client: &Client| scoped::<BackgroundRemovalService>(client, namespace.as_deref());
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));

    // Status writes change the resource but not its generation: reacting only to new
    // generations is what keeps the operator from waking itself up.
    let (reader, writer) = reflector::store();
    let resources = watcher(api(&client), watcher::Config::default())
        .backoff(watch_backoff())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), settings.reporter.clone()),
        client: client.clone(),
        settings,
        metrics: metrics.clone(),
        remembered: Mutex::default(),
        pod_monitors: Mutex::default(),
    });

    metrics.follow_resources(Some(reader.clone()));
    Controller::for_stream(resources, reader)
        .owns_stream(metadata_watch::<Deployment>(&client, namespace.as_deref(), managed.clone()))
        .owns_stream(metadata_watch::<Service>(&client, namespace.as_deref(), managed.clone()))
        .owns_stream(metadata_watch::<PodDisruptionBudget>(&client, namespace.as_deref(), managed.clone()))
        .watches_stream(
            metadata_watch::<Pod>(&client, namespace.as_deref(), managed.clone()),
            |pod: PartialObjectMeta<Pod>| {
                let namespace = pod.namespace();
                pod.labels()
                    .get(desired::SERVICE_LABEL)
                    .map(|name| ObjectRef::new(name).within(namespace.as_deref().unwrap_or_default()))
            },
        )
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
        .trigger_backoff(NoSharedPause)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
    metrics.follow_resources(None);
}

/// How long a watch waits before trying again after an error: from 250 ms up to 3 s.
/// After an apiserver outage every watch fails (a refused connection, then 410 Gone and
/// a relist); client-go's 30 s ceiling left the operator deaf for a minute after an
/// apiserver restart, where this recovers in seconds and is still no load to speak of.
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(3))
        .with_factor(2.0)
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(30))
}

/// The Controller's own pause after an error from any of its watches: none. Each watch
/// already backs off by itself (`watch_backoff`); a shared pause on top would stop every
/// watch for one's failure, and after an outage the failures of all five queue up.
struct NoSharedPause;

impl Iterator for NoSharedPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoSharedPause {
    fn reset(&mut self) {}
}

/// A metadata-only watch of the objects the operator makes (and of their pods): owner
/// references and labels are all it needs from them, so whole Deployments and Pods are
/// never held in memory. Each watch backs off on its own (`watch_backoff`).
fn metadata_watch<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(scoped::<PartialObjectMeta<K>>(client, namespace), config).backoff(watch_backoff()).touched_objects()
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn reconcile(brs: Arc<BackgroundRemovalService>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match reconcile_one(&brs, &context).await {
        Err(error) if error.is_refusal() => context.report_refusal(&brs, &error).await,
        other => other,
    };
    let label = match &result {
        Ok((_, Outcome::Done)) => "ok",
        Ok((_, Outcome::InvalidSpec)) => "invalid_spec",
        Ok((_, Outcome::Refused)) => "refused",
        Err(_) => "error",
    };
    context.metrics.reconciled(label, started.elapsed());
    if result.is_ok() {
        context.remember(&brs, |r| r.failures = 0);
    }
    result.map(|(action, _)| action)
}

/// Per-object exponential backoff: 5 s, 10 s, … up to 5 minutes.
fn error_policy(brs: Arc<BackgroundRemovalService>, error: &Error, context: Arc<Context>) -> Action {
    let mut failures = 0;
    context.remember(&brs, |r| {
        r.failures = r.failures.saturating_add(1);
        failures = r.failures;
    });
    let delay = Duration::from_secs(5).saturating_mul(1 << failures.min(6).saturating_sub(1)).min(RESYNC);
    tracing::warn!(resource = %ObjectRef::from_obj(brs.as_ref()), %error, failures, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// How a pass that did not fail ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Reported in the status; waits for the next edit.
    InvalidSpec,
    /// The apiserver refused a request: reported in the status and an Event once, then
    /// tried again only every `RESYNC`, since retrying sooner cannot help.
    Refused,
}

async fn reconcile_one(brs: &BackgroundRemovalService, context: &Context) -> Result<(Action, Outcome), Error> {
    let namespace = brs.namespace().unwrap_or_default();
    let name = brs.name_any();
    let object = format!("BackgroundRemovalService {namespace}/{name}");
    let previous = brs.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let selector = desired::selector_string(brs);

    let valid = match desired::validate(brs, &context.settings.defaults) {
        Ok(valid) => valid,
        Err(problems) => {
            // No retry: nothing will change until the spec does, which wakes the controller.
            let observed = Observed {
                generation: brs.metadata.generation,
                selector,
                problems: &problems,
                desired_replicas: previous.desired_replicas,
                ..Observed::default()
            };
            context.write_status(brs, &previous, status::compute(&previous, &observed, &Time(now))).await?;
            return Ok((Action::await_change(), Outcome::InvalidSpec));
        }
    };

    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let existing = deployments.get_opt(&name).await.map_err(Error::kube("read the Deployment of", &object))?;
    let pods = Api::<Pod>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list the pods of", &object))?;
    let census = census(&pods.items, now);
    let current = existing.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);

    let autoscaling = &brs.spec.autoscaling;
    let decision =
        if autoscaling.enabled { Some(context.autoscale(brs, &census, current.unwrap_or(0)).await) } else { None };
    let replicas = match &decision {
        Some(decision) => i32::try_from(decision.replicas).unwrap_or(i32::MAX),
        None => brs.spec.replicas.unwrap_or(1),
    };

    let applied = context.apply_all(brs, &valid, replicas).await;
    match (&applied, &existing, current) {
        (Err(_), _, _) => {} // the Degraded condition says so, with an Event when it changes
        (Ok(_), None, _) => {
            let gateway = if valid.gateway.is_some() {
                format!(", and the gateway {}", desired::gateway_name(brs))
            } else {
                String::new()
            };
            let note =
                format!("created Deployment, Service and PodDisruptionBudget {name} with {replicas} replicas{gateway}");
            context.publish(brs, EventType::Normal, "Created", "Apply", note).await;
        }
        (Ok(_), Some(_), Some(current)) if current != replicas => {
            let why = decision.as_ref().map_or_else(|| "spec.replicas".to_owned(), |d| d.message.clone());
            let note = format!("scaled from {current} to {replicas}: {why}");
            context.publish(brs, EventType::Normal, "Scaled", "Scale", note).await;
        }
        _ => {}
    }

    // A new Deployment generation with the same replicas: the pods roll to a new template.
    if let (Ok(after), Some(before)) = (&applied, &existing)
        && current == Some(replicas)
        && after.deployment.metadata.generation != before.metadata.generation
    {
        let note = format!("updated Deployment {name} from the changed spec; its pods roll over one at a time");
        context.publish(brs, EventType::Normal, "Updated", "Apply", note).await;
    }
    let deployment_status = match &applied {
        Ok(applied) => applied.deployment.status.clone(),
        Err(_) => existing.and_then(|d| d.status),
    };
    // Unknown when the apply failed: Degraded says why, and the gateway is not judged.
    let gateway_status = applied.as_ref().ok().and_then(|a| a.gateway.as_ref()).map(|g| g.status.as_ref());
    let observed = Observed {
        generation: brs.metadata.generation,
        selector,
        problems: &[],
        apply_error: applied.as_ref().err().map(ToString::to_string),
        desired_replicas: replicas,
        deployment: deployment_status.as_ref(),
        unschedulable: census.unschedulable.clone(),
        failing: census.failing.clone(),
        decision: decision.as_ref(),
        gateway: gateway_status,
    };
    context.write_status(brs, &previous, status::compute(&previous, &observed, &Time(now))).await?;
    match applied {
        Err(error) if error.is_refusal() => return Ok((Action::requeue(RESYNC), Outcome::Refused)),
        Err(error) => return Err(error),
        Ok(_) => {}
    }

    let next = if autoscaling.enabled { context.settings.scrape_interval } else { RESYNC };
    Ok((Action::requeue(next), Outcome::Done))
}

impl Context {
    fn remember(&self, brs: &BackgroundRemovalService, change: impl FnOnce(&mut Remembered)) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(remembered.entry(ObjectRef::from_obj(brs)).or_default());
    }

    /// Asks the policy, with the pods as they are and the queue as Prometheus has it.
    async fn autoscale(&self, brs: &BackgroundRemovalService, census: &PodCensus, current: i32) -> Decision {
        let spec = policy_spec(&brs.spec.autoscaling, &Windows::for_scrape_interval(self.settings.scrape_interval));
        let queue = match self.metrics_source(brs) {
            Some(source) => match source.queue_metrics().await {
                Ok(queue) => queue,
                Err(error) => {
                    tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "cannot read the queue metrics");
                    None
                }
            },
            None => None,
        };
        let observation = Observation {
            // The wall clock: the memory in status is read by whichever replica leads next.
            now_seconds: jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
            replicas: u32::try_from(current).unwrap_or(0),
            ready_pods: census.ready,
            starting_pod_ages_seconds: census.starting_ages_seconds.clone(),
            unschedulable_pods: u32::try_from(census.unschedulable.pods).unwrap_or(0),
            measured_startup_seconds: census.median_startup_seconds,
            queue,
        };
        // This process's memory, or after a leader change the one the last leader left in status.
        let mut memory = brs.status.as_ref().and_then(|s| s.autoscaler_memory.clone()).unwrap_or_default();
        self.remember(brs, |r| {
            if r.memory != Memory::default() {
                memory = r.memory.clone();
            }
        });
        let decision = decide(&spec, &observation, &memory);
        self.remember(brs, |r| r.memory = decision.memory.clone());
        self.metrics.decided(brs, decision.reason);
        tracing::info!(
            resource = %ObjectRef::from_obj(brs),
            replicas = decision.replicas,
            reason = ?decision.reason,
            message = %decision.message,
            "scaling decision"
        );
        decision
    }

    /// The resource's Prometheus and the selector of its pods' series, if any is known.
    fn metrics_source(&self, brs: &BackgroundRemovalService) -> Option<PrometheusSource> {
        let configured = brs.spec.autoscaling.metrics.as_ref();
        let url = configured.map(|m| m.prometheus_url.clone()).or_else(|| self.settings.prometheus_url.clone())?;
        let selector = configured.and_then(|m| m.selector.clone()).unwrap_or_else(|| {
            format!(r#"namespace="{}",job="{}""#, brs.namespace().unwrap_or_default(), brs.name_any())
        });
        let windows = Windows::for_scrape_interval(self.settings.scrape_interval);
        Some(PrometheusSource::new(self.settings.prometheus_http.clone(), &url, &selector, &windows))
    }

    /// Applies every object `brs` needs (a PodMonitor only where its CRD exists), and
    /// removes the gateway's when it is turned off; returns the Deployment of the pods as
    /// the apiserver has it afterwards.
    async fn apply_all(&self, brs: &BackgroundRemovalService, valid: &Valid, replicas: i32) -> Result<Applied, Error> {
        let namespace = brs.namespace().unwrap_or_default();
        let client = &self.client;
        let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
        let services = Api::<Service>::namespaced(client.clone(), &namespace);
        let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace);
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
        let roles = Api::<Role>::namespaced(client.clone(), &namespace);
        let bindings = Api::<RoleBinding>::namespaced(client.clone(), &namespace);

        let deployment = apply(&deployments, "Deployment", &desired::deployment(brs, valid, replicas)).await?;
        apply(&services, "Service", &desired::pods_service(brs)).await?;
        apply(&budgets, "PodDisruptionBudget", &desired::pod_disruption_budget(brs)).await?;
        let mut gateway_deployment = None;
        match &valid.gateway {
            // The gateway's account and rights first, so that its pods can watch at once;
            // the Service last, so that clients move to a gateway that exists.
            Some(gateway) => {
                apply(&accounts, "ServiceAccount", &desired::gateway_service_account(brs)).await?;
                apply(&roles, "Role", &desired::gateway_role(brs)).await?;
                apply(&bindings, "RoleBinding", &desired::gateway_role_binding(brs)).await?;
                gateway_deployment =
                    Some(apply(&deployments, "Deployment", &desired::gateway_deployment(brs, gateway)).await?);
                apply(&budgets, "PodDisruptionBudget", &desired::gateway_disruption_budget(brs)).await?;
                apply(&services, "Service", &desired::service(brs)).await?;
            }
            // The Service first: clients move to the pods before the gateway goes.
            None => {
                apply(&services, "Service", &desired::service(brs)).await?;
                let name = desired::gateway_name(brs);
                delete_owned(&budgets, "PodDisruptionBudget", brs, &name).await?;
                delete_owned(&deployments, "Deployment", brs, &name).await?;
                delete_owned(&bindings, "RoleBinding", brs, &name).await?;
                delete_owned(&roles, "Role", brs, &name).await?;
                delete_owned(&accounts, "ServiceAccount", brs, &name).await?;
            }
        }
        if self.pod_monitors_exist().await {
            let resource = desired::pod_monitor_resource();
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
            apply(&api, "PodMonitor", &desired::pod_monitor(brs)).await?;
        }
        Ok(Applied { deployment, gateway: gateway_deployment })
    }

    /// Whether the Prometheus Operator's PodMonitor CRD is served (asked at most once a minute).
    async fn pod_monitors_exist(&self) -> bool {
        let cached = *self.pod_monitors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((asked, exists)) = cached
            && asked.elapsed() < DISCOVERY_TTL
        {
            return exists;
        }
        let exists = match kube::discovery::group(&self.client, "monitoring.coreos.com").await {
            Ok(group) => group.recommended_kind("PodMonitor").is_some(),
            Err(_) => false,
        };
        *self.pod_monitors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), exists));
        exists
    }

    /// A pass the apiserver refused before its status could be computed: `Degraded` says
    /// why, once; the next try comes after `RESYNC`, or at the next edit.
    async fn report_refusal(&self, brs: &BackgroundRemovalService, error: &Error) -> Result<(Action, Outcome), Error> {
        tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "the apiserver refused the pass");
        let previous = brs.status.clone().unwrap_or_default();
        let status = status::refused(&previous, brs.metadata.generation, error.to_string(), &Time(Timestamp::now()));
        self.write_status(brs, &previous, status).await?;
        Ok((Action::requeue(RESYNC), Outcome::Refused))
    }

    /// Writes the status with server-side apply, only when it changed, and announces a
    /// change of `Degraded` with an Event: one per problem, and one when it is over.
    async fn write_status(
        &self,
        brs: &BackgroundRemovalService,
        previous: &BackgroundRemovalServiceStatus,
        status: BackgroundRemovalServiceStatus,
    ) -> Result<(), Error> {
        if brs.status.is_some() && &status == previous {
            return Ok(());
        }
        let api: Api<BackgroundRemovalService> =
            Api::namespaced(self.client.clone(), &brs.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": BackgroundRemovalService::api_version(&()),
            "kind": BackgroundRemovalService::kind(&()),
            "status": status,
        });
        api.patch_status(&brs.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await.map_err(
            Error::kube("write the status of", format!("BackgroundRemovalService {}", ObjectRef::from_obj(brs))),
        )?;
        let degraded = status::condition(&status, status::DEGRADED);
        match (status::degraded_change(previous, &status), degraded) {
            (Some(true), Some(degraded)) => {
                let note = degraded.message.clone();
                self.publish(brs, EventType::Warning, &degraded.reason, "Observe", note).await;
            }
            (Some(false), _) => {
                let note = "the problem reported in the Degraded condition is gone".to_owned();
                self.publish(brs, EventType::Normal, "Recovered", "Observe", note).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Publishes an Event about `brs`; a failure to do so is logged, never fatal.
    async fn publish(
        &self,
        brs: &BackgroundRemovalService,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        match type_ {
            EventType::Warning => tracing::warn!(resource = %ObjectRef::from_obj(brs), reason, %note, "event"),
            EventType::Normal => tracing::info!(resource = %ObjectRef::from_obj(brs), reason, %note, "event"),
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &brs.object_ref(&())).await {
            tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "cannot publish an event");
        }
    }
}

/// Server-side apply of `object` under the operator's field manager, taking over
/// fields someone else changed (that is what repairing drift means); returns it as the
/// apiserver has it afterwards.
async fn apply<K>(api: &Api<K>, kind: &str, object: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let what = format!("{kind} {}/{name}", object.meta().namespace.clone().unwrap_or_default());
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(Error::kube("apply", what))
}

/// The Deployments as the apiserver has them after an apply.
struct Applied {
    /// The inference pods'.
    deployment: Deployment,
    /// The gateway's, when it is on.
    gateway: Option<Deployment>,
}

/// Deletes `name` if it exists and `brs` owns it: an object of that name someone else
/// made is left alone.
async fn delete_owned<K>(api: &Api<K>, kind: &str, brs: &BackgroundRemovalService, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{kind} {}/{name}", brs.namespace().unwrap_or_default());
    let Some(existing) = api.get_metadata_opt(name).await.map_err(Error::kube("read", what.clone()))? else {
        return Ok(());
    };
    let uid = brs.meta().uid.as_deref();
    if !existing
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && Some(owner.uid.as_str()) == uid)
    {
        return Ok(());
    }
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(Error::kube("delete", what)(error)),
    }
}

/// The policy's settings from the resource's `autoscaling`.
pub fn policy_spec(autoscaling: &AutoscalingSpec, windows: &Windows) -> PolicySpec {
    let count = |value: i32| u32::try_from(value).unwrap_or(0);
    PolicySpec {
        scale_down_delay_seconds: autoscaling.scale_down_delay_seconds.map(f64::from),
        surge_confirm_seconds: windows.surge_confirm().as_secs_f64(),
        ..PolicySpec::new(
            count(autoscaling.min_replicas),
            count(autoscaling.max_replicas),
            autoscaling.target_queue_latency_seconds,
        )
    }
}

/// Events carry at most 1 kB of note.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
