//! Command-line configuration of the inference server.
//!
//! Every flag has a default that works for ISNet-class models, so `--model` is the only
//! one a user must give; each can also come from a `MATTE_*` environment variable, which
//! is how the operator's Deployment passes them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use matte_common::{flags, limits, memory, paths};
use matte_serve::LogFormat;
use matte_serve::durations::{parse_delay, parse_timeout};

#[derive(Debug, Clone, Parser)]
#[command(name = "matte-inference", version, about = "Background-removal inference server")]
pub struct Config {
    /// The ONNX background-removal model.
    #[arg(long, env = "MATTE_MODEL")]
    pub model: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "MATTE_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], paths::PORT)))]
    pub listen: SocketAddr,

    /// Execution provider; `cuda` and `tensorrt` fail at start-up if they cannot register.
    #[arg(long, env = "MATTE_PROVIDER", value_enum, default_value_t = Provider::Cuda)]
    pub provider: Provider,

    /// GPU ordinal for `cuda` and `tensorrt`.
    #[arg(long, env = "MATTE_DEVICE_ID", default_value_t = 0)]
    pub device_id: i32,

    /// cuDNN's convolution algorithm search (`cuda`, and `tensorrt`'s CUDA fallback):
    /// `exhaustive` times every algorithm once per input shape, during the warm-up; the
    /// shape never changes, so that is paid once, before the pod turns ready.
    #[arg(long = flags::CUDNN_CONV_ALGO_SEARCH, env = "MATTE_CUDNN_CONV_ALGO_SEARCH", value_enum, default_value_t = ConvSearch::Exhaustive)]
    pub cudnn_conv_algo_search: ConvSearch,

    /// TF32 tensor cores for float32 convolutions and matrix products (Ampere and
    /// later): several times faster, and a mask needs far less than TF32's precision.
    #[arg(long = flags::CUDA_TF32, env = "MATTE_CUDA_TF32", default_value_t = true, action = clap::ArgAction::Set)]
    pub cuda_tf32: bool,

    /// TensorRT builds fp16 engines (`tensorrt` only).
    #[arg(long = flags::TENSORRT_FP16, env = "MATTE_TENSORRT_FP16", default_value_t = true, action = clap::ArgAction::Set)]
    pub tensorrt_fp16: bool,

    /// Where TensorRT keeps its engines and timing cache (`tensorrt` only), so that a
    /// restarted container loads them instead of spending minutes building them again.
    #[arg(long = flags::TENSORRT_CACHE_DIR, env = "MATTE_TENSORRT_CACHE_DIR")]
    pub tensorrt_cache_dir: Option<PathBuf>,

    /// Runs of one image through an IoBinding: the input and the mask in memory
    /// allocated once (the input page-locked on a GPU, so its copy is one DMA) instead
    /// of per-run buffers. A model that batches (`--max-batch-size` above 1) has a
    /// buffer of its own for that and no binding.
    #[arg(long = flags::IO_BINDING, env = "MATTE_IO_BINDING", default_value_t = false, action = clap::ArgAction::Set)]
    pub io_binding: bool,

    /// CUDA graphs (`cuda` only; implies `--io-binding`): the warm-up run is captured
    /// and every later run replays it, without launching each kernel again. Every node
    /// of the model must run on the CUDA provider, or the capture fails at start-up; a
    /// model that batches is refused.
    #[arg(long = flags::CUDA_GRAPH, env = "MATTE_CUDA_GRAPH", default_value_t = false, action = clap::ArgAction::Set)]
    pub cuda_graph: bool,

    /// ONNX Runtime intra-op threads (0: one per available core).
    #[arg(long = flags::INTRA_THREADS, env = "MATTE_INTRA_THREADS", default_value_t = 0)]
    pub intra_threads: usize,

    /// Model input side in pixels, used when the model's input shape is dynamic; the
    /// pod's memory is sized for it, so a model that fixes a larger input is refused.
    #[arg(long, env = "MATTE_INPUT_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(i64::from(limits::MIN_INPUT_SIZE)..=i64::from(limits::MAX_INPUT_SIZE)))]
    pub input_size: u32,

    /// Per-channel mean subtracted from RGB values scaled to [0, 1].
    #[arg(long, env = "MATTE_MEAN", value_parser = parse_triple, default_value = "0.5,0.5,0.5")]
    pub mean: [f32; 3],

    /// Per-channel standard deviation dividing RGB values after the mean (each at least
    /// 0.001: a 0 made every input infinite, and every cut-out blank).
    #[arg(long, env = "MATTE_STD", value_parser = parse_deviations, default_value = "1,1,1")]
    pub std: [f32; 3],

    /// Name of the model output holding the mask (default: the first output).
    #[arg(long, env = "MATTE_MASK_OUTPUT")]
    pub mask_output: Option<String>,

    /// Largest side of an output image; larger inputs are scaled down first.
    #[arg(long, env = "MATTE_MAX_DIMENSION", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=i64::from(limits::MAX_DIMENSION)))]
    pub max_dimension: u32,

