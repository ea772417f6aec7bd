//! SVG plots of a comparison, written by hand so that they need no plotting library:
//! the latency CDF of every policy, and a timeline of the queue and the replicas around
//! the largest burst.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Comparison;
use crate::error::Error;

const COLOURS: [&str; 6] = ["#1b6ac9", "#d9480f", "#2b8a3e", "#862e9c", "#5c5f66", "#0ca678"];
const WIDTH: f64 = 760.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 45.0;

/// Writes `latency-cdf.svg` and `burst-timeline.svg` into `directory`, creating it.
pub fn write(comparison: &Comparison, directory: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(directory)
        .map_err(|source| Error::WriteOutput { path: directory.to_path_buf(), source })?;
    let files = [("latency-cdf.svg", latency_cdf(comparison)), ("burst-timeline.svg", burst_timeline(comparison))];
    let mut written = Vec::new();
    for (name, svg) in files {
        let path = directory.join(name);
        std::fs::write(&path, svg).map_err(|source| Error::WriteOutput { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// The share of images answered within x seconds, per policy, with the SLO marked.
pub fn latency_cdf(comparison: &Comparison) -> String {
    let slo = comparison.report.settings.slo_seconds;
    let longest = comparison
        .runs
        .iter()
        .flat_map(|(_, run)| run.latencies.iter().flatten())
        .fold(slo * 1.5, |longest, latency| longest.max(*latency));
    let x_max = nice_ceiling(longest);
    let height = 420.0;
    let plot = Frame { x: LEFT, y: TOP, width: WIDTH - LEFT - RIGHT, height: height - TOP - BOTTOM };
    let mut svg = open_svg(height, "End-to-end latency: share of images answered within x seconds");
    plot.axes(&mut svg, x_max, 1.0, "latency (s)", "share of images");
    let slo_x = plot.px(slo, x_max);
    let _ = write!(
        svg,
        r##"<line x1="{slo_x:.1}" y1="{:.1}" x2="{slo_x:.1}" y2="{:.1}" stroke="#c92a2a" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#c92a2a">SLO {slo:.0}s</text>"##,
        plot.y,
        plot.y + plot.height,
        slo_x + 4.0,
        plot.y + 12.0
    );
    for (index, (policy, run)) in comparison.runs.iter().enumerate() {
        let mut latencies: Vec<f64> = run.latencies.iter().flatten().copied().collect();
        latencies.sort_by(f64::total_cmp);
        let total = run.latencies.len().max(1) as f64;
        let mut points = vec![(plot.px(0.0, x_max), plot.py(0.0, 1.0))];
        for (rank, latency) in latencies.iter().enumerate() {
            points.push((plot.px(*latency, x_max), plot.py((rank + 1) as f64 / total, 1.0)));
        }
        polyline(&mut svg, &thin(&points), COLOURS[index % COLOURS.len()], 2.0);
        legend(&mut svg, index, policy.label(), COLOURS[index % COLOURS.len()]);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Per policy, around the largest burst: images waiting (queued or retrying) and the
/// replicas asked for and ready.
pub fn burst_timeline(comparison: &Comparison) -> String {
    let largest = comparison.bursts.iter().max_by_key(|burst| burst.images);
    let start = largest.map_or(0.0, |burst| ((burst.start_seconds - 30.0) / 10.0).floor().max(0.0) * 10.0);
    let end = (start + 630.0).min(comparison.report.settings.end_seconds());
    let span = (end - start).max(1.0);
    let in_window = |at: f64| at >= start && at <= end;
    let points = comparison.runs.iter().flat_map(|(_, run)| run.timeline.iter().filter(|p| in_window(p.at_seconds)));
    let (most_waiting, most_replicas) = points.fold((1.0_f64, 1.0_f64), |(waiting, replicas), point| {
        (waiting.max((point.queued + point.retrying) as f64), replicas.max(f64::from(point.replicas)))
    });
    let (waiting_max, replicas_max) = (nice_ceiling(most_waiting), nice_ceiling(most_replicas));
    let panel_height = 150.0;
    let height = TOP + comparison.runs.len() as f64 * (panel_height + 20.0) + BOTTOM;
    let title = match largest {
        Some(burst) => format!(
            "Largest burst: {} images at {:.0}s — waiting images and replicas",
            burst.images, burst.start_seconds
        ),
        None => "Waiting images and replicas".to_string(),
    };
    let mut svg = open_svg(height, &title);
    for (index, (policy, run)) in comparison.runs.iter().enumerate() {
        let plot = Frame {
            x: LEFT,
            y: TOP + index as f64 * (panel_height + 20.0),
            width: WIDTH - LEFT - RIGHT,
            height: panel_height - 20.0,
        };
        let label = if index + 1 == comparison.runs.len() { "time (s)" } else { "" };
        plot.axes_with_offset(&mut svg, start, span, waiting_max, label, "waiting");
        plot.right_axis(&mut svg, replicas_max, "replicas");
        let window: Vec<_> = run.timeline.iter().filter(|point| in_window(point.at_seconds)).collect();
        let waiting: Vec<_> = window
            .iter()
            .map(|p| (plot.px(p.at_seconds - start, span), plot.py((p.queued + p.retrying) as f64, waiting_max)))
            .collect();
        let replicas: Vec<_> = window
            .iter()
            .map(|p| (plot.px(p.at_seconds - start, span), plot.py(f64::from(p.replicas), replicas_max)))
            .collect();
        let ready: Vec<_> = window
            .iter()
            .map(|p| (plot.px(p.at_seconds - start, span), plot.py(f64::from(p.ready), replicas_max)))
            .collect();
        polyline(&mut svg, &waiting, COLOURS[0], 1.5);
        polyline(&mut svg, &replicas, COLOURS[1], 2.0);
        polyline(&mut svg, &ready, COLOURS[2], 1.5);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
            plot.x + 6.0,
            plot.y + 14.0,
            policy.label()
        );
    }
    for (index, (name, colour)) in
        [("waiting", COLOURS[0]), ("replicas", COLOURS[1]), ("ready", COLOURS[2])].iter().enumerate()
    {
        legend(&mut svg, index, name, colour);
    }
    svg.push_str("</svg>\n");
    svg
}

/// A plotting area in pixels.
struct Frame {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

impl Frame {
    fn px(&self, value: f64, max: f64) -> f64 {
        self.x + self.width * (value / max).clamp(0.0, 1.0)
    }

    fn py(&self, value: f64, max: f64) -> f64 {
        self.y + self.height * (1.0 - (value / max).clamp(0.0, 1.0))
    }

    fn axes(&self, svg: &mut String, x_max: f64, y_max: f64, x_label: &str, y_label: &str) {
        self.axes_with_offset(svg, 0.0, x_max, y_max, x_label, y_label);
    }

    /// Axes whose x ticks read `x_offset` to `x_offset + x_span`.
    fn axes_with_offset(&self, svg: &mut String, x_offset: f64, x_span: f64, y_max: f64, x_label: &str, y_label: &str) {
        let (left, bottom) = (self.x, self.y + self.height);
        let _ = write!(
            svg,
            r##"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#868e96"/>"##,
            self.y, self.width, self.height
        );
        for tick in 0..=5 {
            let share = f64::from(tick) / 5.0;
            let x = left + self.width * share;
            let y = bottom - self.height * share;
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#868e96"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text><line x1="{:.1}" y1="{y:.1}" x2="{left:.1}" y2="{y:.1}" stroke="#868e96"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                bottom + 4.0,
                bottom + 15.0,
                tick_label(x_offset + x_span * share),
                left - 4.0,
                left - 6.0,
                y + 3.0,
                tick_label(y_max * share)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{x_label}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{y_label}</text>"#,
            left + self.width / 2.0,
            bottom + 30.0,
            left - 42.0,
            self.y + self.height / 2.0,
            left - 42.0,
            self.y + self.height / 2.0
        );
    }

    fn right_axis(&self, svg: &mut String, y_max: f64, label: &str) {
        let right = self.x + self.width;
        for tick in 0..=5 {
            let share = f64::from(tick) / 5.0;
            let y = self.y + self.height * (1.0 - share);
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{}">{}</text>"#,
                right + 5.0,
                y + 3.0,
                COLOURS[1],
                tick_label(y_max * share)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{}">{label}</text>"#,
            right + 28.0,
            self.y + self.height / 2.0,
            COLOURS[1]
        );
    }
}

fn open_svg(height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="14">{}</text>"#,
        escape(title)
    )
}

fn polyline(svg: &mut String, points: &[(f64, f64)], colour: &str, width: f64) {
    let mut coordinates = String::new();
    for (x, y) in points {
        let _ = write!(coordinates, "{x:.1},{y:.1} ");
    }
    let _ = write!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}"/>"#,
        coordinates.trim_end()
    );
}

fn legend(svg: &mut String, index: usize, label: &str, colour: &str) {
    let x = WIDTH - RIGHT + 60.0;
    let y = TOP + 10.0 + index as f64 * 18.0;
    let _ = write!(
        svg,
        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
        x + 16.0,
        x + 20.0,
        y + 4.0,
        escape(label)
    );
}

/// Keeps one point per pixel column, the last (the highest, on a CDF), so that long
/// traces make small files.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for point in points {
        match kept.last_mut() {
            Some(last) if (point.0 - last.0).abs() < 0.5 => *last = *point,
            _ => kept.push(*point),
        }
    }
    kept
}

/// The next of 1, 2, 2.5, 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let value = value.max(1.0);
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|step| step * magnitude).find(|nice| *nice >= value).unwrap_or(value)
}

fn tick_label(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 { format!("{value:.0}") } else { format!("{value:.1}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
