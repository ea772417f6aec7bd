//! The observe stage: the resource's Deployment and pods as the apiserver has them, and
//! its queue as Prometheus has it when autoscaling is on. These are the pass's only
//! reads, so a failed read of the apiserver fails the pass here, before anything is
//! applied; a failed Prometheus query does not (the autoscaler keeps its last decision,
//! `MetricsMissing`).

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;

use crate::autoscaler::pods::{PodCensus, census};
use crate::autoscaler::policy::QueueMetrics;
use crate::autoscaler::prometheus::PrometheusSource;
use crate::crd::BackgroundRemovalService;
use crate::desired;

use super::Context;
use super::context::Settings;

/// The resource's world as the pass found it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The inference pods' Deployment, unless there is none yet.
    pub deployment: Option<Deployment>,
    /// The inference pods, counted as of the pass's start.
    pub census: PodCensus,
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
    #[error("cannot read the Deployment of BackgroundRemovalService {namespace}/{name}: {source}")]
    ReadDeployment { namespace: String, name: String, source: Box<kube::Error> },

    #[error("cannot list the pods of BackgroundRemovalService {namespace}/{name}: {source}")]
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
    let deployment = deployments.get_opt(&name).await.map_err(|source| Error::ReadDeployment {
        namespace: namespace.clone(),
        name: name.clone(),
        source: source.into(),
    })?;
    let pods = Api::<Pod>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().labels(&desired::selector_string(brs)))
        .await
        .map_err(|source| Error::ListPods { namespace, name, source: source.into() })?;
    let census = census(&pods.items, now);
    let queue = if brs.spec.autoscaling.enabled { queue(&context.settings, brs).await } else { None };
    Ok(Current { deployment, census, queue, read_at: Timestamp::now() })
}

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
    let selector = configured
        .and_then(|m| m.selector.clone())
        .unwrap_or_else(|| format!(r#"namespace="{}",job="{}""#, brs.namespace().unwrap_or_default(), brs.name_any()));
    Some(PrometheusSource::new(settings.prometheus_http.clone(), &url, &selector, &settings.windows(brs)))
}
