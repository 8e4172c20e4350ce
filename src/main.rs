use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use model_manager::config::{Config, FlagOverrides};

/// A self-hosted download orchestrator for large files.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (default: ./config.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to serve on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    bind: Option<String>,
    /// Where the database lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where downloads land.
    #[arg(long)]
    download_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = FlagOverrides {
        bind: cli.bind,
        data_dir: cli.data_dir,
        download_dir: cli.download_dir,
        api_token: None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let prepared = Config::load(cli.config.as_deref(), flags)
        .map_err(model_manager::StartError::from)
        .and_then(model_manager::prepare);
    let result =
        prepared.and_then(|p| actix_web::rt::System::new().block_on(model_manager::run(p)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("model-manager: {e}");
            ExitCode::from(2)
        }
    }
}
