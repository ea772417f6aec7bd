//! The built-in traffic scenarios and the settings each is meant to be run with.

use clap::ValueEnum;
use matte_policy::observed::{DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS, DEFAULT_SCRAPE_INTERVAL_SECONDS};
use serde::Serialize;

use super::random::{Stream, StreamName};
use super::settings::{Routing, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Bursts of ~100 images (log-normal sizes) within 1–5 s, ~180 s apart (exponential gaps).
    BurstTrain,
    /// A batch job: 100 images every 5 minutes, like a cron job.
    PeriodicBursts,
    /// Steady random traffic whose rate rises and falls once over the run, like a day.
    Diurnal,
    /// Light background traffic and, once, 2000 images within 10 s.
    RareHugeBurst,
    /// One burst of 100 images within 1 s on pods that do 1 image/s, with a 10 s SLO:
    /// how large must the warm fleet be?
    HundredInTen,
    /// Heavy-tailed batch uploads: batches of 30 to 600 images (Pareto sizes, most a few
    /// dozen), each arriving at 20–50 images/s, ~4 minutes apart (exponential gaps), and
    /// once a flash crowd of 600 images over a minute.
    BatchUploads,
    /// A cron job: 300 images every ten minutes, each batch within 10 s.
    CronBatches,
    /// Light background traffic and, once, a crowd that ramps up to 12 images/s over a
    /// minute, stays two minutes and fades over one.
    FlashCrowd,
    /// Everything at once, on no clock: light background traffic (0.3 images/s), bursts
    /// of widely spread sizes (log-normal, median 150, σ 0.7: from a few dozen to
    /// several hundred) arriving over 2–20 s, ~5 minutes apart (exponential gaps), and
    /// once a crowd of 720 images over 90 s.
    MixedTraffic,
    /// A service allowed to scale to zero behind the gateway: nothing for the first 5–10
    /// minutes, then bursts of ~60 images (log-normal sizes) within 1–5 s, 20–40 minutes
    /// apart, so that the fleet goes back to zero between them and every burst waits for
    /// a cold start.
    ScaleFromZero,
    /// Poisson arrivals at a constant 3 images/s: a fleet that should find its size and
    /// hold it.
    SteadyTraffic,
    /// Poisson arrivals whose rate climbs evenly from nothing to 10 images/s over the run.
    Ramp,
    /// Bursts of ~500 images (log-normal sizes, σ 0.3) arriving over 5–15 s, ~15 minutes
    /// apart (exponential gaps): each more than the fleet between them takes in time.
    LargeBursts,
    /// A cron job as it runs in practice: every ten minutes, starting up to 30 s early or
    /// late, ~300 images (log-normal sizes, σ 0.3) over 5–20 s, one run in ten skipped.
    JitteryCron,
    /// An hourly job over eight hours: every hour, starting up to 30 s early or late,
    /// ~300 images (log-normal sizes, σ 0.3) over 5–20 s, one run in four skipped: a
    /// clock whose gaps are longer than keeping pods warm through them is worth, and
    /// whose beats are sometimes missed.
    HourlyBatches,
    /// Steady Poisson traffic at 2 images/s, more than one pod serves, and on top of it
    /// bursts of ~200 images (log-normal sizes, σ 0.4) within 1–4 s, ~5 minutes apart
    /// (exponential gaps), some of them close together by chance: an API's own load and
    /// the batch jobs of its users.
    BurstsOnSteadyTraffic,
    /// Two cron jobs on clocks of their own: ~300 images every ten minutes and ~150
    /// every seven, each starting up to 30 s early or late and landing over seconds, so
    /// that their runs sometimes coincide.
    TwoJobs,
    /// A pipeline that works in phases on a clock: Poisson arrivals at 5 images/s for
    /// five minutes, then nothing for five, over two hours, the first phase beginning
    /// within the first ten minutes: each phase a flow that outlasts a start-up, on a
    /// clock like a cron job's bursts.
    OnOffPhases,
}

