//! [`QueueHandle`]: the one way every front door (REST, websocket, and those to come)
//! reaches the supervisor. Plain async methods with domain results; only this module
//! knows that messages exist.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;

use crate::actors::broadcaster::Subscription;
use crate::actors::queue_error::QueueError;
use crate::actors::supervisor::commands::{
    Add, All, ClearHistory, Control, Delete, Move, Patch, PatchSettings, Shutdown,
};
use crate::actors::supervisor::follow::{
    CompletedFiles, DurablePrefix, FollowCompletions, NoteDigest, NoteIdentity, WriterOf,
};
use crate::actors::supervisor::queries::{Events, Get, GetSettings, GetStats, History, List};
use crate::actors::supervisor::Supervisor;
use crate::config::{DownloadsConfig, SettingsPatch};
use crate::queue::lifecycle::{Action, State};
use crate::queue::model::{Download, DownloadId, DownloadPatch, DownloadView, NewDownload, Stats};

type Result<T> = std::result::Result<T, QueueError>;

/// A cheap-to-clone handle on the queue.
#[derive(Clone)]
pub struct QueueHandle {
    addr: Addr<Supervisor>,
    download_dir: Arc<PathBuf>,
    /// What asking again for a source checks it with (`again`): the Hub, and the
    /// engine's client for a URL's `HEAD`.
    hub: crate::hub::HubClient,
    engine: crate::engine::Engine,
}

impl QueueHandle {
    pub fn new(
        addr: Addr<Supervisor>,
        download_dir: PathBuf,
        hub: crate::hub::HubClient,
        engine: crate::engine::Engine,
    ) -> Self {
        Self {
            addr,
            download_dir: Arc::new(download_dir),
            hub,
            engine,
        }
    }

    pub(super) fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    pub(super) fn download_dir(&self) -> &std::path::Path {
        &self.download_dir
    }

    pub(super) fn hub(&self) -> &crate::hub::HubClient {
        &self.hub
    }

    pub(super) fn engine(&self) -> &crate::engine::Engine {
        &self.engine
    }

    /// Adds downloads, all or none, in the order given.
    pub async fn add(&self, items: Vec<NewDownload>) -> Result<Vec<DownloadView>> {
        let on_disk = self.on_disk(&items).await?;
        self.addr.send(Add { items, on_disk }).await?
    }

    /// Adds one download.
    pub async fn add_one(&self, item: NewDownload) -> Result<DownloadView> {
        let mut added = self.add(vec![item]).await?;
        added
            .pop()
            .ok_or_else(|| QueueError::Unavailable("nothing was added".into()))
    }

    /// Whether each item's path exists in `download_dir` (a name held by a file on
    /// disk is taken), looked up on a blocking thread; one name is looked up here: a
    /// single `lstat` of a name in a directory the kernel has cached costs a few
    /// microseconds, the trip to the blocking pool and back several times that, on
    /// every add a script makes.
    async fn on_disk(&self, items: &[NewDownload]) -> Result<Vec<bool>> {
        let root = self.download_dir.clone();
        if let [one] = items {
            return Ok(vec![root.join(&one.path).symlink_metadata().is_ok()]);
        }
        let paths: Vec<String> = items.iter().map(|n| n.path.clone()).collect();
        tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| root.join(p).symlink_metadata().is_ok())
                .collect()
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    pub async fn get(&self, id: &str) -> Result<DownloadView> {
        self.addr.send(Get(id.to_owned())).await?
    }

    /// A page of downloads (live and queued in queue order, then the history), with
    /// the id to pass as `after` for the next one.
    pub async fn list(
        &self,
        state: Option<State>,
        after: Option<DownloadId>,
        limit: usize,
    ) -> Result<(Vec<DownloadView>, Option<DownloadId>)> {
        self.addr
            .send(List {
                state,
                after,
                limit,
            })
            .await?
    }

    /// Pause, resume, cancel or retry one download.
    pub async fn control(&self, id: &str, action: Action) -> Result<DownloadView> {
        let id = id.to_owned();
        self.addr.send(Control { id, action }).await?
    }

    pub async fn pause(&self, id: &str) -> Result<DownloadView> {
        self.control(id, Action::Pause).await
    }

    pub async fn resume(&self, id: &str) -> Result<DownloadView> {
        self.control(id, Action::Resume).await
    }

    pub async fn cancel(&self, id: &str) -> Result<DownloadView> {
        self.control(id, Action::Cancel).await
    }

