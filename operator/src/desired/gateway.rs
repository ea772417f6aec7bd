//! The gateway in front of a resource's pods (`spec.gateway`): a Deployment of
//! `matte-gateway` (no GPU) named `<name>-gateway`, its PodDisruptionBudget, and the
//! least privilege it needs to follow the pods: a ServiceAccount bound to a Role that
//! reads the EndpointSlices of its namespace and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, ServiceAccount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use matte_common::{gateway_flags as flags, memory};

use crate::crd::BackgroundRemovalService;

use super::deployment::{
    ENDPOINT_PROPAGATION_SECONDS, HTTP_PORT, NON_ROOT_USER, drain_timeout_seconds, empty_dir, http_server_container,
    mebibytes, mount, runtime_default_seccomp,
};
use super::{ValidGateway, gateway_selector_labels, metadata_named, one_at_a_time, owned_labels, pods_service_name};

/// CPU request of a gateway pod when the resource gives none: it copies bytes and
/// keeps a queue; half a core carries hundreds of images a second.
const DEFAULT_CPU: &str = "500m";
/// Memory of a gateway pod when the resource gives none.
pub const DEFAULT_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
/// The share of the pod's memory that request bodies and the images waiting for their
/// clients may fill (`--max-buffered-bytes`); the rest is the process, the responses
/// streamed and the connections.
const BUFFERED_SHARE: u64 = 2;

/// `<name>-gateway`: the gateway's Deployment, budget, account and role.
pub fn gateway_name(brs: &BackgroundRemovalService) -> String {
    format!("{}-gateway", brs.name_any())
}

fn gateway_label_selector(brs: &BackgroundRemovalService) -> LabelSelector {
    LabelSelector { match_labels: Some(gateway_selector_labels(brs)), ..LabelSelector::default() }
}

fn gateway_metadata(brs: &BackgroundRemovalService) -> ObjectMeta {
    metadata_named(brs, gateway_name(brs), owned_labels(brs, gateway_selector_labels(brs)))
}

/// The gateway's `matte-gateway` command line: it follows `<name>-pods`, never holds
/// more on a pod than its share of the pod's queue, and waits for a pod as long as an
/// attempt on one may take.
fn gateway_args(brs: &BackgroundRemovalService, gateway: &ValidGateway) -> Vec<String> {
    let spec = &brs.spec;
    let max_wait = i64::from(spec.gateway.max_wait_seconds);
    // The pod answers 504 itself when its request timeout passes before inference; the
    // rest of an attempt is the inference and the encoding.
    let upstream_timeout = drain_timeout_seconds(brs);
    let buffered = gateway.memory_bytes / BUFFERED_SHARE;
    vec![
        format!("--{}=0.0.0.0:{HTTP_PORT}", flags::LISTEN),
        format!("--{}={}", flags::SERVICE, pods_service_name(brs)),
        format!("--{}={}", flags::UPSTREAM_CAPACITY, gateway.upstream_capacity),
        format!("--{}={max_wait}", flags::MAX_WAIT_SECONDS),
        format!("--{}={buffered}", flags::MAX_BUFFERED_BYTES),
        format!("--{}={}", flags::MAX_CONNECTIONS, memory::gateway_max_connections(gateway.memory_bytes, buffered)),
        format!("--{}={upstream_timeout}", flags::UPSTREAM_TIMEOUT_SECONDS),
        format!("--{}={ENDPOINT_PROPAGATION_SECONDS}", flags::DRAIN_DELAY_SECONDS),
        format!("--{}={}", flags::DRAIN_TIMEOUT_SECONDS, gateway_drain_timeout_seconds(brs)),
    ]
}

/// A request admitted last may wait its whole budget, then take one full attempt.
fn gateway_drain_timeout_seconds(brs: &BackgroundRemovalService) -> i64 {
    i64::from(brs.spec.gateway.max_wait_seconds) + drain_timeout_seconds(brs)
}

