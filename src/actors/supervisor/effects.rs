//! The order of a command's effects: engines stopped → sled flushed → the command's
//! follow-up (`then`) → files removed on a blocking thread → flushed again → answer.
//! So what `then` starts (a new download truncating a `.part`) comes after the request's
//! own changes are on disk, and the client hears of nothing that a crash could undo.
//! The files to remove are returned, by the command ([`After`]) and by its follow-up
//! ([`Done`]): no hidden list between them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use actix::prelude::*;
use futures_util::future::join_all;

use super::{Reply, Supervisor};
use crate::files;
use crate::queue::model::DownloadId;
use crate::queue::store::{Store, StoreError};

/// The wait for one engine to stop.
pub type StopWait = Pin<Box<dyn Future<Output = ()>>>;

/// Files of a download to remove from `download_dir` (never anything outside it).
#[derive(Debug, Clone)]
pub struct Cleanup {
    pub id: DownloadId,
    /// Relative to `download_dir`.
    pub path: String,
    /// The finished file under its final name too, not only its `.part`.
    pub final_file: bool,
}

/// What a command leaves to be done before it answers.
#[derive(Default)]
pub(super) struct After {
    /// Engines told to stop: waited for first.
    pub stops: Vec<StopWait>,
    /// Files the command asked to remove (held by [`Supervisor::hold_for_cleanup`]).
    pub cleanups: Vec<Cleanup>,
    /// The command changed only what the journal holds (records, settings): a commit
    /// (one journal sync) makes it durable, sled's flush may follow later.
    pub journal_only: bool,
}

impl After {
    pub(super) fn stops(stops: Vec<StopWait>) -> Self {
        After {
            stops,
            cleanups: Vec::new(),
            journal_only: false,
        }
    }
}

/// What a command's follow-up (`then`) did: its answer, and the files it asks to remove.
pub(super) struct Done<T> {
    reply: Reply<T>,
    cleanups: Vec<Cleanup>,
    /// The answer was made durable by the first flush (an add): a failure of the
    /// second one is logged, not answered.
    durable: bool,
}

impl<T> Done<T> {
    pub(super) fn with_cleanups(reply: Reply<T>, cleanups: Vec<Cleanup>) -> Self {
        Done {
            reply,
            cleanups,
            durable: false,
        }
    }

    /// An answer that the first flush made true; what the second one carries (the
    /// starts that followed) does not change it.
    pub(super) fn durable(reply: Reply<T>) -> Self {
        Done {
            reply,
            cleanups: Vec::new(),
            durable: true,
        }
    }
}

impl<T> From<Reply<T>> for Done<T> {
    fn from(reply: Reply<T>) -> Self {
        Done::with_cleanups(reply, Vec::new())
    }
}

impl Supervisor {
    /// Once `after.stops` have ended and sled is flushed, runs `then` (only when the
    /// flush succeeded), removes the files, flushes again and answers.
    pub(super) fn reply_after<T: 'static>(
        &mut self,
        after: After,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> Done<T> + 'static,
    ) -> ResponseActFuture<Self, Reply<T>> {
        self.run_effects(after, move |act, ctx, flushed| match flushed {
            Ok(()) => then(act, ctx),
            Err(e) => Done::from(Err(e.into())),
        })
    }

    /// The one order of effects: stops end → flush → `then`, told whether the flush
    /// succeeded → the files of `after` and of `then` removed → flush → answer.
    pub(super) fn run_effects<T: 'static>(
        &mut self,
        after: After,
        then: impl FnOnce(&mut Self, &mut Context<Self>, Result<(), StoreError>) -> Done<T> + 'static,
    ) -> ResponseActFuture<Self, Reply<T>> {
        let store = self.store.clone();
        let After {
            stops,
            mut cleanups,
            journal_only,
        } = after;
        Box::pin(
            async move {
                join_all(stops).await;
                make_durable(&store, journal_only).await
            }
            .into_actor(self)
            .then(move |flushed, act, ctx| {
                let done = then(act, ctx, flushed);
                cleanups.extend(done.cleanups);
                let (reply, durable) = (done.reply, done.durable);
                let store = act.store.clone();
                let root = act.download_dir.clone();
                // What `then` did (starts, removals) is journal-only too when no
                // file was removed: a removal drops checkpoints, which only sled holds.
                let journal_only = journal_only && cleanups.is_empty();
                async move {
                    remove_files(root, cleanups.clone()).await;
                    (make_durable(&store, journal_only).await, cleanups)
                }
                .into_actor(act)
                .map(move |(flushed, cleanups), act, ctx| {
                    act.cleaned(&cleanups, ctx);
                    match flushed {
                        Err(e) if durable => {
                            tracing::warn!(error = %e, "cannot flush what followed the answer");
                        }
                        flushed => flushed?,
                    }
                    reply
                })
            }),
        )
    }

    /// Holds a download's path for the removal of its files (it is neither started
    /// nor given to a new download until they are gone) and drops its checkpoint; the
    /// caller hands the cleanup to the command's effects.
    pub(super) fn hold_for_cleanup(&mut self, cleanup: Cleanup) -> Cleanup {
        if let Err(e) = self.store.remove_checkpoint(&cleanup.id) {
            tracing::warn!(download_id = %cleanup.id, error = %e, "cannot remove the checkpoint");
        }
        self.cleaning
            .insert(cleanup.path.clone(), cleanup.id.clone());
        cleanup
    }

    fn cleaned(&mut self, cleanups: &[Cleanup], ctx: &mut Context<Self>) {
        if cleanups.is_empty() {
            return;
        }
        for c in cleanups {
            self.cleaning.remove(&c.path);
        }
        self.schedule(ctx);
    }
}

/// Makes the command's writes durable: a commit of the journal when they are all in
/// it, else a flush of everything.
async fn make_durable(store: &Store, journal_only: bool) -> Result<(), StoreError> {
    if journal_only {
        store.commit().await
    } else {
        store.flush().await
    }
}

/// Removes the files on a blocking thread; a failure is logged, never fatal.
async fn remove_files(root: PathBuf, cleanups: Vec<Cleanup>) {
    if cleanups.is_empty() {
        return;
    }
    let done = tokio::task::spawn_blocking(move || {
        for c in &cleanups {
            remove_one(&root, c);
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "the file removal task died");
    }
}

fn remove_one(root: &Path, c: &Cleanup) {
    let Ok(path) = files::resolve_inside(root, &c.path) else {
        return;
    };
    let mut targets = vec![files::part_path(&path)];
    if c.final_file {
        targets.push(path);
    }
    for target in targets {
        if let Err(e) = std::fs::remove_file(&target) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(download_id = %c.id, path = %target.display(), error = %e, "cannot remove a file");
            }
        }
    }
}
