//! Wiring and lifecycle: listen at once (so liveness answers while the model loads),
//! load and warm the model on the inference thread, turn ready, and on SIGTERM turn
//! unready, refuse new work, finish everything accepted, then return.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::Config;
use crate::imaging::Preprocess;
use crate::inference_loop::{self, ServiceTime};
use crate::metrics::Metrics;
use crate::model::{Model, ModelOptions};
use crate::queue::JobQueue;
use crate::{Error, http};

/// Per-request limits taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_dimension: u32,
    pub max_input_pixels: u64,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// What every handler shares.
pub struct AppState {
    pub limits: Limits,
    pub metrics: Metrics,
    pub queue: JobQueue,
    pub service_time: ServiceTime,
    /// Set once the model is loaded: the input every image is prepared for.
    pub preprocess: OnceLock<Preprocess>,
    capacity: u32,
    admission: Arc<Semaphore>,
    cpu_workers: Arc<Semaphore>,
    ready: AtomicBool,
    draining: AtomicBool,
    inference_loop_running: AtomicBool,
}

impl AppState {
    pub fn new(config: &Config) -> AppState {
        AppState {
            limits: Limits {
                max_dimension: config.max_dimension,
                max_input_pixels: config.max_input_pixels,
                max_body_bytes: config.max_body_bytes,
                request_timeout: config.request_timeout,
            },
            metrics: Metrics::default(),
            queue: JobQueue::new(),
            // Replaced by the warm-up run's time before the first request is admitted.
            service_time: ServiceTime::new(Duration::from_secs(1)),
            preprocess: OnceLock::new(),
            capacity: config.queue_capacity,
            admission: Arc::new(Semaphore::new(config.queue_capacity as usize)),
            cpu_workers: Arc::new(Semaphore::new(config.cpu_workers())),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            inference_loop_running: AtomicBool::new(false),
        }
    }

    /// Takes one of the `queue_capacity` places, or says when to come back.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        if let Some(reason) = self.unready_reason() {
            return Err(reason);
        }
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| Error::QueueFull {
            capacity: self.capacity,
            retry_after: self.service_time.retry_after(self.inflight()),
        })?;
        // Draining may have begun between the check and the permit; the drain waits
        // only for permits it can see, so re-check now that this one is visible.
        if self.draining.load(Ordering::SeqCst) {
            return Err(Error::Draining);
        }
        Ok(permit)
    }

    /// Requests holding a place: queued, decoding, inferring or encoding.
    pub fn inflight(&self) -> usize {
        self.capacity as usize - self.admission.available_permits()
    }

    /// Runs CPU-heavy work (decode, resize, encode) on the blocking pool, at most
    /// `cpu_workers` at a time so image work cannot starve the runtime.
    pub async fn on_cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let _worker = self.cpu_workers.acquire().await.map_err(|_| Error::Internal("CPU pool closed".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("image worker failed: {e}")))
    }

    /// Why the pod takes no work now, if it does not: loading or draining.
    pub fn unready_reason(&self) -> Option<Error> {
        if self.draining.load(Ordering::SeqCst) {
            Some(Error::Draining)
        } else if !self.ready.load(Ordering::SeqCst) || !self.inference_loop_running.load(Ordering::SeqCst) {
            Some(Error::NotReady)
        } else {
            None
        }
    }

    /// Live unless the inference loop has stopped while the pod was meant to be serving.
    pub fn is_live(&self) -> bool {
        let loop_expected = self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst);
        !loop_expected || self.inference_loop_running.load(Ordering::SeqCst)
    }

    fn mark_ready(&self) {
        self.inference_loop_running.store(true, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
        self.metrics.ready.set(1);
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.ready.set(0);
    }

    /// Refreshes the gauges that describe the queue right now; called before a scrape.
    pub fn observe_queue(&self) {
        self.metrics.queue_depth.set(self.queue.depth() as i64);
        let oldest = self.queue.oldest_arrival().map_or(0.0, |arrived| arrived.elapsed().as_secs_f64());
        self.metrics.oldest_queued_age.set(oldest);
        self.metrics.inflight.set(self.inflight() as i64);
    }
}

