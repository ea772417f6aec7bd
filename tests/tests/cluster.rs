//! The local control plane itself: what the operator's end-to-end tests rely on.

use matte_e2e::{Cluster, START_TIMEOUT, condition, repo_root, wait_for};
use serde_json::Value;

fn start(gpu_nodes: usize) -> Cluster {
    let cluster = Cluster::start(gpu_nodes).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("cluster with {gpu_nodes} GPU node(s) ready in {:.1?}", cluster.startup_time());
    cluster
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list has items")
}

fn is_true(object: &Value, kind: &str) -> bool {
    condition(object, kind).is_some_and(|c| c["status"] == "True")
}

const GPU_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gpu-hungry
spec:
  replicas: 3
  selector:
    matchLabels: {app: gpu-hungry}
  template:
    metadata:
      labels: {app: gpu-hungry}
    spec:
      containers:
      - name: inference
        image: registry.invalid/matte-inference:test
        resources:
          limits: {nvidia.com/gpu: 1}
"#;

/// Two fake GPU nodes hold two GPU pods; the third stays Pending for want of a GPU.
#[test]
fn gpu_nodes_take_one_gpu_pod_each() {
    let cluster = start(2);

    let nodes = cluster.kubectl_json(&["get", "nodes", "-o", "json"]);
    assert_eq!(items(&nodes).len(), 2, "{nodes:#}");
    for node in items(&nodes) {
        assert!(is_true(node, "Ready"), "node not Ready: {node:#}");
        assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "1", "{node:#}");
        assert_eq!(node["status"]["capacity"]["nvidia.com/gpu"], "1", "{node:#}");
    }

    cluster.apply_yaml_ok(GPU_DEPLOYMENT);
    let (running, pending) = wait_for("2 Running+Ready GPU pods and 1 unschedulable", START_TIMEOUT, || {
        let pods = cluster.kubectl_json(&["get", "pods", "-l", "app=gpu-hungry", "-o", "json"]);
        let running: Vec<Value> =
            items(&pods).iter().filter(|p| p["status"]["phase"] == "Running" && is_true(p, "Ready")).cloned().collect();
        let pending: Vec<Value> = items(&pods)
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Pending"
                    && condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False")
            })
            .cloned()
            .collect();
        if running.len() == 2 && pending.len() == 1 && items(&pods).len() == 3 {
            Ok((running, pending))
        } else {
            Err(format!("{} running, {} unschedulable of {} pods", running.len(), pending.len(), items(&pods).len()))
        }
    });

    // one per node, each with a (fake) pod IP
    let mut hosts: Vec<&str> = running.iter().map(|p| p["spec"]["nodeName"].as_str().unwrap_or("")).collect();
    hosts.sort();
    assert_eq!(hosts, ["matte-gpu-0", "matte-gpu-1"]);
    assert!(running.iter().all(|p| p["status"]["podIP"].is_string()), "{running:#?}");

    let scheduled = condition(&pending[0], "PodScheduled").expect("PodScheduled condition");
    assert_eq!(scheduled["reason"], "Unschedulable", "{scheduled:#}");
    let message = scheduled["message"].as_str().unwrap_or("");
    assert!(message.contains("nvidia.com/gpu"), "unexpected message: {message}");

    // The Deployment controller counts what kwok reports.
    wait_for("the Deployment to report 2 available replicas", START_TIMEOUT, || {
        let deployment = cluster.kubectl_json(&["get", "deployment", "gpu-hungry", "-o", "json"]);
        match deployment["status"]["availableReplicas"].as_i64() {
            Some(2) => Ok(()),
            other => Err(other),
        }
    });
}

