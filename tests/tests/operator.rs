//! The operator against a real control plane: installed by its Helm chart, running with
//! the chart's ServiceAccount and RBAC, reconciling BackgroundRemovalServices into GPU
//! pods that kube-scheduler places on kwok's fake GPU nodes.

use std::time::{Duration, Instant};

use matte_e2e::operator::{Operator, http_get, service_account_kubeconfig, workspace_binary};
use matte_e2e::ports::free_port;
use matte_e2e::setup_cache::{sample_image, setup_path};
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
    cluster.wait_crd_established("backgroundremovalservices.matte.dev");
}

/// The operator as the chart runs it, plus `args`.
fn start_operator(cluster: &Cluster, identity: &str, args: &[&str]) -> Operator {
    let kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, RELEASE);
    let election = ["--leader-elect", "--lease-name", LEASE];
    Operator::start(&kubeconfig, identity, NAMESPACE, &[&election[..], args].concat())
}

/// The kinds of object made for a resource under its own name, which go with it.
const OWNED: [&str; 4] = ["deployment", "service", "poddisruptionbudget", "podmonitor"];

/// The Prometheus Operator's own PodMonitor CRD (`scripts/setup.sh --with-cluster` fetches
/// it), so that the PodMonitors the operator makes are held to the real schema, with
/// unknown fields refused rather than pruned.
fn install_pod_monitor_crd(cluster: &Cluster) {
    let crd = matte_e2e::bin_dir().with_file_name("crds").join("monitoring.coreos.com_podmonitors.yaml");
    assert!(crd.is_file(), "{} is missing: run scripts/setup.sh --with-cluster", crd.display());
    cluster.kubectl_ok(&["apply", "--server-side", "-f", crd.to_str().expect("a UTF-8 path")]);
    cluster.wait_crd_established("podmonitors.monitoring.coreos.com");
    // The operator's golden PodMonitor passes strict validation; a misspelt field does not,
    // so the check below would catch one.
    let golden = repo_root().join("operator/tests/fixtures/minimal.podmonitor.yaml");
    let golden = std::fs::read_to_string(&golden).expect("the golden PodMonitor (namespace shop)");
    let strict = ["apply", "--dry-run=server", "--validate=strict", "-f", "-"];
    let accepted = cluster.kubectl_with_input(&strict, &golden);
    assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
    let misspelt = cluster.kubectl_with_input(&strict, &golden.replace("relabelings:", "relabellings:"));
    assert!(!misspelt.status.success(), "a PodMonitor with an unknown field was accepted");
}

/// `name`'s PodMonitor scrapes the inference pods and the gateway's, each at its interval
/// (`intervals`: the inference pods', the gateway's), told apart by their app label, and
/// carries the label the operator was given for a Prometheus that picks PodMonitors so.
fn assert_pod_monitor_scrapes_each_kind_of_pod(cluster: &Cluster, name: &str, intervals: (&str, &str)) {
    let monitor = get(cluster, "podmonitor", name).unwrap_or_else(|| panic!("no PodMonitor {name}"));
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().cloned().unwrap_or_default();
    let interval_of = |app: &str| {
        let kept = endpoints.iter().find(|endpoint| endpoint["relabelings"][0]["regex"] == app);
        kept.and_then(|endpoint| endpoint["interval"].as_str().map(str::to_owned))
    };
    assert_eq!(
        (interval_of("matte-inference").as_deref(), interval_of("matte-gateway").as_deref()),
        (Some(intervals.0), Some(intervals.1)),
        "{monitor}"
    );
    assert_eq!(monitor["spec"]["selector"]["matchLabels"]["matte.dev/service"], name, "{monitor}");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack", "{monitor}");
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
    get_in(cluster, kind, name, "shop")
}