    /// Largest accepted input in pixels (width × height), checked before decoding.
    #[arg(long, env = "MATTE_MAX_INPUT_PIXELS", default_value_t = memory::DEFAULT_MAX_INPUT_PIXELS)]
    pub max_input_pixels: u64,

    /// Largest accepted request body in bytes (at most 1 GiB).
    #[arg(long, env = "MATTE_MAX_BODY_BYTES", default_value_t = memory::DEFAULT_MAX_BODY_BYTES, value_parser = clap::value_parser!(u64).range(1..=memory::MAX_BODY_BYTES_LIMIT))]
    pub max_body_bytes: u64,

    /// Images per inference run: a model that fixes its batch at 1 has it freed at load
    /// and checked; one whose graph depends on it runs one image at a time.
    #[arg(long, env = "MATTE_MAX_BATCH_SIZE", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(matte_common::limits::MAX_BATCH_SIZE)))]
    pub max_batch_size: u32,

    /// Longest wait for a batch to fill once its first image is ready, in milliseconds
    /// (at most 10 s, and never past that image's deadline).
    #[arg(long, env = "MATTE_MAX_BATCH_DELAY_MS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub max_batch_delay_ms: u64,

    /// Requests admitted at once (queued, decoding, inferring or encoding); more get 429.
    #[arg(long, env = "MATTE_QUEUE_CAPACITY", default_value_t = matte_common::queue::DEFAULT_CAPACITY, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// A request not yet inferred this many seconds after arrival gets 504 instead.
    #[arg(long = "request-timeout-seconds", env = "MATTE_REQUEST_TIMEOUT_SECONDS", default_value = "60", value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Threads for decoding, resizing and encoding (0: one per available core).
    #[arg(long = flags::CPU_WORKERS, env = "MATTE_CPU_WORKERS", default_value_t = 0)]
    pub cpu_workers: usize,

    /// Connections served at once; more wait in the listen backlog until one closes. Each
    /// may hold up to 160 KiB beside its body (its read buffer, no larger than a head may
    /// be, and a waiting request's head; and what it has taken of an answer its client
    /// has not read): at the default, 160 MiB at most, which the memory bound counts.
    #[arg(long = "max-connections", env = "MATTE_MAX_CONNECTIONS", default_value_t = memory::DEFAULT_POD_MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// A client must send its request line and headers within this many seconds of
    /// starting them (or of the previous response, on a kept-alive connection).
    #[arg(long = flags::HEADER_READ_TIMEOUT_SECONDS, env = "MATTE_HEADER_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Seconds an upload may take before the minimum rate applies, and the most time it
    /// may have in hand: how long a stalled upload keeps its place in the queue, wherever
    /// it stalls.
    #[arg(long = flags::UPLOAD_GRACE_SECONDS, env = "MATTE_UPLOAD_GRACE_SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub upload_grace: Duration,

    /// After the grace period an upload must keep up this rate, with at most the grace in
    /// hand (bytes sent fast earn no licence to stall later), or it is cut off with 408;
    /// and a client's answer is taken at least this fast once its socket is full (see
    /// --write-timeout-seconds).
    #[arg(long = flags::MIN_UPLOAD_BYTES_PER_SECOND, env = "MATTE_MIN_UPLOAD_BYTES_PER_SECOND", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_upload_bytes_per_second: u64,

    /// Once a client's socket is full (it reads slower than the answer comes), it must
    /// take the answer at --min-upload-bytes-per-second, with at most this many seconds in
    /// hand, or the connection is closed (a client that stopped reading, or reads in
    /// bursts just before its time runs out).
    #[arg(long = flags::WRITE_TIMEOUT_SECONDS, env = "MATTE_WRITE_TIMEOUT_SECONDS", default_value = "30", value_parser = parse_timeout)]
    pub write_timeout: Duration,

    /// On SIGTERM, seconds to keep admitting work while unready, so that load balancers
    /// stop sending requests before the pod starts refusing them.
    #[arg(long = flags::DRAIN_DELAY_SECONDS, env = "MATTE_DRAIN_DELAY_SECONDS", default_value = "5", value_parser = parse_delay)]
    pub drain_delay: Duration,

    /// After the drain delay, seconds accepted work may take to finish; connections
    /// still open then (slow clients included) are closed and the server exits.
    #[arg(long = flags::DRAIN_TIMEOUT_SECONDS, env = "MATTE_DRAIN_TIMEOUT_SECONDS", default_value = "90", value_parser = parse_timeout)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, env = "MATTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        }
    }
}

/// cuDNN's ways of choosing a convolution algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvSearch {
    /// Time every algorithm (once per shape) and keep the fastest.
    Exhaustive,
    /// cuDNN's guess, without timing.
    Heuristic,
    /// cuDNN's default algorithm, whatever the shape.
    Default,
}

