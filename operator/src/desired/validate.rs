//! What the schema and its CEL rules cannot check, checked before anything is built: an
//! invalid spec becomes a `Degraded` condition and a Warning Event, not a retry loop.

use std::collections::BTreeMap;

use kube::ResourceExt;
use matte_common::fetch_model::DEFAULT_MAX_BYTES as DEFAULT_MODEL_MAX_BYTES;
use matte_common::memory::DEFAULT_MAX_BODY_BYTES;
use matte_policy::{PLANNED_UTILIZATION_PERCENT_MAX, PLANNED_UTILIZATION_PERCENT_MIN};

use crate::crd::{BackgroundRemovalService, MAX_CACHED_SPEC_BYTES, OVERSIZED_SPEC_ANNOTATION};
use crate::names;

use super::gateway::DEFAULT_MEMORY_BYTES;
use super::{Defaults, pod_fields, quantity};

/// A spec that passed, with what validation resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    /// The inference image: the spec's, or the operator's default.
    pub image: String,
    /// The gateway, unless `spec.gateway.enabled` is false.
    pub gateway: Option<ValidGateway>,
    /// What builds and runs but works against itself, each naming its fields and what
    /// to change: told in a Warning Event and `status.advice`, never refused.
    pub advice: Vec<String>,
    /// The most bytes a downloaded model may have: `spec.model.download.sizeLimit`, or
    /// the fetcher's default.
    pub model_max_bytes: u64,
    /// The operator's labels for its PodMonitors (`Defaults::pod_monitor_labels`).
    pub pod_monitor_labels: BTreeMap<String, String>,
}

/// What validation resolved of `spec.gateway`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidGateway {
    /// The spec's, or the operator's default.
    pub image: String,
    /// The memory limit of a gateway pod, in bytes.
    pub memory_bytes: u64,
    /// Each replica's share of a pod's places (`--upstream-capacity`), so that the
    /// replicas together never hold more on a pod than its queue admits. Each replica
    /// with all of them would have the pods turn the replicas away in every burst: an
    /// upload each time, the pod passed over for a moment, the autoscaler reading the
    /// pods' refusals as clients turned away (demand), and under sustained load
    /// `MatteRequestsRefused` paging for clients nobody refused. Half of the default 32
    /// places still keeps a GPU fed when one replica takes all of the traffic.
    pub upstream_capacity: i32,
}

/// A gateway pod's memory must hold, in its buffered half, two of the largest requests.
const MIN_GATEWAY_MEMORY_BYTES: u64 = 4 * DEFAULT_MAX_BODY_BYTES;

