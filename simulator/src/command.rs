//! `matte-sim`: from the arguments to what is printed.

use crate::cli::Cli;
use crate::error::Error;

use super::scalers::PolicyName;
use super::scenario::Scenario;
use super::settings::Settings;
use super::{against_anchors, compare, families, plots, sweep, table, trace};

/// What the command prints: the report on stdout, notes (files written) on stderr.
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &Cli) -> Result<Printed, Error> {
    if args.every_scenario || args.every_family.is_some() {
        let (standings, kind) = match &args.every_family {
            Some(directory) => {
                let families = families::read(directory)?;
                (against_anchors::stand_families(&families, &args.overrides)?, "family")
            }
            None => (against_anchors::stand_scenarios(&args.overrides, args.seed, args.seeds)?, "scenario"),
        };
        let stdout = if args.json {
            serde_json::to_string_pretty(&standings)? + "\n"
        } else {
            against_anchors::render(&standings, kind)
        };
        return Ok(Printed { stdout, stderr: String::new() });
    }
    let traffic = Traffic::from_args(args)?;
    let policies = if args.policies.is_empty() {
        <PolicyName as clap::ValueEnum>::value_variants().to_vec()
    } else {
        args.policies.clone()
    };
    let seeds = args.seeds.unwrap_or(1);
    if seeds > 1 {
        let seeds = sweep::seed_range(args.seed, seeds)?;
        let summary =
            sweep::run(&traffic.settings, seeds, &policies, &traffic.source(), |seed| traffic.arrivals(seed))?;
        let stdout = if args.json { serde_json::to_string_pretty(&summary)? + "\n" } else { sweep::render(&summary) };
        return Ok(Printed { stdout, stderr: String::new() });
    }
    let comparison = compare(&traffic.settings, traffic.arrivals(args.seed), &policies, args.seed, traffic.source())?;
    let mut stdout = if args.json {
        serde_json::to_string_pretty(&comparison.report)? + "\n"
    } else {
        table::render(&comparison.report)
    };
    if args.bursts {
        stdout.push_str(&table::late_bursts(&comparison.bursts, &comparison.runs, traffic.settings.slo_seconds));
    }
    if args.decisions {
        stdout.push_str(&table::replica_changes(&comparison.runs));
    }
    let mut stderr = String::new();
    if let Some(directory) = &args.plots {
        for path in plots::write(&comparison, directory)? {
            stderr.push_str(&format!("wrote {}\n", path.display()));
        }
    }
    Ok(Printed { stdout, stderr })
}

/// Where the arrivals come from: a trace file (the same on every seed) or a scenario
/// (drawn from the seed).
struct Traffic {
    settings: Settings,
    source: Source,
}

enum Source {
    Trace { path: String, arrivals: Vec<f64> },
    Scenario(Scenario),
}

impl Traffic {
    fn from_args(args: &Cli) -> Result<Self, Error> {
        if let Some(path) = &args.trace {
            let arrivals = trace::read_file(path)?;
            let settings = trace::settings(&arrivals, &args.overrides)?;
            return Ok(Self { settings, source: Source::Trace { path: path.display().to_string(), arrivals } });
        }
        let scenario = args.scenario.unwrap_or(Scenario::BurstTrain);
        let settings = args.overrides.apply(scenario.settings());
        settings.validate()?;
        Ok(Self { settings, source: Source::Scenario(scenario) })
    }

    fn arrivals(&self, seed: u64) -> Vec<f64> {
        match &self.source {
            Source::Trace { arrivals, .. } => arrivals.clone(),
            Source::Scenario(scenario) => scenario.arrivals(&self.settings, seed),
        }
    }

    /// The scenario's name or the trace file's path.
    fn source(&self) -> String {
        match &self.source {
            Source::Trace { path, .. } => path.clone(),
            Source::Scenario(scenario) => scenario.name(),
        }
    }
}
