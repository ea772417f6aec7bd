//! The operator against a real control plane: installed by its Helm chart, running with
//! the chart's ServiceAccount and RBAC, reconciling BackgroundRemovalServices into GPU
//! pods that kube-scheduler places on kwok's fake GPU nodes.

use std::time::{Duration, Instant};

use matte_e2e::operator::{Operator, service_account_kubeconfig};
use matte_e2e::{Cluster, condition, repo_root, wait_for};
use serde_json::Value;

const NAMESPACE: &str = "matte-system";
const RELEASE: &str = "matte";
const LEASE: &str = "matte-leader";
const WAIT: Duration = Duration::from_secs(90);

fn cluster(gpu_nodes: usize) -> Cluster {
    Cluster::start(gpu_nodes).unwrap_or_else(|e| panic!("{e}"))
}

/// `helm install` of the chart with `values` (`--set …`), which also applies the CRD
/// from its `crds/`.
fn install_chart(cluster: &Cluster, values: &[&str]) {
    let chart = repo_root().join("charts/matte");
    let chart = chart.to_str().expect("a UTF-8 path");
    let install = ["install", RELEASE, chart, "--namespace", NAMESPACE, "--create-namespace"];
    cluster.helm_ok(&[&install[..], values].concat());
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/backgroundremovalservices.matte.dev",
    ]);
}

/// The operator as the chart runs it, plus `args`.
fn start_operator(cluster: &Cluster, identity: &str, args: &[&str]) -> Operator {
    let kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, RELEASE);
    let election = ["--leader-elect", "--lease-name", LEASE];
    Operator::start(&kubeconfig, identity, NAMESPACE, &[&election[..], args].concat())
}

/// Any digest: the model is never fetched here (kwok starts no container).
const SHA256: &str = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb";

fn resource(name: &str, replicas: i32, gpu_resource: &str) -> String {
    resource_in("shop", name, replicas, gpu_resource)
}

fn resource_in(namespace: &str, name: &str, replicas: i32, gpu_resource: &str) -> String {
    format!(
        "apiVersion: matte.dev/v1alpha1\nkind: BackgroundRemovalService\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  model:\n    url: https://models.example/isnet.onnx\n    sha256: {SHA256}\n  gpu:\n    resourceName: {gpu_resource}\n\
         \x20 autoscaling:\n    enabled: false\n  replicas: {replicas}\n"
    )
}

fn get(cluster: &Cluster, kind: &str, name: &str) -> Option<Value> {
    let output = cluster.kubectl(&["get", kind, name, "-n", "shop", "-o", "json"]);
    output.status.success().then(|| serde_json::from_slice(&output.stdout).ok()).flatten()
}

/// Status, reason and message of `brs`'s condition `type_`.
fn condition_of(brs: &Value, type_: &str) -> Option<(String, String, String)> {
    condition(brs, type_).map(|c| {
        let text = |key: &str| c[key].as_str().unwrap_or_default().to_owned();
        (text("status"), text("reason"), text("message"))
    })
}

/// Waits until `name`'s condition `type_` has `status`, returns the resource.
fn wait_condition(cluster: &Cluster, name: &str, type_: &str, status: &str) -> Value {
    wait_for(&format!("{name}: {type_}={status}"), WAIT, || {
        let brs = get(cluster, "brs", name);
        match brs.as_ref().and_then(|b| condition_of(b, type_)) {
            Some((s, _, _)) if s == status => Ok(brs.unwrap_or_default()),
            other => Err(other),
        }
    })
}

fn events(cluster: &Cluster, name: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "-n",
        "shop",
        "--field-selector",
        &format!("regarding.name={name}"),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,NOTE:.note",
    ])
}

