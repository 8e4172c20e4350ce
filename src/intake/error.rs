//! Why a request cannot become a download: domain reasons, in no door's protocol.

use crate::hub::HubError;

/// A request refused by intake. Each door maps it to its own error form (REST's
/// `{"error": {"code", "message"}}`, aria2's JSON-RPC error, the mirror's Hub errors).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A digest that is not 64 hex digits.
    #[error("sha256 {0:?} is not 64 hex digits")]
    Sha256(String),
    /// A URL that is not an absolute `http`/`https` URL with a host, or whose host the
    /// policy does not allow (the message says which).
    #[error("{0}")]
    Url(String),
    /// The URL's path names no file and no name was given (the URL as given).
    #[error("{0} names no file")]
    NoFileName(String),
    /// The file name given (or taken from the URL) is refused (why).
    #[error("{0}")]
    FileName(String),
    /// A repo, revision or file of the Hub that is refused (why).
    #[error("{0}")]
    HubName(String),
    /// The repo has no quantization of that name.
    #[error("{repo} has no {wanted} quantization; it has: {has}")]
    NoQuantization {
        repo: String,
        wanted: String,
        /// The names it has, `, `-separated, or `none`.
        has: String,
    },
    /// The Hub could not answer what intake asked it.
    #[error(transparent)]
    Hub(#[from] HubError),
}
