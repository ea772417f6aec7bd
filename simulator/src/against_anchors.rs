//! Every scenario at once, Matte against the best of the anchors (`--every-scenario`):
//! the HPA, KEDA and Knative's KPA at their defaults, each over many seeds. The bar on
//! traffic a policy was not tuned on is the best anchor's attainment (the share of
//! images answered within the SLO), at fewer GPU-seconds than that anchor. A static
//! fleet, sized for each scenario by hand, and the oracle are references, not anchors.
//! Families of traces (`--every-family`) are held to the same bar, each family as a
//! scenario, each of its traces as a seed.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::cli::Overrides;
use crate::error::Error;
use crate::families::Family;
use crate::scalers::PolicyName;
use crate::scenario::Scenario;
use crate::sweep::{self, PolicySummary, Sweep};
use crate::table::aligned;
use crate::trace;

/// The autoscalers Matte is held against.
pub const ANCHORS: [PolicyName; 3] = [PolicyName::Hpa, PolicyName::Keda, PolicyName::Kpa];

/// Whether Matte clears the bar on one scenario, and if not, where it falls short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// At least the best anchor's attainment, at fewer GPU-seconds.
    Met,
    /// Fewer images within the SLO than the best anchor.
    LowerAttainment,
    /// As many images within the SLO, but at no fewer GPU-seconds.
    NoFewerGpuSeconds,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::LowerAttainment => "no: attainment",
            Verdict::NoFewerGpuSeconds => "no: GPU-s",
        }
    }
}

/// Matte and the best anchor on one scenario or family of traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    /// The scenario's or the family's name.
    pub traffic: String,
    pub seeds: Vec<u64>,
    pub matte: PolicySummary,
    pub best_anchor: PolicySummary,
    pub verdict: Verdict,
}

/// The scenarios the bar applies to: all but burst-train, which has targets of its own
/// (against the oracle's GPU-seconds and the anchors' starts), and `hundred-in-ten`,
/// which asks how large a warm fleet must be (every policy keeps the same one) rather
/// than how to scale.
pub fn scenarios() -> impl Iterator<Item = Scenario> {
    <Scenario as clap::ValueEnum>::value_variants()
        .iter()
        .copied()
        .filter(|scenario| !matches!(scenario, Scenario::BurstTrain | Scenario::HundredInTen))
}

/// The anchor with the highest mean attainment; of anchors level with it, the one that
/// used the fewest GPU-seconds.
pub fn best_anchor(summaries: &[PolicySummary]) -> Option<&PolicySummary> {
    summaries.iter().filter(|summary| ANCHORS.contains(&summary.policy)).max_by(|a, b| {
        a.mean_slo_attainment
            .total_cmp(&b.mean_slo_attainment)
            .then_with(|| b.mean_gpu_seconds.total_cmp(&a.mean_gpu_seconds))
    })
}

/// Whether Matte clears the bar against `anchor`.
pub fn verdict(matte: &PolicySummary, anchor: &PolicySummary) -> Verdict {
    if matte.mean_slo_attainment < anchor.mean_slo_attainment {
        Verdict::LowerAttainment
    } else if matte.mean_gpu_seconds >= anchor.mean_gpu_seconds {
        Verdict::NoFewerGpuSeconds
    } else {
        Verdict::Met
    }
}

/// Matte and the anchors.
fn held_to_the_bar() -> Vec<PolicyName> {
    std::iter::once(PolicyName::Matte).chain(ANCHORS).collect()
}

/// Every scenario held to the bar ([`scenarios`]), with `overrides`, over `seeds` seeds
/// from `first_seed` on (each scenario's own count when `None`), the scenarios spread
/// over the machine's cores.
pub fn stand_scenarios(overrides: &Overrides, first_seed: u64, seeds: Option<u64>) -> Result<Vec<Standing>, Error> {
    let scenarios: Vec<Scenario> = scenarios().collect();
    on_every_core(&scenarios, |&scenario| stand(scenario, overrides, first_seed, seeds))
}

