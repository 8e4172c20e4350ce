//! The one place that knows HTTP: every error of every layer becomes
//! `{"error": {"code", "message"}}` with a fitting status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::queue_error::QueueError;
use crate::doors::mirror::MirrorError;
use crate::queue::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong API token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unprocessable(String),

    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The Hub refused us (gated or private): 403, so that it is never mistaken for a
    /// wrong token of our own API (401).
    #[error("{0}")]
    HubUnauthorized(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    BadGateway(String),
}

impl ApiError {
    /// The stable machine code of the contract.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable(_) => "invalid_request",

            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::HubUnauthorized(_) => "unauthorized",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::BadGateway(_) => "hub_unavailable",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,

            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::HubUnauthorized(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
            },
        })
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let message = e.to_string();
        match e {
            QueueError::NotFound(_) => ApiError::NotFound(message),
            QueueError::NotAllowed { .. } | QueueError::NameTaken(_) => ApiError::Conflict(message),
            QueueError::InvalidSetting(_) | QueueError::UnknownCursor(_) => {
                ApiError::BadRequest(message)
            }
            QueueError::Store(s) => s.into(),
            QueueError::ShuttingDown | QueueError::Unavailable(_) => ApiError::Unavailable(message),
        }
    }
}

impl From<crate::library::LibraryError> for ApiError {
    fn from(e: crate::library::LibraryError) -> Self {
        use crate::library::LibraryError as L;
        let message = e.to_string();
        match e {
            L::NotFound(_) => ApiError::NotFound(message),
            L::Busy { .. } | L::NoUpdate(_) | L::Changed(_) => ApiError::Conflict(message),
            L::BadPath(..) => ApiError::Unprocessable(message),
            L::Store(s) => s.into(),
            L::Queue(q) => q.into(),
            L::Io(_) | L::Join(_) => ApiError::Internal(message),
        }
    }
}

