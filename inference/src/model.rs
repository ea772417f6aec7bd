//! The ONNX Runtime session: loading the shared library, registering the execution
//! provider, reading what the model expects, and running batches.
//!
//! Only the GPU loop holds a [`Model`]; it is deliberately not `Sync`-shared, so one
//! batch runs at a time and the device never sees two sessions competing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::ep;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::{HasSelectedOutputs, IoBinding, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};

use crate::Error;
use crate::batch_dimension;
use crate::config::{ConvSearch, Provider};
use crate::imaging::Preprocess;

/// What is needed to build a session.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub runtime_library: PathBuf,
    pub model: PathBuf,
    pub provider: Provider,
    pub device_id: i32,
    pub gpu: GpuTuning,
    pub intra_threads: usize,
    /// Input side used when the model leaves its spatial dimensions dynamic.
    pub fallback_input_size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub mask_output: Option<String>,
    pub max_batch_size: usize,
    /// Every run of a dynamic-batch model is padded to `max_batch_size`, so that its
    /// input's shape never changes (the GPU providers: see `BatchInput`).
    pub pad_batches: bool,
    /// Runs of one image go through an [`IoBinding`] to memory allocated once
    /// (`--io-binding`).
    pub io_binding: bool,
}

impl ModelOptions {
    /// The model at `model` could not be loaded, for `reason`.
    fn load_error(&self, reason: impl std::fmt::Display) -> Error {
        Error::ModelLoad { path: self.model.clone(), reason: reason.to_string() }
    }
}

/// How the GPU providers are set up (`--cudnn-conv-algo-search`, `--cuda-tf32`,
/// `--cuda-graph`, `--tensorrt-fp16`, `--tensorrt-cache-dir`); the CPU provider ignores it.
#[derive(Debug, Clone)]
pub struct GpuTuning {
    pub conv_search: ConvSearch,
    pub tf32: bool,
    /// CUDA graphs (`cuda` only, with `io_binding`): the first run is captured, later
    /// runs replay it without launching each kernel again.
    pub cuda_graph: bool,
    pub tensorrt_fp16: bool,
    pub tensorrt_cache_dir: Option<PathBuf>,
}

/// What the loaded model expects and returns, read from the model itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    pub mask_output: String,
    pub preprocess: Preprocess,
    /// Images per run: 1 unless the batch dimension is dynamic (or freed).
    pub max_batch_size: usize,
    pub batch_dimension: BatchDimension,
}

/// The model's batch dimension, as its authors left it and as loading made it.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchDimension {
    Dynamic,
    /// Fixed at 1 by the model, freed at load and checked.
    Freed,
    /// Fixed at 1, one image a run; where more were asked for, why it was not freed.
    Fixed {
        kept_because: Option<String>,
    },
}

pub struct Model {
    session: Session,
    run_options: RunOptions<HasSelectedOutputs>,
    shape: ModelShape,
    bound: Option<Bound>,
    /// Where a batch of several images is laid out for its run (`--max-batch-size` > 1).
    batch_input: Option<BatchInput>,
    /// How long a run of one image took at load, where loading ran the model already
    /// (the freed batch's check): it is warmed up, and need not run again before serving.
    warmed_up_in: Option<Duration>,
    /// A short name for metrics and logs: the model file's stem.
    pub name: String,
}

/// One image's mask, values in [0, 1] (not yet clamped).
#[derive(Debug, Clone)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

