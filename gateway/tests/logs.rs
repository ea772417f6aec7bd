//! What the `matte-gateway` binary writes to stderr, as `kubectl logs` or a log pipeline
//! reads it: one JSON object a line with the event's fields beside its message, or text
//! without a terminal's colour codes. The pod and the operator write through the same
//! `matte_serve::logging`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::free_port;

/// A `matte-gateway` process started with `flags`, and the lines of its stderr as they
/// come.
fn start(flags: &[&str]) -> (Child, mpsc::Receiver<String>, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_matte-gateway"))
        .args(["--listen", &listen, "--drain-delay-seconds", "0"])
        .args(flags)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("matte-gateway starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received, format!("http://{listen}"))
}

/// The next line that contains `needle`, or the lines before it until the process
/// stopped or 30 s passed.
fn next_line_with(received: &mpsc::Receiver<String>, needle: &str) -> Result<String, Vec<String>> {
    let mut seen = Vec::new();
    loop {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => return Err(seen),
        }
    }
}

/// The gateway's first log line that contains `needle`, from a process started with
/// `flags`, or the lines it wrote before it stopped or 30 s passed.
fn first_line_with(needle: &str, flags: &[&str]) -> Result<String, Vec<String>> {
    let (mut child, received, _) = start(flags);
    let found = next_line_with(&received, needle);
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn json_logs_put_each_events_fields_beside_its_message() {
    let line = first_line_with("listening", &["--log-format", "json"]).unwrap_or_else(|seen| {
        panic!("no line says listening; the gateway wrote: {seen:#?}");
    });
    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(event["message"], "listening", "{line}");
    assert_eq!(event["level"], "INFO", "{line}");
    assert!(event["addr"].as_str().is_some_and(|addr| addr.starts_with("127.0.0.1:")), "{line}");
    assert!(event.get("fields").is_none(), "fields nested under `fields`: {line}");
    assert!(event["timestamp"].is_string(), "{line}");
}

#[test]
fn text_logs_written_to_a_pipe_have_no_colour_codes() {
    let line = first_line_with("listening", &["--log-format", "text"]).unwrap_or_else(|seen| {
        panic!("no line says listening; the gateway wrote: {seen:#?}");
    });
    assert!(!line.contains('\u{1b}'), "escape codes in a piped log: {line:?}");
    assert!(line.contains("addr=127.0.0.1:"), "{line}");
}

/// A pod that is ready and answers every image 503, as one shutting down does.
fn pod_answering_503() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("its address").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let read = stream.read(&mut request).unwrap_or(0);
                let answer: &[u8] = if request[..read].starts_with(b"GET ") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                };
                let _ = stream.write_all(answer);
            });
        }
    });
    address
}

fn event(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn a_pod_joining_and_turning_unavailable_is_logged_with_its_address() {
    let pod = pod_answering_503();
    let (mut child, received, base) = start(&["--log-format", "json", "--upstream", &pod]);
    let added = next_line_with(&received, "pods added").unwrap_or_else(|seen| panic!("{seen:#?}"));
    let added = event(&added);
    assert_eq!(added["level"], "INFO", "{added}");
    let listed = |field: &str| added[field].as_str().is_some_and(|pods| pods.contains(&pod));
    assert!(listed("ready") || listed("unready"), "{added}");
    // Sent once the gateway counts the pod ready, so that it reaches the pod.
    let started = std::time::Instant::now();
    while support::metric_value(
        &support::scrape(&format!("{base}/metrics")),
        r#"matte_gateway_endpoints{state="ready"}"#,
    ) != 1.0
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the pod never turned ready in the gateway");
        std::thread::sleep(Duration::from_millis(100));
    }

    let answer = support::blocking_client()
        .post(format!("{base}/v1/remove"))
        .header("content-type", "image/png")
        .header("x-matte-max-wait-seconds", "0")
        .body(vec![1u8; 10])
        .send()
        .expect("the gateway answers");
    assert_eq!(answer.status(), 503);
    let unavailable = next_line_with(&received, "pod marked unavailable").unwrap_or_else(|seen| panic!("{seen:#?}"));
    let _ = child.kill();
    let _ = child.wait();
    let unavailable = event(&unavailable);
    assert_eq!(unavailable["level"], "WARN", "{unavailable}");
    assert_eq!(unavailable["upstream"], pod.as_str(), "{unavailable}");
    assert_eq!(unavailable["reason"], "answered 503", "{unavailable}");
    assert!(unavailable["seconds"].as_f64().is_some_and(|seconds| seconds > 0.0), "{unavailable}");
}
