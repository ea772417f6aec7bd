//! The traffic no scenario has (`held-out/`): every family draws the same trace from the
//! same seed, the simulator reads each, and `--every-family` holds Matte to the bar on
//! the families as `traces.py --write` lays them out, on the simulator built here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn traces_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("held-out").join("traces.py")
}

/// Runs `traces.py` with Python 3, expecting success; its standard output.
fn traces(args: &[&str]) -> String {
    let output = Command::new("python3").arg(traces_py()).args(args).output().expect("python3 runs");
    assert!(output.status.success(), "traces.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn every_family_draws_the_same_trace_from_a_seed_and_the_simulator_reads_it() {
    let families: Vec<String> =
        traces(&["--list"]).lines().map(|line| line.split(':').next().expect("a name").to_string()).collect();
    assert_eq!(families.len(), 16, "{families:?}");
    for family in &families {
        let first = traces(&[family, "3"]);
        assert_eq!(first, traces(&[family, "3"]), "{family}: another trace from the same seed");
        assert_ne!(first, traces(&[family, "4"]), "{family}: the same trace from another seed");
        let arrivals = matte_sim::trace::parse(&first, Path::new(family)).expect("a trace the simulator reads");
        assert!(arrivals.len() >= 100, "{family}: {} arrivals", arrivals.len());
    }
}

#[test]
fn every_family_written_is_held_to_the_bar_on_the_traces_of_its_seeds() {
    let folder = std::env::temp_dir().join(format!("matte-held-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let written = folder.to_str().expect("a UTF-8 path");
    traces(&["--write", written, "--seed", "5", "--seeds", "2", "sawtooth", "pairs"]);
    assert_eq!(
        std::fs::read_to_string(folder.join("pairs").join("6.txt")).expect("seed 6 of pairs"),
        traces(&["pairs", "6"]),
        "the trace --write lays out is the one the seed draws"
    );
    let refused = Command::new("python3").arg(traces_py()).args(["--write", written]).output().expect("runs");
    assert!(!refused.status.success(), "a folder written before is not written into again");

    let output = Command::new(env!("CARGO_BIN_EXE_matte-sim"))
        .args(["--every-family", written, "--routing", "gateway"])
        .output()
        .expect("matte-sim runs");
    let _ = std::fs::remove_dir_all(&folder);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(table.starts_with("family"), "{table}");
    for family in ["sawtooth", "pairs"] {
        let row = table.lines().find(|line| line.starts_with(family)).unwrap_or_else(|| panic!("no {family}: {table}"));
        let verdict = ["met", "no: attainment", "no: GPU-s"].iter().any(|verdict| row.ends_with(verdict));
        assert!(verdict, "{family}: no verdict in {row:?}");
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[1], "2", "{family}: two traces, seeds 5 and 6: {row:?}");
        let attainment: f64 = fields[2].parse().expect("Matte's attainment");
        assert!(attainment > 50.0 && attainment <= 100.0, "{family}: Matte's attainment {attainment}");
    }
    assert!(table.contains("met on"), "{table}");
}
