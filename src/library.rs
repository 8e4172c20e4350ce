//! The model library: every file under `download_dir` (downloaded by us or put there by
//! hand), with what its GGUF header says, its sha256, and where it is published for
//! other runtimes (the HuggingFace cache).
//!
//! The index lives in memory (the listing never waits for the disk or the queue) and in
//! sled, keyed by path with the size, mtime and inode it was read at, so a file is read
//! once. A scan at start-up, one after every completed download and one on
//! `POST /api/library/rescan` keep it current; hashing of files whose digest nobody
//! told us runs on a thread of its own, one file at a time, at the lowest priority.

mod hasher;
pub mod hf_cache;
mod inode;
mod links;
mod lmstudio;
mod notify;
pub mod ollama;
mod publish;
mod record;
mod scan;
mod updates;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::actors::handle::QueueHandle;
use crate::queue::model::Download;
use crate::queue::store::{Store, StoreError};

pub use publish::Folders;
pub use record::{LibraryFile, Published, Record, Update};
pub use updates::CheckReport;

/// Why a library operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{0} is not in the library")]
    NotFound(String),
    #[error("{path} is being written by download {by}")]
    Busy { path: String, by: String },
    #[error("path {0:?} is refused: {1}")]
    BadPath(String, String),
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the library task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Queue(#[from] crate::actors::queue_error::QueueError),
    #[error("{0}: the last update check found nothing newer on the Hub")]
    NoUpdate(String),
    #[error("{0} is not the file the library indexed any more (replaced or changed on disk); nothing was deleted, and the library was scanned again")]
    Changed(String),
}

/// What the library publishes to and checks against.
#[derive(Clone)]
pub struct Options {
    pub folders: Folders,
    pub hub: crate::hub::HubClient,
    /// 0 = never check on its own.
    pub check_updates_hours: u64,
}

/// `GET /api/library`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing {
    pub files: Vec<LibraryFile>,
    /// The bytes of every file in the library, each counted once per path.
    pub bytes_total: u64,
    /// What hard links between identical files saved: each inode's size for every
    /// path beyond its first.
    pub bytes_saved_by_links: u64,
    /// Free space on download_dir's file system.
    pub bytes_free: Option<u64>,
}

/// A cheap-to-clone handle on the library.
#[derive(Clone)]
pub struct LibraryHandle {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    store: Store,
    queue: QueueHandle,
    folders: Folders,
    hub: crate::hub::HubClient,
    index: RwLock<BTreeMap<String, Record>>,
    /// One scan at a time.
    scanning: tokio::sync::Mutex<()>,
    /// One update check at a time.
    checking: tokio::sync::Mutex<()>,
    hasher: hasher::Hasher,
    notifier: notify::Notifier,
}

