//! The simulator's promises: deterministic for a seed, the anchors' known failure modes
//! reproduced, and the operator's policy beating them on bursts by the margins
//! over many seeds.

use clap::Parser;
use matte_sim::outcome::Outcome;
use matte_sim::scalers::PolicyName;
use matte_sim::scenario::Scenario;
use matte_sim::settings::{Routing, Settings};
use matte_sim::sweep::summarize;
use matte_sim::{Report, compare};

fn run(settings: &Settings, arrivals: Vec<f64>, policies: &[PolicyName], seed: u64) -> Report {
    compare(settings, arrivals, policies, seed, "test".into()).expect("valid settings").report
}

fn scenario(scenario: Scenario, policies: &[PolicyName], seed: u64) -> Report {
    let settings = scenario.settings();
    let arrivals = scenario.arrivals(&settings, seed);
    run(&settings, arrivals, policies, seed)
}

fn outcome(report: &Report, policy: PolicyName) -> &Outcome {
    report.outcomes.iter().find(|outcome| outcome.policy == policy).expect("policy was run")
}

#[test]
fn the_same_seed_gives_the_same_numbers_and_another_seed_other_ones() {
    let short = Settings { duration_seconds: 900.0, ..Scenario::BurstTrain.settings() };
    let all =
        [PolicyName::Matte, PolicyName::Hpa, PolicyName::Keda, PolicyName::Kpa, PolicyName::Static, PolicyName::Oracle];
    let report = |seed| {
        let arrivals = Scenario::BurstTrain.arrivals(&short, seed);
        serde_json::to_string(&run(&short, arrivals, &all, seed)).expect("serializable")
    };
    assert_eq!(report(7), report(7));
    assert_ne!(report(7), report(8));
}

/// KPA sizes on concurrency over ready pods and ignores pods that are starting: with
/// slow pods, traffic that keeps arriving while the first pods start keeps raising its
/// count (and panic mode only ratchets up), so it starts more pods than needed, more of
/// them for nothing (7 of 12 against 4 of 10), and still answers fewer images in time
/// than a plan that counts the starting pods and the traffic that keeps arriving.
#[test]
fn kpa_overshoots_when_scaling_from_zero_with_slow_pods() {
    let settings =
        Settings { duration_seconds: 300.0, min_replicas: 0, startup_seconds: 90.0, ..Scenario::BurstTrain.settings() };
    // Two images a second for two minutes, from a fleet at zero.
    let arrivals: Vec<f64> = (0..240).map(|index| 30.0 + 0.5 * f64::from(index)).collect();
    let report = run(&settings, arrivals, &[PolicyName::Matte, PolicyName::Kpa], 1);
    let (matte, kpa) = (outcome(&report, PolicyName::Matte), outcome(&report, PolicyName::Kpa));
    assert!(kpa.pod_starts > matte.pod_starts, "kpa {kpa:?}\nmatte {matte:?}");
    assert!(kpa.wasted_starts > matte.wasted_starts, "kpa {kpa:?}\nmatte {matte:?}");
    assert!(kpa.slo_attainment < matte.slo_attainment, "kpa {kpa:?}\nmatte {matte:?}");
}

/// Nodes the cluster adds for a burst are paid for from launch until its idle timeout
/// after their last pod, used or not: a policy that asks for more pods than it keeps
/// leaves that capacity billed. With enough warm nodes none is added.
#[test]
fn nodes_added_for_a_burst_are_counted_until_their_idle_timeout() {
    let few_warm = Settings { duration_seconds: 1500.0, warm_gpus: 1, ..Scenario::BurstTrain.settings() };
    let arrivals = burst_at(30.0, 400, 2.0);
    let report = run(&few_warm, arrivals.clone(), &[PolicyName::Matte, PolicyName::Kpa], 1);
    for policy in [PolicyName::Matte, PolicyName::Kpa] {
        let outcome = outcome(&report, policy);
        assert!(outcome.added_node_seconds >= few_warm.node_idle_timeout_seconds, "{outcome:?}");
    }
    let (matte, kpa) = (outcome(&report, PolicyName::Matte), outcome(&report, PolicyName::Kpa));
    assert!(kpa.added_node_seconds > matte.added_node_seconds, "kpa {kpa:?}\nmatte {matte:?}");
    let all_warm = Settings { warm_gpus: 32, ..few_warm };
    let report = run(&all_warm, arrivals, &[PolicyName::Matte, PolicyName::Kpa], 1);
    assert!(report.outcomes.iter().all(|outcome| outcome.added_node_seconds == 0.0), "{:?}", report.outcomes);
}

