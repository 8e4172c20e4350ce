//! Why the queue refused a command, in its own terms; `error.rs` maps these to HTTP
//! and each front door to its own protocol.

use crate::queue::lifecycle::Refusal;
use crate::queue::line::NameTaken;
use crate::queue::model::DownloadId;
use crate::queue::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no download with id {0}")]
    NotFound(DownloadId),
    /// The download's state does not allow the action.
    #[error("download {id} is {}; {}", refusal.state.as_str(), refusal.hint())]
    NotAllowed { id: DownloadId, refusal: Refusal },
    #[error(transparent)]
    NameTaken(#[from] NameTaken),
    #[error("{0}")]
    InvalidSetting(String),
    /// `after` names no download.
    #[error("after: no download with id {0}")]
    UnknownCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The supervisor does not answer (stopped, or its mailbox closed).
    #[error("the queue is not answering: {0}")]
    Unavailable(String),
}

impl From<actix::MailboxError> for QueueError {
    fn from(e: actix::MailboxError) -> Self {
        tracing::error!(error = %e, "supervisor unreachable");
        QueueError::Unavailable(e.to_string())
    }
}
