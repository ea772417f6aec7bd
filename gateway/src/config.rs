//! Command-line configuration of the gateway.
//!
//! The limits a client meets (body size, header and upload timeouts) default to the
//! pod's, so that putting the gateway in front of the pods changes nothing for clients;
//! each flag can also come from a `MATTE_GATEWAY_*` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use matte_common::{gateway_flags as flags, memory, paths, queue};
use matte_serve::LogFormat;
use matte_serve::durations::{parse_delay, parse_timeout};

#[derive(Debug, Clone, Parser)]
#[command(name = "matte-gateway", version, about = "Front door of a Matte service")]
pub struct Config {
    /// Address to listen on.
    #[arg(long = flags::LISTEN, env = "MATTE_GATEWAY_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], paths::PORT)))]
    pub listen: SocketAddr,

    /// An inference pod, as HOST:PORT; repeat for each. A pod not listening yet joins
    /// once its readiness probe passes.
    #[arg(long = flags::UPSTREAM, env = "MATTE_GATEWAY_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,

    /// The Service whose EndpointSlices list the pods (the operator's `<name>-pods`):
    /// the pods come and go with its slices. Instead of --upstream.
    #[arg(long = flags::SERVICE, env = "MATTE_GATEWAY_SERVICE", conflicts_with = "upstreams")]
    pub service: Option<String>,

    /// The namespace of --service; by default the gateway's own (`POD_NAMESPACE`), else
    /// the client configuration's default namespace. Unused without --service.
    #[arg(long = flags::NAMESPACE, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Most requests outstanding from this gateway on one pod: the pod's queue capacity.
    #[arg(long = flags::UPSTREAM_CAPACITY, env = "MATTE_GATEWAY_UPSTREAM_CAPACITY", default_value_t = queue::DEFAULT_CAPACITY, value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_capacity: u32,

    /// Longest a request may wait in the gateway's queue; a client may ask for less
    /// with the `x-matte-max-wait-seconds` header.
    #[arg(long = flags::MAX_WAIT_SECONDS, env = "MATTE_GATEWAY_MAX_WAIT_SECONDS", default_value_t = flags::DEFAULT_MAX_WAIT_SECONDS as f64, value_parser = parse_positive_seconds)]
    pub max_wait_seconds: f64,

    /// Largest accepted request body in bytes (the pod's limit; at most 1 GiB).
    #[arg(long = flags::MAX_BODY_BYTES, env = "MATTE_GATEWAY_MAX_BODY_BYTES", default_value_t = memory::DEFAULT_MAX_BODY_BYTES, value_parser = clap::value_parser!(u64).range(1..=memory::MAX_BODY_BYTES_LIMIT))]
    pub max_body_bytes: u64,

    /// Request bodies held at once across all requests; past it, requests get 429. Pods'
    /// images taken off them to wait for their clients are held within it too, while
    /// all held stays within half of it.
    #[arg(long = flags::MAX_BUFFERED_BYTES, env = "MATTE_GATEWAY_MAX_BUFFERED_BYTES", default_value_t = flags::DEFAULT_MAX_BUFFERED_BYTES as usize)]
    pub max_buffered_bytes: usize,

    /// How often each pod's `/readyz` is probed.
    #[arg(long = flags::PROBE_INTERVAL_SECONDS, env = "MATTE_GATEWAY_PROBE_INTERVAL_SECONDS", default_value = "1", value_parser = parse_timeout)]
    pub probe_interval: Duration,

    /// Longest one attempt on a pod may take, from sending to the answer's head (the pod
    /// answers 504 itself after its own request timeout, 60 s by default); and longest
    /// the answer's image may then stop coming before it is cut.
    #[arg(long = flags::UPSTREAM_TIMEOUT_SECONDS, env = "MATTE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value = "120", value_parser = parse_timeout)]
    pub upstream_timeout: Duration,