/// The HPA looks every 15 s at a one-minute rate: its first pod for a burst is ready
/// well after the operator's, which looks every 5 s at the queue itself.
#[test]
fn hpa_reacts_late_under_its_15_second_sync() {
    let settings = Settings { duration_seconds: 300.0, ..Scenario::BurstTrain.settings() };
    // 200 images within 2 s, from a fleet of one.
    let arrivals: Vec<f64> = (0..200).map(|index| 30.0 + 0.01 * f64::from(index)).collect();
    let report = run(&settings, arrivals, &[PolicyName::Matte, PolicyName::Hpa], 1);
    let (matte, hpa) = (outcome(&report, PolicyName::Matte), outcome(&report, PolicyName::Hpa));
    let matte_reaction = matte.reaction_median_seconds.expect("matte reacted to the burst");
    let hpa_reaction = hpa.reaction_median_seconds.expect("hpa reacted to the burst");
    assert!(hpa_reaction >= matte_reaction + 10.0, "hpa {hpa:?}\nmatte {matte:?}");
}

/// Behind a plain Service, on burst-train over seeds 1-24: on average at least 99 % of
/// images within the 90 s SLO, with at least 25 % fewer GPU-seconds than the best of
/// HPA, KEDA and KPA (the lowest mean among them: 11,532 GPU-seconds against KPA's
/// 15,969), and fewer pod starts than any of them that answers as many images in time
/// (KPA: 99.68 % against 99.66 %, at 106.8 starts against 45.4). Over many seeds because
/// one seed's bursts can flatter or sink any policy. Fewer starts than every anchor, at
/// 30 % fewer GPU-seconds, held until a plain Service's backlog and flows were planned at
/// 0.75 of the pods' pace (99.34 % then, 9,669 GPU-seconds, 25.2 starts); the HPA starts
/// 33.8 and answers 98.92 %.
#[test]
fn on_burst_train_matte_meets_the_slo_with_far_fewer_gpu_seconds_and_starts_than_anchors_as_good() {
    let policies = [PolicyName::Matte, PolicyName::Hpa, PolicyName::Keda, PolicyName::Kpa];
    let reports: Vec<Report> = (1..=24).map(|seed| scenario(Scenario::BurstTrain, &policies, seed)).collect();
    let sweep = summarize(&reports).expect("24 reports");
    let summary = |policy| sweep.policies.iter().find(|summary| summary.policy == policy).expect("policy was run");
    let matte = summary(PolicyName::Matte);
    let anchors: Vec<_> = policies[1..].iter().map(|policy| summary(*policy)).collect();
    let fewest_gpu_seconds = anchors.iter().map(|anchor| anchor.mean_gpu_seconds).fold(f64::INFINITY, f64::min);
    assert!(matte.mean_slo_attainment >= 0.99, "{matte:?}");
    assert!(matte.mean_gpu_seconds <= 0.75 * fewest_gpu_seconds, "{matte:?} vs {fewest_gpu_seconds}");
    let as_good = anchors.iter().filter(|anchor| anchor.mean_slo_attainment >= matte.mean_slo_attainment);
    let fewest_starts_as_good = as_good.map(|anchor| anchor.mean_pod_starts).fold(f64::INFINITY, f64::min);
    assert!(matte.mean_pod_starts < fewest_starts_as_good, "{matte:?} vs {fewest_starts_as_good}");
}

/// Burst-train behind the gateway, as the operator deploys it, over seeds 1-24 and at
/// every phase of the passes against the scrapes (a quarter, half and a whole pass
/// after the scrape they read): at least 99.5 % of images within the SLO on average, at
/// no more than 1.3 times the GPU-seconds of the oracle that knows every arrival
/// (1.24-1.28 times with the phase), 22 seeds of 24 at 99 % or more (23 with every
/// phase) and the worst at 98 % (98.43-98.75 % with the phase), with fewer than 16.5
/// pod starts a run (16.0-16.2 with the phase; 14.5-14.8 before what keeps arriving
/// while a burst drains was planned for, 16.7 while the warm pods were sized for the
/// typical burst rather than a large one). The worst seed (5: a
/// burst of 326 images on one pod, before the bursts make any pattern) does not reach
/// the 98.5 % at every phase; seed 2 (a burst of 529 images, five typical ones,
/// on two warm pods with six free GPUs) ended between 97.60 % and 99.73 % with the
/// phase while pods started once bursts recur needed only 10 s of work, and is at 100 %
/// at every phase now. Without giving back pods still starting once the ready pods
/// drained a burst without them, this took 1.31 times the oracle's GPU-seconds.
#[test]
fn behind_the_gateway_burst_train_meets_the_slo_within_1_3_times_the_oracles_gpu_seconds() {
    let deployed = behind_gateway(Scenario::BurstTrain.settings());
    let at_phase = |share: f64| Settings {
        pass_after_scrape_seconds: Some(share * deployed.pass_interval_seconds()),
        ..deployed.clone()
    };
    for share in [0.25, 0.5, 1.0] {
        let settings = at_phase(share);
        let policies = [PolicyName::Matte, PolicyName::Oracle];
        let reports: Vec<Report> = (1..=24)
            .map(|seed| run(&settings, Scenario::BurstTrain.arrivals(&settings, seed), &policies, seed))
            .collect();
        let sweep = summarize(&reports).expect("24 reports");
        let (matte, oracle) = (&sweep.policies[0], &sweep.policies[1]);
        assert!(matte.mean_slo_attainment >= 0.995, "phase {share}: {matte:?}");
        assert!(matte.seeds_at_99_percent >= 22, "phase {share}: {matte:?}");
        assert!(matte.worst_slo_attainment >= 0.98, "phase {share}: {matte:?}");
        assert!(matte.mean_gpu_seconds <= 1.3 * oracle.mean_gpu_seconds, "phase {share}: {matte:?}\noracle {oracle:?}");
        assert!(matte.mean_pod_starts < 16.5, "phase {share}: {matte:?}");
    }
}

