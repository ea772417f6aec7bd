//! The observe stage: the resource's Deployment and pods as the apiserver has them, and
//! its queue as Prometheus has it when autoscaling is on. These are the pass's only
//! reads, so a failed read of the apiserver fails the pass here, before anything is
//! applied; a failed Prometheus query does not (the autoscaler keeps its last decision,
//! `MetricsMissing`).
//!
//! Both reads are answered from the apiserver's watch cache (`resourceVersion=0`), not
//! read through to etcd: behind a gateway a pass comes every second, and a quorum read
//! per pass per resource would put the autoscaler's cadence on etcd. The cache is at
//! most as old as the watch events that wake the operator, the state every
//! informer-driven controller acts on; a pass that finds the replicas it just wrote not
//! yet there writes them again, which changes nothing.

use crate::error::apiserver_said;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, GetParams, ListParams};
use kube::runtime::reflector::ObjectRef;

use crate::autoscaler::mounts::{MountFailure, mount_failure, stuck_creating};
use crate::autoscaler::pods::{PodCensus, census, census_explaining};
use crate::autoscaler::policy::QueueMetrics;
use crate::autoscaler::prometheus::PrometheusSource;
use crate::crd::BackgroundRemovalService;
use crate::desired::{
    APP_LABEL, GATEWAY_APP, INFERENCE_APP, SERVICE_LABEL, STARTUP_MARGIN_SECONDS, controlled_by,
    startup_deadline_seconds,
};

use super::Context;
use super::context::Settings;

/// The resource's world as the pass found it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The inference pods' Deployment, unless there is none yet.
    pub deployment: Option<Deployment>,
    /// The inference pods, counted as of the pass's start.
    pub census: PodCensus,
    /// The gateway's pods, counted as the inference pods are: with none of them ready,
    /// clients reach nothing, whatever the inference pods do.
    pub gateway: PodCensus,
    /// The queue, when autoscaling is on and Prometheus answered with series for it.
    pub queue: Option<QueueMetrics>,
    /// When the last read answered: the autoscaler's clock. The wall clock, since the
    /// memory in status is read by whichever replica leads next.
    pub read_at: Timestamp,
}

impl Current {
    /// The replicas the Deployment asks for now, if it exists.
    pub fn replicas(&self) -> Option<i32> {
        self.deployment.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas)
    }
}

/// A read of the apiserver that failed, naming the resource it was for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the Deployment of BackgroundRemovalService {namespace}/{name}: {}", apiserver_said(source))]
    ReadDeployment { namespace: String, name: String, source: Box<kube::Error> },

    #[error("cannot list the pods of BackgroundRemovalService {namespace}/{name}: {}", apiserver_said(source))]
    ListPods { namespace: String, name: String, source: Box<kube::Error> },
}

impl Error {
    /// Whether the apiserver refused the read itself ([`crate::error::is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::ReadDeployment { source, .. } | Error::ListPods { source, .. } => crate::error::is_refusal(source),
        }
    }
}

/// Reads what the pass needs to know about `brs`; `now` is the pass's start.
pub async fn observe(context: &Context, brs: &BackgroundRemovalService, now: Timestamp) -> Result<Current, Error> {
    let namespace = brs.namespace().unwrap_or_default();
    let name = brs.name_any();
    let deployments = Api::<Deployment>::namespaced(context.client.clone(), &namespace);
    // Only its own: a Deployment of its name that someone else controls is refused by
    // `apply` (`Taken`), and its pods and replicas are not the resource's to report.
    let deployment = match deployments.get_with(&name, &GetParams::any()).await {
        Ok(deployment) => Some(deployment).filter(|deployment| controlled_by(deployment.owner_references(), brs)),
        Err(kube::Error::Api(status)) if status.is_not_found() => None,
        Err(source) => {
            return Err(Error::ReadDeployment { namespace, name, source: source.into() });
        }
    };
    // The inference and the gateway pods in one read, told apart by their program.
    let pods = Api::<Pod>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")).match_any())
        .await
        .map_err(|source| Error::ListPods { namespace, name, source: source.into() })?;
    let program = |pod: &Pod| pod.metadata.labels.as_ref().and_then(|labels| labels.get(APP_LABEL)).cloned();
    let (inference, others): (Vec<Pod>, Vec<Pod>) =
        pods.items.into_iter().partition(|pod| program(pod).as_deref() == Some(INFERENCE_APP));
    let gateway: Vec<Pod> = others.into_iter().filter(|pod| program(pod).as_deref() == Some(GATEWAY_APP)).collect();
    let queue = if brs.spec.autoscaling.enabled { queue(&context.settings, brs).await } else { None };
    let mount = match stuck_creating(&inference, now) {
        Some(pod) => unmounted(context, brs, pod).await,
        None => None,
    };
    let deadline = f64::from(startup_deadline_seconds(&brs.spec));
    Ok(Current {
        deployment,
        census: census_explaining(&inference, now, deadline, mount.as_ref()),
        // A gateway fetches no model.
        gateway: census(&gateway, now, f64::from(STARTUP_MARGIN_SECONDS)),
        queue,
        read_at: Timestamp::now(),
    })
}

