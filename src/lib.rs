//! model-manager: a self-hosted download orchestrator.
//!
//! [`prepare`] does everything that can fail because of the user's configuration (bind,
//! open the database) before any actor starts; [`start`] boots the actors and the HTTP
//! server; [`run`] adds signal handling. Integration tests use `prepare` + `start` on
//! port 0 with a temporary data dir.

pub mod actors;
pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod files;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod security;
pub mod store;
pub mod ws;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};

use crate::actors::broadcaster::{Broadcaster, DisconnectAll};
use crate::actors::supervisor::{Shutdown, Supervisor, SupervisorParts};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::store::{Store, StoreError};

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
}

/// Everything that can fail for user reasons, done before any actor starts.
pub struct Prepared {
    pub config: Config,
    pub listener: TcpListener,
    pub store: Store,
    /// Every download record, read once at start-up.
    pub records: Vec<model::Download>,
    pub download_dir: PathBuf,
}

/// Binds the listener, opens the database and checks the download dir.
pub fn prepare(config: Config) -> Result<Prepared, StartError> {
    let addr = config.bind_addr()?;
    if !addr.ip().is_loopback() && config.server.api_token.is_empty() {
        return Err(StartError::NoTokenOnPublicBind(addr));
    }
    let download_dir = config.storage.download_dir.clone();
    std::fs::create_dir_all(&download_dir)
        .and_then(|_| download_dir.canonicalize())
        .map_err(|source| StartError::DownloadDir {
            path: download_dir.clone(),
            source,
        })?;
    let (store, records) =
        Store::open_and_load(&config.storage.data_dir).map_err(|source| StartError::Store {
            path: config.storage.data_dir.clone(),
            source,
        })?;
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    Ok(Prepared {
        config,
        listener,
        store,
        records,
        download_dir,
    })
}

/// A running service.
pub struct Service {
    pub addr: SocketAddr,
    pub supervisor: Addr<Supervisor>,
    server: actix_web::dev::ServerHandle,
    broadcaster: Addr<Broadcaster>,
    transfers: Arbiter,
    store: Store,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the actors and the HTTP server (inside an actix System).
pub async fn start(prepared: Prepared) -> Result<Service, StartError> {
    let Prepared {
        config,
        listener,
        store,
        records,
        download_dir,
    } = prepared;
    let addr = listener.local_addr().map_err(StartError::Server)?;
    let mut settings = config.downloads.clone();
    if let Ok(Some(saved)) = store.settings() {
        // Run-time changes (PATCH /api/settings) outlive restarts.
        settings.max_concurrent = saved.max_concurrent;
        settings.speed_limit_bps = saved.speed_limit_bps;
        settings.connections_per_download = saved.connections_per_download;
        settings.max_retries = saved.max_retries;
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let engine = Engine::new(
        store.clone(),
        settings.speed_limit_bps,
        &settings.allowed_hosts,
        metrics.clone(),
    )
    .map_err(|e| StartError::Client(e.to_string()))?;
    let hub = hub::HubClient::new(&config.hub.endpoint, Some(config.hub.token.clone()))
        .map_err(|e| StartError::Client(e.to_string()))?;
    let live = Arc::new(RwLock::new(HashMap::new()));
    let broadcaster = Broadcaster::new(
        Duration::from_millis(settings.progress_interval_ms),
        live.clone(),
        metrics.clone(),
    )
    .start();
    let transfers = Arbiter::new();
    let supervisor = Supervisor::new(SupervisorParts {
        store: store.clone(),
        records,
        engine,
        hub: hub.clone(),
        broadcaster: broadcaster.clone(),
        live,
        transfers: transfers.handle(),
        download_dir: download_dir.clone(),
        settings,
    })
    .map_err(|source| StartError::Store {
        path: config.storage.data_dir.clone(),
        source,
    })?
    .start();

    let guard = security::Guard {
        token: Some(config.server.api_token.clone()).filter(|t| !t.is_empty()),
        loopback: addr.ip().is_loopback(),
    };
    let static_dir = static_dir();
    let sup_data = web::Data::new(supervisor.clone());
    let hub_data = web::Data::new(hub);
    let policy_data = web::Data::new(api::UrlPolicy {
        allowed_hosts: config.downloads.allowed_hosts.clone(),
    });
    let guard_data = web::Data::new(guard);
    let metrics_data = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sup_data.clone())
            .app_data(hub_data.clone())
            .app_data(policy_data.clone())
            .app_data(guard_data.clone())
            .app_data(metrics_data.clone())
            .wrap(middleware::from_fn(security::guard))
            .wrap(middleware::from_fn(time_requests))
            .wrap(tracing_actix_web::TracingLogger::default())
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok") }),
            )
            .route("/metrics", web::get().to(metrics_text))
            .configure(api::routes)
            .service(actix_files::Files::new("/", &static_dir).index_file("index.html"))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)
    .map_err(StartError::Server)?
    .run();
    let handle = server.handle();
    let server_task = tokio::task::spawn_local(server);
    tracing::info!(%addr, download_dir = %download_dir.display(), "model-manager listening");
    Ok(Service {
        addr,
        supervisor,
        server: handle,
        broadcaster,
        transfers,
        store,
        server_task,
    })
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(
    sup: web::Data<Addr<Supervisor>>,
    metrics: web::Data<metrics::Metrics>,
) -> Result<HttpResponse, error::ApiError> {
    let stats = sup.send(actors::supervisor::GetStats).await?;
    let states: Vec<(&str, usize)> = stats.by_state.iter().map(|(k, v)| (*k, *v)).collect();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render(&states)))
}

/// Records how long each request took, by route pattern (not by raw path, which would
/// make one series per download id).
async fn time_requests(
    req: actix_web::dev::ServiceRequest,
    next: middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "other".into());
    if let Some(metrics) = res.request().app_data::<web::Data<metrics::Metrics>>() {
        metrics.observe_request(&route, started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// `./static` when run from the repository, else the one the binary was built from.
fn static_dir() -> PathBuf {
    let here = PathBuf::from("static");
    if here.join("index.html").is_file() {
        here
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
    }
}

impl Service {
    /// Stops answering, checkpoints every transfer (their states are kept, so the next
    /// start resumes them), flushes the database.
    pub async fn shutdown(self) {
        self.broadcaster.do_send(DisconnectAll);
        self.server.stop(true).await;
        let _ = self.supervisor.send(Shutdown).await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        self.transfers.stop();
        let _ = self.server_task.await;
        tracing::info!("model-manager stopped");
    }
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
