//! The supervisor owns the queue and the running download actors. It decides nothing
//! itself: `lifecycle` says what an action does to a state, `queue` keeps the records
//! and their order; the supervisor carries that out (starts and stops engines, persists,
//! announces) in the order that keeps the disk and the answers consistent (`effects`).
//!
//! Front doors reach it only through [`crate::actors::handle::QueueHandle`].

pub(crate) mod commands;
mod effects;
mod events;
pub(crate) mod follow;
pub(crate) mod queries;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::broadcaster::Broadcaster;
use crate::actors::download::{DownloadActor, PendingJob, Reports, Stop};
use crate::actors::frames;
use crate::actors::queue_error::QueueError;
use crate::actors::sampler::Sampler;
use crate::config::DownloadsConfig;
use crate::engine::{Engine, HubTarget, Job, RateLimiter};
use crate::hub::HubClient;
use crate::queue::lifecycle::{self, Action, State, Transition};
use crate::queue::line::Queue;
use crate::queue::model::{now_rfc3339, Download, DownloadId, DownloadView, Source};
use crate::queue::progress::ProgressCell;
use crate::queue::store::{Store, StoreError};

pub use effects::Cleanup;

type Reply<T> = Result<T, QueueError>;

/// A running engine's handles.
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
    /// Where changes are published (and snapshots of the queue shared).
    broadcaster: Broadcaster,
    /// Samples the progress of running downloads.
    sampler: Sampler,
    /// The thread where download actors and their transfers run, away from the API.
    transfers: ArbiterHandle,
    download_dir: PathBuf,
    settings: DownloadsConfig,
    queue: Queue,
    running: HashMap<DownloadId, Running>,
    /// Told to stop, not yet ended: not started again until they have.
    stopping: HashMap<DownloadId, Running>,
    /// Paths whose files are being removed on a blocking thread, with the download they
    /// belonged to: neither started nor given to a new download until that is done.
    cleaning: HashMap<String, DownloadId>,
    /// Every download that completes, for whoever follows the files (the library).
    completed: tokio::sync::broadcast::Sender<Download>,
    shutting_down: bool,
}

/// What [`Supervisor::new`] needs.
pub struct SupervisorParts {
    pub store: Store,
    /// Every stored record (from [`Store::open_and_load`]).
    pub records: Vec<Download>,
    pub engine: Engine,
    pub hub: HubClient,
    pub broadcaster: Broadcaster,
    pub sampler: Sampler,
    pub transfers: ArbiterHandle,
    pub download_dir: PathBuf,
    pub settings: DownloadsConfig,
}

impl Supervisor {
    /// Loads every record; downloads that were running when the service stopped go back
    /// to the queue at their place, with the bytes of their last checkpoint.
    pub fn new(parts: SupervisorParts) -> Result<Supervisor, StoreError> {
        let mut queue = Queue::load(parts.records);
        let interrupted: Vec<DownloadId> = queue
            .iter()
            .filter(|d| d.state.is_running())
            .map(|d| d.id.clone())
            .collect();
        let now = now_rfc3339();
        let mut changed = Vec::with_capacity(interrupted.len());
        for id in &interrupted {
            let checkpoint = parts.store.checkpoint(id)?;
            let Some(d) = queue.get_mut(id) else { continue };
            if let Some(cp) = checkpoint {
                d.bytes_done = cp.bytes_done();
                d.bytes_total = cp.total.or(d.bytes_total);
                d.elapsed_secs = d.elapsed_secs.max(cp.elapsed_secs);
            }
            if let Ok(t) = lifecycle::apply(d.state, Action::Requeue) {
                queue.enter(id, &t, &now);
            }
            changed.extend(queue.get(id).cloned());
        }
        parts.store.put_downloads(&changed)?;
        tracing::info!(
            downloads = queue.len(),
            queued = queue.waiting_len(),
            resumed = changed.len(),
            "queue loaded"
        );
        Ok(Supervisor {
            store: parts.store,
            engine: parts.engine,
            hub: parts.hub,
            broadcaster: parts.broadcaster,
            sampler: parts.sampler,
            transfers: parts.transfers,
            download_dir: parts.download_dir,
            settings: parts.settings,
            queue,
            running: HashMap::new(),
            stopping: HashMap::new(),
            cleaning: HashMap::new(),
            completed: tokio::sync::broadcast::channel(256).0,
            shutting_down: false,
        })
    }

