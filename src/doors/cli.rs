//! The terminal: `model-manager serve` (the default) and a client for every action,
//! which talks to the service over the same REST API and websocket as the page.
//! `pull` without a service runs the core in-process ([`embedded`]).

pub mod args;
mod client;
mod commands;
mod embedded;
mod format;
mod ids;
mod progress;
mod pull;
mod settings;
mod spec;
mod table;

use std::process::ExitCode;

use args::{Cli, Command, Global};

use crate::config::{Config, FlagOverrides};

/// Why a client command did not do what it was asked; each maps to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or config: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The service cannot be reached: exit 3.
    #[error("cannot reach the service at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The service refused the request: exit 1.
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// The service answered something the client cannot read: exit 1.
    #[error("{0}")]
    Protocol(String),
    /// A download failed, was cancelled, or a command failed for some ids (already
    /// reported): exit 1.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C: exit 130, as a shell reports SIGINT.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Interrupted => 130,
            CliError::Api { .. } | CliError::Protocol(_) | CliError::Failed(_) => 1,
        }
    }
}

/// Runs the command line: the service, or one client command.
pub fn main(cli: Cli) -> ExitCode {
    let serving = matches!(cli.command, None | Some(Command::Serve));
    init_tracing(serving);
    let config = Config::load(cli.global.config.as_deref(), flags(&cli.global));
    if serving {
        let result = config
            .map_err(crate::StartError::from)
            .and_then(crate::prepare)
            .and_then(|p| actix_web::rt::System::new().block_on(crate::run(p)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("model-manager: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = config
        .map_err(|e| CliError::Usage(format!("config: {e}")))
        .and_then(|config| run_client(cli, config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Failed(_)) => ExitCode::from(1),
        Err(e) => {
            eprintln!("model-manager: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The service logs to stdout at `info`, as it always has (stderr keeps its one-line
/// start-up errors); the client logs errors only, to stderr, so that its stdout is its
/// output (tables, `--json`).
fn init_tracing(serving: bool) {
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into())
    };
    if serving {
        tracing_subscriber::fmt()
            .with_env_filter(filter("info"))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter("error"))
            .init();
    }
}

fn flags(global: &Global) -> FlagOverrides {
    FlagOverrides {
        bind: global.bind.clone(),
        data_dir: global.data_dir.clone(),
        download_dir: global.download_dir.clone(),
        api_token: None,
    }
}

/// Where the service is: `--server`, else `MM_SERVER` (both "given": unreachable is
/// exit 3), else the config's bind; and its token, `MM_TOKEN` else `server.api_token`.
pub struct Target {
    pub remote: client::Remote,
    pub given: bool,
}

fn target(global: &Global, config: &Config) -> Result<Target, CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let given = global.server.clone().or_else(|| env("MM_SERVER"));
    let token = env("MM_TOKEN").or_else(|| Some(config.server.api_token.clone()));
    let base = match &given {
        Some(url) => url.clone(),
        None => {
            let mut addr = config
                .bind_addr()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            // A service on every address is reached on the loopback one.
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    Ok(Target {
        remote: client::Remote::new(&base, token)?,
        given: given.is_some(),
    })
}

fn run_client(cli: Cli, config: Config) -> Result<(), CliError> {
    let target = target(&cli.global, &config)?;
    let Some(command) = cli.command else {
        return Ok(());
    };
    if let Command::Pull(args) = command {
        return pull::run(&args, &target, &config);
    }
    actix_web::rt::System::new().block_on(commands::run(command, &target))
}
