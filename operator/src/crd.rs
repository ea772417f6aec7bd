//! The `BackgroundRemovalService` custom resource (`matte.dev/v1alpha1`, short name
//! `brs`): its spec, status and the validation the apiserver enforces (schema bounds and
//! CEL rules), derived from these types. `matte-operator crd` prints it; `crds/` holds
//! the checked-in copy, which a test keeps in step.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use matte_common::limits;
use matte_policy::{PLANNED_UTILIZATION_PERCENT_MAX, PLANNED_UTILIZATION_PERCENT_MIN};
use serde::{Deserialize, Serialize};

/// The longest `metadata.name` accepted: a label value (at most 63 characters) on every
/// pod, less the longest suffix of a name the operator makes from it (`-gateway`), so that
/// every derived name is a DNS-1035 label too. The CEL rule below spells the number out.
pub const MAX_NAME_LENGTH: usize = 63 - "-gateway".len();

/// The upper bound of `replicas`, `autoscaling.minReplicas` and `maxReplicas`
/// ([`limits::MAX_REPLICAS`], as the int32 the schema counts in; 1000 fits).
pub const MAX_REPLICAS: i32 = limits::MAX_REPLICAS as i32;

/// The most of a resource's spec, serialized, that the operator keeps in its cache. A
/// spec of the largest real placement needs a few kilobytes; the schema's bounds on the
/// Kubernetes types it embeds whole (an affinity's terms, expressions and values) allow
/// what only the apiserver's 1.5 MiB object limit stops, and the operator caches every
/// resource of the cluster: a few hundred such resources, from anyone who may create
/// them, would take its memory.
pub const MAX_CACHED_SPEC_BYTES: usize = 64 * 1024;

/// Set on the operator's cached copy of a resource whose spec was over
/// [`MAX_CACHED_SPEC_BYTES`]: the spec's size in bytes. The embedded Kubernetes types were
/// dropped from that copy, so the resource is refused rather than built without them.
/// Never written back; one a user sets is removed.
pub const OVERSIZED_SPEC_ANNOTATION: &str = "matte.dev/oversized-spec-bytes";

/// A well-formed image reference, `[registry[:port]/]path[:tag][@digest]`, after the grammar
/// of the distribution project's `reference` package (IPv6 registries aside): what the
/// kubelet would otherwise refuse only when a pod starts (`InvalidImageName`).
const IMAGE_REFERENCE_RULE: &str = "self.matches('^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?\
     [a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*\
     (:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$')";

/// A fleet of single-GPU inference pods serving one background-removal model.
// Each `printcolumn(...)` is one column; clippy reads the repetition as a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "matte.dev",
    version = "v1alpha1",
    kind = "BackgroundRemovalService",
    namespaced,
    shortname = "brs",
    status = "BackgroundRemovalServiceStatus",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and \
         ending with a letter or digit): it names the resource's Service, which Kubernetes requires to be one"
    ),
    validation = Rule::new(
        "!has(self.spec.autoscaling) || !self.spec.autoscaling.enabled || self.spec.autoscaling.minReplicas >= 1 \
         || !has(self.spec.gateway) || self.spec.gateway.enabled"
    )
    .message(
        "spec.autoscaling.minReplicas 0 needs spec.gateway.enabled: with no pod and no gateway nothing holds a \
         request or measures traffic, so nothing would ever wake the service"
    ),
    validation = Rule::new("size(self.metadata.name) <= 55").message(
        "metadata.name must be at most 55 characters: it is a label value on every pod (at most 63) and the \
         longest name made from it, `<name>-gateway`, must be a DNS-1035 label too"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Gateway", type_ = "integer", json_path = ".status.gatewayReadyReplicas"),
    // The Degraded condition's reason: `AsExpected`, or what is wrong (`CrashLoopBackOff`, …).
    printcolumn(name = "Status", type_ = "string", json_path = r#".status.conditions[?(@.type=="Degraded")].reason"#),
    printcolumn(name = "Queue latency", type_ = "number", json_path = ".status.observedQueueLatencySeconds"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = bound_every_integer)]
pub struct BackgroundRemovalServiceSpec {
    /// Where the ONNX model comes from and how its input is prepared.
    pub model: ModelSpec,
    /// The inference container image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_REFERENCE_RULE).message(
        "spec.image must be an image reference such as registry.example/matte-inference:1.0 or \
         name@sha256:<digest>: no spaces, upper-case repository names or empty parts"
    ))]
    pub image: Option<String>,
    /// Secrets of the resource's namespace to pull the inference and gateway images
    /// with, from a private registry. Both pods carry them: the gateway runs as a
    /// ServiceAccount of its own, which has none of the namespace default's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Largest side of an output image; larger inputs are scaled down.
    #[serde(default = "default_max_dimension")]
    #[schemars(range(min = 1, max = limits::MAX_DIMENSION))]
    pub max_dimension: i32,
    #[serde(default)]
    pub batching: BatchingSpec,
    #[serde(default)]
    pub queue: QueueSpec,
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Pods to run when autoscaling is off; `kubectl scale` writes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: Option<i32>,
    /// The front door clients call: per-request routing to the least-loaded pod, a
    /// bounded queue for bursts, and requests held while the first pod starts.
    #[serde(default)]
    pub gateway: GatewaySpec,
}

