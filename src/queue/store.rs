//! Persistence on sled: download records, transfer checkpoints and run-time settings.
//!
//! Every call is cheap and in memory except [`Store::flush`], which fsyncs and therefore
//! runs on a blocking thread. Callers flush before acknowledging a state change.
//!
//! The download records and the settings are also appended to a journal of our own
//! ([`journal`]), which start-up compares with sled ([`startup`]): damage to sled's
//! files is found, kept aside and recovered from, never met by a shorter queue.

mod background;
mod checkpoint;
mod journal;
mod lock;
mod startup;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::DownloadsConfig;
use crate::queue::model::Download;

pub use checkpoint::Checkpoint;
use journal::{Entry, Journal};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("database task failed: {0}")]
    Join(String),
    #[error("database is unreadable (corrupt?): {0}")]
    Unreadable(String),
    /// sled holds an exclusive file lock on its database while open: another process
    /// (a running service, or a `pull` without one) has this data dir.
    #[error("data dir {} is in use by another model-manager", .0.display())]
    InUse(std::path::PathBuf),
    #[error("journal: {0}")]
    Journal(std::io::Error),
    #[error("data dir: {0}")]
    DataDir(std::io::Error),
    /// Start-up found damage it will not settle by itself: one line saying what, and
    /// how to recover.
    #[error("{0}")]
    Refused(String),
}

thread_local! {
    /// Set while this thread runs [`quietly`]: its panics are caught and reported as
    /// errors, so the panic hook keeps quiet about them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without printing it. The panic hook is process-wide: it
/// is wrapped once, and keeps quiet only for the thread inside `quietly`. (Swapping
/// the hook for a silent one around the call, as before, silenced every other thread's
/// panics meanwhile, and two threads doing it at once could leave it silent for good:
/// a failing test then printed nothing at all.)
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

/// The sled database behind the service; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every clone of a [`Store`] shares (the background flush holds it weakly).
pub struct Inner {
    flushes: FlushGroup,
    /// Taken in turn by commits: one journal sync at a time, shared by all who wait.
    commits: tokio::sync::Mutex<()>,
    /// sled's flush after commits, on a thread of its own.
    later: background::Later,
    journal: Arc<Journal>,
    db: sled::Db,
    downloads: sled::Tree,
    checkpoints: sled::Tree,
    meta: sled::Tree,
    /// What the library knows of each file, by path relative to `download_dir`.
    library: sled::Tree,
    /// Chunk maps of files fetched from Xet storage, by path (a cache: losing it only
    /// costs a full fetch of an update).
    xet_maps: sled::Tree,
}

const SETTINGS_KEY: &[u8] = b"settings";
const LAST_UPDATE_CHECK_KEY: &[u8] = b"library.last_update_check";

/// From how many records on a start-up scan gives back more memory than a second open
/// of the database costs (see [`Store::open_and_load`]).
const REOPEN_AFTER_RECORDS: usize = 4096;

/// Group commit of flushes: tickets taken and covered.
#[derive(Default)]
struct FlushGroup {
    requested: std::sync::atomic::AtomicU64,
    completed: std::sync::atomic::AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // The last handle but the one of a flush on its way: wait for that flush, so
        // that sled closes now (see `background::Later::wait_idle`).
        if Arc::strong_count(&self.inner) == 2 {
            self.inner.later.wait_idle();
        }
    }
}

impl std::ops::Deref for Store {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Store {
    /// Opens (or creates) the database under `data_dir/v1`; the version directory lets a
    /// later format change migrate instead of misreading. Holds the data dir's lock,
    /// and compares sled with the journal before anything else reads it (see
    /// [`startup`]): damage is recovered from, or refused with one line.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let lock = lock::DirLock::take(data_dir)?;
        let mut found = startup::AsFound::copy(data_dir)?;
        // With the data dir's lock ours, sled's own lock can only be held by a database
        // this process closed a moment ago (sled lets go when its last job ends).
        let db = match reopen(data_dir) {
            Ok(db) => db,
            Err(StoreError::InUse(dir)) => {
                found.discard();
                return Err(StoreError::InUse(dir));
            }
            Err(e) => {
                found.restore();
                return Err(startup::unreadable(data_dir, &e.to_string()));
            }
        };
        match startup::reconcile(data_dir, &db, &mut found, lock) {
            Ok(journal) => {
                found.discard();
                Store::assemble(db, Arc::new(journal))
            }
            Err(e) => {
                drop(db);
                found.restore();
                Err(match e {
                    StoreError::Refused(_) => e,
                    e => startup::unreadable(data_dir, &e.to_string()),
                })
            }
        }
    }

