//! The objects the operator wants to exist for one `BackgroundRemovalService`: pure
//! functions from the resource (and the operator's settings) to Kubernetes objects,
//! applied as they are with server-side apply. Nothing here talks to the apiserver.

mod deployment;
mod gateway;
mod pod_fields;
mod pod_monitor;
mod quantity;
mod service;
mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::BackgroundRemovalService;

pub use deployment::{STARTUP_MARGIN_SECONDS, deployment, startup_deadline_seconds};
pub use gateway::{
    gateway_deployment, gateway_disruption_budget, gateway_name, gateway_role, gateway_role_binding,
    gateway_service_account,
};
pub use pod_monitor::{ScrapeIntervals, pod_monitor, pod_monitor_resource};
pub use service::{Front, pod_disruption_budget, pods_service, service};
pub use validate::{Valid, ValidGateway, validate};

/// The field manager of every apply, and the `app.kubernetes.io/managed-by` label.
pub const MANAGER: &str = "matte-operator";
/// The label that says which of Matte's programs a pod runs: [`INFERENCE_APP`] or
/// [`GATEWAY_APP`].
pub const APP_LABEL: &str = "app.kubernetes.io/name";
/// [`APP_LABEL`] of the inference pods.
pub const INFERENCE_APP: &str = "matte-inference";
/// [`APP_LABEL`] of the gateway's pods.
pub const GATEWAY_APP: &str = "matte-gateway";

/// The label that ties pods and the objects around them to their resource.
pub const SERVICE_LABEL: &str = "matte.dev/service";

/// What the operator's own configuration contributes to every resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// The inference image for resources that do not name one.
    pub inference_image: String,
    /// The gateway image for resources that do not name one.
    pub gateway_image: String,
    /// The Prometheus servers a resource may name in `spec.autoscaling.metrics` (the
    /// operator's default among them): the operator sends queries to them from inside
    /// the cluster, so a resource may not point it at any other address.
    pub allowed_prometheus_urls: Vec<String>,
    /// The label that carries a series' namespace: a resource's selector is confined
    /// to its own namespace by it; `None` takes selectors as they are.
    pub metrics_namespace_label: Option<String>,
    /// Labels on every PodMonitor beside the operator's own, for a Prometheus that
    /// picks its PodMonitors by label.
    pub pod_monitor_labels: BTreeMap<String, String>,
}

/// Labels on everything made for `brs`'s pods.
pub fn labels(brs: &BackgroundRemovalService) -> BTreeMap<String, String> {
    owned_labels(brs, selector_labels(brs))
}

/// `selector` and the labels that say whose an object is and who manages it (the
/// operator watches its objects by the latter).
fn owned_labels(brs: &BackgroundRemovalService, mut selector: BTreeMap<String, String>) -> BTreeMap<String, String> {
    selector.insert("app.kubernetes.io/instance".into(), brs.name_any());
    selector.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    selector
}

/// `<name>-pods`: the headless Service of the inference pods, whose EndpointSlices the
/// gateway follows.
pub fn pods_service_name(brs: &BackgroundRemovalService) -> String {
    format!("{}-pods", brs.name_any())
}

/// The labels that select `brs`'s pods; kept small because a Deployment's selector
/// can never change.
pub fn selector_labels(brs: &BackgroundRemovalService) -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.to_owned(), INFERENCE_APP.to_owned()), (SERVICE_LABEL.to_owned(), brs.name_any())])
}

/// The labels that select `brs`'s gateway pods.
pub fn gateway_selector_labels(brs: &BackgroundRemovalService) -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.to_owned(), GATEWAY_APP.to_owned()), (SERVICE_LABEL.to_owned(), brs.name_any())])
}

/// `selector_labels` as the string the scale subresource and `kubectl` take.
pub fn selector_string(brs: &BackgroundRemovalService) -> String {
    selector_labels(brs).iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

fn label_selector(brs: &BackgroundRemovalService) -> LabelSelector {
    LabelSelector { match_labels: Some(selector_labels(brs)), ..LabelSelector::default() }
}

/// A PodDisruptionBudget letting voluntary evictions take one of `selector`'s pods at a
/// time, an unready one always.
fn one_at_a_time(metadata: ObjectMeta, selector: LabelSelector) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(selector),
            max_unavailable: Some(IntOrString::Int(1)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Name, namespace, labels and the controller reference through which Kubernetes
/// deletes the object with its resource.
fn metadata(brs: &BackgroundRemovalService) -> ObjectMeta {
    metadata_named(brs, brs.name_any(), labels(brs))
}

/// [`metadata`] for an object of another name and labels.
fn metadata_named(brs: &BackgroundRemovalService, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: brs.namespace(),
        labels: Some(labels),
        owner_references: owner_reference(brs).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// `None` only for a resource that has not been stored yet (no uid).
fn owner_reference(brs: &BackgroundRemovalService) -> Option<OwnerReference> {
    brs.controller_owner_ref(&())
}

/// Whether `brs` is the controller among `owners`: an object of one of its names that it
/// does not control is someone else's.
pub fn controlled_by(owners: &[OwnerReference], brs: &BackgroundRemovalService) -> bool {
    let uid = brs.meta().uid.as_deref();
    owners.iter().any(|owner| owner.controller == Some(true) && Some(owner.uid.as_str()) == uid)
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Resources read from `operator/tests/fixtures/`, and golden files beside them:
    //! `MATTE_UPDATE_FIXTURES=1 cargo test` rewrites the golden files after a deliberate change.

    use std::path::PathBuf;

    use super::Defaults;
    use crate::crd::BackgroundRemovalService;

    fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    /// A resource as the apiserver would hand it over: defaults applied, uid set.
    pub fn resource(name: &str) -> BackgroundRemovalService {
        let text = std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        let mut brs: BackgroundRemovalService =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        brs.metadata.uid.get_or_insert_with(|| "6b1f0c1e-0000-4000-8000-000000000001".to_owned());
        brs
    }

    pub fn defaults() -> Defaults {
        Defaults {
            inference_image: "localhost/matte-inference:0.1.0".into(),
            gateway_image: "localhost/matte-gateway:0.1.0".into(),
            // The one full.yaml names.
            allowed_prometheus_urls: vec!["http://prometheus.monitoring:9090".into()],
            metrics_namespace_label: Some("namespace".into()),
            pod_monitor_labels: std::collections::BTreeMap::new(),
        }
    }

    /// Compares `object` with the golden YAML file `name`.
    pub fn assert_golden(name: &str, object: &impl serde::Serialize) {
        let actual = serde_yaml::to_string(object).expect("objects serialise");
        if std::env::var_os("MATTE_UPDATE_FIXTURES").is_some() {
            std::fs::write(path(name), &actual).expect("golden file written");
            return;
        }
        let expected = std::fs::read_to_string(path(name))
            .unwrap_or_else(|e| panic!("golden file {name}: {e} (MATTE_UPDATE_FIXTURES=1 writes it)"));
        assert_eq!(actual, expected, "{name} differs from what is built (MATTE_UPDATE_FIXTURES=1 rewrites it)");
    }
}
