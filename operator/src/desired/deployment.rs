//! The Deployment of inference pods: one GPU each, locked down, probed on the pod's
//! health endpoints, given long enough to drain its queue when it is stopped.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use matte_common::{fetch_model, flags, memory, paths, readiness};

use crate::crd::{BackgroundRemovalService, BackgroundRemovalServiceSpec, ExecutionProvider};

use super::{Valid, label_selector, labels, metadata};

/// The inference container's name and port (the pod contract of DESIGN.md).
const CONTAINER_NAME: &str = "inference";
pub(super) const HTTP_PORT: i32 = paths::PORT as i32;
/// How long a pod may take to turn ready beyond the model's download: Kubernetes'
/// default progress deadline, for the image's pull, the model's load and, with
/// TensorRT, its engine's build.
pub const STARTUP_MARGIN_SECONDS: i32 = 600;

/// The least room the model's volume has beyond the model's bound (1 % of it above that).
const MODEL_VOLUME_HEADROOM_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// The longest a pod of `spec` may take from scheduled to ready: its model's download
/// time-out, when it fetches one, and [`STARTUP_MARGIN_SECONDS`]. A rollout with no pod
/// turning ready for as long is reported stalled (`ProgressDeadlineExceeded`, which the
/// status reports as `Degraded`), a pod unready for as long is reported failing, and a
/// longer wait for readiness is no start-up. At the margin alone, a pod whose download
/// took most of its 600 s time-out had a healthy rollout reported stalled.
pub fn startup_deadline_seconds(spec: &BackgroundRemovalServiceSpec) -> i32 {
    let download =
        spec.model.url.as_ref().map_or(0, |_| spec.model.download.clone().unwrap_or_default().timeout_seconds);
    download.saturating_add(STARTUP_MARGIN_SECONDS)
}

/// Where a downloaded or mounted model is found inside the pod.
const MODEL_DIR: &str = "/models";
/// The file name a downloaded model is stored under.
const MODEL_FILE: &str = "model.onnx";
/// Where the fetcher finds the private CA of `model.download.caConfigMap`.
const MODEL_CA_DIR: &str = "/etc/matte/model-ca";
const MODEL_CA_FILE: &str = "ca.pem";
/// The model fetcher's requests and memory limit: a download streamed to a file,
/// hashed as it goes.
const FETCHER_CPU: &str = "100m";
const FETCHER_MEMORY: &str = "64Mi";
const FETCHER_MEMORY_LIMIT: &str = "256Mi";
/// TensorRT's engines and timing cache: an emptyDir lives as long as the pod, so a
/// container that restarts loads its engine instead of building it again for minutes.
const TENSORRT_CACHE_DIR: &str = "/var/cache/matte/tensorrt";
/// The user of the inference image, also enforced here.
pub(super) const NON_ROOT_USER: i64 = 65532;
/// Time for a terminating pod's address to leave every Service endpoint before the
/// server stops admitting work (its drain delay), so that no client is sent to a
/// closing pod.
pub(super) const ENDPOINT_PROPAGATION_SECONDS: i64 = readiness::ENDPOINT_PROPAGATION_SECONDS as i64;
/// Beyond the request timeout, time for a drain to finish what was admitted last:
/// its decode, inference and encode.
const DRAIN_MARGIN_SECONDS: i64 = 30;
/// CPU request when the resource gives none: the server's CPU workers and ONNX
/// Runtime threads are sized from it, never from every core of a large GPU node.
const DEFAULT_CPU_CORES: u32 = 2;

