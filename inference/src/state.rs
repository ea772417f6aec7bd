//! What every handler shares: the limits, the metrics, the queue, the places a request
//! must hold to exist, the CPU workers, and the pod's lifecycle flags.
//!
//! Accounting follows the work, not the handler: a [`Place`] is shared by whatever is
//! still working on a request (the handler, its decode on a CPU worker, its job in the
//! queue), and a CPU worker is held by the blocking task itself. A client that hangs up
//! therefore frees nothing that is still in use, and nothing stays taken once unused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::Error;
use crate::config::Config;
use crate::imaging::Preprocess;
use crate::inference_loop::{LoopHealth, ServiceTime};
use crate::metrics::Metrics;
use crate::place::Place;
use crate::queue::JobQueue;
use matte_serve::UploadPace;

/// Per-request limits taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_dimension: u32,
    pub max_input_pixels: u64,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub upload_pace: UploadPace,
}

/// How the pod stands in its life: loading, serving, or draining (first still
/// admitting while endpoints catch up, then refusing).
#[derive(Default)]
struct Lifecycle {
    ready: AtomicBool,
    unready_for_drain: AtomicBool,
    refusing: AtomicBool,
}

pub struct AppState {
    pub limits: Limits,
    pub metrics: Metrics,
    pub queue: JobQueue,
    pub service_time: ServiceTime,
    pub loop_health: LoopHealth,
    /// Set once the model is loaded: the input every image is prepared for.
    pub preprocess: OnceLock<Preprocess>,
    capacity: u32,
    admission: Arc<Semaphore>,
    place_released: Arc<Notify>,
    cpu_workers: Arc<Semaphore>,
    lifecycle: Lifecycle,
}

impl AppState {
    pub fn new(config: &Config) -> AppState {
        AppState {
            limits: Limits {
                max_dimension: config.max_dimension,
                max_input_pixels: config.max_input_pixels,
                // At most 1 GiB (`memory::MAX_BODY_BYTES_LIMIT`).
                max_body_bytes: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
                request_timeout: config.request_timeout,
                upload_pace: UploadPace {
                    grace: config.upload_grace,
                    min_bytes_per_second: config.min_upload_bytes_per_second,
                },
            },
            metrics: Metrics::default(),
            queue: JobQueue::new(),
            // Replaced by the warm-up run's time before the first request is admitted.
            service_time: ServiceTime::new(Duration::from_secs(1)),
            loop_health: LoopHealth::new(),
            preprocess: OnceLock::new(),
            capacity: config.queue_capacity,
            admission: Arc::new(Semaphore::new(config.queue_capacity as usize)),
            place_released: Arc::new(Notify::new()),
            cpu_workers: Arc::new(Semaphore::new(config.cpu_workers())),
            lifecycle: Lifecycle::default(),
        }
    }

