//! Commands that change the queue. Each decides through `lifecycle`, changes the
//! records through `queue`, and answers through `reply_after` or `run_effects` (see
//! `effects`), handing them the files it wants removed.

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::effects::{After, Cleanup, Done, StopWait};
use super::{Reply, Supervisor};
use crate::actors::broadcaster::Publish;
use crate::actors::frames;
use crate::actors::queue_error::QueueError;
use crate::config::{DownloadsConfig, SettingsPatch};
use crate::queue::lifecycle::{Action, State};
use crate::queue::line::NameTaken;
use crate::queue::model::{
    new_id, now_rfc3339, Download, DownloadId, DownloadPatch, DownloadView, NewDownload,
};

/// Add downloads (all or none). `on_disk[i]`: whether `items[i]`'s path exists in
/// `download_dir`, looked up by the sender (the supervisor touches no disk).
#[derive(Message)]
#[rtype(result = "Reply<Vec<DownloadView>>")]
pub struct Add {
    pub items: Vec<NewDownload>,
    pub on_disk: Vec<bool>,
}

/// Pause, resume, cancel or retry one download.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Control {
    pub id: DownloadId,
    pub action: Action,
}

/// Reorder the queue.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Move {
    pub id: DownloadId,
    pub position: usize,
}

/// Change a download's speed cap or URL.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Patch {
    pub id: DownloadId,
    pub patch: DownloadPatch,
}

/// Forget a download (and maybe its file).
#[derive(Message)]
#[rtype(result = "Reply<()>")]
pub struct Delete {
    pub id: DownloadId,
    pub delete_file: bool,
}

/// Pause or resume every download that the action changes.
#[derive(Message)]
#[rtype(result = "Reply<usize>")]
pub struct All(pub Action);

/// Forget every finished download (the files stay).
#[derive(Message)]
#[rtype(result = "Reply<usize>")]
pub struct ClearHistory;

/// Change some run-time settings, merged with the current ones inside the actor (so
/// that two concurrent changes of different keys both hold).
#[derive(Message)]
#[rtype(result = "Reply<DownloadsConfig>")]
pub struct PatchSettings(pub SettingsPatch);

/// Stop every transfer with a checkpoint and keep their states, for a restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

fn refuse<T: 'static>(e: QueueError) -> ResponseActFuture<Supervisor, Reply<T>> {
    Box::pin(actix::fut::ready(Err(e)))
}

impl Supervisor {
    /// Every item may take its name: none twice, none held (see `Queue::claim`).
    fn check_claims(&self, msg: &Add) -> Reply<()> {
        if self.shutting_down {
            return Err(QueueError::ShuttingDown);
        }
        let mut seen = HashSet::new();
        for (n, &on_disk) in msg.items.iter().zip(&msg.on_disk) {
            if !seen.insert(n.path.as_str()) {
                return Err(NameTaken::Twice {
                    path: n.path.clone(),
                }
                .into());
            }
            if self.cleaning.contains_key(&n.path) {
                return Err(NameTaken::BeingRemoved {
                    path: n.path.clone(),
                }
                .into());
            }
            self.queue
                .claim(&n.path, n.overwrite, on_disk, |id| self.is_busy(id))?;
        }
        Ok(())
    }

    /// Stores the new records and puts them in the queue; nothing changes in memory
    /// if the store refuses them. Also says whether a checkpoint was dropped (which
    /// only sled holds: a commit of the journal does not make that durable).
    fn insert_new(&mut self, items: Vec<NewDownload>) -> Reply<(Vec<DownloadId>, bool)> {
        // A new download takes over the `.part` of an older, finished one of the same
        // name (it truncates it when it starts): the old checkpoint no longer describes
        // that file, so a retry of the old download starts over instead of trusting it.
        let mut dropped = false;
        for n in &items {
            for d in self.queue.with_path(&n.path) {
                dropped |= self.store.remove_checkpoint(&d.id)?;
            }
        }
        let now = now_rfc3339();
        let records: Vec<Download> = items.into_iter().map(|n| new_record(n, &now)).collect();
        let ids: Vec<DownloadId> = records.iter().map(|d| d.id.clone()).collect();
        let mut placed = Vec::with_capacity(records.len());
        for d in records {
            self.queue.push(d);
        }
        for id in &ids {
            placed.extend(self.queue.get(id).cloned());
        }
        if let Err(e) = self.store.put_downloads(&placed) {
            for id in &ids {
                self.queue.remove(id);
            }
            return Err(e.into());
        }
        Ok((ids, dropped))
    }

