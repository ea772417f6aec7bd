//! The pod the operator writes, run for real: `podman kube play` of the pod template that
//! `matte_operator::desired::deployment` builds (the operator's own pure function), with
//! the images `scripts/images/build.sh` builds. The init container downloads the real
//! model from a loopback HTTPS server through a private CA and checks its sha256; the
//! server starts read-only as UID 65532 without capabilities, becomes ready, removes the
//! background of a real photo, and drains on SIGTERM. Then the operator's image runs
//! against a real control plane with the chart's ServiceAccount, and the gateway's image
//! serves through a real inference pod.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use matte_e2e::podman::{HttpsFileServer, images, podman, podman_ok};
use matte_e2e::pods::Pod;
use matte_e2e::ports::free_port;
use matte_e2e::setup_cache::{sample_image, setup_path};
use matte_e2e::tiny_model::TinyModel;
use matte_e2e::{Cluster, repo_root, wait_for};
use matte_operator::crd::BackgroundRemovalService;
use matte_operator::desired::{Defaults, deployment, validate};
use serde_json::{Value, json};

/// Loading the real model on a loaded CPU takes seconds; on a shared CI machine, more.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// The ConfigMap that carries the model server's CA, as a cluster would hold it.
const CA_CONFIG_MAP: &str = "model-server-ca";

fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().expect("a digest").to_owned()
}

/// A test's scratch directory, its model server, and the pod it plays; the pod is
/// removed on drop.
struct PlayedPod {
    name: String,
    dir: PathBuf,
    port: u16,
    _server: HttpsFileServer,
}

impl PlayedPod {
    /// Serves the real model over HTTPS, builds the pod for a resource whose model is
    /// that URL with `sha256` (batching two images a run), and `podman kube play`s it on
    /// the host network.
    fn play(name: &str, sha256: &str) -> (PlayedPod, std::process::Output, Duration) {
        let images = images();
        let dir = std::env::temp_dir().join(format!("matte-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).expect("create the served directory");
        std::os::unix::fs::symlink(setup_path("MATTE_MODEL"), dir.join("root/isnet.onnx")).expect("link the model");
        let server = HttpsFileServer::start(&dir.join("root"), &dir.join("tls"));

        let brs: BackgroundRemovalService = serde_yaml::from_str(&format!(
            "apiVersion: matte.dev/v1alpha1\nkind: BackgroundRemovalService\n\
             metadata: {{name: {name}, namespace: shop, uid: 6b1f0c1e-0000-4000-8000-00000000000a}}\n\
             spec:\n  executionProvider: cpu\n  model:\n    url: https://127.0.0.1:{}/isnet.onnx\n    sha256: {sha256}\n\
             \x20   download: {{caConfigMap: {{name: {CA_CONFIG_MAP}, key: ca.crt}}, sizeLimit: 1Gi}}\n\
             \x20 queue: {{requestTimeoutSeconds: 120}}\n  batching: {{maxBatchSize: 2}}\n",
            server.port
        ))
        .expect("the resource parses");
        let defaults = Defaults {
            inference_image: images.inference.clone(),
            gateway_image: images.gateway.clone(),
            allowed_prometheus_urls: Vec::new(),
            metrics_namespace_label: None,
            pod_monitor_labels: Default::default(),
        };
        let valid = validate(&brs, &defaults).expect("the resource is valid");
        let built = serde_json::to_value(deployment(&brs, &valid, 1)).expect("the Deployment serialises");
        let port = free_port();
        let pod = pod_for_podman(name, &built["spec"]["template"], port);
        std::fs::write(dir.join("pod.yaml"), serde_yaml::to_string(&pod).expect("YAML")).expect("write pod.yaml");
        let ca = std::fs::read_to_string(&server.ca).expect("read the CA");
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CA_CONFIG_MAP}, "data": {"ca.crt": ca},
        });
        std::fs::write(dir.join("ca.yaml"), serde_yaml::to_string(&config_map).expect("YAML")).expect("write ca.yaml");

