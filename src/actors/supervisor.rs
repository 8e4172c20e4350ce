//! The supervisor owns the queue: every record, the order, the state machine of the
//! contract, and the running download actors. Every change is written to sled and
//! flushed before the request that caused it is answered.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::actors::broadcaster::{
    self, AddClient, Broadcaster, Frame, LiveTable, Publish, Track, Untrack,
};
use crate::actors::download::{DownloadActor, Stop};
use crate::config::DownloadsConfig;
use crate::engine::{Engine, EngineEvent, HubTarget, Job, Outcome, RateLimiter};
use crate::files;
use crate::hub::HubClient;
use crate::model::{
    now_rfc3339, rfc3339, Download, DownloadError, DownloadId, DownloadView, ErrorKind, Source,
    State,
};
use crate::progress::ProgressCell;
use crate::store::{Store, StoreError};

/// Why the supervisor refused a command; `error.rs` maps these to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no download with id {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the service is shutting down")]
    ShuttingDown,
}

type Reply<T> = Result<T, SupervisorError>;

/// Gap between the order keys of consecutive downloads, so that a move can usually
/// slot a download between two others without renumbering the queue.
const ORDER_STEP: u64 = 1 << 20;

struct Running {
    addr: Addr<DownloadActor>,
    cell: Arc<ProgressCell>,
    /// The download's own speed cap, changed live by PATCH.
    limiter: Arc<RateLimiter>,
}

/// The supervisor actor.
pub struct Supervisor {
    store: Store,
    engine: Engine,
    hub: HubClient,
    broadcaster: Addr<Broadcaster>,
    live: LiveTable,
    /// The thread where download actors and their transfers run, away from the API.
    transfers: ArbiterHandle,
    download_dir: PathBuf,
    settings: DownloadsConfig,
    /// Boxed: a map sized for 10,000 records would otherwise reserve a slot of a whole
    /// record for every empty bucket too.
    records: HashMap<DownloadId, Box<Download>>,
    /// Ids by path, so that name checks do not scan every record.
    by_path: HashMap<String, Vec<DownloadId>>,
    /// Queued downloads by order key.
    queue: BTreeMap<u64, DownloadId>,
    next_order: u64,
    running: HashMap<DownloadId, Running>,
    /// Told to stop, not yet ended: not started again until they have.
    stopping: HashMap<DownloadId, Running>,
    shutting_down: bool,
}

/// What [`Supervisor::new`] needs.
pub struct SupervisorParts {
    pub store: Store,
    /// Every stored record (from [`Store::open_and_load`]).
    pub records: Vec<Download>,
    pub engine: Engine,
    pub hub: HubClient,
    pub broadcaster: Addr<Broadcaster>,
    pub live: LiveTable,
    pub transfers: ArbiterHandle,
    pub download_dir: PathBuf,
    pub settings: DownloadsConfig,
}

impl Supervisor {
    /// Loads every record; downloads that were running when the service stopped go back
    /// to the queue at their place, with the bytes of their last checkpoint.
    pub fn new(parts: SupervisorParts) -> Result<Supervisor, StoreError> {
        let mut records = HashMap::new();
        let mut queue = BTreeMap::new();
        let mut next_order = 0;
        let mut changed = Vec::new();
        for mut d in parts.records {
            next_order = next_order.max(d.order + ORDER_STEP);
            if d.state.is_running() {
                d.state = State::Queued;
                d.next_retry_at = None;
                if let Some(cp) = parts.store.checkpoint(&d.id)? {
                    d.bytes_done = cp.bytes_done();
                    d.bytes_total = cp.total.or(d.bytes_total);
                    d.elapsed_secs = d.elapsed_secs.max(cp.elapsed_secs);
                }
                changed.push(d.clone());
            }
            if d.state == State::Queued {
                queue.insert(d.order, d.id.clone());
            }
            records.insert(d.id.clone(), Box::new(d));
        }
        parts.store.put_downloads(&changed)?;
        tracing::info!(
            downloads = records.len(),
            queued = queue.len(),
            resumed = changed.len(),
            "queue loaded"
        );
        let mut by_path: HashMap<String, Vec<DownloadId>> = HashMap::new();
        for d in records.values() {
            by_path
                .entry(d.path.clone())
                .or_default()
                .push(d.id.clone());
        }
        Ok(Supervisor {
            by_path,
            store: parts.store,
            engine: parts.engine,
            hub: parts.hub,
            broadcaster: parts.broadcaster,
            live: parts.live,
            transfers: parts.transfers,
            download_dir: parts.download_dir,
            settings: parts.settings,
            records,
            queue,
            next_order,
            running: HashMap::new(),
            stopping: HashMap::new(),
            shutting_down: false,
        })
    }

    fn insert_record(&mut self, d: Download) {
        self.by_path
            .entry(d.path.clone())
            .or_default()
            .push(d.id.clone());
        self.records.insert(d.id.clone(), Box::new(d));
    }

