//! The sha256 of files whose digest nobody told us (put there by hand), computed on a
//! thread of its own at the lowest CPU priority, one file at a time. The hasher only
//! reads: each digest goes to the owner task of the index ([`Msg::Hashed`]), which
//! records it (and tells the queue) while the file is still the one that was hashed.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc::WeakUnboundedSender;

use super::owner::Msg;
use super::record::Record;
use super::Shared;

/// The queue of paths to hash.
pub(super) struct Hasher {
    tx: Mutex<Sender<String>>,
    /// Queued and not yet done: a path is queued once.
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Hasher {
    /// The hasher of `library`'s files; its digests go to `owner`. Holds neither
    /// strongly: a stopped library's store is not kept alive by a file being hashed.
    pub(super) fn start(library: &Arc<Shared>, owner: WeakUnboundedSender<Msg>) -> Hasher {
        let library = Arc::downgrade(library);
        let (tx, rx) = channel::<String>();
        let pending: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mine = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("library-hasher".into())
            .spawn(move || {
                lower_priority();
                for path in rx {
                    let hashed = hash_one(&library, &path);
                    lock(&mine).remove(&path);
                    let Some((before, sha256)) = hashed else {
                        continue;
                    };
                    let Some(owner) = owner.upgrade() else {
                        return;
                    };
                    let before = Box::new(before);
                    let _ = owner.send(Msg::Hashed {
                        path,
                        before,
                        sha256,
                    });
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the library hasher");
        }
        Hasher {
            tx: Mutex::new(tx),
            pending,
        }
    }

    /// Hashes `path` soon (once, however often it is asked).
    pub(super) fn enqueue(&self, path: &str) {
        if lock(&self.pending).insert(path.to_owned()) {
            let _ = lock(&self.tx).send(path.to_owned());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Nice 19 for this thread alone (Linux applies a nice value per thread).
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// The digest of `path` and the record of the file it is the digest of: only when the
/// file is still, after the read, the one the index held.
fn hash_one(library: &Weak<Shared>, path: &str) -> Option<(Record, String)> {
    let (before, root) = {
        let shared = library.upgrade()?;
        let before = shared.read().get(path).cloned()?;
        (before, shared.root.clone())
    };
    if before.sha256.is_some() {
        return None;
    }
    // Through the folder's handle: a regular file only (a link or a FIFO swapped in
    // after the scan is refused, never followed or waited on).
    let digest = match super::open_in(&root, path).and_then(|(file, st)| {
        if !before.matches(&st) {
            return Err(std::io::Error::other("changed since it was read"));
        }
        if has_holes(&file, st.size)? {
            return Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        }
        digest_of(file)
    }) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tracing::debug!(%path, "a sparse library file: hashed once it has no holes");
            return None;
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "cannot hash a library file");
            return None;
        }
    };
    // The file must still be the one that was read: else the next scan starts over.
    let now = super::locate_in(&root, path).and_then(|(dir, name)| dir.stat(name));
    if !now.ok().flatten().is_some_and(|st| before.matches(&st)) {
        return None;
    }
    Some((before, digest))
}

/// Whether the file has a hole before its end: a file another program is still
/// filling (a torrent client, a preallocating downloader), or a sparse trap of a
/// terabyte of nothing. Its digest would be stale at once, or cost the hasher hours
/// while every other file waits: it is hashed by a later scan, once it is whole.
fn has_holes(file: &std::fs::File, size: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    if size == 0 {
        return Ok(false);
    }
    // SAFETY: lseek on a valid fd; the offset is put back before anything reads.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    let back = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) };
    if hole < 0 || back < 0 {
        // A file system without SEEK_HOLE has no holes to tell of.
        return Ok(false);
    }
    Ok((hole as u64) < size)
}

/// The sha256 of a whole open file, lower-case hex.
pub(super) fn digest_of(mut file: std::fs::File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::engine::hex(&hasher.finalize()))
}
