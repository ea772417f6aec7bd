//! Many seeds of one scenario, summed up per policy: one seed's bursts can flatter or
//! sink any policy, so settings are tuned and policies compared over many.

use serde::Serialize;

use std::ops::Range;

use super::error::Error;
use super::outcome::Outcome;
use super::scalers::PolicyName;
use super::settings::Settings;
use super::table::{COST_COLUMNS, aligned, heading};
use super::{Report, compare};

/// The summary (`--seeds N --json` prints exactly this).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    pub source: String,
    pub seeds: Vec<u64>,
    /// The settings of the first seed's run (every run has the same).
    pub settings: Settings,
    pub mean_images: f64,
    pub mean_bursts: f64,
    pub policies: Vec<PolicySummary>,
}

/// One policy over every seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    pub policy: PolicyName,
    pub mean_slo_attainment: f64,
    pub worst_slo_attainment: f64,
    pub worst_seed: u64,
    /// Seeds on which at least 99 % of images were answered within the SLO.
    pub seeds_at_99_percent: usize,
    /// The mean p99 latency; `None` if on some seed the p99 image was never answered.
    pub mean_p99_seconds: Option<f64>,
    pub mean_gpu_seconds: f64,
    pub mean_added_node_seconds: f64,
    pub mean_pod_starts: f64,
    pub mean_wasted_starts: f64,
    pub mean_cancelled_starts: f64,
    pub mean_flaps: f64,
    /// 429s clients saw, per run.
    pub mean_rejections: f64,
    /// 503s from the gateway's budget running out, per run.
    pub mean_timeouts: f64,
}

/// Runs `policies` on every seed of `seeds`, each on the arrivals `arrivals` draws for
/// it, and sums them up.
pub fn run(
    settings: &Settings,
    seeds: Range<u64>,
    policies: &[PolicyName],
    source: &str,
    arrivals: impl Fn(u64) -> Vec<f64>,
) -> Result<Sweep, Error> {
    run_each(seeds.map(|seed| (seed, settings.clone(), arrivals(seed))), policies, source)
}

/// The `count` seeds from `first` on; an error when they run past the last seed.
pub fn seed_range(first: u64, count: u64) -> Result<Range<u64>, Error> {
    let end = first.checked_add(count).ok_or_else(|| {
        Error::InvalidSetting(format!("{count} seeds from seed {first} on run past the last seed ({})", u64::MAX))
    })?;
    Ok(first..end)
}

/// Runs `policies` on each run's arrivals with its settings and its seed's draws (traces
/// of one family, each as long as it lasts), and sums them up.
pub fn run_each(
    runs: impl IntoIterator<Item = (u64, Settings, Vec<f64>)>,
    policies: &[PolicyName],
    source: &str,
) -> Result<Sweep, Error> {
    let reports = runs
        .into_iter()
        .map(|(seed, settings, arrivals)| Ok(compare(&settings, arrivals, policies, seed, source.to_string())?.report))
        .collect::<Result<Vec<_>, Error>>()?;
    summarize(&reports).ok_or_else(|| Error::InvalidSetting("--seeds must be at least 1".into()))
}

