//! The one loop that owns the model: it takes batches from the queue and runs them
//! strictly one after another, so the GPU is never shared and never idle while work
//! waits. Requests whose client has gone or whose deadline has passed are dropped
//! here, before they cost a run.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::queue::{Inferred, Job, JobQueue};

/// What the loop reads from and reports to.
#[derive(Clone, Copy)]
pub struct LoopContext<'a> {
    pub queue: &'a JobQueue,
    pub metrics: &'a Metrics,
    pub service_time: &'a ServiceTime,
    pub health: &'a LoopHealth,
    pub batch_delay: Duration,
}

/// Runs until the queue is closed and empty.
pub fn run(mut model: Model, context: &LoopContext<'_>) {
    let LoopContext { queue, metrics, service_time, health, batch_delay } = *context;
    let max_batch = model.shape().max_batch_size;
    while let Some(batch) = queue.next_batch(max_batch, batch_delay) {
        let started = Instant::now();
        let jobs = still_wanted(batch, started);
        if jobs.is_empty() {
            continue;
        }
        for job in &jobs {
            metrics.queue_wait.observe((started - job.queued).as_secs_f64());
        }
        let inputs: Vec<&[f32]> = jobs.iter().map(|job| job.tensor.as_slice()).collect();
        let rows = model.rows(inputs.len());
        health.run_begins();
        let result = model.run(&inputs);
        health.run_ends(result.is_ok());
        let elapsed = started.elapsed();
        metrics.inference.observe(elapsed.as_secs_f64());
        metrics.batch_size.observe(jobs.len() as f64);

        match result {
            Ok(masks) => {
                // Rows of runs that served: a run that fails at once would otherwise add
                // its rows in no time, and the pace the autoscaler reads (rows over the
                // runs' seconds) would show a failing pod as a fast one.
                metrics.inference_rows.inc_by(rows as u64);
                metrics.images_processed.inc_by(jobs.len() as u64);
                service_time.record(elapsed / jobs.len() as u32);
                for (job, mask) in jobs.into_iter().zip(masks) {
                    let queue_wait = started - job.queued;
                    job.answer(Ok(Inferred { mask, queue_wait, inference: elapsed }));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch = jobs.len(), "inference run failed");
                let reason = error.to_string();
                for job in jobs {
                    job.answer(Err(Error::Inference(reason.clone())));
                }
            }
        }
    }
}

/// Drops jobs nobody waits for and answers expired ones, keeping the rest.
fn still_wanted(batch: Vec<Job>, now: Instant) -> Vec<Job> {
    batch
        .into_iter()
        .filter_map(|job| {
            // Claimed before the checks: a handler whose deadline passes from here on
            // waits for the result, and one that gave up first is not run for.
            if !job.claim.take_into_run() || job.reply.is_closed() {
                None
            } else if now > job.deadline {
                let error = Error::DeadlineExceeded {
                    waited: (now - job.arrived).as_secs_f64(),
                    deadline: (job.deadline - job.arrived).as_secs_f64(),
                };
                job.answer(Err(error));
                None
            } else {
                Some(job)
            }
        })
        .collect()
}

/// What the inference loop reports about itself, so that health tells the truth.
pub struct LoopHealth {
    running: AtomicBool,
    /// When the current run began, in milliseconds since `epoch` plus one; 0 when idle.
    run_started: AtomicU64,
    consecutive_failures: AtomicU32,
    epoch: Instant,
}

impl LoopHealth {
    /// Failed runs in a row after which the pod stops taking work and asks to be
    /// restarted: no new run will tell whether it recovered. The probes' thresholds
    /// make it unready (2 × 5 s) well before it is restarted (3 × 10 s).
    pub const FAILURES_UNHEALTHY: u32 = 3;

    pub(crate) fn new() -> LoopHealth {
        LoopHealth {
            running: AtomicBool::new(false),
            run_started: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn run_begins(&self) {
        let since_epoch = self.epoch.elapsed().as_millis() as u64 + 1;
        self.run_started.store(since_epoch, Ordering::SeqCst);
    }

    pub fn run_ends(&self, succeeded: bool) {
        self.run_started.store(0, Ordering::SeqCst);
        if succeeded {
            self.consecutive_failures.store(0, Ordering::SeqCst);
        } else {
            self.consecutive_failures.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How long the current run has taken so far, if one is under way.
    pub(crate) fn current_run(&self) -> Option<Duration> {
        match self.run_started.load(Ordering::SeqCst) {
            0 => None,
            started => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(started - 1))),
        }
    }

    pub(crate) fn failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::SeqCst)
    }
}

/// A moving average of inference time per image, which `Retry-After` is computed from.
pub struct ServiceTime {
    /// Seconds as `f64` bits; written by the loop, read by handlers.
    average_bits: AtomicU64,
}

impl ServiceTime {
    pub fn new(initial: Duration) -> ServiceTime {
        ServiceTime { average_bits: AtomicU64::new(initial.as_secs_f64().to_bits()) }
    }

    /// Replaces the average with a first measurement (the warm-up run).
    pub fn record_first(&self, per_image: Duration) {
        self.average_bits.store(per_image.as_secs_f64().to_bits(), Ordering::Relaxed);
    }

    pub fn record(&self, per_image: Duration) {
        let updated = matte_common::queue::updated_service_time(self.per_image(), per_image);
        self.average_bits.store(updated.as_secs_f64().to_bits(), Ordering::Relaxed);
    }

    pub fn per_image(&self) -> Duration {
        Duration::from_secs_f64(f64::from_bits(self.average_bits.load(Ordering::Relaxed)))
    }

    /// When a rejected client should come back (`matte_common::queue::retry_after`).
    pub fn retry_after(&self, requests_ahead: usize) -> Duration {
        matte_common::queue::retry_after(requests_ahead, self.per_image())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_measured_service_time() {
        let service = ServiceTime::new(Duration::from_millis(500));
        assert_eq!(service.retry_after(8), Duration::from_secs(4));
        for _ in 0..50 {
            service.record(Duration::from_secs(2));
        }
        assert!((service.per_image().as_secs_f64() - 2.0).abs() < 0.01);
        assert_eq!(service.retry_after(8), Duration::from_secs(16));
    }

    #[test]
    fn abandoned_and_expired_jobs_are_not_inferred() {
        let now = Instant::now();
        let make = |deadline: Instant| crate::queue::test_job(now, deadline);
        let (live, _live_receiver) = make(now + Duration::from_secs(10));
        let (abandoned, abandoned_receiver) = make(now + Duration::from_secs(10));
        drop(abandoned_receiver);
        let (expired, mut expired_receiver) = make(now);

        // Its handler's deadline passed just before the run: it gave up, and answered 504.
        let (given_up, _given_up_receiver) = make(now + Duration::from_secs(10));
        assert!(given_up.claim.give_up());

        let kept = still_wanted(vec![live, abandoned, expired, given_up], now + Duration::from_secs(1));
        assert_eq!(kept.len(), 1);
        assert!(!kept[0].claim.give_up(), "a job taken into a run is seen through by its handler");
        match expired_receiver.try_recv() {
            Ok(Err(Error::DeadlineExceeded { waited, .. })) => assert!((waited - 1.0).abs() < 1e-6),
            other => panic!("expected a deadline error, got {other:?}"),
        }
    }
}