    fn control(
        &mut self,
        id: &str,
        action: Action,
        ctx: &mut Context<Self>,
    ) -> Reply<Vec<StopWait>> {
        let t = self.decide(id, action)?;
        if action == Action::Retry {
            let path = self.record(id)?.path.clone();
            if let Some(other) = self.queue.other_claim(id, &path) {
                return Err(NameTaken::Superseded {
                    path,
                    by: other.id.clone(),
                    state: other.state,
                }
                .into());
            }
        }
        if t.no_op {
            return Ok(Vec::new());
        }
        let stops: Vec<StopWait> = if t.stop_engine {
            self.stop_running(id).into_iter().collect()
        } else {
            Vec::new()
        };
        self.enter(id, &t);
        self.save_or_defer(id, !stops.is_empty());
        if t.joins_queue() {
            self.schedule(ctx);
        }
        Ok(stops)
    }

    /// After a cancel has stopped the engine: its own `.part` goes (not one that a
    /// newer download of the name owns). Returns that removal.
    fn after_cancel(&mut self, id: &str) -> Option<Cleanup> {
        let d = self.record(id).ok()?;
        if d.state != State::Cancelled || self.queue.other_claim(id, &d.path).is_some() {
            return None;
        }
        let cleanup = self.hold_for_cleanup(Cleanup {
            id: id.to_owned(),
            path: d.path.clone(),
            final_file: false,
        });
        if let Ok(d) = self.record_mut(id) {
            d.bytes_done = 0;
        }
        self.save(id);
        Some(cleanup)
    }

    /// Forgets a download whose engine has stopped, with the files that are its own:
    /// their removal (asked for even when the store then fails), and whether the
    /// store forgot the record.
    fn forget(&mut self, id: &str, delete_file: bool) -> (Option<Cleanup>, Reply<()>) {
        let Some(d) = self.queue.remove(id) else {
            return (None, Ok(()));
        };
        // Only this download's own files: not a `.part` or file that a newer
        // download of the same name now owns.
        let mut cleanup = None;
        if let Some(owner) = self.queue.other_claim(id, &d.path) {
            tracing::info!(download_id = %id, owner = %owner.id, "keeping the files: another download owns the name now");
        } else if d.state != State::Completed || delete_file {
            cleanup = Some(self.hold_for_cleanup(Cleanup {
                id: d.id.clone(),
                path: d.path.clone(),
                final_file: d.state == State::Completed,
            }));
        }
        if let Err(e) = self.store.remove_download(id) {
            return (cleanup, Err(e.into()));
        }
        self.broadcaster.do_send(Publish(frames::removed(id)));
        tracing::info!(download_id = %id, delete_file, "download removed");
        (cleanup, Ok(()))
    }
}

fn new_record(n: NewDownload, now: &str) -> Download {
    Download {
        id: new_id(),
        url: n.url,
        file_name: n.file_name,
        path: n.path,
        state: if n.start_paused {
            State::Paused
        } else {
            State::Queued
        },
        order: 0,
        bytes_done: 0,
        bytes_total: None,
        elapsed_secs: 0.0,
        attempt: 0,
        next_retry_at: None,
        sha256: n.sha256,
        error: None,
        source: n.source,
        speed_limit_bps: n.speed_limit_bps,
        connections: n.connections,
        created_at: now.to_owned(),
        transport: None,
        bytes_reused: 0,
        started_at: None,
        finished_at: None,
        completed_as: None,
        validators: None,
    }
}

