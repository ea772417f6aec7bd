//! Matte's own images in a real container runtime: podman with runc on the host network
//! (`scripts/setup.sh --with-images` installs and configures it; `CONTAINERS_CONF` comes
//! from `$MATTE_CACHE/env.sh`). The images are the ones `scripts/images/build.sh` builds,
//! built once per test process from this workspace's binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::{expect_success, repo_root};

/// The names `scripts/images/build.sh` tags.
#[derive(Debug, Clone)]
pub struct Images {
    pub operator: String,
    pub gateway: String,
    pub inference: String,
    pub version: String,
}

/// Builds (or finds up to date) the images of this workspace, once per process. The dev
/// profile's binaries, which `cargo test` has built already, so that this compiles
/// nothing more.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("scripts/images/build.sh"))
            .args(["--profile", "dev"])
            .output()
            .expect("run scripts/images/build.sh");
        expect_success("scripts/images/build.sh", &["--profile", "dev"], &output);
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        let version = env!("CARGO_PKG_VERSION").to_owned();
        Images {
            // The dev profile's tags (scripts/images/build.sh).
            operator: format!("localhost/matte-operator:{version}-dev"),
            gateway: format!("localhost/matte-gateway:{version}-dev"),
            inference: format!("localhost/matte-inference:{version}-dev"),
            version,
        }
    })
}

/// A `podman` command; the configuration comes from the environment (`CONTAINERS_CONF`).
/// It runs in the temporary directory because `podman kube play` builds an image from a
/// directory of the working directory that bears the image's name, if there is one.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run podman (scripts/setup.sh --with-images)")
}

/// `podman ARGS`, panicking with its stderr unless it succeeds; returns its stdout.
pub fn podman_ok(args: &[&str]) -> String {
    expect_success("podman", args, &podman(args))
}

/// A loopback HTTPS server (tests/fixtures/https_file_server.py) serving the files of a
/// directory with a throwaway CA of its own; killed on drop.
pub struct HttpsFileServer {
    child: Child,
    pub port: u16,
    /// The CA's certificate (PEM), what a client must trust.
    pub ca: PathBuf,
}

impl HttpsFileServer {
    pub fn start(root: &Path, tls_dir: &Path) -> HttpsFileServer {
        std::fs::create_dir_all(tls_dir).expect("create the TLS directory");
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/fixtures/https_file_server.py"))
            .arg("--root")
            .arg(root)
            .arg("--tls-dir")
            .arg(tls_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read the port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the HTTPS server printed no port: {line:?}"));
        HttpsFileServer { child, port, ca: tls_dir.join("ca.pem") }
    }
}

impl Drop for HttpsFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
