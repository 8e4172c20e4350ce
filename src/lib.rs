//! model-manager: a self-hosted download orchestrator.
//!
//! [`prepare`] does everything that can fail because of the user's configuration (bind,
//! open the database) before any actor starts; [`start`] boots the actors and the HTTP
//! server; [`run`] adds signal handling. Integration tests use `prepare` + `start` on
//! port 0 with a temporary data dir.

pub mod actors;
pub mod config;
pub mod doors;
pub mod engine;
pub mod files;
pub mod gguf;
pub mod http;
pub mod hub;
pub mod intake;
pub mod library;
pub mod metrics;
pub mod queue;
pub mod units;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::broadcaster::Broadcaster;
use crate::actors::handle::QueueHandle;
use crate::actors::sampler::Sampler;
use crate::actors::supervisor::{Supervisor, SupervisorParts};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::queue::store::{Store, StoreError};

/// Why the service cannot start; printed as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    InUse(StoreError),
    /// The database was found damaged and start-up will not settle it by itself.
    #[error("{0}")]
    Damaged(StoreError),
    #[error("cannot open the database in {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("cannot use download_dir {path}: {source}")]
    DownloadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {0} without server.api_token: set a token, or bind to 127.0.0.1"
    )]
    NoTokenOnPublicBind(SocketAddr),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("server: {0}")]
    Server(std::io::Error),
    #[error("cannot load the library: {0}")]
    Library(String),
}

/// Everything that can fail for user reasons, done before any actor starts.
pub struct Prepared {
    pub config: Config,
    pub listener: TcpListener,
    /// `[aria2] bind`: the JSON-RPC's own listener, when set.
    pub rpc_listener: Option<TcpListener>,
    pub store: Store,
    /// Every download record, read once at start-up.
    pub records: Vec<queue::model::Download>,
    pub download_dir: PathBuf,
}

/// Binds the listener, opens the database and checks the download dir.
pub fn prepare(config: Config) -> Result<Prepared, StartError> {
    let addr = config.bind_addr()?;
    check_bind(addr, &config)?;
    warn_token_shape(&config);
    let download_dir = ensure_download_dir(&config)?;
    let (store, records) = open_store(&config)?;
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let rpc_listener = bind_rpc(&config)?;
    Ok(Prepared {
        config,
        listener,
        rpc_listener,
        store,
        records,
        download_dir,
    })
}

/// Creates `download_dir` when missing and checks that it can be used.
pub fn ensure_download_dir(config: &Config) -> Result<PathBuf, StartError> {
    let download_dir = config.storage.download_dir.clone();
    std::fs::create_dir_all(&download_dir)
        .and_then(|_| download_dir.canonicalize())
        .map_err(|source| StartError::DownloadDir {
            path: download_dir.clone(),
            source,
        })?;
    Ok(download_dir)
}

/// Opens the database of `config` and reads every record; another process holding it
/// is said plainly (its own error, not a sled lock message).
pub fn open_store(config: &Config) -> Result<(Store, Vec<queue::model::Download>), StartError> {
    Store::open_and_load(&config.storage.data_dir).map_err(|source| match source {
        StoreError::InUse(_) => StartError::InUse(source),
        StoreError::Refused(_) => StartError::Damaged(source),
        source => StartError::Store {
            path: config.storage.data_dir.clone(),
            source,
        },
    })
}

/// The contract's rule for every listener: a public address needs `server.api_token`.
fn check_bind(addr: SocketAddr, config: &Config) -> Result<(), StartError> {
    if !addr.ip().is_loopback() && config.server.api_token.is_empty() {
        return Err(StartError::NoTokenOnPublicBind(addr));
    }
    Ok(())
}

/// Says at start when `api_token` is not shaped like a Hub token: llama.cpp's `-hf`
/// would never send it to the LAN mirror's `refs` and `tree` (the REST API, aria2
/// clients and `huggingface_hub` take any token, so it is no refusal).
fn warn_token_shape(config: &Config) {
    let token = &config.server.api_token;
    if !token.is_empty() && !hub::is_hub_shaped_token(token) {
        tracing::warn!(
            "server.api_token is not shaped like a Hub token (hf_ then letters and digits, \
             37 to 256 characters in all): llama.cpp drops such a token, so `llama-server -hf` \
             through this service's /hf mirror gets 401"
        );
    }
}

/// Binds `[aria2] bind` when set (the same rule as the main bind: no public
/// address without a token).
fn bind_rpc(config: &Config) -> Result<Option<TcpListener>, StartError> {
    if config.aria2.bind.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = config.aria2.bind.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "aria2.bind: {:?} is not an address",
            config.aria2.bind
        ))
    })?;
    check_bind(addr, config)?;
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    Ok(Some(listener))
}

/// The core without any front door: the queue and what it runs on. Every door (the
/// HTTP servers, the terminal's embedded mode, and those to come) is given a clone of
/// `queue`.
pub struct Core {
    pub queue: QueueHandle,
    pub hub: hub::HubClient,
    /// The transfer engine (the library asks it what an update will fetch).
    pub engine: engine::Engine,
    pub metrics: Arc<metrics::Metrics>,
    broadcaster: Broadcaster,
    transfers: Arbiter,
}

impl Core {
    /// Checkpoints every transfer (their states are kept, so the next start resumes
    /// them), flushes the database and stops the transfers thread: the end of a
    /// front door that runs the core in-process.
    pub async fn shutdown(self, store: &Store) {
        self.broadcaster.close();
        self.queue.shutdown().await;
        if let Err(e) = store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        self.transfers.stop();
    }
}