/// Serves until SIGTERM or SIGINT and a completed drain; errors if the model cannot
/// be loaded or the address cannot be bound.
pub async fn run(config: Config, runtime_library: PathBuf) -> Result<(), Error> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| Error::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, "listening; loading the model");

    let state = Arc::new(AppState::new(&config));
    let options = model_options(&config, runtime_library);
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let inference_thread = {
        let state = state.clone();
        let batch_delay = config.max_batch_delay();
        std::thread::Builder::new()
            .name("inference-loop".into())
            .spawn(move || {
                let model = match load_and_warm_up(&options, &state) {
                    Ok(model) => model,
                    Err(error) => {
                        let _ = loaded_tx.send(Err(error));
                        return;
                    }
                };
                let _ = loaded_tx.send(Ok(()));
                let looped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inference_loop::run(model, &state.queue, &state.metrics, &state.service_time, batch_delay)
                }));
                // Liveness fails from here unless the pod is draining, so a dead loop
                // gets the pod restarted rather than queueing work forever.
                state.inference_loop_running.store(false, Ordering::SeqCst);
                state.queue.close();
                if looped.is_err() {
                    tracing::error!("the inference loop panicked");
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the inference thread: {e}")))?
    };

    let server =
        axum::serve(listener, http::router(state.clone())).with_graceful_shutdown(drain_on_signal(state.clone()));
    tokio::select! {
        served = server => served.map_err(Error::Serve)?,
        Ok(Err(error)) = loaded_rx => return Err(error),
    }

    state.queue.close();
    tokio::task::spawn_blocking(move || inference_thread.join())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|_| Error::Internal("the inference thread panicked".into()))?;
    tracing::info!("drained; exiting");
    Ok(())
}

fn model_options(config: &Config, runtime_library: PathBuf) -> ModelOptions {
    ModelOptions {
        runtime_library,
        model: config.model.clone(),
        provider: config.provider,
        device_id: config.device_id,
        intra_threads: config.intra_threads(),
        fallback_input_size: config.input_size,
        mean: config.mean,
        std: config.std,
        mask_output: config.mask_output.clone(),
        max_batch_size: config.max_batch_size as usize,
    }
}

/// Loads the model and runs one full-size batch of one image, so the first client does
/// not pay for lazy initialisation (CUDA kernels, memory arenas), then turns ready.
fn load_and_warm_up(options: &ModelOptions, state: &AppState) -> Result<Model, Error> {
    let started = Instant::now();
    let mut model = Model::load(options)?;
    let shape = model.shape().clone();
    let loaded_in = started.elapsed();
    if options.max_batch_size > shape.max_batch_size {
        tracing::warn!(
            requested = options.max_batch_size,
            "the model's batch dimension is fixed; running one image at a time"
        );
    }
    let blank = vec![0.0f32; 3 * (shape.preprocess.width * shape.preprocess.height) as usize];
    let warm_up = Instant::now();
    model.run(&[&blank])?;
    let warm_up = warm_up.elapsed();
    state.service_time.record_first(warm_up);
    state.metrics.set_model(&model.name, options.provider.as_str());
    let _ = state.preprocess.set(shape.preprocess);
    state.mark_ready();
    tracing::info!(
        model = %model.name,
        provider = options.provider.as_str(),
        input = ?(shape.preprocess.width, shape.preprocess.height),
        max_batch_size = shape.max_batch_size,
        load_seconds = loaded_in.as_secs_f64(),
        warm_up_seconds = warm_up.as_secs_f64(),
        "model loaded and warmed up; ready"
    );
    Ok(model)
}

/// Resolves when the server may stop: after SIGTERM or SIGINT, once every admitted
/// request has been answered. New requests meanwhile get 503.
async fn drain_on_signal(state: Arc<AppState>) {
    wait_for_signal().await;
    state.start_draining();
    tracing::info!(inflight = state.inflight(), "signal received; draining");
    while state.inflight() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; the server will only stop when killed");
            std::future::pending::<()>().await;
        }
    }
}