    /// Connections served at once; more wait in the listen backlog until one closes. Each
    /// may hold up to 352 KiB beside its body, outside --max-buffered-bytes (its read
    /// buffer, no larger than a head may be, and a waiting request's head; what it has
    /// taken of an answer its client has not read; and the connection to the pod the
    /// answer comes on): at the default, 1.4 GiB at most. The operator sets it from the
    /// pod's memory.
    #[arg(long = flags::MAX_CONNECTIONS, env = "MATTE_GATEWAY_MAX_CONNECTIONS", default_value_t = memory::DEFAULT_GATEWAY_MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// A client must send its request line and headers within this many seconds.
    #[arg(long = "header-read-timeout-seconds", env = "MATTE_GATEWAY_HEADER_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Seconds an upload may take before the minimum rate applies, and the most time it
    /// may have in hand: how long a stalled upload keeps its place, wherever it stalls.
    #[arg(long = "upload-grace-seconds", env = "MATTE_GATEWAY_UPLOAD_GRACE_SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub upload_grace: Duration,

    /// After the grace period an upload must keep up this rate, with at most the grace in
    /// hand, or 408; and a client's answer is taken at least this fast once its socket is
    /// full.
    #[arg(long = "min-upload-bytes-per-second", env = "MATTE_GATEWAY_MIN_UPLOAD_BYTES_PER_SECOND", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_upload_bytes_per_second: u64,

    /// Once a client's socket is full, it must take its answer at
    /// --min-upload-bytes-per-second, with at most this many seconds in hand, or the
    /// connection is closed.
    #[arg(long = "write-timeout-seconds", env = "MATTE_GATEWAY_WRITE_TIMEOUT_SECONDS", default_value = "30", value_parser = parse_timeout)]
    pub write_timeout: Duration,

    /// On SIGTERM, seconds to keep admitting while unready, so that load balancers stop
    /// sending before the gateway stops accepting.
    #[arg(long = flags::DRAIN_DELAY_SECONDS, env = "MATTE_GATEWAY_DRAIN_DELAY_SECONDS", default_value = "5", value_parser = parse_delay)]
    pub drain_delay: Duration,

    /// After the drain delay, seconds the requests held may take to finish before the
    /// remaining connections are cut.
    #[arg(long = flags::DRAIN_TIMEOUT_SECONDS, env = "MATTE_GATEWAY_DRAIN_TIMEOUT_SECONDS", default_value = "90", value_parser = parse_timeout)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, env = "MATTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl Config {
    pub fn max_wait(&self) -> Duration {
        Duration::from_secs_f64(self.max_wait_seconds)
    }
}

fn parse_positive_seconds(text: &str) -> Result<f64, String> {
    parse_timeout(text).map(|duration| duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use matte_serve::documented::flags_not_named_in;

    use super::*;

    #[test]
    fn the_readme_names_every_flag() {
        assert_eq!(flags_not_named_in(&Config::command(), include_str!("../README.md")), Vec::<String>::new());
    }

    #[test]
    fn defaults_match_the_pod() {
        let config = Config::parse_from(["matte-gateway", "--upstream", "127.0.0.1:8081"]);
        assert_eq!(config.upstreams, ["127.0.0.1:8081"]);
        assert_eq!(config.upstream_capacity, queue::DEFAULT_CAPACITY);
        assert_eq!(config.max_body_bytes, memory::DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.max_wait(), Duration::from_secs(30));
    }

    #[test]
    fn upstreams_repeat() {
        let config = Config::parse_from(["matte-gateway", "--upstream", "a:1", "--upstream", "b:2"]);
        assert_eq!(config.upstreams, ["a:1", "b:2"]);
    }

    #[test]
    fn service_and_namespace() {
        let config = Config::parse_from(["matte-gateway", "--service", "x-pods", "--namespace", "shop"]);
        assert_eq!(config.service.as_deref(), Some("x-pods"));
        assert_eq!(config.namespace.as_deref(), Some("shop"));
        assert!(config.upstreams.is_empty());
        let config = Config::parse_from(["matte-gateway", "--service", "x-pods"]);
        assert_eq!(config.namespace, None, "the default is decided when connecting");
    }

    #[test]
    fn service_and_upstream_exclude_each_other() {
        let both = ["matte-gateway", "--service", "x-pods", "--upstream", "127.0.0.1:8081"];
        assert!(Config::try_parse_from(both).is_err());
    }

    #[test]
    fn a_zero_budget_or_capacity_is_refused() {
        assert!(Config::try_parse_from(["matte-gateway", "--max-wait-seconds", "0"]).is_err());
        assert!(Config::try_parse_from(["matte-gateway", "--upstream-capacity", "0"]).is_err());
    }
}