/// A running service: the core and the HTTP servers in front of it.
pub struct Service {
    pub addr: SocketAddr,
    pub core: Core,
    store: Store,
    servers: doors::web::Servers,
}

impl Service {
    /// Stops answering, checkpoints every transfer (their states are kept, so the next
    /// start resumes them), flushes the database.
    pub async fn shutdown(self) {
        // Websockets first, so that the servers' graceful stop does not wait for them.
        self.core.broadcaster.close();
        self.servers.stop().await;
        self.core.shutdown(&self.store).await;
        tracing::info!("model-manager stopped");
    }
}

/// Starts the broadcaster, the supervisor and the transfers thread.
pub fn start_core(
    config: &Config,
    store: &Store,
    records: Vec<queue::model::Download>,
    download_dir: &std::path::Path,
) -> Result<Core, StartError> {
    // Run-time changes (PATCH /api/settings) outlive restarts.
    let settings = match store.settings() {
        Ok(Some(saved)) => config.downloads.with_live_of(&saved),
        _ => config.downloads.clone(),
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let engine = Engine::new(
        store.clone(),
        settings.speed_limit_bps,
        &settings.allowed_hosts,
        metrics.clone(),
    )
    .map_err(|e| StartError::Client(e.to_string()))?;
    let hub = hub::HubClient::new(&config.hub.endpoint, Some(config.hub.token.clone()))
        .map_err(|e| StartError::Client(e.to_string()))?
        .with_xet(config.hub.xet);
    let interval = Duration::from_millis(settings.progress_interval_ms);
    let broadcaster = Broadcaster::new(metrics.clone());
    let sampler = Sampler::start(interval, broadcaster.clone(), metrics.clone());
    let transfers = Arbiter::new();
    let supervisor = Supervisor::new(SupervisorParts {
        store: store.clone(),
        records,
        engine: engine.clone(),
        hub: hub.clone(),
        broadcaster: broadcaster.clone(),
        sampler,
        transfers: transfers.handle(),
        download_dir: download_dir.to_owned(),
        settings,
    })
    .map_err(|source| StartError::Store {
        path: config.storage.data_dir.clone(),
        source,
    })?
    .start();
    Ok(Core {
        queue: QueueHandle::new(
            supervisor,
            download_dir.to_owned(),
            hub.clone(),
            engine.clone(),
        ),
        hub,
        engine,
        metrics,
        broadcaster,
        transfers,
    })
}

/// Starts the core, the library and the HTTP servers (inside an actix System).
pub async fn start(prepared: Prepared) -> Result<Service, StartError> {
    let Prepared {
        config,
        listener,
        rpc_listener,
        store,
        records,
        download_dir,
    } = prepared;
    let core = start_core(&config, &store, records, &download_dir)?;
    let library = start_library(&config, &core, &store, &download_dir)?;
    let servers = doors::web::Servers::start(
        listener,
        rpc_listener,
        doors::web::Parts {
            queue: core.queue.clone(),
            library,
            hub: core.hub.clone(),
            metrics: core.metrics.clone(),
            config: &config,
        },
    )
    .map_err(StartError::Server)?;
    let addr = servers.addr();
    tracing::info!(%addr, download_dir = %download_dir.display(), "model-manager listening");
    Ok(Service {
        addr,
        core,
        store,
        servers,
    })
}

/// Starts the library of `download_dir` and the folders of `config`.
fn start_library(
    config: &Config,
    core: &Core,
    store: &Store,
    download_dir: &std::path::Path,
) -> Result<library::LibraryHandle, StartError> {
    library::LibraryHandle::start(
        download_dir.to_owned(),
        store.clone(),
        core.queue.clone(),
        library::Options {
            folders: library::Folders {
                hf_cache: config.library.hf_cache_dir(),
                ollama: config.library.ollama_models_dir(),
                lmstudio: config.library.lmstudio_models_dir(),
            },
            hub: core.hub.clone(),
            check_updates_hours: config.library.check_updates_hours,
            engine: Some(core.engine.clone()),
        },
        Some(core.broadcaster.announcer()),
    )
    .map_err(|e| StartError::Library(e.to_string()))
}

/// Runs until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(prepared: Prepared) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Server)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Server)?;
    let service = start(prepared).await?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    service.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with its own temp dir (one database each: sled locks it).
    fn prepare_with(bind: &str, aria2_bind: &str, token: &str) -> Result<Prepared, StartError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Config::default();
        c.server.bind = bind.into();
        c.server.api_token = token.into();
        c.aria2.bind = aria2_bind.into();
        c.storage.data_dir = dir.path().join("data");
        c.storage.download_dir = dir.path().join("downloads");
        prepare(c)
    }

    /// Both listeners follow the one rule: a public address needs a token.
    #[test]
    fn every_public_bind_needs_a_token() {
        for (bind, aria2) in [("0.0.0.0:0", ""), ("127.0.0.1:0", "0.0.0.0:0")] {
            let refused = prepare_with(bind, aria2, "").err();
            assert!(
                matches!(refused, Some(StartError::NoTokenOnPublicBind(_))),
                "bind {bind}, aria2 bind {aria2:?}: {refused:?}"
            );
            let prepared = prepare_with(bind, aria2, "s3cret").expect("prepare");
            assert_eq!(prepared.rpc_listener.is_some(), !aria2.is_empty());
        }
        let loopback = prepare_with("127.0.0.1:0", "127.0.0.1:0", "");
        assert!(loopback.is_ok(), "loopback needs no token");
    }
}
