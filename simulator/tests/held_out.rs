//! The traffic no scenario has (`held-out/`): every family draws the same trace from the
//! same seed, the simulator reads each, and the comparison runs end to end on the
//! simulator built here, holding Matte to the bar.

use std::path::{Path, PathBuf};
use std::process::Command;

fn held_out(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("held-out").join(script)
}

/// Runs a script of `held-out/` with Python 3, expecting success; its standard output.
fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new("python3").arg(held_out(script)).args(args).output().expect("python3 runs");
    assert!(output.status.success(), "{script} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn every_family_draws_the_same_trace_from_a_seed_and_the_simulator_reads_it() {
    let families: Vec<String> = python("traces.py", &["--list"])
        .lines()
        .map(|line| line.split(':').next().expect("a name").to_string())
        .collect();
    assert_eq!(families.len(), 16, "{families:?}");
    for family in &families {
        let first = python("traces.py", &[family, "3"]);
        assert_eq!(first, python("traces.py", &[family, "3"]), "{family}: another trace from the same seed");
        assert_ne!(first, python("traces.py", &[family, "4"]), "{family}: the same trace from another seed");
        let arrivals = matte_sim::trace::parse(&first, Path::new(family)).expect("a trace the simulator reads");
        assert!(arrivals.len() >= 100, "{family}: {} arrivals", arrivals.len());
    }
}

#[test]
fn the_comparison_holds_matte_to_the_bar_on_each_family() {
    let table = python("compare.py", &["--bin", env!("CARGO_BIN_EXE_matte-sim"), "--seeds", "2", "sawtooth", "pairs"]);
    for family in ["sawtooth", "pairs"] {
        let row = table.lines().find(|line| line.starts_with(family)).unwrap_or_else(|| panic!("no {family}: {table}"));
        let verdict = ["met", "no: attainment", "no: GPU-s"].iter().any(|verdict| row.ends_with(verdict));
        assert!(verdict, "{family}: no verdict in {row:?}");
        let figures: Vec<f64> = row.split_whitespace().filter_map(|field| field.parse().ok()).collect();
        assert_eq!(figures.len(), 8, "{family}: attainment, GPU-seconds, starts and node-seconds twice: {row:?}");
        assert!(figures[0] > 50.0 && figures[0] <= 100.0, "{family}: Matte's attainment {}", figures[0]);
    }
    assert!(table.contains("met on"), "{table}");
    assert!(table.contains("seeds 1-2"), "{table}");
}
