//! What the schema and its CEL rules cannot check, checked before anything is built: an
//! invalid spec becomes a `Degraded` condition and a Warning Event, not a retry loop.

use crate::crd::BackgroundRemovalService;

use super::Defaults;

/// A spec that passed, with what validation resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    /// The inference image: the spec's, or the operator's default.
    pub image: String,
}

/// Every problem with `brs`'s spec, each naming its field, or what it resolved.
pub fn validate(brs: &BackgroundRemovalService, defaults: &Defaults) -> Result<Valid, Vec<String>> {
    let spec = &brs.spec;
    let mut problems = Vec::new();

    let image = spec.image.clone().unwrap_or_else(|| defaults.inference_image.clone());
    if image.trim().is_empty() {
        problems.push("spec.image is not set and the operator has no default inference image".to_owned());
    }

    let resource = &spec.gpu.resource_name;
    match resource.split_once('/') {
        Some((domain, name)) if domain.contains('.') && !name.is_empty() && !domain.ends_with("kubernetes.io") => {}
        _ => problems.push(format!(
            "spec.gpu.resourceName {resource:?} is not an extended resource name such as nvidia.com/gpu"
        )),
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
    if let Some(volume) = &spec.model.persistent_volume_claim
        && (volume.path.starts_with('/') || volume.path.split('/').any(|part| part == ".."))
    {
        problems.push(format!(
            "spec.model.persistentVolumeClaim.path {:?} must be relative to the volume, without '..'",
            volume.path
        ));
    }

    let autoscaling = &spec.autoscaling;
    if autoscaling.min_replicas > autoscaling.max_replicas {
        problems.push(format!(
            "spec.autoscaling.minReplicas ({}) exceeds spec.autoscaling.maxReplicas ({})",
            autoscaling.min_replicas, autoscaling.max_replicas
        ));
    }

    if problems.is_empty() { Ok(Valid { image }) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{defaults, resource};
    use super::*;

    #[test]
    fn the_example_is_valid_and_takes_the_default_image() {
        let valid = validate(&resource("minimal.yaml"), &defaults()).expect("valid");
        assert_eq!(valid.image, defaults().inference_image);
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
        let mut defaults = defaults();
        defaults.inference_image.clear();
        let problems = validate(&brs, &defaults).expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.split(' ').next().unwrap_or_default()).collect();
        assert_eq!(fields, ["spec.image", "spec.gpu.resourceName", "spec.model.std", "spec.autoscaling.minReplicas"]);
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