fn get_in(cluster: &Cluster, kind: &str, name: &str, namespace: &str) -> Option<Value> {
    let output = cluster.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
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

/// `name`'s gateway objects, as the operator makes them by default: the Deployment
/// (two pods, ready on kwok), its budget and its least-privilege account, all owned by the
/// resource; the Service `name` selecting the gateway and the headless `name-pods` the
/// inference pods.
fn assert_gateway_in_front(cluster: &Cluster, name: &str, uid: &str) {
    let gateway = format!("{name}-gateway");
    for kind in ["deployment", "poddisruptionbudget", "serviceaccount", "role", "rolebinding"] {
        let object = get(cluster, kind, &gateway).unwrap_or_else(|| panic!("no {kind} {gateway}"));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!((owner["uid"].as_str(), owner["controller"].as_bool()), (Some(uid), Some(true)), "{kind}");
    }
    let pods = get(cluster, "service", &format!("{name}-pods")).expect("the pods' Service");
    assert_eq!(pods["spec"]["clusterIP"], "None", "{pods:#}");
    assert_eq!(pods["spec"]["selector"]["app.kubernetes.io/name"], "matte-inference", "{pods:#}");
    let brs = wait_for("the gateway's pods to be ready", WAIT, || {
        let brs = get(cluster, "brs", name).unwrap_or_default();
        match brs["status"]["gatewayReadyReplicas"].as_i64() {
            Some(2) => Ok(brs),
            other => Err(other),
        }
    });
    assert_service_selects(cluster, name, "matte-gateway");
    let conditions = brs["status"]["conditions"].to_string();
    assert!(!conditions.contains("GatewayNotReady"), "{conditions}");
    // The gateway's own identity may read the pods' EndpointSlices, and nothing else.
    let subject = format!("system:serviceaccount:shop:{gateway}");
    for (verb, resource, allowed) in
        [("watch", "endpointslices.discovery.k8s.io", "yes"), ("list", "pods", "no"), ("get", "secrets", "no")]
    {
        let answer = cluster.kubectl(&["auth", "can-i", verb, resource, "-n", "shop", "--as", &subject]);
        let answer = String::from_utf8_lossy(&answer.stdout).trim().to_owned();
        assert_eq!(answer, allowed, "{gateway} can {verb} {resource}");
    }
}

/// With `spec.gateway.enabled: false` the gateway's objects go and clients reach the
/// pods; turned on again, it comes back.
fn assert_gateway_turns_off_and_on(cluster: &Cluster, name: &str) {
    let gateway = format!("{name}-gateway");
    let set = |enabled: bool| {
        let patch = format!(r#"{{"spec":{{"gateway":{{"enabled":{enabled}}}}}}}"#);
        cluster.kubectl_ok(&["patch", "brs", name, "-n", "shop", "--type=merge", "-p", &patch]);
    };
    set(false);
    wait_for("the gateway's objects to go", WAIT, || {
        let left: Vec<_> = ["deployment", "poddisruptionbudget", "serviceaccount", "role", "rolebinding"]
            .into_iter()
            .filter(|kind| get(cluster, kind, &gateway).is_some())
            .collect();
        if left.is_empty() { Ok(()) } else { Err(left) }
    });
    assert_service_selects(cluster, name, "matte-inference");
    set(true);
    wait_for("the gateway to come back", WAIT, || match get(cluster, "deployment", &gateway) {
        Some(_) => Ok(()),
        None => Err("no gateway Deployment"),
    });
    assert_service_selects(cluster, name, "matte-gateway");
}

/// The Service `name` comes to select the pods of `program` (the app label), within a
/// few passes: clients move to the gateway once one of its pods is ready.
fn assert_service_selects(cluster: &Cluster, name: &str, program: &str) {
    wait_for(&format!("the Service to select {program}"), WAIT, || {
        let service = get(cluster, "service", name).unwrap_or_default();
        match service["spec"]["selector"]["app.kubernetes.io/name"].as_str() {
            Some(selected) if selected == program => Ok(()),
            other => Err(other.map(str::to_owned)),
        }
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
    // A drain evicts the operator's replicas one at a time: the budget covers exactly
    // the Deployment's pods.
    let budget = get_in(&cluster, "poddisruptionbudget", RELEASE, NAMESPACE).expect("the operator's budget");
    let deployment = get_in(&cluster, "deployment", RELEASE, NAMESPACE).expect("the operator's Deployment");
    assert_eq!(budget["spec"]["maxUnavailable"], 1, "{budget}");
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"], "{budget}");
    // Everything the chart renders is valid for this apiserver's schemas.
    let rendered = cluster.helm_ok(&["template", RELEASE, chart, "--namespace", NAMESPACE]);
    let dry_run = cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert!(dry_run.status.success(), "{}", String::from_utf8_lossy(&dry_run.stderr));

    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    install_pod_monitor_crd(&cluster);
    let operator = start_operator(
        &cluster,
        "operator-a",
        &["--gateway-scrape-interval-seconds", "2", "--pod-monitor-labels", "release=kube-prometheus-stack"],
    );

    // Created → Ready, with the objects owned by the resource (a PodMonitor too, its CRD
    // being served).
    let created = Instant::now();
    cluster.apply_yaml_ok(&resource("portraits", 2, "nvidia.com/gpu"));
    let brs = wait_condition(&cluster, "portraits", "Ready", "True");
    eprintln!("portraits: created → Ready in {:.1} s", created.elapsed().as_secs_f64());
    assert_eq!((brs["status"]["replicas"].as_i64(), brs["status"]["readyReplicas"].as_i64()), (Some(2), Some(2)));
    let uid = brs["metadata"]["uid"].as_str().expect("a uid").to_owned();
    for kind in OWNED {
        let object = get(&cluster, kind, "portraits").unwrap_or_else(|| panic!("no {kind} portraits"));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!((owner["uid"].as_str(), owner["controller"].as_bool()), (Some(uid.as_str()), Some(true)), "{kind}");
    }
    assert_pod_monitor_scrapes_each_kind_of_pod(&cluster, "portraits", ("5s", "2s"));
    assert!(events(&cluster, "portraits").contains("Created"), "{}", events(&cluster, "portraits"));
    assert_gateway_in_front(&cluster, "portraits", &uid);
    wait_condition_metric(&operator, "portraits", "Ready", Some(1.0));
    wait_condition_metric(&operator, "portraits", "Degraded", Some(0.0));

    // Once settled, its own status writes do not wake it up: no reconcile storm. Settled
    // is five seconds without a pass: the objects it owns can still be changing for a
    // while on a slow control plane (Deployment conditions, the PDB's status).
    let settled_by = Instant::now() + WAIT;
    let mut settled = reconciliations(&operator);
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let passes = reconciliations(&operator);
        if passes == settled {
            break;
        }
        assert!(Instant::now() < settled_by, "reconcile passes never stopped: {passes} so far");
        settled = passes;
    }
    std::thread::sleep(Duration::from_secs(10));
    let quiet = reconciliations(&operator) - settled;
    assert!(quiet <= 1.0, "{quiet} reconcile passes in 10 s with nothing changing");

    assert_deleted_deployment_comes_back(&cluster, "portraits");
    assert_gateway_turns_off_and_on(&cluster, "portraits");

    // A changed spec rolls the pods over, and an Event says so; a spec that works against
    // itself (each of the two gateway replicas with 3 of a pod's 6 places, less than two
    // batches of 4) is built, with a Warning that says what to change.
    let patch = r#"{"spec":{"maxDimension":1024,"queue":{"capacity":6},"batching":{"maxBatchSize":4}}}"#;
    cluster.kubectl_ok(&["patch", "brs", "portraits", "-n", "shop", "--type=merge", "-p", patch]);
    wait_for("an Updated Event and the advice", WAIT, || {
        let listed = events(&cluster, "portraits");
        let advised = listed.contains("SpecAdvice") && listed.contains("a capacity of 16 or fewer replicas");
        if listed.contains("Updated") && advised { Ok(()) } else { Err(listed) }
    });
    wait_for("the advice in the status", WAIT, || {
        let advice = get(&cluster, "brs", "portraits").map(|brs| brs["status"]["advice"].to_string());
        if advice.as_ref().is_some_and(|advice| advice.contains("a capacity of 16 or fewer replicas")) {
            Ok(())
        } else {
            Err(advice)
        }
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

    // A spec the schema and the apiserver take but the operator will not cache whole (an
    // affinity of 64 terms of 64 values) is refused by its size, and nothing is built.
    let values: Vec<String> = (0..64).map(|i| format!("{i:040}")).collect();
    let term = serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": values}]});
    let mut sprawling: Value = serde_yaml::from_str(&resource("sprawling", 1, "nvidia.com/gpu")).expect("YAML");
    sprawling["spec"]["gpu"]["affinity"] = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": vec![term; 64]}}});
    cluster.apply_yaml_ok(&sprawling.to_string());
    let sprawling = wait_condition(&cluster, "sprawling", "Degraded", "True");
    let (_, reason, message) = condition_of(&sprawling, "Degraded").expect("the condition");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("bytes, over the 65536 the operator reads of one"), "{message}");
    assert!(get(&cluster, "deployment", "sprawling").is_none());

    // Deleting the resource garbage-collects what the operator made.
    cluster.kubectl_ok(&["delete", "brs", "portraits", "-n", "shop"]);
    wait_for("the owned objects to be collected", WAIT, || {
        let left: Vec<_> = OWNED.into_iter().filter(|kind| get(&cluster, kind, "portraits").is_some()).collect();
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

/// A `matte-gateway` process, killed on drop.
struct GatewayProcess {
    child: std::process::Child,
    address: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// `matte_gateway_endpoints{state}` from its /metrics.
    fn endpoints(&self, state: &str) -> Option<f64> {
        let (_, body) = http_get(&self.address, "/metrics")?;
        let series = format!(r#"matte_gateway_endpoints{{state="{state}"}} "#);
        body.lines().find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
    }
}

/// The gateway as the operator's Deployment runs it (its flags, its ServiceAccount's
/// token and Role), here as a process: its endpoints follow the pods the operator
/// scales. kwok's pod addresses are fake, so nothing is sent to them: the gateway's
/// metrics tell what it discovered.
#[test]
fn the_gateway_follows_the_operators_pods_with_its_own_rights() {
    let cluster = cluster(3);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    let _operator = start_operator(&cluster, "operator-a", &[]);
    cluster.apply_yaml_ok(&resource("portraits", 2, "nvidia.com/gpu"));
    wait_condition(&cluster, "portraits", "Ready", "True");

    let deployment = get(&cluster, "deployment", "portraits-gateway").expect("the gateway's Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("the gateway's flags");
    let port = free_port();
    for arg in args.iter_mut().filter(|arg| arg.starts_with("--listen=")) {
        *arg = format!("--listen=127.0.0.1:{port}");
    }
    let kubeconfig = service_account_kubeconfig(&cluster, "shop", "portraits-gateway");
    let gateway = GatewayProcess {
        child: std::process::Command::new(workspace_binary("matte-gateway", "matte-gateway"))
            .args(&args)
            .args(["--log-format", "text"])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", "shop")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start matte-gateway"),
        address: format!("127.0.0.1:{port}"),
    };
    let follows = |replicas: i64| {
        cluster.kubectl_ok(&["scale", "brs/portraits", "-n", "shop", &format!("--replicas={replicas}")]);
        wait_for(&format!("the gateway to see {replicas} ready pods"), WAIT, || {
            match (gateway.endpoints("ready"), gateway.endpoints("unready")) {
                (Some(ready), Some(unready)) if ready == replicas as f64 && unready == 0.0 => Ok(()),
                other => Err(other),
            }
        });
    };
    follows(2);
    follows(3);
    follows(1);
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

/// `kubectl patch` of `name`'s pod template: its new pods carry `annotations`, which the
/// kwok stages of scripts/cluster/kwok.yaml read (`kwok.matte.dev/fault`). The operator's
/// server-side apply leaves another manager's annotation alone, as it would a real one's.
fn annotate_pod_template(cluster: &Cluster, name: &str, annotations: Value) {
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
    cluster.kubectl_ok(&["patch", "deployment", name, "-n", "shop", "--type=merge", "-p", &patch.to_string()]);
}

/// Waits until `name` is Degraded for `reason`, then checks that `kubectl get brs` shows
/// the reason, `kubectl describe brs` the message with `words`, and a Warning Event both.
fn assert_degraded(cluster: &Cluster, operator: &Operator, name: &str, reason: &str, words: &str) {
    let began = Instant::now();
    let brs = wait_for(&format!("{name}: Degraded for {reason}"), WAIT, || {
        let brs = get(cluster, "brs", name);
        match brs.as_ref().and_then(|b| condition_of(b, "Degraded")) {
            Some((status, r, _)) if status == "True" && r == reason => Ok(brs.unwrap_or_default()),
            other => Err(other),
        }
    });
    eprintln!("{name}: Degraded/{reason} seen after {:.1} s of waiting", began.elapsed().as_secs_f64());
    let (_, _, message) = condition_of(&brs, "Degraded").expect("the condition");
    assert!(message.contains(words), "{name}: the message lacks '{words}': {message}");
    assert!(!message.contains("Status {"), "{name}: the apiserver's answer dumped whole: {message}");
    let listed = cluster.kubectl_ok(&["get", "brs", name, "-n", "shop"]);
    assert!(listed.contains("STATUS") && listed.contains(reason), "kubectl get brs:\n{listed}");
    let described = cluster.kubectl_ok(&["describe", "brs", name, "-n", "shop"]);
    assert!(described.contains(words), "kubectl describe brs lacks '{words}':\n{described}");
    wait_for(&format!("a Warning Event {reason} for {name}"), WAIT, || {
        let listed = events(cluster, name);
        if listed.lines().any(|l| l.starts_with("Warning") && l.contains(reason)) { Ok(()) } else { Err(listed) }
    });
    wait_condition_metric(operator, name, "Degraded", Some(1.0));
}

/// Posts the kubelet's Warning `FailedMount` Event for the pod of `name` whose
/// containers wait to be created (kwok's `Unmounted` fault), once there is one.
fn post_failed_mount(cluster: &Cluster, name: &str, message: &str) {
    let pod = wait_for(&format!("a pod of {name} waiting to be created"), WAIT, || {
        let listed = cluster.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            &format!("matte.dev/service={name}"),
            "-o",
            "json",
        ]);
        let pods: Value = serde_json::from_str(&listed).unwrap_or_default();
        let creating = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|pod| pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating");
        creating.cloned().ok_or(listed)
    });
    let event = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{}.failed-mount", pod["metadata"]["name"].as_str().unwrap_or_default()), "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
        "type": "Warning",
        "reason": "FailedMount",
        "message": message,
        "source": {"component": "kubelet"},
        "count": 1,
        "firstTimestamp": pod["status"]["startTime"],
        "lastTimestamp": pod["status"]["startTime"],
    });
    cluster.apply_yaml_ok(&event.to_string());
}

/// Every way a pod fails reaches the resource: a ReplicaSet that cannot create pods, and
/// pods (played by kwok's stages) that cannot pull their image, crash, run out of memory,
/// fail their model download or wait for a volume that cannot be mounted, each with its
/// own reason and words.
#[test]
fn failing_pods_are_reported_with_their_own_reason() {
    // A one-pod service rolls out by surging (its new pod starts before the old one
    // stops), so each of the five faulty rollouts needs a second GPU node.
    let cluster = cluster(13);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    let operator = start_operator(&cluster, "operator-a", &[]);

    let urgent =
        resource("urgent", 1, "nvidia.com/gpu").replace("  gpu:\n", "  gpu:\n    priorityClassName: gpu-urgent\n");
    cluster.apply_yaml_ok(&urgent);
    assert_degraded(&cluster, &operator, "urgent", "FailedCreate", "no PriorityClass with name gpu-urgent");
    let urgent = get(&cluster, "brs", "urgent").unwrap_or_default();
    assert_eq!(
        condition_of(&urgent, "ScalingLimited").map(|c| (c.0, c.1)),
        Some(("True".into(), "FailedCreate".into()))
    );

    let faults = [
        ("pulling", "ImagePullBackOff", "ImagePullFailed", "Back-off pulling image"),
        ("crashing", "CrashLoopBackOff", "CrashLoopBackOff", "not an ONNX file"),
        ("hungry", "OOMKilled", "OOMKilled", "last exit OOMKilled (exit code 137)"),
        ("tampered", "InitFailed", "InitContainerFailed", "init container fetch-model"),
        // Told only by the kubelet's Event, read once the pod has waited a minute.
        ("unmounted", "Unmounted", "VolumeMountFailed", "configmap \"corp-ca\" not found"),
    ];
    for (name, _, _, _) in faults {
        cluster.apply_yaml_ok(&resource(name, 1, "nvidia.com/gpu"));
    }
    // And one whose gateway's new pods cannot pull their image: its clients' way in.
    cluster.apply_yaml_ok(&resource("unreachable", 1, "nvidia.com/gpu"));
    for (name, _, _, _) in faults {
        wait_condition(&cluster, name, "Ready", "True");
    }
    wait_condition(&cluster, "unreachable", "Ready", "True");
    for (name, fault, _, _) in faults {
        annotate_pod_template(&cluster, name, serde_json::json!({"kwok.matte.dev/fault": fault}));
    }
    annotate_pod_template(
        &cluster,
        "unreachable-gateway",
        serde_json::json!({"kwok.matte.dev/fault": "ImagePullBackOff"}),
    );
    post_failed_mount(
        &cluster,
        "unmounted",
        "MountVolume.SetUp failed for volume \"model-ca\" : configmap \"corp-ca\" not found",
    );
    for (name, _, reason, words) in faults {
        assert_degraded(&cluster, &operator, name, reason, words);
    }
    assert_degraded(&cluster, &operator, "unreachable", "GatewayImagePullFailed", "the gateway: 1 of ");
    let tampered = get(&cluster, "brs", "tampered").unwrap_or_default();
    let (_, _, message) = condition_of(&tampered, "Degraded").expect("the condition");
    assert!(message.contains("sha256 mismatch"), "the init container's own words: {message}");

    // Fixed: the pods come up, Degraded clears, and an Event says so.
    annotate_pod_template(&cluster, "crashing", serde_json::json!({"kwok.matte.dev/fault": null}));
    let healed = wait_condition(&cluster, "crashing", "Degraded", "False");
    assert_eq!(condition_of(&healed, "Degraded").map(|c| c.1), Some("AsExpected".into()));
    wait_for("a Recovered Event", WAIT, || {
        let listed = events(&cluster, "crashing");
        if listed.contains("Recovered") { Ok(()) } else { Err(listed) }
    });
}

/// The chart adds BackgroundRemovalServices to Kubernetes' `edit` and `view` roles: who
/// may edit the namespace may write them, who may view it may only read them.
fn assert_users_roles_carry_the_resource(cluster: &Cluster) {
    cluster.kubectl_ok(&["create", "rolebinding", "alice-edits", "--clusterrole=edit", "--user=alice", "-n", "shop"]);
    cluster.kubectl_ok(&["create", "rolebinding", "bob-views", "--clusterrole=view", "--user=bob", "-n", "shop"]);
    let can = |verb: &str, user: &str| {
        let answer = cluster.kubectl(&[
            "auth",
            "can-i",
            verb,
            "backgroundremovalservices.matte.dev",
            "-n",
            "shop",
            "--as",
            user,
        ]);
        String::from_utf8_lossy(&answer.stdout).trim() == "yes"
    };
    // The aggregation controller fills the roles in within seconds of the chart's install.
    wait_for("edit and view to carry BackgroundRemovalServices", WAIT, || {
        if can("create", "alice") && can("list", "bob") { Ok(()) } else { Err("not yet") }
    });
    assert!(!can("create", "bob"), "view reads only");
    assert!(!can("create", "carol"), "nobody else");
}

/// The apiserver refusing what the operator applies (here a ValidatingAdmissionPolicy) is
/// a condition and one Event, retried slowly rather than in a loop; an edit tries again.
#[test]
fn a_refused_apply_is_reported_once_not_retried_in_a_loop() {
    let cluster = cluster(1);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    assert_users_roles_carry_the_resource(&cluster);
    cluster.apply_yaml_ok(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: frozen-deployments}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - {expression: "false", message: "deployments labelled frozen are not allowed here"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: frozen-deployments}
spec:
  policyName: frozen-deployments
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels: {matte.dev/service: frozen}
"#,
    );
    // The policy takes effect once the apiserver has compiled it.
    let probe = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: frozen\n  namespace: shop\n  labels: {matte.dev/service: frozen}\n\
                 spec:\n  selector: {matchLabels: {app: probe}}\n  template:\n    metadata: {labels: {app: probe}}\n    spec:\n      containers: [{name: c, image: probe}]\n";
    wait_for("the admission policy to refuse", WAIT, || {
        let output = cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], probe);
        if output.status.success() { Err("accepted") } else { Ok(()) }
    });
    let operator = start_operator(&cluster, "operator-a", &[]);

    cluster.apply_yaml_ok(&resource("frozen", 1, "nvidia.com/gpu"));
    assert_degraded(&cluster, &operator, "frozen", "ApplyFailed", "deployments labelled frozen are not allowed here");
    // A retry loop would try again after 5, 10 and 20 s, each time publishing again.
    std::thread::sleep(Duration::from_secs(20));
    let listed = cluster.kubectl_json(&[
        "get",
        "events.events.k8s.io",
        "-n",
        "shop",
        "--field-selector",
        "regarding.name=frozen",
        "-o",
        "json",
    ]);
    let announced: Vec<Value> =
        listed["items"].as_array().into_iter().flatten().filter(|e| e["reason"] == "ApplyFailed").cloned().collect();
    assert_eq!(announced.len(), 1, "{listed:#}");
    assert!(announced[0]["series"].is_null(), "published more than once: {listed:#}");
    let (_, body) = operator.get("/metrics").expect("the operator's /metrics");
    let refused = body
        .lines()
        .find_map(|line| line.strip_prefix("matte_operator_reconciliations_total{result=\"refused\"} "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(refused.is_some_and(|n| (1.0..=2.0).contains(&n)), "refused passes: {refused:?}\n{body}");
    assert!(!body.contains("matte_operator_reconciliations_total{result=\"error\"}"), "{body}");

    // Lifted, then an edit: applied, and Degraded clears.
    cluster.kubectl_ok(&["delete", "validatingadmissionpolicybinding", "frozen-deployments"]);
    wait_for("the admission policy to let it through", WAIT, || {
        let output = cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], probe);
        if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
    });
    edit_max_dimension(&cluster, "frozen", 1024);
    wait_condition(&cluster, "frozen", "Degraded", "False");
    assert!(get(&cluster, "deployment", "frozen").is_some());

    // The gateway's RoleBinding deleted and made again by someone else between two
    // passes, binding another account to the gateway's rights: the next pass finds it
    // is not the object it applied, and refuses to apply over it.
    cluster.kubectl_ok(&["delete", "rolebinding", "frozen-gateway", "-n", "shop"]);
    cluster.apply_yaml_ok(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: frozen-gateway, namespace: shop}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: frozen-gateway}\n\
         subjects: [{kind: ServiceAccount, name: intruder, namespace: shop}]\n",
    );
    edit_max_dimension(&cluster, "frozen", 2048);
    assert_degraded(
        &cluster,
        &operator,
        "frozen",
        "ApplyFailed",
        "RoleBinding shop/frozen-gateway exists and is not this resource's",
    );
    let theirs = get(&cluster, "rolebinding", "frozen-gateway").expect("their RoleBinding");
    assert_eq!(
        theirs["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "intruder", "namespace": "shop"}])
    );
    assert!(theirs["metadata"]["ownerReferences"].is_null(), "{theirs:#}");

    // A Service of the resource's name that someone else made is neither taken over
    // (its selector moved to these pods, then deleted with the resource) nor built
    // around: the resource is refused whole, naming it.
    cluster.apply_yaml_ok(
        "apiVersion: v1\nkind: Service\nmetadata: {name: taken, namespace: shop}\nspec:\n  selector: {app: theirs}\n  ports: [{port: 80}]\n",
    );
    cluster.apply_yaml_ok(&resource("taken", 1, "nvidia.com/gpu"));
    assert_degraded(
        &cluster,
        &operator,
        "taken",
        "ApplyFailed",
        "Service shop/taken exists and is not this resource's",
    );
    let theirs = get(&cluster, "service", "taken").expect("their Service");
    assert_eq!(theirs["spec"]["selector"], serde_json::json!({"app": "theirs"}), "{theirs:#}");
    assert!(theirs["metadata"]["ownerReferences"].is_null(), "{theirs:#}");
    assert!(get(&cluster, "deployment", "taken").is_none(), "nothing built around it");
}

/// An edit of `name`'s spec in namespace `shop`, which the operator passes over at once.
fn edit_max_dimension(cluster: &Cluster, name: &str, pixels: u32) {
    let patch = serde_json::json!({"spec": {"maxDimension": pixels}}).to_string();
    cluster.kubectl_ok(&["patch", "brs", name, "-n", "shop", "--type=merge", "-p", &patch]);
}

/// A child process killed when the test ends, however it ends.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every PromQL query of the chart's dashboard, with Grafana's variables given values:
/// the panels' targets, and the variables' `label_values(metric, label)` as the query
/// Grafana sends for them.
fn dashboard_queries(dashboard: &Value, namespace: &str, service: &str) -> Vec<(String, String)> {
    let fill = |expr: &str| {
        expr.replace("$namespace", namespace).replace("$service", service).replace("$__rate_interval", "1m")
    };
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            queries.push((format!("{} / {}", panel["title"], target["legendFormat"]), fill(expr)));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().expect("a variable query");
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(…)");
        let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
        queries
            .push((format!("variable {}", variable["name"]), fill(&format!("count by ({}) ({metric})", label.trim()))));
    }
    queries
}

