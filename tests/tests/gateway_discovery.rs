//! The gateway finds its pods from a Service's EndpointSlices on a real control plane.
//!
//! EndpointSlices of the selector-less Service `x-pods`, written here by hand, list
//! pods at addresses of the documentation range 192.0.2.0/24: the apiserver refuses
//! loopback addresses in an EndpointSlice ("may not be in the loopback range"), and no
//! request is sent to these, so nothing leaves the machine. The `matte-gateway` binary
//! runs with `--service x-pods` as a ServiceAccount that may only get, list and watch
//! EndpointSlices, and reaches the apiserver through a loopback TCP forwarder of this
//! test's: stopping the forwarder takes the apiserver away from the gateway alone,
//! without touching the cluster. That requests go to the pods the dispatcher holds is
//! the gateway's own tests' subject, with real pods on loopback.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matte_e2e::operator::{service_account_kubeconfig, workspace_binary};
use matte_e2e::pods::{metric_value, scrape, wait_for_ok};
use matte_e2e::ports::free_port;
use matte_e2e::{Cluster, wait_for};

const READY: &str = r#"matte_gateway_endpoints{state="ready"}"#;
const UNREADY: &str = r#"matte_gateway_endpoints{state="unready"}"#;
const DISCOVERY_UP: &str = "matte_gateway_discovery_up";
/// What the gateway logs once when the watch fails.
const WATCH_FAILED: &str = "EndpointSlice watch failed";
/// Long enough for a change to reach the gateway through a busy apiserver.
const FOLLOW: Duration = Duration::from_secs(30);

/// The Role the gateway needs, and nothing more.
const RBAC: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: matte-gateway, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: matte-gateway, namespace: default}
rules:
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: matte-gateway, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: matte-gateway}
subjects:
- {kind: ServiceAccount, name: matte-gateway, namespace: default}
";