    fn remove_record(&mut self, id: &str) -> Option<Download> {
        let d = *self.records.remove(id)?;
        if let Some(ids) = self.by_path.get_mut(&d.path) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_path.remove(&d.path);
            }
        }
        Some(d)
    }

    /// Every record with this path.
    fn with_path<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Download> + 'a {
        self.by_path
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id).map(Box::as_ref))
    }

    fn record(&self, id: &str) -> Reply<&Download> {
        self.records
            .get(id)
            .map(Box::as_ref)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    fn record_mut(&mut self, id: &str) -> Reply<&mut Download> {
        self.records
            .get_mut(id)
            .map(Box::as_mut)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    fn position(&self, d: &Download) -> Option<usize> {
        if d.state != State::Queued {
            return None;
        }
        self.queue.range(..d.order).count().into()
    }

    fn live_of(&self, d: &Download) -> Option<crate::model::Live> {
        let running = self.running.get(&d.id)?;
        let mut live = self
            .live
            .read()
            .ok()
            .and_then(|t| t.get(&d.id).copied())
            .unwrap_or_default();
        // The counters are fresher than the last tick.
        live.bytes_done = running.cell.done();
        live.bytes_total = running.cell.total().or(d.bytes_total);
        live.elapsed_secs = running.cell.elapsed_secs();
        Some(live)
    }

    fn view(&self, d: &Download) -> DownloadView {
        d.view(self.position(d), self.live_of(d))
    }

    fn view_of(&self, id: &str) -> Reply<DownloadView> {
        Ok(self.view(self.record(id)?))
    }

    /// Every download: live and queued in queue order, then the rest, newest first.
    fn ordered(&self) -> Vec<&Download> {
        let mut live: Vec<&Download> = self
            .records
            .values()
            .map(Box::as_ref)
            .filter(|d| !d.state.is_finished())
            .collect();
        live.sort_unstable_by_key(|d| d.order);
        let mut rest: Vec<&Download> = self
            .records
            .values()
            .map(Box::as_ref)
            .filter(|d| d.state.is_finished())
            .collect();
        rest.sort_unstable_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
        live.extend(rest);
        live
    }

    /// One page of [`Supervisor::ordered`]: `limit` downloads after the one with id
    /// `after`, optionally of one state; with the id to ask the next page after.
    fn page(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Reply<(Vec<DownloadView>, Option<DownloadId>)> {
        let all = self.ordered();
        let start = match after {
            None => 0,
            Some(a) => {
                all.iter().position(|d| d.id == a).ok_or_else(|| {
                    SupervisorError::BadRequest(format!("after: no download with id {a}"))
                })? + 1
            }
        };
        // Queue positions count every queued download, not just this page's.
        let mut position = all[..start]
            .iter()
            .filter(|d| d.state == State::Queued)
            .count();
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        for d in &all[start..] {
            let pos = (d.state == State::Queued).then(|| {
                position += 1;
                position - 1
            });
            if state.is_some_and(|s| s != d.state) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(d.view(pos, self.live_of(d)));
            last = Some(d.id.clone());
        }
        Ok((out, if more { last } else { None }))
    }

    fn list(&self) -> Vec<DownloadView> {
        self.page(None, None, usize::MAX)
            .map(|(v, _)| v)
            .unwrap_or_default()
    }

    /// Queue positions of every queued download, computed once for a batch of views.
    fn positions(&self) -> HashMap<&str, usize> {
        self.queue
            .values()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect()
    }

    /// Writes the record (not yet flushed) and tells every websocket client.
    fn save(&mut self, id: &str) {
        self.persist(id);
        self.publish(id);
    }

    /// Writes the record to sled without announcing it: for a change that is only
    /// true for the page once the engine has stopped (the `Finished` handler
    /// announces it then, with the final byte count).
    fn persist(&mut self, id: &str) {
        let Some(d) = self.records.get(id) else {
            return;
        };
        if let Err(e) = self.store.put_download(d) {
            tracing::error!(download_id = %id, error = %e, "cannot persist a download");
        }
    }

    fn publish(&mut self, id: &str) {
        let Some(d) = self.records.get(id) else {
            return;
        };
        let frame = broadcaster::frame_json(&StateFrame {
            kind: "state",
            download: &self.view(d),
        });
        self.broadcaster.do_send(Publish(frame));
    }

    /// Saves a change of state. While the engine is still stopping (`stopping`), the
    /// page hears of it only from `Finished`: a `paused` frame whose bytes then move,
    /// or progress frames after it, would tell the user it is not really paused.
    fn save_or_defer(&mut self, id: &str, stopping: bool) {
        if stopping {
            self.persist(id);
        } else {
            self.save(id);
        }
    }

    fn enqueue(&mut self, id: &str) {
        if let Some(d) = self.records.get_mut(id) {
            d.state = State::Queued;
            self.queue.insert(d.order, d.id.clone());
        }
    }

    fn dequeue(&mut self, id: &str) {
        if let Some(d) = self.records.get(id) {
            self.queue.remove(&d.order);
        }
    }

    /// Starts queued downloads while there is room.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        while self.running.len() < self.settings.max_concurrent {
            let next = self
                .queue
                .values()
                .find(|id| !self.stopping.contains_key(*id))
                .cloned();
            let Some(id) = next else { break };
            self.dequeue(&id);
            self.start(&id, ctx);
        }
    }

    fn start(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(d) = self.records.get(id) else {
            return;
        };
        let final_path = match files::resolve_inside(&self.download_dir, &d.path) {
            Ok(p) => p,
            Err(e) => {
                self.finish_failed(
                    id,
                    DownloadError {
                        kind: ErrorKind::Disk,
                        message: format!("cannot use {}: {e}", d.path),
                    },
                );
                return;
            }
        };
        let job = Job {
            id: d.id.clone(),
            url: d.url.clone(),
            final_path,
            sha256: d.sha256.clone(),
            settings: self.settings.clone(),
            hub: match &d.source {
                Source::Url => None,
                Source::Hub {
                    repo,
                    revision,
                    file,
                    commit,
                } => Some(HubTarget {
                    client: self.hub.clone(),
                    repo: repo.clone(),
                    revision: revision.clone(),
                    file: file.clone(),
                    commit: commit.clone(),
                }),
            },
        };
        let cell = Arc::new(ProgressCell::new(
            d.bytes_done,
            d.bytes_total,
            d.elapsed_secs,
        ));
        let engine = self.engine.clone();
        let me = ctx.address();
        let actor_cell = cell.clone();
        let limiter = Arc::new(RateLimiter::new(d.speed_limit_bps.unwrap_or(0)));
        let actor_limiter = limiter.clone();
        let addr = DownloadActor::start_in_arbiter(&self.transfers, move |_| {
            DownloadActor::new(job, engine, me, actor_cell, actor_limiter)
        });
        self.broadcaster.do_send(Track {
            id: id.to_owned(),
            cell: cell.clone(),
        });
        self.running.insert(
            id.to_owned(),
            Running {
                addr,
                cell,
                limiter,
            },
        );
        if let Some(d) = self.records.get_mut(id) {
            d.state = State::Downloading;
            d.next_retry_at = None;
            d.error = None;
            d.started_at.get_or_insert_with(now_rfc3339);
        }
        tracing::info!(download_id = %id, "download started");
        self.save(id);
    }

    fn finish_failed(&mut self, id: &str, error: DownloadError) {
        if let Some(d) = self.records.get_mut(id) {
            d.state = State::Failed;
            d.error = Some(error);
            d.next_retry_at = None;
            d.finished_at = Some(now_rfc3339());
        }
        self.save(id);
    }

    /// Tells a running download to stop; the future resolves once it has ended. For
    /// one that is already stopping (paused a moment ago), it waits for that stop too:
    /// a cancel or delete must not remove files under an engine that still writes.
    fn stop_running(
        &mut self,
        id: &str,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let request = match self.running.remove(id) {
            Some(running) => {
                // Views of a stopping download read the record: give it the bytes so
                // far rather than those of its last save.
                if let Some(d) = self.records.get_mut(id) {
                    d.bytes_done = running.cell.done();
                }
                let request = running.addr.send(Stop);
                self.stopping.insert(id.to_owned(), running);
                request
            }
            None => self.stopping.get(id)?.addr.send(Stop),
        };
        Some(async move {
            let _ = request.await;
        })
    }

    /// After waiting for a stop: announces a download whose engine has not reported its
    /// end yet (a stop that outlasted the wait, or an actor that died), so that no page
    /// keeps showing it as running while the API says otherwise.
    fn announce_if_still_stopping(&mut self, id: &str) {
        if self.stopping.contains_key(id) {
            self.publish(id);
        }
    }

    /// Once `stops` have ended and sled is flushed, runs `then` (so that what it starts,
    /// e.g. a new download truncating a `.part`, comes after the request's own changes
    /// are on disk), then flushes again and answers with its result: what `then`
    /// changed (a removed record, a cancelled download's dropped checkpoint) is on disk
    /// before the client hears of it.
    fn reply_after<T: 'static>(
        &mut self,
        stops: Vec<Box<dyn std::future::Future<Output = ()> + Unpin>>,
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
                let store = act.store.clone();
                async move {
                    store.flush().await?;
                    reply
                }
                .into_actor(act)
            }),
        )
    }

    /// Files of a download that is gone or cancelled: its `.part` and checkpoint.
    fn remove_partial(&self, d: &Download) {
        if let Ok(path) = files::resolve_inside(&self.download_dir, &d.path) {
            let part = files::part_path(&path);
            if let Err(e) = std::fs::remove_file(&part) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(download_id = %d.id, error = %e, "cannot remove the partial file");
                }
            }
        }
        if let Err(e) = self.store.remove_checkpoint(&d.id) {
            tracing::warn!(download_id = %d.id, error = %e, "cannot remove the checkpoint");
        }
    }

    /// Another download that holds `path`: a live one (writing its `.part`), or a
    /// newer one (whose file replaced this one's).
    fn other_claim(&self, id: &str, path: &str) -> Option<&Download> {
        self.with_path(path)
            .find(|d| d.id != id && (!d.state.is_finished() || d.id.as_str() > id))
    }

    fn check_name_free(&self, path: &str, overwrite: bool) -> Reply<()> {
        for d in self.with_path(path) {
            // A cancelled download whose engine has not stopped yet (it outlasted the
            // wait) may still write its `.part`. (A deleted one has no record left; the
            // engine's final rename checks that the `.part` is still its own file.)
            if !d.state.is_finished() || self.stopping.contains_key(&d.id) {
                return Err(SupervisorError::Conflict(format!(
                    "{path} is taken by download {} ({})",
                    d.id,
                    d.state.as_str()
                )));
            }
            if d.state == State::Completed && !overwrite {
                return Err(SupervisorError::Conflict(format!(
                    "{path} is taken by download {}; send \"overwrite\": true to replace it",
                    d.id
                )));
            }
        }
        if !overwrite {
            let exists = self.download_dir.join(path).symlink_metadata().is_ok();
            if exists {
                return Err(SupervisorError::Conflict(format!(
                    "{path} already exists in download_dir; send \"overwrite\": true to replace it"
                )));
            }
        }
        Ok(())
    }

    fn pause_one(
        &mut self,
        id: &str,
    ) -> Reply<Option<Box<dyn std::future::Future<Output = ()> + Unpin>>> {
        let state = self.record(id)?.state;
        let stop = match state {
            State::Queued => {
                self.dequeue(id);
                None
            }
            State::Downloading | State::Retrying => {
                self.stop_running(id).map(|f| Box::new(Box::pin(f)) as _)
            }
            State::Paused => return Ok(None),
            State::Verifying => {
                return Err(SupervisorError::Conflict(format!(
                    "download {id} is verifying; it cannot be paused"
                )))
            }
            s => {
                return Err(SupervisorError::Conflict(format!(
                    "download {id} is {}; it cannot be paused",
                    s.as_str()
                )))
            }
        };
        let d = self.record_mut(id)?;
        d.state = State::Paused;
        d.next_retry_at = None;
        self.save_or_defer(id, stop.is_some());
        Ok(stop)
    }

    fn resume_one(&mut self, id: &str) -> Reply<()> {
        match self.record(id)?.state {
            State::Paused => {
                self.enqueue(id);
                self.save(id);
                Ok(())
            }
            State::Queued | State::Downloading | State::Retrying | State::Verifying => Ok(()),
            s => Err(SupervisorError::Conflict(format!(
                "download {id} is {}; use retry to start it again",
                s.as_str()
            ))),
        }
    }
}

