//! Wiring and lifecycle: serve at once (so liveness answers while the model loads),
//! load and warm the model on the inference thread, turn ready, and when told to shut
//! down: turn unready, keep admitting for the drain delay while load balancers catch
//! up, then refuse new work, finish everything accepted, close the connections and
//! return, saying whether the model's thread stopped too.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::config::{Config, Provider};
use crate::inference_loop::{self, LoopContext};
use crate::metrics::ModelBatch;
use crate::model::{BatchDimension, GpuTuning, Model, ModelOptions};
use crate::state::AppState;
use crate::{Error, http};
use matte_common::memory;
use matte_serve::{self as connections, ConnectionLimits, Stage, shutdown_signal};

/// How the server stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub drained: Drained,
    /// Why the pod was not live when it was told to stop, if it was not: the kubelet
    /// restarting it for its liveness probe. The process then exits as a failure, with
    /// this as its last line, so that the pod's status and the operator say why it
    /// restarts; a clean exit would read as a pod that completed.
    pub not_live: Option<String>,
}

/// When a model still loading, or warming up, is first said to be, and after that
/// every time the wait has doubled: a load that hung said nothing after "loading the
/// model" until the operator called the start-up too slow, while one that takes minutes
/// (a TensorRT engine being built) is no fault, and says so a few times only.
const STILL_LOADING_FIRST_SAID_AFTER: Duration = Duration::from_secs(10);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Everything stopped, the model's thread too.
    Completely,
    /// The model's thread is still inside a run (a warm-up that never ends, or an image
    /// past the drain deadline) and will not be waited for.
    LeavingTheModelRunning,
}

