//! The model library: every file under `download_dir` (downloaded by us or put there by
//! hand), with what its GGUF header says, its sha256, and where it is published for
//! other runtimes (the HuggingFace cache).
//!
//! The index lives in memory (the listing never waits for the disk or the queue) and in
//! sled, keyed by path with the size, mtime and inode it was read at, so a file is read
//! once. A scan at start-up, one after every completed download and one on
//! `POST /api/library/rescan` keep it current; hashing of files whose digest nobody
//! told us runs on a thread of its own, one file at a time, at the lowest priority.

mod dedupe;
mod hasher;
pub mod hf_cache;
mod inode;
mod lmstudio;
mod notify;
pub mod ollama;
mod owner;
mod publish;
mod record;
mod run;
mod scan;
mod updates;

use std::collections::BTreeSet;
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
    /// Tells what an update will fetch (`update.fetch_bytes`); none: never told.
    pub engine: Option<crate::engine::Engine>,
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
    shared: Arc<Shared>,
    /// The owner task of the index: every change goes through it.
    owner: owner::Mailbox,
    queue: QueueHandle,
    hub: crate::hub::HubClient,
    engine: Option<crate::engine::Engine>,
    /// One scan at a time (and no completion while one runs).
    scanning: tokio::sync::Mutex<()>,
    /// One update check at a time.
    checking: tokio::sync::Mutex<()>,
}

/// What every part of the library reads: where the files are, the store, the index.
/// The index is read by anyone and changed by the owner task alone.
struct Shared {
    root: PathBuf,
    store: Store,
    folders: Folders,
    index: RwLock<owner::Index>,
    /// Whose remembered trees vouch for a `run` command's `-hf` tag.
    hub: Option<crate::hub::HubClient>,
}

impl LibraryHandle {
    /// Loads the stored index, starts its owner task (and the hashing thread), a first
    /// scan and the follower of completed downloads. `root` is `download_dir`, canonical.
    pub fn start(
        root: PathBuf,
        store: Store,
        queue: QueueHandle,
        options: Options,
        frames: Option<actix::Recipient<crate::actors::broadcaster::Announce>>,
    ) -> Result<LibraryHandle, LibraryError> {
        let root = root.canonicalize()?;
        let records = store.library_records::<Record>()?;
        let shared = Arc::new(Shared {
            root,
            store,
            folders: options.folders,
            index: RwLock::new(owner::Index::of(records)),
            hub: Some(options.hub.clone()),
        });
        let sink: Option<notify::Sink> = frames.map(|to| -> notify::Sink {
            Box::new(move |frame| to.do_send(crate::actors::broadcaster::Announce(frame.into())))
        });
        let handle = LibraryHandle {
            inner: Arc::new(Inner {
                owner: owner::Mailbox::start(shared.clone(), Some(queue.clone()), sink)?,
                shared,
                queue,
                hub: options.hub,
                engine: options.engine,
                scanning: tokio::sync::Mutex::new(()),
                checking: tokio::sync::Mutex::new(()),
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
            let index = self.inner.shared.read();
            let shared = &self.inner.shared;
            index.iter().map(|(path, r)| shared.view(path, r)).collect()
        };
        let (bytes_total, bytes_saved_by_links, bytes_free) = self.inner.shared.listing_totals();
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
        let record = self.inner.shared.read().get(&path).cloned()?;
        (record.repo.as_deref() == Some(repo)).then(|| (self.inner.shared.full_path(&path), record))
    }

    /// Opens library file `path` for reading through the directory handles (a
    /// regular file only: a link or FIFO swapped in is refused, never followed or
    /// waited on), with what it is now: what a reader that serves it should use.
    pub fn open(&self, path: &str) -> std::io::Result<(std::fs::File, crate::files::Stat)> {
        self.inner.shared.open(path)
    }

    /// Whether library file `path` is still the very file download `download_id`
    /// completed (its record says so, and the file on disk is the identity it was
    /// read at then): only then do that download's digest and commit stand for it
    /// (blocking). A path the library has not indexed yet is not vouched for.
    pub fn completed_intact(&self, path: &str, download_id: &str) -> bool {
        let record = self.inner.shared.read().get(path).cloned();
        let Some(record) =
            record.filter(|r| r.ours && r.download_id.as_deref() == Some(download_id))
        else {
            return false;
        };
        let now = self
            .inner
            .shared
            .locate(path)
            .and_then(|(dir, name)| dir.stat(name));
        now.ok().flatten().is_some_and(|st| record.matches(&st))
    }

    /// `download_dir/<path>`, for a path relative to it (already validated).
    pub fn full_path(&self, path: &str) -> PathBuf {
        self.inner.shared.full_path(path)
    }

    /// Every file of the library fetched from Hub repo `repo`, by its path in the repo.
    pub fn repo_files(&self, repo: &str) -> Vec<(String, Record)> {
        let prefix = format!("{repo}/");
        self.inner
            .shared
            .read()
            .under(&prefix)
            .filter(|(_, r)| r.repo.as_deref() == Some(repo))
            .map(|(p, r)| (p[prefix.len()..].to_owned(), r.clone()))
            .collect()
    }

    /// Walks `download_dir` and brings the index up to date; how many files it holds.
    pub async fn rescan(&self) -> Result<usize, LibraryError> {
        let _one = self.inner.scanning.lock().await;
        let completions = Arc::new(self.completions().await);
        let shared = self.inner.shared.clone();
        let walked = blocking(move || scan::walk_and_sort(&shared)).await??;
        // Taken from the front by an iterator: draining a Vec's front moves the rest
        // each time (quadratic in a tree of 200,000 files).
        let mut unknown = walked.unknown.into_iter().peekable();
        let mut read = BTreeSet::new();
        while unknown.peek().is_some() {
            let batch: Vec<_> = unknown.by_ref().take(SCAN_BATCH).collect();
            read.extend(batch.iter().map(|(p, _)| p.clone()));
            let shared = self.inner.shared.clone();
            let seen = blocking(move || scan::read_all(&shared, batch)).await?;
            let owner = &self.inner.owner;
            let completions = completions.clone();
            owner
                .ask(|done| owner::Msg::Read {
                    seen,
                    completions,
                    done,
                })
                .await??;
        }
        let known = walked.known;
        self.inner
            .owner
            .ask(|done| owner::Msg::Scanned {
                known,
                read,
                completions,
                done,
            })
            .await?
    }

    /// The queue's completed downloads, for a scan (none when the queue cannot say:
    /// the scan then reads what it finds as it always did).
    async fn completions(&self) -> scan::Completions {
        match self.inner.queue.completed_files().await {
            Ok(done) => scan::Completions::of(done),
            Err(e) => {
                tracing::warn!(error = %e, "the library scan cannot ask the queue for its completed downloads");
                scan::Completions::default()
            }
        }
    }

    /// Removes a file of the library and every link the service made to it. Any path
    /// the library lists can be deleted (a hand-placed `aux.gguf` or a name with a
    /// newline too: the name rules are for new files); nothing else can.
    pub async fn delete(&self, path: &str) -> Result<(), LibraryError> {
        if !self.inner.shared.read().contains(path) {
            return Err(LibraryError::NotFound(path.to_owned()));
        }
        if let Some(by) = self.inner.queue.writer_of(path).await? {
            return Err(LibraryError::Busy {
                path: path.to_owned(),
                by,
            });
        }
        let path_owned = path.to_owned();
        let removed = self
            .inner
            .owner
            .ask(|done| owner::Msg::Delete {
                path: path_owned,
                done,
            })
            .await
            .and_then(|r| r);
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
        let record = self.inner.shared.read().get(path).cloned();
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
        let done = self
            .inner
            .owner
            .ask(|done| owner::Msg::Completed {
                download: Box::new(d),
                done,
            })
            .await
            .and_then(|r| r);
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot add a completed download to the library");
        }
    }
}

impl Shared {
    /// Bytes of every file, bytes that hard links saved (each inode's size for every
    /// path beyond its first), free bytes on download_dir's file system.
    fn listing_totals(&self) -> (u64, u64, Option<u64>) {
        self.listing_totals_of(&self.read())
    }