/// Every problem with `brs`'s spec, each naming its field, or what it resolved.
pub fn validate(brs: &BackgroundRemovalService, defaults: &Defaults) -> Result<Valid, Vec<String>> {
    let spec = &brs.spec;
    let mut problems = Vec::new();

    if let Some(bytes) = brs.annotations().get(OVERSIZED_SPEC_ANNOTATION) {
        problems.push(format!(
            "the spec is {bytes} bytes, over the {MAX_CACHED_SPEC_BYTES} the operator reads of one: \
             spec.gpu.affinity, tolerations and nodeSelector, and spec.imagePullSecrets, were not read"
        ));
    }

    let image = spec.image.clone().unwrap_or_else(|| defaults.inference_image.clone());
    if image.trim().is_empty() {
        problems.push("spec.image is not set and the operator has no default inference image".to_owned());
    }

    let resource = &spec.gpu.resource_name;
    if !is_extended_resource_name(resource) {
        problems.push(format!(
            "spec.gpu.resourceName {resource:?} is not an extended resource name such as nvidia.com/gpu \
             (a lower-case domain outside kubernetes.io, '/', and a name of letters, digits, '-', '_' and '.')"
        ));
    }
    for (field, request) in [
        ("spec.gpu.cpu", &spec.gpu.cpu),
        ("spec.gpu.memory", &spec.gpu.memory),
        ("spec.gateway.cpu", &spec.gateway.cpu),
    ] {
        if let Some(request) = request
            && !quantity::value(&request.0).is_some_and(|value| value > 0.0)
        {
            problems.push(format!("{field} {:?} is not a quantity above 0 such as 500m, 2 or 4Gi", request.0));
        }
    }

    if let Some(std) = &spec.model.std
        && std.iter().any(|value| !value.is_finite() || *value == 0.0)
    {
        problems.push(format!("spec.model.std {std:?} must be finite and non-zero (it divides every pixel)"));
    }
    if let Some(path) = &spec.model.path
        && !path.starts_with('/')
    {
        problems.push(format!("spec.model.path {path:?} must be an absolute path inside the image"));
    }
    let size_limit = spec.model.download.as_ref().and_then(|download| download.size_limit.as_ref());
    let model_max_bytes = match size_limit.map(|limit| (limit, quantity::bytes(&limit.0))) {
        None => DEFAULT_MODEL_MAX_BYTES,
        Some((_, Some(limit))) if limit > 0 => limit,
        Some((quantity, _)) => {
            problems.push(format!("spec.model.download.sizeLimit {:?} is not a size in bytes such as 2Gi", quantity.0));
            DEFAULT_MODEL_MAX_BYTES
        }
    };
    if let Some(volume) = &spec.model.persistent_volume_claim
        && (volume.path.starts_with('/') || volume.path.split('/').any(|part| part == ".."))
    {
        problems.push(format!(
            "spec.model.persistentVolumeClaim.path {:?} must be relative to the volume, without '..'",
            volume.path
        ));
    }

    problems.extend(pod_fields::problems(spec));

    let autoscaling = &spec.autoscaling;
    if autoscaling.min_replicas > autoscaling.max_replicas {
        problems.push(format!(
            "spec.autoscaling.minReplicas ({}) exceeds spec.autoscaling.maxReplicas ({})",
            autoscaling.min_replicas, autoscaling.max_replicas
        ));
    }
    // The operator queries the Prometheus a resource names, with its selector spliced
    // into every query, only while it autoscales.
    let metrics = autoscaling.metrics.as_ref().filter(|_| autoscaling.enabled);
    if let Some(metrics) = metrics
        && !is_allowed(&metrics.prometheus_url, &defaults.allowed_prometheus_urls)
    {
        problems.push(format!(
            "spec.autoscaling.metrics.prometheusUrl {:?} is not a Prometheus this operator may query \
             (its --prometheus-url or one of its --allowed-prometheus-urls)",
            metrics.prometheus_url
        ));
    }
    if let Some(selector) = metrics.and_then(|metrics| metrics.selector.as_deref()) {
        match label_matchers(selector) {
            Err(problem) => problems.push(format!(
                "spec.autoscaling.metrics.selector {selector:?} is not a list of label matchers such as \
                 namespace=\"shop\",job=\"cutouts\": {problem}"
            )),
            Ok(matchers) => {
                if let Some(label) = &defaults.metrics_namespace_label {
                    let namespace = brs.metadata.namespace.as_deref().unwrap_or_default();
                    if let Some(other) = matchers.iter().find(|m| m.name == label && !m.is_exactly(namespace)) {
                        problems.push(format!(
                            "spec.autoscaling.metrics.selector matches {}{}{}: a resource reads only its own \
                             namespace's series ({label}=\"{namespace}\", which the operator adds)",
                            other.name, other.operator, other.value
                        ));
                    }
                }
            }
        }
    }
    // The schema has the same range; a resource stored under an older CRD may not.
    let utilization_percent = i32::from(PLANNED_UTILIZATION_PERCENT_MIN)..=i32::from(PLANNED_UTILIZATION_PERCENT_MAX);
    if let Some(percent) = autoscaling.planned_utilization_percent
        && !utilization_percent.contains(&percent)
    {
        problems.push(format!(
            "spec.autoscaling.plannedUtilizationPercent ({percent}) must be from {PLANNED_UTILIZATION_PERCENT_MIN} to {PLANNED_UTILIZATION_PERCENT_MAX}"
        ));
    }

    let gateway = spec.gateway.enabled.then(|| {
        let image = spec.gateway.image.clone().unwrap_or_else(|| defaults.gateway_image.clone());
        if image.trim().is_empty() {
            problems.push("spec.gateway.image is not set and the operator has no default gateway image".to_owned());
        }
        let memory_bytes = match &spec.gateway.memory {
            None => DEFAULT_MEMORY_BYTES,
            Some(memory) => match quantity::bytes(&memory.0) {
                Some(bytes) if bytes >= MIN_GATEWAY_MEMORY_BYTES => bytes,
                Some(_) => {
                    problems.push(format!(
                        "spec.gateway.memory {:?} is too small: a gateway pod needs at least {} MiB",
                        memory.0,
                        MIN_GATEWAY_MEMORY_BYTES >> 20
                    ));
                    0
                }
                None => {
                    problems.push(format!("spec.gateway.memory {:?} is not a quantity of bytes such as 1Gi", memory.0));
                    0
                }
            },
        };
        let replicas = spec.gateway.replicas.max(1);
        let upstream_capacity = spec.queue.capacity / replicas;
        if upstream_capacity < 1 {
            problems.push(format!(
                "spec.gateway.replicas ({replicas}) exceeds spec.queue.capacity ({}): the gateway's replicas \
                 share each pod's places, and each needs one at least",
                spec.queue.capacity
            ));
        }
        ValidGateway { image, memory_bytes, upstream_capacity }
    });
    let gateway_replicas = spec.gateway.enabled.then_some(spec.gateway.replicas.max(1));
    let advice = batching_advice(spec.queue.capacity, gateway_replicas, spec.batching.max_batch_size);

    if problems.is_empty() {
        let pod_monitor_labels = defaults.pod_monitor_labels.clone();
        Ok(Valid { image, gateway, advice: advice.into_iter().collect(), model_max_bytes, pod_monitor_labels })
    } else {
        Err(problems)
    }
}

