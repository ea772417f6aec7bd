//! The command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use matte_policy::observed::{DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS, DEFAULT_SCRAPE_INTERVAL_SECONDS};
use matte_serve::LogFormat;
use tracing_subscriber::EnvFilter;

use crate::autoscaler::prometheus::DEFAULT_MAX_CONCURRENT_QUERIES;
use crate::desired::ScrapeIntervals;
use crate::error::Error;
use crate::names;

#[derive(Debug, Parser)]
#[command(name = "matte-operator", version, about = "Kubernetes operator for BackgroundRemovalService resources")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: reconcile BackgroundRemovalServices into GPU inference pods
    /// and scale them on their queue latency.
    Run(Box<RunArgs>),
    /// Print the BackgroundRemovalService CRD as YAML (`| kubectl apply -f -`).
    Crd,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MATTE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Only act on resources in this namespace (all namespaces when empty).
    #[arg(long, env = "MATTE_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Take part in leader election so that of several replicas exactly one acts.
    #[arg(long, env = "MATTE_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease used for leader election, in the operator's own namespace.
    #[arg(long, env = "MATTE_LEASE_NAME", default_value = "matte-operator")]
    pub lease_name: String,
    /// This replica's name (the Lease holder and Events' reporter).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The operator's namespace (where the Lease lives).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Log filter: a level (trace, debug, info, warn, error) or per-module directives.
    #[arg(long, env = "MATTE_LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,
    #[arg(long, env = "MATTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// The inference image for resources that name none; it also runs the model init
    /// container (`matte-inference fetch-model`). The default is what
    /// scripts/images/build.sh tags: push it to your registry and name it here.
    #[arg(long, env = "MATTE_DEFAULT_INFERENCE_IMAGE", default_value = concat!("localhost/matte-inference:", env!("CARGO_PKG_VERSION")))]
    pub default_inference_image: String,
    /// The gateway image for resources that name none in `spec.gateway.image`; the
    /// default is what scripts/images/build.sh tags.
    #[arg(long, env = "MATTE_DEFAULT_GATEWAY_IMAGE", default_value = concat!("localhost/matte-gateway:", env!("CARGO_PKG_VERSION")))]
    pub default_gateway_image: String,
    /// The Prometheus the autoscaler asks when a resource names none.
    #[arg(long, env = "MATTE_PROMETHEUS_URL", value_parser = parse_prometheus_url)]
    pub prometheus_url: Option<String>,
    /// Other Prometheus servers a resource may name in
    /// `spec.autoscaling.metrics.prometheusUrl` (comma-separated, each matched whole):
    /// the operator sends its queries, from inside the cluster, to whatever a resource
    /// names, so by default a resource may name only --prometheus-url.
    #[arg(long, env = "MATTE_ALLOWED_PROMETHEUS_URLS", value_delimiter = ',', value_parser = parse_prometheus_url)]
    pub allowed_prometheus_urls: Vec<String>,
    /// The label that carries a series' namespace in those Prometheus servers: each
    /// resource reads only the series of its own namespace (`LABEL="<namespace>"` is
    /// added to its `spec.autoscaling.metrics.selector`, and a selector matching the
    /// label otherwise is refused), so that none can read, or scale on, another
    /// namespace's queue. Empty: selectors are taken as they are.
    #[arg(long, env = "MATTE_METRICS_NAMESPACE_LABEL", default_value = "namespace", value_parser = parse_label_name)]
    pub metrics_namespace_label: String,
    /// Labels put on every PodMonitor the operator makes (comma-separated `key=value`):
    /// the ones your Prometheus's podMonitorSelector matches (kube-prometheus-stack's
    /// matches `release=<its release>` by default), or it scrapes none of the pods.
    #[arg(long, env = "MATTE_POD_MONITOR_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub pod_monitor_labels: Vec<(String, String)>,
    /// Most queries in flight at once to each Prometheus, across every resource it
    /// scrapes: a pass asks 15, and passes beyond the bound wait their turn, so that
    /// many services cannot overload a Prometheus (whose own --query.max-concurrency is
    /// 20 by default), and one that stops answering holds no turn of another.
    #[arg(long, env = "MATTE_PROMETHEUS_MAX_CONCURRENT_QUERIES", default_value_t = DEFAULT_MAX_CONCURRENT_QUERIES,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub prometheus_max_concurrent_queries: u16,
    /// How often Prometheus scrapes the inference pods, and so how often the autoscaler
    /// looks and how long its query windows are.
    #[arg(long, env = "MATTE_SCRAPE_INTERVAL_SECONDS", default_value_t = DEFAULT_SCRAPE_INTERVAL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SCRAPE_INTERVAL_SECONDS))]
    pub scrape_interval_seconds: u64,
    /// How often Prometheus scrapes the gateway's pods, at most --scrape-interval-seconds:
    /// a burst shows in the gateway's queue first, so the fresher its samples, the
    /// sooner a pass sees it.
    #[arg(long, env = "MATTE_GATEWAY_SCRAPE_INTERVAL_SECONDS", default_value_t = DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SCRAPE_INTERVAL_SECONDS))]
    pub gateway_scrape_interval_seconds: u64,
}

