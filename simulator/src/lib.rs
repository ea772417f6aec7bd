//! The burst simulator: the same trace, the same pods and the same metrics pipeline for
//! every policy, so that their numbers can be compared. Matte's policy is fed exactly
//! what the operator reads: every quantity computed from simulated scrapes through the
//! definitions of `matte_policy::observed`.

pub mod against_anchors;
pub mod cli;
pub mod command;
pub mod engine;
pub mod error;
pub mod families;
pub mod gpus;
pub mod outcome;
pub mod plots;
pub mod prometheus;
pub mod random;
pub mod record;
pub mod scalers;
pub mod scenario;
pub mod settings;
pub mod startups;
pub mod sweep;
pub mod table;
pub mod trace;
pub mod workload;

use serde::Serialize;

use crate::error::Error;
use outcome::Outcome;
use record::RunRecord;
use scalers::PolicyName;
use settings::Settings;
use trace::Burst;
use workload::Workload;

/// The comparison as reported (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The scenario's name or the trace file's path.
    pub source: String,
    pub seed: u64,
    pub settings: Settings,
    pub images: usize,
    pub bursts: usize,
    pub outcomes: Vec<Outcome>,
}

/// The report and the raw runs behind it (for plots).
pub struct Comparison {
    pub report: Report,
    pub runs: Vec<(PolicyName, RunRecord)>,
    pub bursts: Vec<Burst>,
}

/// Runs every policy on the same arrivals, service times and start-up draws.
pub fn compare(
    settings: &Settings,
    arrivals: Vec<f64>,
    policies: &[PolicyName],
    seed: u64,
    source: String,
) -> Result<Comparison, Error> {
    settings.validate()?;
    let workload = Workload::new(arrivals, settings, seed);
    let bursts = trace::bursts(&workload.arrivals, settings.burst_quiet_gap_seconds);
    let mut runs = Vec::new();
    let mut outcomes = Vec::new();
    for &policy in policies {
        let mut scaler = scalers::build(policy, settings, &workload);
        let run = engine::run(settings, &workload, scaler.as_mut(), seed);
        outcomes.push(outcome::outcome(policy, settings, &bursts, &run));
        runs.push((policy, run));
    }
    let report = Report {
        source,
        seed,
        settings: settings.clone(),
        images: workload.arrivals.len(),
        bursts: bursts.len(),
        outcomes,
    };
    Ok(Comparison { report, runs, bursts })
}
