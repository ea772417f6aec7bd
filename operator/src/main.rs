use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use matte_operator::cli::{Cli, Command};
use matte_operator::crd::crd_yaml;
use matte_operator::simulate::command;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let _ = std::io::stdout().write_all(crd_yaml().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => match command::run(&args) {
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
        },
    }
}