impl Model {
    /// Loads the model. Where more than one image a run is asked for and the model fixes
    /// its batch at 1, the batch is freed (see [`crate::batch_dimension`]) and checked
    /// before it is used; a model that fails the check, or cannot be freed, is loaded as
    /// it is and runs one image at a time, the reason in [`ModelShape::batch_dimension`].
    pub fn load(options: &ModelOptions) -> Result<Model, Error> {
        if options.gpu.cuda_graph && options.max_batch_size > 1 {
            let reason = "CUDA graphs (--cuda-graph) replay runs of one image: use --max-batch-size 1".to_owned();
            return Err(Error::Provider { provider: options.provider.as_str(), reason });
        }
        if options.gpu.cuda_graph && options.provider != Provider::Cuda {
            let reason = "CUDA graphs (--cuda-graph) are the CUDA provider's: use --provider cuda".to_owned();
            return Err(Error::Provider { provider: options.provider.as_str(), reason });
        }
        let environment = environment(&options.runtime_library)?;
        let kept_because = if options.max_batch_size > 1 {
            match Model::load_freed(&environment, options)? {
                Freeing::Freed(model) => return Ok(*model),
                Freeing::NothingToFree => None,
                Freeing::Failed(reason) => Some(reason),
            }
        } else {
            None
        };
        let session = session(&environment, options, |mut builder| builder.commit_from_file(&options.model))?;
        let mut model = Model::from_session(session, options)?;
        if let BatchDimension::Fixed { kept_because: reason } = &mut model.shape.batch_dimension {
            *reason = kept_because;
        }
        Ok(model)
    }

    /// The model with its batch freed and checked; errors that loading it as it is
    /// would meet again (the provider, the file) end the load.
    fn load_freed(environment: &Environment, options: &ModelOptions) -> Result<Freeing, Error> {
        let original = std::fs::read(&options.model).map_err(|e| options.load_error(e))?;
        let freed = match batch_dimension::free(&original) {
            Ok(Some(freed)) => freed,
            Ok(None) => return Ok(Freeing::NothingToFree),
            Err(cannot) => return Ok(Freeing::Failed(cannot.to_string())),
        };
        drop(original);
        let session = match session(environment, options, |mut builder| builder.commit_from_memory(&freed)) {
            Ok(session) => session,
            Err(Error::ModelLoad { reason, .. }) => {
                return Ok(Freeing::Failed(format!("freed, it does not load: {reason}")));
            }
            Err(error) => return Err(error),
        };
        drop(freed);
        let mut model = Model::from_session(session, options)?;
        model.shape.batch_dimension = BatchDimension::Freed;
        Ok(match model.check_freed_batch() {
            Ok(()) => Freeing::Freed(Box::new(model)),
            Err(reason) => Freeing::Failed(reason),
        })
    }

    fn from_session(session: Session, options: &ModelOptions) -> Result<Model, Error> {
        let load_error = |e: ort::Error| options.load_error(e);
        let shape = read_shape(&session, options)
            .map_err(|reason| Error::ModelShape { path: options.model.clone(), reason })?;
        let run_options = RunOptions::new()
            .map_err(load_error)?
            .with_outputs(OutputSelector::no_default().with(shape.mask_output.clone()));
        // `load` refused CUDA graphs with batches: a CUDA graph has no batch input.
        let batch_input = if shape.max_batch_size > 1 {
            Some(BatchInput::new(&session, &shape, options).map_err(load_error)?)
        } else {
            None
        };
        // A CUDA graph replays on the addresses it was captured with: it needs the binding.
        // Batches have a buffer of their own, allocated once as a binding's is.
        let bound = if (options.io_binding || options.gpu.cuda_graph) && batch_input.is_none() {
            Some(Bound::new(&session, &shape, options).map_err(load_error)?)
        } else {
            None
        };
        Ok(Model {
            session,
            run_options,
            shape,
            bound,
            batch_input,
            warmed_up_in: None,
            name: model_name(&options.model),
        })
    }

    /// A blank image run beside a patterned one, then alone: a graph that fixes its
    /// batch inside fails the batch of two (first, so that such a model costs one failed
    /// run and not a whole one before it), or mixes its images and changes the blank
    /// one's mask. The run alone, made once the pair has initialised the session, is the
    /// model's warm-up: its time is kept in `warmed_up_in`.
    fn check_freed_batch(&mut self) -> Result<(), String> {
        let values = self.shape.preprocess.input_values();
        let blank = vec![0.0f32; values];
        let pattern: Vec<f32> = (0..values).map(|i| (i % 251) as f32 / 125.0 - 1.0).collect();
        let together = self.run(&[&blank, &pattern]).map_err(|e| format!("freed, a batch of two fails: {e}"))?;
        let alone_started = Instant::now();
        let alone = self.run(&[&blank]).map_err(|e| format!("freed, a run of one image fails: {e}"))?;
        let alone_took = alone_started.elapsed();
        let difference = alone[0]
            .values
            .iter()
            .zip(&together[0].values)
            .map(|(alone, together)| (alone - together).abs())
            .fold(0.0f32, f32::max);
        if difference > FREED_BATCH_TOLERANCE {
            return Err(format!(
                "freed, a batch of two changes an image's mask by up to {difference:.3}: the graph mixes the images of a batch"
            ));
        }
        self.warmed_up_in = Some(alone_took);
        Ok(())
    }

