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

use crate::crd::{BackgroundRemovalService, MAX_CACHED_SPEC_BYTES, OVERSIZED_SPEC_ANNOTATION};
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
    let resources = watcher(api(&client), watcher::Config::default().page_size(RESOURCES_PER_PAGE))
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

/// The resources a list asks for at once, on every (re)start of the watch: its answer
/// is read whole before any is cached, and a page of the usual 500 of the largest the
/// apiserver stores (1.5 MiB, see [`MAX_CACHED_SPEC_BYTES`]) would be most of a gigabyte.
const RESOURCES_PER_PAGE: u32 = 20;

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the resource in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a resource what the operator never reads and would otherwise hold in
/// its cache for every resource of the cluster: the field managers' records, and a
/// copy of the resource kept by `kubectl apply`, together often more than the spec. A
/// spec over [`MAX_CACHED_SPEC_BYTES`] loses the Kubernetes types it embeds whole, the
/// only fields that can make it so large, and is marked
/// ([`OVERSIZED_SPEC_ANNOTATION`]) for the pass to refuse it.
fn forget_what_is_never_read(resource: &mut BackgroundRemovalService) {
    resource.metadata.managed_fields = None;
    if let Some(annotations) = resource.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        annotations.remove(OVERSIZED_SPEC_ANNOTATION);
    }
    let spec_bytes = serde_json::to_vec(&resource.spec).map_or(0, |bytes| bytes.len());
    if spec_bytes > MAX_CACHED_SPEC_BYTES {
        let gpu = &mut resource.spec.gpu;
        (gpu.affinity, gpu.tolerations, gpu.node_selector) = (None, None, None);
        resource.spec.image_pull_secrets = None;
        resource.annotations_mut().insert(OVERSIZED_SPEC_ANNOTATION.to_owned(), spec_bytes.to_string());
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

    #[test]
    fn an_oversized_spec_is_cached_without_its_embedded_types_and_marked() {
        let mut resource: BackgroundRemovalService = serde_yaml::from_str(
            r#"
apiVersion: matte.dev/v1alpha1
kind: BackgroundRemovalService
metadata: {name: portraits, namespace: shop, annotations: {matte.dev/oversized-spec-bytes: "1"}}
spec:
  model: {url: https://models.example/isnet.onnx, sha256: b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb}
  gpu:
    nodeSelector: {pool: gpu}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions:
            - {key: zone, operator: In, values: [a]}
"#,
        )
        .expect("the fixture parses");
        let small = resource.clone();
        forget_what_is_never_read(&mut resource);
        assert_eq!(resource.spec, small.spec, "a spec within the bound is kept whole");
        assert_eq!(resource.metadata.annotations.clone().unwrap_or_default().len(), 0, "a user's marker is dropped");

        // 64 terms of 64 values of 40 characters: about 190 KiB, which the schema allows.
        let values: Vec<String> = (0..64).map(|i| format!("{i:040}")).collect();
        let term = serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": values}]});
        let affinity = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": vec![term; 64]}}});
        resource.spec.gpu.affinity = Some(serde_json::from_value(affinity).expect("an affinity"));
        let bytes = serde_json::to_vec(&resource.spec).expect("serializes").len();
        assert!(bytes > MAX_CACHED_SPEC_BYTES, "{bytes}");
        forget_what_is_never_read(&mut resource);
        assert_eq!((resource.spec.gpu.affinity.is_none(), resource.spec.gpu.node_selector.is_none()), (true, true));
        let annotations = resource.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(OVERSIZED_SPEC_ANNOTATION), Some(&bytes.to_string()));
        assert!(serde_json::to_vec(&resource.spec).expect("serializes").len() < 1024, "what is cached is small");
    }
}
