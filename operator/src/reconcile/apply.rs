//! The apply stage: what `build` made, applied with server-side apply in an order that
//! keeps the service reachable, and the gateway's objects removed when it is turned off.
//! The pass's only writes besides the status; a failure here is still reported in the
//! status (`Degraded`, `ApplyFailed`) before the pass ends.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::BackgroundRemovalService;
use crate::desired::{self, MANAGER};

use super::Context;
use super::build::Desired;

/// How long the answer to "does the PodMonitor CRD exist" is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// A write the apiserver did not take, naming the object (`kind namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot apply {kind} {namespace}/{name}: {source}")]
    Apply { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },

    /// Reading an object of the gateway's, to learn whether it is the resource's to delete.
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    Read { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },

    #[error("cannot delete {kind} {namespace}/{name}: {source}")]
    Delete { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },
}

impl Error {
    /// Whether the apiserver refused the request itself ([`crate::error::is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Apply { source, .. } | Error::Read { source, .. } | Error::Delete { source, .. } => {
                crate::error::is_refusal(source)
            }
        }
    }
}

/// The Deployments as the apiserver has them after an apply.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The inference pods'.
    pub deployment: Deployment,
    /// The gateway's, when it is on.
    pub gateway: Option<Deployment>,
}

/// Applies every object of `desired` (the PodMonitor only where its CRD exists), and
/// removes the gateway's when it is off; the first failure stops the rest.
pub async fn apply(context: &Context, brs: &BackgroundRemovalService, desired: &Desired) -> Result<Applied, Error> {
    let namespace = brs.namespace().unwrap_or_default();
    let client = &context.client;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let services = Api::<Service>::namespaced(client.clone(), &namespace);
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace);
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let roles = Api::<Role>::namespaced(client.clone(), &namespace);
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &namespace);

    let deployment = apply_object(&deployments, "Deployment", &desired.deployment).await?;
    apply_object(&services, "Service", &desired.pods_service).await?;
    apply_object(&budgets, "PodDisruptionBudget", &desired.pod_disruption_budget).await?;
    let mut gateway_deployment = None;
    match &desired.gateway {
        // The gateway's account and rights first, so that its pods can watch at once;
        // the Service last, so that clients move to a gateway that exists.
        Some(gateway) => {
            apply_object(&accounts, "ServiceAccount", &gateway.service_account).await?;
            apply_object(&roles, "Role", &gateway.role).await?;
            apply_object(&bindings, "RoleBinding", &gateway.role_binding).await?;
            gateway_deployment = Some(apply_object(&deployments, "Deployment", &gateway.deployment).await?);
            apply_object(&budgets, "PodDisruptionBudget", &gateway.disruption_budget).await?;
            apply_object(&services, "Service", &desired.service).await?;
        }
        // The Service first: clients move to the pods before the gateway goes.
        None => {
            apply_object(&services, "Service", &desired.service).await?;
            if context.gateway_may_linger(brs) {
                let name = desired::gateway_name(brs);
                delete_owned(&budgets, "PodDisruptionBudget", brs, &name).await?;
                delete_owned(&deployments, "Deployment", brs, &name).await?;
                delete_owned(&bindings, "RoleBinding", brs, &name).await?;
                delete_owned(&roles, "Role", brs, &name).await?;
                delete_owned(&accounts, "ServiceAccount", brs, &name).await?;
                context.gateway_gone(brs);
            }
        }
    }
    if pod_monitors_exist(context).await {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &desired::pod_monitor_resource());
        apply_object(&api, "PodMonitor", &desired.pod_monitor).await?;
    }
    Ok(Applied { deployment, gateway: gateway_deployment })
}

/// Server-side apply of `object` under the operator's field manager, taking over
/// fields someone else changed (that is what repairing drift means); returns it as the
/// apiserver has it afterwards.
async fn apply_object<K>(api: &Api<K>, kind: &'static str, object: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await.map_err(|source| Error::Apply {
        kind,
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: name.clone(),
        source: source.into(),
    })
}

/// Deletes `name` if it exists and `brs` owns it: an object of that name someone else
/// made is left alone.
async fn delete_owned<K>(
    api: &Api<K>,
    kind: &'static str,
    brs: &BackgroundRemovalService,
    name: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let namespace = || brs.namespace().unwrap_or_default();
    let existing = api.get_metadata_opt(name).await.map_err(|source| Error::Read {
        kind,
        namespace: namespace(),
        name: name.to_owned(),
        source: source.into(),
    })?;
    let Some(existing) = existing else {
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
        Err(source) => {
            Err(Error::Delete { kind, namespace: namespace(), name: name.to_owned(), source: source.into() })
        }
    }
}

/// Whether the Prometheus Operator's PodMonitor CRD is served (asked at most once a minute).
async fn pod_monitors_exist(context: &Context) -> bool {
    let cached = *context.pod_monitors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((asked, exists)) = cached
        && asked.elapsed() < DISCOVERY_TTL
    {
        return exists;
    }
    let exists = match kube::discovery::group(&context.client, "monitoring.coreos.com").await {
        Ok(group) => group.recommended_kind("PodMonitor").is_some(),
        Err(_) => false,
    };
    *context.pod_monitors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), exists));
    exists
}