/// The Deployment for `brs` with `replicas` pods.
pub fn deployment(brs: &BackgroundRemovalService, valid: &Valid, replicas: i32) -> Deployment {
    let spec = &brs.spec;
    let (model_path, model_volumes, fetcher) = model_source(brs, valid);
    let mut volumes = vec![empty_dir("tmp")];
    volumes.extend(model_volumes);
    let mut mounts = vec![mount("tmp", "/tmp", false)];
    if volumes.iter().any(|v| v.name == "model") {
        mounts.push(mount("model", MODEL_DIR, true));
    }
    if spec.execution_provider == ExecutionProvider::Tensorrt {
        volumes.push(empty_dir("tensorrt-cache"));
        mounts.push(mount("tensorrt-cache", TENSORRT_CACHE_DIR, false));
    }

    let cores = spec.gpu.cpu.as_ref().and_then(whole_cores).unwrap_or(DEFAULT_CPU_CORES);
    let cpu = spec.gpu.cpu.clone().unwrap_or_else(|| Quantity(DEFAULT_CPU_CORES.to_string()));
    // Request = limit: the pod is Guaranteed for memory, never the first evicted, and
    // its bound is the one the server's flags imply unless the resource sets one.
    let memory = spec.gpu.memory.clone().unwrap_or_else(|| mebibytes(sizing(brs, cores).pod_bytes()));
    let gpu = || BTreeMap::from([(spec.gpu.resource_name.clone(), Quantity("1".into()))]);
    let mut requests = gpu();
    let mut limits = gpu();
    requests.insert("cpu".into(), cpu);
    requests.insert("memory".into(), memory.clone());
    limits.insert("memory".into(), memory);

    let resources = ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() };
    let args = inference_args(brs, &model_path, cores);
    let container = http_server_container(CONTAINER_NAME, &valid.image, args, resources, mounts);

    Deployment {
        metadata: metadata(brs),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: label_selector(brs),
            strategy: Some(rollout(replicas)),
            progress_deadline_seconds: Some(startup_deadline_seconds(spec)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(brs)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: fetcher.map(|fetcher| vec![fetcher]),
                    volumes: Some(volumes),
                    image_pull_secrets: brs.spec.image_pull_secrets.clone(),
                    // The pods never talk to the apiserver.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NON_ROOT_USER),
                        run_as_group: Some(NON_ROOT_USER),
                        fs_group: Some(NON_ROOT_USER),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    // The server's drain delay, then its drain timeout, then a margin
                    // for it to exit before it is killed.
                    termination_grace_period_seconds: Some(
                        ENDPOINT_PROPAGATION_SECONDS + drain_timeout_seconds(brs) + 10,
                    ),
                    node_selector: spec.gpu.node_selector.clone(),
                    tolerations: spec.gpu.tolerations.clone(),
                    affinity: spec.gpu.affinity.clone(),
                    priority_class_name: spec.gpu.priority_class_name.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// How pods are replaced. A rollout must not need a spare GPU, which may not exist,
/// so pods are replaced one at a time in place; but a single pod is surged instead,
/// or the rollout is an outage of the whole service (the new pod waits for a GPU
/// rather than the service going down).
fn rollout(replicas: i32) -> DeploymentStrategy {
    let (max_surge, max_unavailable) = if replicas <= 1 { (1, 0) } else { (0, 1) };
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(max_surge)),
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
        }),
    }
}

/// How long the server's drain may take once it refuses new work.
pub(super) fn drain_timeout_seconds(brs: &BackgroundRemovalService) -> i64 {
    i64::from(brs.spec.queue.request_timeout_seconds) + DRAIN_MARGIN_SECONDS
}

/// The flags that bound the server's memory, as this pod runs it.
fn sizing(brs: &BackgroundRemovalService, cores: u32) -> memory::Sizing {
    let spec = &brs.spec;
    let positive = |value: i32| u64::try_from(value).unwrap_or(0);
    memory::Sizing {
        cpu_workers: u64::from(cores),
        queue_capacity: positive(spec.queue.capacity),
        max_input_pixels: memory::DEFAULT_MAX_INPUT_PIXELS,
        max_body_bytes: memory::DEFAULT_MAX_BODY_BYTES,
        max_dimension: positive(spec.max_dimension),
        input_size: positive(spec.model.input_size),
        max_batch_size: positive(spec.batching.max_batch_size),
        max_connections: memory::DEFAULT_POD_MAX_CONNECTIONS,
    }
}

