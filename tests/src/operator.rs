//! The operator as its users run it: the `matte-operator run` binary, outside the
//! cluster, authenticated as the Helm chart's ServiceAccount (its token, its RBAC, not
//! the administrator's certificate), so that a missing permission fails the tests.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Cluster, repo_root};

/// The `matte-operator` binary of this workspace, built if it is not there yet.
pub fn operator_binary() -> PathBuf {
    workspace_binary("matte-operator", "matte-operator")
}

/// Binary `bin` of workspace package `package`, built if it is not there yet (another
/// package's binary, which cargo does not build for this one's tests).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let binary = target.join(profile).join(bin);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(repo_root()).args(["build", "--quiet", "-p", package, "--bin", bin]);
    if profile == "release" {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    binary
}

/// GET `path` from `address` (`HOST:PORT`) over plain HTTP/1.0: the status code and
/// body, or `None` when nothing answers within 5 s.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// A kubeconfig that authenticates as `namespace/service_account` with a fresh token.
pub fn service_account_kubeconfig(cluster: &Cluster, namespace: &str, service_account: &str) -> PathBuf {
    let token = cluster.kubectl_ok(&["create", "token", service_account, "-n", namespace, "--duration=2h"]);
    let ca = cluster.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let path = cluster.state_dir().join(format!("{service_account}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
         users:\n- name: {service_account}\n  user:\n    token: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {service_account}\n\
         current-context: local\n",
        cluster.server(),
        ca.trim(),
        token.trim()
    );
    fs::write(&path, config).expect("write the kubeconfig");
    path
}

/// A running `matte-operator run`; killed on drop.
pub struct Operator {
    child: Child,
    log: PathBuf,
    address: String,
}

impl Operator {
    /// Starts the operator with `kubeconfig`, as pod `identity` of namespace `namespace`,
    /// with the HTTP endpoints on a free loopback port, plus `args`.
    pub fn start(kubeconfig: &Path, identity: &str, namespace: &str, args: &[&str]) -> Operator {
        let port = crate::ports::free_port();
        let address = format!("127.0.0.1:{port}");
        let log = kubeconfig.with_file_name(format!("{identity}.log"));
        let out = fs::File::create(&log).expect("create the operator log");
        let child = Command::new(operator_binary())
            .args(["run", "--listen", &address, "--log-format", "text", "--log-level", "info,matte_operator=debug"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", namespace)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .expect("start matte-operator");
        Operator { child, log, address }
    }

    /// GET `path` of the operator's HTTP endpoints: the status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.address, path)
    }

    /// `127.0.0.1:<port>`, where its HTTP endpoints answer.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The value of the `matte_operator_leader` gauge, once the server answers.
    pub fn is_leader(&self) -> Option<bool> {
        let (_, body) = self.get("/metrics")?;
        body.lines().find_map(|line| line.strip_prefix("matte_operator_leader ")).map(|value| value.trim() == "1")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code within `timeout` (killed and `None` after it).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- operator log ({}) ---\n{}", self.log.display(), crate::tail(&self.log(), 80));
        }
    }
}
