use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use matte_load::LoadError;
use matte_load::driver::{self, BodyShape, Config, Image, Stop, Summary};
use matte_load::stats::Distribution;

/// Sends images to a Matte inference server's POST /v1/remove at a fixed concurrency and
/// reports throughput, latency percentiles and the answers by HTTP status.
#[derive(Debug, Parser)]
#[command(
    name = "matte-load",
    version,
    after_help = "Exit status: 0 when some request succeeded, 1 on a set-up error (image file, URL), 2 on a usage error, 3 when no request succeeded."
)]
struct Cli {
    /// Server base (http://HOST:PORT, /v1/remove is appended) or the full endpoint URL.
    #[arg(long)]
    url: String,

    /// Requests in flight at once; with --rate, the most in flight.
    #[arg(long, short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,

    /// Send this many requests a second, each when it is due whatever the answers (an
    /// open loop), latency counted from then; --concurrency caps those in flight.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    rate: Option<f64>,

    /// Requests to count, cycling through the images
    /// [default: 4 × the larger of the image count and the concurrency].
    #[arg(long, short = 'n', conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,

    /// Send for this many seconds instead of a fixed number of requests.
    #[arg(long, short = 'd', value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,

    /// Requests sent first and not counted (model warm-up, connection set-up).
    #[arg(long, default_value_t = 0)]
    warmup: u64,

    /// Output format asked of the server (query parameter `format`).
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Extra query parameter passed to the server, e.g. max_dimension=1024 (repeatable).
    #[arg(long = "query", short = 'q', value_name = "KEY=VALUE", value_parser = parse_query)]
    query: Vec<(String, String)>,

    /// Send the image as this field of a multipart form instead of as the raw body
    /// (for servers with another API, e.g. `--multipart file` for rembg).
    #[arg(long, value_name = "FIELD")]
    multipart: Option<String>,

    /// Extra text field of the multipart form, e.g. model=dis_custom (repeatable).
    #[arg(long = "form", value_name = "KEY=VALUE", value_parser = parse_query, requires = "multipart")]
    form: Vec<(String, String)>,

    /// Limit on each request, from sending to the end of the response.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    timeout: Duration,

    /// Retry 429 (queue full) answers after the server's Retry-After; latency then
    /// includes the waits.
    #[arg(long)]
    retry_429: bool,

    /// Most retries of one request under --retry-429.
    #[arg(long, default_value_t = 10, requires = "retry_429", value_parser = clap::value_parser!(u32).range(0..=1000))]
    max_retries: u32,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,

    /// Image files (.jpg, .jpeg, .png, .webp), sent as raw bodies.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Png,
    Webp,
    Mask,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Mask => "mask",
        }
    }
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.001..1e9).contains(&seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("{value:?} is not a number of seconds from 0.001")),
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && (0.001..=100_000.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{value:?} is not a rate from 0.001 to 100000 requests a second")),
    }
}

fn parse_query(value: &str) -> Result<(String, String), LoadError> {
    driver::parse_query(value)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(summary) => {
            if cli.json {
                match serde_json::to_string_pretty(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("matte-load: error: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_table(&summary);
            }
            // Nothing succeeded: scripts should notice.
            if summary.ok == 0 { ExitCode::from(3) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("matte-load: error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<Summary, LoadError> {
    let mut query = Vec::new();
    if let Some(format) = cli.format {
        query.push(("format".to_owned(), format.as_str().to_owned()));
    }
    query.extend(cli.query.iter().cloned());
    let url = driver::endpoint(&cli.url, &query)?;
    let images = cli.images.iter().map(|path| Image::load(path)).collect::<Result<Vec<_>, _>>()?;
    let concurrency = cli.concurrency as usize;
    let stop = match (cli.requests, cli.duration) {
        (_, Some(duration)) => Stop::Duration(duration),
        (Some(n), None) => Stop::Requests(n),
        (None, None) => Stop::Requests(4 * images.len().max(concurrency) as u64),
    };
    let config = Config {
        url,
        images,
        concurrency,
        stop,
        warmup: cli.warmup,
        timeout: cli.timeout,
        retry_429: cli.retry_429.then_some(cli.max_retries),
        rate: cli.rate,
        body: match &cli.multipart {
            None => BodyShape::Raw,
            Some(field) => BodyShape::Multipart { field: field.clone(), fields: cli.form.clone() },
        },
    };
    if !cli.json {
        let what = match stop {
            Stop::Requests(n) => format!("{n} requests"),
            Stop::Duration(d) => format!("requests for {:.1} s", d.as_secs_f64()),
        };
        let pace = match config.rate {
            Some(rate) => format!("at {rate} a second, at most {concurrency} in flight"),
            None => format!("at concurrency {concurrency}"),
        };
        eprintln!(
            "matte-load: {what} to {} {pace}, {} image(s), {} warm-up",
            config.url,
            config.images.len(),
            config.warmup
        );
    }
    driver::run(&config).await
}

fn print_table(s: &Summary) {
    println!(
        "requests      {} in {:.2} s ({:.2} requests/s over {:.2} s)",
        s.requests, s.elapsed_seconds, s.requests_per_second, s.measured_seconds
    );
    if let Some(rate) = s.rate_per_second {
        println!("rate          {rate:.2} requests/s scheduled, {} started late for want of a place", s.late_starts);
    }
    println!("ok            {}", s.ok);
    println!("throughput    {:.2} images/s over {:.2} s", s.throughput_images_per_second, s.measured_seconds);
    if s.ok_after_duration > 0 {
        println!("              {} answered after the duration, not counted in it", s.ok_after_duration);
    }
    let statuses: Vec<String> = s.status_counts.iter().map(|(status, n)| format!("{status}: {n}")).collect();
    println!("by status     {}", if statuses.is_empty() { "-".to_owned() } else { statuses.join(", ") });
    println!("429           {} rejected, {} retried", s.rejected_429, s.retries_429);
    if s.transport_errors > 0 {
        println!("no response   {} ({} timed out)", s.transport_errors, s.timeouts);
        if let Some(error) = &s.first_transport_error {
            println!("              first: {error}");
        }
    }
    print_distribution("latency", s.latency_seconds.as_ref());
    print_distribution("queue wait", s.queue_wait_seconds.as_ref());
    print_distribution("inference", s.inference_seconds.as_ref());
}

fn print_distribution(name: &str, d: Option<&Distribution>) {
    match d {
        Some(d) => println!(
            "{name:<13} p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}  mean {:.3} s  (n={})",
            d.p50, d.p90, d.p95, d.p99, d.max, d.mean, d.count
        ),
        None => println!("{name:<13} -"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use matte_serve::documented::flags_not_named_in;

    use super::*;

    #[test]
    fn the_readme_names_every_flag() {
        assert_eq!(flags_not_named_in(&Cli::command(), include_str!("../README.md")), Vec::<String>::new());
    }
}