/// The `matte-gateway` Deployment in front of the pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Off: the Service `<name>` selects the pods directly (routing per connection, 429s
    /// reach the clients, no scale from zero).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Longest a request may wait in the gateway's queue for a place on a pod; a client
    /// may ask for less with the `x-matte-max-wait-seconds` header. A request that would
    /// wait longer gets 429 with Retry-After at once.
    #[serde(default = "default_gateway_max_wait")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_wait_seconds: i32,
    /// Gateway pods (no GPU); two, so that one can be moved or upgraded while the other
    /// serves.
    #[serde(default = "default_gateway_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// The gateway image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_REFERENCE_RULE).message(
        "spec.gateway.image must be an image reference such as registry.example/matte-gateway:1.0 or \
         name@sha256:<digest>: no spaces, upper-case repository names or empty parts"
    ))]
    pub image: Option<String>,
    /// CPU request of each gateway pod (default 500m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit of each gateway pod (default 1Gi); half of it bounds the
    /// request bodies the gateway holds at once, past which it answers 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            enabled: true,
            max_wait_seconds: default_gateway_max_wait(),
            replicas: default_gateway_replicas(),
            image: None,
            cpu: None,
            memory: None,
        }
    }
}

/// Exactly one of `url`, `persistentVolumeClaim` or `path`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.url), has(self.persistentVolumeClaim), has(self.path)].filter(x, x).size() == 1")
        .message("model: give exactly one of url, persistentVolumeClaim or path"),
    validation = Rule::new("!has(self.url) || self.url.startsWith('https://')")
        .message("model.url must be an https:// URL (models are fetched over HTTPS only)"),
    // Credentials in the URL would be in the pod's spec, readable with the pods.
    // Slashes and backslashes after the scheme are skipped by URL parsers: `https:///u:p@h`.
    validation = Rule::new(r#"!has(self.url) || !self.url.matches('^https://[/\\\\]*[^/?#\\\\]*@')"#)
        .message("model.url must not carry a user name or password: give credentials in model.download.authorizationSecret"),
    validation = Rule::new("!has(self.url) || has(self.sha256)")
        .message("model.sha256 is required with model.url: a downloaded model is always verified"),
    validation = Rule::new("!has(self.download) || has(self.url)")
        .message("model.download applies only to a model.url"),
    // isURL alone accepts spaces in the path; the fetcher would send them raw.
    validation = Rule::new(r#"!has(self.url) || (isURL(self.url) && url(self.url).getHostname() != '' && !self.url.matches('[\\s"<>{}|^`]'))"#)
        .message("model.url must be a well-formed URL with a host and no spaces (percent-encode them as %20)")
)]
pub struct ModelSpec {
    /// Fetched over HTTPS by an init container before the pod starts (`sha256` required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// How `url` is fetched: credentials, a private CA, limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<ModelDownload>,
    /// A file on an existing PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ModelVolume>,
    /// A file baked into the inference image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// Hex SHA-256 the model file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// Model input side in pixels, used when the model leaves it dynamic; a model that
    /// fixes a larger input is refused at start-up (the pod's memory is sized for this).
    #[serde(default = "default_input_size")]
    #[schemars(range(min = limits::MIN_INPUT_SIZE, max = limits::MAX_INPUT_SIZE))]
    pub input_size: i32,
    /// Per-channel mean on RGB scaled to [0, 1] (default 0.5 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 3))]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation (default 1 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 3))]
    pub std: Option<Vec<f64>>,
}