#[derive(Serialize)]
struct StateFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    download: &'a DownloadView,
}

#[derive(Serialize)]
struct SnapshotFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    downloads: &'a [DownloadView],
}

#[derive(Serialize)]
struct RemovedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Commands wait in the mailbox rather than growing it without bound.
        ctx.set_mailbox_capacity(1024);
        self.schedule(ctx);
    }
}

// ---- messages from download actors ----

/// An event of a running engine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EngineNote {
    pub id: DownloadId,
    pub event: EngineEvent,
}

/// A download actor's end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub id: DownloadId,
    pub outcome: Outcome,
    pub elapsed_secs: f64,
}

impl Handler<EngineNote> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: EngineNote, _: &mut Self::Context) {
        // Events of an engine that was told to stop are stale: the command that
        // stopped it has already decided the state.
        if !self.running.contains_key(&msg.id) {
            return;
        }
        let Some(d) = self.records.get_mut(&msg.id) else {
            return;
        };
        match msg.event {
            EngineEvent::Total(total) => {
                if d.bytes_total != total {
                    d.bytes_total = total;
                    self.save(&msg.id);
                }
            }
            EngineEvent::Retrying {
                attempt,
                wait,
                error,
            } => {
                self.engine.metrics.retry(error.kind.as_str());
                d.state = State::Retrying;
                d.attempt = attempt;
                d.next_retry_at = Some(rfc3339(SystemTime::now() + wait));
                d.error = Some(error);
                self.save(&msg.id);
            }
            EngineEvent::Resumed => {
                d.state = State::Downloading;
                d.next_retry_at = None;
                self.save(&msg.id);
            }
            EngineEvent::Notice(error) => {
                d.error = Some(error);
                self.save(&msg.id);
            }
            EngineEvent::Verifying => {
                d.state = State::Verifying;
                self.save(&msg.id);
            }
            EngineEvent::Pinned { commit, sha256 } => {
                if let Source::Hub { commit: pinned, .. } = &mut d.source {
                    if pinned.is_none() {
                        *pinned = commit;
                    }
                }
                if d.sha256.is_none() {
                    d.sha256 = sha256;
                }
                self.save(&msg.id);
            }
        }
    }
}