/// `autoscaling.plannedUtilizationPercent` reaches the policy: plans that count on half
/// of a pod's throughput start more pods for the same burst than plans that count on all
/// of it, and a share outside the CRD's range is refused as the apiserver refuses it.
#[test]
fn a_lower_planned_utilization_starts_more_pods_for_a_burst() {
    let at = |percent| Settings {
        planned_utilization_percent: Some(percent),
        ..behind_gateway(Scenario::BurstTrain.settings())
    };
    // Small enough that neither share asks for more than maxReplicas.
    let burst = burst_at(120.0, 150, 2.0);
    let (half, _) = runs(&at(50), burst.clone(), PolicyName::Matte);
    let (whole, _) = runs(&at(100), burst.clone(), PolicyName::Matte);
    assert!(half.pod_starts > whole.pod_starts, "50 %: {half:?}\n100 %: {whole:?}");
    for percent in [29, 101] {
        let refused = compare(&at(percent), burst.clone(), &[PolicyName::Matte], 1, "test".into());
        assert!(refused.is_err(), "{percent} % was accepted");
    }
}

/// When the first pass after a burst scales up, behind the gateway.
fn first_scale_up(settings: &Settings, burst: &[f64]) -> Option<f64> {
    let (_, run) = runs(settings, burst.to_vec(), PolicyName::Matte);
    run.changes.iter().find(|change| change.to > change.from).map(|change| change.at_seconds)
}

/// Matte's passes read the newest scrape: with every target scraped every 5 s, one that
/// runs a second after the scrape acts on a burst four seconds sooner than one that runs
/// just before the next scrape, on samples a whole interval old; a pass outside the
/// interval is refused.
#[test]
fn a_pass_acts_on_the_scrape_before_it() {
    let burst = burst_at(121.5, 200, 1.0);
    let with_pass = |after_scrape| Settings {
        pass_after_scrape_seconds: after_scrape,
        gateway_scrape_interval_seconds: 5.0,
        ..behind_gateway(Scenario::BurstTrain.settings())
    };
    // The burst is scraped at 125 s: read by the pass at 126 s, or at 130 s, before the
    // scrape taken then.
    assert_eq!(first_scale_up(&with_pass(Some(1.0)), &burst), Some(126.0));
    assert_eq!(first_scale_up(&with_pass(None), &burst), Some(130.0));
    assert!(compare(&with_pass(Some(0.0)), burst, &[PolicyName::Matte], 1, "test".into()).is_err());
}

/// The gateway scraped every second, as the operator's PodMonitor has it by default,
/// shows a burst to the pass a second after it is scraped, passes coming at every
/// scrape of the gateway: the burst landing at 121.5 s is scraped at 122 s and acted on
/// at 123 s, where a gateway scraped with the pods every 5 s shows it only to the pass
/// at 130 s. A gateway scraped less often than the pods is refused.
#[test]
fn a_gateway_scraped_every_second_shows_a_burst_to_the_next_pass() {
    let burst = burst_at(121.5, 200, 1.0);
    let with_gateway_every = |seconds| Settings {
        gateway_scrape_interval_seconds: seconds,
        ..behind_gateway(Scenario::BurstTrain.settings())
    };
    assert_eq!(with_gateway_every(1.0), behind_gateway(Scenario::BurstTrain.settings()), "the default");
    assert_eq!(first_scale_up(&with_gateway_every(1.0), &burst), Some(123.0));
    assert_eq!(first_scale_up(&with_gateway_every(5.0), &burst), Some(130.0));
    assert!(compare(&with_gateway_every(6.0), burst, &[PolicyName::Matte], 1, "test".into()).is_err());
}

