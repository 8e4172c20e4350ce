//! The registry's refusals, in the Docker registry's (and OCI distribution's) own form:
//! `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"…"}]}` with the spec's status.
//! Ollama shows a 404 as "file does not exist" and any other status with the body, so
//! a refusal that the user can act on is not a 404.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::doors::mirror::MirrorError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `owner/name` is not a repo name.
    #[error("{0}")]
    NameInvalid(String),
    /// No such repo upstream nor in the library.
    #[error("{0}")]
    NameUnknown(String),
    /// A tag that cannot be one (`TAG_INVALID`).
    #[error("{0}")]
    TagInvalid(String),
    /// The repo has nothing the tag names.
    #[error("{0}")]
    ManifestUnknown(String),
    /// What the tag names cannot be an Ollama model (a split GGUF).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    BlobUnknown(String),
    /// The size of the blob, for `Content-Range: bytes */size`.
    #[error("the range asked for is outside the blob ({0} bytes)")]
    RangeNotSatisfiable(u64),
    /// `api_token` is set and the request does not carry it. `realm`: where Ollama's
    /// token request goes (this service, which answers why it cannot have one).
    #[error("this service needs its api_token (Authorization: Bearer <api_token>)")]
    Unauthorized { realm: Option<String> },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// The spec's code. `RANGE_INVALID`, `UPSTREAM` and `UNAVAILABLE` are ours: the
    /// spec has none for these.
    fn code(&self) -> &'static str {
        match self {
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::TagInvalid(_) => "TAG_INVALID",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::RangeNotSatisfiable(_) => "RANGE_INVALID",
            RegistryError::Unauthorized { .. } => "UNAUTHORIZED",
            RegistryError::Denied(_) => "DENIED",
            RegistryError::TooManyRequests(_) => "TOOMANYREQUESTS",
            RegistryError::Upstream(_) => "UPSTREAM",
            RegistryError::Unavailable(_) => "UNAVAILABLE",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        match self {
            RegistryError::NameInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::Unsupported(_)
            | RegistryError::DigestInvalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::NameUnknown(_)
            | RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown(_) => StatusCode::NOT_FOUND,
            RegistryError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            RegistryError::Denied(_) => StatusCode::FORBIDDEN,
            RegistryError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::Upstream(_) => StatusCode::BAD_GATEWAY,
            RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            RegistryError::Unauthorized { realm } => {
                // Ollama reads realm, service and scope (server/images.go,
                // parseRegistryChallenge) and asks the realm, on this very host only
                // (server/auth.go, getAuthorizationToken), for a token.
                let challenge = match realm {
                    Some(realm) => {
                        format!("Bearer realm=\"{realm}\",service=\"model-manager\",scope=\"\"")
                    }
                    None => "Bearer service=\"model-manager\"".to_owned(),
                };
                response.insert_header(("WWW-Authenticate", challenge));
            }
            RegistryError::RangeNotSatisfiable(size) => {
                response.insert_header(("Content-Range", format!("bytes */{size}")));
            }
            _ => {}
        }
        response.json(serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.to_string() }]
        }))
    }
}

impl From<MirrorError> for RegistryError {
    /// The mirror's refusals (a miss pulled through) in the registry's terms.
    fn from(e: MirrorError) -> Self {
        let message = e.to_string();
        match e {
            MirrorError::Unauthorized => RegistryError::Unauthorized { realm: None },
            MirrorError::Forbidden(_) | MirrorError::Gated(_) => RegistryError::Denied(message),
            MirrorError::BadRequest(_) | MirrorError::Conflict(_) => {
                RegistryError::Unsupported(message)
            }
            MirrorError::RepoNotFound(_) => RegistryError::NameUnknown(message),
            MirrorError::RevisionNotFound(_) | MirrorError::EntryNotFound(_) => {
                RegistryError::BlobUnknown(message)
            }
            MirrorError::RangeNotSatisfiable(size) => RegistryError::RangeNotSatisfiable(size),
            MirrorError::RateLimited(_) => RegistryError::TooManyRequests(message),
            MirrorError::Upstream(_) => RegistryError::Upstream(message),
            MirrorError::Unavailable(_) => RegistryError::Unavailable(message),
            MirrorError::Internal(_) => RegistryError::Internal(message),
        }
    }
}

impl From<crate::hub::HubError> for RegistryError {
    fn from(e: crate::hub::HubError) -> Self {
        MirrorError::from(e).into()
    }
}
