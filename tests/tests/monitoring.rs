//! The chart's monitoring: `charts/matte/alerts/rules.yaml` is valid and passes its
//! promtool unit tests (each alert firing where it must and silent where it must not), the
//! chart's PrometheusRule carries exactly those rules, and its ServiceMonitor scrapes the
//! operator's metrics Service; the operator takes every flag the chart gives it, and a
//! single replica gets no disruption budget that would block its node's drain. No
//! cluster needed: helm renders offline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use matte_e2e::{expect_success, helm, repo_root};

fn alerts_dir() -> PathBuf {
    repo_root().join("charts/matte/alerts")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("matte-alerts-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory).expect("create a scratch directory");
    directory
}

/// `promtool ARGS` in `directory` (Debian's prometheus package, installed by setup.sh).
fn promtool(directory: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(directory)
        .output()
        .expect("promtool is installed (scripts/setup.sh installs Debian's prometheus package)");
    expect_success("promtool", args, &output)
}

/// `helm template` of the chart, offline, with helm's own files kept in `scratch`.
fn helm_template(scratch: &Path, values: &[&str]) -> String {
    let chart = repo_root().join("charts/matte");
    let chart = chart.to_str().expect("a UTF-8 path");
    let args = [&["template", "matte", chart, "--namespace", "ops"][..], values].concat();
    let output = helm(scratch).args(&args).output().expect("helm is built (scripts/setup.sh --with-cluster)");
    expect_success("helm", &args, &output)
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    let directory = alerts_dir();
    let checked = promtool(&directory, &["check", "rules", "rules.yaml"]);
    assert!(checked.contains("SUCCESS: 17 rules found"), "{checked}");
    let tested = promtool(&directory, &["test", "rules", "rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_charts_prometheus_rule_carries_the_same_rules_only_when_enabled() {
    let scratch = scratch("chart");
    let default = helm_template(&scratch, &[]);
    assert!(!default.contains("kind: PrometheusRule"), "off by default: the CRD may not exist");

    let rendered = helm_template(
        &scratch,
        &["--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=monitoring"],
    );
    let rule = document(&rendered, "PrometheusRule").unwrap_or_else(|| panic!("no PrometheusRule in:\n{rendered}"));
    assert!(rule.contains("name: matte-alerts\n"), "{rule}");
    assert!(rule.contains("namespace: ops\n"), "{rule}");
    assert!(rule.contains("    release: monitoring\n"), "{rule}");

    // The rule groups are the spec, indented by two: without it they are a rules file,
    // which must pass the same unit tests as the checked-in one.
    let (_, spec) = rule.split_once("\nspec:\n").unwrap_or_else(|| panic!("no spec in:\n{rule}"));
    let groups: String = spec.lines().map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line))).collect();
    fs::write(scratch.join("rendered.yaml"), groups).expect("write the rendered rules");
    let unit_tests = fs::read_to_string(alerts_dir().join("rules.test.yaml")).expect("read the unit tests");
    assert!(unit_tests.contains("  - rules.yaml\n"), "the unit tests load rules.yaml");
    fs::write(scratch.join("rendered.test.yaml"), unit_tests.replace("  - rules.yaml\n", "  - rendered.yaml\n"))
        .expect("write the unit tests");
    let checked = promtool(&scratch, &["check", "rules", "rendered.yaml"]);
    assert!(checked.contains("SUCCESS: 17 rules found"), "{checked}");
    let tested = promtool(&scratch, &["test", "rules", "rendered.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let _ = fs::remove_dir_all(&scratch);
}

/// The rendered document of `kind`, if any.
fn document<'a>(rendered: &'a str, kind: &str) -> Option<&'a str> {
    rendered.split("\n---\n").find(|document| document.contains(&format!("\nkind: {kind}\n")))
}