        let pod_yaml = dir.join("pod.yaml");
        let ca_yaml = dir.join("ca.yaml");
        let began = Instant::now();
        let output = podman(&[
            "kube",
            "play",
            "--network",
            "host",
            "--configmap",
            ca_yaml.to_str().expect("UTF-8"),
            pod_yaml.to_str().expect("UTF-8"),
        ]);
        (PlayedPod { name: name.to_owned(), dir, port, _server: server }, output, began.elapsed())
    }

    fn container(&self, container: &str) -> String {
        format!("{}-{container}", self.name)
    }

    fn logs(&self, container: &str) -> String {
        let output = podman(&["logs", &self.container(container)]);
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    fn inspect(&self, container: &str, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.container(container)]).trim().to_owned()
    }

    fn request(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> Option<(u16, Vec<u8>)> {
        http(self.port, method, path, body, content_type)
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for container in ["fetch-model", "inference"] {
                eprintln!("--- {} ---\n{}", self.container(container), self.logs(container));
            }
        }
        let _ = podman(&["pod", "rm", "--force", "--time", "5", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Deployment's pod template as a Pod that `podman kube play` runs on the host
/// network. Everything stays as the operator wrote it except, each for a reason:
/// - the server listens on a free loopback port instead of 0.0.0.0:8080: with host
///   networking every pod shares the machine's ports, and tests run side by side;
/// - the probes go: podman runs an httpGet probe as `curl` inside the container, which a
///   shell-less image does not have; the test polls /readyz itself, as the kubelet would;
/// - the GPU request goes (the resource asks for the CPU provider; podman has no device
///   plugins) and so does the pod's restart policy (a failed download must stay failed
///   for the test to read why, where a kubelet would retry with back-off).
fn pod_for_podman(name: &str, template: &Value, port: u16) -> Value {
    let mut spec = template["spec"].clone();
    for container in spec["containers"].as_array_mut().expect("containers") {
        let object = container.as_object_mut().expect("a container");
        object.remove("readinessProbe");
        object.remove("livenessProbe");
        object.remove("resources");
        object.remove("ports");
        if let Some(args) = object.get_mut("args").and_then(Value::as_array_mut) {
            for arg in args.iter_mut() {
                if arg.as_str().is_some_and(|a| a.starts_with("--listen=")) {
                    *arg = json!(format!("--listen=127.0.0.1:{port}"));
                }
            }
        }
    }
    spec["restartPolicy"] = json!("Never");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"].clone()},
        "spec": spec,
    })
}

/// One HTTP/1.1 request on 127.0.0.1, `Connection: close`; the status and body.
fn http(port: u16, method: &str, path: &str, body: &[u8], content_type: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// A container removed on drop; its log printed first if the test is failing.
struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = podman(&["logs", &self.0]);
            eprintln!("--- container {} ---\n{}", self.0, String::from_utf8_lossy(&logs.stderr));
        }
        // A container that exits on its own just as the 5 s are up (the gateway drains
        // for 5 s on SIGTERM) makes podman's SIGKILL, and with it the removal, fail:
        // the second try finds it stopped and removes it.
        for _ in 0..2 {
            if podman(&["rm", "--force", "--time", "5", &self.0]).status.success() {
                break;
            }
        }
    }
}