/// How the init container fetches `model.url`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDownload {
    /// A key of a Secret in the resource's namespace whose value is sent as the
    /// `Authorization` header (e.g. `Bearer <token>`), so that no credential sits in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_secret: Option<KeyReference>,
    /// A key of a ConfigMap holding PEM certificates of a private CA that signs the model
    /// server's certificate, trusted besides the image's system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<KeyReference>,
    /// The most the model may take (8Gi by default): a larger announced length is
    /// refused before anything is written, a body without one is cut past it, and the
    /// emptyDir it is downloaded into is limited to it and 1 % (at least 16 MiB) more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// Longest wait for the TCP and TLS connection.
    #[serde(default = "default_connect_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub connect_timeout_seconds: i32,
    /// Longest time for the whole download; a failed or slow download is retried by
    /// Kubernetes with back-off.
    #[serde(default = "default_download_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

impl Default for ModelDownload {
    fn default() -> Self {
        ModelDownload {
            authorization_secret: None,
            ca_config_map: None,
            size_limit: None,
            connect_timeout_seconds: default_connect_timeout(),
            timeout_seconds: default_download_timeout(),
        }
    }
}

/// One key of a Secret or ConfigMap in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelVolume {
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// The model file's path inside the volume.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cuda,
    Tensorrt,
    Cpu,
}

/// Placement: one GPU per pod, always.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// The extended resource that is one GPU.
    #[serde(default = "default_gpu_resource")]
    #[schemars(length(min = 1, max = 253))]
    pub resource_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bound_every_field)]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// CPU request of each pod (decoding and encoding run there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Bounds for the fields of a Kubernetes type the spec embeds whole, which its own
/// schema leaves unbounded: the most items of a list and entries of a map (an affinity's
/// terms, expressions and values), and the longest string (a qualified label key, the
/// longest string an affinity holds: a 253-character prefix, `/` and a 63-character
/// name).
const EMBEDDED_MAX_ITEMS: u64 = 64;
const EMBEDDED_MAX_LENGTH: u64 = 317;

/// Bounds every list, map and free string within `schema` (see [`EMBEDDED_MAX_ITEMS`]).
fn bound_every_field(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        bound_object(object);
    }
}

fn bound_object(object: &mut serde_json::Map<String, serde_json::Value>) {
    match object.get("type").and_then(|t| t.as_str()) {
        Some("array") => {
            object.entry("maxItems").or_insert(EMBEDDED_MAX_ITEMS.into());
        }
        Some("object") if object.contains_key("additionalProperties") => {
            object.entry("maxProperties").or_insert(EMBEDDED_MAX_ITEMS.into());
        }
        Some("string") if !object.contains_key("enum") => {
            object.entry("maxLength").or_insert(EMBEDDED_MAX_LENGTH.into());
        }
        _ => {}
    }
    for_each_subschema(object, bound_object);
}

/// Bounds every integer within `schema` that has none to the range of its format (an
/// `int64` to the integers a JSON number holds exactly). The apiserver checks a number's
/// type but not its format: it stores 2147483648 in an `int32` field, and the operator,
/// reading it into an `i32`, cannot read the page of the list that holds it, so that
/// one resource written so would stop every resource of the cluster from being
/// reconciled. `maximum` and `minimum` it checks.
fn bound_every_integer(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        bound_integers(object);
    }
}

/// The most an `int64` of the CRD may hold: 2^53, beyond which a JSON number, which the
/// apiserver compares as a float, no longer holds every integer exactly.
const INT64_MAGNITUDE_MAX: i64 = 1 << 53;

fn bound_integers(object: &mut serde_json::Map<String, serde_json::Value>) {
    // An optional field's type is `["integer", "null"]` here; the CRD says `nullable`.
    let integer = match object.get("type") {
        Some(serde_json::Value::String(type_)) => type_ == "integer",
        Some(serde_json::Value::Array(types)) => types.iter().any(|type_| type_ == "integer"),
        _ => false,
    };
    if integer {
        let (min, max) = match object.get("format").and_then(|f| f.as_str()) {
            Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (-INT64_MAGNITUDE_MAX, INT64_MAGNITUDE_MAX),
        };
        object.entry("minimum").or_insert(min.into());
        object.entry("maximum").or_insert(max.into());
    }
    for_each_subschema(object, bound_integers);
}