/// The defaults every scenario starts from: pods and a cluster as the issue describes
/// them (60 s median start-up, 0.6 s per image, a few warm GPU nodes).
fn base_settings() -> Settings {
    Settings {
        duration_seconds: 3600.0,
        tail_seconds: 600.0,
        slo_seconds: 90.0,
        target_queue_latency_seconds: 30.0,
        service_seconds: 0.6,
        service_sigma: 0.3,
        max_batch_size: 1,
        startup_seconds: 60.0,
        startup_sigma: 0.3,
        warm_gpus: 8,
        max_gpus: 32,
        node_provision_seconds: 90.0,
        node_idle_timeout_seconds: 600.0,
        // Honest queues: about 10 s of work; the rest waits in the clients, where a new pod
        // can take it, instead of behind one pod.
        queue_capacity: 16,
        routing: Routing::Random,
        max_wait_seconds: 30.0,
        planned_utilization_percent: None,
        scrape_interval_seconds: DEFAULT_SCRAPE_INTERVAL_SECONDS as f64,
        pass_after_scrape_seconds: None,
        gateway_scrape_interval_seconds: DEFAULT_GATEWAY_SCRAPE_INTERVAL_SECONDS as f64,
        spread_scrapes: false,
        matched_startups: false,
        gateway_replicas: 1,
        rule_interval_seconds: 5.0,
        rate_window_seconds: 60.0,
        min_replicas: 1,
        max_replicas: 20,
        static_replicas: 2,
        flap_window_seconds: 120.0,
        burst_quiet_gap_seconds: 30.0,
    }
}