/// A sweep's figures are the means of its runs', and its worst seed is the one with the
/// lowest SLO attainment.
#[test]
fn a_sweep_sums_up_its_seeds() {
    let short = Settings { duration_seconds: 900.0, ..Scenario::BurstTrain.settings() };
    let policies = [PolicyName::Matte, PolicyName::Static];
    let reports: Vec<Report> =
        (3..=5).map(|seed| run(&short, Scenario::BurstTrain.arrivals(&short, seed), &policies, seed)).collect();
    let sweep = summarize(&reports).expect("three reports");
    assert_eq!(sweep.seeds, vec![3, 4, 5]);
    for (index, summary) in sweep.policies.iter().enumerate() {
        let runs: Vec<&Outcome> = reports.iter().map(|report| &report.outcomes[index]).collect();
        assert!(runs.iter().all(|run| run.policy == summary.policy));
        let mean = |value: fn(&Outcome) -> f64| runs.iter().map(|run| value(run)).sum::<f64>() / 3.0;
        assert!((summary.mean_gpu_seconds - mean(|run| run.gpu_seconds)).abs() < 1e-6);
        assert!((summary.mean_pod_starts - mean(|run| run.pod_starts as f64)).abs() < 1e-9);
        assert!((summary.mean_slo_attainment - mean(|run| run.slo_attainment)).abs() < 1e-9);
        let worst = runs.iter().map(|run| run.slo_attainment).fold(f64::INFINITY, f64::min);
        assert_eq!(summary.worst_slo_attainment, worst);
        let worst_index = runs.iter().position(|run| run.slo_attainment == worst).expect("worst is one of them");
        assert_eq!(summary.worst_seed, reports[worst_index].seed);
        let at_99 = runs.iter().filter(|run| run.slo_attainment >= 0.99).count();
        assert_eq!(summary.seeds_at_99_percent, at_99);
    }
    assert_eq!(summarize(&[]), None);
}

/// Pods of 1 image/s cannot start within 10 s, so 100 images in 10 s need a warm
/// fleet: 11 pods behind least-outstanding routing do it, 10 do not.
#[test]
fn a_hundred_images_in_ten_seconds_need_eleven_warm_pods() {
    let base = Scenario::HundredInTen.settings();
    let attainment = |replicas| {
        let settings = Settings { static_replicas: replicas, ..base.clone() };
        let arrivals = Scenario::HundredInTen.arrivals(&settings, 1);
        outcome(&run(&settings, arrivals, &[PolicyName::Static], 1), PolicyName::Static).slo_attainment
    };
    assert_eq!(attainment(11), 1.0);
    assert!(attainment(10) < 1.0);
}

/// Every run of one policy, with what it recorded.
fn runs(settings: &Settings, arrivals: Vec<f64>, policy: PolicyName) -> (Outcome, matte_sim::record::RunRecord) {
    runs_drawing(settings, arrivals, policy, 1)
}

/// [`runs`] with the run's own draws (service times, start-ups, routing) from `seed`:
/// a scenario's seed N as `matte-sim --seed N` runs it.
fn runs_drawing(
    settings: &Settings,
    arrivals: Vec<f64>,
    policy: PolicyName,
    seed: u64,
) -> (Outcome, matte_sim::record::RunRecord) {
    let comparison = compare(settings, arrivals, &[policy], seed, "test".into()).expect("valid settings");
    let outcome = comparison.report.outcomes[0].clone();
    let run = comparison.runs.into_iter().next().expect("one run").1;
    (outcome, run)
}

/// `count` images spread evenly over `spread` seconds from `start`.
fn burst_at(start: f64, count: u32, spread: f64) -> Vec<f64> {
    (0..count).map(|index| start + spread * f64::from(index) / f64::from(count)).collect()
}

fn behind_gateway(settings: Settings) -> Settings {
    Settings { routing: Routing::Gateway, ..settings }
}

/// The gateway holds what the pods cannot take: no pod ever holds more than its queue
/// capacity, the busy ones are filled to it, and no pod refuses.
#[test]
fn the_gateway_never_sends_a_pod_more_than_its_capacity() {
    let settings = behind_gateway(Settings { duration_seconds: 300.0, ..Scenario::BurstTrain.settings() });
    let (outcome, run) = runs(&settings, burst_at(30.0, 300, 2.0), PolicyName::Matte);
    assert!(run.pods.iter().all(|pod| pod.peak_outstanding <= settings.queue_capacity), "{:?}", run.pods);
    assert_eq!(run.pods[0].peak_outstanding, settings.queue_capacity, "the first pod was filled");
    assert_eq!(outcome.unanswered, 0, "{outcome:?}");
    // Least-outstanding routing without the gateway's queue fills pods to the same
    // bound, but the pods turn the rest away each time they come back (after the ten
    // seconds a full pod's queue holds) instead of the gateway holding 30 s of work and
    // telling the rest when to come back: 1,130 refusals against 456 and 17 time-outs.
    let balancer = Settings { routing: Routing::LeastOutstanding, ..settings };
    let (without, _) = runs(&balancer, burst_at(30.0, 300, 2.0), PolicyName::Matte);
    assert!(without.rejections > 2 * (outcome.rejections + outcome.timeouts), "{without:?}\n{outcome:?}");
}

