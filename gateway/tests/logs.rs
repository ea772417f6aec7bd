//! What the `matte-gateway` binary writes to stderr, as `kubectl logs` or a log pipeline
//! reads it: one JSON object a line with the event's fields beside its message, or text
//! without a terminal's colour codes. The pod and the operator write through the same
//! `matte_serve::logging`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::free_port;

/// The gateway's first log line that contains `needle`, from a process started with
/// `flags`, or the lines it wrote before it stopped or 30 s passed.
fn first_line_with(needle: &str, flags: &[&str]) -> Result<String, Vec<String>> {
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
    let mut seen = Vec::new();
    let found = loop {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(needle) => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.ok_or(seen)
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
