//! The Services: `<name>`, which clients call (the gateway once it is ready, or the pods),
//! and the headless `<name>-pods`, whose EndpointSlices list the pods for the gateway;
//! and the PodDisruptionBudget that keeps voluntary evictions (node drains, upgrades)
//! from taking more than one GPU pod at a time.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use matte_common::paths;

use crate::crd::BackgroundRemovalService;

use super::deployment::HTTP_PORT;
use super::{
    gateway_selector_labels, label_selector, labels, metadata, metadata_named, one_at_a_time, pods_service_name,
    selector_labels,
};

/// The pods Service `<name>` sends clients to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Gateway,
    Pods,
}

impl Front {
    /// The gateway's pods once one of them is ready; the inference pods while the
    /// gateway is off, and while none of its pods is ready: just turned on, a gateway's
    /// pods are still being scheduled and started, and a Service with no ready endpoint
    /// would turn away every client the inference pods could serve meanwhile (as it
    /// would while every gateway pod is down).
    pub fn of(brs: &BackgroundRemovalService, gateway_ready_pods: u32) -> Front {
        if brs.spec.gateway.enabled && gateway_ready_pods > 0 { Front::Gateway } else { Front::Pods }
    }
}

/// A ClusterIP Service named after the resource, port 80 to the `http` port of the
/// pods `front` says.
pub fn service(brs: &BackgroundRemovalService, front: Front) -> Service {
    let selector = match front {
        Front::Gateway => gateway_selector_labels(brs),
        Front::Pods => selector_labels(brs),
    };
    Service {
        metadata: metadata(brs),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![http_port(80)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The headless `<name>-pods`: no virtual IP, no kube-proxy; its EndpointSlices list
/// every inference pod with its readiness, which is what the gateway routes by.
pub fn pods_service(brs: &BackgroundRemovalService) -> Service {
    Service {
        metadata: metadata_named(brs, pods_service_name(brs), labels(brs)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(brs)),
            ports: Some(vec![http_port(HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn http_port(port: i32) -> ServicePort {
    ServicePort {
        name: Some(paths::PORT_NAME.into()),
        port,
        target_port: Some(IntOrString::String(paths::PORT_NAME.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// At most one pod down at a time, and an unready pod can always be evicted: a pod that
/// never became ready (no GPU, a bad model) must not block a node drain.
pub fn pod_disruption_budget(brs: &BackgroundRemovalService) -> PodDisruptionBudget {
    one_at_a_time(metadata(brs), label_selector(brs))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, resource};
    use super::*;

    #[test]
    fn golden_service_and_budget() {
        let brs = resource("minimal.yaml");
        assert_golden("minimal.service.yaml", &service(&brs, Front::Gateway));
        assert_golden("minimal.pdb.yaml", &pod_disruption_budget(&brs));
    }

    #[test]
    fn clients_reach_the_gateway_once_ready_and_the_gateway_the_pods() {
        let mut brs = resource("minimal.yaml");
        assert_golden("minimal.pods-service.yaml", &pods_service(&brs));
        let selector = |brs: &BackgroundRemovalService, gateway_ready_pods| {
            service(brs, Front::of(brs, gateway_ready_pods)).spec.and_then(|s| s.selector).expect("a selector")
        };
        let front = selector(&brs, 1);
        assert_eq!(front.get("app.kubernetes.io/name").map(String::as_str), Some("matte-gateway"));
        assert_eq!(selector(&brs, 0), selector_labels(&brs), "no gateway pod ready yet: clients reach the pods");
        let pods = pods_service(&brs).spec.expect("a spec");
        assert_eq!(pods.cluster_ip.as_deref(), Some("None"), "headless: the gateway routes, not kube-proxy");
        assert_eq!(pods.selector, Some(selector_labels(&brs)));
        brs.spec.gateway.enabled = false;
        assert_eq!(selector(&brs, 2), selector_labels(&brs), "without the gateway clients reach the pods");
    }

    #[test]
    fn both_select_exactly_the_resources_pods_and_are_owned_by_it() {
        let mut brs = resource("minimal.yaml");
        brs.spec.gateway.enabled = false;
        let service = service(&brs, Front::Pods);
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
