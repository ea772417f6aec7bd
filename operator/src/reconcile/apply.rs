//! The apply stage: what `build` made, applied with server-side apply in an order that
//! keeps the service reachable, and the gateway's objects removed when it is turned off.
//! The pass's only writes besides the status; a failure here is still reported in the
//! status (`Degraded`, `ApplyFailed`) before the pass ends.

use crate::error::apiserver_said;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::BackgroundRemovalService;
use crate::desired::{self, MANAGER, controlled_by};

use super::Context;
use super::build::Desired;

/// How long the answer to "does the PodMonitor CRD exist" is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// A write the apiserver did not take, naming the object (`kind namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot apply {kind} {namespace}/{name}: {}", apiserver_said(source))]
    Apply { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },

    /// Reading an object, to learn whether it is the resource's: to apply over, or to
    /// delete when the gateway is turned off.
    #[error("cannot read {kind} {namespace}/{name}: {}", apiserver_said(source))]
    Read { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },

    #[error("cannot delete {kind} {namespace}/{name}: {}", apiserver_said(source))]
    Delete { kind: &'static str, namespace: String, name: String, source: Box<kube::Error> },

    /// An object the resource would make exists and is someone else's: applied, it would
    /// be taken over (a Service's selector moved to these pods) and, once owned,
    /// deleted with the resource.
    #[error(
        "{kind} {namespace}/{name} exists and is not this resource's ({holder}): rename the resource, or delete or rename the {kind}"
    )]
    Taken { kind: &'static str, namespace: String, name: String, holder: String },
}

impl Error {
    /// Whether the apiserver refused the request itself ([`crate::error::is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Apply { source, .. } | Error::Read { source, .. } | Error::Delete { source, .. } => {
                crate::error::is_refusal(source)
            }
            // Nothing changes until someone renames or deletes one of the two.
            Error::Taken { .. } => true,
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

    // Nothing is applied while any of the objects is someone else's: the resource is
    // refused whole, not half made.
    check_ours(context, brs, &deployments, "Deployment", &desired.deployment).await?;
    check_ours(context, brs, &services, "Service", &desired.pods_service).await?;
    check_ours(context, brs, &budgets, "PodDisruptionBudget", &desired.pod_disruption_budget).await?;
    check_ours(context, brs, &services, "Service", &desired.service).await?;
    if let Some(gateway) = &desired.gateway {
        check_ours(context, brs, &accounts, "ServiceAccount", &gateway.service_account).await?;
        check_ours(context, brs, &roles, "Role", &gateway.role).await?;
        check_ours(context, brs, &bindings, "RoleBinding", &gateway.role_binding).await?;
        check_ours(context, brs, &deployments, "Deployment", &gateway.deployment).await?;
        check_ours(context, brs, &budgets, "PodDisruptionBudget", &gateway.disruption_budget).await?;
    }
    let pod_monitors = pod_monitors_exist(context)
        .await
        .then(|| Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &desired::pod_monitor_resource()));
    if let Some(api) = &pod_monitors {
        check_ours(context, brs, api, "PodMonitor", &desired.pod_monitor).await?;
    }

    let deployment = apply_object(context, brs, &deployments, "Deployment", &desired.deployment).await?;
    apply_object(context, brs, &services, "Service", &desired.pods_service).await?;
    apply_object(context, brs, &budgets, "PodDisruptionBudget", &desired.pod_disruption_budget).await?;
    let mut gateway_deployment = None;
    match &desired.gateway {
        // The gateway's account and rights first, so that its pods can watch at once;
        // the Service last, so that clients move to a gateway that exists.
        Some(gateway) => {
            apply_object(context, brs, &accounts, "ServiceAccount", &gateway.service_account).await?;
            apply_object(context, brs, &roles, "Role", &gateway.role).await?;
            apply_object(context, brs, &bindings, "RoleBinding", &gateway.role_binding).await?;
            gateway_deployment =
                Some(apply_object(context, brs, &deployments, "Deployment", &gateway.deployment).await?);
            apply_object(context, brs, &budgets, "PodDisruptionBudget", &gateway.disruption_budget).await?;
            apply_object(context, brs, &services, "Service", &desired.service).await?;
        }
        // The Service first: clients move to the pods before the gateway goes.
        None => {
            apply_object(context, brs, &services, "Service", &desired.service).await?;
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
    if let Some(api) = &pod_monitors {
        apply_object(context, brs, api, "PodMonitor", &desired.pod_monitor).await?;
    }
    Ok(Applied { deployment, gateway: gateway_deployment })
}

/// Server-side apply of `object` under the operator's field manager, taking over
/// fields someone else changed (that is what repairing drift means), once it is known
/// to be `brs`'s or not to exist ([`check_ours`]); returns it as the apiserver has it
/// afterwards.
///
/// Once applied, an object is known to be `brs`'s by its uid, and every apply after
/// carries that uid, which the apiserver refuses to apply over another object (`uid
/// mismatch`, or `metadata.uid` immutable): one deleted and made again by someone else
/// between two passes (a RoleBinding of the gateway's name binding other subjects) is
/// then looked up again, and refused as [`Error::Taken`] rather than taken over. One
/// that is simply gone is made anew.
async fn apply_object<K>(
    context: &Context,
    brs: &BackgroundRemovalService,
    api: &Api<K>,
    kind: &'static str,
    object: &K,
) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let applied = match context.known_ours(brs, kind, &name) {
        Some(uid) => {
            let mut of_uid = object.clone();
            of_uid.meta_mut().uid = Some(uid);
            match server_side_apply(api, kind, &of_uid).await {
                Err(Error::Apply { source, .. }) if names_another_object(&source) => {
                    context.lost_ours(brs, kind, &name);
                    check_ours(context, brs, api, kind, object).await?;
                    server_side_apply(api, kind, object).await
                }
                applied => applied,
            }
        }
        None => server_side_apply(api, kind, object).await,
    }?;
    if let Some(uid) = applied.meta().uid.clone() {
        context.found_ours(brs, kind, &name, uid);
    }
    Ok(applied)
}