/// The chart's Grafana dashboard: off by default, a ConfigMap for the Grafana sidecar when
/// on, and every one of its queries returns data from a real Prometheus scraping a real
/// inference pod (`matte-inference` on the CPU, the real model), a real `matte-gateway` in
/// front of it, and the operator managing that service on the local control plane; none
/// errors.
#[test]
fn every_query_of_the_dashboard_returns_data() {
    let chart = repo_root().join("charts/matte");
    let chart = chart.to_str().expect("a UTF-8 path");
    let scratch = std::env::temp_dir().join(format!("matte-dashboard-{}", std::process::id()));
    let render = |values: &[&str]| {
        let args = [&["template", RELEASE, chart, "--namespace", NAMESPACE][..], values].concat();
        let output = matte_e2e::helm(&scratch).args(&args).output().expect("run helm");
        matte_e2e::expect_success("helm", &args, &output)
    };
    assert!(!render(&[]).contains("grafana_dashboard"), "off by default");
    let rendered = render(&["--set", "grafanaDashboard.enabled=true"]);
    assert!(rendered.contains("kind: ConfigMap") && rendered.contains(r#"grafana_dashboard: "1""#), "{rendered}");
    assert!(rendered.contains(r#""uid": "matte-services""#), "the dashboard's JSON is in it");
    let text = std::fs::read_to_string(repo_root().join("charts/matte/dashboards/matte.json")).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");

    // A real inference pod on loopback, with a small queue so that a burst is refused in part.
    let pod_port = free_port();
    let inference = matte_e2e::operator::workspace_binary("matte-inference", "matte-inference");
    let _pod = Process(
        std::process::Command::new(inference)
            .args(["--model", setup_path("MATTE_MODEL").to_str().expect("UTF-8"), "--provider", "cpu"])
            .args(["--listen", &format!("127.0.0.1:{pod_port}"), "--queue-capacity", "2", "--log-format", "text"])
            .env("ORT_DYLIB_PATH", setup_path("ORT_DYLIB_PATH"))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("matte-inference starts"),
    );
    // The gateway in front of it, the pod's queue capacity its own.
    let gateway_port = free_port();
    let _gateway = Process(
        std::process::Command::new(matte_e2e::operator::workspace_binary("matte-gateway", "matte-gateway"))
            .args(["--listen", &format!("127.0.0.1:{gateway_port}"), "--upstream", &format!("127.0.0.1:{pod_port}")])
            .args(["--upstream-capacity", "2", "--log-format", "text"])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("matte-gateway starts"),
    );

    let cluster = cluster(1);
    install_chart(&cluster, &[]);
    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    let prometheus_port = free_port();
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    let operator = start_operator(&cluster, "operator-a", &["--prometheus-url", &prometheus_url]);

    // Prometheus labels the pod and the gateway as the operator's PodMonitor would
    // (namespace, job = the resource's name), and scrapes the operator.
    let data = cluster.state_dir().join("prometheus");
    std::fs::create_dir_all(&data).expect("a Prometheus directory");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
         - job_name: portraits\n  static_configs:\n  - targets: ['127.0.0.1:{pod_port}', '127.0.0.1:{gateway_port}']\n    labels: {{namespace: shop}}\n\
         - job_name: matte-operator\n  static_configs:\n  - targets: ['{}']\n",
        operator.address()
    );
    std::fs::write(data.join("prometheus.yml"), config).expect("write prometheus.yml");
    let _prometheus = Process(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", data.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", data.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/setup.sh installs Debian's package)"),
    );

    let portraits = resource("portraits", 1, "nvidia.com/gpu").replace(
        "  autoscaling:\n    enabled: false\n",
        "  autoscaling:\n    enabled: true\n    minReplicas: 1\n    maxReplicas: 3\n    targetQueueLatencySeconds: 5\n",
    );
    cluster.apply_yaml_ok(&portraits);

    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("a client");
    let answers = |url: &str| client.get(url).send().is_ok_and(|r| r.status().is_success());
    wait_for("the inference pod to be ready", Duration::from_secs(180), || {
        answers(&format!("http://127.0.0.1:{pod_port}/readyz")).then_some(()).ok_or(())
    });
    wait_for("Prometheus to be ready", WAIT, || answers(&format!("{prometheus_url}/-/ready")).then_some(()).ok_or(()));

    // A burst of eight photos into a queue of two: some are served, the rest refused (429).
    let photo = sample_image("astronaut.png");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    client
                        .post(format!("http://127.0.0.1:{pod_port}/v1/remove"))
                        .header("content-type", "image/png")
                        .body(photo.clone())
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().unwrap_or(0)).collect()
    });
    assert!(statuses.contains(&200) && statuses.contains(&429), "served and refused: {statuses:?}");
    // And one through the gateway, which times it.
    let through_the_gateway = client
        .post(format!("http://127.0.0.1:{gateway_port}/v1/remove"))
        .header("content-type", "image/png")
        .body(photo.clone())
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(through_the_gateway.ok(), Some(200), "served through the gateway");

    let queries = dashboard_queries(&dashboard, "shop", "portraits");
    assert!(queries.len() >= 12, "{queries:?}");
    for (what, query) in queries {
        let answer = wait_for(&format!("data for {what}: {query}"), WAIT, || {
            let response = client
                .get(format!("{prometheus_url}/api/v1/query"))
                .query(&[("query", &query)])
                .send()
                .and_then(|r| r.text());
            let answer: Value =
                serde_json::from_str(&response.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            assert_eq!(answer["status"], "success", "{what}: {query} fails: {answer}");
            let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
            if results > 0 { Ok(answer) } else { Err(answer.to_string()) }
        });
        eprintln!("{what}: {}", answer["data"]["result"]);
    }
}
