//! The ONNX Runtime session: loading the shared library, registering the execution
//! provider, reading what the model expects, and running batches.
//!
//! Only the GPU loop holds a [`Model`]; it is deliberately not `Sync`-shared, so one
//! batch runs at a time and the device never sees two sessions competing.

use std::path::{Path, PathBuf};

use ort::ep;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};

use crate::Error;
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
}

/// How the GPU providers are set up (`--cudnn-conv-algo-search`, `--cuda-tf32`,
/// `--tensorrt-fp16`, `--tensorrt-cache-dir`); the CPU provider ignores it.
#[derive(Debug, Clone)]
pub struct GpuTuning {
    pub conv_search: ConvSearch,
    pub tf32: bool,
    pub tensorrt_fp16: bool,
    pub tensorrt_cache_dir: Option<PathBuf>,
}

/// What the loaded model expects and returns, read from the model itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    pub mask_output: String,
    pub preprocess: Preprocess,
    /// Images per run: 1 unless the batch dimension is dynamic.
    pub max_batch_size: usize,
}

pub struct Model {
    session: Session,
    run_options: RunOptions<HasSelectedOutputs>,
    shape: ModelShape,
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
    pub fn load(options: &ModelOptions) -> Result<Model, Error> {
        let environment = ort::init_from(&options.runtime_library)
            .map_err(|e| Error::RuntimeLibrary { path: options.runtime_library.clone(), reason: e.to_string() })?
            .with_name("matte")
            .build()
            .map_err(|e| Error::RuntimeLibrary { path: options.runtime_library.clone(), reason: e.to_string() })?;

        let load_error = |e: ort::Error| Error::ModelLoad { path: options.model.clone(), reason: e.to_string() };
        let mut builder = Session::builder(&environment)
            .map_err(load_error)?
            .with_intra_threads(options.intra_threads)
            .map_err(|e| load_error(e.into()))?;
        let providers = execution_providers(options.provider, options.device_id, &options.gpu);
        if !providers.is_empty() {
            builder = builder
                .with_execution_providers(providers)
                .map_err(|e| Error::Provider { provider: options.provider.as_str(), reason: e.to_string() })?;
        }
        let session = builder.commit_from_file(&options.model).map_err(load_error)?;

        let shape = read_shape(&session, options)
            .map_err(|reason| Error::ModelShape { path: options.model.clone(), reason })?;
        let run_options = RunOptions::new()
            .map_err(load_error)?
            .with_outputs(OutputSelector::no_default().with(shape.mask_output.clone()));
        Ok(Model { session, run_options, shape, name: model_name(&options.model) })
    }

    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Runs one batch; `inputs` are tensors made by [`crate::imaging::to_model_input`]
    /// with this model's [`Preprocess`], at most `max_batch_size` of them.
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<Mask>, Error> {
        let preprocess = self.shape.preprocess;
        let dims = [inputs.len(), 3, preprocess.height as usize, preprocess.width as usize];
        let error = |e: ort::Error| Error::Inference(e.to_string());
        let outputs = if let [single] = inputs {
            let tensor = TensorRef::from_array_view((dims, *single)).map_err(error)?;
            self.session.run_with_options(ort::inputs![tensor], &self.run_options).map_err(error)?
        } else {
            let tensor = Tensor::from_array((dims, inputs.concat())).map_err(error)?;
            self.session.run_with_options(ort::inputs![tensor], &self.run_options).map_err(error)?
        };
        let output = &outputs[self.shape.mask_output.as_str()];
        let (shape, values) = output.try_extract_tensor::<f32>().map_err(error)?;
        split_masks(shape, values, inputs.len()).map_err(Error::Inference)
    }
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
    let side = |dim: i64| if dim > 0 { dim as u32 } else { options.fallback_input_size };

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
        preprocess: Preprocess { width: side(width), height: side(height), mean: options.mean, std: options.std },
        max_batch_size: if batch < 0 { options.max_batch_size.max(1) } else { 1 },
    })
}

/// Splits a `[batch, 1, h, w]` or `[batch, h, w]` output into one mask per image.
fn split_masks(shape: &[i64], values: &[f32], batch: usize) -> Result<Vec<Mask>, String> {
    let (height, width) = match *shape {
        [b, 1, h, w] | [b, h, w] if b as usize == batch && h > 0 && w > 0 => (h as u32, w as u32),
        _ => return Err(format!("mask output has shape {shape:?}, expected [{batch}, 1, height, width]")),
    };
    let plane = (height * width) as usize;
    if values.len() != plane * batch {
        return Err(format!("mask output has {} values for shape {shape:?}", values.len()));
    }
    Ok(values.chunks_exact(plane).map(|chunk| Mask { width, height, values: chunk.to_vec() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_split_per_image() {
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let masks = split_masks(&[2, 1, 2, 2], &values, 2).unwrap();
        assert_eq!(masks.len(), 2);
        assert_eq!(masks[1].values, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!((masks[0].width, masks[0].height), (2, 2));
        assert!(split_masks(&[2, 3, 2, 2], &values, 2).is_err(), "three channels is not a mask");
        assert!(split_masks(&[1, 1, 2, 2], &values, 2).is_err(), "batch mismatch");
        assert_eq!(split_masks(&[1, 2, 4], &values, 1).unwrap()[0].width, 4);
    }

    #[test]
    fn model_names_come_from_the_file() {
        assert_eq!(model_name(Path::new("/models/isnet-fp16.onnx")), "isnet-fp16");
    }
}
