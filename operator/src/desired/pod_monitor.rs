//! A Prometheus Operator PodMonitor, made only where that operator's CRD exists, so that
//! the pods' queue metrics reach the Prometheus the autoscaler asks.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use matte_common::paths;
use serde_json::json;

use crate::crd::BackgroundRemovalService;

use kube::ResourceExt;

use super::{SERVICE_LABEL, metadata};

/// The PodMonitor's API type, for discovery and for applying it.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"))
}

/// Scrapes every pod of `brs`, the inference pods and the gateway's, at the operator's
/// scrape interval (`--scrape-interval-seconds`: its queries' windows and its passes
/// follow it, so a Prometheus scraping at any other would feed them samples they do not
/// expect), and sets the `job` label to the resource's name, which the default PromQL
/// selector uses: the autoscaler reads the gateway's queue with the pods' queues under
/// one selector.
pub fn pod_monitor(brs: &BackgroundRemovalService, scrape_interval: Duration) -> DynamicObject {
    let mut object = DynamicObject::new(&brs.metadata.name.clone().unwrap_or_default(), &pod_monitor_resource());
    object.metadata = metadata(brs);
    object.data = json!({
        "spec": {
            "selector": {"matchLabels": {SERVICE_LABEL: brs.name_any()}},
            "jobLabel": SERVICE_LABEL,
            "podMetricsEndpoints": [{
                "port": paths::PORT_NAME,
                "path": paths::METRICS,
                "interval": format!("{}s", scrape_interval.as_secs().max(1)),
            }],
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
        let monitor = pod_monitor(&resource("minimal.yaml"), Duration::from_secs(5));
        assert_eq!(monitor.types.as_ref().map(|t| t.api_version.as_str()), Some("monitoring.coreos.com/v1"));
        assert_golden("minimal.podmonitor.yaml", &monitor);
    }

    #[test]
    fn the_pods_are_scraped_as_often_as_the_autoscaler_reads_them() {
        let monitor = pod_monitor(&resource("minimal.yaml"), Duration::from_secs(2));
        assert_eq!(monitor.data["spec"]["podMetricsEndpoints"][0]["interval"], "2s");
    }
}