impl LibraryHandle {
    /// Loads the stored index, starts the hashing thread, a first scan and the
    /// follower of completed downloads. `root` is `download_dir`, canonical.
    pub fn start(
        root: PathBuf,
        store: Store,
        queue: QueueHandle,
        options: Options,
        frames: Option<actix::Recipient<crate::actors::broadcaster::Announce>>,
    ) -> Result<LibraryHandle, LibraryError> {
        let root = root.canonicalize()?;
        let records: BTreeMap<String, Record> = store.library_records()?.into_iter().collect();
        let handle = LibraryHandle {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
                root,
                store,
                queue,
                folders: options.folders,
                hub: options.hub,
                index: RwLock::new(records),
                scanning: tokio::sync::Mutex::new(()),
                checking: tokio::sync::Mutex::new(()),
                hasher: hasher::Hasher::start(weak.clone()),
                notifier: notify::Notifier::new(frames),
            }),
        };
        let first = handle.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = first.rescan().await {
                tracing::warn!(error = %e, "the first library scan failed");
            }
            first.follow_completions().await;
        });
        if options.check_updates_hours > 0 {
            actix_web::rt::spawn(updates::watch(
                Arc::downgrade(&handle.inner),
                options.check_updates_hours,
            ));
        }
        Ok(handle)
    }

    /// The whole library, in path order.
    pub fn list(&self) -> Listing {
        let files = {
            let index = self.inner.read();
            index.iter().map(|(path, r)| r.view(path)).collect()
        };
        let (bytes_total, bytes_saved_by_links, bytes_free) = self.inner.listing_totals();
        Listing {
            files,
            bytes_total,
            bytes_saved_by_links,
            bytes_free,
        }
    }

    /// The file `file` of Hub repo `repo` (`download_dir/<repo>/<file>`, fetched from
    /// that repo): where it is on disk and what the library knows of it.
    pub fn hub_file(&self, repo: &str, file: &str) -> Option<(PathBuf, Record)> {
        let path = format!("{repo}/{file}");
        let record = self.inner.read().get(&path).cloned()?;
        (record.repo.as_deref() == Some(repo)).then(|| (self.inner.full_path(&path), record))
    }

    /// Opens library file `path` for reading through the directory handles (a
    /// regular file only: a link or FIFO swapped in is refused, never followed or
    /// waited on), with what it is now: what a reader that serves it should use.
    pub fn open(&self, path: &str) -> std::io::Result<(std::fs::File, crate::files::Stat)> {
        self.inner.open(path)
    }

    /// Whether library file `path` is still the very file download `download_id`
    /// completed (its record says so, and the file on disk is the identity it was
    /// read at then): only then do that download's digest and commit stand for it
    /// (blocking). A path the library has not indexed yet is not vouched for.
    pub fn completed_intact(&self, path: &str, download_id: &str) -> bool {
        let record = self.inner.read().get(path).cloned();
        let Some(record) =
            record.filter(|r| r.ours && r.download_id.as_deref() == Some(download_id))
        else {
            return false;
        };
        let now = self
            .inner
            .locate(path)
            .and_then(|(dir, name)| dir.stat(name));
        now.ok().flatten().is_some_and(|st| record.matches(&st))
    }

    /// `download_dir/<path>`, for a path relative to it (already validated).
    pub fn full_path(&self, path: &str) -> PathBuf {
        self.inner.full_path(path)
    }

    /// Every file of the library fetched from Hub repo `repo`, by its path in the repo.
    pub fn repo_files(&self, repo: &str) -> Vec<(String, Record)> {
        let prefix = format!("{repo}/");
        self.inner
            .read()
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(_, r)| r.repo.as_deref() == Some(repo))
            .map(|(p, r)| (p[prefix.len()..].to_owned(), r.clone()))
            .collect()
    }

    /// Walks `download_dir` and brings the index up to date; how many files it holds.
    pub async fn rescan(&self) -> Result<usize, LibraryError> {
        let _one = self.inner.scanning.lock().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || scan::scan(&inner))
            .await
            .map_err(|e| LibraryError::Join(e.to_string()))?
    }

    /// Removes a file of the library and every link the service made to it. Any path
    /// the library lists can be deleted (a hand-placed `aux.gguf` or a name with a
    /// newline too: the name rules are for new files); nothing else can.
    pub async fn delete(&self, path: &str) -> Result<(), LibraryError> {
        if !self.inner.read().contains_key(path) {
            return Err(LibraryError::NotFound(path.to_owned()));
        }
        if let Some(by) = self.inner.queue.writer_of(path).await? {
            return Err(LibraryError::Busy {
                path: path.to_owned(),
                by,
            });
        }
        let inner = self.inner.clone();
        let owned = path.to_owned();
        let removed = tokio::task::spawn_blocking(move || inner.remove_file(&owned))
            .await
            .map_err(|e| LibraryError::Join(e.to_string()))?;
        if let Err(LibraryError::Changed(_)) = &removed {
            // What the name holds now is read again (and what was published of the
            // indexed file goes with it).
            if let Err(e) = self.rescan().await {
                tracing::warn!(%path, error = %e, "cannot scan the library again");
            }
        }
        removed
    }

    /// Asks the Hub, one request per repo, which files it has newer than ours.
    pub async fn check_updates(&self) -> Result<CheckReport, LibraryError> {
        let _one = self.inner.checking.lock().await;
        updates::check(&self.inner).await
    }

    /// Queues the newer file the last check found for `path`, under the same name.
    pub async fn update(
        &self,
        path: &str,
    ) -> Result<crate::queue::model::DownloadView, LibraryError> {
        crate::files::validate_relative_path(path)
            .map_err(|e| LibraryError::BadPath(path.to_owned(), e.to_string()))?;
        let record = self.inner.read().get(path).cloned();
        let record = record.ok_or_else(|| LibraryError::NotFound(path.to_owned()))?;
        let new = updates::newer_download(&self.inner.hub, path, &record)?;
        Ok(self.inner.queue.add_one(new).await?)
    }

    /// Each completed download: its file is read (and published) at once.
    async fn follow_completions(&self) {
        let Ok(mut completions) = self.inner.queue.completions().await else {
            return;
        };
        loop {
            match completions.recv().await {
                Ok(d) => self.completed(d).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let _ = self.rescan().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn completed(&self, d: Download) {
        let _one = self.inner.scanning.lock().await;
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || scan::scan_one(&inner, &d)).await;
        if let Ok(Err(e)) | Err(e) = done.map_err(|e| LibraryError::Join(e.to_string())) {
            tracing::warn!(error = %e, "cannot add a completed download to the library");
        }
    }
}

impl Inner {
    /// Bytes of every file, bytes that hard links saved (each inode's size for every
    /// path beyond its first), free bytes on download_dir's file system.
    fn listing_totals(&self) -> (u64, u64, Option<u64>) {
        let index = self.read();
        let mut by_inode: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
        for r in index.values() {
            by_inode.entry((r.dev, r.ino)).or_insert((r.size, 0)).1 += 1;
        }
        let total = index.values().map(|r| r.size).sum();
        let saved = by_inode
            .values()
            .map(|(size, n)| size * n.saturating_sub(1))
            .sum();
        (total, saved, crate::files::free_space(&self.root).ok())
    }

    /// Announces what changed since the last announcement.
    fn announce(&self) {
        self.notifier.flush(self);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Record>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Record>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn full_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Stores and indexes a record made from a read of the file. What was learned of
    /// the same file meanwhile (its digest, its publication: the hasher runs beside the
    /// scan) is kept, so that neither undoes the other.
    fn put(&self, path: &str, mut record: Record) -> Result<(), StoreError> {
        let mut index = self.write();
        if let Some(now) = index.get(path).filter(|r| r.same_file(&record)) {
            if record.sha256.is_none() {
                record.sha256.clone_from(&now.sha256);
            }
            record.published.fill_from(&now.published);
            if record.same_at.is_none() {
                record.same_at.clone_from(&now.same_at);
            }
            record.ours |= now.ours;
        }
        self.store.put_library(path, &record)?;
        index.insert(path.to_owned(), record);
        drop(index);
        self.notifier.changed(path);
        Ok(())
    }

    /// Changes the record of `path` (when there is one) and stores it when it changed.
    fn change(
        &self,
        path: &str,
        edit: impl FnOnce(&mut Record),
    ) -> Result<Option<Record>, StoreError> {
        let mut index = self.write();
        let Some(record) = index.get_mut(path) else {
            return Ok(None);
        };
        let before = record.clone();
        edit(record);
        let after = record.clone();
        if after != before {
            self.store.put_library(path, &after)?;
            drop(index);
            self.notifier.changed(path);
        }
        Ok(Some(after))
    }

    fn forget(&self, path: &str) -> Result<(), StoreError> {
        self.store.remove_library(path)?;
        self.write().remove(path);
        self.notifier.removed(path);
        Ok(())
    }

    /// The folder of library file `path` (walked from `download_dir` through
    /// directory handles, no link followed) and its name there.
    fn locate(&self, path: &str) -> std::io::Result<(crate::files::Dir, std::ffi::OsString)> {
        let root = crate::files::Dir::open(&self.root)?;
        crate::files::parent_of(&root, Path::new(""), Path::new(path), false)
    }

    /// Opens library file `path` for reading through its folder's handle (a regular
    /// file only: never a link, never blocking on a FIFO), with what it is now.
    fn open(&self, path: &str) -> std::io::Result<(std::fs::File, crate::files::Stat)> {
        let (dir, name) = self.locate(path)?;
        let file = dir.open_file(name)?;
        let st = crate::files::Dir::stat_of(&file)?;
        Ok((file, st))
    }

    /// The inode `record` was read at, as the publishers compare it.
    fn identity(&self, path: &str, record: &Record) -> inode::Identity {
        inode::Identity {
            path: self.full_path(path),
            dev: record.dev,
            ino: record.ino,
        }
    }

    /// Library file `path` as `record` knows it, for a publisher to link.
    fn ours(&self, path: &str, record: &Record) -> std::io::Result<inode::Ours> {
        let (dir, name) = self.locate(path)?;
        Ok(inode::Ours {
            id: self.identity(path, record),
            dir,
            name,
        })
    }

    /// Blocking: the file, its HF cache entries, its record. Only while its name
    /// still holds the file the record was read at: a name another program has
    /// given to a new file since (or a folder on its way swapped for a link) is
    /// [`LibraryError::Changed`], and nothing goes. The name is removed in its
    /// folder's handle: a link there goes itself, what it points to stays.
    fn remove_file(&self, path: &str) -> Result<(), LibraryError> {
        let record = self.read().get(path).cloned();
        let Some(record) = record else {
            return Err(LibraryError::NotFound(path.to_owned()));
        };
        let changed = || LibraryError::Changed(path.to_owned());
        let (dir, name) = match self.locate(path) {
            Ok(found) => (Some(found.0), found.1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Default::default()),
            // A folder on the way is not one any more (a link, a file).
            Err(e)
                if e.raw_os_error()
                    .is_some_and(|n| n == libc::ENOTDIR || n == libc::ELOOP) =>
            {
                return Err(changed())
            }
            Err(e) => return Err(e.into()),
        };
        let now = match &dir {
            Some(dir) => dir.stat(&name)?,
            None => None,
        };
        if now.as_ref().is_some_and(|st| !record.matches(st)) {
            return Err(changed());
        }
        publish::unpublish(
            &self.folders,
            &record.published,
            &self.identity(path, &record),
        );
        if let (Some(dir), Some(_)) = (&dir, now) {
            match dir.unlink(&name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        self.forget(path)?;
        self.announce();
        tracing::info!(%path, "library file deleted");
        Ok(())
    }

    /// Files of this sha256 (other than `path`), for linking identical ones.
    fn same_digest(&self, path: &str, sha256: &str) -> Vec<(String, Record)> {
        self.read()
            .iter()
            .filter(|(p, r)| p.as_str() != path && r.sha256.as_deref() == Some(sha256))
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect()
    }
}
