use std::process::ExitCode;

use clap::Parser;
use model_manager::doors::cli::args::Cli;

fn main() -> ExitCode {
    model_manager::doors::cli::main(Cli::parse())
}
