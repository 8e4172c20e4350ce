//! aria2's JSON-RPC: `/jsonrpc` over HTTP (POST, and GET with base64 params) and a
//! websocket that also carries aria2's notifications, so that aria2 front-ends (AriaNg,
//! aria2p, browser extensions) drive the queue. One more front door on [`QueueHandle`]:
//! it keeps no queue and no state machine of its own, only a GID → id index.

mod control;
mod gid;
mod methods;
mod notify;
mod options;
mod rpc;
mod status;
mod ws;

use std::path::PathBuf;

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::handle::QueueHandle;
use crate::doors::security::Guard;
use crate::intake::{IntakeError, UrlPolicy};

pub use gid::gid_of;

/// An aria2 error as aria2 gives it: `{"code": 1, "message": "..."}` for a method
/// error; the JSON-RPC codes for a request that is not JSON or not JSON-RPC.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// A method error (code 1), as aria2 answers every failed call.
    pub fn method(message: impl Into<String>) -> Self {
        RpcError {
            code: 1,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::method("Unauthorized")
    }
}

impl From<crate::actors::queue_error::QueueError> for RpcError {
    fn from(e: crate::actors::queue_error::QueueError) -> Self {
        RpcError::method(e.to_string())
    }
}

/// aria2's form of intake's refusals: a method error, naming aria2's own option where
/// the message names one (`out`).
impl From<IntakeError> for RpcError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::NoFileName(url) => {
                RpcError::method(format!("{url} names no file; give \"out\""))
            }
            IntakeError::FileName(why) => RpcError::method(format!("out: {why}")),
            other => RpcError::method(other.to_string()),
        }
    }
}

/// What the RPC needs: the queue, where files go, the secret and the URL policy.
pub struct Aria2 {
    queue: QueueHandle,
    gids: gid::GidIndex,
    /// Absolute: aria2 clients read `dir` and `files[].path` as paths.
    download_dir: PathBuf,
    /// `server.api_token`; `None`: no secret.
    token: Option<String>,
    policy: UrlPolicy,
    guard: Guard,
}

impl Aria2 {
    pub fn new(queue: QueueHandle, download_dir: PathBuf, policy: UrlPolicy, guard: Guard) -> Self {
        let download_dir = download_dir.canonicalize().unwrap_or(download_dir);
        Aria2 {
            queue,
            gids: gid::GidIndex::default(),
            download_dir,
            token: guard.token.clone(),
            policy,
            guard,
        }
    }
}

/// Mounts `/jsonrpc` (POST, GET and websocket, OPTIONS for the CORS preflight).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jsonrpc", web::post().to(rpc::post))
        .route("/jsonrpc", web::get().to(get))
        .route("/jsonrpc", web::method(Method::OPTIONS).to(rpc::preflight));
}

/// `GET /jsonrpc`: the websocket, or a call in the query.
async fn get(
    req: HttpRequest,
    payload: web::Payload,
    aria2: web::Data<Aria2>,
) -> Result<HttpResponse, actix_web::Error> {
    if req.headers().contains_key(header::UPGRADE) {
        return ws::open(req, payload, aria2).await;
    }
    Ok(rpc::get(req, aria2).await)
}

#[cfg(test)]
mod tests {
    use super::RpcError;
    use crate::intake::{parse_sha256, IntakeError, UrlFile, UrlPolicy};

    /// Intake's refusals as aria2 answers them: method errors (code 1), naming aria2's
    /// own option (`out`) where REST names `file_name`.
    #[test]
    fn intake_refusals_are_method_errors_naming_aria2s_options() {
        let policy = UrlPolicy::default();
        let refused = |url: &'static str, out: Option<&str>| -> RpcError {
            let file = UrlFile {
                url,
                file_name: out.map(str::to_owned),
                ..UrlFile::default()
            };
            file.new_download(&policy).unwrap_err().into()
        };
        assert_eq!(
            refused("http://h/", None),
            RpcError::method("http://h/ names no file; give \"out\"")
        );
        let e = refused("http://h/x", Some(".x"));
        assert!(
            e.code == 1 && e.message.starts_with("out: name \".x\""),
            "{e:?}"
        );
        let e = refused("file:///etc/passwd", None);
        assert_eq!(
            e,
            RpcError::method("url scheme \"file\" is refused: only http and https")
        );
        let e: RpcError = parse_sha256("zz").unwrap_err().into();
        assert_eq!(e, RpcError::method("sha256 \"zz\" is not 64 hex digits"));
        let e: RpcError = IntakeError::HubName("repo \"x\" is not owner/name".into()).into();
        assert_eq!(e, RpcError::method("repo \"x\" is not owner/name"));
    }
}
