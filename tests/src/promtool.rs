//! `promtool check metrics` (Debian's prometheus package) on an exposition: the
//! metrics tests of the pod and the gateway hold their `/metrics` to it.
//!
//! One definition for every test crate: the inference server's tests include this file
//! by path (they cannot depend on this crate).

use std::io::Write;
use std::process::{Command, Stdio};

/// Panics with promtool's complaints unless it prints nothing and exits 0 for
/// `exposition`, as it does for a clean one.
pub fn promtool_check(exposition: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is on the PATH (scripts/setup.sh unpacks Debian's prometheus package; source its env.sh)");
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && complaints.trim().is_empty(), "promtool: {complaints}");
}