    /// How long a run of one image took when loading ran the model already (see
    /// `warmed_up_in`); `None` when it has not run yet.
    pub fn warmed_up_in(&self) -> Option<Duration> {
        self.warmed_up_in
    }

    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// The rows of the model's batch a run of `images` computes: the largest batch
    /// where runs are padded to it, `images` otherwise.
    pub fn rows(&self, images: usize) -> usize {
        match &self.batch_input {
            Some(batch_input) if batch_input.padded => self.shape.max_batch_size,
            _ => images,
        }
    }

    /// Runs one batch; `inputs` are tensors made by [`crate::imaging::to_model_input`]
    /// with this model's [`Preprocess`], at most `max_batch_size` of them.
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<Mask>, Error> {
        let error = |e: ort::Error| Error::Inference(e.to_string());
        if let ([single], Some(bound)) = (inputs, self.bound.as_mut()) {
            let largest = self.shape.preprocess.pixels();
            return bound.run(&mut self.session, &self.shape.mask_output, single, largest);
        }
        let limit = self.shape.max_batch_size;
        let rows = self.rows(inputs.len());
        let values = match (inputs, self.batch_input.as_mut()) {
            (_, Some(batch_input)) if inputs.len() <= limit => batch_input.fill(inputs, rows)?,
            ([single], None) => *single,
            _ => return Err(Error::Inference(format!("a run of {} images, the model takes {limit}", inputs.len()))),
        };
        let preprocess = self.shape.preprocess;
        let dims = [rows, 3, preprocess.height as usize, preprocess.width as usize];
        let tensor = TensorRef::from_array_view((dims, values)).map_err(error)?;
        let outputs = self.session.run_with_options(ort::inputs![tensor], &self.run_options).map_err(error)?;
        let output = &outputs[self.shape.mask_output.as_str()];
        let (shape, values) = output.try_extract_tensor::<f32>().map_err(error)?;
        let mut masks = split_masks(shape, values, rows, preprocess.pixels()).map_err(Error::Inference)?;
        masks.truncate(inputs.len()); // the padding's masks
        Ok(masks)
    }
}

/// How far an image's mask may move when another image shares its run: batches of
/// ISNet in fp16 differ from single runs by under 6e-4; an image mixed with another's
/// moves by far more.
const FREED_BATCH_TOLERANCE: f32 = 1e-2;

/// What became of an attempt to free a model's batch.
enum Freeing {
    Freed(Box<Model>),
    /// The model's batch is dynamic already, or fixed at a size other than 1.
    NothingToFree,
    Failed(String),
}

/// A session for `options` on its provider, committed by `commit` (from the file or
/// from memory).
fn session(
    environment: &Environment,
    options: &ModelOptions,
    commit: impl FnOnce(SessionBuilder) -> ort::Result<Session>,
) -> Result<Session, Error> {
    let load_error = |e: ort::Error| options.load_error(e);
    let mut builder = Session::builder(environment)
        .map_err(load_error)?
        .with_intra_threads(options.intra_threads)
        .map_err(|e| load_error(e.into()))?;
    let providers = execution_providers(options.provider, options.device_id, &options.gpu);
    if !providers.is_empty() {
        builder = builder
            .with_execution_providers(providers)
            .map_err(|e| Error::Provider { provider: options.provider.as_str(), reason: e.to_string() })?;
    }
    commit(builder).map_err(load_error)
}