async fn server_side_apply<K>(api: &Api<K>, kind: &'static str, object: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await.map_err(|source| Error::Apply {
        kind,
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name,
        source: source.into(),
    })
}

/// Whether the apiserver refused an apply carrying a uid because the object of that
/// name has another uid or is gone: `409 Conflict` ("uid mismatch ... no existing
/// object was found"; a forced apply has no conflict of fields) or `422 Invalid` for
/// `metadata.uid` ("field is immutable").
fn names_another_object(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else { return false };
    let of_the_uid = || status.details.iter().flat_map(|details| &details.causes).any(|c| c.field == "metadata.uid");
    status.is_conflict() || (status.is_invalid() && of_the_uid())
}

/// Fails with [`Error::Taken`] if `object` exists and `brs` does not control it; asks
/// the apiserver only until `brs` has applied it (once per resource and process).
async fn check_ours<K>(
    context: &Context,
    brs: &BackgroundRemovalService,
    api: &Api<K>,
    kind: &'static str,
    object: &K,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.as_deref().unwrap_or_default();
    if context.known_ours(brs, kind, name).is_some() {
        return Ok(());
    }
    let Some(owners) = owners_of(api, kind, brs, name).await? else {
        return Ok(());
    };
    if controlled_by(&owners, brs) {
        return Ok(());
    }
    let holder = owners.iter().find(|owner| owner.controller == Some(true)).map_or_else(
        || "controlled by nothing".to_owned(),
        |owner| format!("controlled by {} {}", owner.kind, owner.name),
    );
    Err(Error::Taken { kind, namespace: brs.namespace().unwrap_or_default(), name: name.to_owned(), holder })
}

