//! A real, throwaway Kubernetes control plane for end-to-end tests.
//!
//! [`Cluster::start`] runs `scripts/cluster/up.sh`: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler on free loopback ports, and kwok playing the
//! kubelet of `gpu_nodes` fake nodes with one `nvidia.com/gpu` each. Pods bound to them turn
//! Running and Ready without a container runtime. Each test gets its own cluster; several
//! can run at once.
//!
//! The script holds its stdin as a lifeline: dropping the [`Cluster`] closes it and waits
//! for the teardown, and if the test process dies the pipe closes all the same, so no
//! cluster outlives its test.
//!
//! The binaries are built by `scripts/setup.sh --with-cluster` into `$MATTE_CACHE/k8s/bin`
//! (`~/.cache/matte` by default); without them every test here fails, saying so.

pub mod counting_allocator;
pub mod operator;
pub mod podman;
pub mod pods;
pub mod ports;
#[cfg(test)]
mod ports_tests;
pub mod promtool;
pub mod setup_cache;
pub mod stalled_readers;
pub mod tiny_model;

use std::fmt::Debug;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// For the modules shared with other test crates by path, which find it in their parent.
use setup_cache::setup_path;

/// How long `up.sh` may take to report the cluster ready. It takes a few seconds alone, but
/// tests run in parallel on small machines, where each apiserver competes for the CPU.
pub const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the teardown may take before the launcher is killed outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where `scripts/cluster/build.sh` puts the binaries.
pub fn bin_dir() -> PathBuf {
    let cache = std::env::var_os("MATTE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/matte"));
    cache.join("k8s/bin")
}

/// A running cluster; stopped and cleaned up on drop.
pub struct Cluster {
    launcher: Child,
    stdin: Option<ChildStdin>,
    state: PathBuf,
    launcher_log: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    bin: PathBuf,
    startup: Duration,
}

