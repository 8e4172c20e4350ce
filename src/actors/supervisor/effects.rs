//! The order of a command's effects: engines stopped → sled flushed → the command's
//! follow-up (`then`) → files removed on a blocking thread → flushed again → answer.
//! So what `then` starts (a new download truncating a `.part`) comes after the request's
//! own changes are on disk, and the client hears of nothing that a crash could undo.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use actix::prelude::*;
use futures_util::future::join_all;

use super::{Reply, Supervisor};
use crate::files;
use crate::queue::model::DownloadId;

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

impl Supervisor {
    /// Once `stops` have ended and sled is flushed, runs `then`, removes the files it
    /// asked for (`pending_cleanup`), flushes again and answers with its result.
    pub(super) fn reply_after<T: 'static>(
        &mut self,
        stops: Vec<StopWait>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> Reply<T> + 'static,
    ) -> ResponseActFuture<Self, Reply<T>> {
        let store = self.store.clone();
        Box::pin(
            async move {
                join_all(stops).await;
                store.flush().await
            }
            .into_actor(self)
            .then(move |flushed, act, ctx| {
                let reply = flushed.map_err(Into::into).and_then(|()| then(act, ctx));
                let cleanups = act.take_cleanups();
                let store = act.store.clone();
                let root = act.download_dir.clone();
                async move {
                    remove_files(root, cleanups.clone()).await;
                    (store.flush().await, cleanups)
                }
                .into_actor(act)
                .map(move |(flushed, cleanups), act, ctx| {
                    act.cleaned(&cleanups, ctx);
                    flushed?;
                    reply
                })
            }),
        )
    }

    /// Asks for a download's files to be removed once the command's `then` is done;
    /// until then its path is held and it is not started.
    pub(super) fn clean_up(&mut self, cleanup: Cleanup) {
        if let Err(e) = self.store.remove_checkpoint(&cleanup.id) {
            tracing::warn!(download_id = %cleanup.id, error = %e, "cannot remove the checkpoint");
        }
        self.cleaning
            .insert(cleanup.path.clone(), cleanup.id.clone());
        self.pending_cleanup.push(cleanup);
    }

    fn take_cleanups(&mut self) -> Vec<Cleanup> {
        std::mem::take(&mut self.pending_cleanup)
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