/// Whole cores of a CPU quantity (`2`, `1.5`, `500m`), rounded up; `None` if it is
/// not one of those forms.
fn whole_cores(quantity: &Quantity) -> Option<u32> {
    let cores = super::quantity::value(&quantity.0)?;
    (cores > 0.0 && cores <= 4096.0).then(|| cores.ceil() as u32)
}

pub(super) fn mebibytes(bytes: u64) -> Quantity {
    Quantity(format!("{}Mi", bytes.div_ceil(1024 * 1024)))
}

/// The `matte-inference` command line for `brs`, whose pod has `cores` CPU cores.
fn inference_args(brs: &BackgroundRemovalService, model_path: &str, cores: u32) -> Vec<String> {
    let spec = &brs.spec;
    let provider = match spec.execution_provider {
        ExecutionProvider::Cuda => "cuda",
        ExecutionProvider::Tensorrt => "tensorrt",
        ExecutionProvider::Cpu => "cpu",
    };
    let mut args = vec![
        format!("--model={model_path}"),
        format!("--listen=0.0.0.0:{HTTP_PORT}"),
        format!("--provider={provider}"),
        format!("--input-size={}", spec.model.input_size),
        format!("--max-dimension={}", spec.max_dimension),
        format!("--max-batch-size={}", spec.batching.max_batch_size),
        format!("--max-batch-delay-ms={}", spec.batching.max_delay_millis),
        format!("--queue-capacity={}", spec.queue.capacity),
        format!("--request-timeout-seconds={}", spec.queue.request_timeout_seconds),
        format!("--{}={cores}", flags::CPU_WORKERS),
        format!("--{}={cores}", flags::INTRA_THREADS),
        format!("--{}={ENDPOINT_PROPAGATION_SECONDS}", flags::DRAIN_DELAY_SECONDS),
        format!("--{}={}", flags::DRAIN_TIMEOUT_SECONDS, drain_timeout_seconds(brs)),
    ];
    let triple = |values: &[f64]| values.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
    if let Some(mean) = &spec.model.mean {
        args.push(format!("--mean={}", triple(mean)));
    }
    if let Some(std) = &spec.model.std {
        args.push(format!("--std={}", triple(std)));
    }
    if spec.execution_provider == ExecutionProvider::Tensorrt {
        args.push(format!("--{}={TENSORRT_CACHE_DIR}", flags::TENSORRT_CACHE_DIR));
    }
    args
}