/// The owner references of the `kind` named `name` in `brs`'s namespace, or `None`
/// where there is no such object.
async fn owners_of<K>(
    api: &Api<K>,
    kind: &'static str,
    brs: &BackgroundRemovalService,
    name: &str,
) -> Result<Option<Vec<OwnerReference>>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let existing = api.get_metadata_opt(name).await.map_err(|source| Error::Read {
        kind,
        namespace: brs.namespace().unwrap_or_default(),
        name: name.to_owned(),
        source: source.into(),
    })?;
    Ok(existing.map(|existing| existing.owner_references().to_vec()))
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
    if !owners_of(api, kind, brs, name).await?.is_some_and(|owners| controlled_by(&owners, brs)) {
        return Ok(());
    }
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind,
            namespace: brs.namespace().unwrap_or_default(),
            name: name.to_owned(),
            source: source.into(),
        }),
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

#[cfg(test)]
mod tests {
    use http::{Request, Response, StatusCode};
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;

    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::desired::fixtures::resource;
    use crate::reconcile::context::test_settings;
    use crate::telemetry::Metrics;

    /// Whether `check_ours` lets the resource apply over a Service the apiserver shows
    /// with `owners` (`None`: there is none), and the error's words when it does not.
    async fn check_over(owners: Option<serde_json::Value>) -> Result<(), String> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let apiserver = tokio::spawn(async move {
            let Some((request, respond)) = handle.next_request().await else { return };
            assert_eq!(request.uri().path(), "/api/v1/namespaces/shop/services/portraits");
            let (status, body) = match owners {
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                Some(owners) => (
                    StatusCode::OK,
                    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"name": "portraits", "namespace": "shop", "ownerReferences": owners}}),
                ),
            };
            let response = Response::builder().status(status).body(Body::from(body.to_string().into_bytes()));
            respond.send_response(response.expect("a valid response"));
        });
        let brs = resource("minimal.yaml");
        let client = Client::new(service, "default");
        let context = Context::new(client.clone(), test_settings(), Arc::new(Metrics::new()), None);
        let api = Api::<Service>::namespaced(client, "shop");
        let portraits = Service {
            metadata: ObjectMeta { name: Some("portraits".into()), ..ObjectMeta::default() },
            ..Service::default()
        };
        let checked = check_ours(&context, &brs, &api, "Service", &portraits).await;
        // The mock apiserver's wait for a request ends once no client is left to send one.
        drop((context, api));
        apiserver.await.expect("the apiserver answered");
        checked.map_err(|error| {
            assert!(error.is_refusal(), "retrying cannot help: {error}");
            error.to_string()
        })
    }

    fn owner(kind: &str, name: &str, uid: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": true})
    }

    #[tokio::test]
    async fn an_object_of_the_resource_s_name_is_applied_over_only_if_it_is_the_resource_s() {
        let brs = resource("minimal.yaml");
        let uid = brs.metadata.uid.clone().expect("a uid");
        assert_eq!(check_over(None).await, Ok(()), "none yet: made");
        assert_eq!(check_over(Some(json!([owner("BackgroundRemovalService", "portraits", &uid)]))).await, Ok(()));
        let someone_else_s = check_over(Some(json!([]))).await.expect_err("someone's own Service");
        assert_eq!(
            someone_else_s,
            "Service shop/portraits exists and is not this resource's (controlled by nothing): rename the resource, or delete or rename the Service"
        );
        let another_s = check_over(Some(json!([owner("HelmRelease", "web", "0000")]))).await.expect_err("another's");
        assert!(another_s.contains("(controlled by HelmRelease web)"), "{another_s}");
    }
    /// Applies RoleBinding `portraits-gateway`, known to be the resource's as uid
    /// `known`, to a mock apiserver giving `answers` in turn; returns the outcome, the
    /// requests (method, path, and the uid the body carried) and the uid known after.
    async fn apply_known(
        known: &str,
        answers: Vec<(StatusCode, serde_json::Value)>,
    ) -> (Result<RoleBinding, Error>, Vec<(String, String, Option<String>)>, Option<String>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let apiserver = tokio::spawn(async move {
            let mut requests = Vec::new();
            for (status, body) in answers {
                let Some((request, respond)) = handle.next_request().await else { break };
                let (parts, sent) = request.into_parts();
                let sent = sent.collect_bytes().await.expect("the body");
                let uid = serde_json::from_slice::<serde_json::Value>(&sent)
                    .ok()
                    .and_then(|sent| sent["metadata"]["uid"].as_str().map(str::to_owned));
                requests.push((parts.method.to_string(), parts.uri.path().to_owned(), uid));
                let response = Response::builder().status(status).body(Body::from(body.to_string().into_bytes()));
                respond.send_response(response.expect("a valid response"));
            }
            requests
        });
        let brs = resource("minimal.yaml");
        let client = Client::new(service, "default");
        let context = Context::new(client.clone(), test_settings(), Arc::new(Metrics::new()), None);
        context.found_ours(&brs, "RoleBinding", "portraits-gateway", known.to_owned());
        let api = Api::<RoleBinding>::namespaced(client, "shop");
        let binding = RoleBinding {
            metadata: ObjectMeta { name: Some("portraits-gateway".into()), ..ObjectMeta::default() },
            ..RoleBinding::default()
        };
        let applied = apply_object(&context, &brs, &api, "RoleBinding", &binding).await;
        let known_after = context.known_ours(&brs, "RoleBinding", "portraits-gateway");
        drop((context, api));
        (applied, apiserver.await.expect("the apiserver answered"), known_after)
    }

    fn binding(uid: &str, owners: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "portraits-gateway", "namespace": "shop", "uid": uid, "ownerReferences": owners},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "portraits-gateway"}})
    }

    const BINDING_PATH: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/portraits-gateway";

    #[tokio::test]
    async fn an_object_made_again_by_someone_else_between_two_applies_is_refused_not_taken_over() {
        let immutable = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
            "code": 422, "message": "RoleBinding \"portraits-gateway\" is invalid: metadata.uid: field is immutable",
            "details": {"causes": [{"reason": "FieldValueInvalid", "field": "metadata.uid"}]}});
        let theirs = binding("their-uid", json!([]));
        let (applied, requests, known) =
            apply_known("our-uid", vec![(StatusCode::UNPROCESSABLE_ENTITY, immutable), (StatusCode::OK, theirs)]).await;
        let error = applied.expect_err("theirs is not applied over");
        assert!(matches!(error, Error::Taken { kind: "RoleBinding", .. }), "{error}");
        let patch = ("PATCH".to_owned(), BINDING_PATH.to_owned(), Some("our-uid".to_owned()));
        assert_eq!(requests, vec![patch, ("GET".to_owned(), BINDING_PATH.to_owned(), None)]);
        assert_eq!(known, None, "no longer known to be the resource's");
    }

    #[tokio::test]
    async fn an_object_of_the_resource_s_deleted_between_two_applies_is_made_anew() {
        let mismatch = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
            "code": 409, "message": "Operation cannot be fulfilled on rolebindings.rbac.authorization.k8s.io \"portraits-gateway\": uid mismatch: the provided object specified uid our-uid, and no existing object was found"});
        let not_found =
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
        let uid = resource("minimal.yaml").metadata.uid.expect("a uid");
        let made = binding("new-uid", json!([owner("BackgroundRemovalService", "portraits", &uid)]));
        let answers =
            vec![(StatusCode::CONFLICT, mismatch), (StatusCode::NOT_FOUND, not_found), (StatusCode::OK, made)];
        let (applied, requests, known) = apply_known("our-uid", answers).await;
        assert_eq!(applied.expect("made anew").metadata.uid.as_deref(), Some("new-uid"));
        let methods: Vec<(&str, Option<&str>)> =
            requests.iter().map(|(method, _, uid)| (method.as_str(), uid.as_deref())).collect();
        assert_eq!(methods, [("PATCH", Some("our-uid")), ("GET", None), ("PATCH", None)], "{requests:?}");
        assert_eq!(known.as_deref(), Some("new-uid"), "the new object is the one known");
    }
}
