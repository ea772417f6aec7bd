//! The build stage: every object the resource should have, made by the `desired`
//! builders and gathered in one value for `apply`. Pure: what the operator would apply
//! for a resource is known without a cluster.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::DynamicObject;

use crate::crd::BackgroundRemovalService;
use crate::desired::{self, Front, ScrapeIntervals, Valid, ValidGateway};

/// The objects of one resource, as they should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The inference pods'.
    pub deployment: Deployment,
    /// The headless `<name>-pods` the gateway follows.
    pub pods_service: Service,
    pub pod_disruption_budget: PodDisruptionBudget,
    /// The gateway's objects, when it is on; when it is off, `apply` removes them.
    pub gateway: Option<GatewayObjects>,
    /// `<name>`, which clients call: the gateway once one of its pods is ready, or the
    /// pods.
    pub service: Service,
    /// Applied only where the Prometheus Operator's CRD is served.
    pub pod_monitor: DynamicObject,
}

/// The gateway's Deployment and budget, and the account and rights its pods run with.
#[derive(Debug, Clone)]
pub struct GatewayObjects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
    pub disruption_budget: PodDisruptionBudget,
}

/// The objects `brs` needs with `replicas` inference pods, `valid` being what
/// validation resolved of its spec, its clients sent to `front`, its pods and gateway
/// scraped as `scrape_intervals` say.
pub fn build(
    brs: &BackgroundRemovalService,
    valid: &Valid,
    replicas: i32,
    front: Front,
    scrape_intervals: &ScrapeIntervals,
) -> Desired {
    Desired {
        deployment: desired::deployment(brs, valid, replicas),
        pods_service: desired::pods_service(brs),
        pod_disruption_budget: desired::pod_disruption_budget(brs),
        gateway: valid.gateway.as_ref().map(|gateway| gateway_objects(brs, gateway)),
        service: desired::service(brs, front),
        pod_monitor: desired::pod_monitor(brs, scrape_intervals, &valid.pod_monitor_labels),
    }
}

fn gateway_objects(brs: &BackgroundRemovalService, gateway: &ValidGateway) -> GatewayObjects {
    GatewayObjects {
        service_account: desired::gateway_service_account(brs),
        role: desired::gateway_role(brs),
        role_binding: desired::gateway_role_binding(brs),
        deployment: desired::gateway_deployment(brs, gateway),
        disruption_budget: desired::gateway_disruption_budget(brs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{defaults, resource};
    use crate::desired::validate;

    const SCRAPE_INTERVALS: ScrapeIntervals =
        ScrapeIntervals { pods: std::time::Duration::from_secs(5), gateway: std::time::Duration::from_secs(1) };

    fn built(brs: &BackgroundRemovalService, replicas: i32) -> Desired {
        let front = Front::of(brs, 1);
        build(brs, &validate(brs, &defaults()).expect("a valid fixture"), replicas, front, &SCRAPE_INTERVALS)
    }

    fn name<K: kube::Resource>(object: &K) -> &str {
        object.meta().name.as_deref().unwrap_or_default()
    }

    #[test]
    fn the_gateway_objects_are_built_when_the_gateway_is_on() {
        let desired = built(&resource("minimal.yaml"), 3);
        let gateway = desired.gateway.as_ref().expect("on by default");
        for object_name in [
            name(&gateway.service_account),
            name(&gateway.role),
            name(&gateway.role_binding),
            name(&gateway.deployment),
            name(&gateway.disruption_budget),
        ] {
            assert_eq!(object_name, "portraits-gateway");
        }
        let selector = desired.service.spec.as_ref().and_then(|s| s.selector.as_ref()).expect("a selector");
        assert_eq!(selector.get("app.kubernetes.io/name").map(String::as_str), Some("matte-gateway"));
    }

    #[test]
    fn without_the_gateway_none_is_built_and_clients_reach_the_pods() {
        let mut brs = resource("minimal.yaml");
        brs.spec.gateway.enabled = false;
        let desired = built(&brs, 3);
        assert!(desired.gateway.is_none());
        let selector = desired.service.spec.as_ref().and_then(|s| s.selector.as_ref()).expect("a selector");
        assert_eq!(selector.get("app.kubernetes.io/name").map(String::as_str), Some("matte-inference"));
    }

    #[test]
    fn the_pods_objects_carry_the_decided_replicas_and_the_resources_names() {
        let desired = built(&resource("minimal.yaml"), 3);
        assert_eq!(desired.deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(built(&resource("minimal.yaml"), 0).deployment.spec.as_ref().and_then(|s| s.replicas), Some(0));
        assert_eq!(
            [name(&desired.deployment), name(&desired.pods_service), name(&desired.pod_disruption_budget)],
            ["portraits", "portraits-pods", "portraits"]
        );
        assert_eq!((name(&desired.service), name(&desired.pod_monitor)), ("portraits", "portraits"));
    }
}