/// Calls `visit` on each schema nested in `object`: its properties, items, additional
/// properties and alternatives.
fn for_each_subschema(
    object: &mut serde_json::Map<String, serde_json::Value>,
    visit: fn(&mut serde_json::Map<String, serde_json::Value>),
) {
    for (key, child) in object.iter_mut() {
        if !["properties", "items", "additionalProperties", "anyOf", "oneOf", "allOf"].contains(&key.as_str()) {
            continue;
        }
        let nested: Vec<&mut serde_json::Value> = match child {
            serde_json::Value::Object(properties) if key == "properties" => properties.values_mut().collect(),
            serde_json::Value::Array(schemas) => schemas.iter_mut().collect(),
            schema => vec![schema],
        };
        for schema in nested {
            if let serde_json::Value::Object(schema) = schema {
                visit(schema);
            }
        }
    }
}

impl Default for GpuSpec {
    fn default() -> Self {
        GpuSpec {
            resource_name: default_gpu_resource(),
            node_selector: None,
            tolerations: None,
            affinity: None,
            priority_class_name: None,
            cpu: None,
            memory: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Images per inference run. A model that fixes its batch at 1 (as ISNet ships) has it
    /// freed at load and checked on a batch of two; one whose graph depends on it runs one
    /// image at a time, as the pod's log says. On a GPU every run is padded to this many images, so that the input's shape never
    /// changes: 4 is where ISNet gains most.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = limits::MAX_BATCH_SIZE))]
    pub max_batch_size: i32,
    /// Longest wait for a batch to fill.
    #[serde(default = "default_max_delay_millis")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_delay_millis: i32,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        BatchingSpec { max_batch_size: default_max_batch_size(), max_delay_millis: default_max_delay_millis() }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Requests each pod admits at once; more get 429 with Retry-After. Behind the
    /// gateway its replicas share them, each sending a pod at most its share; with
    /// batching, keep them (behind the gateway, each replica's share) at two batches or
    /// more so that a GPU is fed (a Warning Event `SpecAdvice` says so otherwise).
    #[serde(default = "default_queue_capacity")]
    #[schemars(range(min = 1, max = limits::MAX_QUEUE_CAPACITY))]
    pub capacity: i32,
    /// A request not inferred this long after arriving gets 504.
    #[serde(default = "default_request_timeout")]
    #[schemars(range(min = 1, max = limits::MAX_REQUEST_TIMEOUT_SECONDS))]
    pub request_timeout_seconds: i32,
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec { capacity: default_queue_capacity(), request_timeout_seconds: default_request_timeout() }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
)]
pub struct AutoscalingSpec {
    /// Off: `replicas` decides.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_replicas: i32,
    /// Every image should start inference within this long of arriving.
    #[serde(default = "default_target_latency")]
    #[schemars(range(min = 0.1, max = 3600.0))]
    pub target_queue_latency_seconds: f64,
    /// How long unneeded pods are kept; by default as long as a pod takes to start. At
    /// most a day: a GPU kept idle longer is no scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Share of a pod's measured throughput the autoscaler's plans count on, in percent;
    /// by default 75. Lower starts more pods for a burst: a better tail for more
    /// GPU-seconds (in the simulator, about 5 % more for every 5 points less). With the
    /// gateway off, plans for a backlog or a flow count on three quarters of this share:
    /// the pods idle while the clients they refused wait out their Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = PLANNED_UTILIZATION_PERCENT_MIN, max = PLANNED_UTILIZATION_PERCENT_MAX))]
    pub planned_utilization_percent: Option<i32>,
    /// Where the pods' metrics are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSource>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        AutoscalingSpec {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_queue_latency_seconds: default_target_latency(),
            scale_down_delay_seconds: None,
            planned_utilization_percent: None,
            metrics: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.prometheusUrl.startsWith('http://') || self.prometheusUrl.startsWith('https://')")
    .message("autoscaling.metrics.prometheusUrl must be an http:// or https:// URL"))]
pub struct MetricsSource {
    /// The Prometheus that scrapes this service's pods: the operator's `--prometheus-url`
    /// or one of its `--allowed-prometheus-urls`, or the resource is refused.
    #[schemars(length(max = 2048))]
    pub prometheus_url: String,
    /// PromQL label matchers picking this service's pods, without braces; by default
    /// `namespace="<namespace>",job="<name>"`, the labels the operator's PodMonitor gives.
    /// Confined to this resource's namespace: the operator adds `namespace="<namespace>"`
    /// (its `--metrics-namespace-label`) and refuses a selector matching that label
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub selector: Option<String>,
}

