//! Layered configuration: built-in defaults < config file < `MM_*` environment < flags.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every
//! error names its source so that start-up can print one clear line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration, one section per table of `config.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub downloads: DownloadsConfig,
    pub hub: HubConfig,
    pub library: LibraryConfig,
    pub aria2: Aria2Config,
}

/// `[aria2]`: the aria2 JSON-RPC front door (`/jsonrpc` is always on the main port).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aria2Config {
    /// A listener of its own for `/jsonrpc` (aria2 front-ends default to port 6800);
    /// empty: none.
    pub bind: String,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    /// Empty: no authentication, allowed only on a loopback bind.
    pub api_token: String,
    /// Origins besides our own whose pages may drive the API, the RPC and the
    /// websockets (`http://host:port`, as browsers send `Origin`).
    pub allowed_origins: Vec<String>,
    /// Peers (reverse proxies) whose `Forwarded`/`X-Forwarded-*` headers are believed:
    /// the mirror's relayed pagination links name the host they forward for. From any
    /// other peer those headers are ignored. Empty: none.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Answer Ollama's registry (`/v2`, Hub models, read-only) without `api_token`:
    /// Ollama cannot send one, so this is how a LAN of Ollama machines pulls through a
    /// box that has a token. Off by default.
    pub open_ollama_registry: bool,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub download_dir: PathBuf,
}

/// `[downloads]`: the knobs of the queue and of the transfer engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadsConfig {
    pub max_concurrent: usize,
    pub connections_per_download: usize,
    pub max_retries: u32,
    pub retry_base_delay_ms: u64,
    pub progress_interval_ms: u64,
    pub stall_timeout_secs: u64,
    /// Slower than this (bytes/s) for `stall_timeout_secs` counts as a stall, so that a
    /// trickle cannot hold a slot for ever; 0: only silence does.
    #[serde(default = "default_min_speed_bps")]
    pub min_speed_bps: u64,
    pub speed_limit_bps: u64,
    /// Hosts that downloads (and their redirects) may come from; empty: any host.
    pub allowed_hosts: Vec<String>,
    /// A file fetched on one connection with at least this many bytes left is written
    /// with `O_DIRECT`, past the page cache; 0: never.
    pub direct_io_min_bytes: u64,
}

/// `[library]`: where the models on disk are published for other runtimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LibraryConfig {
    /// The HuggingFace cache: "" = off; "auto" = `$HF_HUB_CACHE`, else `$HF_HOME/hub`,
    /// else `~/.cache/huggingface/hub`; or a path.
    pub hf_cache: String,
    /// Ollama's models folder: "" = off; "auto" = `$OLLAMA_MODELS`, else `~/.ollama/models`.
    pub ollama_models: String,
    /// LM Studio's models folder: "" = off; "auto" = `~/.lmstudio/models`.
    pub lmstudio_models: String,
    /// 0 = never check the Hub for newer revisions on its own.
    pub check_updates_hours: u64,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        Self {
            hf_cache: String::new(),
            ollama_models: String::new(),
            lmstudio_models: String::new(),
            check_updates_hours: 24,
        }
    }
}

impl LibraryConfig {
    /// The HuggingFace cache folder, when publishing there is on.
    pub fn hf_cache_dir(&self) -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        match self.hf_cache.as_str() {
            "" => None,
            "auto" => env("HF_HUB_CACHE")
                .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
                .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub"))),
            path => Some(PathBuf::from(path)),
        }
    }

    /// Ollama's models folder, when publishing there is on.
    pub fn ollama_models_dir(&self) -> Option<PathBuf> {
        match self.ollama_models.as_str() {
            "" => None,
            "auto" => env_dir("OLLAMA_MODELS").or_else(|| home().map(|h| h.join(".ollama/models"))),
            path => Some(PathBuf::from(path)),
        }
    }

    /// LM Studio's models folder, when publishing there is on.
    pub fn lmstudio_models_dir(&self) -> Option<PathBuf> {
        match self.lmstudio_models.as_str() {
            "" => None,
            "auto" => home().map(|h| h.join(".lmstudio/models")),
            path => Some(PathBuf::from(path)),
        }
    }
}