/// The process's ONNX Runtime environment, made by the first load: the runtime allows
/// one per process, and a benchmark or test may load several models.
fn environment(library: &Path) -> Result<Environment, Error> {
    static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);
    let failed = |reason: String| Error::RuntimeLibrary { path: library.to_owned(), reason };
    let mut loaded = ENVIRONMENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match loaded.as_ref() {
        Some((path, environment)) if path == library => Ok(environment.clone()),
        Some((path, _)) => Err(failed(format!("ONNX Runtime is already loaded from {}", path.display()))),
        None => {
            let environment = ort::init_from(library)
                .map_err(|e| failed(e.to_string()))?
                .with_name("matte")
                .build()
                .map_err(|e| failed(e.to_string()))?;
            *loaded = Some((library.to_owned(), environment.clone()));
            Ok(environment)
        }
    }
}

/// One image's input and its mask in memory allocated once. On `cuda` and `tensorrt`
/// the input is page-locked host memory (`CudaPinned`), so its copy to the GPU is one
/// DMA; the mask is plain host memory: ONNX Runtime 1.31's CUDA provider fails every
/// run whose output is bound to page-locked memory (it schedules a copy of that buffer
/// onto itself, `dst_data != src_data`), seen on an H200 with `bench/gpu.sh`. The output
/// is bound once, to a tensor of the mask's shape when the model states it, otherwise to
/// a buffer ONNX Runtime allocates at the first run and reuses.
///
/// With CUDA graphs (`--cuda-graph`) the graph replays on the same device addresses
/// every run, so input and mask also live in device memory bound once, and each run
/// copies the image in and the mask out around the replay; the image is staged in
/// plain host memory there, the placement seen to run.
struct Bound {
    binding: IoBinding,
    input_name: String,
    input: Tensor<f32>,
    graph: Option<GraphBuffers>,
}

/// The device side of a CUDA graph's input and output, and where the mask is copied.
struct GraphBuffers {
    input: Tensor<f32>,
    output: Tensor<f32>,
    mask: Tensor<f32>,
}

impl Bound {
    fn new(session: &Session, shape: &ModelShape, options: &ModelOptions) -> ort::Result<Bound> {
        let memory =
            |device, memory_type| MemoryInfo::new(device, options.device_id, AllocatorType::Device, memory_type);
        let pinned_input = options.provider != Provider::Cpu && !options.gpu.cuda_graph;
        let input_allocator = input_allocator(session, options, pinned_input)?;
        let preprocess = shape.preprocess;
        let input_dims = [1, 3, preprocess.height as usize, preprocess.width as usize];
        let input_name = session.inputs()[0].name().to_owned();
        let input = Tensor::<f32>::new(&input_allocator, input_dims)?;
        let mut binding = session.create_binding()?;
        let stated =
            session.outputs().iter().find(|output| output.name() == shape.mask_output).and_then(|output| match output
                .dtype()
            {
                ValueType::Tensor { shape, .. } => one_image_shape(shape),
                _ => None,
            });
        let graph = if options.gpu.cuda_graph {
            let dims = stated.ok_or_else(|| {
                ort::Error::new("CUDA graphs need the mask's shape stated in the model: its sides are dynamic")
            })?;
            let device = Allocator::new(session, memory(AllocationDevice::CUDA, MemoryType::Default)?)?;
            let buffers = GraphBuffers {
                input: Tensor::<f32>::new(&device, input_dims)?,
                output: Tensor::<f32>::new(&device, dims.clone())?,
                mask: Tensor::<f32>::new(&Allocator::default(), dims)?,
            };
            binding.bind_input(input_name.clone(), &buffers.input)?;
            let mut buffers = buffers;
            binding.bind_output(shape.mask_output.clone(), &mut buffers.output)?;
            Some(buffers)
        } else {
            match stated {
                Some(dims) => {
                    let output = Tensor::<f32>::new(&Allocator::default(), dims)?;
                    binding.bind_output(shape.mask_output.clone(), output)?;
                }
                None => binding.bind_output_to_device(shape.mask_output.clone(), &MemoryInfo::default())?,
            }
            None
        };
        Ok(Bound { binding, input_name, input, graph })
    }