impl Scenario {
    pub fn settings(self) -> Settings {
        let base = base_settings();
        match self {
            Scenario::BurstTrain
            | Scenario::PeriodicBursts
            | Scenario::BatchUploads
            | Scenario::MixedTraffic
            | Scenario::SteadyTraffic
            | Scenario::Ramp
            | Scenario::LargeBursts
            | Scenario::BurstsOnSteadyTraffic => base,
            Scenario::CronBatches | Scenario::JitteryCron | Scenario::TwoJobs => {
                Settings { duration_seconds: 7200.0, ..base }
            }
            Scenario::OnOffPhases => Settings { duration_seconds: 7200.0, static_replicas: 4, ..base },
            Scenario::HourlyBatches => Settings { duration_seconds: 8.0 * 3600.0, ..base },
            Scenario::FlashCrowd => Settings { static_replicas: 4, ..base },
            Scenario::Diurnal => Settings { duration_seconds: 7200.0, static_replicas: 4, ..base },
            Scenario::RareHugeBurst => Settings { static_replicas: 4, ..base },
            Scenario::ScaleFromZero => Settings {
                duration_seconds: 7200.0,
                routing: Routing::Gateway,
                min_replicas: 0,
                static_replicas: 1,
                ..base
            },
            Scenario::HundredInTen => Settings {
                duration_seconds: 120.0,
                tail_seconds: 120.0,
                slo_seconds: 10.0,
                target_queue_latency_seconds: 9.0,
                service_seconds: 1.0,
                service_sigma: 0.05,
                warm_gpus: 16,
                routing: Routing::LeastOutstanding,
                min_replicas: 11,
                max_replicas: 32,
                static_replicas: 11,
                ..base
            },
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> String {
        self.to_possible_value().map_or_else(String::new, |value| value.get_name().to_string())
    }

    /// How many seeds its figures against the anchors are measured over: enough for the
    /// mean to settle. A run of scale-from-zero turns on a few cold starts, so it takes
    /// more.
    pub fn seeds_measured(self) -> u64 {
        match self {
            Scenario::ScaleFromZero => 48,
            _ => 12,
        }
    }

    /// The arrival times, sorted, for a run of `settings.duration_seconds`.
    pub fn arrivals(self, settings: &Settings, seed: u64) -> Vec<f64> {
        let mut rng = Stream::new(seed, StreamName::Arrivals);
        let duration = settings.duration_seconds;
        let mut arrivals = Vec::new();
        match self {
            Scenario::BurstTrain => {
                random_bursts(
                    &mut arrivals,
                    &mut rng,
                    RandomBursts { mean_gap: 180.0, median: 100.0, sigma: 0.5, spread: (1.0, 5.0) },
                    duration,
                );
            }
            Scenario::PeriodicBursts => {
                let mut start = 60.0;
                while start < duration {
                    let images = rng.lognormal(100.0, 0.2).round().max(1.0);
                    burst(&mut arrivals, &mut rng, start, images, 2.0, duration);
                    start += 300.0;
                }
            }
            Scenario::Diurnal => {
                // From a fifth of the mean rate at the ends to 1.8 times it in the middle.
                let mean_rate = 2.0;
                let rate_at = |time: f64| mean_rate * (1.0 - 0.8 * (std::f64::consts::TAU * time / duration).cos());
                varying_poisson(&mut arrivals, &mut rng, rate_at, 1.8 * mean_rate, duration);
            }
            Scenario::RareHugeBurst => {
                poisson(&mut arrivals, &mut rng, 1.0 / 20.0, duration);
                burst(&mut arrivals, &mut rng, duration / 3.0, 2000.0, 10.0, duration);
            }
            Scenario::HundredInTen => {
                burst(&mut arrivals, &mut rng, 60.0, 100.0, 1.0, duration);
            }
            Scenario::BatchUploads => {
                let mut start = rng.exponential(240.0);
                while start < duration {
                    let images = rng.pareto(30.0, 1.1).min(600.0).round();
                    let rate = rng.between(20.0, 50.0);
                    burst(&mut arrivals, &mut rng, start, images, images / rate, duration);
                    start += rng.exponential(240.0);
                }
                let crowd_at = rng.between(0.25, 0.75) * duration;
                burst(&mut arrivals, &mut rng, crowd_at, 600.0, 60.0, duration);
            }
            Scenario::CronBatches => {
                let mut start = 120.0;
                while start < duration {
                    burst(&mut arrivals, &mut rng, start, 300.0, 10.0, duration);
                    start += 600.0;
                }
            }
            Scenario::JitteryCron => {
                job_runs(&mut arrivals, &mut rng, Job::of_300_images(120.0, 600.0, 0.1), duration);
            }
            Scenario::HourlyBatches => {
                job_runs(&mut arrivals, &mut rng, Job::of_300_images(600.0, 3600.0, 0.25), duration);
            }
            Scenario::MixedTraffic => {
                poisson(&mut arrivals, &mut rng, 0.3, duration);
                random_bursts(
                    &mut arrivals,
                    &mut rng,
                    RandomBursts { mean_gap: 300.0, median: 150.0, sigma: 0.7, spread: (2.0, 20.0) },
                    duration,
                );
                let crowd_at = rng.between(0.3, 0.7) * duration;
                burst(&mut arrivals, &mut rng, crowd_at, 720.0, 90.0, duration);
            }
            Scenario::ScaleFromZero => {
                let mut start = rng.between(300.0, 600.0);
                while start < duration {
                    let images = rng.lognormal(60.0, 0.5).round().max(1.0);
                    let spread = rng.between(1.0, 5.0);
                    burst(&mut arrivals, &mut rng, start, images, spread, duration);
                    start += rng.between(1200.0, 2400.0);
                }
            }
            Scenario::FlashCrowd => {
                // Poisson arrivals at 0.1/s, and the crowd on top from a random moment in
                // the run's middle.
                let (background, peak) = (0.1, 12.0);
                let crowd_at = rng.between(0.25, 0.6) * duration;
                let crowd = |time: f64| {
                    let since = time - crowd_at;
                    let share = if !(0.0..=240.0).contains(&since) {
                        0.0
                    } else if since < 60.0 {
                        since / 60.0
                    } else if since < 180.0 {
                        1.0
                    } else {
                        (240.0 - since) / 60.0
                    };
                    peak * share
                };
                varying_poisson(&mut arrivals, &mut rng, |time| background + crowd(time), background + peak, duration);
            }
            Scenario::SteadyTraffic => {
                poisson(&mut arrivals, &mut rng, 3.0, duration);
            }
            Scenario::Ramp => {
                let peak = 10.0;
                varying_poisson(&mut arrivals, &mut rng, |time| peak * time / duration, peak, duration);
            }
            Scenario::LargeBursts => {
                random_bursts(
                    &mut arrivals,
                    &mut rng,
                    RandomBursts { mean_gap: 900.0, median: 500.0, sigma: 0.3, spread: (5.0, 15.0) },
                    duration,
                );
            }
            Scenario::BurstsOnSteadyTraffic => {
                poisson(&mut arrivals, &mut rng, 2.0, duration);
                random_bursts(
                    &mut arrivals,
                    &mut rng,
                    RandomBursts { mean_gap: 300.0, median: 200.0, sigma: 0.4, spread: (1.0, 4.0) },
                    duration,
                );
            }
            Scenario::TwoJobs => {
                for (period, median_images, spread) in [(600.0, 300.0, (5.0, 20.0)), (420.0, 150.0, (2.0, 10.0))] {
                    let first = rng.between(60.0, period);
                    let job = Job { first, period, median_images, spread, skipped: 0.0 };
                    job_runs(&mut arrivals, &mut rng, job, duration);
                }
            }
            Scenario::OnOffPhases => {
                let (rate, period, on_for) = (5.0, 600.0, 300.0);
                let first = rng.between(60.0, period);
                let rate_at = |time: f64| if time >= first && (time - first) % period < on_for { rate } else { 0.0 };
                varying_poisson(&mut arrivals, &mut rng, rate_at, rate, duration);
            }
        }
        arrivals.sort_by(f64::total_cmp);
        arrivals
    }
}

/// Adds Poisson arrivals at `rate` per second from 0 to `end`.
fn poisson(arrivals: &mut Vec<f64>, rng: &mut Stream, rate: f64, end: f64) {
    let mut time = rng.exponential(1.0 / rate);
    while time < end {
        arrivals.push(time);
        time += rng.exponential(1.0 / rate);
    }
}

/// Adds Poisson arrivals whose rate at each moment is `rate_at`, never above `peak`,
/// from 0 to `end`: drawn by thinning arrivals at the peak rate.
fn varying_poisson(arrivals: &mut Vec<f64>, rng: &mut Stream, rate_at: impl Fn(f64) -> f64, peak: f64, end: f64) {
    let mut time = rng.exponential(1.0 / peak);
    while time < end {
        if rng.uniform() < rate_at(time) / peak {
            arrivals.push(time);
        }
        time += rng.exponential(1.0 / peak);
    }
}

/// Bursts at random moments: exponential gaps, log-normal sizes, each spread uniformly
/// over a duration drawn between the two bounds.
struct RandomBursts {
    mean_gap: f64,
    median: f64,
    sigma: f64,
    spread: (f64, f64),
}

/// Adds `bursts` from 0 to `end`.
fn random_bursts(arrivals: &mut Vec<f64>, rng: &mut Stream, bursts: RandomBursts, end: f64) {
    let mut start = rng.exponential(bursts.mean_gap);
    while start < end {
        let images = rng.lognormal(bursts.median, bursts.sigma).round().max(1.0);
        let spread = rng.between(bursts.spread.0, bursts.spread.1);
        burst(arrivals, rng, start, images, spread, end);
        start += rng.exponential(bursts.mean_gap);
    }
}

/// A job on a clock as it runs in practice: from `first`, every `period`, starting up to
/// 30 s early or late, with `median_images` (log-normal sizes, σ 0.3) landing over a
/// time drawn within `spread`, a share `skipped` of its runs skipped.
struct Job {
    first: f64,
    period: f64,
    median_images: f64,
    spread: (f64, f64),
    skipped: f64,
}

impl Job {
    /// The job of ~300 images over 5–20 s that the cron scenarios run.
    fn of_300_images(first: f64, period: f64, skipped: f64) -> Job {
        Job { first, period, median_images: 300.0, spread: (5.0, 20.0), skipped }
    }
}

/// Adds the runs of `job` from 0 to `end`.
fn job_runs(arrivals: &mut Vec<f64>, rng: &mut Stream, job: Job, end: f64) {
    let mut scheduled = job.first;
    while scheduled < end {
        let start = scheduled + rng.between(-30.0, 30.0);
        let images = rng.lognormal(job.median_images, 0.3).round().max(1.0);
        let spread = rng.between(job.spread.0, job.spread.1);
        // A job that never skips draws nothing for it.
        let skipped = job.skipped > 0.0 && rng.uniform() < job.skipped;
        if !skipped {
            burst(arrivals, rng, start, images, spread, end);
        }
        scheduled += job.period;
    }
}

/// Adds `images` arrivals spread uniformly over `spread` seconds from `start`.
fn burst(arrivals: &mut Vec<f64>, rng: &mut Stream, start: f64, images: f64, spread: f64, end: f64) {
    let mut added = 0.0;
    while added < images {
        let time = start + rng.between(0.0, spread);
        if time < end {
            arrivals.push(time);
        }
        added += 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs of a trace: groups of arrivals separated by at least `quiet` seconds.
    fn runs(arrivals: &[f64], quiet: f64) -> usize {
        1 + arrivals.windows(2).filter(|pair| pair[1] - pair[0] >= quiet).count()
    }

    #[test]
    fn bursts_on_steady_traffic_keep_the_steady_rate_between_bursts() {
        let settings = Scenario::BurstsOnSteadyTraffic.settings();
        for seed in 1..=3 {
            let arrivals = Scenario::BurstsOnSteadyTraffic.arrivals(&settings, seed);
            let mut per_minute = vec![0_u32; 60];
            for &time in &arrivals {
                per_minute[(time / 60.0) as usize] += 1;
            }
            per_minute.sort_unstable();
            // 2 images/s is 120 a minute; most minutes hold no burst.
            let median = per_minute[30];
            assert!((100..=140).contains(&median), "seed {seed}: median minute {median}");
            assert!(per_minute[59] >= 250, "seed {seed}: no minute with a burst ({})", per_minute[59]);
        }
    }

    #[test]
    fn two_jobs_run_on_their_own_clocks() {
        let settings = Scenario::TwoJobs.settings();
        for seed in 1..=3 {
            let arrivals = Scenario::TwoJobs.arrivals(&settings, seed);
            // 12 runs of ~300 images and 17 of ~150 in two hours, a few landing together.
            let images = arrivals.len();
            assert!((5_000..=7_500).contains(&images), "seed {seed}: {images} images");
            let runs = runs(&arrivals, 30.0);
            assert!((22..=29).contains(&runs), "seed {seed}: {runs} runs");
        }
    }

    #[test]
    fn on_off_phases_arrive_for_five_minutes_in_every_ten() {
        let settings = Scenario::OnOffPhases.settings();
        for seed in 1..=3 {
            let arrivals = Scenario::OnOffPhases.arrivals(&settings, seed);
            // Twelve phases at most in two hours, the first within ten minutes; five minutes
            // of quiet between them.
            let phases = runs(&arrivals, 240.0);
            assert!((11..=12).contains(&phases), "seed {seed}: {phases} phases");
            assert!(arrivals[0] < 600.0, "seed {seed}: first at {}", arrivals[0]);
            // 5 images/s for 300 s a phase.
            let per_phase = arrivals.len() as f64 / phases as f64;
            assert!((1_350.0..=1_650.0).contains(&per_phase), "seed {seed}: {per_phase} images a phase");
        }
    }
}