    fn assemble(db: sled::Db, journal: Arc<Journal>) -> Result<Store, StoreError> {
        let downloads = db.open_tree("downloads")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let meta = db.open_tree("meta")?;
        let library = db.open_tree("library")?;
        let xet_maps = db.open_tree("xet_maps")?;
        let inner = Arc::new_cyclic(|weak| Inner {
            flushes: Default::default(),
            commits: Default::default(),
            later: background::Later::start(weak.clone()),
            journal,
            db,
            downloads,
            checkpoints,
            meta,
            library,
            xet_maps,
        });
        Ok(Store { inner })
    }

    /// Opens the database and reads every download record (start-up).
    ///
    /// sled 0.34 keeps every page that a full scan reads, whatever `cache_capacity`
    /// says (about half a KiB per record: 5 MiB for 10,000 queued downloads). Opening
    /// it again after the scan leaves resident only the pages the service touches.
    /// A second open costs about 1.5 MiB of its own (sled does not give everything
    /// back on close), so it is done only when the scan was large enough to pay.
    pub fn open_and_load(data_dir: &Path) -> Result<(Store, Vec<Download>), StoreError> {
        let store = Store::open(data_dir)?;
        let records = store.load_downloads()?;
        if records.len() < REOPEN_AFTER_RECORDS {
            return Ok((store, records));
        }
        let journal = store.journal.clone();
        drop(store);
        release_freed_memory();
        Ok((Store::assemble(reopen(data_dir)?, journal)?, records))
    }

    /// Every download record, in id (= creation) order.
    fn load_downloads(&self) -> Result<Vec<Download>, StoreError> {
        self.downloads
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    pub fn put_download(&self, download: &Download) -> Result<(), StoreError> {
        let value = serde_json::to_vec(download)?;
        let mut entry = Entry::downloads();
        entry.put(download.id.as_bytes(), &value);
        self.journal.append(entry, || {
            self.downloads.insert(download.id.as_bytes(), value)?;
            Ok(())
        })
    }

    /// Writes many records in one atomic batch (one entry of the journal).
    pub fn put_downloads<'a>(
        &self,
        downloads: impl IntoIterator<Item = &'a Download>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut entry = Entry::downloads();
        let mut single = None;
        for d in downloads {
            let value = serde_json::to_vec(d)?;
            entry.put(d.id.as_bytes(), &value);
            if let Some((id, value)) = single.take() {
                batch.insert::<&[u8], Vec<u8>>(id, value);
            }
            single = Some((d.id.as_bytes(), value));
        }
        // A batch of one is a plain insert: sled 0.34 seals and writes its log buffer
        // twice around every batch (`pin_log`), two writes and a sync of its log for a
        // single add, which every add paid.
        let Some((id, value)) = single else {
            return Ok(());
        };
        if entry.len() == 1 {
            return self.journal.append(entry, || {
                self.downloads.insert(id, value)?;
                Ok(())
            });
        }
        batch.insert(id, value);
        self.journal.append(entry, || {
            self.downloads.apply_batch(batch)?;
            Ok(())
        })
    }

    /// Forgets a download and its checkpoint.
    pub fn remove_download(&self, id: &str) -> Result<(), StoreError> {
        let mut entry = Entry::downloads();
        entry.remove(id.as_bytes());
        self.journal.append(entry, || {
            self.downloads.remove(id.as_bytes())?;
            self.checkpoints.remove(id.as_bytes())?;
            Ok(())
        })
    }

    pub fn checkpoint(&self, id: &str) -> Result<Option<Checkpoint>, StoreError> {
        match self.checkpoints.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn put_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.checkpoints
            .insert(id.as_bytes(), serde_json::to_vec(checkpoint)?)?;
        Ok(())
    }