    /// Runs one image: its input copied into the bound memory (the same memory each
    /// run), then its mask, of at most `largest` pixels.
    fn run(
        &mut self,
        session: &mut Session,
        mask_output: &str,
        values: &[f32],
        largest: u64,
    ) -> Result<Vec<Mask>, Error> {
        let error = |e: ort::Error| Error::Inference(e.to_string());
        let (_, target) = self.input.extract_tensor_mut();
        if target.len() != values.len() {
            return Err(Error::Inference(format!(
                "input of {} values, the model takes {}",
                values.len(),
                target.len()
            )));
        }
        target.copy_from_slice(values);
        match &mut self.graph {
            Some(graph) => {
                self.input.copy_into(&mut graph.input).map_err(error)?;
                session.run_binding(&self.binding).map_err(error)?;
                self.binding.synchronize_outputs().map_err(error)?;
                graph.output.copy_into(&mut graph.mask).map_err(error)?;
                let (shape, mask) = graph.mask.extract_tensor();
                split_masks(shape, mask, 1, largest).map_err(Error::Inference)
            }
            None => {
                self.binding.bind_input(self.input_name.clone(), &self.input).map_err(error)?;
                let outputs = session.run_binding(&self.binding).map_err(error)?;
                let (shape, mask) = outputs[mask_output].try_extract_tensor::<f32>().map_err(error)?;
                split_masks(shape, mask, 1, largest).map_err(Error::Inference)
            }
        }
    }
}

/// One buffer a batch is laid out in, allocated once for the largest batch: a batch's
/// images are copied into its front and the run reads that part.
///
/// On `cuda` and `tensorrt` the buffer is page-locked (`CudaPinned`), so a batch reaches
/// the GPU in one DMA, and every run is padded to the largest batch: ONNX Runtime's
/// CUDA convolutions plan again (cuDNN's frontend, every convolution of the model)
/// whenever the input's shape differs from the last run's. Measured on an H200 with
/// ISNet at batches of 1 to 4, a change of shape cost about a second; a padded run of 4
/// costs 29 ms against 10 ms for one image. The padding holds earlier batches' images
/// (zeros at first), and what is computed from it is thrown away. On the CPU a batch
/// runs at its own size.
struct BatchInput {
    values: Tensor<f32>,
    image_values: usize,
    padded: bool,
}

impl BatchInput {
    fn new(session: &Session, shape: &ModelShape, options: &ModelOptions) -> ort::Result<BatchInput> {
        let allocator = input_allocator(session, options, options.provider != Provider::Cpu)?;
        let preprocess = shape.preprocess;
        let dims = [shape.max_batch_size, 3, preprocess.height as usize, preprocess.width as usize];
        let mut values = Tensor::<f32>::new(&allocator, dims)?;
        // Padding is read before any image has been there: zeros, not whatever the
        // allocation held.
        values.extract_tensor_mut().1.fill(0.0);
        Ok(BatchInput { values, image_values: preprocess.input_values(), padded: options.pad_batches })
    }

    /// Copies `inputs` (at most the largest batch) into the buffer, one after another,
    /// and gives back the part a run of `rows` images reads, padding included.
    fn fill(&mut self, inputs: &[&[f32]], rows: usize) -> Result<&[f32], Error> {
        let (_, buffer) = self.values.extract_tensor_mut();
        for (slot, input) in buffer.chunks_exact_mut(self.image_values).zip(inputs) {
            if input.len() != self.image_values {
                return Err(Error::Inference(format!(
                    "input of {} values, the model takes {}",
                    input.len(),
                    self.image_values
                )));
            }
            slot.copy_from_slice(input);
        }
        Ok(&buffer[..rows * self.image_values])
    }
}

/// Host memory for a model's input: page-locked (`CudaPinned`) when `pinned`, so that
/// its copy to the GPU is one DMA, plain otherwise.
fn input_allocator(session: &Session, options: &ModelOptions, pinned: bool) -> ort::Result<Allocator> {
    if !pinned {
        return Ok(Allocator::default());
    }
    let memory =
        MemoryInfo::new(AllocationDevice::CUDA_PINNED, options.device_id, AllocatorType::Device, MemoryType::CPUInput)?;
    Allocator::new(session, memory)
}

