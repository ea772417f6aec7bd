use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use matte_operator::cli::{Cli, Command};
use matte_operator::crd::crd_yaml;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let _ = std::io::stdout().write_all(crd_yaml().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            matte_serve::init_logging(EnvFilter::new(&args.log_level), args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(matte_operator::run::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "the operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