/// Reconcile passes so far, of any result, from the operator's /metrics.
fn reconciliations(operator: &Operator) -> f64 {
    let (_, body) = operator.get("/metrics").expect("the operator's /metrics");
    body.lines()
        .filter(|line| line.starts_with("matte_operator_reconciliations_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `matte_operator_condition` for a resource in `shop` from the operator's /metrics:
/// `Some(1.0)` while True, `Some(0.0)` while not, `None` without such a series.
fn condition_metric(operator: &Operator, name: &str, condition: &str) -> Option<f64> {
    let (_, body) = operator.get("/metrics")?;
    let series = format!(
        r#"matte_operator_condition{{condition="{condition}",resource_name="{name}",resource_namespace="shop"}} "#
    );
    body.lines().find_map(|line| line.strip_prefix(&series)?.parse().ok())
}

/// Waits until the operator's /metrics reports `name`'s `condition` as `expected`.
fn wait_condition_metric(operator: &Operator, name: &str, condition: &str, expected: Option<f64>) {
    wait_for(&format!("{name}'s {condition} on /metrics to be {expected:?}"), WAIT, || {
        let reported = condition_metric(operator, name, condition);
        if reported == expected { Ok(()) } else { Err(reported) }
    });
}

/// Drift repair: deletes `name`'s Deployment and waits for a new one.
fn assert_deleted_deployment_comes_back(cluster: &Cluster, name: &str) {
    let old = get(cluster, "deployment", name).expect("the Deployment");
    cluster.kubectl_ok(&["delete", "deployment", name, "-n", "shop", "--wait=false"]);
    wait_for("the Deployment to be recreated", WAIT, || match get(cluster, "deployment", name) {
        Some(new) if new["metadata"]["uid"] != old["metadata"]["uid"] => Ok(()),
        other => Err(other.map(|o| o["metadata"]["uid"].clone())),
    });
}

#[test]
fn the_operator_reconciles_with_the_charts_rbac() {
    let cluster = cluster(2);
    let chart = repo_root().join("charts/matte");
    let chart = chart.to_str().expect("a UTF-8 path");
    cluster.helm_ok(&["lint", "--strict", chart]);
    install_chart(&cluster, &[]);
    for (kind, name) in [
        ("deployment", RELEASE),
        ("serviceaccount", RELEASE),
        ("role", "matte-leader-election"),
        ("rolebinding", "matte-leader-election"),
    ] {
        cluster.kubectl_ok(&["get", kind, name, "-n", NAMESPACE]);
    }
    cluster.kubectl_ok(&["get", "clusterrole", RELEASE]);
    cluster.kubectl_ok(&["get", "clusterrolebinding", RELEASE]);
    // Everything the chart renders is valid for this apiserver's schemas.
    let rendered = cluster.helm_ok(&["template", RELEASE, chart, "--namespace", NAMESPACE]);
    let dry_run = cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert!(dry_run.status.success(), "{}", String::from_utf8_lossy(&dry_run.stderr));

    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    let operator = start_operator(&cluster, "operator-a", &[]);

    // Created → Ready, with the objects owned by the resource.
    let created = Instant::now();
    cluster.apply_yaml_ok(&resource("portraits", 2, "nvidia.com/gpu"));
    let brs = wait_condition(&cluster, "portraits", "Ready", "True");
    eprintln!("portraits: created → Ready in {:.1} s", created.elapsed().as_secs_f64());
    assert_eq!((brs["status"]["replicas"].as_i64(), brs["status"]["readyReplicas"].as_i64()), (Some(2), Some(2)));
    let uid = brs["metadata"]["uid"].as_str().expect("a uid").to_owned();
    for kind in ["deployment", "service", "poddisruptionbudget"] {
        let object = get(&cluster, kind, "portraits").unwrap_or_else(|| panic!("no {kind} portraits"));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!((owner["uid"].as_str(), owner["controller"].as_bool()), (Some(uid.as_str()), Some(true)), "{kind}");
    }
    assert!(events(&cluster, "portraits").contains("Created"), "{}", events(&cluster, "portraits"));
    wait_condition_metric(&operator, "portraits", "Ready", Some(1.0));
    wait_condition_metric(&operator, "portraits", "Degraded", Some(0.0));

    // Once settled, its own status writes do not wake it up: no reconcile storm.
    std::thread::sleep(Duration::from_secs(3));
    let settled = reconciliations(&operator);
    std::thread::sleep(Duration::from_secs(10));
    let quiet = reconciliations(&operator) - settled;
    assert!(quiet <= 1.0, "{quiet} reconcile passes in 10 s with nothing changing");

    assert_deleted_deployment_comes_back(&cluster, "portraits");

    // A changed spec rolls the pods over, and an Event says so.
    let patch = r#"{"spec":{"maxDimension":1024}}"#;
    cluster.kubectl_ok(&["patch", "brs", "portraits", "-n", "shop", "--type=merge", "-p", patch]);
    wait_for("an Updated Event", WAIT, || {
        let listed = events(&cluster, "portraits");
        if listed.contains("Updated") { Ok(()) } else { Err(listed) }
    });
    let deployment = get(&cluster, "deployment", "portraits").expect("the Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("1024"), "the new maxDimension reaches the pods: {args}");

    // `kubectl scale` through the scale subresource; two GPU nodes for three pods.
    cluster.kubectl_ok(&["scale", "brs/portraits", "-n", "shop", "--replicas=3"]);
    wait_for("the Deployment to want 3 pods", WAIT, || {
        let replicas = get(&cluster, "deployment", "portraits").map(|d| d["spec"]["replicas"].clone());
        if replicas == Some(Value::from(3)) { Ok(()) } else { Err(replicas) }
    });
    let limited = wait_condition(&cluster, "portraits", "ScalingLimited", "True");
    let (_, reason, message) = condition_of(&limited, "ScalingLimited").expect("the condition");
    assert_eq!(reason, "InsufficientResources");
    assert!(message.contains("nvidia.com/gpu"), "the scheduler's reason is passed on: {message}");
    let ready = wait_for("2 of 3 pods ready", WAIT, || {
        let brs = get(&cluster, "brs", "portraits").unwrap_or_default();
        let counts = (brs["status"]["replicas"].as_i64(), brs["status"]["readyReplicas"].as_i64());
        if counts == (Some(3), Some(2)) { Ok(brs) } else { Err(counts) }
    });
    assert_eq!(condition_of(&ready, "Ready").map(|c| c.0), Some("False".into()));

    // An invalid spec is explained, and nothing is built for it.
    cluster.apply_yaml_ok(&resource("broken", 1, "gpu"));
    let broken = wait_condition(&cluster, "broken", "Degraded", "True");
    let (_, reason, message) = condition_of(&broken, "Degraded").expect("the condition");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.gpu.resourceName"), "{message}");
    assert!(get(&cluster, "deployment", "broken").is_none());
    wait_for("a Warning Event for the invalid spec", WAIT, || {
        let listed = events(&cluster, "broken");
        if listed.contains("Warning") && listed.contains("InvalidSpec") { Ok(()) } else { Err(listed) }
    });
    wait_condition_metric(&operator, "broken", "Degraded", Some(1.0));

    // Deleting the resource garbage-collects what the operator made.
    cluster.kubectl_ok(&["delete", "brs", "portraits", "-n", "shop"]);
    wait_for("the owned objects to be collected", WAIT, || {
        let left: Vec<_> = ["deployment", "service", "poddisruptionbudget"]
            .into_iter()
            .filter(|kind| get(&cluster, kind, "portraits").is_some())
            .collect();
        if left.is_empty() { Ok(()) } else { Err(left) }
    });
    wait_condition_metric(&operator, "portraits", "Ready", None);

    let metrics = operator.get("/metrics").map(|(_, body)| body).unwrap_or_default();
    assert!(metrics.contains("matte_operator_reconciliations_total{result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("matte_operator_reconciliations_total{result=\"invalid_spec\"}"), "{metrics}");
    assert_eq!(operator.get("/readyz").map(|(code, _)| code), Some(200));

    cluster.helm_ok(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "60s"]);
    for kind in ["deployment", "serviceaccount"] {
        let output = cluster.kubectl(&["get", kind, RELEASE, "-n", NAMESPACE]);
        assert!(!output.status.success(), "{kind} {RELEASE} is still there after helm uninstall");
    }
}

#[test]
fn two_operators_never_both_act_and_the_standby_takes_over() {
    let cluster = cluster(1);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);

    let mut first = start_operator(&cluster, "operator-a", &[]);
    wait_for(
        "operator-a to lead",
        WAIT,
        || if first.is_leader() == Some(true) { Ok(()) } else { Err(first.is_leader()) },
    );
    let second = start_operator(&cluster, "operator-b", &[]);
    wait_for("operator-b to answer", WAIT, || second.is_leader().ok_or("no answer"));

    cluster.apply_yaml_ok(&resource("one", 1, "nvidia.com/gpu"));
    wait_condition(&cluster, "one", "Ready", "True");
    let holder = cluster.kubectl_ok(&["get", "lease", LEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(holder, "operator-a");
    assert_eq!(second.is_leader(), Some(false), "a standby must not act");
    assert!(!second.log().contains("reason=Created"), "the standby acted:\n{}", second.log());

    // SIGTERM: the leader stops, hands the Lease back, and the standby acts at once.
    let handed_over = Instant::now();
    assert_eq!(first.terminate(Duration::from_secs(30)), Some(0), "a clean exit on SIGTERM:\n{}", first.log());
    wait_for("operator-b to lead", WAIT, || {
        if second.is_leader() == Some(true) { Ok(()) } else { Err(second.is_leader()) }
    });
    eprintln!("leadership handed over in {:.1} s", handed_over.elapsed().as_secs_f64());
    cluster.apply_yaml_ok(&resource("two", 1, "nvidia.com/gpu"));
    wait_for("the new leader to build the Deployment", WAIT, || get(&cluster, "deployment", "two").ok_or("none yet"));
    let holder = cluster.kubectl_ok(&["get", "lease", LEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(holder, "operator-b");
}

#[test]
fn the_operator_carries_on_after_an_apiserver_restart() {
    let mut cluster = cluster(2);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    let mut operator = start_operator(&cluster, "operator-a", &[]);
    cluster.apply_yaml_ok(&resource("before", 1, "nvidia.com/gpu"));
    wait_condition(&cluster, "before", "Ready", "True");

    let restart = cluster.restart_apiserver().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("apiserver stopped and ready again in {:.1} s", restart.as_secs_f64());
    assert!(!operator.has_exited(), "the operator exited during the restart:\n{}", operator.log());

    // Its watches are back: a new resource is built, drift is repaired, it still leads.
    let created = Instant::now();
    cluster.apply_yaml_ok(&resource("after", 1, "nvidia.com/gpu"));
    wait_condition(&cluster, "after", "Ready", "True");
    eprintln!("after the restart: created → Ready in {:.1} s", created.elapsed().as_secs_f64());
    assert_deleted_deployment_comes_back(&cluster, "before");
    wait_for("operator-a to lead again", WAIT, || {
        if operator.is_leader() == Some(true) { Ok(()) } else { Err(operator.is_leader()) }
    });
    assert_eq!(operator.get("/healthz").map(|(code, _)| code), Some(200));
}

#[test]
fn with_watch_namespace_the_namespaced_rbac_is_enough() {
    let cluster = cluster(1);
    for namespace in ["shop", "elsewhere"] {
        cluster.kubectl_ok(&["create", "namespace", namespace]);
    }
    install_chart(&cluster, &["--set", "watchNamespace=shop"]);
    let cluster_role = cluster.kubectl(&["get", "clusterrole", RELEASE]);
    assert!(!cluster_role.status.success(), "one namespace needs no ClusterRole");
    cluster.kubectl_ok(&["get", "role", RELEASE, "-n", "shop"]);
    let _operator = start_operator(&cluster, "operator-a", &["--watch-namespace", "shop"]);

    cluster.apply_yaml_ok(&resource_in("elsewhere", "ignored", 1, "nvidia.com/gpu"));
    cluster.apply_yaml_ok(&resource("served", 1, "nvidia.com/gpu"));
    wait_condition(&cluster, "served", "Ready", "True");
    // "ignored" was created first: by the time "served" is Ready, an operator watching
    // more than its namespace would have acted on it too.
    let ignored = cluster.kubectl_json(&["get", "brs", "ignored", "-n", "elsewhere", "-o", "json"]);
    assert!(ignored.get("status").is_none(), "a resource outside the namespace got a status: {ignored}");
    let deployments = cluster.kubectl_ok(&["get", "deployments", "-n", "elsewhere", "-o", "name"]);
    assert_eq!(deployments.trim(), "", "nothing is built outside the watched namespace");
}
