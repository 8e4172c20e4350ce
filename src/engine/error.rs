//! Errors of one transfer attempt, and what they mean for retrying.

use std::time::Duration;

use crate::hub::HubError;
use crate::queue::model::{DownloadError, ErrorKind};
use crate::queue::store::StoreError;

/// Why an attempt (or the whole download) failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("HTTP {status}{}", reason_suffix(*status))]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("no data for {0} s: connection stalled")]
    Stalled(u64),
    #[error("{bps} bytes/s for {secs} s, below min_speed_bps ({min}): connection stalled")]
    TooSlow { bps: u64, min: u64, secs: u64 },
    #[error("HTTP {status}: a redirect to {location:?}, which is not followed: {why}")]
    Redirect {
        status: u16,
        location: String,
        why: String,
    },
    #[error("{0}")]
    NotAllowed(String),
    #[error("the .part was deleted or replaced under the transfer; starting over")]
    PartGone,
    #[error("the .part does not hold the bytes received ({0}): something else wrote it")]
    PartTampered(String),
    #[error("{0} is being written by another download or process")]
    PartBusy(String),
    #[error("server answered a range we did not ask for: {0}")]
    BadContentRange(String),
    #[error("body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("server sent more than the {expected} bytes it announced")]
    Overlong { expected: u64 },
    #[error("disk: {0}")]
    Disk(#[from] std::io::Error),
    #[error(
        "not enough free space: {} needed, {} free in download_dir",
        crate::units::bytes(*need),
        crate::units::bytes(*free)
    )]
    NoSpace { need: u64, free: u64 },
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    #[error("{0}")]
    Hub(#[from] crate::hub::HubError),
}

fn reason_suffix(status: u16) -> String {
    match status {
        401 | 403 => " (unauthorized: the file is private or gated; a token is needed)".into(),
        404 | 410 => " (not found)".into(),
        429 => " (too many requests)".into(),
        _ => String::new(),
    }
}

impl EngineError {
    /// Worth another attempt: the network, 5xx, 408 and 429, a stall, a short body.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            EngineError::Network(_)
            | EngineError::Stalled(_)
            | EngineError::TooSlow { .. }
            | EngineError::PartGone
            | EngineError::PartTampered(_)
            | EngineError::BadContentRange(_)
            | EngineError::Truncated { .. }
            | EngineError::Overlong { .. } => true,
            EngineError::Hub(h) => h.is_transient(),
            EngineError::Disk(_)
            | EngineError::NoSpace { .. }
            | EngineError::Redirect { .. }
            | EngineError::NotAllowed(_)
            | EngineError::PartBusy(_)
            | EngineError::Checksum { .. }
            | EngineError::Store(_)
            | EngineError::Internal(_) => false,
        }
    }

    /// The server's own idea of when to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::Status { retry_after, .. } => *retry_after,
            EngineError::Hub(h) => h.retry_after(),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Status {
                status: 404 | 410, ..
            } => ErrorKind::NotFound,
            EngineError::Status {
                status: 401 | 403, ..
            } => ErrorKind::Unauthorized,
            EngineError::Status { .. }
            | EngineError::BadContentRange(_)
            | EngineError::Redirect { .. }
            | EngineError::NotAllowed(_) => ErrorKind::HttpStatus,
            EngineError::Network(_)
            | EngineError::Stalled(_)
            | EngineError::TooSlow { .. }
            | EngineError::Truncated { .. }
            | EngineError::Overlong { .. } => ErrorKind::Network,
            EngineError::Disk(_)
            | EngineError::NoSpace { .. }
            | EngineError::Store(_)
            | EngineError::PartGone
            | EngineError::PartTampered(_)
            | EngineError::PartBusy(_) => ErrorKind::Disk,
            EngineError::Checksum { .. } => ErrorKind::ChecksumMismatch,
            EngineError::Internal(_) => ErrorKind::Internal,
            EngineError::Hub(h) => match h {
                HubError::NotFound(_) => ErrorKind::NotFound,
                HubError::Unauthorized(_) => ErrorKind::Unauthorized,
                HubError::RateLimited { .. } | HubError::Status { .. } | HubError::Invalid(_) => {
                    ErrorKind::HttpStatus
                }
                HubError::Network(_) => ErrorKind::Network,
            },
        }
    }

    /// The error as a download shows it: its kind, and a message that does not name
    /// the kind again (shown together, `network: network: …` read as a stutter).
    pub fn to_download_error(&self) -> DownloadError {
        let kind = self.kind();
        let text = self.to_string();
        let message = text
            .strip_prefix(kind.as_str())
            .and_then(|rest| rest.strip_prefix(": "))
            .map_or_else(|| text.clone(), str::to_owned);
        DownloadError { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_error_names_its_kind_once_and_sizes_in_binary_units() {
        let d = EngineError::NoSpace {
            need: 100_663_296,
            free: 67_108_864,
        }
        .to_download_error();
        assert_eq!(d.kind, ErrorKind::Disk);
        assert_eq!(
            d.message,
            "not enough free space: 96 MiB needed, 64 MiB free in download_dir"
        );
        let d = EngineError::Network("connection refused".into()).to_download_error();
        assert_eq!(
            (d.kind, d.message.as_str()),
            (ErrorKind::Network, "connection refused")
        );
        let d =
            EngineError::Disk(std::io::Error::other("No space left on device")).to_download_error();
        assert_eq!(
            (d.kind, d.message.as_str()),
            (ErrorKind::Disk, "No space left on device")
        );
        let d = EngineError::Internal("a task died".into()).to_download_error();
        assert_eq!(d.message, "a task died");
    }
}
