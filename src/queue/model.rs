//! The download record and its states, as the contract (`api.md`) names them; the state
//! machine that moves between them is `queue::lifecycle`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A download's opaque id: `dl_` + a ULID, stable across restarts.
pub type DownloadId = String;

/// Makes a fresh id; ULIDs sort by creation time, which keeps sled's key order useful.
pub fn new_id() -> DownloadId {
    format!("dl_{}", ulid::Ulid::new())
}

pub use crate::queue::lifecycle::State;
use crate::queue::lifecycle::{Action, Transition};

/// The error kinds of the contract; stable strings that scripts match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Network,
    HttpStatus,
    NotFound,
    Unauthorized,
    ChecksumMismatch,
    Disk,
    RemoteChanged,
    InvalidRequest,
    /// Not in the contract's list: a bug of ours (a crashed task), never the user's fault.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Network => "network",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::ChecksumMismatch => "checksum_mismatch",
            ErrorKind::Disk => "disk",
            ErrorKind::RemoteChanged => "remote_changed",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The `error` field of a download: why it failed, or why it is retrying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DownloadError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Where a download comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Url,
    Hub {
        repo: String,
        /// The revision asked for (a branch, tag or commit).
        revision: String,
        file: String,
        /// The commit `revision` pointed to when the download first resolved: every
        /// later request uses it, so a resumed download never mixes revisions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
}

/// The persisted record of one download. Live numbers (speed, ETA) are not stored:
/// they are merged in from the progress tracker when the record is shown. Empty
/// optional fields are left out of the stored JSON (a third of a queued record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Download {
    pub id: DownloadId,
    pub url: String,
    pub file_name: String,
    /// Relative to `download_dir`, `/`-separated.
    pub path: String,
    pub state: State,
    /// Sort key of the queue; only its order matters.
    pub order: u64,
    pub bytes_done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    pub elapsed_secs: f64,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DownloadError>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_limit_bps: Option<u64>,
    /// Parallel connections for this download (aria2's `split`); `None`: the setting's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Where the bytes came from: `"http"`, or `"xet"` (the Hub's Xet storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Bytes taken from files already on disk instead of the network.
    #[serde(default)]
    pub bytes_reused: u64,
    /// The file it completed (inode, mtime in ns), as the engine renamed it into
    /// place: the library takes a file it finds at `path` for this download's only
    /// while it is still that very file (its own record of the completion may have
    /// been lost to a crash). Not shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_as: Option<[u64; 2]>,
    /// The validators the file was fetched under (kept when it completes), so that
    /// asking again for the same URL can tell with one `HEAD` whether it changed.
    /// Not shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Validators>,
}

/// What told one version of a fetched file from another: its ETag and Last-Modified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// Live numbers of a running download, from the progress tracker.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Live {
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub speed_bps: u64,
    pub eta_secs: Option<u64>,
    pub elapsed_secs: f64,
}

/// A download as the API shows it: the record plus position and live numbers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DownloadView {
    pub id: DownloadId,
    pub url: String,
    pub file_name: String,
    pub path: String,
    pub state: State,
    pub position: Option<usize>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub speed_bps: u64,
    pub eta_secs: Option<u64>,
    pub elapsed_secs: f64,
    pub attempt: u32,
    pub next_retry_at: Option<String>,
    pub sha256: Option<String>,
    pub error: Option<DownloadError>,
    pub source: Source,
    pub speed_limit_bps: Option<u64>,
    /// Parallel connections for this download, when not the setting's.
    pub connections: Option<usize>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `"http"` or `"xet"`: where the bytes come from.
    pub transport: String,
    /// Bytes taken from files already on disk instead of the network (counted in
    /// `bytes_done` too).
    pub bytes_reused: u64,
    /// What the state allows now (`pause`, `resume`, `cancel`, `retry`, `move`,
    /// `delete`), so that clients need no copy of the state machine.
    pub actions: Vec<Action>,
}

impl Download {
    /// Carries out a transition that `lifecycle::apply` decided: the state and the
    /// bookkeeping fields it names. The only place a record's state is assigned.
    pub fn enter(&mut self, t: &Transition, now: &str) {
        self.state = t.to;
        let s = t.stamps;
        match s.finished {
            Some(true) => self.finished_at = Some(now.to_owned()),
            Some(false) => self.finished_at = None,
            None => {}
        }
        if s.started && self.started_at.is_none() {
            self.started_at = Some(now.to_owned());
        }
        if s.clear_error {
            self.error = None;
        }
        if s.reset_attempt {
            self.attempt = 0;
        }
        if s.clear_retry_at {
            self.next_retry_at = None;
        }
    }