impl Handler<Finished> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Self::Context) {
        let natural_end = self.running.remove(&msg.id).is_some();
        self.stopping.remove(&msg.id);
        self.broadcaster.do_send(Untrack { id: msg.id.clone() });
        let Some(d) = self.records.get_mut(&msg.id) else {
            self.schedule(ctx);
            return;
        };
        d.elapsed_secs = (msg.elapsed_secs * 100.0).round() / 100.0;
        let completed = matches!(msg.outcome, Outcome::Completed { .. });
        match msg.outcome {
            Outcome::Completed { bytes } => {
                d.bytes_done = bytes;
                d.bytes_total = Some(bytes);
                // The file is under its final name: completed, even if a pause or a
                // shutdown came too late to stop it (a cancel keeps its word).
                if d.state != State::Cancelled {
                    // A pause and a resume while it was finishing put it back in line:
                    // done is done, it must not start again.
                    self.queue.remove(&d.order);
                    d.state = State::Completed;
                    d.error = None;
                    d.attempt = 0;
                    d.next_retry_at = None;
                    d.finished_at = Some(now_rfc3339());
                }
            }
            Outcome::Stopped { bytes } => {
                d.bytes_done = bytes;
                if natural_end && !self.shutting_down {
                    // Nobody asked it to stop: put it back in line.
                    self.enqueue(&msg.id);
                }
            }
            Outcome::Failed { bytes, error } => {
                d.bytes_done = bytes;
                if natural_end && !self.shutting_down {
                    d.state = State::Failed;
                    d.error = Some(error);
                    d.next_retry_at = None;
                    d.finished_at = Some(now_rfc3339());
                }
            }
        }
        if self.shutting_down {
            // Keep the state as it was, so that the next start resumes it.
            if let Some(d) = self.records.get(&msg.id) {
                let _ = self.store.put_download(d);
            }
            if completed {
                let _ = self.store.remove_checkpoint(&msg.id);
            }
            return;
        }
        self.save(&msg.id);
        if completed {
            // Only after the record says so (sled keeps the order of writes), so that
            // no flush holds "no checkpoint" beside a record that is not completed.
            let _ = self.store.remove_checkpoint(&msg.id);
        }
        let store = self.store.clone();
        actix::spawn(async move {
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "flush failed");
            }
        });
        self.schedule(ctx);
    }
}

