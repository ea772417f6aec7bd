//! The Service in front of the pods and the PodDisruptionBudget that keeps voluntary
//! evictions (node drains, upgrades) from taking more than one GPU pod at a time.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::BackgroundRemovalService;

use super::{label_selector, metadata, selector_labels};

/// A ClusterIP Service named after the resource, port 80 to the pods' `http` port.
pub fn service(brs: &BackgroundRemovalService) -> Service {
    Service {
        metadata: metadata(brs),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(brs)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one pod down at a time, and an unready pod can always be evicted: a pod that
/// never became ready (no GPU, a bad model) must not block a node drain.
pub fn pod_disruption_budget(brs: &BackgroundRemovalService) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(brs),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(label_selector(brs)),
            max_unavailable: Some(IntOrString::Int(1)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, resource};
    use super::*;

    #[test]
    fn golden_service_and_budget() {
        let brs = resource("minimal.yaml");
        assert_golden("minimal.service.yaml", &service(&brs));
        assert_golden("minimal.pdb.yaml", &pod_disruption_budget(&brs));
    }

    #[test]
    fn both_select_exactly_the_resources_pods_and_are_owned_by_it() {
        let brs = resource("minimal.yaml");
        let service = service(&brs);
        let budget = pod_disruption_budget(&brs);
        let selected = service.spec.and_then(|s| s.selector).expect("a selector");
        assert_eq!(selected.get("matte.dev/service").map(String::as_str), Some("portraits"));
        let budget_selector = budget.spec.and_then(|s| s.selector).and_then(|s| s.match_labels);
        assert_eq!(budget_selector, Some(selected));
        for owners in [service.metadata.owner_references, budget.metadata.owner_references] {
            let owner = &owners.expect("owned")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("BackgroundRemovalService", "portraits", Some(true))
            );
        }
    }
}