/// 70 images within 2 s on one pod of 0.6 s per image: it drains them in 42 s, each
/// within the SLO, and needs no help. While the gateway holds the burst the pod admits
/// as fast as it serves; read as sustained traffic, that rate over the planned share
/// asked for a second pod, which came after the drain to find nothing to do.
#[test]
fn behind_the_gateway_a_burst_one_pod_drains_in_time_starts_no_pod() {
    let settings = behind_gateway(Settings { duration_seconds: 300.0, ..Scenario::BurstTrain.settings() });
    let (outcome, run) = runs(&settings, burst_at(30.0, 70, 2.0), PolicyName::Matte);
    assert_eq!(outcome.slo_attainment, 1.0, "{outcome:?}");
    assert_eq!(outcome.pod_starts, 0, "{:?}", run.pods);
}

/// A burst one pod drains a little after the pods started for it would be ready: the
/// plan, counting on three quarters of that pod's throughput, starts some, and those
/// still starting once nothing waits are given back before they are ready. They are
/// counted as cancelled, and as wasted.
#[test]
fn pods_given_back_before_they_are_ready_are_counted_as_cancelled_starts() {
    let settings = behind_gateway(Settings { duration_seconds: 600.0, ..Scenario::BurstTrain.settings() });
    let (outcome, run) = runs(&settings, burst_at(30.0, 130, 3.0), PolicyName::Matte);
    let started = &run.pods[run.initial_pods..];
    let never_ready: Vec<_> = started.iter().filter(|pod| pod.ready_seconds.is_none()).collect();
    assert!(!never_ready.is_empty(), "{started:?}");
    assert!(never_ready.iter().all(|pod| pod.images_served == 0 && pod.ended_seconds < 600.0), "{never_ready:?}");
    assert_eq!(outcome.cancelled_starts, never_ready.len(), "{outcome:?}");
    assert!(outcome.cancelled_starts < outcome.pod_starts, "some became ready: {outcome:?}");
    assert!(outcome.wasted_starts >= outcome.cancelled_starts, "{outcome:?}");
}

/// The log of replica changes says why Matte made each: the reason and the message the
/// resource's status would carry, with the numbers the decision came from. The anchors'
/// changes carry no account, as their real counterparts give none.
#[test]
fn each_change_of_matte_s_replicas_comes_with_its_reason() {
    let settings = behind_gateway(Settings { duration_seconds: 600.0, ..Scenario::BurstTrain.settings() });
    let (_, run) = runs(&settings, burst_at(30.0, 130, 3.0), PolicyName::Matte);
    let first = run.changes.first().expect("the burst started pods");
    let why = first.why.as_deref().expect("Matte explains its decisions");
    assert!(why.starts_with("ScaleUp: backlog "), "{why}");
    assert!(why.ends_with(&format!("scaling up from {} to {}", first.from, first.to)), "{why}");
    assert!(run.changes.iter().all(|change| change.why.is_some()), "{:?}", run.changes);
    let given_back = run.changes.iter().find(|change| change.to < change.from).expect("the pods went back");
    assert!(given_back.why.as_deref().is_some_and(|why| why.starts_with("ScaleDown: ")), "{given_back:?}");

    let (_, hpa) = runs(&settings, burst_at(30.0, 130, 3.0), PolicyName::Hpa);
    assert!(!hpa.changes.is_empty() && hpa.changes.iter().all(|change| change.why.is_none()), "{:?}", hpa.changes);
}

/// The bursts' late images add up to the run's: every image is in one burst, judged
/// against the same SLO. And the command prints both logs after the table.
#[test]
fn the_late_images_of_the_bursts_are_the_runs() {
    let settings = Scenario::BurstTrain.settings();
    let arrivals = Scenario::BurstTrain.arrivals(&settings, 5);
    let comparison =
        compare(&settings, arrivals, &[PolicyName::Matte, PolicyName::Hpa], 5, "test".into()).expect("valid settings");
    for ((policy, run), outcome) in comparison.runs.iter().zip(&comparison.report.outcomes) {
        let lateness = matte_sim::outcome::lateness_by_burst(&comparison.bursts, &run.latencies, settings.slo_seconds);
        let late: usize = lateness.iter().map(|burst| burst.late).sum();
        let within = (outcome.slo_attainment * outcome.images as f64).round() as usize;
        assert_eq!(late, outcome.images - within, "{policy:?}");
        assert!(late > 0, "seed 5 has a burst that {policy:?} misses in part");
    }

    let args =
        ["matte-sim", "--scenario", "burst-train", "--seed", "5", "--policy", "matte", "--bursts", "--decisions"];
    let printed = matte_sim::command::run(&matte_sim::cli::Cli::try_parse_from(args).expect("valid")).expect("runs");
    assert!(printed.stdout.contains("\nbursts ("), "{}", printed.stdout);
    assert!(printed.stdout.contains("\nreplica changes, matte ("), "{}", printed.stdout);
}