/// Binds the configured address and serves until SIGTERM or SIGINT and a completed
/// drain.
pub async fn serve(config: Config, runtime_library: PathBuf) -> Result<Stopped, Error> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| Error::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, "listening; loading the model");
    run(listener, config, runtime_library, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` resolves, then drains; errors if the model
/// cannot be loaded.
pub async fn run(
    listener: TcpListener,
    config: Config,
    runtime_library: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, Error> {
    let state = Arc::new(AppState::new(&config));
    let sizing = config.sizing();
    tracing::info!(
        image_work_mib = sizing.image_work_bytes() >> 20,
        connections_mib = (sizing.max_connections * memory::CONNECTION_BYTES) >> 20,
        "the image work and the connections are bounded by the flags to this much memory, beside the runtime and the model"
    );
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let inference_thread = spawn_inference_thread(&config, runtime_library, state.clone(), loaded_tx)?;

    let (stage, stage_rx) = watch::channel(Stage::Serving);
    matte_serve::open_files::prepare_for_connections(config.max_connections);
    let limits = ConnectionLimits {
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        header_read: config.header_read_timeout,
        write: config.write_timeout,
        min_write_bytes_per_second: config.min_upload_bytes_per_second,
    };
    let (router, gauges) = (http::router(state.clone()), state.metrics.connections.clone());
    let mut connections = tokio::spawn(connections::serve(listener, router, limits, gauges, stage_rx));

    let loading_since = Instant::now();
    let mut still_loading_after = STILL_LOADING_FIRST_SAID_AFTER;
    let (mut loaded_rx, mut loading) = (loaded_rx, true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let say_still_loading_at = loading_since + still_loading_after;
        tokio::select! {
            () = &mut shutdown => break,
            loaded = &mut loaded_rx, if loading => {
                loading = false;
                if let Ok(Err(error)) = loaded {
                    let _ = stage.send(Stage::Cut);
                    let _ = connections.await;
                    return Err(error);
                }
            }
            () = tokio::time::sleep_until(say_still_loading_at.into()), if loading => {
                tracing::info!(
                    seconds = still_loading_after.as_secs(),
                    "the model is still loading or warming up (not ready yet)"
                );
                still_loading_after *= 2;
            }
        }
    }

    let not_live = state.liveness_failure();
    if let Some(why) = &not_live {
        tracing::error!(why = %why, "told to stop while not live: the liveness probe restarts the pod");
    }
    let was_serving = state.is_ready();
    state.begin_drain();
    if was_serving {
        tracing::info!(delay = ?config.drain_delay, "shutting down: unready, still admitting while endpoints catch up");
        tokio::time::sleep(config.drain_delay).await;
    }
    state.refuse_new_work();
    let deadline = Instant::now() + config.drain_timeout;
    tracing::info!(inflight = state.inflight(), "draining: refusing new work, finishing what was accepted");
    if tokio::time::timeout_at(deadline.into(), state.all_places_free()).await.is_err() {
        tracing::warn!(inflight = state.inflight(), "the drain timeout passed with requests unfinished");
        let _ = stage.send(Stage::Cut);
    } else {
        let _ = stage.send(Stage::Closing);
    }
    if tokio::time::timeout_at(deadline.into(), &mut connections).await.is_err() {
        let _ = stage.send(Stage::Cut);
        let _ = connections.await;
    }

    state.queue.close();
    // The loop ends once the (closed) queue is empty; a warm-up in progress is not
    // waited for, the process exits around it.
    let drained = if !was_serving && !inference_thread.is_finished() {
        Drained::LeavingTheModelRunning
    } else {
        let joined = tokio::task::spawn_blocking(move || inference_thread.join());
        let last_run = deadline.max(Instant::now() + Duration::from_secs(1));
        if tokio::time::timeout_at(last_run.into(), joined).await.is_err() {
            tracing::warn!("the inference loop did not stop by the drain deadline");
            Drained::LeavingTheModelRunning
        } else {
            Drained::Completely
        }
    };
    tracing::info!("drained; exiting");
    Ok(Stopped { drained, not_live })
}

/// Starts the thread that owns the model: load, warm up, turn ready, run the loop.
/// Whether loading worked is sent on `loaded`; a panic while loading is an error
/// too, so the process exits rather than staying up, never ready.
fn spawn_inference_thread(
    config: &Config,
    runtime_library: PathBuf,
    state: Arc<AppState>,
    loaded: oneshot::Sender<Result<(), Error>>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let options = model_options(config, runtime_library);
    let batch_delay = config.max_batch_delay();
    std::thread::Builder::new()
        .name("inference-loop".into())
        .spawn(move || {
            let load = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_and_warm_up(&options, &state)));
            let model = match load {
                Ok(Ok(model)) => model,
                Ok(Err(error)) => {
                    let _ = loaded.send(Err(error));
                    return;
                }
                Err(panic) => {
                    let _ = loaded.send(Err(Error::LoadPanicked(panic_message(panic.as_ref()))));
                    return;
                }
            };
            let _ = loaded.send(Ok(()));
            let context = LoopContext {
                queue: &state.queue,
                metrics: &state.metrics,
                service_time: &state.service_time,
                health: &state.loop_health,
                batch_delay,
            };
            let looped =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inference_loop::run(model, &context)));
            // Liveness fails from here unless the pod is draining, so a dead loop
            // gets the pod restarted rather than queueing work forever; what waits for
            // it goes elsewhere now (after a drain nothing waits).
            state.loop_health.set_running(false);
            state.queue.close_answering(|| Error::InferenceUnhealthy);
            if let Err(panic) = looped {
                tracing::error!(panic = panic_message(panic.as_ref()), "the inference loop panicked");
            }
        })
        .map_err(Error::InferenceThread)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

pub fn model_options(config: &Config, runtime_library: PathBuf) -> ModelOptions {
    ModelOptions {
        runtime_library,
        model: config.model.clone(),
        provider: config.provider,
        device_id: config.device_id,
        gpu: GpuTuning {
            conv_search: config.cudnn_conv_algo_search,
            tf32: config.cuda_tf32,
            cuda_graph: config.cuda_graph,
            tensorrt_fp16: config.tensorrt_fp16,
            tensorrt_cache_dir: config.tensorrt_cache_dir.clone(),
        },
        intra_threads: config.intra_threads(),
        fallback_input_size: config.input_size,
        mean: config.mean,
        std: config.std,
        mask_output: config.mask_output.clone(),
        max_batch_size: config.max_batch_size as usize,
        pad_batches: config.provider != Provider::Cpu,
        io_binding: config.io_binding,
    }
}

/// Loads the model and runs one batch of one image (padded to the full batch where
/// batches are), so the first client does not pay for lazy initialisation (CUDA
/// kernels, memory arenas, convolution plans), then turns ready. A model whose batch was
/// freed has run already, in the check at load, and is not run again.
fn load_and_warm_up(options: &ModelOptions, state: &AppState) -> Result<Model, Error> {
    let started = Instant::now();
    let mut model = Model::load(options)?;
    let shape = model.shape().clone();
    let loaded_in = started.elapsed();
    match &shape.batch_dimension {
        BatchDimension::Fixed { kept_because } if options.max_batch_size > 1 => tracing::warn!(
            requested = options.max_batch_size,
            reason = kept_because.as_deref().unwrap_or("the model fixes it"),
            "the model's batch dimension is fixed; running one image at a time"
        ),
        BatchDimension::Freed => tracing::info!(
            max_batch_size = shape.max_batch_size,
            "the model fixed its batch at 1; freed at load and checked on a batch of two"
        ),
        _ => {}
    }
    let blank = vec![0.0f32; shape.preprocess.input_values()];
    let timed_run = |model: &mut Model| -> Result<Duration, Error> {
        let started = Instant::now();
        model.run(&[&blank])?;
        Ok(started.elapsed())
    };
    let warm_up = match model.warmed_up_in() {
        Some(run) => run,
        None => timed_run(&mut model)?,
    };
    // The first run pays for the provider's algorithm search and first allocations
    // (seconds, on cuDNN): a second is what a run costs, and what Retry-After and the
    // admission start from, rather than telling the first clients to stay away for the
    // warm-up's length.
    let steady = timed_run(&mut model)?;
    state.service_time.record_first(steady);
    let batch = ModelBatch { max: shape.max_batch_size, requested: options.max_batch_size };
    state.metrics.set_model(&model.name, options.provider.as_str(), batch);
    let _ = state.preprocess.set(shape.preprocess);
    state.mark_ready();
    tracing::info!(
        model = %model.name,
        provider = options.provider.as_str(),
        input = ?(shape.preprocess.width, shape.preprocess.height),
        max_batch_size = shape.max_batch_size,
        load_seconds = loaded_in.as_secs_f64(),
        warm_up_seconds = warm_up.as_secs_f64(),
        run_seconds = steady.as_secs_f64(),
        ready_seconds = started.elapsed().as_secs_f64(),
        "model loaded and warmed up; ready"
    );
    Ok(model)
}