// ---- commands from the API ----

/// A new download, validated by the API layer except for name conflicts.
#[derive(Debug, Clone)]
pub struct NewDownload {
    pub url: String,
    pub file_name: String,
    pub path: String,
    pub sha256: Option<String>,
    pub start_paused: bool,
    pub overwrite: bool,
    pub source: Source,
}

/// Add downloads (all or none).
#[derive(Message)]
#[rtype(result = "Reply<Vec<DownloadView>>")]
pub struct Add(pub Vec<NewDownload>);

impl Handler<Add> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<Vec<DownloadView>>>;

    fn handle(&mut self, msg: Add, _: &mut Self::Context) -> Self::Result {
        let check = || -> Reply<()> {
            if self.shutting_down {
                return Err(SupervisorError::ShuttingDown);
            }
            let mut seen = std::collections::HashSet::new();
            for n in &msg.0 {
                if !seen.insert(n.path.as_str()) {
                    return Err(SupervisorError::Conflict(format!(
                        "{} is asked for twice",
                        n.path
                    )));
                }
                self.check_name_free(&n.path, n.overwrite)?;
            }
            Ok(())
        };
        if let Err(e) = check() {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // A new download takes over the `.part` of an older, finished one of the same
        // name (it truncates it when it starts): the old checkpoint no longer describes
        // that file, so a retry of the old download starts over instead of trusting it.
        let superseded: Vec<DownloadId> = msg
            .0
            .iter()
            .flat_map(|n| self.with_path(&n.path).map(|d| d.id.clone()))
            .collect();
        for id in &superseded {
            if let Err(e) = self.store.remove_checkpoint(id) {
                return Box::pin(actix::fut::ready(Err(e.into())));
            }
        }
        let now = now_rfc3339();
        let mut ids = Vec::with_capacity(msg.0.len());
        let mut batch = Vec::with_capacity(msg.0.len());
        for n in msg.0 {
            let d = Download {
                id: crate::model::new_id(),
                url: n.url,
                file_name: n.file_name,
                path: n.path,
                state: if n.start_paused {
                    State::Paused
                } else {
                    State::Queued
                },
                order: self.next_order,
                bytes_done: 0,
                bytes_total: None,
                elapsed_secs: 0.0,
                attempt: 0,
                next_retry_at: None,
                sha256: n.sha256,
                error: None,
                source: n.source,
                speed_limit_bps: None,
                created_at: now.clone(),
                started_at: None,
                finished_at: None,
            };
            self.next_order += ORDER_STEP;
            ids.push(d.id.clone());
            batch.push(d.clone());
            if d.state == State::Queued {
                self.queue.insert(d.order, d.id.clone());
            }
            self.insert_record(d);
        }
        if let Err(e) = self.store.put_downloads(&batch) {
            for id in &ids {
                self.dequeue(id);
                self.remove_record(id);
            }
            return Box::pin(actix::fut::ready(Err(e.into())));
        }
        let positions = self.positions();
        let views: Vec<DownloadView> = ids
            .iter()
            .filter_map(|id| self.records.get(id))
            .map(|d| d.view(positions.get(d.id.as_str()).copied(), None))
            .collect();
        drop(positions);
        for view in &views {
            tracing::info!(download_id = %view.id, url = %view.url, path = %view.path, "download added");
            let frame = broadcaster::frame_json(&StateFrame {
                kind: "state",
                download: view,
            });
            self.broadcaster.do_send(Publish(frame));
        }
        self.reply_after(Vec::new(), move |act, ctx| {
            act.schedule(ctx);
            // Those that just started have no position any more; the rest keep theirs.
            let positions = act.positions();
            Ok(ids
                .iter()
                .filter_map(|id| act.records.get(id))
                .map(|d| d.view(positions.get(d.id.as_str()).copied(), act.live_of(d)))
                .collect())
        })
    }
}

/// One download.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Get(pub DownloadId);

impl Handler<Get> for Supervisor {
    type Result = Reply<DownloadView>;
    fn handle(&mut self, msg: Get, _: &mut Self::Context) -> Self::Result {
        self.view_of(&msg.0)
    }
}

