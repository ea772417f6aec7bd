//! The comparison as a plain-text table.

use std::fmt::Write as _;

use super::Report;
use super::outcome::{BurstLateness, lateness_by_burst};
use super::record::RunRecord;
use super::scalers::PolicyName;
use super::settings::{Routing, Settings};
use super::trace::Burst;

pub fn render(report: &Report) -> String {
    let runs = format!(
        "{} images in {} bursts over {:.0}s, seed {}",
        report.images, report.bursts, report.settings.duration_seconds, report.seed
    );
    let mut text = heading(&report.source, &runs, &report.settings);
    let headers =
        [&["policy", "p50 s", "p95 s", "p99 s", "max s", "SLO %"][..], &COST_COLUMNS, &["react s", "429s", "503s"]]
            .concat();
    let rows: Vec<Vec<String>> = report
        .outcomes
        .iter()
        .map(|outcome| {
            vec![
                outcome.policy.label().to_string(),
                seconds(outcome.p50_seconds),
                seconds(outcome.p95_seconds),
                seconds(outcome.p99_seconds),
                seconds(outcome.max_seconds),
                format!("{:.2}", 100.0 * outcome.slo_attainment),
                format!("{:.0}", outcome.gpu_seconds),
                format!("{:.0}", outcome.added_node_seconds),
                outcome.pod_starts.to_string(),
                outcome.wasted_starts.to_string(),
                outcome.cancelled_starts.to_string(),
                outcome.flaps.to_string(),
                outcome.reaction_median_seconds.map_or_else(|| "-".to_string(), |value| format!("{value:.0}")),
                outcome.rejections.to_string(),
                outcome.timeouts.to_string(),
            ]
        })
        .collect();
    text.push_str(&aligned(&headers, &rows));
    let _ = writeln!(
        text,
        "\nlatency: first try to answer; never = some image was not answered by the end. starts: pods created after t=0;\n\
         node-s: GPU-seconds of the nodes added on demand, launch to removal, idle included.\n\
         wasted: never ready, served nothing, or ready when nothing waited; cancelled: given back before ready.\n\
         react: median burst start -> first new pod ready.\n\
         429s: refusals clients saw (a pod's full queue, or the gateway's admission); 503s: the gateway's budget ran out in its queue."
    );
    text
}

/// Every burst of the run, with each policy's images answered after the SLO in it and
/// its slowest: which bursts a policy missed, and by how much.
pub fn late_bursts(bursts: &[Burst], runs: &[(PolicyName, RunRecord)], slo_seconds: f64) -> String {
    let by_policy: Vec<Vec<BurstLateness>> =
        runs.iter().map(|(_, run)| lateness_by_burst(bursts, &run.latencies, slo_seconds)).collect();
    let headers: Vec<&str> = ["burst", "start s", "end s", "images"]
        .into_iter()
        .chain(runs.iter().map(|(policy, _)| policy.label()))
        .collect();
    let rows: Vec<Vec<String>> = bursts
        .iter()
        .enumerate()
        .map(|(index, burst)| {
            let cells = by_policy.iter().map(|lateness| {
                let BurstLateness { late, slowest_seconds } = lateness[index];
                format!("{late} ({})", seconds(slowest_seconds))
            });
            let burst_cells = [
                (index + 1).to_string(),
                format!("{:.0}", burst.start_seconds),
                format!("{:.0}", burst.end_seconds),
                burst.images.to_string(),
            ];
            burst_cells.into_iter().chain(cells).collect()
        })
        .collect();
    format!(
        "\nbursts ({}): images answered after the {slo_seconds:.0}s SLO (the slowest, s), per policy\n{}",
        bursts.len(),
        aligned(&headers, &rows)
    )
}

/// Each policy's changes of replicas, one a line: when, from how many to how many, and
/// the policy's account of it where it gives one.
pub fn replica_changes(runs: &[(PolicyName, RunRecord)]) -> String {
    let mut text = String::new();
    for (policy, run) in runs {
        let _ = writeln!(text, "\nreplica changes, {} ({}):", policy.label(), run.changes.len());
        for change in &run.changes {
            let (at, from, to) = (change.at_seconds, change.from, change.to);
            let _ = match &change.why {
                Some(why) => writeln!(text, "{at:>8.0}s {from:>3} -> {to:<3} {why}"),
                None => writeln!(text, "{at:>8.0}s {from:>3} -> {to}"),
            };
        }
    }
    text
}

/// The columns of what a policy spent, in both tables: its pods' GPU-seconds, the
/// nodes added for them, its starts, those wasted and cancelled, and its flaps.
pub const COST_COLUMNS: [&str; 6] = ["GPU-s", "node-s", "starts", "wasted", "cancelled", "flaps"];

/// Two lines: what ran (`runs`) and the settings every policy shared.
pub fn heading(source: &str, runs: &str, settings: &Settings) -> String {
    let routing = match settings.routing {
        Routing::Gateway => format!("gateway (max wait {:.0}s)", settings.max_wait_seconds),
        other => format!("{} routing", other.label()),
    };
    format!(
        "{source}: {runs}; SLO {:.0}s, target queue latency {:.0}s\n\
         pods: {:.2}s/image (median), start-up {:.0}s (median), queue {}, {routing}; replicas {}..{}\n\n",
        settings.slo_seconds,
        settings.target_queue_latency_seconds,
        settings.service_seconds,
        settings.startup_seconds,
        settings.queue_capacity,
        settings.min_replicas,
        settings.max_replicas
    )
}

/// A latency cell: seconds, or `never` for an image not answered.
fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "never".to_string(), |value| format!("{value:.1}"))
}

/// Columns padded to their widest cell: the first left-aligned (names), the rest right
/// (numbers); one line per row, the headers first.
pub fn aligned(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(
                |(column, (cell, &width))| {
                    if column == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        padded.join("  ") + "\n"
    };
    let mut text = line(&mut headers.iter().copied());
    for row in rows {
        text.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    text
}
