//! A Prometheus Operator PodMonitor, made only where that operator's CRD exists, so that
//! the pods' queue metrics reach the Prometheus the autoscaler asks.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::crd::BackgroundRemovalService;

use kube::ResourceExt;

use super::{SERVICE_LABEL, metadata};

/// The PodMonitor's API type, for discovery and for applying it.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"))
}

/// Scrapes every pod of `brs`, the inference pods and the gateway's, each 5 s (the
/// autoscaler reacts on the scrapes) and sets the `job` label to the resource's name,
/// which the default PromQL selector uses: the autoscaler reads the gateway's queue
/// with the pods' queues under one selector.
pub fn pod_monitor(brs: &BackgroundRemovalService) -> DynamicObject {
    let mut object = DynamicObject::new(&brs.metadata.name.clone().unwrap_or_default(), &pod_monitor_resource());
    object.metadata = metadata(brs);
    object.data = json!({
        "spec": {
            "selector": {"matchLabels": {SERVICE_LABEL: brs.name_any()}},
            "jobLabel": SERVICE_LABEL,
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "5s"}],
        }
    });
    object
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, resource};
    use super::*;

    #[test]
    fn golden_pod_monitor() {
        let monitor = pod_monitor(&resource("minimal.yaml"));
        assert_eq!(monitor.types.as_ref().map(|t| t.api_version.as_str()), Some("monitoring.coreos.com/v1"));
        assert_golden("minimal.podmonitor.yaml", &monitor);
    }
}