/// 60 images within a second on two pods of 0.6 s per image: the last one's expected
/// wait (about 8 s) fits the 30 s budget, so every client is served at its first try;
/// the pods alone refuse most of them.
#[test]
fn a_burst_within_the_budget_sees_no_refusal() {
    let two = Settings { duration_seconds: 120.0, static_replicas: 2, ..Scenario::BurstTrain.settings() };
    let (gateway, _) = runs(&behind_gateway(two.clone()), burst_at(20.0, 60, 1.0), PolicyName::Static);
    assert_eq!((gateway.rejections, gateway.timeouts, gateway.unanswered), (0, 0, 0), "{gateway:?}");
    assert!(gateway.max_seconds.expect("all answered") < 30.0, "{gateway:?}");
    let (random, _) = runs(&two, burst_at(20.0, 60, 1.0), PolicyName::Static);
    assert!(random.rejections >= 20, "{random:?}");
}

/// A burst beyond the budget: the gateway admits what fits and answers the rest 429
/// with the expected wait as `Retry-After`; they come back and are all served.
#[test]
fn a_burst_beyond_the_budget_is_refused_in_part_and_served_on_retry() {
    let one = Settings { duration_seconds: 300.0, static_replicas: 1, ..Scenario::BurstTrain.settings() };
    // Served one by one, the first request measures the per-image time; the burst
    // follows.
    let mut arrivals = vec![5.0];
    arrivals.extend(burst_at(20.0, 150, 1.0));
    let (outcome, _) = runs(&behind_gateway(one), arrivals, PolicyName::Static);
    assert_eq!(outcome.unanswered, 0, "{outcome:?}");
    // One pod admits about 16 places plus 30 s of work (50 images) at once.
    assert!(outcome.rejections >= 60, "{outcome:?}");
}

/// With `minReplicas: 0` behind the gateway the fleet goes back to zero after a burst
/// and a request waiting in the gateway wakes it for the next, from the gateway's
/// metrics alone.
#[test]
fn with_min_zero_the_fleet_returns_to_zero_and_wakes_on_the_next_burst() {
    let settings = Settings { duration_seconds: 2400.0, ..Scenario::ScaleFromZero.settings() };
    let mut arrivals = burst_at(300.0, 50, 2.0);
    arrivals.extend(burst_at(1500.0, 50, 2.0));
    let (outcome, run) = runs(&settings, arrivals, PolicyName::Matte);
    assert_eq!(run.initial_pods, 0);
    let replicas_at = |at: f64| {
        run.timeline.iter().find(|point| point.at_seconds >= at).map(|point| point.replicas).expect("in the run")
    };
    assert_eq!(replicas_at(290.0), 0, "no pod before any traffic");
    assert!(replicas_at(310.0) > 0, "the first burst woke the fleet");
    assert_eq!(replicas_at(1400.0), 0, "back to zero between the bursts");
    assert!(replicas_at(1510.0) > 0, "the second burst woke it again");
    assert_eq!(replicas_at(2390.0), 0, "and back to zero after it");
    assert_eq!(outcome.unanswered, 0, "{outcome:?}");
    // Each burst waited for a cold start, about a minute, and no longer than the SLO.
    let p50 = outcome.p50_seconds.expect("answered");
    assert!(p50 > 40.0 && outcome.slo_attainment == 1.0, "{outcome:?}");
}

/// The scale-from-zero scenario over a few seeds: every image is answered, and the
/// fleet is at zero most of the time.
#[test]
fn scale_from_zero_serves_every_burst_and_idles_at_zero() {
    for seed in 1..=3 {
        let settings = Scenario::ScaleFromZero.settings();
        let arrivals = Scenario::ScaleFromZero.arrivals(&settings, seed);
        let (outcome, run) = runs(&settings, arrivals, PolicyName::Matte);
        assert_eq!(outcome.unanswered, 0, "seed {seed}: {outcome:?}");
        let at_zero = run.timeline.iter().filter(|point| point.replicas == 0).count();
        assert!(at_zero as f64 > 0.8 * run.timeline.len() as f64, "seed {seed}: {at_zero} of {}", run.timeline.len());
    }
}

/// The same question behind the gateway: 11 warm pods answer all 100 within 10 s on
/// every one of twelve seeds (10 on most), 9 cannot.
#[test]
fn a_hundred_images_in_ten_seconds_behind_the_gateway() {
    let base = behind_gateway(Scenario::HundredInTen.settings());
    let attainment = |replicas, seed| {
        let settings = Settings { static_replicas: replicas, ..base.clone() };
        let arrivals = Scenario::HundredInTen.arrivals(&settings, seed);
        outcome(&run(&settings, arrivals, &[PolicyName::Static], seed), PolicyName::Static).slo_attainment
    };
    assert!((1..=12).all(|seed| attainment(11, seed) == 1.0));
    assert!(attainment(9, 1) < 0.95);
}