/// Advice when a pod's places, or with a gateway each replica's share of them, hold
/// fewer than two batches of `max_batch_size` (a share of none is a problem, reported
/// apart). A pod then has no batch queued when one ends: its GPU waits for the answers
/// to go out and the next requests to come in, every batch. Behind the gateway this is
/// the pod whose requests come through one replica, as those of a few kept-alive
/// clients do; without it, every pod, whose clients stay away after its 429.
fn batching_advice(capacity: i32, gateway_replicas: Option<i32>, max_batch_size: i32) -> Option<String> {
    let two_batches = max_batch_size.saturating_mul(2);
    match gateway_replicas {
        Some(replicas) => {
            let share = capacity / replicas;
            (share >= 1 && share < two_batches).then(|| {
                format!(
                    "spec.queue.capacity ({capacity}) shared among spec.gateway.replicas ({replicas}) leaves each \
                     replica {share} places on a pod, fewer than two batches of spec.batching.maxBatchSize \
                     ({max_batch_size}): a pod fed by one replica waits between batches for its next requests; \
                     a capacity of {} or fewer replicas keeps it fed",
                    two_batches.saturating_mul(replicas)
                )
            })
        }
        None => (capacity < two_batches).then(|| {
            format!(
                "spec.queue.capacity ({capacity}) holds fewer than two batches of spec.batching.maxBatchSize \
                 ({max_batch_size}): a pod cannot queue a batch while it runs one, and waits between batches \
                 for refused clients to come back; a capacity of {two_batches} keeps it fed"
            )
        }),
    }
}