impl Config {
    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }

    pub fn cpu_workers(&self) -> usize {
        match self.cpu_workers {
            0 => available_cores(),
            n => n,
        }
    }

    /// The flags that bound the image work's memory.
    pub fn sizing(&self) -> memory::Sizing {
        memory::Sizing {
            cpu_workers: self.cpu_workers() as u64,
            queue_capacity: u64::from(self.queue_capacity),
            max_input_pixels: self.max_input_pixels,
            max_body_bytes: self.max_body_bytes,
            max_dimension: u64::from(self.max_dimension),
            input_size: u64::from(self.input_size),
            max_batch_size: u64::from(self.max_batch_size),
            max_connections: self.max_connections,
        }
    }

    pub fn intra_threads(&self) -> usize {
        match self.intra_threads {
            0 => available_cores(),
            n => n,
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The least a standard deviation may be: it divides every pixel.
const MIN_STD: f32 = 0.001;

/// Three standard deviations, each at least [`MIN_STD`].
fn parse_deviations(text: &str) -> Result<[f32; 3], String> {
    let deviations = parse_triple(text)?;
    if deviations.iter().any(|deviation| *deviation < MIN_STD) {
        return Err(format!(
            "each standard deviation must be at least {MIN_STD} (it divides every pixel), got `{text}`"
        ));
    }
    Ok(deviations)
}

/// Three finite numbers, as `--mean` and `--std` take them.
fn parse_triple(text: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|part| part.trim().parse::<f32>().map_err(|e| format!("`{part}`: {e}")))
        .collect::<Result<_, _>>()?;
    match values.as_slice() {
        [r, g, b] if values.iter().all(|v| v.is_finite()) => Ok([*r, *g, *b]),
        _ => Err(format!("expected three comma-separated numbers, got `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use matte_serve::documented::flags_not_named_in;

    use super::*;

    #[test]
    fn the_readme_names_every_flag() {
        assert_eq!(flags_not_named_in(&Config::command(), include_str!("../../README.md")), Vec::<String>::new());
    }

    #[test]
    fn triples_parse_and_refuse_malformed_input() {
        assert_eq!(parse_triple("0.485, 0.456,0.406"), Ok([0.485, 0.456, 0.406]));
        assert!(parse_triple("1,2").is_err());
        assert!(parse_triple("1,2,x").is_err());
        assert!(parse_triple("1,2,NaN").is_err());
        assert_eq!(parse_deviations("0.229,0.224,0.225"), Ok([0.229, 0.224, 0.225]));
        for divides_by_nothing in ["0,0,0", "1,1,0", "1,-1,1", "1,1,1e-9"] {
            assert!(parse_deviations(divides_by_nothing).is_err(), "{divides_by_nothing}");
        }
    }

    #[test]
    fn flags_that_would_break_the_memory_bound_or_the_process_are_refused() {
        let with = |flag: &str, value: &str| Config::try_parse_from(["matte-inference", "--model", "m", flag, value]);
        assert!(with("--max-dimension", "0").is_err(), "0 would turn scaling off, uncounted");
        assert!(with("--max-dimension", "16384").is_ok());
        assert!(with("--max-dimension", "16385").is_err(), "no encoder writes WebP that wide");
        assert!(with("--max-body-bytes", "18446744073709551615").is_err(), "a head could abort the process");
        assert!(with("--max-body-bytes", "0").is_err());
        assert_eq!(with("--max-body-bytes", "1073741824").unwrap().max_body_bytes, 1 << 30);
        assert!(with("--request-timeout-seconds", "1e-10").is_err(), "no timeout of nothing");
    }

    #[test]
    fn defaults_suit_isnet_on_a_gpu() {
        let config = Config::parse_from(["matte-inference", "--model", "m.onnx"]);
        assert_eq!(config.provider, Provider::Cuda);
        assert_eq!(config.input_size, 1024);
        assert_eq!(config.max_dimension, 2048);
        assert_eq!(config.max_batch_size, 1);
        assert_eq!(config.mean, [0.5; 3]);
        assert_eq!(config.std, [1.0; 3]);
    }

    #[test]
    fn gpu_tuning_defaults_to_the_fastest_steady_state_and_parses_overrides() {
        let config = Config::parse_from(["matte-inference", "--model", "m.onnx"]);
        assert_eq!(config.cudnn_conv_algo_search, ConvSearch::Exhaustive);
        assert!(config.cuda_tf32 && config.tensorrt_fp16);
        assert_eq!(config.tensorrt_cache_dir, None);
        let config = Config::parse_from([
            "matte-inference",
            "--model",
            "m.onnx",
            "--cudnn-conv-algo-search",
            "heuristic",
            "--cuda-tf32",
            "false",
            "--tensorrt-fp16=false",
            "--tensorrt-cache-dir",
            "/var/cache/matte/tensorrt",
        ]);
        assert_eq!(config.cudnn_conv_algo_search, ConvSearch::Heuristic);
        assert!(!config.cuda_tf32 && !config.tensorrt_fp16);
        assert_eq!(config.tensorrt_cache_dir, Some(PathBuf::from("/var/cache/matte/tensorrt")));
        let refused =
            Config::try_parse_from(["matte-inference", "--model", "m", "--cudnn-conv-algo-search", "fastest"]);
        assert!(refused.is_err());
    }

    #[test]
    fn a_zero_queue_capacity_is_refused() {
        let parsed = Config::try_parse_from(["matte-inference", "--model", "m", "--queue-capacity", "0"]);
        assert!(parsed.is_err());
    }
}