/// Why the kubelet cannot mount a volume of `pod`, a pod whose containers have long
/// waited to be created, from its Warning Events (from the apiserver's cache); `None`
/// when they say nothing of it, or cannot be read (logged: an operator installed
/// without the right to list Events still reports the pod once it is too slow). Read
/// once in `EVENTS_READ_EVERY` for the same pod, not at every pass.
async fn unmounted(context: &Context, brs: &BackgroundRemovalService, pod: &Pod) -> Option<MountFailure> {
    let (namespace, name, uid) = (pod.namespace().unwrap_or_default(), pod.name_any(), pod.uid()?);
    if let Some(said) = context.mount_read_lately(brs, &uid) {
        return said;
    }
    let fields = format!("involvedObject.uid={uid},type=Warning");
    let listed = Api::<Event>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().fields(&fields).match_any().limit(EVENTS_READ))
        .await;
    let said = match listed {
        Ok(events) => mount_failure(&events.items).map(|message| MountFailure { pod: name, message }),
        Err(error) => {
            tracing::debug!(pod = %name, %namespace, error = %apiserver_said(&error), "cannot list the pod's Events");
            None
        }
    };
    context.mount_read(brs, &uid, said.clone());
    said
}

/// The most of a pod's Warning Events read at once: the kubelet folds repeats of one
/// into a series, so a pod has a few.
const EVENTS_READ: u32 = 50;

/// The fleet's queue; `None`, logged, when Prometheus cannot be asked or fails to answer.
async fn queue(settings: &Settings, brs: &BackgroundRemovalService) -> Option<QueueMetrics> {
    match metrics_source(settings, brs)?.queue_metrics().await {
        Ok(queue) => queue,
        Err(error) => {
            tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "cannot read the queue metrics");
            None
        }
    }
}

/// The resource's Prometheus and the selector of its pods' series, if any is known.
fn metrics_source(settings: &Settings, brs: &BackgroundRemovalService) -> Option<PrometheusSource> {
    let configured = brs.spec.autoscaling.metrics.as_ref();
    let url = configured.map(|m| m.prometheus_url.clone()).or_else(|| settings.prometheus_url.clone())?;
    let selector = series_selector(brs, settings.defaults.metrics_namespace_label.as_deref());
    Some(PrometheusSource::new(settings.prometheus_client.clone(), &url, &selector, &settings.windows(brs)))
}

