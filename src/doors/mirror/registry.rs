//! Ollama's registry protocol (Docker registry v2, as `ollama pull` speaks it) for Hub
//! models, on the main port: `ollama pull --insecure box:8080/owner/name:Q4_K_M` gets
//! what `ollama pull hf.co/owner/name:Q4_K_M` gets from the Hub, and a model crosses
//! the internet once for a whole LAN.
//!
//! The mirror's second protocol: a manifest is made here from the GGUF ([`derive`]),
//! the model blob is the library's file or a miss pulled through exactly as `/hf` pulls
//! one (one download of the queue, followed by every client).
//!
//! Ollama sends no credentials it could be given: on a `401` it signs a token request
//! with its own key (`~/.ollama/id_ed25519`, `server/auth.go`), and its ranged blob
//! requests carry nothing at all (`server/download.go`, `http.DefaultClient`). So
//! without `api_token` the registry answers everyone (as `/hf` does); with one, every
//! request needs `Authorization: Bearer <api_token>`, and Ollama's token request is
//! answered with why it cannot have one, unless `[server] open_ollama_registry` opens
//! the registry (read-only, Hub models) to whoever reaches the port.

mod automap;
mod blob;
mod derive;
mod error;
mod header;
mod manifest;
mod pick;
mod source;

pub use error::RegistryError;

use actix_web::http::header::{AUTHORIZATION, HOST};
use actix_web::{guard, web, HttpRequest, HttpResponse};

use crate::doors::mirror::Mirror;

/// Registers the `/v2` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let headers = actix_web::middleware::DefaultHeaders::new()
        .add(("Docker-Distribution-API-Version", "registry/2.0"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Content-Security-Policy", "default-src 'none'; sandbox"));
    let get_or_head = || guard::Any(guard::Get()).or(guard::Head());
    let scope = web::scope("/v2")
        .wrap(headers)
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| RegistryError::NameInvalid(e.to_string()).into()),
        )
        .service(web::resource(["", "/"]).route(web::get().to(ping)).default_service(web::to(unsupported)))
        .service(web::resource("/token").route(web::get().to(token)).default_service(web::to(unsupported)))
        .service(
            web::resource("/{owner}/{name}/manifests/{tag}")
                .route(web::route().guard(get_or_head()).to(manifest::manifest))
                .default_service(web::to(unsupported)),
        )
        .service(
            web::resource("/{owner}/{name}/blobs/{digest}")
                .route(web::route().guard(get_or_head()).to(blob::blob))
                .default_service(web::to(unsupported)),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(RegistryError::NameUnknown(
                "no such route: this registry serves /v2/{owner}/{name}/manifests/{tag} and /v2/{owner}/{name}/blobs/{digest} of Hub models".into(),
            ))
        }));
    cfg.service(scope);
}

/// `GET /v2/`: the registry's ping (Docker clients, `oras`); `{}`.
async fn ping(req: HttpRequest) -> Result<HttpResponse, RegistryError> {
    authorize(&req)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// The realm of the `401`'s challenge, which Ollama asks for a token.
async fn token(req: HttpRequest) -> Result<HttpResponse, RegistryError> {
    if token_of(&req)?.is_none() {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "token": "" })));
    }
    Err(RegistryError::Denied(
        "this model-manager has an api_token, and Ollama cannot send one (it signs its token \
         requests with its own key, which this service does not check): its owner can set \
         [server] open_ollama_registry = true to let Ollama pull Hub models without it"
            .into(),
    ))
}

/// Pushing and the like: this registry only serves.
async fn unsupported() -> Result<HttpResponse, RegistryError> {
    Err(RegistryError::Unsupported(
        "this registry only serves Hub models (GET and HEAD)".into(),
    ))
}

/// The service's `api_token`, if it has one.
fn token_of(req: &HttpRequest) -> Result<Option<std::sync::Arc<str>>, RegistryError> {
    let mirror = req
        .app_data::<web::Data<Mirror>>()
        .ok_or_else(|| RegistryError::Internal("the mirror is not configured".into()))?;
    Ok(mirror.registry_token.clone())
}

/// Compares without an early exit, so that timing does not tell how much of a token
/// was right (`doors::security` has the same; a door may not name it from here, as
/// `security` names the mirror).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Refuses a request without the `api_token`, when the service has one.
fn authorize(req: &HttpRequest) -> Result<(), RegistryError> {
    let Some(token) = token_of(req)? else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| {
            // The scheme is case-insensitive (RFC 9110 §11.1), as the rest of the service reads it.
            a.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("Bearer "))
                .map(|_| &a[7..])
        });
    if given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
        return Ok(());
    }
    // Ollama asks the realm only on the very host it asked (`server/auth.go`), so the
    // realm names the `Host` the client sent, when it is a plain host[:port].
    let realm = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 300
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(|h| {
            // The scheme a client's forwarded headers claim is not written into the
            // challenge as it came (`javascript`, quotes): http, or https when said so.
            let scheme = match req.connection_info().scheme() {
                "https" => "https",
                _ => "http",
            };
            format!("{scheme}://{h}/v2/token")
        });
    Err(RegistryError::Unauthorized { realm })
}

/// `owner/name`, checked as every Hub repo name is.
fn repo(owner: &str, name: &str) -> Result<String, RegistryError> {
    let repo = format!("{owner}/{name}");
    crate::hub::validate_repo(&repo).map_err(RegistryError::NameInvalid)?;
    Ok(repo)
}

/// A tag as the Docker registry spells one (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
/// Ollama's are a subset (`types/model/name.go`, `isValidPart`).
fn check_tag(tag: &str) -> Result<(), RegistryError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = (1..=128).contains(&tag.len())
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        return Ok(());
    }
    Err(RegistryError::TagInvalid(format!(
        "{:?} is not a tag (letters, digits, _, . and -, up to 128)",
        tag.chars().take(140).collect::<String>()
    )))
}