/// Sums up reports of the same policies on different seeds; `None` for no reports.
pub fn summarize(reports: &[Report]) -> Option<Sweep> {
    let first = reports.first()?;
    let mean = |value: &dyn Fn(&Report) -> f64| reports.iter().map(value).sum::<f64>() / reports.len() as f64;
    let policies = first
        .outcomes
        .iter()
        .enumerate()
        .map(|(index, outcome)| {
            // Every report lists the same policies in the same order.
            let runs: Vec<(u64, &Outcome)> =
                reports.iter().filter_map(|report| report.outcomes.get(index).map(|o| (report.seed, o))).collect();
            let count = runs.len() as f64;
            let mean_of =
                |value: &dyn Fn(&Outcome) -> f64| runs.iter().map(|(_, outcome)| value(outcome)).sum::<f64>() / count;
            let (worst_seed, worst) = runs
                .iter()
                .map(|(seed, outcome)| (*seed, outcome.slo_attainment))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((first.seed, outcome.slo_attainment));
            let p99s: Option<Vec<f64>> = runs.iter().map(|(_, outcome)| outcome.p99_seconds).collect();
            PolicySummary {
                policy: outcome.policy,
                mean_slo_attainment: mean_of(&|outcome| outcome.slo_attainment),
                worst_slo_attainment: worst,
                worst_seed,
                seeds_at_99_percent: runs.iter().filter(|(_, outcome)| outcome.slo_attainment >= 0.99).count(),
                mean_p99_seconds: p99s.map(|p99s| p99s.iter().sum::<f64>() / count),
                mean_gpu_seconds: mean_of(&|outcome| outcome.gpu_seconds),
                mean_added_node_seconds: mean_of(&|outcome| outcome.added_node_seconds),
                mean_pod_starts: mean_of(&|outcome| outcome.pod_starts as f64),
                mean_wasted_starts: mean_of(&|outcome| outcome.wasted_starts as f64),
                mean_cancelled_starts: mean_of(&|outcome| outcome.cancelled_starts as f64),
                mean_flaps: mean_of(&|outcome| outcome.flaps as f64),
                mean_rejections: mean_of(&|outcome| outcome.rejections as f64),
                mean_timeouts: mean_of(&|outcome| outcome.timeouts as f64),
            }
        })
        .collect();
    Some(Sweep {
        source: first.source.clone(),
        seeds: reports.iter().map(|report| report.seed).collect(),
        settings: first.settings.clone(),
        mean_images: mean(&|report| report.images as f64),
        mean_bursts: mean(&|report| report.bursts as f64),
        policies,
    })
}

pub fn render(sweep: &Sweep) -> String {
    let seeds = match (sweep.seeds.first(), sweep.seeds.last()) {
        (Some(first), Some(last)) => format!("seeds {first}-{last}"),
        _ => "no seeds".to_string(),
    };
    let runs = format!(
        "{seeds}, {:.0} images in {:.0} bursts over {:.0}s per run on average",
        sweep.mean_images, sweep.mean_bursts, sweep.settings.duration_seconds
    );
    let mut text = heading(&sweep.source, &runs, &sweep.settings);
    let headers =
        [&["policy", "SLO % mean", "worst (seed)", ">=99 %", "p99 s"][..], &COST_COLUMNS, &["429s", "503s"]].concat();
    let rows: Vec<Vec<String>> = sweep
        .policies
        .iter()
        .map(|summary| {
            vec![
                summary.policy.label().to_string(),
                format!("{:.2}", 100.0 * summary.mean_slo_attainment),
                format!("{:.2} ({})", 100.0 * summary.worst_slo_attainment, summary.worst_seed),
                format!("{}/{}", summary.seeds_at_99_percent, sweep.seeds.len()),
                summary.mean_p99_seconds.map_or_else(|| "never".to_string(), |p99| format!("{p99:.1}")),
                format!("{:.0}", summary.mean_gpu_seconds),
                format!("{:.0}", summary.mean_added_node_seconds),
                format!("{:.1}", summary.mean_pod_starts),
                format!("{:.1}", summary.mean_wasted_starts),
                format!("{:.1}", summary.mean_cancelled_starts),
                format!("{:.1}", summary.mean_flaps),
                format!("{:.0}", summary.mean_rejections),
                format!("{:.0}", summary.mean_timeouts),
            ]
        })
        .collect();
    text.push_str(&aligned(&headers, &rows));
    text.push_str(
        "\nmeans over the seeds; worst: the lowest SLO attainment and its seed; >=99 %: seeds with at least 99 % within the SLO;\n\
         node-s: GPU-seconds of the nodes added on demand, launch to removal, idle included;\n\
         wasted: pods never ready, serving nothing, or ready when nothing waited; cancelled: given back before ready;\n\
         429s, 503s: refusals and gateway time-outs clients saw, per run.\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_past_the_last_are_refused_not_cut_short() {
        assert_eq!(seed_range(5, 3).expect("three seeds"), 5..8);
        let error = seed_range(u64::MAX - 1, 10).expect_err("past the last seed");
        assert!(error.to_string().contains("run past the last seed"), "{error}");
    }
}
