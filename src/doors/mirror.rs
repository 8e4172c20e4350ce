//! The LAN mirror: the HuggingFace Hub's own routes under `/hf`, so that other machines
//! keep their usual tools (`HF_ENDPOINT=http://box:8080/hf`, llama.cpp's
//! `MODEL_ENDPOINT`) and a model crosses the internet once.
//!
//! A file in the library is served from disk with the Hub's headers; a miss becomes an
//! ordinary download of the queue, streamed to its clients from the growing `.part` as
//! its bytes become durable. Model info and trees come from the upstream Hub when it
//! answers (with the service's own token, never a client's), else from the library.
//! The mirror only reads: nothing here changes the queue but adding a download.

mod headers;
mod heads;
mod info;
mod links;
mod local;
mod pull;
mod range;
mod registry;
mod resolve;
mod stream;
mod uplink;
mod upstream;

use actix_web::web;

use crate::actors::handle::QueueHandle;
use crate::hub::{HubClient, HubError};
use crate::library::LibraryHandle;

/// What the mirror's handlers reach: the queue, the library and the upstream Hub.
#[derive(Clone)]
pub struct Mirror {
    pub queue: QueueHandle,
    pub library: LibraryHandle,
    pub hub: HubClient,
    /// `download_dir`: every file the mirror reads is opened below it without
    /// following a link (`files::open_regular`).
    pub download_dir: std::path::PathBuf,
    /// `[server] trusted_proxies`: the peers whose forwarded headers are believed.
    pub trusted_proxies: std::sync::Arc<[std::net::IpAddr]>,
    /// Each repo's `main` as the upstream's `refs` last named it.
    pub heads: std::sync::Arc<heads::Heads>,
    /// Whether the upstream answered lately (a silent one is not waited for when the
    /// library can answer).
    pub uplink: std::sync::Arc<uplink::Uplink>,
    /// The token the registry under `/v2` asks for (it checks it itself, to refuse in
    /// the registry's own form): `[server] api_token`, unless `open_ollama_registry`.
    pub registry_token: Option<std::sync::Arc<str>>,
}

/// A refusal of the mirror, answered in the Hub's own error form (`{"error": "..."}`
/// with `X-Error-Code` and `X-Error-Message`), which `huggingface_hub` turns into its
/// typed exceptions (`crate::doors::error` makes the answer, and lifts the other layers'
/// errors into it).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// llama.cpp shows the `error` of this answer; it sends a token on `refs` and
    /// `tree` only when the token is shaped like a Hub token (`hub::is_hub_shaped_token`).
    #[error("Invalid credentials in Authorization header: send this service's api_token as your HF_TOKEN (llama.cpp sends HF_TOKEN only when it is shaped like a Hub token: hf_ then letters and digits, 37 to 256 characters in all; it drops any other, so such a service needs an api_token of that shape)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    RepoNotFound(String),
    #[error("{0}")]
    RevisionNotFound(String),
    #[error("{0}")]
    EntryNotFound(String),
    #[error("{0}")]
    Gated(String),
    #[error("{0}")]
    Conflict(String),
    /// The size of the file, for `Content-Range: bytes */size`.
    #[error("the range asked for is outside the file ({0} bytes)")]
    RangeNotSatisfiable(u64),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<HubError> for MirrorError {
    fn from(e: HubError) -> Self {
        let message = e.to_string();
        match e {
            HubError::NotFound(_) => MirrorError::EntryNotFound(message),
            HubError::Unauthorized(_) => MirrorError::Gated(message),
            HubError::RateLimited { .. } => MirrorError::RateLimited(message),
            HubError::Status { .. } | HubError::Network(_) | HubError::Invalid(_) => {
                MirrorError::Upstream(message)
            }
        }
    }
}

/// Whether a (normalized) request path is the mirror's.
pub fn is_mirror_path(path: &str) -> bool {
    path == "/hf" || path.starts_with("/hf/")
}

/// Checks `owner/name` and a file path the way the rest of the service does, so that
/// nothing outside `download_dir` can be named.
fn checked(owner: &str, name: &str, file: Option<&str>) -> Result<String, MirrorError> {
    let repo = format!("{owner}/{name}");
    crate::hub::validate_repo(&repo).map_err(MirrorError::RepoNotFound)?;
    if let Some(file) = file {
        crate::files::validate_relative_path(file)
            .map_err(|e| MirrorError::EntryNotFound(format!("{file:?}: {e}")))?;
    }
    Ok(repo)
}

/// Checks a revision of a request (a miss must never reach the Hub, or name a
/// folder, with one that git would refuse).
fn checked_revision(rev: &str) -> Result<(), MirrorError> {
    crate::hub::validate_revision(rev).map_err(MirrorError::RevisionNotFound)
}

/// Registers the `/hf` routes of the contract.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Nothing under /hf is a page: a browser sent here by another site must never
    // sniff an answer into HTML or run it on this origin.
    let not_a_page = actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Content-Security-Policy", "default-src 'none'; sandbox"));
    let scope = web::scope("/hf")
        .wrap(not_a_page)
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| MirrorError::EntryNotFound(e.to_string()).into()),
        )
        .route(
            "/api/models/{owner}/{name}",
            web::get().to(info::model_info),
        )
        .route(
            "/api/models/{owner}/{name}/revision/{rev}",
            web::get().to(info::model_info_at),
        )
        .route("/api/models/{owner}/{name}/refs", web::get().to(info::refs))
        .route(
            "/api/models/{owner}/{name}/tree/{rev}",
            web::get().to(info::tree_root),
        )
        .route(
            "/api/models/{owner}/{name}/tree/{rev}/{path:.*}",
            web::get().to(info::tree),
        )
        .route(
            "/{owner}/{name}/resolve/{rev}/{file:.+}",
            web::route()
                .guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
                .to(resolve::resolve),
        )
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(MirrorError::EntryNotFound(
                "Sorry, we can't find the page you are looking for.".into(),
            ))
        }));
    cfg.service(scope);
    // Ollama's registry protocol for the same Hub models, under `/v2`.
    registry::routes(cfg);
}