    fn record(&self, id: &str) -> Reply<&Download> {
        self.queue
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.to_owned()))
    }

    fn record_mut(&mut self, id: &str) -> Reply<&mut Download> {
        self.queue
            .get_mut(id)
            .ok_or_else(|| QueueError::NotFound(id.to_owned()))
    }

    /// What `action` would do to download `id` now, or why it is refused.
    fn decide(&self, id: &str, action: Action) -> Reply<Transition> {
        let d = self.record(id)?;
        lifecycle::apply(d.state, action).map_err(|refusal| QueueError::NotAllowed {
            id: id.to_owned(),
            refusal,
        })
    }

    /// Carries out a transition: the one way a record's state changes.
    fn enter(&mut self, id: &str, t: &Transition) {
        if !t.no_op {
            self.queue.enter(id, t, &now_rfc3339());
        }
    }

    /// Applies `action` when the lifecycle allows it; `false` (and nothing changed)
    /// when it does not. For the engine's reports, which may arrive after a command
    /// already moved the download on.
    fn try_enter(&mut self, id: &str, action: Action) -> bool {
        match self.decide(id, action) {
            Ok(t) => {
                self.enter(id, &t);
                !t.no_op
            }
            Err(_) => false,
        }
    }

    /// A download as the API shows it: position in the queue, and live numbers from
    /// its progress cell while it runs.
    fn view(&self, d: &Download, position: Option<usize>) -> DownloadView {
        let live = self.running.get(&d.id).map(|r| r.cell.live());
        d.view(position, live)
    }

    fn view_of(&self, id: &str) -> Reply<DownloadView> {
        let d = self.record(id)?;
        Ok(self.view(d, self.queue.position(d)))
    }

    /// Views of these downloads, with positions computed once (for one, counted
    /// where it stands: no map of every waiting download built for each single add).
    fn views_of(&self, ids: &[DownloadId]) -> Vec<DownloadView> {
        if let [id] = ids {
            return self.view_of(id).into_iter().collect();
        }
        let positions = self.queue.positions();
        ids.iter()
            .filter_map(|id| self.queue.get(id))
            .map(|d| self.view(d, positions.get(d.id.as_str()).copied()))
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
    fn persist(&self, id: &str) {
        let Some(d) = self.queue.get(id) else {
            return;
        };
        if let Err(e) = self.store.put_download(d) {
            tracing::error!(download_id = %id, error = %e, "cannot persist a download");
        }
    }

    fn publish(&self, id: &str) {
        if let Ok(view) = self.view_of(id) {
            self.broadcaster.publish(frames::state(&view));
        }
    }

    /// Saves a change of state. While the engine is still stopping, the page hears of
    /// it only from `Finished`: a `paused` frame whose bytes then move, or progress
    /// frames after it, would tell the user it is not really paused.
    fn save_or_defer(&mut self, id: &str, stopping: bool) {
        if stopping {
            self.persist(id);
        } else {
            self.save(id);
        }
    }

    /// Not to be started now: its engine is still stopping, or its files are being
    /// removed.
    fn is_busy(&self, id: &str) -> bool {
        self.stopping.contains_key(id) || self.cleaning.values().any(|c| c == id)
    }

    /// Starts queued downloads while there is room.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        while self.running.len() < self.settings.max_concurrent {
            let Some(id) = self.queue.next_waiting(|id| self.is_busy(id)) else {
                break;
            };
            self.start(&id, ctx);
        }
    }

    fn start(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Ok(t) = self.decide(id, Action::Start) else {
            return;
        };
        let Some(d) = self.queue.get(id) else { return };
        let pending = PendingJob {
            job: self.job_of(d),
            download_dir: self.download_dir.clone(),
            path: d.path.clone(),
        };
        let cell = Arc::new(ProgressCell::new(
            d.bytes_done,
            d.bytes_total,
            d.elapsed_secs,
        ));
        let limiter = Arc::new(RateLimiter::new(d.speed_limit_bps.unwrap_or(0)));
        let reports = Reports {
            events: ctx.address().recipient(),
            finished: ctx.address().recipient(),
        };
        let (engine, actor_cell, actor_limiter) =
            (self.engine.clone(), cell.clone(), limiter.clone());
        let addr = DownloadActor::start_in_arbiter(&self.transfers, move |_| {
            DownloadActor::new(pending, engine, reports, actor_cell, actor_limiter)
        });
        self.sampler.track(id.to_owned(), cell.clone());
        self.running.insert(
            id.to_owned(),
            Running {
                addr,
                cell,
                limiter,
            },
        );
        self.enter(id, &t);
        tracing::info!(download_id = %id, "download started");
        self.save(id);
    }

    /// The engine's job for a download (its final path is resolved by the actor).
    fn job_of(&self, d: &Download) -> Job {
        Job {
            id: d.id.clone(),
            url: d.url.clone(),
            final_path: PathBuf::new(),
            download_dir: self.download_dir.clone(),
            relative: d.path.clone(),
            place: None,
            sha256: d.sha256.clone(),
            settings: match d.connections {
                Some(n) => DownloadsConfig {
                    connections_per_download: n,
                    ..self.settings.clone()
                },
                None => self.settings.clone(),
            },
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
        }
    }

    /// Tells a running download to stop; the future resolves once it has ended. For
    /// one that is already stopping (paused a moment ago), it waits for that stop too:
    /// a cancel or delete must not remove files under an engine that still writes.
    fn stop_running(&mut self, id: &str) -> Option<effects::StopWait> {
        let request = match self.running.remove(id) {
            Some(running) => {
                // Views of a stopping download read the record: give it the bytes so
                // far rather than those of its last save.
                if let Some(d) = self.queue.get_mut(id) {
                    d.bytes_done = running.cell.done();
                }
                let request = running.addr.send(Stop);
                self.stopping.insert(id.to_owned(), running);
                request
            }
            None => self.stopping.get(id)?.addr.send(Stop),
        };
        Some(Box::pin(async move {
            let _ = request.await;
        }))
    }

    /// After waiting for a stop: announces a download whose engine has not reported its
    /// end yet (a stop that outlasted the wait, or an actor that died), so that no page
    /// keeps showing it as running while the API says otherwise.
    fn announce_if_still_stopping(&self, id: &str) {
        if self.stopping.contains_key(id) {
            self.publish(id);
        }
    }

    /// Download ids in queue order that `action` would change.
    fn ids_for(&self, action: Action) -> Vec<DownloadId> {
        let mut ids: Vec<(u64, DownloadId)> = self
            .queue
            .iter()
            .filter(|d| lifecycle::apply(d.state, action).is_ok_and(|t| !t.no_op))
            .map(|d| (d.order, d.id.clone()))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn count(&self, state: State) -> usize {
        self.queue.iter().filter(|d| d.state == state).count()
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Commands wait in the mailbox rather than growing it without bound.
        ctx.set_mailbox_capacity(1024);
        self.schedule(ctx);
    }
}