/// Behind the gateway the policy sees the new arrivals and the clients away: a crowd or
/// a long batch upload that keeps outrunning the pods gets pods for its rate, where
/// with random routing (no gateway) its clients bounce between full pods and wait out
/// their `Retry-After` (seeds 1-12: flash-crowd 97.65 % against 90.33 %, batch-uploads
/// 97.32 % against 94.19 %; when the test was written, before the plain Service's
/// arrivals were read from the pods' counts and its backlog planned at 0.75 of the
/// pace, 94.0 % against 78.2 % and 95.3 % against 90.1 %; without the pods for the rate,
/// 84.5 % and 93.0 % behind the gateway).
#[test]
fn behind_the_gateway_a_sustained_overload_gets_pods_for_its_rate() {
    for overload in [Scenario::FlashCrowd, Scenario::BatchUploads] {
        let attainment = |routing| {
            let settings = Settings { routing, ..overload.settings() };
            let reports: Vec<Report> = (1..=12)
                .map(|seed| run(&settings, overload.arrivals(&settings, seed), &[PolicyName::Matte], seed))
                .collect();
            summarize(&reports).expect("12 reports").policies[0].mean_slo_attainment
        };
        let (gateway, random) = (attainment(Routing::Gateway), attainment(Routing::Random));
        assert!(gateway >= random + 0.025, "{overload:?}: gateway {gateway}, random {random}");
    }
}

/// Steady traffic the ready pods serve is no flow, even when a few seconds of it read
/// above their planned share: behind the gateway the fleet finds its size and holds it
/// (seeds 1-4 of 3 images/s, and of a simulated day whose rate rises and falls). Read
/// against the planned share instead of the pods' throughput, the noise made a flow
/// every few minutes, each starting a pod given back before it was ready: 8 flaps a run
/// on steady traffic and 35 on the day, where there are now 1 and 2.
#[test]
fn behind_the_gateway_steady_traffic_is_followed_without_flapping() {
    for (scenario, most_flaps) in [(Scenario::SteadyTraffic, 2.0), (Scenario::Diurnal, 10.0)] {
        let settings = Settings { routing: Routing::Gateway, ..scenario.settings() };
        let reports: Vec<Report> = (1..=4)
            .map(|seed| run(&settings, scenario.arrivals(&settings, seed), &[PolicyName::Matte], seed))
            .collect();
        let matte = &summarize(&reports).expect("4 reports").policies[0];
        assert_eq!(matte.worst_slo_attainment, 1.0, "{scenario:?}: {matte:?}");
        assert!(matte.mean_flaps <= most_flaps, "{scenario:?}: {matte:?}");
    }
}

/// A cron job's batches keep a clock: from the fourth on, the pods that absorb one are
/// started a lead (a start-up and some margin) ahead of it and given back after it,
/// rather than kept warm through the ten minutes between, for the same attainment at
/// far fewer GPU-seconds than KPA's.
#[test]
fn behind_the_gateway_a_cron_jobs_pods_come_ahead_of_each_batch_and_go_between_them() {
    let settings = behind_gateway(Scenario::CronBatches.settings());
    let arrivals = Scenario::CronBatches.arrivals(&settings, 1);
    let (matte, record) = runs(&settings, arrivals.clone(), PolicyName::Matte);
    let fleet_at = |at: f64| {
        record.changes.iter().take_while(|change| change.at_seconds <= at).last().map_or(1, |change| change.to)
    };
    for batch in 3..12 {
        let start = 120.0 + 600.0 * f64::from(batch);
        assert_eq!(fleet_at(start - 150.0), 1, "batch at {start}: given back since the last");
        assert!(fleet_at(start) >= 3, "batch at {start}: pods started ahead of it, {:?}", record.changes);
    }
    let (kpa, _) = runs(&settings, arrivals, PolicyName::Kpa);
    assert!(matte.slo_attainment >= 0.999, "{matte:?}");
    assert!(matte.gpu_seconds < 0.6 * kpa.gpu_seconds, "matte {matte:?}\nkpa {kpa:?}");
}

/// A cron job that drifts by up to 30 s, varies its batches and skips a run in ten still
/// keeps a clock the policy follows: seeds 1-4 all answered within the SLO, at under
/// 85 % of KPA's GPU-seconds (keeping the pods warm through the gaps, as the policy did
/// before it followed clocks, took 49 % more).
#[test]
fn behind_the_gateway_a_drifting_cron_job_is_still_followed() {
    let settings = behind_gateway(Scenario::JitteryCron.settings());
    let policies = [PolicyName::Matte, PolicyName::Kpa];
    let reports: Vec<Report> =
        (1..=4).map(|seed| run(&settings, Scenario::JitteryCron.arrivals(&settings, seed), &policies, seed)).collect();
    let sweep = summarize(&reports).expect("4 reports");
    let (matte, kpa) = (&sweep.policies[0], &sweep.policies[1]);
    assert!(matte.worst_slo_attainment >= 0.999, "{matte:?}");
    assert!(matte.mean_gpu_seconds < 0.85 * kpa.mean_gpu_seconds, "matte {matte:?}\nkpa {kpa:?}");
}

