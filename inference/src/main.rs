use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use matte_inference::config::Config;
use matte_inference::server::{Drained, Stopped};
use matte_inference::{Error, fetch_model, server};
use matte_serve::init_logging;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `matte-inference fetch-model …` is the model init container; anything else runs
    // the server.
    if std::env::args_os().nth(1).is_some_and(|first| first == fetch_model::SUBCOMMAND) {
        return fetch_model::main(std::env::args_os().skip(1));
    }
    let config = Config::parse();
    // `RUST_LOG` picks the events; by default ONNX Runtime's own only from warnings up.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    init_logging(filter, config.log_format);
    let result = runtime_library().and_then(|library| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?
            .block_on(server::serve(config, library))
    });
    match result {
        Ok(Stopped { drained, not_live }) => {
            // A restart for the liveness probe is a failure, said on the last line (the
            // container's termination message), not a pod that completed.
            let code = match not_live {
                Some(why) => {
                    eprintln!("matte-inference: restarted while not live: {why}");
                    1
                }
                None => 0,
            };
            match drained {
                Drained::Completely => ExitCode::from(code),
                Drained::LeavingTheModelRunning => {
                    // Exiting runs the ONNX Runtime library's global destructors, which
                    // crash the process (SIGSEGV) while its thread is still inside a
                    // run. Everything worth keeping is out already (the logs go
                    // unbuffered to stderr): leave without them.
                    // SAFETY: `_exit` ends the process at once; nothing runs after it.
                    unsafe { libc::_exit(i32::from(code)) }
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "matte-inference stopped");
            eprintln!("matte-inference: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The ONNX Runtime library, from `ORT_DYLIB_PATH` as `ort` documents it.
fn runtime_library() -> Result<PathBuf, Error> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Error::NoRuntimeLibrary),
    }
}