/// The shape of one image's output, from the model's stated shape: a dynamic batch
/// is one image; `None` when any other dimension is dynamic.
fn one_image_shape(stated: &[i64]) -> Option<Vec<usize>> {
    let (batch, rest) = stated.split_first()?;
    if *batch > 1 || rest.is_empty() || rest.iter().any(|&dim| dim <= 0) {
        return None;
    }
    Some(std::iter::once(1).chain(rest.iter().map(|&dim| dim as usize)).collect())
}

/// The providers to register, in order of preference: TensorRT falls back on CUDA for
/// what it cannot build, rather than on the CPU.
fn execution_providers(provider: Provider, device_id: i32, gpu: &GpuTuning) -> Vec<ep::ExecutionProviderDispatch> {
    let cuda = || {
        let search = match gpu.conv_search {
            ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
            ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
        };
        ep::CUDA::default()
            .with_device_id(device_id)
            .with_conv_algorithm_search(search)
            .with_tf32(gpu.tf32)
            .with_cuda_graph(gpu.cuda_graph)
            .build()
            .error_on_failure()
    };
    match provider {
        Provider::Cpu => Vec::new(),
        Provider::Cuda => vec![cuda()],
        Provider::Tensorrt => {
            let mut tensorrt = ep::TensorRT::default().with_device_id(device_id).with_fp16(gpu.tensorrt_fp16);
            if let Some(cache) = &gpu.tensorrt_cache_dir {
                let cache = cache.display().to_string();
                tensorrt = tensorrt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&cache)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&cache);
            }
            vec![tensorrt.build().error_on_failure(), cuda()]
        }
    }
}

fn model_name(path: &Path) -> String {
    path.file_stem().map_or_else(|| "model".to_owned(), |stem| stem.to_string_lossy().into_owned())
}

/// Checks the model is image in, mask out, and settles batch and input size.
fn read_shape(session: &Session, options: &ModelOptions) -> Result<ModelShape, String> {
    let [input] = session.inputs() else {
        return Err(format!("expected one input, found {}", session.inputs().len()));
    };
    let ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } = input.dtype() else {
        return Err(format!("input `{}` is {}, expected a float32 tensor", input.name(), input.dtype()));
    };
    let [batch, channels, height, width] = shape[..] else {
        return Err(format!("input `{}` has shape {shape:?}, expected [batch, 3, height, width]", input.name()));
    };
    if channels != 3 {
        return Err(format!("input `{}` has {channels} channels, expected 3 (RGB)", input.name()));
    }
    if batch > 1 {
        return Err(format!("input `{}` fixes its batch at {batch}; Matte runs one image or more a run", input.name()));
    }
    let side = |dim: i64| if dim > 0 { u32::try_from(dim).unwrap_or(u32::MAX) } else { options.fallback_input_size };
    let (width, height) = (side(width), side(height));
    // The pod's memory is sized for inputs of `--input-size` squared: a model fixing a
    // larger one would hold more for every queued image than the bound counts, and be
    // killed for memory under load instead of refused here.
    let sized_for = u64::from(options.fallback_input_size).pow(2);
    if u64::from(width) * u64::from(height) > sized_for {
        return Err(format!(
            "input `{}` is {width}×{height}, more pixels than the {size}×{size} of --input-size the pod's memory is sized for: set --input-size (`spec.model.inputSize`) to the model's",
            input.name(),
            size = options.fallback_input_size
        ));
    }

    let mask_output = match &options.mask_output {
        Some(name) => name.clone(),
        None => session.outputs().first().ok_or("the model has no outputs")?.name().to_owned(),
    };
    let output = session
        .outputs()
        .iter()
        .find(|output| output.name() == mask_output)
        .ok_or_else(|| format!("no output named `{mask_output}`"))?;
    if !matches!(output.dtype(), ValueType::Tensor { ty: TensorElementType::Float32, .. }) {
        return Err(format!("output `{mask_output}` is {}, expected a float32 tensor", output.dtype()));
    }

    Ok(ModelShape {
        mask_output,
        preprocess: Preprocess { width, height, mean: options.mean, std: options.std },
        max_batch_size: if batch < 0 { options.max_batch_size.max(1) } else { 1 },
        batch_dimension: if batch < 0 { BatchDimension::Dynamic } else { BatchDimension::Fixed { kept_because: None } },
    })
}