/// Pods that start within the target (15 s: a start-up and the 10 s confirmation time
/// within the 30 s target) are in time when started as a burst comes: a drifting cron
/// job's pods are then not started ahead of it, through a tolerance of up to two
/// minutes, and every run is answered within the SLO on seeds 1-4 at 0.62 of KPA's
/// GPU-seconds (started ahead, as pods slower to start are, they took 1.25 of it). The
/// plan's start-up is the median of those measured, and where it strays above 20 s a
/// run is still prepared for: at a median of 20 s, some runs are and others not.
#[test]
fn behind_the_gateway_pods_that_start_within_the_target_are_started_when_a_job_comes() {
    let settings = behind_gateway(Settings { startup_seconds: 15.0, ..Scenario::JitteryCron.settings() });
    let policies = [PolicyName::Matte, PolicyName::Kpa];
    let mut reports = Vec::new();
    let mut started_ahead = 0;
    for seed in 1..=4 {
        let arrivals = Scenario::JitteryCron.arrivals(&settings, seed);
        let comparison = compare(&settings, arrivals, &policies, seed, "test".into()).expect("valid settings");
        let (_, matte) = comparison.runs.iter().find(|(policy, _)| *policy == PolicyName::Matte).expect("matte ran");
        started_ahead += matte
            .changes
            .iter()
            .filter(|change| change.why.as_deref().is_some_and(|why| why.starts_with("WarmUpForNextBurst")))
            .count();
        reports.push(comparison.report);
    }
    // Of the 46 runs, the one or two that follow pods measured slow (a median start-up
    // above 20 s reads as one that does not fit) are still prepared for.
    assert!(started_ahead <= 4, "pods started ahead of {started_ahead} runs");
    let sweep = summarize(&reports).expect("4 reports");
    let (matte, kpa) = (&sweep.policies[0], &sweep.policies[1]);
    assert!(matte.worst_slo_attainment >= 0.999, "{matte:?}");
    assert!(matte.mean_gpu_seconds < 0.8 * kpa.mean_gpu_seconds, "matte {matte:?}\nkpa {kpa:?}");
}

/// An hourly job that skips a run in four, its starts drifting by up to 30 s: far longer
/// gaps than keeping pods warm through them is worth, but a clock all the same. From
/// the fifth run on (a clock needs two gaps that agree, and a run skipped among the first
/// leaves the median of two gaps between one period and two), every run finds pods
/// started ahead of it, after a run skipped too, and the fleet is back at one between
/// runs. On seeds 1-4 (`matte-sim --scenario hourly-batches --routing gateway --seed N`)
/// every seed answers at least 98.5 % within the SLO (98.65-100 %), the four together at
/// least as many as KPA's (99.56 % against 97.85 % on average), at under 95 % of its
/// GPU-seconds (76-88 %); before hourly clocks and skipped runs were followed, the pods
/// came only after each run began. Each seed draws its own start-ups, as the command
/// does: with one seed's draws for every trace, as the other tests take them, a change
/// elsewhere that starts one pod more or fewer early on hands the later runs other
/// start-ups, and one run of seed 2 lost 41 images on the same decisions.
#[test]
fn behind_the_gateway_an_hourly_job_that_skips_runs_gets_its_pods_ahead_of_each_run() {
    let settings = behind_gateway(Scenario::HourlyBatches.settings());
    let (mut matte_total, mut kpa_total) = (0.0, 0.0);
    for seed in 1..=4 {
        let arrivals = Scenario::HourlyBatches.arrivals(&settings, seed);
        let runs_started: Vec<f64> = arrivals
            .iter()
            .zip(std::iter::once(f64::NEG_INFINITY).chain(arrivals.iter().copied()))
            .filter(|(at, before)| *at - *before > 600.0)
            .map(|(at, _)| *at)
            .collect();
        let (matte, record) = runs_drawing(&settings, arrivals.clone(), PolicyName::Matte, seed);
        let fleet_at = |at: f64| {
            record.changes.iter().take_while(|change| change.at_seconds <= at).last().map_or(1, |change| change.to)
        };
        for start in runs_started.iter().skip(4) {
            assert_eq!(fleet_at(start - 900.0), 1, "seed {seed}, run at {start}: given back since the last");
            assert!(fleet_at(*start) >= 3, "seed {seed}, run at {start}: pods started ahead, {:?}", record.changes);
        }
        let (kpa, _) = runs_drawing(&settings, arrivals, PolicyName::Kpa, seed);
        assert!(matte.slo_attainment >= 0.985, "seed {seed}: {matte:?}");
        assert!(matte.gpu_seconds < 0.95 * kpa.gpu_seconds, "seed {seed}: matte {matte:?}\nkpa {kpa:?}");
        (matte_total, kpa_total) = (matte_total + matte.slo_attainment, kpa_total + kpa.slo_attainment);
    }
    assert!(matte_total >= kpa_total, "within the SLO over seeds 1-4: matte {matte_total}, KPA {kpa_total}");
}
