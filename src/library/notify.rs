//! The `library` websocket frame: what changed in the library since the last one.
//!
//! `{"type": "library", "files": [...], "removed": [...], "refetch": false,
//!   "bytes_total": n, "bytes_saved_by_links": n, "bytes_free": n}`: `files` are the
//! changed files in full; after a change of more than [`MAX_FILES`] files (a first
//! scan) `files` is empty and `refetch` asks clients to read `GET /api/library`.

use std::collections::BTreeSet;

use serde::Serialize;

use super::owner::Index;
use super::record::LibraryFile;

/// More changed files than this in one frame: clients refetch instead.
const MAX_FILES: usize = 100;

/// Where the frames go (the broadcaster, in the service).
pub(super) type Sink = Box<dyn Fn(String) + Send>;

/// What changed since the last frame; kept by the owner task of the index.
#[derive(Default)]
pub(super) struct Notifier {
    to: Option<Sink>,
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    files: &'a [LibraryFile],
    removed: Vec<String>,
    refetch: bool,
    bytes_total: u64,
    bytes_saved_by_links: u64,
    bytes_free: Option<u64>,
}

impl Notifier {
    pub(super) fn new(to: Option<Sink>) -> Notifier {
        Notifier {
            to,
            ..Notifier::default()
        }
    }

    pub(super) fn changed(&mut self, path: &str) {
        self.changed.insert(path.to_owned());
    }

    pub(super) fn removed(&mut self, path: &str) {
        self.removed.insert(path.to_owned());
    }

    /// Sends one frame for everything changed since the last one (nothing if nothing).
    /// `listing`: the totals of the listing and the free bytes now.
    pub(super) fn flush(
        &mut self,
        index: &Index,
        view: impl Fn(&str, &super::record::Record) -> LibraryFile,
        listing: impl FnOnce() -> (u64, u64, Option<u64>),
    ) {
        let (changed, removed) = (
            std::mem::take(&mut self.changed),
            std::mem::take(&mut self.removed),
        );
        let Some(to) = &self.to else { return };
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let listing = listing();
        let refetch = changed.len() + removed.len() > MAX_FILES;
        let files: Vec<LibraryFile> = if refetch {
            Vec::new()
        } else {
            changed
                .iter()
                .filter_map(|p| index.get(p).map(|r| view(p, r)))
                .collect()
        };
        let frame = Frame {
            kind: "library",
            files: &files,
            removed: if refetch {
                Vec::new()
            } else {
                removed.into_iter().collect()
            },
            refetch,
            bytes_total: listing.0,
            bytes_saved_by_links: listing.1,
            bytes_free: listing.2,
        };
        match serde_json::to_string(&frame) {
            Ok(text) => to(text),
            Err(e) => tracing::error!(error = %e, "cannot serialize a library frame"),
        }
    }
}