/// Runs Matte and the anchors on `scenario` with `overrides`, over `seeds` seeds from
/// `first_seed` on (the scenario's own count when `None`).
pub fn stand(
    scenario: Scenario,
    overrides: &Overrides,
    first_seed: u64,
    seeds: Option<u64>,
) -> Result<Standing, Error> {
    let settings = overrides.apply(scenario.settings());
    // Before any arrivals are drawn: a duration of a year would draw them for hours.
    settings.validate()?;
    let count = seeds.unwrap_or_else(|| scenario.seeds_measured());
    let summary =
        sweep::run(&settings, sweep::seed_range(first_seed, count)?, &held_to_the_bar(), &scenario.name(), |seed| {
            scenario.arrivals(&settings, seed)
        })?;
    standing(scenario.name(), summary)
}

/// Every family held to the bar, each of its traces run with burst-train's pods (as
/// `--trace` runs one) and `overrides`, on its seed's draws; the families spread over
/// the machine's cores.
pub fn stand_families(families: &[Family], overrides: &Overrides) -> Result<Vec<Standing>, Error> {
    on_every_core(families, |family| {
        let runs = family
            .traces
            .iter()
            .map(|(&seed, arrivals)| Ok((seed, trace::settings(arrivals, overrides)?, arrivals.clone())))
            .collect::<Result<Vec<_>, Error>>()?;
        let summary = sweep::run_each(runs, &held_to_the_bar(), &family.name)?;
        standing(family.name.clone(), summary)
    })
}

/// Matte's standing in a sweep of it and the anchors.
fn standing(traffic: String, summary: Sweep) -> Result<Standing, Error> {
    let find = |policy| summary.policies.iter().find(|summary| summary.policy == policy).cloned();
    let (Some(matte), Some(best_anchor)) = (find(PolicyName::Matte), best_anchor(&summary.policies).cloned()) else {
        return Err(Error::InvalidSetting(format!("{traffic}: a policy reported nothing")));
    };
    let verdict = verdict(&matte, &best_anchor);
    Ok(Standing { traffic, seeds: summary.seeds, matte, best_anchor, verdict })
}