impl Cluster {
    /// Starts a cluster with `gpu_nodes` fake GPU nodes (0 is allowed) and waits until it is
    /// usable: apiserver ready, nodes Ready, the `default` ServiceAccount present.
    pub fn start(gpu_nodes: usize) -> Result<Cluster, String> {
        let bin = bin_dir();
        for name in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm"] {
            if !bin.join(name).is_file() {
                return Err(format!(
                    "{} is missing: run scripts/setup.sh --with-cluster (it builds the local control plane into {})",
                    bin.join(name).display(),
                    bin.display()
                ));
            }
        }
        // A name no other cluster of this or another test process uses; up.sh creates it.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("matte-e2e-{}-{}-{nanos}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed));
        let state = std::env::temp_dir().join(&name);
        // The launcher's own output goes next to the state directory, which up.sh removes.
        let launcher_log = std::env::temp_dir().join(format!("{name}.log"));
        let log = fs::File::create(&launcher_log).map_err(|e| format!("{}: {e}", launcher_log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;

        let began = Instant::now();
        let mut launcher = Command::new(repo_root().join("scripts/cluster/up.sh"))
            .arg("--gpu-nodes")
            .arg(gpu_nodes.to_string())
            .arg("--state-dir")
            .arg(&state)
            .env("MATTE_CACHE", bin.parent().and_then(Path::parent).expect("bin dir is <cache>/k8s/bin"))
            .env("MATTE_CLUSTER_LOWEST_PORT", ports::CLUSTER_LOWEST.to_string())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run scripts/cluster/up.sh: {e}"))?;
        let stdin = launcher.stdin.take();
        let mut cluster = Cluster {
            launcher,
            stdin,
            kubeconfig: state.join("admin.kubeconfig"),
            state,
            launcher_log,
            server: String::new(),
            bin,
            startup: Duration::ZERO,
        };

        let deadline = began + START_TIMEOUT;
        while !cluster.state.join("ready").exists() {
            if let Ok(Some(status)) = cluster.launcher.try_wait() {
                return Err(format!(
                    "scripts/cluster/up.sh exited ({status}) before the cluster was ready:\n{}",
                    cluster.launcher_output()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster was not ready after {START_TIMEOUT:?}:\n{}",
                    cluster.launcher_output()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.startup = began.elapsed();
        let env = fs::read_to_string(cluster.state.join("env")).map_err(|e| e.to_string())?;
        cluster.server = env
            .lines()
            .find_map(|line| line.strip_prefix("export MATTE_CLUSTER_SERVER="))
            .ok_or_else(|| format!("no MATTE_CLUSTER_SERVER in {}/env", cluster.state.display()))?
            .to_string();
        Ok(cluster)
    }

    /// The administrator's kubeconfig (client certificate, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding this cluster's certificates, data and logs (`logs/*.log`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// How long the cluster took to become ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Stops the apiserver, keeps it down a few seconds, starts it again on the same port
    /// with the same etcd, and returns once it is ready: what clients see during an
    /// upgrade or a crash of the control plane.
    pub fn restart_apiserver(&mut self) -> Result<Duration, String> {
        let count = |state: &Path| {
            fs::read_to_string(state.join("apiserver-restarts")).ok().and_then(|n| n.trim().parse::<u32>().ok())
        };
        let before = count(&self.state).unwrap_or(0);
        let began = Instant::now();
        let signalled = Command::new("kill").args(["-USR1", &self.launcher.id().to_string()]).status();
        if !matches!(signalled, Ok(status) if status.success()) {
            return Err(format!("cannot signal scripts/cluster/up.sh: {signalled:?}"));
        }
        while count(&self.state).unwrap_or(0) <= before {
            if let Ok(Some(status)) = self.launcher.try_wait() {
                return Err(format!(
                    "scripts/cluster/up.sh exited ({status}) during a restart:\n{}",
                    self.launcher_output()
                ));
            }
            if began.elapsed() > START_TIMEOUT {
                return Err(format!("the apiserver was not back after {START_TIMEOUT:?}:\n{}", self.launcher_output()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(began.elapsed())
    }

    /// `kubectl ARGS` against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// `kubectl ARGS`, panicking with its stderr unless it succeeds; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        expect_success("kubectl", args, &output)
    }

    /// Waits up to a minute for the CRD `name` to be Established. Polled here rather
    /// than with `kubectl wait`, which fails outright when its first read finds a CRD
    /// just created with no conditions yet.
    pub fn wait_crd_established(&self, name: &str) {
        let crd = format!("crd/{name}");
        let established = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
        wait_for(&format!("{crd} to be Established"), Duration::from_secs(60), || {
            let output = self.kubectl(&["get", &crd, "-o", established]);
            let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if output.status.success() && status == "True" { Ok(()) } else { Err(status) }
        });
    }

    /// `kubectl ARGS` JSON output (add `-o json` yourself), parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.kubectl_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kubectl {args:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// `kubectl ARGS` with `input` on its stdin (for `-f -`); the output, success or not.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_with_stdin(args, Some(input))
    }

    /// `kubectl apply -f -` with `yaml`; the output, success or not (refusals are tested).
    pub fn apply_yaml(&self, yaml: &str) -> Output {
        self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl apply -f -` with `yaml`, panicking with kubectl's stderr if it fails.
    pub fn apply_yaml_ok(&self, yaml: &str) -> String {
        let output = self.apply_yaml(yaml);
        expect_success("kubectl", &["apply", "-f", "-"], &output)
    }

    /// `helm ARGS` against this cluster, with helm's own files in the state directory.
    pub fn helm(&self, args: &[&str]) -> Output {
        helm(&self.state.join("helm")).args(args).env("KUBECONFIG", &self.kubeconfig).output().expect("run helm")
    }

    /// `helm ARGS`, panicking with its stderr unless it succeeds; returns its stdout.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let output = self.helm(args);
        expect_success("helm", args, &output)
    }

    fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(self.bin.join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.state.join("kube-cache"))
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes()).expect("write kubectl's stdin");
        }
        child.wait_with_output().expect("wait for kubectl")
    }

    fn launcher_output(&self) -> String {
        tail(&fs::read_to_string(&self.launcher_log).unwrap_or_default(), 60)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing stdin is the signal to tear down; then wait, bounded.
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.launcher.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!(
                        "scripts/cluster/up.sh did not stop within {STOP_TIMEOUT:?}; killing it (state: {})",
                        self.state.display()
                    );
                    let _ = self.launcher.kill();
                    let _ = self.launcher.wait();
                    break;
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("cluster launcher output ({}):\n{}", self.launcher_log.display(), self.launcher_output());
        } else {
            let _ = fs::remove_file(&self.launcher_log);
        }
    }
}

/// A `helm` command (the one `scripts/setup.sh --with-cluster` builds) that keeps its
/// caches and config under `home`: nothing lands in the user's home directory.
pub fn helm(home: &Path) -> Command {
    let mut command = Command::new(bin_dir().join("helm"));
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// The condition of type `type_` in an object's `status.conditions`, as kubectl prints it
/// with `-o json`.
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Polls `probe` every 200 ms until it returns `Ok`, and returns that value; panics after
/// `timeout` with `description` and the last `Err` it returned, so a failure says what was
/// expected and what there was instead.
pub fn wait_for<T, P: Debug>(description: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, P>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {description}; last seen: {last:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The stdout of a finished command, or a panic with its stderr if it failed.
pub fn expect_success(program: &str, args: &[&str], output: &Output) -> String {
    if !output.status.success() {
        panic!(
            "{program} {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