/// The gateway's Deployment: `spec.gateway.replicas` pods without a GPU, spread over
/// nodes, locked down like the inference pods, its namespace given by the downward API.
pub fn gateway_deployment(brs: &BackgroundRemovalService, gateway: &ValidGateway) -> Deployment {
    let spec = &brs.spec.gateway;
    let cpu = spec.cpu.clone().unwrap_or_else(|| Quantity(DEFAULT_CPU.into()));
    let memory = spec.memory.clone().unwrap_or_else(|| mebibytes(DEFAULT_MEMORY_BYTES));
    let requests = BTreeMap::from([("cpu".to_owned(), cpu), ("memory".to_owned(), memory.clone())]);
    let limits = BTreeMap::from([("memory".to_owned(), memory)]);
    let namespace = EnvVar {
        name: "POD_NAMESPACE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.namespace".into(), ..Default::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let resources = ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() };
    let mounts = vec![mount("tmp", "/tmp", false)];
    let container = Container {
        env: Some(vec![namespace]),
        ..http_server_container("gateway", &gateway.image, gateway_args(brs, gateway), resources, mounts)
    };
    // Two gateway pods on one node would go down together.
    let spread = PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(gateway_label_selector(brs)),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            },
        }]),
        ..PodAntiAffinity::default()
    };
    Deployment {
        metadata: gateway_metadata(brs),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: gateway_label_selector(brs),
            // A gateway pod needs no scarce resource: surge, never go below the replicas.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owned_labels(brs, gateway_selector_labels(brs))),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("tmp")]),
                    service_account_name: Some(gateway_name(brs)),
                    image_pull_secrets: brs.spec.image_pull_secrets.clone(),
                    // The gateway watches EndpointSlices: it needs its token.
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NON_ROOT_USER),
                        run_as_group: Some(NON_ROOT_USER),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(
                        ENDPOINT_PROPAGATION_SECONDS + gateway_drain_timeout_seconds(brs) + 10,
                    ),
                    affinity: Some(Affinity { pod_anti_affinity: Some(spread), ..Affinity::default() }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// One gateway pod down at a time; an unready one can always be evicted.
pub fn gateway_disruption_budget(brs: &BackgroundRemovalService) -> PodDisruptionBudget {
    one_at_a_time(gateway_metadata(brs), gateway_label_selector(brs))
}

pub fn gateway_service_account(brs: &BackgroundRemovalService) -> ServiceAccount {
    ServiceAccount { metadata: gateway_metadata(brs), ..ServiceAccount::default() }
}

/// Reading EndpointSlices is all the gateway does with the apiserver. A Role cannot
/// narrow a list or watch to one Service's slices: the namespace is the boundary.
pub fn gateway_role(brs: &BackgroundRemovalService) -> Role {
    Role {
        metadata: gateway_metadata(brs),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    }
}

pub fn gateway_role_binding(brs: &BackgroundRemovalService) -> RoleBinding {
    RoleBinding {
        metadata: gateway_metadata(brs),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: gateway_name(brs),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: gateway_name(brs),
            namespace: brs.namespace(),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, defaults, resource};
    use super::super::validate;
    use super::*;

    fn valid_gateway(brs: &BackgroundRemovalService) -> ValidGateway {
        validate(brs, &defaults()).expect("the fixture is valid").gateway.expect("the gateway is on")
    }

    #[test]
    fn golden_gateway_objects() {
        let brs = resource("minimal.yaml");
        let gateway = valid_gateway(&brs);
        assert_golden("minimal.gateway.deployment.yaml", &gateway_deployment(&brs, &gateway));
        assert_golden("minimal.gateway.pdb.yaml", &gateway_disruption_budget(&brs));
        assert_golden(
            "minimal.gateway.rbac.yaml",
            &(gateway_service_account(&brs), gateway_role(&brs), gateway_role_binding(&brs)),
        );
    }

    #[test]
    fn the_gateway_follows_the_pods_service_within_the_pods_capacity_and_the_budget() {
        let brs = resource("full.yaml");
        let gateway = valid_gateway(&brs);
        let deployment = gateway_deployment(&brs, &gateway);
        let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a pod template");
        let args = pod.containers[0].args.clone().unwrap_or_default();
        // full.yaml: 3 replicas sharing a pod's 64 places, 21 each.
        assert_eq!((brs.spec.queue.capacity, brs.spec.gateway.replicas), (64, 3));
        let capacity = "--upstream-capacity=21";
        for expected in ["--service=catalogue-pods", capacity, "--max-wait-seconds=20"] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        // Bodies fill at most half the memory limit (full.yaml: 2Gi).
        assert!(args.iter().any(|a| a == "--max-buffered-bytes=1073741824"), "{args:?}");
        let resources = pod.containers[0].resources.clone().expect("resources");
        assert!(resources.limits.iter().flatten().all(|(name, _)| name == "memory"), "no GPU, no CPU limit");
        assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
        // The drain outlasts a request admitted last: its budget and one attempt.
        let grace = pod.termination_grace_period_seconds.expect("a grace period");
        assert!(grace > 20 + i64::from(brs.spec.queue.request_timeout_seconds), "{grace}");
    }

    #[test]
    fn the_gateway_may_read_endpoint_slices_and_nothing_else() {
        let brs = resource("minimal.yaml");
        let rules = gateway_role(&brs).rules.unwrap_or_default();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources.as_deref(), Some(&["endpointslices".to_owned()][..]));
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        let binding = gateway_role_binding(&brs);
        assert_eq!(binding.role_ref.name, "portraits-gateway");
        let subject = &binding.subjects.expect("a subject")[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("portraits-gateway", brs.namespace().as_deref())
        );
    }

    #[test]
    fn gateway_pods_are_not_inference_pods() {
        let brs = resource("minimal.yaml");
        let gateway = gateway_selector_labels(&brs);
        let pods = super::super::selector_labels(&brs);
        assert_eq!(gateway.get(super::super::SERVICE_LABEL), pods.get(super::super::SERVICE_LABEL));
        assert_ne!(gateway.get("app.kubernetes.io/name"), pods.get("app.kubernetes.io/name"));
    }

    #[test]
    fn both_pods_pull_with_the_resources_secrets() {
        let brs = resource("full.yaml");
        let valid = validate(&brs, &defaults()).expect("valid");
        let secrets = |deployment: &Deployment| {
            let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("a pod");
            pod.image_pull_secrets.unwrap_or_default().into_iter().map(|s| s.name).collect::<Vec<_>>()
        };
        let gateway = gateway_deployment(&brs, valid.gateway.as_ref().expect("a gateway"));
        assert_eq!(secrets(&gateway), ["registry-example"], "its own ServiceAccount has none");
        assert_eq!(secrets(&super::super::deployment(&brs, &valid, 1)), ["registry-example"]);
    }
}