/// The operator's pass and query windows, and the PodMonitor it makes, follow the
/// chart's scrape intervals (the inference pods' and the gateway's), and its queries in
/// flight the chart's bound; one outside what the operator accepts, or a gateway's
/// interval longer than the pods', is refused at install.
#[test]
fn the_chart_gives_the_operator_its_scrape_intervals_and_its_bound_on_queries() {
    let scratch = scratch("scrape-interval");
    let arg = |rendered: &str, flag: &str| {
        let deployment = document(rendered, "Deployment").unwrap_or_else(|| panic!("no Deployment in:\n{rendered}"));
        let (_, after) =
            deployment.split_once(&format!("- {flag}\n")).unwrap_or_else(|| panic!("no {flag} in:\n{deployment}"));
        after.lines().next().map(|line| line.trim().to_owned()).unwrap_or_default()
    };
    let (pods, gateway) = ("--scrape-interval-seconds", "--gateway-scrape-interval-seconds");
    let queries = "--prometheus-max-concurrent-queries";
    let defaults = helm_template(&scratch, &[]);
    assert_eq!((arg(&defaults, pods), arg(&defaults, gateway)), ("- \"5\"".to_owned(), "- \"1\"".to_owned()));
    assert_eq!(arg(&defaults, queries), "- \"10\"");
    let set = [
        "--set",
        "prometheus.scrapeIntervalSeconds=4",
        "--set",
        "prometheus.gatewayScrapeIntervalSeconds=2",
        "--set",
        "prometheus.maxConcurrentQueries=4",
        "--set",
        "prometheus.namespaceLabel=kubernetes_namespace",
    ];
    let rendered = helm_template(&scratch, &set);
    assert_eq!((arg(&rendered, pods), arg(&rendered, gateway)), ("- \"4\"".to_owned(), "- \"2\"".to_owned()));
    assert_eq!(arg(&rendered, queries), "- \"4\"");

    let chart = repo_root().join("charts/matte");
    let refused = |values: &[&str], naming: &str| {
        let mut args = vec!["template", "matte", chart.to_str().expect("UTF-8")];
        args.extend(values.iter().flat_map(|value| ["--set", value]));
        let output = helm(&scratch).args(&args).output().expect("helm runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(naming), "{values:?}: {stderr}");
    };
    refused(&["prometheus.scrapeIntervalSeconds=0"], "scrapeIntervalSeconds");
    refused(&["prometheus.gatewayScrapeIntervalSeconds=0"], "gatewayScrapeIntervalSeconds");
    refused(&["prometheus.maxConcurrentQueries=0"], "maxConcurrentQueries");
    refused(
        &["prometheus.scrapeIntervalSeconds=2", "prometheus.gatewayScrapeIntervalSeconds=3"],
        "gatewayScrapeIntervalSeconds must not exceed",
    );
    let _ = fs::remove_dir_all(&scratch);
}

/// Every flag the chart passes, in every branch of its template, is one the operator's
/// binary takes with the value given: a flag renamed on one side alone would otherwise
/// pass every test here and stop the operator at its first start in a cluster.
#[test]
fn the_operator_takes_every_flag_the_chart_gives_it() {
    use clap::Parser;
    use matte_operator::cli::{Cli, Command as Subcommand};
    let scratch = scratch("operator-flags");
    let every_branch = [
        "--set",
        "watchNamespace=shop",
        "--set",
        "prometheus.allowedUrls={http://team-a.prometheus:9090}",
        "--set",
        "prometheus.maxConcurrentQueries=4",
        "--set",
        "prometheus.namespaceLabel=kubernetes_namespace",
    ];
    for values in [&[][..], &every_branch[..], &["--set", "leaderElection.enabled=false"][..]] {
        let rendered = helm_template(&scratch, values);
        let deployment = document(&rendered, "Deployment").unwrap_or_else(|| panic!("no Deployment in:\n{rendered}"));
        let deployment: serde_json::Value = serde_yaml::from_str(deployment).expect("the Deployment is YAML");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let words = |field: &str| -> Vec<String> {
            let list = container[field].as_array().unwrap_or_else(|| panic!("no {field} in {container}"));
            list.iter().map(|word| word.as_str().expect("a string").to_owned()).collect()
        };
        let line = [words("command"), words("args")].concat();
        let parsed = Cli::try_parse_from(&line).unwrap_or_else(|error| panic!("{values:?}: {line:?}: {error}"));
        let Subcommand::Run(args) = parsed.command else { panic!("{line:?} is not `run`") };
        assert_eq!(args.leader_elect, !values.contains(&"leaderElection.enabled=false"), "{line:?}");
        if values == every_branch {
            assert_eq!(args.watch_namespace.as_deref(), Some("shop"));
            assert_eq!(args.allowed_prometheus_urls, ["http://team-a.prometheus:9090"]);
            assert_eq!(args.prometheus_max_concurrent_queries, 4);
            assert_eq!(args.metrics_namespace_label, "kubernetes_namespace");
        } else {
            assert_eq!(args.metrics_namespace_label, "namespace", "{line:?}");
        }
    }
    let _ = fs::remove_dir_all(&scratch);
}

#[test]
fn the_charts_service_monitor_scrapes_the_operators_metrics_service_only_when_enabled() {
    let scratch = scratch("service-monitor");
    assert!(document(&helm_template(&scratch, &[]), "ServiceMonitor").is_none(), "off by default");

    let rendered =
        helm_template(&scratch, &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.interval=15s"]);
    let monitor = document(&rendered, "ServiceMonitor").unwrap_or_else(|| panic!("no ServiceMonitor in:\n{rendered}"));
    let service = document(&rendered, "Service").unwrap_or_else(|| panic!("no Service in:\n{rendered}"));
    assert!(service.contains("name: matte-metrics\n") && service.contains("- name: metrics\n"), "{service}");
    assert!(monitor.contains("- port: metrics\n") && monitor.contains("interval: 15s\n"), "{monitor}");
    assert!(monitor.contains("matchNames:\n      - ops\n"), "{monitor}");
    // Every label the ServiceMonitor selects on is one the metrics Service carries.
    let (_, selector) = monitor.split_once("matchLabels:\n").unwrap_or_else(|| panic!("no selector in:\n{monitor}"));
    let wanted: Vec<&str> = selector.lines().take_while(|line| line.starts_with("      ")).map(str::trim).collect();
    assert!(wanted.contains(&"app.kubernetes.io/component: operator"), "{wanted:?}");
    let (labels, _) = service.split_once("\nspec:\n").unwrap_or_else(|| panic!("no spec in:\n{service}"));
    for label in &wanted {
        assert!(labels.lines().any(|line| line.trim() == *label), "the Service lacks {label}:\n{service}");
    }
    let _ = fs::remove_dir_all(&scratch);
}

#[test]
fn only_standby_replicas_get_a_disruption_budget() {
    let scratch = scratch("budget");
    let budget = |values: &[&str]| document(&helm_template(&scratch, values), "PodDisruptionBudget").map(str::to_owned);
    let two = budget(&[]).unwrap_or_else(|| panic!("two replicas by default, and a budget for them"));
    assert!(two.contains("maxUnavailable: 1\n"), "{two}");
    assert_eq!(budget(&["--set", "replicaCount=1"]), None, "one replica: its eviction must not be blocked");
    // Without leader election the chart runs one pod whatever replicaCount says.
    assert_eq!(budget(&["--set", "leaderElection.enabled=false"]), None);
    let _ = fs::remove_dir_all(&scratch);
}