/// crds/ applies, the CRD becomes Established, and its validation refuses bad specs naming
/// the field.
#[test]
fn crd_is_established_and_validates() {
    let cluster = start(0);
    let crds = repo_root().join("crds");
    cluster.kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    cluster.wait_crd_established("backgroundremovalservices.matte.dev");

    let fixtures = repo_root().join("tests/fixtures");
    let fixture = |name: &str| {
        std::fs::read_to_string(fixtures.join(name)).unwrap_or_else(|e| panic!("tests/fixtures/{name}: {e}"))
    };

    cluster.apply_yaml_ok(&fixture("brs-valid.yaml"));
    let brs = cluster.kubectl_json(&["get", "brs", "portraits", "-o", "json"]);
    assert_eq!(brs["spec"]["autoscaling"]["maxReplicas"], 4, "{brs:#}");

    for (file, field, words) in [
        ("brs-invalid-min-over-max.yaml", "spec.autoscaling", "minReplicas must not exceed"),
        ("brs-invalid-negative-size.yaml", "spec.maxDimension", "greater than or equal to 1"),
        ("brs-invalid-model-url.yaml", "spec.model", "must be an https:// URL"),
        ("brs-invalid-no-sha256.yaml", "spec.model", "model.sha256 is required with model.url"),
        ("brs-invalid-two-sources.yaml", "spec.model", "exactly one of url, persistentVolumeClaim or path"),
        ("brs-invalid-name-digit.yaml", "metadata.name", "must be a DNS-1035 label"),
        ("brs-invalid-name-dot.yaml", "metadata.name", "must be a DNS-1035 label"),
        ("brs-invalid-name-long.yaml", "metadata.name", "at most 55 characters"),
        ("brs-invalid-image.yaml", "spec.image", "must be an image reference"),
        ("brs-invalid-model-url-space.yaml", "spec.model", "no spaces"),
        ("brs-invalid-replicas.yaml", "spec.replicas", "less than or equal to 1000"),
        ("brs-invalid-max-replicas.yaml", "spec.autoscaling.maxReplicas", "less than or equal to 1000"),
        ("brs-invalid-scale-to-zero.yaml", "spec.autoscaling", "minReplicas 0 needs spec.gateway.enabled"),
        ("brs-invalid-utilization.yaml", "spec.autoscaling.plannedUtilizationPercent", "less than or equal to 100"),
        ("brs-invalid-request-timeout.yaml", "spec.queue.requestTimeoutSeconds", "less than or equal to 3600"),
        ("brs-invalid-scale-down-delay.yaml", "spec.autoscaling.scaleDownDelaySeconds", "less than or equal to 86400"),
    ] {
        let output = cluster.apply_yaml(&fixture(file));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file} was accepted");
        assert!(stderr.contains(field), "{file}: refusal does not name {field}: {stderr}");
        assert!(stderr.contains(words), "{file}: refusal does not say '{words}': {stderr}");
    }
    cluster.apply_yaml_ok(&fixture("brs-valid-scale-to-zero.yaml"));
    let names = cluster.kubectl_ok(&["get", "brs", "-o", "name"]);
    assert_eq!(
        names.trim(),
        "backgroundremovalservice.matte.dev/on-demand\nbackgroundremovalservice.matte.dev/portraits"
    );
}

/// Two clusters at once, on ports of their own, both healthy; each dies with its handle.
#[test]
fn two_clusters_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(1));
        let b = s.spawn(|| start(0));
        (a.join().expect("first cluster"), b.join().expect("second cluster"))
    });
    assert_ne!(a.server(), b.server());
    for cluster in [&a, &b] {
        assert_eq!(cluster.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    }
    // separate etcds: what one holds, the other does not
    a.kubectl_ok(&["create", "namespace", "only-in-a"]);
    assert!(!b.kubectl(&["get", "namespace", "only-in-a"]).status.success());
    assert_eq!(a.kubectl_ok(&["get", "nodes", "-o", "name"]).trim(), "node/matte-gpu-0");
    assert_eq!(b.kubectl_ok(&["get", "nodes", "-o", "name"]).trim(), "");

    let state = a.state_dir().to_path_buf();
    drop(a);
    assert!(!state.exists(), "{} is left after teardown", state.display());
    assert_eq!(b.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
}
