use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use matte_sim::cli::Cli;
use matte_sim::command;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match command::run(&cli) {
        Ok(printed) => {
            eprint!("{}", printed.stderr);
            // A closed pipe (`| head`) is not worth a panic.
            let _ = std::io::stdout().write_all(printed.stdout.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