    /// Whether there was one to remove.
    pub fn remove_checkpoint(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.checkpoints.remove(id.as_bytes())?.is_some())
    }

    /// Every library record (read once at start-up). A record that no longer parses
    /// (an older format) is skipped: the next scan reads its file again.
    pub fn library_records<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for item in self.library.iter() {
            let (k, v) = item?;
            if let (Ok(path), Ok(rec)) = (String::from_utf8(k.to_vec()), serde_json::from_slice(&v))
            {
                out.push((path, rec));
            }
        }
        Ok(out)
    }

    pub fn put_library<T: Serialize>(&self, path: &str, record: &T) -> Result<(), StoreError> {
        self.library
            .insert(path.as_bytes(), serde_json::to_vec(record)?)?;
        Ok(())
    }

    pub fn remove_library(&self, path: &str) -> Result<(), StoreError> {
        self.library.remove(path.as_bytes())?;
        Ok(())
    }

    /// Every chunk map (see `engine::xet`); one that no longer parses is skipped.
    pub fn xet_maps<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for item in self.xet_maps.iter() {
            let (k, v) = item?;
            if let (Ok(path), Ok(map)) = (String::from_utf8(k.to_vec()), serde_json::from_slice(&v))
            {
                out.push((path, map));
            }
        }
        Ok(out)
    }

    pub fn xet_map<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .xet_maps
            .get(path.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn put_xet_map<T: Serialize>(&self, path: &str, map: &T) -> Result<(), StoreError> {
        self.xet_maps
            .insert(path.as_bytes(), serde_json::to_vec(map)?)?;
        Ok(())
    }

    pub fn remove_xet_map(&self, path: &str) -> Result<(), StoreError> {
        self.xet_maps.remove(path.as_bytes())?;
        Ok(())
    }

    /// Settings changed at run time (`PATCH /api/settings`), which win over the config.
    pub fn settings(&self) -> Result<Option<DownloadsConfig>, StoreError> {
        match self.meta.get(SETTINGS_KEY)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn put_settings(&self, settings: &DownloadsConfig) -> Result<(), StoreError> {
        let value = serde_json::to_vec(settings)?;
        self.journal.append(Entry::settings(&value), || {
            self.meta.insert(SETTINGS_KEY, value)?;
            Ok(())
        })
    }

    /// When the library last asked the Hub for newer files (seconds since the epoch).
    pub fn last_update_check(&self) -> Result<Option<u64>, StoreError> {
        match self.meta.get(LAST_UPDATE_CHECK_KEY)? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    pub fn put_last_update_check(&self, secs: u64) -> Result<(), StoreError> {
        self.meta
            .insert(LAST_UPDATE_CHECK_KEY, serde_json::to_vec(&secs)?)?;
        Ok(())
    }

    /// Makes everything written so far durable (blocking: fsync): the journal, then
    /// sled; then the journal records that sled has it all.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let covered = self.journal.sync()?;
        self.db.flush()?;
        // Without the mark a later start-up takes the newest entries for not yet
        // flushed, which it settles quietly: a failure here loses nothing.
        let settings = || self.meta.get(SETTINGS_KEY).ok().flatten();
        if let Err(e) = self.journal.durable(covered, &self.downloads, settings) {
            tracing::warn!(error = %e, "cannot mark the journal durable");
        }
        Ok(())
    }

    /// Makes the download records and settings written so far durable: one sync of
    /// the journal, which start-up replays over sled (see [`startup`]); sled's own
    /// flush follows in the background. Not for what only sled holds (checkpoints,
    /// the library): that takes [`Store::flush`]. A group commit: whoever arrives
    /// while a sync runs shares the next one, and returns at once when a sync since
    /// its writes already covered them.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let Some(written) = self.journal.unsynced() else {
            return Ok(());
        };
        let _turn = self.commits.lock().await;
        if self.journal.synced() >= written {
            return Ok(());
        }
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.sync())
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        self.later.poke();
        Ok(())
    }

    /// [`Store::flush_blocking`] on a blocking thread (`flush_async` can deadlock in 0.34),
    /// as a group commit: callers that arrive while a flush runs share the next one,
    /// so a burst of state changes costs one or two fsyncs, not one each.
    pub async fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let ticket = self.flushes.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.flushes.turn.lock().await;
        if self.flushes.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything written before this load is covered by the flush below.
        let covers = self.flushes.requested.load(Ordering::SeqCst);
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        self.flushes.completed.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }
}

/// Opens sled under `data_dir/v1`. sled 0.34 can panic on some corrupt files instead
/// of returning an error: start-up must end with one clear line, not a backtrace.
fn open_sled(data_dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(data_dir.join("v1"))
        // sled's default cache is 1 GiB; records are small, a few MiB is plenty.
        .cache_capacity(8 * 1024 * 1024)
        .flush_every_ms(Some(500));
    match quietly(move || config.open()) {
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            Err(StoreError::InUse(data_dir.to_owned()))
        }
        Ok(result) => Ok(result?),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "sled panicked".into());
            Err(StoreError::Unreadable(why))
        }
    }
}

/// Opens sled again after this process has just closed it (a restart in the same
/// process, or the start-up scan's second open): sled lets go of its file lock when
/// its last background job ends, which can be a moment later.
fn reopen(data_dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut waited = false;
    loop {
        match open_sled(data_dir) {
            Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                if !waited {
                    tracing::warn!("waiting for sled to release the database closed a moment ago");
                    waited = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Gives the pages of freed heap memory back to the system, so that memory freed at
/// start-up does not stay counted in the service's RSS.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it
    // touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
#[path = "store/store_tests.rs"]
mod tests;