/// A loopback TCP forwarder to `target`, on its own Tokio runtime; stopping it closes
/// the listener and every connection through it at once.
struct Forwarder {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Forwarder {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    fn start(port: u16, target: SocketAddr) -> Forwarder {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("the forwarder cannot listen on 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().expect("a local address").port();
        runtime.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { port, runtime: Some(runtime) }
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `matte-gateway` binary, its output in a log file; killed on drop.
struct GatewayProcess {
    child: Child,
    log: PathBuf,
    base: String,
}

impl GatewayProcess {
    fn start(kubeconfig: &Path, args: &[&str]) -> GatewayProcess {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = kubeconfig.with_file_name("matte-gateway.log");
        let out = fs::File::create(&log).expect("create the gateway log");
        let child = Command::new(workspace_binary("matte-gateway", "matte-gateway"))
            .args(["--listen", &listen, "--log-format", "text", "--drain-delay-seconds", "0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .expect("start matte-gateway");
        GatewayProcess { child, log, base: format!("http://{listen}") }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn metrics(&self) -> String {
        scrape(&self.url("/metrics"))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the gateway's /metrics shows `ready` and `unready` pods and the
    /// discovery gauge at `up`.
    fn wait_for_endpoints(&self, what: &str, ready: f64, unready: f64, up: f64, limit: Duration) {
        wait_for(what, limit, || {
            let text = self.metrics();
            let seen = (metric_value(&text, READY), metric_value(&text, UNREADY), metric_value(&text, DISCOVERY_UP));
            if seen == (ready, unready, up) { Ok(()) } else { Err(format!("(ready, unready, up) = {seen:?}")) }
        });
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- matte-gateway log ({}) ---\n{}", self.log.display(), self.log());
        }
    }
}

/// An EndpointSlice of `x-pods` listing `address` on port 8080.
fn slice(name: &str, address: &str, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n\
         \x20   kubernetes.io/service-name: x-pods\n    endpointslice.kubernetes.io/managed-by: matte-e2e\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
         endpoints:\n- addresses: [{address}]\n  conditions: {{ready: {ready}}}\n"
    )
}

const POD_A: &str = "192.0.2.10";
const POD_B: &str = "192.0.2.11";

#[test]
fn the_gateway_follows_the_endpointslices_and_keeps_its_pods_when_the_apiserver_goes() {
    let began = Instant::now();
    let cluster = Cluster::start(0).unwrap_or_else(|e| panic!("{e}"));

    // A Service without a selector: its slices are this test's, no controller's.
    cluster.apply_yaml_ok(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x-pods, namespace: default}\n\
         spec: {clusterIP: None, ports: [{name: http, port: 8080, protocol: TCP}]}\n",
    );
    cluster.apply_yaml_ok(RBAC);
    cluster.apply_yaml_ok(&slice("x-pods-a", POD_A, true));

    let apiserver: SocketAddr = cluster
        .server()
        .strip_prefix("https://")
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("the apiserver is not https://IP:PORT: {}", cluster.server()));
    // Not an ephemeral port: it is bound again after the outage, when an outgoing
    // connection could have taken one.
    let mut forwarder = Forwarder::start(free_port(), apiserver);
    let kubeconfig = service_account_kubeconfig(&cluster, "default", "matte-gateway");
    let through_forwarder = fs::read_to_string(&kubeconfig)
        .expect("read the kubeconfig")
        .replace(cluster.server(), &format!("https://127.0.0.1:{}", forwarder.port));
    fs::write(&kubeconfig, through_forwarder).expect("write the kubeconfig");

    let gateway = GatewayProcess::start(&kubeconfig, &["--service", "x-pods", "--namespace", "default"]);
    wait_for_ok(&gateway.url("/readyz"), Duration::from_secs(60));
    gateway.wait_for_endpoints("the first slice's pod", 1.0, 0.0, 1.0, FOLLOW);
    eprintln!("discovered: {:.1} s", began.elapsed().as_secs_f64());

    let step = Instant::now();
    cluster.apply_yaml_ok(&slice("x-pods-b", POD_B, true));
    gateway.wait_for_endpoints("the second slice's pod", 2.0, 0.0, 1.0, FOLLOW);
    cluster.apply_yaml_ok(&slice("x-pods-a", POD_A, false));
    gateway.wait_for_endpoints("pod a unready", 1.0, 1.0, 1.0, FOLLOW);
    cluster.kubectl_ok(&["delete", "endpointslice", "x-pods-a", "-n", "default"]);
    gateway.wait_for_endpoints("pod a gone", 1.0, 0.0, 1.0, FOLLOW);
    eprintln!("followed add, unready and delete in {:.1} s", step.elapsed().as_secs_f64());

    // The apiserver goes away: the gateway says so and keeps pod b.
    forwarder.stop();
    let outage = Instant::now();
    gateway.wait_for_endpoints("discovery down, pod b kept", 1.0, 0.0, 0.0, FOLLOW);
    eprintln!("discovery reported down {:.1} s after the apiserver went", outage.elapsed().as_secs_f64());
    // What changes meanwhile cannot reach it.
    cluster.apply_yaml_ok(&slice("x-pods-a", POD_A, true));
    // Several retries later (0.8 s, 1.6 s, 3.2 s…), one warning for the whole outage.
    std::thread::sleep(Duration::from_secs(6));
    let text = gateway.metrics();
    assert_eq!((metric_value(&text, READY), metric_value(&text, DISCOVERY_UP)), (1.0, 0.0), "{text}");
    let log = gateway.log();
    assert_eq!(log.matches(WATCH_FAILED).count(), 1, "one warning per outage, not per retry:\n{log}");

    // The apiserver is back on the same address: the gateway relists and catches up.
    let back = Instant::now();
    let forwarder_again = Forwarder::start(forwarder.port, apiserver);
    gateway.wait_for_endpoints("discovery back with both pods", 2.0, 0.0, 1.0, Duration::from_secs(90));
    eprintln!("caught up {:.1} s after the apiserver came back", back.elapsed().as_secs_f64());
    let log = gateway.log();
    assert!(log.contains("EndpointSlice watch restored"), "{log}");
    assert_eq!(log.matches(WATCH_FAILED).count(), 1, "{log}");
    drop(forwarder_again);
    eprintln!("total: {:.1} s", began.elapsed().as_secs_f64());
}
