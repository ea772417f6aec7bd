//! A bare `session.run` loop, its session set up exactly as the server sets up its own
//! (provider, threads, GPU tuning: the server's flags): the ceiling `bench/gpu.sh`
//! measures the pod against, on any provider. Prints one JSON object.
//!
//!     ORT_DYLIB_PATH=… raw_session --runs 50 --model m.onnx --provider cuda
//!     ORT_DYLIB_PATH=… raw_session --batch 4 --max-batch-size 4 --model m.onnx --provider cuda

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use matte_inference::config::Config;
use matte_inference::model::Model;
use matte_inference::server;

#[derive(Parser)]
struct Args {
    /// Timed runs, after one warm-up run.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Images a run (at most the model's batch, `--max-batch-size`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[command(flatten)]
    server: Config,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let library = std::env::var_os("ORT_DYLIB_PATH").ok_or("ORT_DYLIB_PATH names no ONNX Runtime library")?;
    let mut model = Model::load(&server::model_options(&args.server, PathBuf::from(library)))?;
    let values = model.shape().preprocess.input_values();
    let input: Vec<f32> = (0..values).map(|i| (i % 256) as f32 / 255.0 - 0.5).collect();
    // One buffer an image, as the server's queue holds them.
    let images = vec![input; args.batch.max(1)];
    let batch: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    model.run(&batch)?; // warm-up, as the server's
    let mut durations = Vec::with_capacity(args.runs);
    let started = Instant::now();
    for _ in 0..args.runs {
        let run = Instant::now();
        model.run(&batch)?;
        durations.push(run.elapsed().as_secs_f64());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    println!(
        r#"{{"provider":"{}","runs":{},"batch":{},"elapsed_seconds":{elapsed},"throughput_images_per_second":{},"mean_run_seconds":{mean}}}"#,
        args.server.provider.as_str(),
        args.runs,
        batch.len(),
        (args.runs * batch.len()) as f64 / elapsed,
    );
    Ok(())
}