/// REST's form of intake's refusals (the terminal shows the same): a digest is 400, a
/// refused URL or name 422, an unknown quantization 404, the Hub's failures as below.
impl From<crate::intake::IntakeError> for ApiError {
    fn from(e: crate::intake::IntakeError) -> Self {
        use crate::intake::IntakeError as I;
        let message = e.to_string();
        match e {
            I::Sha256(_) => ApiError::BadRequest(message),
            I::Url(_) | I::HubName(_) => ApiError::Unprocessable(message),
            I::NoFileName(url) => {
                ApiError::Unprocessable(format!("{url} names no file; give \"file_name\""))
            }
            I::FileName(why) => ApiError::Unprocessable(format!("file_name: {why}")),
            I::NoQuantization { .. } => ApiError::NotFound(message),
            I::Hub(h) => h.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        ApiError::Internal(format!("storage failure: {e}"))
    }
}

impl From<actix_web::error::JsonPayloadError> for ApiError {
    fn from(e: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::JsonPayloadError as J;
        match e {
            J::OverflowKnownLength { limit, .. } | J::Overflow { limit } => {
                ApiError::PayloadTooLarge(limit)
            }
            J::ContentType => ApiError::UnsupportedMediaType,
            J::Deserialize(d) => ApiError::BadRequest(format!("invalid JSON body: {d}")),
            other => ApiError::BadRequest(format!("invalid body: {other}")),
        }
    }
}

impl From<crate::hub::HubError> for ApiError {
    fn from(e: crate::hub::HubError) -> Self {
        use crate::hub::HubError as H;
        match e {
            H::NotFound(m) => ApiError::NotFound(m),
            H::Unauthorized(m) => ApiError::HubUnauthorized(m),
            H::RateLimited { .. } => ApiError::RateLimited(e.to_string()),
            H::Status { .. } | H::Network(_) | H::Invalid(_) => ApiError::BadGateway(e.to_string()),
        }
    }
}

/// The error shape of the contract, as documented in the OpenAPI description.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code` is a stable machine string; `message` is for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ResponseError for crate::doors::mirror::MirrorError {
    fn status_code(&self) -> StatusCode {
        use crate::doors::mirror::MirrorError as M;
        match self {
            M::Unauthorized => StatusCode::UNAUTHORIZED,
            M::Forbidden(_) | M::Gated(_) => StatusCode::FORBIDDEN,
            M::BadRequest(_) => StatusCode::BAD_REQUEST,
            M::RepoNotFound(_) | M::RevisionNotFound(_) | M::EntryNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            M::Conflict(_) => StatusCode::CONFLICT,
            M::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            M::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            M::Upstream(_) => StatusCode::BAD_GATEWAY,
            M::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            M::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Hub's own form: `huggingface_hub` reads `X-Error-Code` (its typed errors)
    /// and `X-Error-Message` (a HEAD has no body) before the JSON `error`.
    fn error_response(&self) -> HttpResponse {
        use crate::doors::mirror::MirrorError as M;
        let code = match self {
            M::RepoNotFound(_) => Some("RepoNotFound"),
            M::RevisionNotFound(_) => Some("RevisionNotFound"),
            M::EntryNotFound(_) => Some("EntryNotFound"),
            M::Gated(_) => Some("GatedRepo"),
            _ => None,
        };
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        if let Some(code) = code {
            response.insert_header(("X-Error-Code", code));
        }
        // A header value holds visible ASCII only.
        let one_line: String = message
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect();
        response.insert_header(("X-Error-Message", one_line));
        match self {
            M::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            M::RangeNotSatisfiable(size) => {
                response.insert_header(("Content-Range", format!("bytes */{size}")));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": message }))
    }
}

impl From<crate::doors::error::ApiError> for MirrorError {
    fn from(e: crate::doors::error::ApiError) -> Self {
        use crate::doors::error::ApiError as A;
        let message = e.to_string();
        match e {
            A::Unauthorized => MirrorError::Unauthorized,
            A::Forbidden(_) | A::HubUnauthorized(_) => MirrorError::Forbidden(message),
            A::NotFound(_) => MirrorError::EntryNotFound(message),
            A::Conflict(_) => MirrorError::Conflict(message),
            A::RateLimited(_) => MirrorError::RateLimited(message),
            A::BadGateway(_) => MirrorError::Upstream(message),
            A::Unavailable(_) => MirrorError::Unavailable(message),
            A::BadRequest(_)
            | A::PayloadTooLarge(_)
            | A::UnsupportedMediaType
            | A::Unprocessable(_) => MirrorError::BadRequest(message),
            A::Internal(_) => MirrorError::Internal(message),
        }
    }
}

impl From<crate::actors::queue_error::QueueError> for MirrorError {
    fn from(e: crate::actors::queue_error::QueueError) -> Self {
        crate::doors::error::ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;
    use crate::intake::{parse_sha256, IntakeError, UrlFile, UrlPolicy};

    fn rest(e: IntakeError) -> (u16, &'static str, String) {
        let e = ApiError::from(e);
        let status = actix_web::ResponseError::status_code(&e).as_u16();
        (status, e.code(), e.to_string())
    }

    /// Intake's refusals in REST's form: the statuses, codes and messages the routes
    /// gave before intake existed (naming REST's own field, `file_name`).
    #[test]
    fn intake_refusals_keep_their_rest_form() {
        let policy = UrlPolicy::new(&["example.com".to_owned()]);
        let url = |url: &'static str, name: Option<&str>| {
            let file = UrlFile {
                url,
                file_name: name.map(str::to_owned),
                ..UrlFile::default()
            };
            rest(file.new_download(&policy).unwrap_err())
        };
        assert_eq!(
            rest(parse_sha256("abc").unwrap_err()),
            (
                400,
                "bad_request",
                "sha256 \"abc\" is not 64 hex digits".into()
            )
        );
        assert_eq!(
            url("https://example.com/", None),
            (
                422,
                "invalid_request",
                "https://example.com/ names no file; give \"file_name\"".into()
            )
        );
        let (status, code, message) = url("https://example.com/x", Some(".hidden"));
        assert_eq!((status, code), (422, "invalid_request"));
        assert!(
            message.starts_with("file_name: name \".hidden\""),
            "{message}"
        );
        let (status, code, message) = url("https://elsewhere.example/x", None);
        assert_eq!((status, code), (422, "invalid_request"));
        assert!(
            message.starts_with("host elsewhere.example:443 is not allowed"),
            "{message}"
        );
        let none = IntakeError::NoQuantization {
            repo: "o/r".into(),
            wanted: "Q9".into(),
            has: "none".into(),
        };
        assert_eq!(
            rest(none),
            (
                404,
                "not_found",
                "o/r has no Q9 quantization; it has: none".into()
            )
        );
        let bad_repo = crate::intake::hub::repo("o", "").unwrap_err();
        assert_eq!(rest(bad_repo).0, 422);
    }
}