/// What the operator observed and decided, for `kubectl get` and for people.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = bound_every_integer)]
pub struct BackgroundRemovalServiceStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub desired_replicas: i32,
    /// Pods the scheduler cannot place.
    #[serde(default)]
    pub unschedulable_replicas: i32,
    /// Pods that will not become ready by themselves (the `Degraded` condition says why).
    #[serde(default)]
    pub failing_replicas: i32,
    /// Ready gateway pods, when the gateway is on: with none, clients reach nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ready_replicas: Option<i32>,
    /// The pods' label selector, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "readable_items")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_queue_latency_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_images_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "readable_or_none")]
    pub last_scale_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// What the autoscaling policy remembers between passes (the idle clock, the recent
    /// bursts; times in Unix seconds), so that a new leader decides as the old one would.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "readable_or_none")]
    pub autoscaler_memory: Option<matte_policy::Memory>,
    /// What in the spec builds and runs but works against itself, and what to change:
    /// kept while the spec stands (the Warning Event `SpecAdvice` says it once per edit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

/// A status field as the status holds it, or none if it does not read as one. The
/// resources are watched as a whole: one that fails to read fails the whole list, and
/// with it every resource the operator manages, where a field forgotten costs that one
/// resource what it had learnt (the policy's memory) or said (its last scale's time).
/// Whoever may write the status subresource may write what the schema admits and this
/// operator cannot read: a time whose offset is `+99:00` passes the apiserver's
/// `date-time` check.
fn readable_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(value.and_then(|value| serde_json::from_value(value).ok()))
}

/// The items of a status list that read, for the reason [`readable_or_none`] gives: a
/// condition that does not is dropped, and the next pass sets it afresh.
fn readable_items<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let values = Option::<Vec<serde_json::Value>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(values.into_iter().filter_map(|value| serde_json::from_value(value).ok()).collect())
}

fn default_max_dimension() -> i32 {
    2048
}
fn default_input_size() -> i32 {
    1024
}
fn default_connect_timeout() -> i32 {
    10
}
fn default_download_timeout() -> i32 {
    600
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_owned()
}
fn default_max_batch_size() -> i32 {
    1
}
fn default_max_delay_millis() -> i32 {
    5
}
fn default_queue_capacity() -> i32 {
    32
}
fn default_request_timeout() -> i32 {
    60
}
fn default_true() -> bool {
    true
}
fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    4
}
fn default_gateway_max_wait() -> i32 {
    matte_common::gateway_flags::DEFAULT_MAX_WAIT_SECONDS as i32
}
fn default_gateway_replicas() -> i32 {
    2
}
fn default_target_latency() -> f64 {
    30.0
}