fn env_dir(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    env_dir("HOME")
}

fn default_min_speed_bps() -> u64 {
    1024
}

/// `[hub]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    pub endpoint: String,
    pub token: String,
    /// Fetch Xet-backed files from Xet storage (false: always the plain HTTP bridge).
    pub xet: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            api_token: String::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            open_ollama_registry: false,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            download_dir: "downloads".into(),
        }
    }
}

impl Default for DownloadsConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 3,
            connections_per_download: 4,
            max_retries: 3,
            retry_base_delay_ms: 2000,
            progress_interval_ms: 300,
            stall_timeout_secs: 30,
            min_speed_bps: default_min_speed_bps(),
            speed_limit_bps: 0,
            allowed_hosts: Vec::new(),
            direct_io_min_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            endpoint: "https://huggingface.co".into(),
            token: String::new(),
            xet: true,
        }
    }
}

/// A configuration that cannot be used; the message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

/// Values given on the command line; `None` means "not given", so lower layers stay.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub download_dir: Option<PathBuf>,
    pub api_token: Option<String>,
}

impl Config {
    /// Builds the configuration from all layers. `explicit_file` is `--config PATH`
    /// (must exist); otherwise `./config.toml` is read when present.
    pub fn load(explicit_file: Option<&Path>, flags: FlagOverrides) -> Result<Config, ConfigError> {
        let file = match explicit_file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => path.to_path_buf(),
            None => PathBuf::from("config.toml"),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        // `file_exact`, and only when it is there: `Toml::file` would also search every
        // parent folder for a config.toml, and a client run in a sub-folder would take
        // another service's.
        if file.is_file() {
            figment = figment.merge(Toml::file_exact(&file));
        }
        let mut figment =
            figment
                // MM_SERVER and MM_TOKEN are the terminal client's (the service's URL
                // and its token), not config keys.
                .merge(
                    Env::prefixed("MM_")
                        .ignore(&["server", "token"])
                        .split("__"),
                )
                // The Hub's own conventions: HF_ENDPOINT and HF_TOKEN win over the file.
                .merge(Env::raw().only(&["HF_ENDPOINT", "HF_TOKEN"]).map(
                    |key| match key.as_str() {
                        "hf_endpoint" | "HF_ENDPOINT" => "hub.endpoint".into(),
                        _ => "hub.token".into(),
                    },
                ));
        if let Some(bind) = flags.bind {
            figment = figment.merge(("server.bind", bind));
        }
        if let Some(dir) = flags.data_dir {
            figment = figment.merge(("storage.data_dir", dir));
        }
        if let Some(dir) = flags.download_dir {
            figment = figment.merge(("storage.download_dir", dir));
        }
        if let Some(token) = flags.api_token {
            figment = figment.merge(("server.api_token", token));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and the bind address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "server.bind: {:?} is not an address like 127.0.0.1:8080",
                self.server.bind
            ));
        }
        if !self.aria2.bind.is_empty() && self.aria2.bind.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "aria2.bind: {:?} is not an address like 127.0.0.1:6800",
                self.aria2.bind
            ));
        }
        if let Some(o) = self.server.allowed_origins.iter().find(|o| {
            !(o.starts_with("http://") || o.starts_with("https://") || o.contains("-extension://"))
        }) {
            return bad(format!(
                "server.allowed_origins: {o:?} is not an origin like http://host:port"
            ));
        }
        self.downloads.validate().map_err(ConfigError::Invalid)?;
        if !(self.hub.endpoint.starts_with("http://") || self.hub.endpoint.starts_with("https://"))
        {
            return bad(format!(
                "hub.endpoint: {:?} is not an http(s) URL",
                self.hub.endpoint
            ));
        }
        Ok(())
    }

    /// The bind address (validated by [`Config::validate`]).
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "server.bind: {:?} is not an address",
                self.server.bind
            ))
        })
    }
}

