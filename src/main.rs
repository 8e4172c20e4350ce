use std::process::ExitCode;

use clap::Parser;
use model_manager::cli::args::Cli;

fn main() -> ExitCode {
    model_manager::cli::main(Cli::parse())
}