/// Whether `url` is one of `allowed`, a trailing slash aside. Whole URLs only: a prefix
/// would let `http://prometheus.evil` through after `http://prometheus`.
fn is_allowed(url: &str, allowed: &[String]) -> bool {
    let url = url.trim_end_matches('/');
    allowed.iter().any(|allowed| allowed.trim_end_matches('/') == url)
}

/// One PromQL label matcher as written: `name`, `operator`, and `value` with its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Matcher<'a> {
    name: &'a str,
    operator: &'a str,
    value: &'a str,
}

impl Matcher<'_> {
    /// Whether it matches the one value `text` (a namespace: nothing in it to escape).
    fn is_exactly(&self, text: &str) -> bool {
        self.operator == "=" && &self.value[1..self.value.len() - 1] == text
    }
}

/// Reads `selector` as PromQL label matchers without braces (`name op "value"`,
/// comma-separated, `op` one of `=`, `!=`, `=~`, `!~`), as the queries splice it between
/// braces: anything else would be a broken query, or a different one.
fn label_matchers(selector: &str) -> Result<Vec<Matcher<'_>>, String> {
    let mut matchers = Vec::new();
    let mut rest = selector.trim_start();
    while !rest.is_empty() {
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("a label name is expected at {rest:?}"));
        }
        rest = rest[name_end..].trim_start();
        let operator = ["=~", "!~", "!=", "="].into_iter().find(|operator| rest.starts_with(operator));
        let Some(operator) = operator else {
            return Err(format!("=, !=, =~ or !~ is expected after {name:?}"));
        };
        rest = rest[operator.len()..].trim_start();
        let after = after_quoted(rest).ok_or_else(|| format!("a quoted value is expected after {name}{operator}"))?;
        matchers.push(Matcher { name, operator, value: &rest[..rest.len() - after.len()] });
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(format!("a comma is expected before {rest:?}")),
        }
    }
    Ok(matchers)
}

/// What follows the string literal `text` opens with (`"…"` or `'…'` with backslash
/// escapes, or a raw `` `…` ``); `None` if it opens with none or never closes.
fn after_quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote != '`' => escaped = true,
            c if c == quote => return Some(&text[at + 1..]),
            '\n' if quote != '`' => return None,
            _ => {}
        }
    }
    None
}

