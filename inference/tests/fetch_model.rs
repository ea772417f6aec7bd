//! `matte-inference fetch-model`, the real binary, against a loopback HTTPS server with
//! its own CA (tests/fixtures/https_file_server.py): verified downloads, refusals, and
//! messages that say why.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "Bearer s3cret-model-token";

/// The loopback HTTPS server; killed on drop.
struct HttpsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl HttpsServer {
    /// Serves `files` (name, content) over HTTPS, requiring `authorization` if given.
    fn start(name: &str, files: &[(&str, &[u8])], authorization: Option<&str>) -> HttpsServer {
        let dir = std::env::temp_dir().join(format!("matte-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "tls", "out"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the test directories");
        }
        for (file, content) in files {
            std::fs::write(dir.join("root").join(file), content).expect("write a served file");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/https_file_server.py");
        let mut command = Command::new("python3");
        command.arg(script).arg("--root").arg(dir.join("root")).arg("--tls-dir").arg(dir.join("tls"));
        if let Some(value) = authorization {
            command.args(["--authorization", value]);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read the port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the server printed no port: {line:?}"));
        HttpsServer { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    fn output(&self) -> PathBuf {
        self.dir.join("out/model.onnx")
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fetch(args: &[&str], authorization: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_matte-inference"));
    command.arg("fetch-model").args(args).env_remove("MATTE_MODEL_AUTHORIZATION");
    if let Some(value) = authorization {
        command.env("MATTE_MODEL_AUTHORIZATION", value);
    }
    // The downloads here end within their own time-outs; one that did not would hold
    // the test for ever.
    support::output_within(command, Duration::from_secs(120))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sha256(bytes: &[u8]) -> String {
    // The digest from another implementation than the binary's: Python's hashlib.
    let output = Command::new("python3")
        .args(["-c", "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(bytes)?;
            child.wait_with_output()
        })
        .expect("python3 hashes");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Some megabytes that are not all alike, so a truncation or a mix-up changes the digest.
fn model_bytes() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn leftovers(server: &HttpsServer) -> Vec<String> {
    std::fs::read_dir(server.dir.join("out"))
        .expect("list the output directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_model_is_downloaded_over_https_from_a_private_ca_and_verified() {
    let model = model_bytes();
    let server = HttpsServer::start("ok", &[("isnet.onnx", &model)], None);
    let (url, ca, output) = (server.url("isnet.onnx"), server.ca(), server.output());
    let digest = sha256(&model);
    let args =
        ["--url", &url, "--sha256", &digest, "--ca-file", ca.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let run = fetch(&args, None);
    assert!(run.status.success(), "fetch-model failed: {}", stderr(&run));
    assert!(stderr(&run).contains("verified and installed (3000000 bytes"), "{}", stderr(&run));
    assert_eq!(std::fs::read(&output).expect("the model is there"), model);
    assert_eq!(leftovers(&server), ["model.onnx"], "no partial file is left behind");

    // A restarted pod keeps its emptyDir: a verified model is not fetched again, even
    // when the server is gone.
    std::fs::remove_file(server.dir.join("root/isnet.onnx")).expect("remove the served model");
    let again = fetch(&args, None);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("already present and verified"), "{}", stderr(&again));
}

#[test]
fn a_wrong_sha256_installs_nothing_and_says_both_digests() {
    let model = model_bytes();
    let server = HttpsServer::start("mismatch", &[("isnet.onnx", &model)], None);
    let (url, ca, output) = (server.url("isnet.onnx"), server.ca(), server.output());
    let wrong = "0".repeat(64);
    let run = fetch(
        &["--url", &url, "--sha256", &wrong, "--ca-file", ca.to_str().unwrap(), "--output", output.to_str().unwrap()],
        None,
    );
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(message.contains(&wrong) && message.contains(&sha256(&model)), "{message}");
    assert!(leftovers(&server).is_empty(), "nothing may be installed: {:?}", leftovers(&server));
}

#[test]
fn plain_http_and_bad_digests_are_refused_before_any_connection() {
    let run =
        fetch(&["--url", "http://127.0.0.1:9/model.onnx", "--sha256", &"a".repeat(64), "--output", "/tmp/x"], None);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("is not an https:// URL"), "{}", stderr(&run));

    let run = fetch(&["--url", "https://127.0.0.1:9/model.onnx", "--sha256", "abc", "--output", "/tmp/x"], None);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("is not 64 lowercase hex digits"), "{}", stderr(&run));
}

#[test]
fn a_server_outside_the_trusted_roots_is_refused() {
    let server = HttpsServer::start("untrusted", &[("isnet.onnx", b"model")], None);
    let (url, output) = (server.url("isnet.onnx"), server.output());
    let run = fetch(&["--url", &url, "--sha256", &sha256(b"model"), "--output", output.to_str().unwrap()], None);
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(message.contains("certificate") || message.contains("Certificate"), "{message}");
    assert!(leftovers(&server).is_empty());
}

#[test]
fn credentials_come_from_the_environment_and_never_reach_the_log() {
    let server = HttpsServer::start("auth", &[("isnet.onnx", b"private model")], Some(TOKEN));
    let (url, ca, output) = (server.url("isnet.onnx?sig=query-secret"), server.ca(), server.output());
    let digest = sha256(b"private model");
    let args =
        ["--url", &url, "--sha256", &digest, "--ca-file", ca.to_str().unwrap(), "--output", output.to_str().unwrap()];

    let refused = fetch(&args, None);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    assert!(!stderr(&refused).contains("query-secret"), "the query is redacted: {}", stderr(&refused));

    let run = fetch(&args, Some(TOKEN));
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stderr(&run).contains("s3cret") && !stderr(&run).contains("query-secret"), "{}", stderr(&run));
    assert_eq!(std::fs::read(&output).expect("the model is there"), b"private model");
}

/// Fetches `path` from `server` with a 2 s time-out, and checks that it was abandoned at
/// it and left nothing behind.
fn abandoned_at_a_two_second_timeout(server: &HttpsServer, path: &str, digest: &str) {
    let (url, ca, output) = (server.url(path), server.ca(), server.output());
    let args = [
        "--url",
        &url,
        "--sha256",
        digest,
        "--ca-file",
        ca.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--timeout-seconds",
        "2",
    ];
    let run = fetch(&args, None);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("took longer than 2 s"), "{}", stderr(&run));
    assert!(leftovers(server).is_empty(), "the partial file is removed: {:?}", leftovers(server));
}

#[test]
fn a_download_that_outlasts_its_timeout_is_abandoned() {
    let server = HttpsServer::start("stall", &[], None);
    abandoned_at_a_two_second_timeout(&server, "stall", &"a".repeat(64));
}

#[test]
fn a_write_that_never_finishes_leaves_the_time_out_running_and_the_process_exits() {
    // A named pipe where the partial file goes stands in for a stalled disk: opening it
    // for writing blocks until a reader comes, and none does.
    let model = model_bytes();
    let server = HttpsServer::start("stalled-disk", &[("isnet.onnx", &model)], None);
    let partial = server.dir.join("out/model.onnx.partial");
    let made = Command::new("mkfifo").arg(&partial).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", partial.display());
    let began = std::time::Instant::now();
    abandoned_at_a_two_second_timeout(&server, "isnet.onnx", &sha256(&model));
    // Written on the runtime's one thread, the blocked open stopped every time-out, and
    // the process hung until killed; with the write on the blocking pool, the process
    // must also not wait for that thread to exit.
    assert!(began.elapsed() < Duration::from_secs(30), "exited after {:?}", began.elapsed());
}

#[test]
fn a_model_larger_than_the_limit_is_refused_and_an_endless_one_cut_at_it() {
    let model = model_bytes();
    let server = HttpsServer::start("too-large", &[("isnet.onnx", &model)], None);
    let (ca, output) = (server.ca(), server.output());
    let digest = sha256(&model);
    let run = |path: &str, max_bytes: &str| {
        let url = server.url(path);
        let args = ["--url", &url, "--sha256", &digest, "--ca-file", ca.to_str().unwrap()];
        fetch(&[&args[..], &["--output", output.to_str().unwrap(), "--max-bytes", max_bytes]].concat(), None)
    };

    // Announced larger than the limit: refused before anything is written.
    let refused = run("isnet.onnx", "1000000");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("larger than --max-bytes 1000000"), "{}", stderr(&refused));
    assert!(leftovers(&server).is_empty(), "{:?}", leftovers(&server));

    // No length, no end: cut once past the limit, long before the download's timeout.
    let started = std::time::Instant::now();
    let cut = run("endless", "2000000");
    assert!(!cut.status.success());
    assert!(stderr(&cut).contains("larger than --max-bytes 2000000"), "{}", stderr(&cut));
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
    assert!(leftovers(&server).is_empty(), "the partial file is removed: {:?}", leftovers(&server));

    // At the limit exactly, it is the model.
    let fits = run("isnet.onnx", &model.len().to_string());
    assert!(fits.status.success(), "{}", stderr(&fits));
}
