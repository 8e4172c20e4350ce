//! The HTTP front door: the REST API, the websocket, the LAN mirror (`/hf`), the page,
//! `/healthz` and `/metrics`, behind the security guard. It reaches the queue only by its handle.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpResponse, HttpServer};

use super::{api, aria2, conn, error, mirror, security, ws};
use crate::actors::handle::QueueHandle;
use crate::config::Config;
use crate::{hub, metrics};

/// A connection whose peer has taken none of what was written to it for this long is
/// dropped (by the kernel: `TCP_USER_TIMEOUT`). Nothing in the HTTP stack bounds a
/// response that the peer does not read: without this, a client that stops reading
/// holds its connection, and what was queued for it, for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// The kernel's send buffer of a connection. Left alone it grows to 4 MiB for a peer
/// that does not read; this is plenty for an API and a page on a LAN, and keeps what
/// a stuck client costs the machine (and what is made for it before its socket is
/// full) small.
pub const SEND_BUFFER: usize = 64 * 1024;

/// What the HTTP server serves.
pub struct Parts<'a> {
    pub queue: QueueHandle,
    pub library: crate::library::LibraryHandle,
    pub hub: hub::HubClient,
    pub metrics: Arc<metrics::Metrics>,
    pub config: &'a Config,
}

/// The HTTP servers of a service, running: the main one, and the `[aria2] bind`
/// listener's when there is one.
pub struct Servers {
    addr: SocketAddr,
    main: Running,
    rpc: Option<Running>,
}

/// A server and the task that runs it.
struct Running {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn spawn(server: Server) -> Running {
        Running {
            handle: server.handle(),
            task: tokio::task::spawn_local(server),
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

impl Servers {
    /// Serves on already bound listeners (inside the actix System).
    pub fn start(
        listener: TcpListener,
        rpc_listener: Option<TcpListener>,
        parts: Parts<'_>,
    ) -> std::io::Result<Servers> {
        let addr = listener.local_addr()?;
        let (queue, config) = (parts.queue.clone(), parts.config);
        let main = Running::spawn(serve(listener, addr, parts)?);
        let rpc = match rpc_listener {
            Some(l) => {
                let rpc_addr = l.local_addr()?;
                let server = Running::spawn(serve_rpc(l, queue, config, rpc_addr)?);
                tracing::info!(addr = %rpc_addr, "aria2 JSON-RPC listening");
                Some(server)
            }
            None => None,
        };
        Ok(Servers { addr, main, rpc })
    }

    /// The main server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering: each server finishes the requests it has (for a moment).
    pub async fn stop(self) {
        self.main.stop().await;
        if let Some(rpc) = self.rpc {
            rpc.stop().await;
        }
    }
}

/// Builds the server on an already bound listener at `addr`; it runs once polled.
fn serve(listener: TcpListener, addr: SocketAddr, parts: Parts<'_>) -> std::io::Result<Server> {
    let config = parts.config;
    let guard = security::Guard::from_config(config, addr.ip().is_loopback());
    let static_dir = static_dir();
    let mirror_data = web::Data::new(mirror::Mirror {
        queue: parts.queue.clone(),
        library: parts.library.clone(),
        hub: parts.hub.clone(),
        download_dir: config.storage.download_dir.clone(),
        trusted_proxies: config.server.trusted_proxies.clone().into(),
        heads: Default::default(),
        uplink: Default::default(),
        registry_token: Some(config.server.api_token.as_str())
            .filter(|t| !t.is_empty() && !config.server.open_ollama_registry)
            .map(Into::into),
    });
    let queue_data = web::Data::new(parts.queue.clone());
    let library_data = web::Data::new(parts.library);
    let hub_data = web::Data::new(parts.hub);
    let policy_data = web::Data::new(crate::intake::UrlPolicy::new(
        &config.downloads.allowed_hosts,
    ));
    let aria2_data = web::Data::new(aria2::Aria2::new(
        parts.queue.clone(),
        config.storage.download_dir.clone(),
        policy_data.get_ref().clone(),
        guard.clone(),
    ));
    let guard_data = web::Data::new(guard);
    let metrics_data = web::Data::from(parts.metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(queue_data.clone())
            .app_data(library_data.clone())
            .app_data(hub_data.clone())
            .app_data(policy_data.clone())
            .app_data(guard_data.clone())
            .app_data(metrics_data.clone())
            .app_data(aria2_data.clone())
            .app_data(mirror_data.clone())
            .wrap(middleware::from_fn(security::guard))
            .wrap(middleware::from_fn(time_requests))
            .wrap(tracing_actix_web::TracingLogger::<security::RedactedSpans>::new())
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok") }),
            )
            .route("/metrics", web::get().to(metrics_text))
            .configure(|cfg| api::routes(cfg, web::get().to(ws::events)))
            .configure(aria2::routes)
            .configure(mirror::routes)
            .service(actix_files::Files::new("/", &static_dir).index_file("index.html"))
    })
    .on_connect(|conn, data| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            bound_connection(tcp);
            data.insert(conn::Socket(std::os::fd::AsRawFd::as_raw_fd(tcp)));
        }
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}

/// The `[aria2] bind` listener at `addr`: `/jsonrpc` alone, behind the same guard.
fn serve_rpc(
    listener: TcpListener,
    queue: QueueHandle,
    config: &Config,
    addr: SocketAddr,
) -> std::io::Result<Server> {
    let guard = security::Guard::from_config(config, addr.ip().is_loopback());
    let policy = crate::intake::UrlPolicy::new(&config.downloads.allowed_hosts);
    let aria2_data = web::Data::new(aria2::Aria2::new(
        queue,
        config.storage.download_dir.clone(),
        policy,
        guard.clone(),
    ));
    let guard_data = web::Data::new(guard);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(aria2_data.clone())
            .app_data(guard_data.clone())
            .wrap(middleware::from_fn(security::guard))
            .wrap(tracing_actix_web::TracingLogger::<security::RedactedSpans>::new())
            .configure(aria2::routes)
    })
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            bound_connection(tcp);
        }
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}

