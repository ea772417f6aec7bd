//! The command line.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

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
    /// The gateway image for resources that name none in `spec.gateway.image`; the
    /// default is what scripts/images/build.sh tags.
    #[arg(long, env = "MATTE_DEFAULT_GATEWAY_IMAGE", default_value = concat!("localhost/matte-gateway:", env!("CARGO_PKG_VERSION")))]
    pub default_gateway_image: String,
    /// The Prometheus the autoscaler asks when a resource names none.
    #[arg(long, env = "MATTE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// How often Prometheus scrapes the pods, and so how often the autoscaler looks.
    #[arg(long, env = "MATTE_SCRAPE_INTERVAL_SECONDS", default_value_t = 5)]
    pub scrape_interval_seconds: u64,
}
