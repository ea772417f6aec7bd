//! The command line of `matte-sim`.

use std::path::PathBuf;

use clap::{Args, Parser};

use crate::scalers::PolicyName;
use crate::scenario::Scenario;
use crate::settings::{Routing, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "matte-sim",
    version,
    about = "Compare autoscaling policies on bursty traffic with slow-starting GPU pods, in a deterministic simulation (same trace, pods and metrics pipeline for each policy)"
)]
pub struct Cli {
    /// A built-in traffic scenario.
    #[arg(long, value_enum, required_unless_present_any = ["trace", "every_scenario", "every_family"], conflicts_with = "trace")]
    pub scenario: Option<Scenario>,
    /// Every scenario but burst-train and hundred-in-ten instead, Matte against the best
    /// of the HPA, KEDA and KPA on each, each over its own number of seeds (48 for
    /// scale-from-zero, 12 for the others) unless --seeds says otherwise.
    #[arg(long, conflicts_with_all = ["scenario", "trace", "policies", "plots", "decisions", "bursts", "every_family"])]
    pub every_scenario: bool,
    /// Every family of traces in DIR instead, held to the bar as --every-scenario holds
    /// the scenarios: each folder of DIR is a family, each file in it one trace (as
    /// --trace reads it) named by the seed whose draws it runs on (1.txt, 2.txt, ...),
    /// with burst-train's pods unless overridden (`held-out/traces.py --write DIR`).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["scenario", "trace", "policies", "plots", "decisions", "bursts", "seed", "seeds"]
    )]
    pub every_family: Option<PathBuf>,
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
    /// its worst seed (default 1).
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..=10_000), conflicts_with = "plots")]
    pub seeds: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// After the table, every change of replicas each policy made, in time order, with
    /// Matte's reason and message as the resource's status would show them (one seed).
    #[arg(long, conflicts_with_all = ["seeds", "json"])]
    pub decisions: bool,
    /// After the table, every burst of the run (start, end, images) with each policy's
    /// images answered after the SLO in it and its slowest (one seed).
    #[arg(long, conflicts_with_all = ["seeds", "json"])]
    pub bursts: bool,
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
    /// How the Service spreads requests.
    #[arg(long, value_enum)]
    pub routing: Option<Routing>,
    /// The gateway's budget: the longest a request may wait in its queue (gateway
    /// routing only).
    #[arg(long, value_name = "SECONDS")]
    pub max_wait: Option<f64>,
    /// Matte's planned utilization (`autoscaling.plannedUtilizationPercent`): the share
    /// of a pod's throughput its plans count on (default: the policy's, 75).
    #[arg(long, value_name = "PERCENT")]
    pub planned_utilization: Option<u16>,
    /// Prometheus scrape interval.
    #[arg(long, value_name = "SECONDS")]
    pub scrape_interval: Option<f64>,
    /// Prometheus scrape interval of the gateway's replicas, at most the pods' (default:
    /// the operator's, 1, or the pods' when that is shorter). Matte's windows follow
    /// --scrape-interval but for the gateway's arrivals, read over at least two of
    /// these, and it decides once per gateway's scrape.
    #[arg(long, value_name = "SECONDS")]
    pub gateway_scrape_interval: Option<f64>,
    /// How long after the scrape it reads each of Matte's passes runs, up to the pass
    /// interval, the gateway's scrape interval behind the gateway and the pods' without
    /// it (default: the whole interval, so that every pass reads samples one interval
    /// old, the worst phase).
    #[arg(long, value_name = "SECONDS")]
    pub pass_after_scrape: Option<f64>,
    /// Scrape each pod at its own offset within the interval after the gateway, as
    /// Prometheus spreads its targets, instead of every target at once.
    #[arg(long)]
    pub spread_scrapes: bool,
    /// Draw each pod's start-up by when it begins (the i-th in a 10 s bucket gets the
    /// same draw under every policy) instead of in the order pods begin them: policies
    /// starting pods for the same burst then get the same start-ups.
    #[arg(long)]
    pub matched_startups: bool,
    /// Replicas of the gateway Prometheus scrapes, each reporting an equal share of its
    /// one queue (with --spread-scrapes, each at its own offset; default 1).
    #[arg(long, value_name = "REPLICAS", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub gateway_replicas: Option<u32>,
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
        let scrape_interval_seconds = self.scrape_interval.unwrap_or(settings.scrape_interval_seconds);
        Settings {
            duration_seconds: self.duration.unwrap_or(settings.duration_seconds),
            slo_seconds: self.slo.unwrap_or(settings.slo_seconds),
            // Images are answered within the tail after the last arrival: an SLO past it
            // would count late ones as never answered.
            tail_seconds: settings.tail_seconds.max(self.slo.unwrap_or(settings.slo_seconds)),
            target_queue_latency_seconds: self.target_latency.unwrap_or(settings.target_queue_latency_seconds),
            service_seconds: self.service_time.unwrap_or(settings.service_seconds),
            max_batch_size: self.batch_size.unwrap_or(settings.max_batch_size),
            startup_seconds: self.startup_time.unwrap_or(settings.startup_seconds),
            warm_gpus: self.warm_gpus.unwrap_or(settings.warm_gpus),
            max_gpus: self.max_gpus.unwrap_or(settings.max_gpus),
            node_provision_seconds: self.node_provision_time.unwrap_or(settings.node_provision_seconds),
            queue_capacity: self.queue_capacity.unwrap_or(settings.queue_capacity),
            routing: self.routing.unwrap_or(settings.routing),
            max_wait_seconds: self.max_wait.unwrap_or(settings.max_wait_seconds),
            planned_utilization_percent: self.planned_utilization.or(settings.planned_utilization_percent),
            scrape_interval_seconds,
            gateway_scrape_interval_seconds: self
                .gateway_scrape_interval
                .unwrap_or(settings.gateway_scrape_interval_seconds.min(scrape_interval_seconds)),
            pass_after_scrape_seconds: self.pass_after_scrape.or(settings.pass_after_scrape_seconds),
            spread_scrapes: self.spread_scrapes || settings.spread_scrapes,
            matched_startups: self.matched_startups || settings.matched_startups,
            gateway_replicas: self.gateway_replicas.unwrap_or(settings.gateway_replicas),
            min_replicas: self.min_replicas.unwrap_or(settings.min_replicas),
            max_replicas: self.max_replicas.unwrap_or(settings.max_replicas),
            static_replicas: self.static_replicas.unwrap_or(settings.static_replicas),
            ..settings
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use matte_serve::documented::flags_not_named_in;

    use super::*;

    #[test]
    fn the_readme_names_every_flag() {
        assert_eq!(flags_not_named_in(&Cli::command(), include_str!("../README.md")), Vec::<String>::new());
    }

    #[test]
    fn an_slo_longer_than_the_tail_lengthens_it() {
        let settings = crate::scenario::Scenario::BurstTrain.settings();
        let longer = Overrides { slo: Some(900.0), ..Overrides::default() }.apply(settings.clone());
        assert_eq!((longer.slo_seconds, longer.tail_seconds), (900.0, 900.0), "late images still answered");
        let shorter = Overrides { slo: Some(60.0), ..Overrides::default() }.apply(settings.clone());
        assert_eq!(shorter.tail_seconds, settings.tail_seconds);
    }

    #[test]
    fn every_scenario_stands_alone_and_needs_no_scenario() {
        let parsed = Cli::try_parse_from(["matte-sim", "--every-scenario", "--routing", "gateway"]).expect("valid");
        assert!(parsed.every_scenario && parsed.scenario.is_none() && parsed.seeds.is_none());
        for clash in
            [["--scenario", "cron-batches"], ["--trace", "arrivals.txt"], ["--policy", "kpa"], ["--plots", "out"]]
        {
            let error =
                Cli::try_parse_from(["matte-sim", "--every-scenario", clash[0], clash[1]]).expect_err("conflicts");
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict, "{clash:?}: {error}");
        }
        let error = Cli::try_parse_from(["matte-sim", "--seeds", "3"]).expect_err("a scenario, a trace or every one");
        assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{error}");
    }

    #[test]
    fn every_family_stands_alone_and_takes_its_seeds_from_the_traces_names() {
        let parsed =
            Cli::try_parse_from(["matte-sim", "--every-family", "traces", "--routing", "gateway"]).expect("valid");
        assert_eq!(parsed.every_family.as_deref(), Some(std::path::Path::new("traces")));
        for clash in [&["--every-scenario"][..], &["--seed", "13"], &["--seeds", "4"], &["--trace", "arrivals.txt"]] {
            let args = [&["matte-sim", "--every-family", "traces"][..], clash].concat();
            let error = Cli::try_parse_from(args).expect_err("conflicts");
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict, "{clash:?}: {error}");
        }
    }

    #[test]
    fn the_logs_of_one_run_are_for_one_seed_in_text() {
        let parsed =
            Cli::try_parse_from(["matte-sim", "--scenario", "burst-train", "--decisions", "--bursts"]).expect("valid");
        assert!(parsed.decisions && parsed.bursts);
        let clashes = [
            &["--scenario", "burst-train", "--seeds", "3"][..],
            &["--scenario", "burst-train", "--json"],
            &["--every-scenario"],
        ];
        for (log, clash) in ["--decisions", "--bursts"].into_iter().flat_map(|log| clashes.map(|clash| (log, clash))) {
            let args = [&["matte-sim", log][..], clash].concat();
            let error = Cli::try_parse_from(args).expect_err("conflicts");
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict, "{log} {clash:?}: {error}");
        }
    }
}