impl Handler<Add> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<Vec<DownloadView>>>;

    fn handle(&mut self, msg: Add, _: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.check_claims(&msg) {
            return refuse(e);
        }
        let (ids, dropped) = match self.insert_new(msg.items) {
            Ok(added) => added,
            Err(e) => return refuse(e),
        };
        // Nobody hears of them before they are on disk: a failed flush takes them back.
        // Once they are, the answer holds: the starts that follow are flushed after it.
        // The records are durable once the journal is: one sync, shared by the adds
        // that arrive together; sled's flush follows in the background.
        let after = After {
            journal_only: !dropped,
            ..After::default()
        };
        self.run_effects(after, move |act, ctx, flushed| match flushed {
            Ok(()) => Done::durable(Ok(act.added(&ids, ctx))),
            Err(e) => {
                act.roll_back(&ids);
                Done::durable(Err(e.into()))
            }
        })
    }
}

impl Supervisor {
    /// Announces durable new downloads and starts what fits.
    fn added(&mut self, ids: &[DownloadId], ctx: &mut Context<Self>) -> Vec<DownloadView> {
        for view in self.views_of(ids) {
            tracing::info!(download_id = %view.id, url = %view.url, path = %view.path, "download added");
            self.broadcaster.do_send(Publish(frames::state(&view)));
        }
        self.schedule(ctx);
        // Those that just started have no position any more; the rest keep theirs.
        self.views_of(ids)
    }

    /// Forgets downloads whose add could not be made durable.
    fn roll_back(&mut self, ids: &[DownloadId]) {
        for id in ids {
            self.queue.remove(id);
            if let Err(e) = self.store.remove_download(id) {
                tracing::warn!(download_id = %id, error = %e, "cannot drop a download that was not added");
            }
        }
        tracing::warn!(
            count = ids.len(),
            "downloads not added: the database cannot flush"
        );
    }
}

impl Handler<Control> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let (id, action) = (msg.id, msg.action);
        let stops = match self.control(&id, action, ctx) {
            Ok(stops) => stops,
            Err(e) => return refuse(e),
        };
        self.reply_after(After::stops(stops), move |act, ctx| {
            let cleanup = match action {
                Action::Pause => {
                    act.announce_if_still_stopping(&id);
                    None
                }
                Action::Cancel => act.after_cancel(&id),
                _ => None,
            };
            act.schedule(ctx);
            Done::with_cleanups(act.view_of(&id), cleanup.into_iter().collect())
        })
    }
}

impl Handler<Move> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Move, _: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.decide(&msg.id, Action::Move) {
            return refuse(e);
        }
        let changed = self.queue.move_to(&msg.id, msg.position);
        let records: Vec<Download> = changed
            .iter()
            .filter_map(|id| self.queue.get(id).cloned())
            .collect();
        if let Err(e) = self.store.put_downloads(&records) {
            tracing::error!(error = %e, "cannot persist the new queue order");
        }
        self.publish(&msg.id);
        let id = msg.id;
        self.reply_after(After::default(), move |act, _| act.view_of(&id).into())
    }
}

impl Handler<Patch> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Patch, _: &mut Self::Context) -> Self::Result {
        let (id, patch) = (msg.id, msg.patch);
        let mut stops = Vec::new();
        if patch.url.is_some() {
            let t = match self.decide(&id, Action::ChangeUrl) {
                Ok(t) => t,
                Err(e) => return refuse(e),
            };
            if t.stop_engine {
                // Restart the transfer on the new URL; it resumes from the bytes on
                // disk when If-Range says the file is the same.
                stops.extend(self.stop_running(&id));
            }
            self.enter(&id, &t);
        } else if let Err(e) = self.record(&id) {
            return refuse(e);
        }
        if let Ok(d) = self.record_mut(&id) {
            if let Some(limit) = patch.speed_limit_bps {
                d.speed_limit_bps = limit;
            }
            if let Some(url) = patch.url {
                d.url = url;
            }
        }
        if let (Some(limit), Some(r)) = (patch.speed_limit_bps, self.running.get(&id)) {
            r.limiter.set_rate(limit.unwrap_or(0));
        }
        self.save(&id);
        self.reply_after(After::stops(stops), move |act, ctx| {
            act.schedule(ctx);
            act.view_of(&id).into()
        })
    }
}

