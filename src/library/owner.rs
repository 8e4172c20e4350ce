//! The owner task of the library's index: the one place that changes it.
//!
//! The index is read by anyone (the listing never waits for the disk or the queue),
//! and changed only here, one message at a time, on a thread of its own: the scan
//! (a walk of `download_dir` and a read of what changed, done off this thread), a
//! completed download, the hasher's digests, an update check's answers and a delete
//! each send their result as a [`Msg`], and the owner turns it into records, with
//! what is owed (the link to an identical file, the publications, the frame). Since
//! nothing else writes, the latest record is always the one here: nobody merges
//! fields of two writers.

mod apply;
mod index;
#[cfg(test)]
mod scale_tests;
mod sorted;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

pub(super) use index::Index;

use super::hasher::Hasher;
use super::notify::{Notifier, Sink};
use super::record::Record;
use super::scan::{Completions, Seen};
use super::{LibraryError, Shared};
use crate::actors::handle::QueueHandle;
use crate::files::Stat;
use crate::hub::{HubError, RepoRevision};
use crate::queue::model::Download;
use crate::queue::store::StoreError;

type Reply<T> = oneshot::Sender<T>;

/// What the owner is told.
pub(super) enum Msg {
    /// A batch of a scan's fresh reads: files the index did not know as they are now.
    Read {
        seen: Vec<(String, Seen)>,
        completions: Arc<Completions>,
        done: Reply<Result<(), LibraryError>>,
    },
    /// The end of a scan: the files found that the index knew as they are, and the
    /// paths its [`Msg::Read`]s brought in; every other file of the index is gone.
    /// Answered with how many files the library holds.
    Scanned {
        known: BTreeMap<String, Stat>,
        read: BTreeSet<String>,
        completions: Arc<Completions>,
        done: Reply<Result<usize, LibraryError>>,
    },
    /// A download of the queue completed its file.
    Completed {
        download: Box<Download>,
        done: Reply<Result<(), LibraryError>>,
    },
    /// The hasher's digest of `path`, read as `before` says.
    Hashed {
        path: String,
        before: Box<Record>,
        sha256: String,
    },
    /// What the Hub said of `repo` for the files `paths` (an update check); answered
    /// with how many of them have a newer file. No frame: [`Msg::Announce`] ends a check.
    Checked {
        repo: String,
        paths: Vec<String>,
        outcome: Box<Result<RepoRevision, HubError>>,
        has_token: bool,
        done: Reply<Result<usize, StoreError>>,
    },
    /// What the update of `path` to the file of `sha256` will fetch.
    Estimated {
        path: String,
        sha256: String,
        fetch_bytes: u64,
    },
    /// Sends the frame of what changed.
    Announce,
    /// Removes a file of the library and what was published of it.
    Delete {
        path: String,
        done: Reply<Result<(), LibraryError>>,
    },
}

/// The way to the owner task; the task ends (and is waited for) when this goes.
pub(super) struct Mailbox {
    tx: Option<UnboundedSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn gone() -> LibraryError {
    LibraryError::Join("the library's owner task is gone".into())
}

impl Mailbox {
    /// Starts the owner of `shared`'s index (and the hasher, which it feeds). `queue`
    /// learns the digests the hasher finds; `sink` gets the frames.
    pub(super) fn start(
        shared: Arc<Shared>,
        queue: Option<QueueHandle>,
        sink: Option<Sink>,
    ) -> Result<Mailbox, LibraryError> {
        let (tx, rx) = unbounded_channel();
        let hasher = Hasher::start(&shared, tx.downgrade());
        let owner = Owner {
            shared,
            notifier: Notifier::new(sink),
            hasher,
            queue,
        };
        let thread = std::thread::Builder::new()
            .name("library-owner".into())
            .spawn(move || owner.run(rx))?;
        Ok(Mailbox {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(super) fn send(&self, msg: Msg) -> Result<(), LibraryError> {
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(msg).map_err(|_| gone())
    }

    /// Sends the message `make` builds around a reply, and waits for the reply.
    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Msg,
    ) -> Result<T, LibraryError> {
        let (done, answer) = oneshot::channel();
        self.send(make(done))?;
        answer.await.map_err(|_| gone())
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // The last sender: the owner finishes what it was doing and ends, and with it
        // its hold on the store.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The owner task's state: the one writer of the index.
struct Owner {
    shared: Arc<Shared>,
    notifier: Notifier,
    hasher: Hasher,
    queue: Option<QueueHandle>,
}

impl Owner {
    fn run(mut self, mut rx: UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Read {
                seen,
                completions,
                done,
            } => {
                let result = self.read(seen, &completions);
                self.announce();
                let _ = done.send(result);
            }
            Msg::Scanned {
                known,
                read,
                completions,
                done,
            } => {
                let result = self.scanned(known, &read, &completions);
                self.announce();
                let _ = done.send(result);
            }
            Msg::Completed { download, done } => {
                let result = self.completed(&download);
                self.announce();
                let _ = done.send(result);
            }
            Msg::Hashed {
                path,
                before,
                sha256,
            } => {
                self.hashed(&path, &before, sha256);
                self.announce();
            }
            Msg::Checked {
                repo,
                paths,
                outcome,
                has_token,
                done,
            } => {
                let _ = done.send(self.checked(&repo, &paths, &outcome, has_token));
            }
            Msg::Estimated {
                path,
                sha256,
                fetch_bytes,
            } => {
                let told = self.change(&path, |r| {
                    if let Some(u) = r.update.as_mut().filter(|u| u.sha256 == sha256) {
                        u.fetch_bytes = Some(fetch_bytes);
                    }
                });
                if let Err(e) = told {
                    tracing::warn!(%path, error = %e, "cannot record an update's cost");
                }
            }
            Msg::Announce => self.announce(),
            Msg::Delete { path, done } => {
                let result = self.remove_file(&path);
                self.announce();
                let _ = done.send(result);
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.shared.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores and indexes `record` at `path`.
    fn put(&mut self, path: &str, record: Record) -> Result<(), StoreError> {
        self.shared.store.put_library(path, &record)?;
        self.write().put_record(path.to_owned(), record);
        self.notifier.changed(path);
        Ok(())
    }

    /// Changes the record of `path` (when there is one) and stores it when it changed.
    fn change(
        &mut self,
        path: &str,
        edit: impl FnOnce(&mut Record),
    ) -> Result<Option<Record>, StoreError> {
        let Some(before) = self.shared.read().get(path).cloned() else {
            return Ok(None);
        };
        let mut after = before.clone();
        edit(&mut after);
        if after != before {
            self.put(path, after.clone())?;
        }
        Ok(Some(after))
    }

    fn forget(&mut self, path: &str) -> Result<(), StoreError> {
        self.shared.store.remove_library(path)?;
        self.write().drop_record(path);
        self.notifier.removed(path);
        Ok(())
    }

    /// Sends the frame of what changed since the last one.
    fn announce(&mut self) {
        let index = self.shared.read();
        let shared = &self.shared;
        self.notifier.flush(
            &index,
            |p, r| shared.view(p, r),
            || shared.listing_totals_of(&index),
        );
    }
}