    pub async fn retry(&self, id: &str) -> Result<DownloadView> {
        self.control(id, Action::Retry).await
    }

    /// Moves a queued download to `position` (0 = next to start).
    pub async fn move_to(&self, id: &str, position: usize) -> Result<DownloadView> {
        let id = id.to_owned();
        self.addr.send(Move { id, position }).await?
    }

    pub async fn patch(&self, id: &str, patch: DownloadPatch) -> Result<DownloadView> {
        let id = id.to_owned();
        self.addr.send(Patch { id, patch }).await?
    }

    /// Forgets a download; `delete_file` removes its finished file too.
    pub async fn delete(&self, id: &str, delete_file: bool) -> Result<()> {
        let id = id.to_owned();
        self.addr.send(Delete { id, delete_file }).await?
    }

    /// Pauses every download that can be; how many.
    pub async fn pause_all(&self) -> Result<usize> {
        self.addr.send(All(Action::Pause)).await?
    }

    /// Resumes every paused download; how many.
    pub async fn resume_all(&self) -> Result<usize> {
        self.addr.send(All(Action::Resume)).await?
    }

    pub async fn history(&self, state: Option<State>, limit: usize) -> Result<Vec<DownloadView>> {
        Ok(self.addr.send(History { state, limit }).await?)
    }

    /// Forgets every finished download; how many.
    pub async fn clear_history(&self) -> Result<usize> {
        self.addr.send(ClearHistory).await?
    }

    pub async fn stats(&self) -> Result<Stats> {
        Ok(self.addr.send(GetStats).await?)
    }

    pub async fn settings(&self) -> Result<DownloadsConfig> {
        Ok(self.addr.send(GetSettings).await?)
    }

    /// Changes some run-time settings and persists them; the merged result.
    pub async fn patch_settings(&self, patch: SettingsPatch) -> Result<DownloadsConfig> {
        self.addr.send(PatchSettings(patch)).await?
    }

    /// Every download that completes from now on, as its record.
    pub async fn completions(&self) -> Result<tokio::sync::broadcast::Receiver<Download>> {
        Ok(self.addr.send(FollowCompletions).await?)
    }

    /// Every completed download, newest first: for the library, which matches files
    /// to the downloads that fetched them.
    pub async fn completed(&self) -> Result<Vec<DownloadView>> {
        self.history(Some(State::Completed), usize::MAX).await
    }

    /// Every completed download that knows the identity of the file it completed, as
    /// its record (for the library's scans).
    pub async fn completed_files(&self) -> Result<Vec<Download>> {
        Ok(self.addr.send(CompletedFiles).await?)
    }

    /// The live download that writes `path` (relative to `download_dir`), if any.
    pub async fn writer_of(&self, path: &str) -> Result<Option<DownloadId>> {
        Ok(self.addr.send(WriterOf(path.to_owned())).await?)
    }

    /// The bytes from the start of a running download's `.part` that are on disk for
    /// good (fsynced and checkpointed); `None` before its first checkpoint and after it
    /// finished. A reader of the growing file (the LAN mirror) reads no further.
    pub async fn durable_prefix(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.addr.send(DurablePrefix(id.to_owned())).await?)
    }

    /// Records the sha256 of a completed download's file, learned after the fact (no
    /// expected digest); from any thread, without waiting.
    pub fn note_digest(&self, id: &str, sha256: &str) {
        self.addr.do_send(NoteDigest {
            id: id.to_owned(),
            sha256: sha256.to_owned(),
        });
    }

    /// Records the identity (inode, mtime in ns) a completed download's file has now,
    /// after the library made it a hard link to an identical file: asking again for
    /// its source still finds it ours. From any thread, without waiting.
    pub fn note_identity(&self, id: &str, identity: [u64; 2]) {
        self.addr.do_send(NoteIdentity {
            id: id.to_owned(),
            identity,
        });
    }

    /// The frames for one websocket client: a snapshot, in pieces shared with every
    /// client that subscribes while it is current, then every change (and a fresh
    /// snapshot whenever the client fell behind).
    pub async fn events(&self) -> Result<Subscription> {
        Ok(self.addr.send(Events).await?)
    }

    /// Checkpoints every transfer and stops the supervisor (the states are kept).
    pub async fn shutdown(&self) {
        let _ = self.addr.send(Shutdown).await;
    }
}
