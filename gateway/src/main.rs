use std::process::ExitCode;

use clap::Parser;
use matte_gateway::config::Config;
use matte_gateway::{Error, server};
use matte_serve::init_logging;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    init_logging(filter, config.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(server::serve(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "matte-gateway stopped");
            eprintln!("matte-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}