/// The `[downloads]` settings that can change at run time (`/api/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    pub max_concurrent: usize,
    pub speed_limit_bps: u64,
    pub connections_per_download: usize,
    pub max_retries: u32,
}

/// A change to some of the [`LiveSettings`]; absent keys stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub max_concurrent: Option<usize>,
    pub speed_limit_bps: Option<u64>,
    pub connections_per_download: Option<usize>,
    pub max_retries: Option<u32>,
}

impl DownloadsConfig {
    /// The settings that can change at run time.
    pub fn live(&self) -> LiveSettings {
        LiveSettings {
            max_concurrent: self.max_concurrent,
            speed_limit_bps: self.speed_limit_bps,
            connections_per_download: self.connections_per_download,
            max_retries: self.max_retries,
        }
    }

    /// These settings with `patch` merged in (not yet validated).
    pub fn patched(&self, patch: &SettingsPatch) -> DownloadsConfig {
        DownloadsConfig {
            max_concurrent: patch.max_concurrent.unwrap_or(self.max_concurrent),
            speed_limit_bps: patch.speed_limit_bps.unwrap_or(self.speed_limit_bps),
            connections_per_download: patch
                .connections_per_download
                .unwrap_or(self.connections_per_download),
            max_retries: patch.max_retries.unwrap_or(self.max_retries),
            ..self.clone()
        }
    }

    /// These settings with the run-time ones of `saved` (changed by an earlier
    /// `PATCH /api/settings`, which wins over the config).
    pub fn with_live_of(&self, saved: &DownloadsConfig) -> DownloadsConfig {
        let l = saved.live();
        self.patched(&SettingsPatch {
            max_concurrent: Some(l.max_concurrent),
            speed_limit_bps: Some(l.speed_limit_bps),
            connections_per_download: Some(l.connections_per_download),
            max_retries: Some(l.max_retries),
        })
    }

    /// Range checks shared by start-up and `PATCH /api/settings`.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.max_concurrent) {
            return Err(format!(
                "downloads.max_concurrent: {} is not between 1 and 64",
                self.max_concurrent
            ));
        }
        if !(1..=32).contains(&self.connections_per_download) {
            return Err(format!(
                "downloads.connections_per_download: {} is not between 1 and 32",
                self.connections_per_download
            ));
        }
        if self.max_retries > 100 {
            return Err(format!(
                "downloads.max_retries: {} is more than 100",
                self.max_retries
            ));
        }
        if self.progress_interval_ms < 50 {
            return Err(format!(
                "downloads.progress_interval_ms: {} is less than 50",
                self.progress_interval_ms
            ));
        }
        if self.stall_timeout_secs == 0 {
            return Err("downloads.stall_timeout_secs: must be at least 1".into());
        }
        Ok(())
    }
}

/// figment errors can span lines (one per nested error); start-up prints one line.
fn one_line(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn aria2_bind_and_allowed_origins_are_checked() {
        let mut c = Config::default();
        c.aria2.bind = "127.0.0.1:6800".into();
        c.server.allowed_origins = vec![
            "http://127.0.0.1:6880".into(),
            "chrome-extension://abc".into(),
        ];
        c.validate().expect("valid");
        c.aria2.bind = "6800".into();
        assert!(c.validate().unwrap_err().to_string().contains("aria2.bind"));
        c.aria2.bind = String::new();
        c.server.allowed_origins = vec!["*".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("allowed_origins"));
    }

    #[test]
    fn trusted_proxies_are_ip_addresses() {
        use figment::providers::{Format, Toml};
        let parse = |text: &str| {
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(text))
                .extract::<Config>()
                .map_err(|e| e.to_string())
        };
        let c = parse("[server]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]").unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(parse("[server]\ntrusted_proxies = [\"proxy.lan\"]").is_err());
        let shipped = parse(include_str!("../config.toml")).unwrap();
        assert!(shipped.server.trusted_proxies.is_empty());
    }

    #[test]
    fn bad_ranges_are_refused() {
        let d = DownloadsConfig {
            max_concurrent: 0,
            ..Default::default()
        };
        assert!(d.validate().unwrap_err().contains("max_concurrent"));
    }
}