/// Downloads in the contract's order, a page at a time.
#[derive(Message)]
#[rtype(result = "Reply<(Vec<DownloadView>, Option<DownloadId>)>")]
pub struct List {
    pub state: Option<State>,
    pub after: Option<DownloadId>,
    pub limit: usize,
}

impl Handler<List> for Supervisor {
    type Result = Reply<(Vec<DownloadView>, Option<DownloadId>)>;
    fn handle(&mut self, msg: List, _: &mut Self::Context) -> Self::Result {
        self.page(msg.state, msg.after.as_deref(), msg.limit)
    }
}

/// What a per-download command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
    Retry,
}

/// Pause, resume, cancel or retry one download.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Control {
    pub id: DownloadId,
    pub action: Action,
}

impl Handler<Control> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        let result: Reply<Vec<Box<dyn std::future::Future<Output = ()> + Unpin>>> = (|| {
            let state = self.record(&id)?.state;
            match msg.action {
                Action::Pause => Ok(self.pause_one(&id)?.into_iter().collect()),
                Action::Resume => {
                    self.resume_one(&id)?;
                    self.schedule(ctx);
                    Ok(Vec::new())
                }
                Action::Cancel => {
                    if state.is_finished() {
                        return Err(SupervisorError::Conflict(format!(
                            "download {id} is {}; nothing to cancel",
                            state.as_str()
                        )));
                    }
                    self.dequeue(&id);
                    let stops: Vec<Box<dyn std::future::Future<Output = ()> + Unpin>> = self
                        .stop_running(&id)
                        .map(|f| Box::new(Box::pin(f)) as _)
                        .into_iter()
                        .collect();
                    let d = self.record_mut(&id)?;
                    d.state = State::Cancelled;
                    d.next_retry_at = None;
                    d.finished_at = Some(now_rfc3339());
                    self.save_or_defer(&id, !stops.is_empty());
                    Ok(stops)
                }
                Action::Retry => {
                    if !matches!(state, State::Failed | State::Cancelled) {
                        return Err(SupervisorError::Conflict(format!(
                            "download {id} is {}; only failed or cancelled downloads can be retried",
                            state.as_str()
                        )));
                    }
                    let path = self.record(&id)?.path.clone();
                    if let Some(other) = self.other_claim(&id, &path) {
                        return Err(SupervisorError::Conflict(format!(
                            "{path} is now taken by download {} ({}); add it again to replace it",
                            other.id,
                            other.state.as_str()
                        )));
                    }
                    let d = self.record_mut(&id)?;
                    d.attempt = 0;
                    d.error = None;
                    d.finished_at = None;
                    self.enqueue(&id);
                    self.save(&id);
                    self.schedule(ctx);
                    Ok(Vec::new())
                }
            }
        })();
        let stops = match result {
            Ok(stops) => stops,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let action = msg.action;
        self.reply_after(stops, move |act, ctx| {
            if action == Action::Pause {
                act.announce_if_still_stopping(&id);
            }
            if action == Action::Cancel {
                if let Ok(d) = act.record(&id) {
                    // Only its own `.part`: not one that a newer download of the name owns.
                    if d.state == State::Cancelled && act.other_claim(&id, &d.path).is_none() {
                        act.remove_partial(d);
                        let d = act.record_mut(&id)?;
                        d.bytes_done = 0;
                        act.save(&id);
                    }
                }
            }
            act.schedule(ctx);
            act.view_of(&id)
        })
    }
}

/// Reorder the queue.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Move {
    pub id: DownloadId,
    pub position: usize,
}

impl Handler<Move> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Move, _: &mut Self::Context) -> Self::Result {
        let result = (|| -> Reply<()> {
            let d = self.record(&msg.id)?;
            if d.state != State::Queued {
                return Err(SupervisorError::Conflict(format!(
                    "download {} is {}; only queued downloads can be moved",
                    msg.id,
                    d.state.as_str()
                )));
            }
            let old = d.order;
            self.queue.remove(&old);
            let keys: Vec<u64> = self.queue.keys().copied().collect();
            let at = msg.position.min(keys.len());
            let before = if at == 0 { None } else { Some(keys[at - 1]) };
            let after = keys.get(at).copied();
            let slot = match (before, after) {
                (None, None) => Some(old),
                (None, Some(a)) => a
                    .checked_sub(ORDER_STEP)
                    .or_else(|| (a > 0).then_some(a / 2)),
                (Some(b), None) => Some(b + ORDER_STEP),
                (Some(b), Some(a)) => (a - b > 1).then(|| b + (a - b) / 2),
            };
            let order = match slot.filter(|o| !self.queue.contains_key(o)) {
                Some(o) => o,
                None => self.renumber_with(&msg.id, at),
            };
            self.record_mut(&msg.id)?.order = order;
            self.queue.insert(order, msg.id.clone());
            self.save(&msg.id);
            Ok(())
        })();
        if let Err(e) = result {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let id = msg.id;
        self.reply_after(Vec::new(), move |act, _| act.view_of(&id))
    }
}