/// The matchers picking `brs`'s series: the labels the operator's PodMonitor gives, or
/// the resource's own selector confined to its namespace by `namespace_label`.
fn series_selector(brs: &BackgroundRemovalService, namespace_label: Option<&str>) -> String {
    let namespace = brs.namespace().unwrap_or_default();
    let configured = brs.spec.autoscaling.metrics.as_ref().and_then(|m| m.selector.as_deref());
    match (configured, namespace_label) {
        (None, _) => format!(r#"namespace="{namespace}",job="{}""#, brs.name_any()),
        (Some(selector), Some(label)) => format!(r#"{label}="{namespace}",{selector}"#),
        (Some(selector), None) => selector.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{Request, Response, StatusCode};
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;

    use super::*;
    use crate::desired::fixtures::resource;
    use crate::reconcile::context::test_settings;
    use crate::telemetry::Metrics;

    fn context(client: Client) -> Context {
        Context::new(client, test_settings(), Arc::new(Metrics::new()), None)
    }

    /// Answers the pass's two reads in turn, with `deployment` (404 when `None`) and
    /// one ready pod, and returns the URIs they were sent to.
    async fn observed_uris(deployment: Option<serde_json::Value>) -> (Result<Current, Error>, Vec<String>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let apiserver = tokio::spawn(async move {
            let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "portraits-0", "namespace": "shop",
                    "labels": {APP_LABEL: INFERENCE_APP, SERVICE_LABEL: "portraits"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }, {
                "metadata": {"name": "portraits-gateway-0", "namespace": "shop",
                    "labels": {APP_LABEL: GATEWAY_APP, SERVICE_LABEL: "portraits"}},
                "status": {"containerStatuses": [{"name": "gateway", "image": "g", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
            }]});
            let answers = [
                deployment.map_or((StatusCode::NOT_FOUND, not_found()), |d| (StatusCode::OK, d)),
                (StatusCode::OK, pods),
            ];
            answer_in_turn(&mut handle, answers).await
        });
        let read =
            observe(&context(Client::new(service, "default")), &resource("minimal.yaml"), Timestamp::now()).await;
        (read, apiserver.await.expect("the apiserver task ends"))
    }

    type Apiserver = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Answers the requests that come, one answer each in turn, and returns their URIs.
    async fn answer_in_turn(
        handle: &mut Apiserver,
        answers: impl IntoIterator<Item = (StatusCode, serde_json::Value)>,
    ) -> Vec<String> {
        let mut uris = Vec::new();
        for (status, body) in answers {
            let Some((request, respond)) = handle.next_request().await else { break };
            uris.push(request.uri().to_string());
            let response = Response::builder().status(status).body(Body::from(body.to_string().into_bytes()));
            respond.send_response(response.expect("a valid response"));
        }
        uris
    }

    fn not_found() -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
    }

    /// Deployment `portraits` with 3 replicas, controlled by the resource of `uid`.
    fn deployment_controlled_by(uid: &str) -> serde_json::Value {
        let owner = json!({"apiVersion": "matte.dev/v1alpha1", "kind": "BackgroundRemovalService",
            "name": "portraits", "uid": uid, "controller": true});
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "portraits", "namespace": "shop", "ownerReferences": [owner]},
            "spec": {"replicas": 3, "selector": {}, "template": {}}})
    }

    #[tokio::test]
    async fn the_deployment_and_the_pods_are_read_from_the_apiservers_watch_cache() {
        let uid = resource("minimal.yaml").metadata.uid.expect("the fixture's uid");
        let (read, uris) = observed_uris(Some(deployment_controlled_by(&uid))).await;
        let current = read.expect("both reads answered");
        assert_eq!(current.replicas(), Some(3));
        assert_eq!(current.census.ready, 1);
        assert_eq!(current.census.starting_ages_seconds.len(), 0, "the gateway's pods are not the fleet");
        assert_eq!((current.gateway.failing.pods, current.gateway.failing.reason.as_str()), (1, "ImagePullFailed"));
        assert_eq!(current.gateway.ready, 0);
        assert_eq!(uris.len(), 2, "{uris:?}");
        let (deployment, pods) = (&uris[0], &uris[1]);
        assert!(deployment.starts_with("/apis/apps/v1/namespaces/shop/deployments/portraits?"), "{deployment}");
        assert!(deployment.contains("resourceVersion=0"), "{deployment}");
        assert!(pods.starts_with("/api/v1/namespaces/shop/pods?"), "{pods}");
        for part in ["labelSelector=", "resourceVersion=0", "resourceVersionMatch=NotOlderThan"] {
            assert!(pods.contains(part), "{part} in {pods}");
        }
    }

    #[tokio::test]
    async fn a_deployment_of_its_name_someone_else_controls_is_not_the_resources() {
        let (read, _) = observed_uris(Some(deployment_controlled_by("someone-else"))).await;
        let current = read.expect("both reads answered");
        assert!(current.deployment.is_none(), "{:?}", current.deployment);
        assert_eq!(current.replicas(), None);
    }

    #[tokio::test]
    async fn a_deployment_not_there_yet_is_none_and_the_pods_are_still_read() {
        let (read, uris) = observed_uris(None).await;
        let current = read.expect("a missing Deployment is no error");
        assert!(current.deployment.is_none());
        assert_eq!((current.census.ready, uris.len()), (1, 2));
    }

    /// A pod list of one inference pod, `uid`, scheduled two minutes ago and waiting
    /// since for its container to be created.
    fn stuck_pod(name: &str, uid: &str, now: Timestamp) -> serde_json::Value {
        let scheduled = (now - jiff::SignedDuration::from_secs(120)).to_string();
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
            "metadata": {"name": name, "namespace": "shop", "uid": uid,
                "labels": {APP_LABEL: INFERENCE_APP, SERVICE_LABEL: "portraits"}},
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}],
                "containerStatuses": [{"name": "inference", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        }]})
    }

    fn failed_mount(pod: &str) -> serde_json::Value {
        json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": [{
            "metadata": {"name": format!("{pod}.1"), "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": pod}, "type": "Warning", "reason": "FailedMount",
            "message": "MountVolume.SetUp failed for volume \"model-ca\" : configmap \"corp-ca\" not found"
        }]})
    }

    #[tokio::test]
    async fn a_stuck_pods_events_are_read_once_in_a_while_not_at_every_pass() {
        let now = Timestamp::now();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let apiserver = tokio::spawn(async move {
            let pass = |pods| [(StatusCode::NOT_FOUND, not_found()), (StatusCode::OK, pods)];
            let mut uris = Vec::new();
            // The first pass reads the pod's Events, the second reuses what they said,
            // the third finds another pod stuck and reads its own.
            let first = pass(stuck_pod("portraits-a", "uid-a", now)).into_iter();
            uris.extend(
                answer_in_turn(&mut handle, first.chain([(StatusCode::OK, failed_mount("portraits-a"))])).await,
            );
            uris.extend(answer_in_turn(&mut handle, pass(stuck_pod("portraits-a", "uid-a", now))).await);
            let third = pass(stuck_pod("portraits-b", "uid-b", now)).into_iter();
            uris.extend(
                answer_in_turn(&mut handle, third.chain([(StatusCode::OK, failed_mount("portraits-b"))])).await,
            );
            uris
        });
        let context = context(Client::new(service, "default"));
        let brs = resource("minimal.yaml");
        let mut reasons = Vec::new();
        for _ in 0..3 {
            let current = observe(&context, &brs, now).await.expect("every read answered");
            let failing = current.census.failing;
            reasons.push((failing.pods, failing.reason, failing.message.contains("configmap \"corp-ca\" not found")));
        }
        let uris = apiserver.await.expect("the apiserver task ends");
        let explained = (1, "VolumeMountFailed".to_owned(), true);
        assert_eq!(reasons, vec![explained.clone(), explained.clone(), explained], "{reasons:?}");
        let events: Vec<&String> =
            uris.iter().filter(|uri| uri.starts_with("/api/v1/namespaces/shop/events?")).collect();
        assert_eq!(events.len(), 2, "one read for each pod: {uris:?}");
        assert!(events[0].contains("uid-a") && events[1].contains("uid-b"), "{events:?}");
        assert_eq!(uris.len(), 8, "{uris:?}");
    }

    #[test]
    fn a_resource_s_series_are_its_namespace_s() {
        let mut brs = resource("full.yaml");
        let metrics = brs.spec.autoscaling.metrics.as_mut().expect("metrics");
        metrics.selector = None;
        assert_eq!(series_selector(&brs, Some("namespace")), r#"namespace="shop",job="catalogue""#);
        brs.spec.autoscaling.metrics.as_mut().expect("metrics").selector = Some(r#"app="cutouts""#.into());
        assert_eq!(series_selector(&brs, Some("kubernetes_namespace")), r#"kubernetes_namespace="shop",app="cutouts""#);
        assert_eq!(series_selector(&brs, None), r#"app="cutouts""#, "taken as it is");
    }
}