/// Sets [`WRITE_TIMEOUT`], [`SEND_BUFFER`] and `TCP_NODELAY` on an accepted
/// connection. Without `TCP_NODELAY` the last piece of a streamed answer (a list)
/// waits, by Nagle's rule, for the ACK of the piece before it, which a client's
/// kernel delays by 40 ms: every keep-alive client that polls the list paid 40 ms a
/// request. (An earlier note said it cost 400 stuck pipelining clients 40 MiB more;
/// measured again, `tests/it/slow_clients.rs` peaks at 245-252 MiB with it and
/// 212-252 MiB without: the send buffer bounds what each holds either way.)
#[cfg(target_os = "linux")]
fn bound_connection(tcp: &impl std::os::fd::AsRawFd) {
    let ms = libc::c_uint::try_from(WRITE_TIMEOUT.as_millis()).unwrap_or(libc::c_uint::MAX);
    let bytes = libc::c_int::try_from(SEND_BUFFER).unwrap_or(libc::c_int::MAX);
    let on: libc::c_int = 1;
    let fd = tcp.as_raw_fd();
    for (level, name, value) in [
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms.to_ne_bytes()),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, bytes.to_ne_bytes()),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, on.to_ne_bytes()),
    ] {
        // SAFETY: `fd` is open for the whole call (borrowed from its stream), and the
        // value is the 4-byte integer (`c_uint` or `c_int`) that each option takes.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, option = name, "cannot bound a connection");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn bound_connection(_: &impl std::os::fd::AsRawFd) {}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(
    queue: web::Data<QueueHandle>,
    metrics: web::Data<metrics::Metrics>,
) -> Result<HttpResponse, error::ApiError> {
    let stats = queue.stats().await?;
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