impl Supervisor {
    /// No gap left between two order keys: space every live download out again, with
    /// `id` at queue position `at`. Returns `id`'s new key.
    fn renumber_with(&mut self, id: &str, at: usize) -> u64 {
        let mut live: Vec<DownloadId> = {
            let mut v: Vec<&Download> = self
                .records
                .values()
                .map(Box::as_ref)
                .filter(|d| !d.state.is_finished() && d.id != id)
                .collect();
            v.sort_by_key(|d| d.order);
            v.into_iter().map(|d| d.id.clone()).collect()
        };
        // Insert before the `at`-th queued one.
        let queued_seen = live
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                self.records
                    .get(*i)
                    .is_some_and(|d| d.state == State::Queued)
            })
            .nth(at)
            .map(|(idx, _)| idx)
            .unwrap_or(live.len());
        live.insert(queued_seen, id.to_owned());
        self.queue.clear();
        let mut changed = Vec::new();
        let mut mine = 0;
        for (n, i) in live.iter().enumerate() {
            let order = (n as u64 + 1) * ORDER_STEP;
            if let Some(d) = self.records.get_mut(i) {
                d.order = order;
                if d.state == State::Queued || d.id == id {
                    self.queue.insert(order, d.id.clone());
                }
                if d.id == id {
                    mine = order;
                }
                changed.push(Download::clone(d));
            }
        }
        self.next_order = (live.len() as u64 + 1) * ORDER_STEP;
        self.queue.remove(&mine);
        if let Err(e) = self.store.put_downloads(&changed) {
            tracing::error!(error = %e, "cannot persist the new queue order");
        }
        mine
    }
}

/// Change a download's speed cap or URL.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Patch {
    pub id: DownloadId,
    pub speed_limit_bps: Option<Option<u64>>,
    pub url: Option<String>,
}

impl Handler<Patch> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadView>>;

    fn handle(&mut self, msg: Patch, _: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        let result = (|| -> Reply<Vec<Box<dyn std::future::Future<Output = ()> + Unpin>>> {
            let state = self.record(&id)?.state;
            let mut stops = Vec::new();
            if msg.url.is_some() && state.is_running() {
                // Restart the transfer on the new URL; it resumes from the bytes on
                // disk when If-Range says the file is the same.
                if let Some(stop) = self.stop_running(&id) {
                    stops.push(Box::new(Box::pin(stop)) as _);
                }
                self.enqueue(&id);
            }
            let d = self.record_mut(&id)?;
            if let Some(limit) = msg.speed_limit_bps {
                d.speed_limit_bps = limit;
            }
            if let Some(url) = msg.url {
                d.url = url;
            }
            if let (Some(limit), Some(r)) = (msg.speed_limit_bps, self.running.get(&id)) {
                r.limiter.set_rate(limit.unwrap_or(0));
            }
            self.save(&id);
            Ok(stops)
        })();
        match result {
            Ok(stops) => self.reply_after(stops, move |act, ctx| {
                act.schedule(ctx);
                act.view_of(&id)
            }),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

/// Forget a download (and maybe its file).
#[derive(Message)]
#[rtype(result = "Reply<()>")]
pub struct Delete {
    pub id: DownloadId,
    pub delete_file: bool,
}

impl Handler<Delete> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<()>>;

    fn handle(&mut self, msg: Delete, _: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        if let Err(e) = self.record(&id) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        self.dequeue(&id);
        let stops = self
            .stop_running(&id)
            .map(|f| Box::new(Box::pin(f)) as _)
            .into_iter()
            .collect();
        let delete_file = msg.delete_file;
        self.reply_after(stops, move |act, ctx| {
            let Some(d) = act.remove_record(&id) else {
                return Ok(());
            };
            // Only this download's own files: not a `.part` or file that a newer
            // download of the same name now owns.
            let claimed = act.other_claim(&id, &d.path).map(|o| o.id.clone());
            if let Some(owner) = &claimed {
                tracing::info!(download_id = %id, owner = %owner, "keeping the files: another download owns the name now");
            } else if d.state != State::Completed {
                act.remove_partial(&d);
            } else if delete_file {
                if let Ok(path) = files::resolve_inside(&act.download_dir, &d.path) {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(download_id = %id, error = %e, "cannot delete the file");
                    }
                }
            }
            act.store.remove_download(&id)?;
            act.broadcaster
                .do_send(Publish(broadcaster::frame_json(&RemovedFrame {
                    kind: "removed",
                    id: &id,
                })));
            tracing::info!(download_id = %id, delete_file, "download removed");
            act.schedule(ctx);
            Ok(())
        })
    }
}

/// Pause or resume every download.
#[derive(Message)]
#[rtype(result = "Reply<usize>")]
pub struct All {
    pub pause: bool,
}

impl Handler<All> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<usize>>;

    fn handle(&mut self, msg: All, ctx: &mut Self::Context) -> Self::Result {
        let mut ids: Vec<(u64, DownloadId)> = self
            .records
            .values()
            .filter(|d| {
                if msg.pause {
                    matches!(
                        d.state,
                        State::Queued | State::Downloading | State::Retrying
                    )
                } else {
                    d.state == State::Paused
                }
            })
            .map(|d| (d.order, d.id.clone()))
            .collect();
        ids.sort();
        let mut stops = Vec::new();
        for (_, id) in &ids {
            if msg.pause {
                if let Ok(Some(stop)) = self.pause_one(id) {
                    stops.push(stop);
                }
            } else {
                let _ = self.resume_one(id);
            }
        }
        if !msg.pause {
            self.schedule(ctx);
        }
        let count = ids.len();
        self.reply_after(stops, move |act, _| {
            if msg.pause {
                for (_, id) in &ids {
                    act.announce_if_still_stopping(id);
                }
            }
            Ok(count)
        })
    }
}

