//! The sha256 of files whose digest nobody told us (put there by hand), computed on a
//! thread of its own at the lowest CPU priority, one file at a time.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

use super::{links, publish, Inner};

/// The queue of paths to hash.
pub(super) struct Hasher {
    tx: Mutex<Sender<String>>,
    /// Queued and not yet done: a path is queued once.
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Hasher {
    pub(super) fn start(library: Weak<Inner>) -> Hasher {
        let (tx, rx) = channel::<String>();
        let pending: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mine = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("library-hasher".into())
            .spawn(move || {
                lower_priority();
                for path in rx {
                    let Some(inner) = library.upgrade() else {
                        return;
                    };
                    hash_one(&inner, &path);
                    lock(&mine).remove(&path);
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

fn hash_one(inner: &Inner, path: &str) {
    let Some(before) = inner.read().get(path).cloned() else {
        return;
    };
    if before.sha256.is_some() {
        return;
    }
    // Through the folder's handle: a regular file only (a link or a FIFO swapped in
    // after the scan is refused, never followed or waited on).
    let digest = match inner.open(path).and_then(|(file, st)| {
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
            return;
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "cannot hash a library file");
            return;
        }
    };
    // The file must still be the one that was read: else the next scan starts over.
    let now = inner.locate(path).and_then(|(dir, name)| dir.stat(name));
    if !now.ok().flatten().is_some_and(|st| before.matches(&st)) {
        return;
    }
    // The record as it is now (a scan may have added to it meanwhile), with the digest.
    let Some(mut record) = inner.read().get(path).cloned() else {
        return;
    };
    if !record.same_file(&before) {
        return;
    }
    if let Some(id) = &record.download_id {
        inner.queue.note_digest(id, &digest);
    }
    record.sha256 = Some(digest);
    links::dedupe(inner, path, &mut record);
    publish::publish(inner, path, &mut record, None);
    if let Err(e) = inner.put(path, record) {
        tracing::warn!(%path, error = %e, "cannot store a library digest");
    }
    inner.announce();
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
