//! The fields a spec passes on into its pods as they are, checked as the apiserver
//! checks them: the placement (`spec.gpu.nodeSelector`, `tolerations`,
//! `priorityClassName`) and the names of the Secret and ConfigMap a model download
//! reads. One the apiserver refuses has the whole Deployment's apply refused, its
//! replicas included, so that an edit with a typo froze the autoscaling of a running
//! service until someone read a failed apply; refused here, it is told by the field.

use k8s_openapi::api::core::v1::Toleration;

use crate::crd::BackgroundRemovalServiceSpec;
use crate::names;

/// Every problem with the fields of `spec` that reach its pods as they are, each
/// naming its field.
pub fn problems(spec: &BackgroundRemovalServiceSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in spec.gpu.node_selector.iter().flatten() {
        if !names::is_qualified_name(key) {
            problems.push(format!(
                "spec.gpu.nodeSelector key {key:?} is not a label key such as example.com/gpu-type \
                 (an optional DNS subdomain and '/', then up to 63 letters, digits, '-', '_' and '.')"
            ));
        }
        if !names::is_label_value(value) {
            problems.push(format!(
                "spec.gpu.nodeSelector[{key:?}] value {value:?} is not a label value \
                 (empty, or up to 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit)"
            ));
        }
    }
    for (index, toleration) in spec.gpu.tolerations.iter().flatten().enumerate() {
        if let Some(problem) = toleration_problem(toleration) {
            problems.push(format!("spec.gpu.tolerations[{index}]: {problem}"));
        }
    }
    // Empty is no class, as the apiserver reads it.
    if let Some(class) = spec.gpu.priority_class_name.as_deref().filter(|class| !class.is_empty())
        && !names::is_dns_subdomain(class)
    {
        problems.push(format!(
            "spec.gpu.priorityClassName {class:?} is not the name of a PriorityClass (a lower-case DNS subdomain)"
        ));
    }
    let download = spec.model.download.as_ref();
    let references = [
        ("spec.model.download.authorizationSecret", "Secret", download.and_then(|d| d.authorization_secret.as_ref())),
        ("spec.model.download.caConfigMap", "ConfigMap", download.and_then(|d| d.ca_config_map.as_ref())),
    ];
    for (field, kind, reference) in references {
        let Some(reference) = reference else { continue };
        if !names::is_dns_subdomain(&reference.name) {
            problems.push(format!(
                "{field}.name {:?} is not the name of a {kind} (a lower-case DNS subdomain)",
                reference.name
            ));
        }
        if !is_data_key(&reference.key) {
            problems.push(format!(
                "{field}.key {:?} is not a key a {kind} can hold (letters, digits, '-', '_' and '.', \
                 not '.' or '..' and not beginning with '..')",
                reference.key
            ));
        }
    }
    problems
}

/// A key of a Secret's or a ConfigMap's data.
fn is_data_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && key != "."
        && !key.starts_with("..")
}

/// What the apiserver would refuse in `toleration`, if anything.
fn toleration_problem(toleration: &Toleration) -> Option<String> {
    let key = toleration.key.as_deref().unwrap_or_default();
    let value = toleration.value.as_deref().unwrap_or_default();
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !key.is_empty() && !names::is_qualified_name(key) {
        return Some(format!("key {key:?} is not a label key such as nvidia.com/gpu"));
    }
    // An operator left empty is Equal, as the apiserver reads it.
    match toleration.operator.as_deref().filter(|operator| !operator.is_empty()).unwrap_or("Equal") {
        "Exists" if !value.is_empty() => {
            return Some(format!("value {value:?} must be empty when the operator is Exists"));
        }
        "Exists" => {}
        "Equal" if key.is_empty() => return Some("a toleration without a key must have the operator Exists".into()),
        "Equal" if !names::is_label_value(value) => return Some(format!("value {value:?} is not a label value")),
        "Equal" => {}
        other => return Some(format!("operator {other:?} is neither Exists nor Equal")),
    }
    if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Some(format!("effect {effect:?} is none of NoSchedule, PreferNoSchedule and NoExecute"));
    }
    if toleration.toleration_seconds.is_some() && effect != "NoExecute" {
        return Some("tolerationSeconds is only for the effect NoExecute".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackgroundRemovalServiceSpec {
        serde_yaml::from_str(yaml).expect("the fixture parses")
    }

    #[test]
    fn placement_the_apiserver_takes_passes() {
        let spec = spec(
            r#"
model: {url: "https://models.example/isnet.onnx", sha256: "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4",
        download: {authorizationSecret: {name: hf-token, key: token}, caConfigMap: {name: corp-ca-bundle-of-the-platform-team-for-every-model-server-we-run, key: ca.crt}}}
gpu:
  nodeSelector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB, pool: ""}
  tolerations:
  - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  - {key: dedicated, operator: Equal, value: inference, effect: NoExecute, tolerationSeconds: 300}
  - {operator: Exists}
  - {key: spot, value: "true"}
  - {key: spot, operator: "", value: "false"}
  priorityClassName: ""
"#,
        );
        assert_eq!(problems(&spec), Vec::<String>::new());
    }

    #[test]
    fn placement_and_references_the_apiserver_would_refuse_are_named_by_their_field() {
        let spec = spec(
            r#"
model: {url: "https://models.example/isnet.onnx", sha256: "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4",
        download: {authorizationSecret: {name: HF_Token, key: hf/token}, caConfigMap: {name: corp-ca, key: ".."}}}
gpu:
  nodeSelector: {"gpu type": a100, pool: "-spot"}
  tolerations:
  - {key: nvidia.com/gpu, operator: Exists, value: present}
  - {operator: Equal, value: x}
  - {key: a, operator: In}
  - {key: a, effect: NoExecution}
  - {key: a, effect: NoSchedule, tolerationSeconds: 60}
  priorityClassName: Gpu_Serving
"#,
        );
        let problems = problems(&spec);
        let expected = [
            "spec.gpu.nodeSelector key \"gpu type\"",
            "spec.gpu.nodeSelector[\"pool\"] value \"-spot\"",
            "spec.gpu.tolerations[0]: value \"present\" must be empty when the operator is Exists",
            "spec.gpu.tolerations[1]: a toleration without a key must have the operator Exists",
            "spec.gpu.tolerations[2]: operator \"In\"",
            "spec.gpu.tolerations[3]: effect \"NoExecution\"",
            "spec.gpu.tolerations[4]: tolerationSeconds is only for the effect NoExecute",
            "spec.gpu.priorityClassName \"Gpu_Serving\"",
            "spec.model.download.authorizationSecret.name \"HF_Token\" is not the name of a Secret",
            "spec.model.download.authorizationSecret.key \"hf/token\" is not a key a Secret can hold",
            "spec.model.download.caConfigMap.key \"..\" is not a key a ConfigMap can hold",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, start) in problems.iter().zip(expected) {
            assert!(problem.starts_with(start), "{problem:?} should start with {start:?}");
        }
    }
}
