//! `matte-operator simulate`: from the arguments to what is printed.

use crate::cli::SimulateArgs;
use crate::error::Error;

use super::scalers::PolicyName;
use super::scenario::Scenario;
use super::{compare, plots, table, trace};

/// What the command prints: the report on stdout, notes (files written) on stderr.
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &SimulateArgs) -> Result<Printed, Error> {
    let (settings, arrivals, source) = match (&args.trace, args.scenario) {
        (Some(path), _) => {
            let arrivals = trace::read_file(path)?;
            let last = arrivals.last().copied().unwrap_or(0.0);
            let base = Scenario::BurstTrain.settings();
            let settings =
                args.overrides.apply(super::settings::Settings { duration_seconds: last.floor() + 1.0, ..base });
            (settings, arrivals, path.display().to_string())
        }
        (None, scenario) => {
            let scenario = scenario.unwrap_or(Scenario::BurstTrain);
            let settings = args.overrides.apply(scenario.settings());
            settings.validate()?;
            let arrivals = scenario.arrivals(&settings, args.seed);
            let name = clap::ValueEnum::to_possible_value(&scenario)
                .map_or_else(String::new, |value| value.get_name().to_string());
            (settings, arrivals, name)
        }
    };
    let policies = if args.policies.is_empty() {
        <PolicyName as clap::ValueEnum>::value_variants().to_vec()
    } else {
        args.policies.clone()
    };
    let comparison = compare(&settings, arrivals, &policies, args.seed, source)?;
    let stdout = if args.json {
        serde_json::to_string_pretty(&comparison.report)? + "\n"
    } else {
        table::render(&comparison.report)
    };
    let mut stderr = String::new();
    if let Some(directory) = &args.plots {
        for path in plots::write(&comparison, directory)? {
            stderr.push_str(&format!("wrote {}\n", path.display()));
        }
    }
    Ok(Printed { stdout, stderr })
}