/// The model's path in the pod, the volumes it needs and the init container that puts
/// it there, by source.
fn model_source(brs: &BackgroundRemovalService, valid: &Valid) -> (String, Vec<Volume>, Option<Container>) {
    let model = &brs.spec.model;
    if let Some(url) = &model.url {
        let target = format!("{MODEL_DIR}/{MODEL_FILE}");
        let download = model.download.clone().unwrap_or_default();
        // Bounded: a server sending without end must not fill the node's disk. A little
        // above the model's own bound: a model just within it takes a few more blocks
        // on disk, and over the volume's limit the kubelet evicts the pod, saying
        // nothing of the model.
        let volume_bytes =
            valid.model_max_bytes.saturating_add((valid.model_max_bytes / 100).max(MODEL_VOLUME_HEADROOM_MIN_BYTES));
        let size_limit = mebibytes(volume_bytes);
        let mut volumes = vec![Volume {
            name: "model".into(),
            empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(size_limit), ..Default::default() }),
            ..Volume::default()
        }];
        let mut mounts = vec![mount("model", MODEL_DIR, false)];
        // Arguments go to the binary as they are, never through a shell.
        let mut args = vec![
            fetch_model::SUBCOMMAND.to_owned(),
            format!("--{}={url}", fetch_model::URL_FLAG),
            format!("--{}={}", fetch_model::SHA256_FLAG, model.sha256.as_deref().unwrap_or_default()),
            format!("--{}={target}", fetch_model::OUTPUT_FLAG),
            format!("--{}={}", fetch_model::CONNECT_TIMEOUT_FLAG, download.connect_timeout_seconds),
            format!("--{}={}", fetch_model::TIMEOUT_FLAG, download.timeout_seconds),
            format!("--{}={}", fetch_model::MAX_BYTES_FLAG, valid.model_max_bytes),
        ];
        if let Some(ca) = &download.ca_config_map {
            volumes.push(Volume {
                name: "model-ca".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: ca.name.clone(),
                    items: Some(vec![KeyToPath { key: ca.key.clone(), path: MODEL_CA_FILE.into(), mode: None }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(mount("model-ca", MODEL_CA_DIR, true));
            args.push(format!("--{}={MODEL_CA_DIR}/{MODEL_CA_FILE}", fetch_model::CA_FILE_FLAG));
        }
        // The credential reaches the process through its environment, from the Secret:
        // never in the URL, the arguments or the pod spec.
        let env = download.authorization_secret.as_ref().map(|secret| {
            vec![EnvVar {
                name: fetch_model::AUTHORIZATION_ENV.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: secret.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }]
        });
        // The inference image carries the fetcher: no second image, no shell.
        let fetcher = Container {
            name: "fetch-model".into(),
            image: Some(valid.image.clone()),
            args: Some(args),
            env,
            volume_mounts: Some(mounts),
            security_context: Some(container_security()),
            // A stream to a file: little CPU and memory, declared so that a namespace's
            // compute quota, which every container must declare for, admits the pod.
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(FETCHER_CPU.into())),
                    ("memory".to_owned(), Quantity(FETCHER_MEMORY.into())),
                ])),
                limits: Some(BTreeMap::from([("memory".to_owned(), Quantity(FETCHER_MEMORY_LIMIT.into()))])),
                ..ResourceRequirements::default()
            }),
            // A failed download's last log line (why) becomes the pod's status message.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Container::default()
        };
        (target, volumes, Some(fetcher))
    } else if let Some(claim) = &model.persistent_volume_claim {
        let volume = Volume {
            name: "model".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        };
        (format!("{MODEL_DIR}/{}", claim.path), vec![volume], None)
    } else {
        (model.path.clone().unwrap_or_default(), Vec::new(), None)
    }
}

/// A container serving Matte's HTTP contract on port `http`: probed on `/readyz` and
/// `/healthz` (one slow probe, such as a scrape during a long batch, does not take the
/// pod out), locked down.
pub(super) fn http_server_container(
    name: &str,
    image: &str,
    args: Vec<String>,
    resources: ResourceRequirements,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some(paths::PORT_NAME.into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources),
        readiness_probe: Some(http_probe(
            paths::READYZ,
            i32::from(readiness::PERIOD_SECONDS),
            i32::from(readiness::FAILURE_THRESHOLD),
        )),
        liveness_probe: Some(http_probe(paths::HEALTHZ, 10, 3)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        // Why a failed server exited (its last log line, such as a restart for its
        // liveness probe) becomes the pod's status message, and the operator's.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(paths::PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

pub(super) fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }
}