    /// Merges live numbers (when running) into the public shape.
    pub fn view(&self, position: Option<usize>, live: Option<Live>) -> DownloadView {
        let (bytes_done, bytes_total, speed_bps, eta_secs, elapsed_secs) = match live {
            Some(l) if self.state.is_running() => (
                l.bytes_done,
                l.bytes_total.or(self.bytes_total),
                l.speed_bps,
                l.eta_secs,
                l.elapsed_secs,
            ),
            _ => (
                self.bytes_done,
                self.bytes_total,
                0,
                None,
                self.elapsed_secs,
            ),
        };
        DownloadView {
            id: self.id.clone(),
            url: crate::http::shown_url(&self.url),
            file_name: self.file_name.clone(),
            path: self.path.clone(),
            state: self.state,
            position,
            bytes_done,
            bytes_total,
            speed_bps,
            eta_secs,
            elapsed_secs,
            attempt: self.attempt,
            next_retry_at: self.next_retry_at.clone(),
            sha256: self.sha256.clone(),
            error: self.error.clone(),
            source: self.source.clone(),
            speed_limit_bps: self.speed_limit_bps,
            connections: self.connections,
            created_at: self.created_at.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            transport: self.transport.clone().unwrap_or_else(|| "http".into()),
            bytes_reused: self.bytes_reused,
            actions: crate::queue::lifecycle::allowed_actions(self.state),
        }
    }
}

/// A new download, validated by its front door except for name conflicts.
#[derive(Debug, Clone)]
pub struct NewDownload {
    pub url: String,
    pub file_name: String,
    /// Relative to `download_dir`, `/`-separated.
    pub path: String,
    pub sha256: Option<String>,
    pub start_paused: bool,
    pub overwrite: bool,
    pub source: Source,
    /// A cap of its own in bytes/s (aria2's `max-download-limit`).
    pub speed_limit_bps: Option<u64>,
    /// Parallel connections of its own (aria2's `split`).
    pub connections: Option<usize>,
}

/// A change to one download (`PATCH /api/downloads/{id}`).
#[derive(Debug, Clone, Default)]
pub struct DownloadPatch {
    /// `Some(None)` removes the cap; `None` leaves it.
    pub speed_limit_bps: Option<Option<u64>>,
    /// A new URL for the same file (an expired link).
    pub url: Option<String>,
}

/// Counts for `GET /api/stats`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub active: usize,
    pub queued: usize,
    pub paused: usize,
    pub completed: usize,
    pub failed: usize,
    pub speed_bps: u64,
    pub bytes_done_total: u64,
    /// Every state with its count (zeros included).
    #[schema(value_type = std::collections::HashMap<String, usize>)]
    pub by_state: std::collections::BTreeMap<&'static str, usize>,
}

/// Now, as RFC 3339 with second precision (`2026-11-24T10:00:00Z`).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before empty fields were left out (with `null`s) still load,
    /// and a record written now loads back the same.
    #[test]
    fn stored_records_of_either_form_load() {
        let old = r#"{"id":"dl_01M89X7MYT037CC0KQBZAWE42C","url":"http://h/x.bin",
            "file_name":"x.bin","path":"x.bin","state":"paused","order":7,"bytes_done":0,
            "bytes_total":null,"elapsed_secs":0.0,"attempt":0,"next_retry_at":null,
            "sha256":null,"error":null,"source":{"kind":"url"},"speed_limit_bps":null,
            "created_at":"2026-11-25T17:49:39Z","started_at":null,"finished_at":null}"#;
        let d: Download = serde_json::from_str(old).unwrap();
        assert_eq!(
            (d.state, d.order, d.sha256.as_deref()),
            (State::Paused, 7, None)
        );
        let now = serde_json::to_string(&d).unwrap();
        assert!(!now.contains("null"), "empty fields are left out: {now}");
        let back: Download = serde_json::from_str(&now).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), now);
    }

    #[test]
    fn ids_are_prefixed_ulids() {
        let id = new_id();
        assert!(id.starts_with("dl_") && id.len() == 29, "{id}");
    }
}