/// Finished, failed and cancelled downloads, newest first.
#[derive(Message)]
#[rtype(result = "Vec<DownloadView>")]
pub struct History {
    pub state: Option<State>,
    pub limit: usize,
}

impl Handler<History> for Supervisor {
    type Result = MessageResult<History>;

    fn handle(&mut self, msg: History, _: &mut Self::Context) -> Self::Result {
        let mut done: Vec<&Download> = self
            .records
            .values()
            .map(Box::as_ref)
            .filter(|d| d.state.is_finished() && msg.state.is_none_or(|s| s == d.state))
            .collect();
        done.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
        MessageResult(
            done.into_iter()
                .take(msg.limit)
                .map(|d| self.view(d))
                .collect(),
        )
    }
}

/// Forget every finished download (the files stay).
#[derive(Message)]
#[rtype(result = "Reply<usize>")]
pub struct ClearHistory;

impl Handler<ClearHistory> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<usize>>;

    fn handle(&mut self, _: ClearHistory, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<DownloadId> = self
            .records
            .values()
            .filter(|d| d.state.is_finished())
            .map(|d| d.id.clone())
            .collect();
        let mut result = Ok(ids.len());
        for id in &ids {
            if let Some(d) = self.remove_record(id) {
                if d.state != State::Completed && self.other_claim(id, &d.path).is_none() {
                    self.remove_partial(&d);
                }
            }
            if let Err(e) = self.store.remove_download(id) {
                result = Err(e.into());
            }
            self.broadcaster
                .do_send(Publish(broadcaster::frame_json(&RemovedFrame {
                    kind: "removed",
                    id,
                })));
        }
        self.reply_after(Vec::new(), move |_, _| result)
    }
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
    pub by_state: BTreeMap<&'static str, usize>,
}

#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

impl Handler<GetStats> for Supervisor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let count = |s: State| self.records.values().filter(|d| d.state == s).count();
        let mut bytes = 0;
        let mut speed = 0;
        for d in self.records.values() {
            match self.live_of(d) {
                Some(l) => {
                    bytes += l.bytes_done;
                    speed += l.speed_bps;
                }
                None => bytes += d.bytes_done,
            }
        }
        let mut by_state: BTreeMap<&'static str, usize> = [
            State::Queued,
            State::Downloading,
            State::Retrying,
            State::Verifying,
            State::Paused,
            State::Completed,
            State::Failed,
            State::Cancelled,
        ]
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for d in self.records.values() {
            *by_state.entry(d.state.as_str()).or_default() += 1;
        }
        MessageResult(Stats {
            by_state,
            active: self.running.len(),
            queued: self.queue.len(),
            paused: count(State::Paused),
            completed: count(State::Completed),
            failed: count(State::Failed),
            speed_bps: speed,
            bytes_done_total: bytes,
        })
    }
}

/// The run-time settings.
#[derive(Message)]
#[rtype(result = "DownloadsConfig")]
pub struct GetSettings;

impl Handler<GetSettings> for Supervisor {
    type Result = MessageResult<GetSettings>;
    fn handle(&mut self, _: GetSettings, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.settings.clone())
    }
}

/// Replace the run-time settings (already merged and validated by the API).
#[derive(Message)]
#[rtype(result = "Reply<DownloadsConfig>")]
pub struct SetSettings(pub DownloadsConfig);

impl Handler<SetSettings> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<DownloadsConfig>>;

    fn handle(&mut self, msg: SetSettings, _: &mut Self::Context) -> Self::Result {
        if let Err(e) = msg.0.validate() {
            return Box::pin(actix::fut::ready(Err(SupervisorError::BadRequest(e))));
        }
        if let Err(e) = self.store.put_settings(&msg.0) {
            return Box::pin(actix::fut::ready(Err(e.into())));
        }
        self.settings = msg.0;
        self.engine.set_speed_limit(self.settings.speed_limit_bps);
        tracing::info!(settings = ?self.settings, "settings changed");
        self.reply_after(Vec::new(), |act, ctx| {
            act.schedule(ctx);
            Ok(act.settings.clone())
        })
    }
}

/// A websocket client: its queue starts with the snapshot, then gets every frame.
#[derive(Message)]
#[rtype(result = "mpsc::Receiver<Frame>")]
pub struct Subscribe;

impl Handler<Subscribe> for Supervisor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(broadcaster::CLIENT_QUEUE);
        let downloads = self.list();
        let snapshot = broadcaster::frame_json(&SnapshotFrame {
            kind: "snapshot",
            downloads: &downloads,
        });
        // Cannot fail: the queue is new and empty.
        let _ = tx.try_send(snapshot);
        // Registered through the same mailbox as every later state frame, so none is
        // lost between the snapshot and the first frame.
        self.broadcaster.do_send(AddClient(tx));
        MessageResult(rx)
    }
}

/// Stop every transfer with a checkpoint and keep their states, for a restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let ids: Vec<DownloadId> = self.running.keys().cloned().collect();
        let stops: Vec<_> = ids.iter().filter_map(|id| self.stop_running(id)).collect();
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