    /// Takes one of the `queue_capacity` places, or says why not.
    pub fn admit(&self) -> Result<Place, Error> {
        if let Some(reason) = self.refusal() {
            return Err(reason);
        }
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| Error::QueueFull {
            capacity: self.capacity,
            retry_after: self.service_time.retry_after(self.inflight()),
        })?;
        let place = Place::new(permit, self.place_released.clone());
        // Refusal may have begun between the check and the permit; the drain waits
        // only for places it can see, so re-check now that this one is visible.
        if self.lifecycle.refusing.load(Ordering::SeqCst) {
            return Err(Error::Draining);
        }
        Ok(place)
    }

    /// Requests holding a place: queued, decoding, inferring or encoding.
    pub fn inflight(&self) -> usize {
        self.capacity as usize - self.admission.available_permits()
    }

    /// Resolves once no request holds a place.
    pub async fn all_places_free(&self) {
        loop {
            let released = self.place_released.notified();
            if self.inflight() == 0 {
                return;
            }
            released.await;
        }
    }

    /// Runs CPU-heavy work (decode, resize, encode) on the blocking pool, at most
    /// `cpu_workers` at a time so image work cannot starve the runtime. The worker is
    /// held by the work itself: if the caller stops waiting, the limit still holds
    /// until the work is done.
    pub async fn on_cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let worker = self.cpu_workers.clone().acquire_owned().await.map_err(|_| Error::CpuPoolClosed)?;
        tokio::task::spawn_blocking(move || {
            let _worker = worker;
            work()
        })
        .await
        .map_err(|e| Error::CpuWorkerFailed(e.to_string()))
    }

    /// Why a new request is refused now, if it is: loading, failing (a loop that has
    /// stopped among it: said to be loading, a dead loop sent the on-call looking at
    /// the model's download), or draining past the drain delay.
    fn refusal(&self) -> Option<Error> {
        if self.lifecycle.refusing.load(Ordering::SeqCst) {
            Some(Error::Draining)
        } else if !self.lifecycle.ready.load(Ordering::SeqCst) {
            Some(Error::NotReady)
        } else if !self.loop_health.is_running() || self.loop_is_failing() {
            Some(Error::InferenceUnhealthy)
        } else {
            None
        }
    }

    /// Why the pod should get no new traffic, if so: also from the first moment of a
    /// drain, while it still admits what load balancers send before they notice.
    pub fn unready_reason(&self) -> Option<Error> {
        if self.lifecycle.unready_for_drain.load(Ordering::SeqCst) {
            return Some(Error::Draining);
        }
        self.refusal()
    }

    /// Failing every run lately, or stuck in one far past the request timeout.
    fn loop_is_failing(&self) -> bool {
        self.loop_health.failures() >= LoopHealth::FAILURES_UNHEALTHY
            || self.loop_health.current_run().is_some_and(|run| run > self.limits.request_timeout)
    }

    /// Live unless the inference loop has stopped, is stuck in one run for twice the
    /// request timeout, or has failed its last runs, while the pod was meant to be
    /// serving: a restart is then the only cure.
    pub fn is_live(&self) -> bool {
        self.liveness_failure().is_none()
    }

    /// Why the pod is not live ([`AppState::is_live`]), if it is not.
    pub fn liveness_failure(&self) -> Option<String> {
        let serving = self.lifecycle.ready.load(Ordering::SeqCst) && !self.lifecycle.refusing.load(Ordering::SeqCst);
        if !serving {
            return None;
        }
        if !self.loop_health.is_running() {
            return Some("the inference loop has stopped".into());
        }
        let timeout = self.limits.request_timeout;
        if let Some(run) = self.loop_health.current_run().filter(|run| *run > 2 * timeout) {
            return Some(format!(
                "the inference loop has been in one run for {:.0} s, over twice the request timeout of {:.0} s",
                run.as_secs_f64(),
                timeout.as_secs_f64()
            ));
        }
        let failures = self.loop_health.failures();
        (failures >= LoopHealth::FAILURES_UNHEALTHY)
            .then(|| format!("the inference loop failed its last {failures} runs"))
    }

    /// Turns ready after warm-up, unless a drain has begun meanwhile.
    pub fn mark_ready(&self) {
        self.loop_health.set_running(true);
        if self.lifecycle.unready_for_drain.load(Ordering::SeqCst) {
            return;
        }
        self.lifecycle.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.lifecycle.ready.load(Ordering::SeqCst)
    }

    /// First step of a drain: unready at once, still admitting.
    pub fn begin_drain(&self) {
        self.lifecycle.unready_for_drain.store(true, Ordering::SeqCst);
    }

    /// Second step of a drain: refuse new work with 503.
    pub fn refuse_new_work(&self) {
        self.lifecycle.refusing.store(true, Ordering::SeqCst);
    }

    /// Refreshes the gauges that describe the pod right now; called before a scrape.
    /// Readiness as `/readyz` answers it: a pod whose inference loop fails or has died
    /// takes no work, and its gauge says so.
    pub fn refresh_gauges(&self) {
        self.metrics.ready.set(i64::from(self.unready_reason().is_none()));
        self.metrics.queue_depth.set(self.queue.depth() as i64);
        let oldest = self.queue.oldest_queued().map_or(0.0, |queued| queued.elapsed().as_secs_f64());
        self.metrics.oldest_queued_age.set(oldest);
        self.metrics.inflight.set(self.inflight() as i64);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn state() -> AppState {
        AppState::new(&Config::parse_from(["matte-inference", "--model", "/models/m.onnx"]))
    }

    #[test]
    fn a_loop_that_stopped_after_turning_ready_is_unhealthy_not_loading() {
        let state = state();
        assert!(matches!(state.unready_reason(), Some(Error::NotReady)), "loading");
        state.mark_ready();
        assert!(state.unready_reason().is_none(), "ready");
        state.loop_health.set_running(false);
        assert!(matches!(state.unready_reason(), Some(Error::InferenceUnhealthy)), "{:?}", state.unready_reason());
        assert_eq!(state.liveness_failure().as_deref(), Some("the inference loop has stopped"));
    }
}
