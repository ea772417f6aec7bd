//! A Prometheus Operator PodMonitor, made only where that operator's CRD exists, so that
//! the pods' queue metrics reach the Prometheus the autoscaler asks.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use matte_common::paths;
use serde_json::{Value, json};

use super::{APP_LABEL, GATEWAY_APP, INFERENCE_APP, SERVICE_LABEL, metadata};
use crate::crd::BackgroundRemovalService;

/// How often Prometheus scrapes each kind of pod (`--scrape-interval-seconds` and
/// `--gateway-scrape-interval-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeIntervals {
    /// The inference pods'; the autoscaler's passes and query windows follow it.
    pub pods: Duration,
    /// The gateway's, at most the pods'.
    pub gateway: Duration,
}

/// The most samples one scrape of one pod may bring: a pod exports a few hundred (its
/// histograms' buckets, the gateway's outcomes), and past this Prometheus drops the
/// scrape. The pods run an image the resource's author chooses, and its series go into
/// the Prometheus every resource's autoscaler asks.
const SAMPLE_LIMIT: u64 = 10_000;

/// The most labels a series may carry: Matte's have at most three beside the target's.
const LABEL_LIMIT: u64 = 32;

/// The series kept from a scrape: Matte's own, and nothing else an image exports.
const KEPT_SERIES: &str = "matte_.*";

/// The PodMonitor's API type, for discovery and for applying it.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"))
}

/// Scrapes every pod of `brs`, keeping only Matte's series within limits on what one
/// scrape may bring (`SAMPLE_LIMIT`), and sets the `job` label to the resource's name,
/// which the default PromQL selector uses: the autoscaler reads the gateway's queue with the pods'
/// queues under one selector. The inference pods are scraped at the operator's interval
/// (its windows and passes follow it, so samples at any other would not be what they
/// expect), the gateway's pods at their own, shorter one: one endpoint each, told apart
/// by their `app.kubernetes.io/name`. Without a gateway its endpoint finds no pod.
/// It carries `extra_labels` beside the operator's own, which they do not replace.
pub fn pod_monitor(
    brs: &BackgroundRemovalService,
    intervals: &ScrapeIntervals,
    extra_labels: &BTreeMap<String, String>,
) -> DynamicObject {
    let mut object = DynamicObject::new(&brs.metadata.name.clone().unwrap_or_default(), &pod_monitor_resource());
    object.metadata = metadata(brs);
    let labels = object.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in extra_labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    object.data = json!({
        "spec": {
            "selector": {"matchLabels": {SERVICE_LABEL: brs.name_any()}},
            "jobLabel": SERVICE_LABEL,
            "sampleLimit": SAMPLE_LIMIT,
            "labelLimit": LABEL_LIMIT,
            "podMetricsEndpoints": [
                endpoint(INFERENCE_APP, intervals.pods),
                endpoint(GATEWAY_APP, intervals.gateway),
            ],
        }
    });
    object
}

/// The metrics endpoint of the pods whose [`APP_LABEL`] is `app`, scraped every `interval`.
fn endpoint(app: &str, interval: Duration) -> Value {
    json!({
        "port": paths::PORT_NAME,
        "path": paths::METRICS,
        "interval": format!("{}s", interval.as_secs().max(1)),
        "relabelings": [{
            "action": "keep",
            "sourceLabels": [pod_label_meta(APP_LABEL)],
            "regex": app,
        }],
        "metricRelabelings": [{
            "action": "keep",
            "sourceLabels": ["__name__"],
            "regex": KEPT_SERIES,
        }],
    })
}

/// The meta label under which Prometheus's Kubernetes discovery exposes a pod's label:
/// every character outside `[a-zA-Z0-9_]` becomes `_`.
fn pod_label_meta(label: &str) -> String {
    let name: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("__meta_kubernetes_pod_label_{name}")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, resource};
    use super::*;

    fn intervals(pods: u64, gateway: u64) -> ScrapeIntervals {
        ScrapeIntervals { pods: Duration::from_secs(pods), gateway: Duration::from_secs(gateway) }
    }

    #[test]
    fn golden_pod_monitor() {
        let monitor = pod_monitor(&resource("minimal.yaml"), &intervals(5, 1), &BTreeMap::new());
        assert_eq!(monitor.types.as_ref().map(|t| t.api_version.as_str()), Some("monitoring.coreos.com/v1"));
        assert_golden("minimal.podmonitor.yaml", &monitor);
    }

    #[test]
    fn the_operators_labels_for_its_pod_monitors_are_added_to_its_own_and_replace_none() {
        let brs = resource("minimal.yaml");
        let extra = BTreeMap::from([
            ("release".to_owned(), "kube-prometheus-stack".to_owned()),
            (SERVICE_LABEL.to_owned(), "someone-else".to_owned()),
        ]);
        let labels = pod_monitor(&brs, &intervals(5, 1), &extra).metadata.labels.expect("labels");
        assert_eq!(labels.get("release").map(String::as_str), Some("kube-prometheus-stack"));
        assert_eq!(labels.get(SERVICE_LABEL).map(String::as_str), Some("portraits"), "the operator's own stays");
    }

    #[test]
    fn the_pods_are_scraped_as_often_as_the_autoscaler_reads_them_and_the_gateway_at_its_own_interval() {
        let monitor = pod_monitor(&resource("minimal.yaml"), &intervals(4, 2), &BTreeMap::new());
        let endpoints = monitor.data["spec"]["podMetricsEndpoints"].as_array().expect("endpoints").clone();
        let interval_of = |app: &str| {
            let kept = endpoints.iter().filter(|endpoint| endpoint["relabelings"][0]["regex"] == app);
            kept.map(|endpoint| endpoint["interval"].clone()).collect::<Vec<_>>()
        };
        assert_eq!(interval_of(INFERENCE_APP), ["4s"]);
        assert_eq!(interval_of(GATEWAY_APP), ["2s"]);
        for endpoint in &endpoints {
            assert_eq!(endpoint["relabelings"][0]["action"], "keep", "each endpoint keeps one kind of pod: {endpoint}");
            assert_eq!(
                endpoint["relabelings"][0]["sourceLabels"][0], "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                "{endpoint}"
            );
        }
    }
}