/// `work` on every item, on as many threads as the machine has cores (each run is
/// independent and seeded, so the results are those of one thread), in the items'
/// order; the first item's error if any fails.
fn on_every_core<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> Result<R, Error> + Sync) -> Result<Vec<R>, Error> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<R, Error>)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = work(item);
                    done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((index, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// One line per scenario (or family, as `traffic` says), and how many clear the bar.
pub fn render(standings: &[Standing], traffic: &str) -> String {
    let headers = [
        traffic,
        "seeds",
        "matte SLO % (worst)",
        "GPU-s",
        "starts",
        "node-s",
        "best anchor",
        "SLO % (worst)",
        "GPU-s",
        "starts",
        "node-s",
        "bar",
    ];
    let figures = |summary: &PolicySummary| {
        [
            format!("{:.2} ({:.2})", 100.0 * summary.mean_slo_attainment, 100.0 * summary.worst_slo_attainment),
            format!("{:.0}", summary.mean_gpu_seconds),
            format!("{:.1}", summary.mean_pod_starts),
            format!("{:.0}", summary.mean_added_node_seconds),
        ]
    };
    let rows: Vec<Vec<String>> = standings
        .iter()
        .map(|standing| {
            let mut row = vec![standing.traffic.clone(), standing.seeds.len().to_string()];
            row.extend(figures(&standing.matte));
            row.push(standing.best_anchor.policy.label().to_string());
            row.extend(figures(&standing.best_anchor));
            row.push(standing.verdict.label().to_string());
            row
        })
        .collect();
    let mut text = aligned(&headers, &rows);
    let met = standings.iter().filter(|standing| standing.verdict == Verdict::Met).count();
    let _ = writeln!(
        text,
        "\nthe bar: at least the best anchor's (HPA, KEDA, KPA) SLO attainment, at fewer GPU-seconds; met on {met} of {}.\n\
         means over the seeds; worst: the lowest seed's attainment; node-s: GPU-seconds of the nodes added on demand.",
        standings.len()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_with_invalid_settings_is_refused_before_its_arrivals_are_drawn() {
        // Drawn first, a year of arrivals would take hours, and forever for infinity.
        for duration in [f64::INFINITY, 3.2e7] {
            let overrides = Overrides { duration: Some(duration), ..Overrides::default() };
            let Err(error) = stand(Scenario::PeriodicBursts, &overrides, 1, Some(1)) else { panic!("{duration}s ran") };
            assert!(error.to_string().contains("the duration must be"), "{error}");
        }
    }

    fn summary(policy: PolicyName, attainment: f64, gpu_seconds: f64) -> PolicySummary {
        PolicySummary {
            policy,
            mean_slo_attainment: attainment,
            worst_slo_attainment: attainment,
            worst_seed: 1,
            seeds_at_99_percent: 0,
            mean_p99_seconds: None,
            mean_gpu_seconds: gpu_seconds,
            mean_added_node_seconds: 0.0,
            mean_pod_starts: 0.0,
            mean_wasted_starts: 0.0,
            mean_cancelled_starts: 0.0,
            mean_flaps: 0.0,
            mean_rejections: 0.0,
            mean_timeouts: 0.0,
        }
    }

    #[test]
    fn the_best_anchor_answers_most_within_the_slo_and_of_those_level_uses_least() {
        let summaries = [
            summary(PolicyName::Matte, 1.0, 100.0),
            summary(PolicyName::Oracle, 1.0, 50.0),
            summary(PolicyName::Hpa, 0.97, 200.0),
            summary(PolicyName::Keda, 0.99, 400.0),
            summary(PolicyName::Kpa, 0.99, 300.0),
        ];
        let best = best_anchor(&summaries).expect("anchors ran");
        assert_eq!(best.policy, PolicyName::Kpa, "Matte and the oracle are not anchors; KPA ties KEDA for less");
        assert!(best_anchor(&summaries[..2]).is_none(), "no anchor ran");
    }

    #[test]
    fn the_bar_is_the_best_anchors_attainment_at_fewer_gpu_seconds() {
        let anchor = summary(PolicyName::Kpa, 0.99, 300.0);
        assert_eq!(verdict(&summary(PolicyName::Matte, 0.99, 299.0), &anchor), Verdict::Met);
        assert_eq!(verdict(&summary(PolicyName::Matte, 0.989, 100.0), &anchor), Verdict::LowerAttainment);
        assert_eq!(verdict(&summary(PolicyName::Matte, 1.0, 300.0), &anchor), Verdict::NoFewerGpuSeconds);
    }

    #[test]
    fn every_scenario_runs_matte_and_the_anchors_over_its_own_seeds_or_those_asked_for() {
        let short = Overrides { duration: Some(600.0), ..Overrides::default() };
        let standing = stand(Scenario::ScaleFromZero, &short, 5, None).expect("valid settings");
        assert_eq!(standing.seeds, (5..53).collect::<Vec<u64>>(), "scale-from-zero's 48 seeds from --seed on");
        let standing = stand(Scenario::CronBatches, &short, 1, Some(2)).expect("valid settings");
        assert_eq!(standing.seeds, vec![1, 2]);
        assert_eq!(standing.matte.policy, PolicyName::Matte);
        assert!(ANCHORS.contains(&standing.best_anchor.policy), "{standing:?}");
        assert_eq!(standing.verdict, verdict(&standing.matte, &standing.best_anchor));
        let text = render(std::slice::from_ref(&standing), "scenario");
        assert!(
            text.starts_with("scenario")
                && text.contains("cron-batches")
                && text.contains(&format!("met on {} of 1", u8::from(standing.verdict == Verdict::Met))),
            "{text}"
        );
    }

    #[test]
    fn work_spread_over_the_cores_comes_back_in_the_items_order_or_as_the_first_error() {
        let items: Vec<u64> = (0..50).collect();
        let squares = on_every_core(&items, |&item| Ok(item * item)).expect("no error");
        assert_eq!(squares, items.iter().map(|item| item * item).collect::<Vec<u64>>());
        let failed = on_every_core(&items, |&item| {
            if item % 20 == 7 { Err(Error::InvalidSetting(format!("item {item}"))) } else { Ok(item) }
        });
        assert!(matches!(failed, Err(Error::InvalidSetting(ref what)) if what == "item 7"), "{failed:?}");
    }

    #[test]
    fn every_scenario_but_burst_train_and_the_warm_fleet_sizing_one_is_held_to_the_bar() {
        let all: Vec<Scenario> = scenarios().collect();
        assert!(!all.contains(&Scenario::HundredInTen) && !all.contains(&Scenario::BurstTrain), "{all:?}");
        assert!(all.contains(&Scenario::CronBatches) && all.contains(&Scenario::JitteryCron), "{all:?}");
        assert_eq!(all.len(), <Scenario as clap::ValueEnum>::value_variants().len() - 2);
    }
}
