//! The command line: `serve` (the default) and the client's subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A self-hosted download orchestrator for large files.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// With none, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Args, Clone, Default)]
pub struct Global {
    /// Config file (default: ./config.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Address to serve on, e.g. 127.0.0.1:8080 (the client talks to it too).
    #[arg(long, global = true)]
    pub bind: Option<String>,
    /// Where the database lives.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Where downloads land.
    #[arg(long, global = true)]
    pub download_dir: Option<PathBuf>,
    /// The service to talk to (else MM_SERVER, else the config's bind); given and
    /// unreachable: exit 3.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (what no subcommand does).
    Serve,
    /// Download a URL or a Hub model and follow it; without a service, run one in-process.
    Pull(PullArgs),
    /// Queue a URL and return.
    Add(AddArgs),
    /// List the downloads.
    Ls(LsArgs),
    /// Pause downloads.
    Pause(Ids),
    /// Resume paused downloads.
    Resume(Ids),
    /// Cancel downloads (their partial files are removed).
    Cancel(Ids),
    /// Queue failed or cancelled downloads again.
    Retry(Ids),
    /// Forget downloads.
    Rm(RmArgs),
    /// Search the HuggingFace Hub.
    Search(SearchArgs),
    /// A Hub repo's quantizations, with their sizes.
    Files(FilesArgs),
    /// The model files in download_dir.
    Library(JsonFlag),
    /// Show the run-time settings, or change some: `settings max_concurrent=2`.
    Settings(SettingsArgs),
}

/// `pull SPEC`
#[derive(Args)]
pub struct PullArgs {
    /// A URL, owner/name[:TAG], hf.co/owner/name[:TAG], or owner/name/file. A Hub
    /// repo with a tag or none picks what `llama-server -hf` picks for the same spec.
    pub spec: String,
    /// Not the repo's matching mmproj file (llama.cpp's `--no-mmproj`).
    #[arg(long)]
    pub no_mmproj: bool,
    /// The branch, tag or commit of a Hub spec.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// The expected sha256 of a URL's file (64 hex digits); Hub files have theirs.
    #[arg(long, value_parser = sha256_arg)]
    pub sha256: Option<String>,
    /// Replace a file of the same name.
    #[arg(long)]
    pub overwrite: bool,
    /// On Ctrl-C, cancel the downloads (else they stay queued).
    #[arg(long)]
    pub cancel: bool,
    /// One JSON object per event instead of progress bars.
    #[arg(long)]
    pub json: bool,
}

/// `add URL`
#[derive(Args)]
pub struct AddArgs {
    /// The file's http(s) URL.
    pub url: String,
    /// The file name in download_dir (default: from the URL).
    #[arg(long)]
    pub name: Option<String>,
    /// The expected sha256 (64 hex digits).
    #[arg(long, value_parser = sha256_arg)]
    pub sha256: Option<String>,
    /// Queue it paused.
    #[arg(long)]
    pub paused: bool,
    /// The answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ls`
#[derive(Args)]
pub struct LsArgs {
    /// Only downloads in this state (queued, downloading, completed, failed, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// The downloads as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `settings [KEY=VALUE…]`
#[derive(Args)]
pub struct SettingsArgs {
    /// Settings to change, e.g. `max_concurrent=2` or `speed_limit_bps=8MiB` (0: no
    /// limit); none: show them.
    #[arg(value_name = "KEY=VALUE")]
    pub changes: Vec<String>,
    /// The settings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One or more download ids.
#[derive(Args)]
pub struct Ids {
    /// Download ids, or any unambiguous start of one (`dl_01M9`, `01m9`).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Each answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rm ID…`
#[derive(Args)]
pub struct RmArgs {
    /// Download ids, or any unambiguous start of one (`dl_01M9`, `01m9`).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Remove the finished file too.
    #[arg(long)]
    pub delete_file: bool,
}

/// `search QUERY`
#[derive(Args)]
pub struct SearchArgs {
    /// Words of the model's name, e.g. `tinyllama gguf`.
    pub query: String,
    /// How many models at most (1 to 100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub limit: u16,
    /// The models as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `files owner/name`
#[derive(Args)]
pub struct FilesArgs {
    /// The Hub repo, owner/name.
    pub repo: String,
    /// The branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// The files and quantizations as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Just `--json`.
#[derive(Args)]
pub struct JsonFlag {
    /// The answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--sha256` checked where the usage is read, so a malformed digest is bad usage (exit 2,
/// as the contract says), not a refusal of the service (exit 1).
fn sha256_arg(s: &str) -> Result<String, String> {
    crate::intake::parse_sha256(s).map_err(|e| e.to_string())
}