/// Whether `name` is an extended resource name, as the apiserver checks a container's
/// resources: a qualified name with a prefix, a domain outside `kubernetes.io`.
fn is_extended_resource_name(name: &str) -> bool {
    name.split_once('/').is_some_and(|(domain, _)| {
        domain.contains('.') && domain != "kubernetes.io" && !domain.ends_with(".kubernetes.io")
    }) && names::is_qualified_name(name)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{defaults, resource};
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn the_example_is_valid_and_takes_the_default_image() {
        let valid = validate(&resource("minimal.yaml"), &defaults()).expect("valid");
        assert_eq!(valid.image, defaults().inference_image);
        assert_eq!(valid.advice, Vec::<String>::new(), "the defaults need no advice");
    }

    #[test]
    fn a_spec_the_cache_held_without_its_placement_is_refused_naming_its_size() {
        let mut brs = resource("minimal.yaml");
        brs.annotations_mut().insert(OVERSIZED_SPEC_ANNOTATION.into(), "194623".into());
        let problems = validate(&brs, &defaults()).expect_err("refused");
        assert_eq!(
            problems,
            ["the spec is 194623 bytes, over the 65536 the operator reads of one: spec.gpu.affinity, tolerations \
              and nodeSelector, and spec.imagePullSecrets, were not read"]
        );
    }

    #[test]
    fn places_for_fewer_than_two_batches_are_advised_against_not_refused() {
        let mut brs = resource("minimal.yaml");
        (brs.spec.queue.capacity, brs.spec.gateway.replicas, brs.spec.batching.max_batch_size) = (24, 4, 4);
        let valid = validate(&brs, &defaults()).expect("valid: it builds and runs");
        assert_eq!(
            valid.advice,
            ["spec.queue.capacity (24) shared among spec.gateway.replicas (4) leaves each replica 6 places on a \
              pod, fewer than two batches of spec.batching.maxBatchSize (4): a pod fed by one replica waits \
              between batches for its next requests; a capacity of 32 or fewer replicas keeps it fed"]
        );
        // Two batches each, exactly: fed.
        brs.spec.queue.capacity = 32;
        assert!(validate(&brs, &defaults()).expect("valid").advice.is_empty());
        // Without a gateway the pod's queue is all its own: two batches of it.
        (brs.spec.queue.capacity, brs.spec.gateway.enabled) = (8, false);
        assert!(validate(&brs, &defaults()).expect("valid").advice.is_empty());
        brs.spec.queue.capacity = 6;
        assert_eq!(
            validate(&brs, &defaults()).expect("valid").advice,
            ["spec.queue.capacity (6) holds fewer than two batches of spec.batching.maxBatchSize (4): a pod \
              cannot queue a batch while it runs one, and waits between batches for refused clients to come \
              back; a capacity of 8 keeps it fed"]
        );
    }

    #[test]
    fn the_spec_image_wins_over_the_default() {
        let valid = validate(&resource("full.yaml"), &defaults()).expect("valid");
        assert_eq!(valid.image, "registry.example/matte-inference:custom");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut brs = resource("minimal.yaml");
        brs.spec.gpu.resource_name = "gpu".into();
        brs.spec.model.std = Some(vec![1.0, 0.0, 1.0]);
        brs.spec.autoscaling.min_replicas = 5;
        brs.spec.autoscaling.planned_utilization_percent = Some(101);
        let mut defaults = defaults();
        defaults.inference_image.clear();
        let problems = validate(&brs, &defaults).expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.split(' ').next().unwrap_or_default()).collect();
        assert_eq!(
            fields,
            [
                "spec.image",
                "spec.gpu.resourceName",
                "spec.model.std",
                "spec.autoscaling.minReplicas",
                "spec.autoscaling.plannedUtilizationPercent"
            ]
        );
    }

    #[test]
    fn a_prometheus_the_operator_was_not_allowed_to_query_is_refused_naming_the_field() {
        let mut brs = resource("full.yaml");
        let allowed = brs.spec.autoscaling.metrics.clone().expect("full.yaml names a Prometheus").prometheus_url;
        for (url, valid) in [
            (allowed.clone(), true),
            (format!("{allowed}/"), true),
            ("http://prometheus.monitoring".to_owned(), false),
            (format!("{allowed}.evil"), false),
            ("http://169.254.169.254/latest".to_owned(), false),
        ] {
            brs.spec.autoscaling.metrics.as_mut().expect("metrics").prometheus_url = url.clone();
            match validate(&brs, &defaults()) {
                Ok(_) => assert!(valid, "{url} taken"),
                Err(problems) => {
                    assert!(!valid, "{url} refused: {problems:?}");
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert!(problems[0].starts_with("spec.autoscaling.metrics.prometheusUrl"), "{problems:?}");
                    assert!(problems[0].contains(&url), "{problems:?}");
                }
            }
        }
        // Without autoscaling the operator asks no Prometheus at all.
        brs.spec.autoscaling.enabled = false;
        assert!(validate(&brs, &defaults()).is_ok());
    }

    #[test]
    fn a_selector_must_be_label_matchers_alone() {
        for selector in [
            "",
            r#"namespace="shop",job="cutouts""#,
            r#" namespace = "shop" , job=~"cut.*", pod!~'x\'y', env!=`a"b`, "#,
            r#"service="a\"b""#,
        ] {
            assert!(label_matchers(selector).is_ok(), "{selector}");
        }
        for selector in [
            r#"job="a"} or vector(1000) or up{job="b""#,
            r#"job="a" or vector(1)"#,
            r#"job="unterminated"#,
            r#"job=unquoted"#,
            r#"1job="a""#,
            r#"job="a" job="b""#,
            r#"job=="a""#,
            "job=\"a\nb\"",
        ] {
            assert!(label_matchers(selector).is_err(), "{selector} taken");
        }
        let mut brs = resource("full.yaml");
        brs.spec.autoscaling.metrics.as_mut().expect("metrics").selector = Some(r#"job="a"} or vector(1)"#.into());
        let problems = validate(&brs, &defaults()).expect_err("refused");
        assert!(problems[0].starts_with("spec.autoscaling.metrics.selector"), "{problems:?}");
    }

    #[test]
    fn a_selector_reads_only_its_own_namespace() {
        let matchers = label_matchers(r#"job="a", namespace = 'shop',x=~`y`"#).unwrap();
        assert_eq!(matchers[1], Matcher { name: "namespace", operator: "=", value: "'shop'" });
        assert_eq!(matchers[2].value, "`y`");
        let mut brs = resource("full.yaml");
        let namespace = brs.metadata.namespace.clone().unwrap();
        for (selector, own) in [
            (r#"job="catalogue""#.to_owned(), true),
            (format!(r#"namespace="{namespace}",job="catalogue""#), true),
            (format!("job=\"catalogue\", namespace=`{namespace}`"), true),
            (r#"namespace="billing",job="catalogue""#.to_owned(), false),
            (r#"namespace=~".+",job="catalogue""#.to_owned(), false),
            (format!(r#"namespace!="{namespace}""#), false),
        ] {
            brs.spec.autoscaling.metrics.as_mut().expect("metrics").selector = Some(selector.clone());
            match validate(&brs, &defaults()) {
                Ok(_) => assert!(own, "{selector} taken"),
                Err(problems) => {
                    assert!(!own, "{selector} refused: {problems:?}");
                    assert!(problems[0].contains("its own namespace's series"), "{problems:?}");
                }
            }
            // With no label to confine them by, every selector is its author's.
            let unconfined = Defaults { metrics_namespace_label: None, ..defaults() };
            assert!(validate(&brs, &unconfined).is_ok(), "{selector}");
        }
    }

    #[test]
    fn a_planned_utilization_is_refused_outside_its_range_and_accepted_at_its_ends() {
        for (percent, valid) in [(29, false), (30, true), (100, true), (101, false), (-75, false)] {
            let mut brs = resource("minimal.yaml");
            brs.spec.autoscaling.planned_utilization_percent = Some(percent);
            assert_eq!(validate(&brs, &defaults()).is_ok(), valid, "plannedUtilizationPercent {percent}");
        }
    }

    #[test]
    fn the_gateway_takes_the_default_image_and_a_memory_it_can_work_in() {
        let valid = validate(&resource("minimal.yaml"), &defaults()).expect("valid");
        let gateway = valid.gateway.expect("on by default");
        assert_eq!((gateway.image.as_str(), gateway.memory_bytes), (defaults().gateway_image.as_str(), 1 << 30));
        let mut brs = resource("minimal.yaml");
        brs.spec.gateway.enabled = false;
        assert_eq!(validate(&brs, &defaults()).expect("valid").gateway, None);

        for (memory, problem) in [("64Mi", "too small"), ("lots", "not a quantity"), ("1Qi", "not a quantity")] {
            let mut brs = resource("minimal.yaml");
            brs.spec.gateway.memory = Some(Quantity(memory.into()));
            let problems = validate(&brs, &defaults()).expect_err(memory);
            assert!(problems[0].starts_with("spec.gateway.memory") && problems[0].contains(problem), "{problems:?}");
        }
    }

    #[test]
    fn the_gateway_replicas_share_a_pods_places_and_each_needs_one() {
        for (capacity, replicas, share) in
            [(32, 2, Some(16)), (32, 3, Some(10)), (32, 1, Some(32)), (4, 4, Some(1)), (4, 8, None)]
        {
            let mut brs = resource("minimal.yaml");
            brs.spec.queue.capacity = capacity;
            brs.spec.gateway.replicas = replicas;
            match (validate(&brs, &defaults()), share) {
                (Ok(valid), Some(share)) => assert_eq!(valid.gateway.expect("on").upstream_capacity, share),
                (Err(problems), None) => assert!(
                    problems[0].starts_with("spec.gateway.replicas (8) exceeds spec.queue.capacity (4)"),
                    "{problems:?}"
                ),
                (outcome, _) => panic!("{capacity} places, {replicas} replicas: {outcome:?}"),
            }
        }
        // Without a gateway there is nothing to share.
        let mut brs = resource("minimal.yaml");
        (brs.spec.queue.capacity, brs.spec.gateway.replicas, brs.spec.gateway.enabled) = (4, 8, false);
        assert!(validate(&brs, &defaults()).is_ok());
    }

    #[test]
    fn quantities_and_resource_names_the_apiserver_would_refuse_are_refused_first() {
        let mut brs = resource("minimal.yaml");
        brs.spec.gpu.cpu = Some(Quantity("half".into()));
        brs.spec.gpu.memory = Some(Quantity("1e3Gi".into()));
        brs.spec.gateway.cpu = Some(Quantity("0".into()));
        brs.spec.gateway.memory = Some(Quantity("1e3Gi".into()));
        brs.spec.gpu.resource_name = "NVIDIA.com/gpu".into();
        let problems = validate(&brs, &defaults()).expect_err("every one refused");
        let fields: Vec<&str> = problems.iter().filter_map(|problem| problem.split(' ').next()).collect();
        assert_eq!(
            fields,
            ["spec.gpu.resourceName", "spec.gpu.cpu", "spec.gpu.memory", "spec.gateway.cpu", "spec.gateway.memory"],
            "{problems:?}"
        );
        brs.spec.gpu.cpu = Some(Quantity("1500m".into()));
        brs.spec.gpu.memory = Some(Quantity("8Gi".into()));
        brs.spec.gateway.cpu = Some(Quantity("0.5".into()));
        brs.spec.gateway.memory = Some(Quantity("1e9".into()));
        brs.spec.gpu.resource_name = "example.com/gpu-a100_80gb.shared".into();
        validate(&brs, &defaults()).expect("each is one the apiserver reads");
    }

    #[test]
    fn extended_resource_names_follow_the_apiservers_rules() {
        for valid in ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "nvidia.com/mig-1g.5gb"] {
            assert!(is_extended_resource_name(valid), "{valid}");
        }
        for invalid in [
            "gpu",
            "nvidia/gpu",
            "NVIDIA.com/gpu",
            "nvidia.com/",
            "nvidia.com/-gpu",
            "nvidia.com/gpu/x",
            "kubernetes.io/gpu",
            "gpu.kubernetes.io/x",
            "-nvidia.com/gpu",
            "nvidia..com/gpu",
        ] {
            assert!(!is_extended_resource_name(invalid), "{invalid}");
        }
    }

    #[test]
    fn model_paths_must_stay_where_they_belong() {
        let mut brs = resource("pvc-model.yaml");
        validate(&brs, &defaults()).expect("the fixture is valid");
        if let Some(volume) = brs.spec.model.persistent_volume_claim.as_mut() {
            volume.path = "../secrets/model.onnx".into();
        }
        let problems = validate(&brs, &defaults()).expect_err("escapes the volume");
        assert!(problems[0].starts_with("spec.model.persistentVolumeClaim.path"), "{problems:?}");

        let mut brs = resource("minimal.yaml");
        brs.spec.model.url = None;
        brs.spec.model.path = Some("models/isnet.onnx".into());
        let problems = validate(&brs, &defaults()).expect_err("relative");
        assert!(problems[0].starts_with("spec.model.path"), "{problems:?}");
    }
}