/// The CRD as YAML, as `matte-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&BackgroundRemovalService::crd()).expect("a CRD serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackgroundRemovalServiceSpec {
        serde_yaml::from_str(yaml).expect("the fixture parses")
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec = spec("model: {url: https://models.example/isnet.onnx}");
        assert_eq!(spec.execution_provider, ExecutionProvider::Cuda);
        assert_eq!(spec.gpu.resource_name, "nvidia.com/gpu");
        assert_eq!(spec.max_dimension, 2048);
        assert_eq!(spec.model.input_size, 1024);
        assert_eq!(spec.batching, BatchingSpec { max_batch_size: 1, max_delay_millis: 5 });
        assert_eq!(spec.queue, QueueSpec { capacity: 32, request_timeout_seconds: 60 });
        assert!(spec.autoscaling.enabled);
        assert_eq!((spec.autoscaling.min_replicas, spec.autoscaling.max_replicas), (1, 4));
    }

    #[test]
    fn the_crd_carries_subresources_columns_and_rules() {
        let yaml = crd_yaml();
        for needle in [
            "group: matte.dev",
            "- brs",
            "specReplicasPath: .spec.replicas",
            "labelSelectorPath: .status.selector",
            "status: {}",
            "name: Queue latency",
            "self.minReplicas <= self.maxReplicas",
            "x-kubernetes-validations",
        ] {
            assert!(yaml.contains(needle), "the CRD lacks `{needle}`");
        }
        assert!(!yaml.contains("format: uint"), "no unsigned formats in a Kubernetes schema");
    }

    /// Calls `visit` on `schema` at `path` and on every schema below it: properties
    /// (`path.name`) and list items (`path[]`).
    fn walk(schema: &serde_json::Value, path: &str, visit: &mut dyn FnMut(&serde_json::Value, &str)) {
        visit(schema, path);
        for (name, property) in schema.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
            walk(property, &format!("{path}.{name}"), visit);
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), visit);
        }
    }

    /// The CRD's schema of a resource, as the apiserver gets it.
    fn resource_schema() -> serde_json::Value {
        let crd = serde_json::to_value(<BackgroundRemovalService as kube::CustomResourceExt>::crd())
            .expect("the CRD serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Whether `schema` is a string, list or map without a bound.
    fn unbounded(schema: &serde_json::Value) -> bool {
        let has = |key: &str| schema.get(key).is_some();
        match schema.get("type").and_then(|t| t.as_str()) {
            Some("string") => {
                !has("maxLength") && !has("enum") && !has("pattern") && !has("x-kubernetes-int-or-string")
            }
            Some("array") => !has("maxItems"),
            Some("object") => has("additionalProperties") && !has("maxProperties"),
            _ => false,
        }
    }

    #[test]
    fn every_field_a_client_writes_is_bounded() {
        // The operator holds every resource of the cluster in memory: one tenant's
        // resources of megabytes each must not be able to exhaust it.
        let mut found = Vec::new();
        walk(&resource_schema()["properties"]["spec"], "spec", &mut |schema, path| {
            if unbounded(schema) {
                found.push(path.to_owned());
            }
        });
        // Quantities are strings Kubernetes parses and bounds itself; the fields of a
        // Toleration and a LocalObjectReference are Kubernetes' own, bounded by their count.
        found.retain(|path| !path.ends_with(".cpu") && !path.ends_with(".memory") && !path.ends_with(".sizeLimit"));
        found.retain(|path| {
            !path.starts_with("spec.gpu.tolerations[].") && !path.starts_with("spec.imagePullSecrets[].")
        });
        assert!(found.is_empty(), "unbounded: {found:?}");
    }

    /// Whether `schema` is an integer without both bounds, or with bounds past those of
    /// its format.
    fn integer_out_of_format(schema: &serde_json::Value) -> bool {
        if schema.get("type").and_then(|t| t.as_str()) != Some("integer") {
            return false;
        }
        let (min, max) = match schema.get("format").and_then(|f| f.as_str()) {
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            _ => (-(2f64.powi(53)), 2f64.powi(53)),
        };
        let bound = |key: &str| schema.get(key).and_then(serde_json::Value::as_f64);
        !matches!((bound("minimum"), bound("maximum")), (Some(low), Some(high)) if low >= min && high <= max)
    }

    #[test]
    fn every_integer_is_bounded_within_what_the_operator_reads() {
        // An integer the apiserver stores but the operator cannot read into its type
        // breaks the list that holds it, and with it every resource's reconcile.
        let mut found = Vec::new();
        walk(&resource_schema(), "", &mut |schema, path| {
            if integer_out_of_format(schema) {
                found.push(path.to_owned());
            }
        });
        assert!(found.is_empty(), "unbounded: {found:?}");
    }

    #[test]
    fn cel_rules_refuse_what_they_should() {
        let model = |value: serde_json::Value| ModelSpec::validate_cel(&value, None);
        let digest = "ab".repeat(32);
        assert!(model(serde_json::json!({"url": "https://x/m.onnx", "sha256": digest})).is_ok());
        assert!(model(serde_json::json!({"path": "/models/m.onnx"})).is_ok());
        assert!(model(serde_json::json!({})).is_err(), "no source");
        assert!(model(serde_json::json!({"url": "https://x", "sha256": digest, "path": "/m"})).is_err(), "two sources");
        assert!(model(serde_json::json!({"url": "ftp://x/m.onnx", "sha256": digest})).is_err(), "not https");
        assert!(model(serde_json::json!({"url": "http://x/m.onnx", "sha256": digest})).is_err(), "plain http");
        assert!(model(serde_json::json!({"url": "https://x/m.onnx"})).is_err(), "no sha256");
        let with_userinfo = serde_json::json!({"url": "https://me:token@x/m.onnx", "sha256": digest});
        assert!(model(with_userinfo).is_err(), "credentials in the URL");
        for hidden in ["https:///me:token@x/m.onnx", "https://\\\\me:token@x/m.onnx"] {
            let url = serde_json::json!({"url": hidden, "sha256": digest});
            assert!(model(url).is_err(), "credentials after extra slashes: {hidden}");
        }
        let at_in_path = serde_json::json!({"url": "https://x/models/a@2x.onnx", "sha256": digest});
        assert!(model(at_in_path).is_ok(), "an @ in the path is no user name");
        let download = serde_json::json!({"connectTimeoutSeconds": 10, "timeoutSeconds": 600});
        assert!(model(serde_json::json!({"path": "/m", "download": download})).is_err(), "download without url");

        let bounds = |min: i32, max: i32| {
            let value = serde_json::json!({"enabled": true, "minReplicas": min, "maxReplicas": max, "targetQueueLatencySeconds": 30.0});
            AutoscalingSpec::validate_cel(&value, None)
        };
        assert!(bounds(1, 4).is_ok());
        assert!(bounds(5, 4).is_err());
    }

    fn named(name: &str, spec_yaml: &str) -> BackgroundRemovalService {
        BackgroundRemovalService::new(name, spec(spec_yaml))
    }

    const MINIMAL: &str = "model: {url: https://models.example/isnet.onnx, sha256: 0000000000000000000000000000000000000000000000000000000000000000}";

    #[test]
    fn names_must_make_valid_service_names_and_label_values() {
        assert!(named("portraits", MINIMAL).validate_cel().is_ok());
        assert!(named(&"a".repeat(MAX_NAME_LENGTH), MINIMAL).validate_cel().is_ok());
        for (name, why) in [
            ("1portraits", "a leading digit"),
            ("shop.v2", "a dot"),
            ("Portraits", "upper case"),
            ("portraits-", "a trailing dash"),
        ] {
            let refused = named(name, MINIMAL).validate_cel().expect_err(why).to_string();
            assert!(refused.contains("DNS-1035"), "{name}: {refused}");
        }
        let long = named(&"a".repeat(MAX_NAME_LENGTH + 1), MINIMAL).validate_cel().expect_err("too long").to_string();
        assert!(long.contains(&format!("at most {MAX_NAME_LENGTH} characters")), "{long}");
    }

    #[test]
    fn image_references_must_be_well_formed() {
        let image = |reference: &str| {
            named("portraits", &format!("{{model: {{url: https://models.example/m.onnx, sha256: 0000000000000000000000000000000000000000000000000000000000000000}}, image: {reference:?}}}"))
                .validate_cel()
        };
        for good in [
            "matte-inference",
            "ghcr.io/matte-dev/matte-inference:0.1.0",
            "localhost:5000/matte-inference:0.1.0-cuda",
            "Registry.Example/team/matte_inference:v1.2",
            "registry.example/matte-inference@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image(good).is_ok(), "{good} is refused: {:?}", image(good));
        }
        for bad in [
            "matte inference:1.0",
            "ghcr.io/Matte/inference",
            "registry.example//inference",
            "inference:",
            " inference",
        ] {
            let refused = image(bad).expect_err(bad).to_string();
            assert!(refused.contains("spec.image must be an image reference"), "{bad}: {refused}");
        }
    }

    #[test]
    fn model_urls_must_be_well_formed() {
        let model = |url: &str| {
            ModelSpec::validate_cel(
                &serde_json::json!({ "url": url, "sha256": "0000000000000000000000000000000000000000000000000000000000000000" }),
                None,
            )
        };
        assert!(model("https://models.example/isnet%20fp16.onnx?version=2").is_ok());
        for bad in ["https://models.example/isnet fp16.onnx", "https://", "https://models.example/a\"b"] {
            let refused = model(bad).expect_err(bad).to_string();
            assert!(refused.contains("model.url must be a well-formed URL"), "{bad}: {refused}");
        }
    }

    #[test]
    fn scale_to_zero_needs_the_gateway_that_wakes_the_service() {
        let with = |extra: &str| named("portraits", &format!("{MINIMAL}\n{extra}")).validate_cel();
        let zero = "autoscaling: {minReplicas: 0}\n";
        assert!(with(zero).is_ok(), "the gateway is on by default");
        let refused = with(&format!("{zero}gateway: {{enabled: false}}\n")).expect_err("no gateway").to_string();
        assert!(refused.contains("minReplicas 0 needs spec.gateway.enabled") && refused.contains("wake"), "{refused}");
        assert!(with("autoscaling: {enabled: false, minReplicas: 0}\ngateway: {enabled: false}\n").is_ok());
        assert!(with("autoscaling: {minReplicas: 1}\ngateway: {enabled: false}\n").is_ok());
    }

    #[test]
    fn replica_counts_are_bounded_in_the_schema() {
        let crd = serde_json::to_value(<BackgroundRemovalService as kube::CustomResourceExt>::crd()).expect("JSON");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for bound in [
            &spec["replicas"],
            &spec["autoscaling"]["properties"]["maxReplicas"],
            &spec["autoscaling"]["properties"]["minReplicas"],
        ] {
            assert_eq!(bound["maximum"].as_f64(), Some(f64::from(MAX_REPLICAS)), "{bound}");
        }
    }

    #[test]
    fn the_policy_s_memory_in_status_is_bounded_in_the_schema() {
        use crate::autoscaler::policy::{
            BURSTS_REMEMBERED, PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX, PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN,
        };
        let crd = serde_json::to_value(<BackgroundRemovalService as kube::CustomResourceExt>::crd()).expect("JSON");
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        let memory = &status["autoscalerMemory"]["properties"];
        let bursts = &memory["recentBursts"];
        assert_eq!(bursts["maxItems"].as_u64(), u64::try_from(BURSTS_REMEMBERED).ok());
        assert_eq!(bursts["items"]["properties"]["peakBacklogImages"]["minimum"].as_f64(), Some(0.0));
        assert_eq!(memory["burst"]["properties"]["peakBacklogImages"]["minimum"].as_f64(), Some(0.0));
        let throughput = &memory["imagesPerPodSecond"];
        assert_eq!(throughput["minimum"].as_f64(), Some(PLAUSIBLE_IMAGES_PER_POD_SECOND_MIN));
        assert_eq!(throughput["maximum"].as_f64(), Some(PLAUSIBLE_IMAGES_PER_POD_SECOND_MAX));
        assert_eq!(memory["replicas"]["minimum"].as_f64(), Some(0.0), "{}", memory["replicas"]);
    }

    #[test]
    fn a_memory_that_does_not_read_is_forgotten_not_the_resource() {
        let with_status = |memory: &str| {
            let yaml = format!(
                "{{apiVersion: matte.dev/v1alpha1, kind: BackgroundRemovalService, metadata: {{name: portraits}}, spec: {{{MINIMAL}}}, status: {{replicas: 2, autoscalerMemory: {memory}}}}}"
            );
            serde_yaml::from_str::<BackgroundRemovalService>(&yaml).expect("the resource reads")
        };
        let status = |resource: BackgroundRemovalService| resource.status.expect("a status");
        // Written before the schema bounded it, or by someone who may write the status.
        let forged = status(with_status("{replicas: -1, surplusSinceSeconds: 5}"));
        assert_eq!((forged.replicas, forged.autoscaler_memory), (2, None));
        let remembered = status(with_status("{replicas: 3, surplusSinceSeconds: 5}")).autoscaler_memory;
        let remembered = remembered.expect("a memory that reads is kept");
        assert_eq!((remembered.replicas, remembered.surplus_since_seconds), (Some(3), Some(5.0)));
    }

    #[test]
    fn times_the_apiserver_admits_and_the_operator_cannot_read_lose_their_field_not_the_resource() {
        let yaml = format!(
            r#"{{apiVersion: matte.dev/v1alpha1, kind: BackgroundRemovalService, metadata: {{name: portraits}}, spec: {{{MINIMAL}}},
status: {{replicas: 2, lastScaleTime: "2026-01-01T00:00:00+99:00", conditions: [
  {{type: Ready, status: "True", reason: AllPodsReady, message: "", lastTransitionTime: "2026-01-01T00:00:00+99:00"}},
  {{type: Degraded, status: "False", reason: AsExpected, message: "", lastTransitionTime: "2026-01-01T00:00:00Z"}}]}}}}"#
        );
        let resource = serde_yaml::from_str::<BackgroundRemovalService>(&yaml).expect("the resource reads");
        let status = resource.status.expect("a status");
        assert_eq!((status.replicas, status.last_scale_time), (2, None));
        let kept: Vec<&str> = status.conditions.iter().map(|condition| condition.type_.as_str()).collect();
        assert_eq!(kept, ["Degraded"], "the condition that reads is kept");
        // The time as such is what fails: it reads with an offset within a day.
        let readable = yaml.replace("+99:00", "+09:00");
        let status =
            serde_yaml::from_str::<BackgroundRemovalService>(&readable).expect("reads").status.expect("status");
        assert_eq!((status.last_scale_time.is_some(), status.conditions.len()), (true, 2));
    }
}
