//! The Controller's wiring: which watches wake the reconciler (the resources, the
//! objects made for them and their pods, all but the first as metadata only), how each
//! watch backs off after an error, and running it all until shutdown. What one pass
//! does is [`crate::reconcile`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::BackgroundRemovalService;
use crate::desired::{self, MANAGER};
use crate::reconcile::{self, Context, Settings};
use crate::telemetry::Metrics;

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
        .modify(forget_what_is_never_read)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    let context = Arc::new(Context::new(client.clone(), settings, metrics.clone(), Some(reader.clone())));

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
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| {
            let metrics = metrics.clone();
            async move { report_outcome(&metrics, result) }
        })
        .await;
    metrics.follow_resources(None);
}

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the resource in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a resource what the operator never reads and would otherwise hold in
/// its cache for every resource of the cluster: the field managers' records, and a
/// copy of the resource kept by `kubectl apply`, together often more than the spec.
fn forget_what_is_never_read(resource: &mut BackgroundRemovalService) {
    resource.metadata.managed_fields = None;
    if let Some(annotations) = resource.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// What the Controller yields for each pass, as the operator's logs and metrics show it.
/// A failed list or watch is a warning and counted: while it fails the operator does
/// not see what changes, and one resource that cannot be read (a status that does not
/// parse) fails the list of every resource. A pass that failed was reported with its
/// resource by the reconciler and `error_policy` already.
fn report_outcome<T, R: std::fmt::Display>(metrics: &Metrics, result: Result<T, controller::Error<R, watcher::Error>>) {
    match result {
        Err(controller::Error::QueueError(error)) => {
            metrics.watch_failed();
            tracing::warn!(%error, "a list or watch of the apiserver failed; retrying");
        }
        Err(error) => tracing::debug!(%error, "reconcile did not complete"),
        Ok(_) => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_operator_never_reads_is_not_cached() {
        let mut resource: BackgroundRemovalService = serde_yaml::from_str(
            r#"
apiVersion: matte.dev/v1alpha1
kind: BackgroundRemovalService
metadata:
  name: portraits
  namespace: shop
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"spec": "a whole copy"}'
    team: portraits
  managedFields:
    - manager: kubectl
      operation: Apply
spec:
  model: {url: https://models.example/isnet.onnx, sha256: b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb}
"#,
        )
        .expect("the fixture parses");
        let spec = resource.spec.clone();
        forget_what_is_never_read(&mut resource);
        assert_eq!(resource.metadata.managed_fields, None);
        let annotations = resource.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"], "other annotations stay");
        assert_eq!(resource.spec, spec);
    }
}
