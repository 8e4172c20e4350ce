//! The `library` websocket frame: what changed in the library since the last one.
//!
//! `{"type": "library", "files": [...], "removed": [...], "refetch": false,
//!   "bytes_total": n, "bytes_saved_by_links": n, "bytes_free": n}`: `files` are the
//! changed files in full; after a change of more than [`MAX_FILES`] files (a first
//! scan) `files` is empty and `refetch` asks clients to read `GET /api/library`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use actix::Recipient;
use serde::Serialize;

use super::record::LibraryFile;
use super::Inner;
use crate::actors::broadcaster::Announce;

/// More changed files than this in one frame: clients refetch instead.
const MAX_FILES: usize = 100;

#[derive(Default)]
pub(super) struct Notifier {
    to: Option<Recipient<Announce>>,
    changed: Mutex<BTreeSet<String>>,
    removed: Mutex<BTreeSet<String>>,
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

fn take(set: &Mutex<BTreeSet<String>>) -> BTreeSet<String> {
    std::mem::take(&mut *set.lock().unwrap_or_else(|p| p.into_inner()))
}

impl Notifier {
    pub(super) fn new(to: Option<Recipient<Announce>>) -> Notifier {
        Notifier {
            to,
            ..Notifier::default()
        }
    }

    pub(super) fn changed(&self, path: &str) {
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned());
    }

    pub(super) fn removed(&self, path: &str) {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned());
    }

    /// Sends one frame for everything changed since the last one (nothing if nothing).
    pub(super) fn flush(&self, inner: &Inner) {
        let (changed, removed) = (take(&self.changed), take(&self.removed));
        let Some(to) = &self.to else { return };
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let listing = inner.listing_totals();
        let refetch = changed.len() + removed.len() > MAX_FILES;
        let files: Vec<LibraryFile> = if refetch {
            Vec::new()
        } else {
            let index = inner.read();
            changed
                .iter()
                .filter_map(|p| index.get(p).map(|r| r.view(p)))
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
            Ok(text) => to.do_send(Announce(text.into())),
            Err(e) => tracing::error!(error = %e, "cannot serialize a library frame"),
        }
    }
}