impl Handler<Delete> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<()>>;

    fn handle(&mut self, msg: Delete, _: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        let t = match self.decide(&id, Action::Delete) {
            Ok(t) => t,
            Err(e) => return refuse(e),
        };
        // A queued one leaves the line now, so that nothing starts it while it stops.
        self.enter(&id, &t);
        let stops: Vec<StopWait> = if t.stop_engine {
            self.stop_running(&id).into_iter().collect()
        } else {
            Vec::new()
        };
        let delete_file = msg.delete_file;
        self.reply_after(After::stops(stops), move |act, ctx| {
            let (cleanup, forgotten) = act.forget(&id, delete_file);
            if forgotten.is_ok() {
                act.schedule(ctx);
            }
            Done::with_cleanups(forgotten, cleanup.into_iter().collect())
        })
    }
}

impl Handler<All> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<usize>>;

    fn handle(&mut self, msg: All, ctx: &mut Self::Context) -> Self::Result {
        let action = msg.0;
        let ids = self.ids_for(action);
        let mut stops = Vec::new();
        for id in &ids {
            if let Ok(s) = self.control(id, action, ctx) {
                stops.extend(s);
            }
        }
        let count = ids.len();
        self.reply_after(After::stops(stops), move |act, _| {
            if action == Action::Pause {
                for id in &ids {
                    act.announce_if_still_stopping(id);
                }
            }
            Ok(count).into()
        })
    }
}

impl Handler<ClearHistory> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<usize>>;

    fn handle(&mut self, _: ClearHistory, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<DownloadId> = self
            .queue
            .history(None, usize::MAX)
            .into_iter()
            .map(|d| d.id.clone())
            .collect();
        let mut result = Ok(ids.len());
        let mut cleanups = Vec::new();
        for id in &ids {
            let (cleanup, forgotten) = self.forget(id, false);
            cleanups.extend(cleanup);
            if let Err(e) = forgotten {
                result = Err(e);
            }
        }
        let after = After {
            cleanups,
            ..After::default()
        };
        self.reply_after(after, move |_, _| result.into())
    }
}

impl Handler<PatchSettings> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadsConfig>>;

    fn handle(&mut self, msg: PatchSettings, _: &mut Self::Context) -> Self::Result {
        let merged = self.settings.patched(&msg.0);
        if let Err(e) = merged.validate() {
            return refuse(QueueError::InvalidSetting(e));
        }
        if let Err(e) = self.store.put_settings(&merged) {
            return refuse(e.into());
        }
        self.settings = merged;
        self.engine.set_speed_limit(self.settings.speed_limit_bps);
        tracing::info!(settings = ?self.settings.live(), "settings changed");
        self.reply_after(After::default(), |act, ctx| {
            act.schedule(ctx);
            Ok(act.settings.clone()).into()
        })
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let ids: Vec<DownloadId> = self.running.keys().cloned().collect();
        let stops: Vec<StopWait> = ids.iter().filter_map(|id| self.stop_running(id)).collect();
        tracing::info!(
            running = stops.len(),
            "shutting down: checkpointing transfers"
        );
        let store = self.store.clone();
        Box::pin(
            async move {
                let _ = tokio::time::timeout(Duration::from_secs(20), join_all(stops)).await;
                if let Err(e) = store.flush().await {
                    tracing::error!(error = %e, "final flush failed");
                }
            }
            .into_actor(self)
            // Stopping drops the actor and its handle on the database, which releases
            // sled's lock for a restart in the same process.
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