/// The longest scrape interval the operator accepts (the chart's schema says the same):
/// its windows and its passes follow the interval, and five minutes is already the
/// long window.
pub const MAX_SCRAPE_INTERVAL_SECONDS: u64 = 300;

/// A Prometheus URL: http:// or https:// with a host, or empty for none. Anything else
/// would fail every query of every pass, and say so only in the logs.
fn parse_prometheus_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("not an http:// or https:// URL with a host".to_owned());
    }
    Ok(text.to_owned())
}

/// A Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), or empty for none.
fn parse_label_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let mut chars = text.chars();
    let valid = chars.next().is_none_or(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(text.to_owned()) } else { Err("not a Prometheus label name".to_owned()) }
}

/// A Kubernetes label, `key=value`: a qualified name, and a value that is empty or like
/// a qualified name's name. One the apiserver would refuse would have every PodMonitor
/// refused.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.trim().split_once('=').ok_or_else(|| format!("`{text}` is not key=value"))?;
    if !names::is_qualified_name(key) {
        return Err(format!("`{key}` is not a label key"));
    }
    if !names::is_label_value(value) {
        return Err(format!("`{value}` is not a label value"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A `--log-level` that a log filter reads: one the filter cannot read would otherwise
/// leave the operator logging at its default, as if the flag had been taken.
fn parse_log_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|error| format!("not a log filter: {error}"))
}

impl RunArgs {
    /// The label a resource's series are confined to its namespace by, if any.
    /// The labels every PodMonitor carries beside the operator's own.
    pub fn pod_monitor_labels(&self) -> BTreeMap<String, String> {
        self.pod_monitor_labels.iter().cloned().collect()
    }

    pub fn metrics_namespace_label(&self) -> Option<String> {
        Some(self.metrics_namespace_label.clone()).filter(|label| !label.is_empty())
    }

    /// The Prometheus servers a resource may name: --prometheus-url and
    /// --allowed-prometheus-urls, blanks left out.
    pub fn allowed_prometheus_urls(&self) -> Vec<String> {
        self.prometheus_url
            .iter()
            .chain(&self.allowed_prometheus_urls)
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The pods' and the gateway's scrape intervals; refused when the gateway's is the
    /// longer, because the windows, which follow the pods' interval, would then miss the
    /// gateway's samples.
    pub fn scrape_intervals(&self) -> Result<ScrapeIntervals, Error> {
        let (pods, gateway) = (self.scrape_interval_seconds, self.gateway_scrape_interval_seconds);
        if gateway > pods {
            return Err(Error::ScrapeIntervals { gateway_seconds: gateway, pods_seconds: pods });
        }
        Ok(ScrapeIntervals { pods: Duration::from_secs(pods), gateway: Duration::from_secs(gateway) })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use matte_serve::documented::flags_not_named_in;

    use super::*;

    fn run_args(flags: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["matte-operator", "run"][..], flags].concat())?;
        let Command::Run(args) = cli.command else { panic!("parsed as another command") };
        Ok(*args)
    }

    #[test]
    fn the_readme_names_every_flag() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        assert_eq!(flags_not_named_in(run, include_str!("../../README.md")), Vec::<String>::new());
    }

    #[test]
    fn the_gateway_is_scraped_every_second_and_the_pods_every_five_unless_told_otherwise() {
        let intervals = run_args(&[]).expect("no flag is required").scrape_intervals().expect("the defaults agree");
        assert_eq!(intervals, ScrapeIntervals { pods: Duration::from_secs(5), gateway: Duration::from_secs(1) });
    }

    #[test]
    fn a_gateway_scraped_less_often_than_the_pods_is_refused_naming_both_flags() {
        let args = run_args(&["--scrape-interval-seconds", "2", "--gateway-scrape-interval-seconds", "3"])
            .expect("each flag is in range");
        let refusal = args.scrape_intervals().expect_err("the gateway's interval is the longer").to_string();
        assert!(refusal.contains("--gateway-scrape-interval-seconds (3)"), "{refusal}");
        assert!(refusal.contains("--scrape-interval-seconds (2)"), "{refusal}");
        let equal = run_args(&["--scrape-interval-seconds", "2", "--gateway-scrape-interval-seconds", "2"]);
        assert!(equal.expect("in range").scrape_intervals().is_ok());
    }

    #[test]
    fn a_resource_may_name_the_default_prometheus_and_the_ones_allowed_and_no_other_by_default() {
        assert!(run_args(&[]).expect("no flag is required").allowed_prometheus_urls().is_empty());
        let args = run_args(&[
            "--prometheus-url",
            "http://prometheus.monitoring:9090",
            "--allowed-prometheus-urls",
            "http://team-a.prometheus:9090, ,http://team-b.prometheus:9090",
        ])
        .expect("URLs");
        assert_eq!(
            args.allowed_prometheus_urls(),
            ["http://prometheus.monitoring:9090", "http://team-a.prometheus:9090", "http://team-b.prometheus:9090"]
        );
    }

    #[test]
    fn a_prometheus_url_without_a_scheme_or_host_is_refused_by_name() {
        for (flag, url) in [
            ("--prometheus-url", "prometheus.monitoring:9090"),
            ("--prometheus-url", "ftp://prometheus"),
            ("--allowed-prometheus-urls", "http://a:9090,http//b"),
        ] {
            let refusal = run_args(&[flag, url]).expect_err("not an http URL").to_string();
            assert!(refusal.contains(flag), "{refusal}");
        }
        assert!(run_args(&["--prometheus-url", "https://prometheus.example/sub/"]).is_ok());
        let blank = run_args(&["--prometheus-url", ""]).expect("blank is none");
        assert!(blank.allowed_prometheus_urls().is_empty());
    }

    #[test]
    fn series_are_confined_by_the_namespace_label_unless_it_is_emptied() {
        assert_eq!(run_args(&[]).unwrap().metrics_namespace_label().as_deref(), Some("namespace"));
        let other = run_args(&["--metrics-namespace-label", "kubernetes_namespace"]).unwrap();
        assert_eq!(other.metrics_namespace_label().as_deref(), Some("kubernetes_namespace"));
        assert_eq!(run_args(&["--metrics-namespace-label", ""]).unwrap().metrics_namespace_label(), None);
        for invalid in ["name space", "1st", "ns\"", "a-b"] {
            assert!(run_args(&["--metrics-namespace-label", invalid]).is_err(), "{invalid} taken");
        }
    }

    #[test]
    fn a_log_level_no_filter_reads_is_refused_by_name() {
        let refusal = run_args(&["--log-level", "matte_operator=loud"]).expect_err("not a level").to_string();
        assert!(refusal.contains("--log-level"), "{refusal}");
        assert!(refusal.contains("not a log filter"), "{refusal}");
        let args = run_args(&["--log-level", "info,matte_operator=debug"]).expect("a level and a directive");
        assert_eq!(args.log_level, "info,matte_operator=debug");
    }

    #[test]
    fn a_scrape_interval_outside_one_second_to_five_minutes_is_refused_by_name() {
        for flags in [["--scrape-interval-seconds", "0"], ["--gateway-scrape-interval-seconds", "301"]] {
            let refusal = run_args(&flags).expect_err("out of range").to_string();
            assert!(refusal.contains(flags[0]), "{refusal}");
        }
    }

    #[test]
    fn pod_monitor_labels_are_kubernetes_labels() {
        let args = run_args(&["--pod-monitor-labels", "release=kube-prometheus-stack,example.com/team=vision,empty="])
            .expect("valid labels");
        assert_eq!(
            args.pod_monitor_labels(),
            BTreeMap::from([
                ("empty".to_owned(), String::new()),
                ("example.com/team".to_owned(), "vision".to_owned()),
                ("release".to_owned(), "kube-prometheus-stack".to_owned()),
            ])
        );
        assert!(run_args(&[]).expect("none by default").pod_monitor_labels().is_empty());
        for bad in ["release", "=x", "-a=b", "a=b c", "Example.com/x=y", "a=-b", &format!("a={}", "b".repeat(64))] {
            assert!(run_args(&["--pod-monitor-labels", bad]).is_err(), "{bad}");
        }
    }
}
