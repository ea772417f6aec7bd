//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::simulate::scalers::PolicyName;
use crate::simulate::scenario::Scenario;
use crate::simulate::settings::{Routing, Settings};
use crate::telemetry::LogFormat;

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
    /// Compare autoscaling policies on bursty traffic with slow-starting GPU pods, in a
    /// deterministic simulation (same trace, pods and metrics pipeline for each policy).
    Simulate(Box<SimulateArgs>),
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
    #[arg(long, env = "MATTE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "MATTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// The inference image for resources that name none; it also runs the model init
    /// container (`matte-inference fetch-model`). The default is what
    /// scripts/images/build.sh tags: push it to your registry and name it here.
    #[arg(long, env = "MATTE_DEFAULT_INFERENCE_IMAGE", default_value = concat!("localhost/matte-inference:", env!("CARGO_PKG_VERSION")))]
    pub default_inference_image: String,
    /// The Prometheus the autoscaler asks when a resource names none.
    #[arg(long, env = "MATTE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// How often Prometheus scrapes the pods, and so how often the autoscaler looks.
    #[arg(long, env = "MATTE_SCRAPE_INTERVAL_SECONDS", default_value_t = 5)]
    pub scrape_interval_seconds: u64,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A built-in traffic scenario.
    #[arg(long, value_enum, required_unless_present = "trace", conflicts_with = "trace")]
    pub scenario: Option<Scenario>,
    /// A trace file instead: one arrival time in seconds per line; blank lines and lines
    /// starting with '#' are ignored. Runs with burst-train's pods unless overridden.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Policies to compare (repeatable, or several after one flag); all by default.
    #[arg(long = "policy", value_enum, num_args = 1.., value_name = "NAME")]
    pub policies: Vec<PolicyName>,
    /// Seed of every random draw: the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run this many seeds, from --seed on, and report each policy's means over them and
    /// its worst seed.
    #[arg(long, default_value_t = 1, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..=10_000), conflicts_with = "plots")]
    pub seeds: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write latency-cdf.svg and burst-timeline.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Settings that override the scenario's.
#[derive(Debug, Default, Args)]
pub struct Overrides {
    /// Seconds of arrivals.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// End-to-end latency an image should be answered within.
    #[arg(long, value_name = "SECONDS")]
    pub slo: Option<f64>,
    /// targetQueueLatencySeconds, given to every policy.
    #[arg(long, value_name = "SECONDS")]
    pub target_latency: Option<f64>,
    /// Median inference time of one image.
    #[arg(long, value_name = "SECONDS")]
    pub service_time: Option<f64>,
    /// Largest inference batch.
    #[arg(long, value_name = "IMAGES")]
    pub batch_size: Option<usize>,
    /// Median pod start-up on a free GPU node.
    #[arg(long, value_name = "SECONDS")]
    pub startup_time: Option<f64>,
    /// GPU nodes that exist from the start.
    #[arg(long, value_name = "NODES")]
    pub warm_gpus: Option<u32>,
    /// Most GPU nodes the cluster can have.
    #[arg(long, value_name = "NODES")]
    pub max_gpus: Option<u32>,
    /// Median time to add a GPU node.
    #[arg(long, value_name = "SECONDS")]
    pub node_provision_time: Option<f64>,
    /// Requests a pod queues before answering 429.
    #[arg(long, value_name = "REQUESTS")]
    pub queue_capacity: Option<usize>,
    /// Retry-After of a 429.
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<f64>,
    /// How the Service spreads requests.
    #[arg(long, value_enum)]
    pub routing: Option<Routing>,
    /// Prometheus scrape interval.
    #[arg(long, value_name = "SECONDS")]
    pub scrape_interval: Option<f64>,
    #[arg(long, value_name = "PODS")]
    pub min_replicas: Option<u32>,
    #[arg(long, value_name = "PODS")]
    pub max_replicas: Option<u32>,
    /// Fleet size of the static policy.
    #[arg(long, value_name = "PODS")]
    pub static_replicas: Option<u32>,
}

impl Overrides {
    pub fn apply(&self, settings: Settings) -> Settings {
        Settings {
            duration_seconds: self.duration.unwrap_or(settings.duration_seconds),
            slo_seconds: self.slo.unwrap_or(settings.slo_seconds),
            target_queue_latency_seconds: self.target_latency.unwrap_or(settings.target_queue_latency_seconds),
            service_seconds: self.service_time.unwrap_or(settings.service_seconds),
            max_batch_size: self.batch_size.unwrap_or(settings.max_batch_size),
            startup_seconds: self.startup_time.unwrap_or(settings.startup_seconds),
            warm_gpus: self.warm_gpus.unwrap_or(settings.warm_gpus),
            max_gpus: self.max_gpus.unwrap_or(settings.max_gpus),
            node_provision_seconds: self.node_provision_time.unwrap_or(settings.node_provision_seconds),
            queue_capacity: self.queue_capacity.unwrap_or(settings.queue_capacity),
            retry_after_seconds: self.retry_after.unwrap_or(settings.retry_after_seconds),
            routing: self.routing.unwrap_or(settings.routing),
            scrape_interval_seconds: self.scrape_interval.unwrap_or(settings.scrape_interval_seconds),
            min_replicas: self.min_replicas.unwrap_or(settings.min_replicas),
            max_replicas: self.max_replicas.unwrap_or(settings.max_replicas),
            static_replicas: self.static_replicas.unwrap_or(settings.static_replicas),
            ..settings
        }
    }
}