/// `Uid:` and `CapEff:` of the container's main process, read from the host's /proc.
fn process_identity(pod: &PlayedPod) -> (String, String) {
    let pid = pod.inspect("inference", "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default();
    (field("Uid:"), field("CapEff:"))
}

#[test]
fn the_operators_pod_fetches_the_model_serves_and_drains_in_podman() {
    let sha256 = sha256_of(&setup_path("MATTE_MODEL"));
    let (pod, played, _) = PlayedPod::play("matte-pod-ok", &sha256);
    let began = Instant::now();
    assert!(
        played.status.success() || String::from_utf8_lossy(&played.stderr).contains("cannot remove container"),
        "podman kube play failed: {}",
        String::from_utf8_lossy(&played.stderr)
    );
    // podman removes an init container that succeeded, log and all: that the server
    // becomes ready shows the model was there, and fetch-model installs nothing unverified.
    wait_for("the inference container to be ready", READY_TIMEOUT, || {
        match pod.request("GET", "/readyz", b"", "text/plain") {
            Some((200, _)) => Ok(()),
            other => Err(other.map(|(status, _)| status)),
        }
    });
    eprintln!("kube play to ready: {:.1} s (model fetched and loaded)", began.elapsed().as_secs_f64());
    // ISNet as it ships fixes its batch at 1: the pod freed it, and runs two images a run.
    let metrics = pod.request("GET", "/metrics", b"", "text/plain").expect("metrics").1;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.lines().any(|line| line == "matte_max_batch_size 2"), "{metrics}");
    assert!(metrics.lines().any(|line| line == "matte_requested_max_batch_size 2"), "{metrics}");

    let user = pod.inspect("inference", "{{.Config.User}}");
    assert!(user == "65532" || user == "65532:65532", "the container's user: {user}");
    assert_eq!(pod.inspect("inference", "{{.HostConfig.ReadonlyRootfs}}"), "true");
    let (uid, capabilities) = process_identity(&pod);
    assert!(uid.split_whitespace().all(|id| id == "65532"), "Uid: {uid}");
    assert_eq!(capabilities, "0000000000000000", "every capability is dropped");

    let photo = sample_image("astronaut.png");
    let (status, cutout) = pod.request("POST", "/v1/remove", &photo, "image/png").expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&cutout));
    assert_eq!(&cutout[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert_eq!(cutout[25], 6, "colour type 6: RGBA, the background made transparent");

    // SIGTERM while requests are in flight: every admitted one is answered, then it exits 0.
    let port = pod.port;
    let inflight: Vec<_> = (0..3)
        .map(|_| {
            let photo = photo.clone();
            std::thread::spawn(move || http(port, "POST", "/v1/remove", &photo, "image/png").map(|(s, _)| s))
        })
        .collect();
    wait_for("the requests to be admitted", Duration::from_secs(30), || {
        let metrics =
            pod.request("GET", "/metrics", b"", "text/plain").map(|(_, b)| String::from_utf8_lossy(&b).into_owned());
        let inflight =
            metrics.as_deref().and_then(|m| m.lines().find_map(|l| l.strip_prefix("matte_inflight_requests ")));
        match inflight.and_then(|v| v.trim().parse::<f64>().ok()) {
            Some(n) if n >= 3.0 => Ok(()),
            other => Err(other),
        }
    });
    podman_ok(&["kill", "--signal", "TERM", &pod.container("inference")]);
    let statuses: Vec<_> = inflight.into_iter().map(|t| t.join().expect("a request thread")).collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(200)], "admitted requests are finished while draining");
    wait_for("the server to exit", Duration::from_secs(60), || {
        match pod.inspect("inference", "{{.State.Status}}").as_str() {
            "exited" | "stopped" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    assert_eq!(pod.inspect("inference", "{{.State.ExitCode}}"), "0", "{}", pod.logs("inference"));
}

#[test]
fn a_wrong_sha256_keeps_the_pod_from_starting_and_its_log_says_why() {
    let wrong = "0".repeat(64);
    let (pod, played, _) = PlayedPod::play("matte-pod-bad-digest", &wrong);
    let log = pod.logs("fetch-model");
    let said = format!("{log}{}", String::from_utf8_lossy(&played.stderr));
    assert!(said.contains("sha256 mismatch") && said.contains(&wrong), "kube play and the log: {said}");
    // The server never ran: nothing answers on its port.
    std::thread::sleep(Duration::from_secs(3));
    assert!(pod.request("GET", "/healthz", b"", "text/plain").is_none(), "the server must not start");
    let state = podman(&["inspect", "--format", "{{.State.Status}}", &pod.container("inference")]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
    assert!(state != "running", "the inference container is {state}");
}

/// The operator's image, run by podman on the host network against a real control plane
/// as the chart's ServiceAccount (installed by `helm install` with the built image names),
/// reconciles a resource into its Deployment, Service and PodDisruptionBudget.
#[test]
fn the_operator_image_reconciles_with_the_charts_service_account() {
    let images = images();
    let cluster = Cluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let chart = repo_root().join("charts/matte");
    let (repository, tag) = images.operator.rsplit_once(':').expect("a tag");
    let image_values = [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        format!("inference.defaultImage={}", images.inference),
    ];
    let mut install =
        vec!["install", "matte", chart.to_str().expect("UTF-8"), "-n", "matte-system", "--create-namespace"];
    for value in &image_values {
        install.extend(["--set", value.as_str()]);
    }
    cluster.helm_ok(&install);
    let deployment = cluster.kubectl_json(&["get", "deployment", "matte", "-n", "matte-system", "-o", "json"]);
    let operator_container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(operator_container["image"], images.operator.as_str(), "the chart runs the built image");
    let args = operator_container["args"].to_string();
    assert!(args.contains(&images.inference), "--default-inference-image is the built image: {args}");
    cluster.wait_crd_established("backgroundremovalservices.matte.dev");

    let kubeconfig = matte_e2e::operator::service_account_kubeconfig(&cluster, "matte-system", "matte");
    let port = free_port();
    let name = format!("matte-operator-test-{}", std::process::id());
    let mount = format!("{}:/etc/matte/kubeconfig:ro", kubeconfig.display());
    let listen = format!("127.0.0.1:{port}");
    let default_image = format!("--default-inference-image={}", images.inference);
    let options =
        ["--volume", &mount, "--env", "KUBECONFIG=/etc/matte/kubeconfig", "--env", "POD_NAMESPACE=matte-system"];
    let _remove = run_locked_down(&name, &options, &images.operator, &["run", "--listen", &listen, &default_image]);
    assert_eq!(podman_ok(&["inspect", "--format", "{{.Config.User}}", &name]).trim(), "65532:65532");

    cluster.kubectl_ok(&["create", "namespace", "shop"]);
    cluster.apply_yaml_ok(
        "apiVersion: matte.dev/v1alpha1\nkind: BackgroundRemovalService\nmetadata:\n  name: portraits\n  namespace: shop\n\
         spec:\n  model:\n    url: https://models.example/isnet.onnx\n    sha256: b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb\n\
         \x20 autoscaling:\n    enabled: false\n  replicas: 1\n",
    );
    for kind in ["deployment", "service", "poddisruptionbudget"] {
        wait_for(&format!("{kind} portraits"), Duration::from_secs(120), || {
            let output = cluster.kubectl(&["get", kind, "-n", "shop", "-o", "name"]);
            let names = String::from_utf8_lossy(&output.stdout).into_owned();
            if names.lines().any(|l| l.ends_with("/portraits")) { Ok(()) } else { Err(names) }
        });
    }
    let made = cluster.kubectl_json(&["get", "deployment", "portraits", "-n", "shop", "-o", "json"]);
    let pod = &made["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], images.inference.as_str());
    assert_eq!(pod["initContainers"][0]["image"], images.inference.as_str(), "the inference image fetches the model");
}

/// The gateway's image, run by podman on the host network (read-only, no capabilities)
/// with `--upstream` a real `matte-inference` process on loopback: a photo's background
/// is removed through it, and its /metrics are the gateway's.
#[test]
fn the_gateway_image_serves_through_an_inference_pod() {
    let images = images();
    let model = TinyModel::generate();
    let pod = Pod::start(&model.path, &[]);
    let port = free_port();
    let name = format!("matte-gateway-test-{}", std::process::id());
    let listen = format!("127.0.0.1:{port}");
    let args = ["--listen", &listen, "--upstream", &pod.address, "--log-format", "text"];
    let _remove = run_locked_down(&name, &[], &images.gateway, &args);
    let inspect = |format: &str| podman_ok(&["inspect", "--format", format, &name]).trim().to_owned();
    assert_eq!(inspect("{{.Config.User}}"), "65532:65532");
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    wait_for("the gateway to be ready", Duration::from_secs(60), || {
        match http(port, "GET", "/readyz", b"", "text/plain") {
            Some((200, _)) => Ok(()),
            other => Err(other.map(|(status, _)| status)),
        }
    });

    // The gateway holds a request until its probe finds the pod ready, then sends it.
    let photo = sample_image("chelsea.png");
    let (status, cutout) = http(port, "POST", "/v1/remove", &photo, "image/png").expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&cutout));
    assert_eq!(&cutout[..8], b"\x89PNG\r\n\x1a\n", "a PNG");

    let (status, metrics) = http(port, "GET", "/metrics", b"", "text/plain").expect("metrics answer");
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(status, 200);
    for sample in [
        r#"matte_gateway_requests_total{outcome="ok"} 1"#,
        r#"matte_gateway_endpoints{state="ready"} 1"#,
        "matte_gateway_discovery_up 1",
        "matte_gateway_queue_depth 0",
    ] {
        assert!(metrics.lines().any(|line| line == sample), "no `{sample}` in\n{metrics}");
    }
}

/// Starts `image` detached as container `name` the way Matte's containers are run:
/// host network, read-only root filesystem, no capabilities, no privilege gain; with
/// podman `options` before the image and `args` after it. Removed when the guard drops.
fn run_locked_down(name: &str, options: &[&str], image: &str, args: &[&str]) -> RemoveContainer {
    let locked_down = [
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ];
    podman_ok(&[&locked_down[..], options, &[image], args].concat());
    RemoveContainer(name.to_owned())
}