pub(super) fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..VolumeMount::default() }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_golden, defaults, resource};
    use super::super::validate;
    use super::*;

    fn build(fixture: &str, replicas: i32) -> Deployment {
        let brs = resource(fixture);
        let valid = validate(&brs, &defaults()).expect("the fixture is valid");
        deployment(&brs, &valid, replicas)
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a pod template")
    }

    #[test]
    fn every_container_declares_what_a_compute_quota_asks_for() {
        for fixture in ["minimal.yaml", "full.yaml"] {
            let brs = resource(fixture);
            let valid = validate(&brs, &defaults()).expect("the fixture is valid");
            let gateway = super::super::gateway::gateway_deployment(&brs, valid.gateway.as_ref().expect("a gateway"));
            for deployment in [deployment(&brs, &valid, 1), gateway] {
                let pod = pod(&deployment);
                for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
                    let resources = container.resources.as_ref().expect("resources");
                    let requests = resources.requests.as_ref().expect("requests");
                    let limits = resources.limits.as_ref().expect("limits");
                    assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{}", container.name);
                    assert!(limits.contains_key("memory"), "{fixture}: {}", container.name);
                }
            }
        }
    }

    #[test]
    fn a_download_is_bounded_by_its_size_limit_or_by_default() {
        let fetcher_args =
            |deployment: &Deployment| pod(deployment).init_containers.as_ref().expect("a fetcher")[0].args.clone();
        let bounded = fetcher_args(&build("minimal.yaml", 1)).expect("arguments");
        assert!(bounded.contains(&format!("--max-bytes={}", fetch_model::DEFAULT_MAX_BYTES)), "{bounded:?}");
        let mut brs = resource("full.yaml");
        brs.spec.model.download.as_mut().expect("download").size_limit = Some(Quantity("a lot".into()));
        let problems = validate(&brs, &defaults()).expect_err("refused");
        assert!(problems[0].starts_with("spec.model.download.sizeLimit \"a lot\""), "{problems:?}");
    }

    #[test]
    fn golden_deployments() {
        assert_golden("minimal.deployment.yaml", &build("minimal.yaml", 2));
        assert_golden("full.deployment.yaml", &build("full.yaml", 3));
        assert_golden("pvc-model.deployment.yaml", &build("pvc-model.yaml", 1));
    }

    #[test]
    fn every_pod_asks_for_exactly_one_gpu_of_the_configured_resource() {
        let deployment = build("full.yaml", 3);
        assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let resources = pod(&deployment).containers[0].resources.clone().expect("resources");
        let one = Some(&Quantity("1".into()));
        assert_eq!(resources.limits.as_ref().and_then(|l| l.get("amd.com/gpu")), one);
        assert_eq!(resources.requests.as_ref().and_then(|r| r.get("amd.com/gpu")), one);
        assert_eq!(resources.limits.as_ref().and_then(|l| l.get("memory")), Some(&Quantity("16Gi".into())));
    }

    #[test]
    fn pods_are_locked_down() {
        let deployment = build("minimal.yaml", 1);
        let pod = pod(&deployment);
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
            let security = container.security_context.as_ref().expect("container security");
            assert_eq!(security.read_only_root_filesystem, Some(true), "{}", container.name);
            assert_eq!(security.allow_privilege_escalation, Some(false), "{}", container.name);
            let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(dropped, Some(vec!["ALL".to_owned()]), "{}", container.name);
            assert_eq!(security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        }
    }

    #[test]
    fn a_url_model_is_fetched_and_checked_by_the_inference_image_before_the_server_starts() {
        let deployment = build("full.yaml", 1);
        let pod = pod(&deployment);
        let fetcher = &pod.init_containers.as_ref().expect("an init container")[0];
        assert_eq!(fetcher.image, pod.containers[0].image, "the inference image carries the fetcher");
        assert!(fetcher.command.is_none(), "the image's entrypoint runs, no shell");
        let args = fetcher.args.clone().unwrap_or_default();
        assert_eq!(args[0], "fetch-model");
        assert!(args.contains(&"--url=https://models.example/isnet-general.onnx".to_owned()), "{args:?}");
        assert!(args.iter().any(|a| a.starts_with("--sha256=") && a.len() == "--sha256=".len() + 64), "{args:?}");
        assert!(args.contains(&"--output=/models/model.onnx".to_owned()), "{args:?}");
        assert!(args.contains(&"--connect-timeout-seconds=5".to_owned()), "{args:?}");
        assert!(args.contains(&"--timeout-seconds=900".to_owned()), "{args:?}");
        assert!(args.contains(&"--ca-file=/etc/matte/model-ca/ca.pem".to_owned()), "{args:?}");
        assert!(pod.containers[0].args.iter().flatten().any(|a| a == "--model=/models/model.onnx"));
        // The server mounts the model read-only; only the fetcher writes it.
        let server_mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "model");
        assert_eq!(server_mount.and_then(|m| m.read_only), Some(true));
    }

    #[test]
    fn download_credentials_come_from_the_secret_and_never_from_the_spec_text() {
        let deployment = build("full.yaml", 1);
        let pod = pod(&deployment);
        let fetcher = &pod.init_containers.as_ref().expect("an init container")[0];
        let env = fetcher.env.as_ref().expect("the authorization variable");
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "MATTE_MODEL_AUTHORIZATION");
        assert!(env[0].value.is_none(), "the value comes from the Secret only");
        let secret = env[0].value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("a secret key");
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("model-server", "authorization"));
        let volume = |name: &str| pod.volumes.iter().flatten().find(|v| v.name == name).cloned();
        let ca = volume("model-ca").and_then(|v| v.config_map).expect("the CA ConfigMap volume");
        assert_eq!(ca.name, "model-server-ca");
        // The resource's sizeLimit of 1Gi is the model's bound; its volume has 16 MiB more,
        // so that a model just within it is not evicted for its disk blocks.
        let limit = volume("model").and_then(|v| v.empty_dir).and_then(|e| e.size_limit);
        assert_eq!(limit, Some(Quantity("1040Mi".into())));
        assert!(fetcher.args.as_ref().expect("args").contains(&"--max-bytes=1073741824".to_owned()));
    }

    #[test]
    fn without_download_settings_the_fetcher_uses_defaults_and_no_secret() {
        let deployment = build("minimal.yaml", 1);
        let pod = pod(&deployment);
        let fetcher = &pod.init_containers.as_ref().expect("an init container")[0];
        let args = fetcher.args.clone().unwrap_or_default();
        assert!(args.contains(&"--connect-timeout-seconds=10".to_owned()), "{args:?}");
        assert!(args.contains(&"--timeout-seconds=600".to_owned()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--ca-file")), "{args:?}");
        assert!(fetcher.env.is_none());
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "model-ca"));
    }

    #[test]
    fn a_model_in_the_image_needs_no_volume() {
        let mut brs = resource("minimal.yaml");
        brs.spec.model.url = None;
        brs.spec.model.path = Some("/opt/models/isnet.onnx".into());
        let valid = validate(&brs, &defaults()).expect("valid");
        let deployment = deployment(&brs, &valid, 1);
        let pod = pod(&deployment);
        assert!(pod.init_containers.is_none());
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "model"));
        assert!(pod.containers[0].args.iter().flatten().any(|a| a == "--model=/opt/models/isnet.onnx"));
    }

    #[test]
    fn workers_threads_and_memory_follow_the_pod_s_own_bounds() {
        let deployment = build("minimal.yaml", 2);
        let container = &pod(&deployment).containers[0];
        let args = container.args.clone().unwrap_or_default();
        assert!(args.contains(&"--cpu-workers=2".to_owned()), "{args:?}");
        assert!(args.contains(&"--intra-threads=2".to_owned()), "{args:?}");
        let resources = container.resources.clone().expect("resources");
        let request = resources.requests.as_ref().and_then(|r| r.get("memory")).cloned();
        let limit = resources.limits.as_ref().and_then(|l| l.get("memory")).cloned();
        assert!(request.is_some(), "a minimal resource still gets a memory request");
        assert_eq!(request, limit, "request = limit");
        assert!(container.env.iter().flatten().all(|e| e.name != "RUST_LOG"), "the server's own log default stands");

        assert_eq!(whole_cores(&Quantity("1500m".into())), Some(2));
        assert_eq!(whole_cores(&Quantity("4".into())), Some(4));
        assert_eq!(whole_cores(&Quantity("0.25".into())), Some(1));
        assert_eq!(whole_cores(&Quantity("lots".into())), None);
    }

    #[test]
    fn a_single_pod_is_surged_so_a_rollout_is_no_outage() {
        let surge = |replicas| {
            let update = rollout(replicas).rolling_update.expect("rolling update");
            (update.max_surge, update.max_unavailable)
        };
        assert_eq!(surge(1), (Some(IntOrString::Int(1)), Some(IntOrString::Int(0))));
        assert_eq!(surge(3), (Some(IntOrString::Int(0)), Some(IntOrString::Int(1))));
    }

    #[test]
    fn the_grace_period_outlasts_the_request_timeout() {
        let deployment = build("full.yaml", 1);
        let grace = pod(&deployment).termination_grace_period_seconds.expect("a grace period");
        assert!(grace > 120, "request timeout is 120 s in the fixture, grace {grace}");
    }
}