/// Splits a `[batch, 1, h, w]` or `[batch, h, w]` output into one mask per image, each
/// of at most `largest` pixels (the model's input: the memory bound counts a mask as
/// large as it) and every value a number. A mask of NaN or infinities (a model
/// overflowing in half precision) is a failed run: quantised, it would be a blank
/// cut-out answered as served.
fn split_masks(shape: &[i64], values: &[f32], batch: usize, largest: u64) -> Result<Vec<Mask>, String> {
    let (height, width) = match *shape {
        [b, 1, h, w] | [b, h, w] if usize::try_from(b) == Ok(batch) && h > 0 && w > 0 => (h, w),
        _ => return Err(format!("mask output has shape {shape:?}, expected [{batch}, 1, height, width]")),
    };
    let plane = height.saturating_mul(width);
    if u64::try_from(plane).map_or(true, |pixels| pixels > largest) {
        return Err(format!("mask output has shape {shape:?}, more pixels than the model's input ({largest})"));
    }
    let (height, width, plane) = (height as u32, width as u32, plane as usize);
    if values.len() != plane * batch {
        return Err(format!("mask output has {} values for shape {shape:?}", values.len()));
    }
    if values.iter().any(|value| !value.is_finite()) {
        return Err(format!("mask output of shape {shape:?} has values that are not numbers (NaN or infinite)"));
    }
    Ok(values.chunks_exact(plane).map(|chunk| Mask { width, height, values: chunk.to_vec() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_split_per_image() {
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let masks = split_masks(&[2, 1, 2, 2], &values, 2, 4).unwrap();
        assert_eq!(masks.len(), 2);
        assert_eq!(masks[1].values, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!((masks[0].width, masks[0].height), (2, 2));
        assert!(split_masks(&[2, 3, 2, 2], &values, 2, 4).is_err(), "three channels is not a mask");
        assert!(split_masks(&[1, 1, 2, 2], &values, 2, 4).is_err(), "batch mismatch");
        assert_eq!(split_masks(&[1, 2, 4], &values, 1, 8).unwrap()[0].width, 4);
    }

    #[test]
    fn a_mask_larger_than_the_input_or_not_of_numbers_is_a_failed_run() {
        let values: Vec<f32> = (0..8).map(|v| v as f32 / 8.0).collect();
        let larger = split_masks(&[1, 2, 4], &values, 1, 4).expect_err("8 pixels from an input of 4");
        assert!(larger.contains("more pixels than the model's input"), "{larger}");
        let huge = split_masks(&[1, 1, i64::MAX, i64::MAX], &values, 1, 1 << 20).expect_err("no overflow");
        assert!(huge.contains("more pixels"), "{huge}");
        for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut poisoned = values.clone();
            poisoned[5] = poison;
            let error = split_masks(&[2, 1, 2, 2], &poisoned, 2, 4).expect_err("not a number");
            assert!(error.contains("not numbers"), "{error}");
        }
    }

    #[test]
    fn a_bound_output_has_the_shape_of_one_image() {
        assert_eq!(one_image_shape(&[1, 1, 1024, 1024]), Some(vec![1, 1, 1024, 1024]));
        assert_eq!(one_image_shape(&[-1, 1, 320, 320]), Some(vec![1, 1, 320, 320]));
        assert_eq!(one_image_shape(&[-1, 1, -1, -1]), None, "a dynamic side is not known until the run");
        assert_eq!(one_image_shape(&[4, 1, 320, 320]), None, "a fixed batch of four is not one image");
        assert_eq!(one_image_shape(&[]), None);
    }

    #[test]
    fn model_names_come_from_the_file() {
        assert_eq!(model_name(Path::new("/models/isnet-fp16.onnx")), "isnet-fp16");
    }
}
