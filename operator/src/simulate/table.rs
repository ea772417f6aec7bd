//! The comparison as a plain-text table.

use std::fmt::Write as _;

use super::Report;

pub fn render(report: &Report) -> String {
    let settings = &report.settings;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: {} images in {} bursts over {:.0}s, seed {}; SLO {:.0}s, target queue latency {:.0}s",
        report.source,
        report.images,
        report.bursts,
        settings.duration_seconds,
        report.seed,
        settings.slo_seconds,
        settings.target_queue_latency_seconds
    );
    let _ = writeln!(
        text,
        "pods: {:.2}s/image (median), start-up {:.0}s (median), queue {}, {} routing; replicas {}..{}\n",
        settings.service_seconds,
        settings.startup_seconds,
        settings.queue_capacity,
        match settings.routing {
            super::settings::Routing::Random => "random",
            super::settings::Routing::LeastOutstanding => "least-outstanding",
        },
        settings.min_replicas,
        settings.max_replicas
    );
    let headers = [
        "policy", "p50 s", "p95 s", "p99 s", "max s", "SLO %", "GPU-s", "starts", "wasted", "flaps", "react s", "429s",
    ];
    let rows: Vec<[String; 12]> = report
        .outcomes
        .iter()
        .map(|outcome| {
            [
                outcome.policy.label().to_string(),
                seconds(outcome.p50_seconds),
                seconds(outcome.p95_seconds),
                seconds(outcome.p99_seconds),
                seconds(outcome.max_seconds),
                format!("{:.2}", 100.0 * outcome.slo_attainment),
                format!("{:.0}", outcome.gpu_seconds),
                outcome.pod_starts.to_string(),
                outcome.wasted_starts.to_string(),
                outcome.flaps.to_string(),
                outcome.reaction_median_seconds.map_or_else(|| "-".to_string(), |value| format!("{value:.0}")),
                outcome.rejections.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(
                |(column, (cell, width))| {
                    if column == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        padded.join("  ")
    };
    let _ = writeln!(text, "{}", line(&headers.map(String::from)));
    for row in &rows {
        let _ = writeln!(text, "{}", line(row));
    }
    let _ = writeln!(
        text,
        "\nlatency: first try to answer; never = some image was not answered by the end. starts: pods created after t=0;\n\
         wasted: never ready, served nothing, or ready when nothing waited. react: median burst start -> first new pod ready."
    );
    text
}

/// A latency cell: seconds, or `never` for an image not answered.
fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "never".to_string(), |value| format!("{value:.1}"))
}