    fn listing_totals_of(&self, index: &owner::Index) -> (u64, u64, Option<u64>) {
        let (total, saved) = index.totals();
        (total, saved, crate::files::free_space(&self.root).ok())
    }

    /// The index, for reading.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, owner::Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn full_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// What `GET /api/library` and the `library` frame show of a file, its `run`
    /// commands included.
    fn view(&self, path: &str, record: &Record) -> LibraryFile {
        let mut file = record.view(path);
        let tree = record
            .repo
            .as_deref()
            .and_then(|repo| self.hub.as_ref()?.known_tree(repo));
        file.run = run::commands(
            path,
            record,
            &self.full_path(path),
            tree.as_ref().map(|t| t.as_slice()),
        );
        file
    }

    /// The folder of library file `path` (walked from `download_dir` through
    /// directory handles, no link followed) and its name there.
    fn locate(&self, path: &str) -> std::io::Result<(crate::files::Dir, std::ffi::OsString)> {
        locate_in(&self.root, path)
    }

    /// Opens library file `path` for reading through its folder's handle (a regular
    /// file only: never a link, never blocking on a FIFO), with what it is now.
    fn open(&self, path: &str) -> std::io::Result<(std::fs::File, crate::files::Stat)> {
        open_in(&self.root, path)
    }

    /// The inode `record` was read at, as the publishers compare it.
    fn identity(&self, path: &str, record: &Record) -> inode::Identity {
        inode::Identity {
            path: self.full_path(path),
            file: record.id(),
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
}

/// The folder of file `path` under `root` (walked through directory handles, no link
/// followed) and its name there.
/// How many fresh records a scan hands the owner at a time: what a scan holds beside
/// the index, however many files it finds.
const SCAN_BATCH: usize = 256;

/// `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LibraryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LibraryError::Join(e.to_string()))
}

fn locate_in(root: &Path, path: &str) -> std::io::Result<(crate::files::Dir, std::ffi::OsString)> {
    let root = crate::files::Dir::open(root)?;
    crate::files::parent_of(&root, Path::new(""), Path::new(path), false)
}

/// Opens file `path` under `root` for reading through its folder's handle (a regular
/// file only: never a link, never blocking on a FIFO), with what it is now.
fn open_in(root: &Path, path: &str) -> std::io::Result<(std::fs::File, crate::files::Stat)> {
    let (dir, name) = locate_in(root, path)?;
    let file = dir.open_file(name)?;
    let st = crate::files::Dir::stat_of(&file)?;
    Ok((file, st))
}
