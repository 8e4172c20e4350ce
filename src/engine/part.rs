//! The `.part` of one download, with one owner ([`Part`]) of everything known about
//! it: the file and its lock, the write lease and the running digest ([`Digest`]), the
//! bytes held (contiguous from 0, or as ranges while it is filled out of order), the
//! size and validators they were fetched under, and its checkpoints. Every write to a
//! `.part` happens in this module and its rooms: a transport hands bytes over, in order
//! ([`Part::append`]) or as ranges at offsets in any order ([`Ranges`]), and the
//! `.part`'s guarantees (lease, verify, checkpoint, `O_DIRECT`) hold for any transport.
//!
//! Rooms: `disk` (how bytes and checkpoints reach the disk), `check` (what is on disk,
//! checked at the end), `ranges` (the transport seam), `digest` (lease and running
//! hash), `lease`, `direct` (`O_DIRECT`), `block` (the write block), `hashing` and
//! `hashpipe` (SHA-256), `segment_table` (which ranges are present).

mod block;
mod check;
mod digest;
mod direct;
mod disk;
mod hashing;
mod hashpipe;
mod lease;
mod ranges;
pub(in crate::engine) mod segment_table;
mod slow_disk;

pub(in crate::engine) use block::{WriteBlock, WRITE_BLOCK};
pub(in crate::engine) use disk::CHECKPOINT_EVERY;
pub use hashing::hex;
pub(in crate::engine) use ranges::Ranges;

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use crate::engine::http::validators::Validators;
use crate::engine::{EngineError, Job, RunCtx};
use crate::files;
use crate::queue::model::DownloadId;
use crate::queue::store::{Checkpoint, Store};
use digest::Digest;
use hashing::hash_prefix;
use lease::Lease;
use segment_table::SegmentTable;

/// The `.part` file and what is known about it.
pub(in crate::engine) struct Part {
    /// The `.part`, locked (`flock`) for the transfer's life: another process (a second
    /// instance on the same `download_dir`) cannot take it over meanwhile. Shared with
    /// the blocking threads that write it: a write still on its way keeps the
    /// descriptor, and so the lock, until it lands.
    file: Arc<File>,
    /// The write lease and the running digest.
    digest: Digest,
    /// The directory handle and name every file operation goes through.
    place: Arc<files::Place>,
    /// Bytes on disk (written, contiguous from 0; the whole file once ranges are done).
    on_disk: u64,
    /// Received but not yet written.
    block: block::WriteBlock,
    /// The write block sent to a blocking thread and not landed yet (one at a time).
    landing: Option<disk::Landing>,
    /// Large single-connection transfers: the `O_DIRECT` writer, used instead of `block`.
    direct: Option<direct::DirectWriter>,
    total: Option<u64>,
    validators: Validators,
    /// Counts restarts, so "progress" also covers starting over after a change.
    generation: u64,
    last_checkpoint: Instant,
    pending_checkpoint: Option<JoinHandle<Result<(), EngineError>>>,
    store: Store,
    id: DownloadId,
    /// The digest to verify: given by the user, or learned from the Hub.
    expected_sha256: Option<String>,
    /// Set while the file is filled as ranges at offsets (parallel connections, say):
    /// which ranges are present.
    ranges: Option<Arc<SegmentTable>>,
    /// Where the next early-writeback range starts.
    writeback_from: u64,
    /// The URL this run fetches (recorded in every checkpoint).
    url: String,
    /// The bytes held came from another URL (a `PATCH url`), with no expected digest:
    /// until an answer proves the file the same (strong ETag and size), they are not
    /// trusted (see `Known::must_prove`).
    must_prove: bool,
}

/// A file smaller than this without an expected digest is hashed as it arrives (which
/// costs next to nothing), so that its digest is recorded as it completes; a larger one
/// is hashed afterwards by the library, at the lowest CPU priority, rather than have
/// SHA-256 cost every multi-GB transfer a core.
const HASHED_AS_RECEIVED_BELOW: u64 = 64 * 1024 * 1024;

/// What [`open_part`] found on disk.
struct Opened {
    file: File,
    /// Taken as soon as the file was opened, before anything was cut or hashed.
    lease: Lease,
    offset: u64,
    hasher: Option<Sha256>,
    segmented: bool,
}

impl Part {
    /// Opens the `.part` and puts it back at its last checkpoint: bytes past the
    /// checkpoint may not have reached the disk, so they are not trusted.
    pub(in crate::engine) async fn open(store: &Store, job: &Job) -> Result<Part, EngineError> {
        let place = job.place()?;
        let (checkpoint, must_prove) =
            after_url_swap(store.checkpoint(&job.id)?.unwrap_or_default(), job);
        let want_hash = job.sha256.is_some();
        let part = place.clone();
        let good = checkpoint.offset;
        let segments_end = checkpoint.segments.iter().map(|t| t[2]).max();
        let (for_store, id) = (store.clone(), job.id.clone());
        let opened = tokio::task::spawn_blocking(move || {
            open_part(&part, &for_store, &id, good, segments_end, want_hash)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;
        let Opened {
            file,
            lease,
            offset,
            hasher,
            segmented,
        } = opened;
        lease.set_on_disk(offset);
        // Without an expected digest and with the lease, nothing is hashed: nothing else
        // can write the file unseen. Without the lease, one connection follows what it
        // receives (from where it resumes), so that the end can compare it with what
        // is on disk.
        let intact = lease.intact();
        let mut digest = Digest::new(lease);
        digest.set_out_of_order(segmented);
        match hasher {
            Some(h) => digest.run(Some(h), 0)?,
            None if intact || segmented => {}
            None => digest.run(Some(Sha256::new()), offset)?,
        }
        let checkpoint = if !segmented && !checkpoint.segments.is_empty() {
            Checkpoint::default()
        } else {
            checkpoint
        };
        tracing::debug!(download_id = %job.id, offset, segmented, "transfer opened at its checkpoint");
        Ok(Part {
            file: Arc::new(file),
            digest,
            place,
            on_disk: offset,
            block: block::WriteBlock::default(),
            landing: None,
            direct: None,
            total: checkpoint.total,
            validators: Validators {
                etag: checkpoint.etag,
                last_modified: checkpoint.last_modified,
            },
            generation: 0,
            last_checkpoint: Instant::now(),
            pending_checkpoint: None,
            store: store.clone(),
            id: job.id.clone(),
            expected_sha256: job.sha256.clone(),
            writeback_from: offset,
            url: job.url.clone(),
            must_prove,
            ranges: segmented
                .then(|| Arc::new(SegmentTable::from_checkpoint(&checkpoint.segments))),
        })
    }

    /// The bytes held so far: on disk or in a buffer, in order or as ranges (the one
    /// measure of progress, of a resume's start and of what a run ended with).
    pub(in crate::engine) fn held(&self) -> u64 {
        match &self.ranges {
            Some(table) => table.held(),
            None => self.on_disk + self.unwritten(),
        }
    }

    /// Received in order but not known to be written yet (on its way counts here).
    fn unwritten(&self) -> u64 {
        match &self.direct {
            Some(direct) => direct.unflushed(),
            None => self.block.len() as u64 + self.landing_len(),
        }
    }

    /// How many times the transfer started over, and the bytes it holds: an attempt
    /// that kept the first and grew the second delivered something.
    pub(in crate::engine) fn progress_mark(&self) -> (u64, u64) {
        (self.generation, self.held())
    }

    pub(in crate::engine) fn total(&self) -> Option<u64> {
        self.total
    }

    /// The size became known at the end of a body that announced none.
    pub(in crate::engine) fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub(in crate::engine) fn validators(&self) -> &Validators {
        &self.validators
    }

    /// A response was taken: its size and validators are what is known now (and,
    /// after a URL swap, proved the bytes held to be of the same file).
    pub(in crate::engine) fn accept(&mut self, total: Option<u64>, validators: Validators) {
        self.total = total;
        self.validators = validators;
        self.must_prove = false;
        let small = total.filter(|t| *t < HASHED_AS_RECEIVED_BELOW);
        if let Some(total) = small.filter(|_| self.on_disk == 0 && self.ranges.is_none()) {
            if !self.digest.is_running() {
                self.digest.try_run_from_zero(total);
            }
        }
    }

    /// Whether the bytes held still have to be proved of the same file (a URL swap).
    pub(in crate::engine) fn must_prove(&self) -> bool {
        self.must_prove
    }

    /// The digest to verify, lower-case hex.
    pub(in crate::engine) fn expected_sha256(&self) -> Option<&str> {
        self.expected_sha256.as_deref()
    }

    /// The digest to verify became known (the Hub told it). The running hash covers
    /// what this run receives; the end reads the file back from byte 0 when it does not
    /// start there.
    pub(in crate::engine) fn learn_sha256(&mut self, sha256: String) -> Result<(), EngineError> {
        self.expected_sha256 = Some(sha256);
        if self.on_disk == 0 && self.ranges.is_none() {
            self.digest.run(Some(Sha256::new()), 0)?;
        }
        Ok(())
    }

    /// The `.part`, for the fsync and the identity checks at the end.
    pub(in crate::engine) fn file(&self) -> &File {
        &self.file
    }

    /// The present-ranges table, while the file is filled as ranges at offsets.
    pub(in crate::engine) fn ranges(&self) -> Option<&Arc<SegmentTable>> {
        self.ranges.as_ref()
    }

    /// Every range is written: the file is whole, with `digest` if it was followed.
    pub(in crate::engine) fn ranges_done(&mut self, total: u64, digest: Option<Sha256>) {
        self.on_disk = total;
        self.block.clear();
        self.digest.set_ready(digest);
    }

    /// Drops every byte and starts from 0 (the server ignored Range, or the file changed).
    /// The checkpoint says 0 before the file is truncated, so a crash in between never
    /// pairs an old offset with new bytes.
    pub(in crate::engine) async fn restart(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        // Its writes on their way end first, so none lands after the truncation.
        self.close_direct().await;
        self.drop_unwritten().await;
        self.on_disk = 0;
        self.writeback_from = 0;
        self.total = None;
        self.validators = Validators::default();
        self.must_prove = false;
        self.ranges = None;
        self.digest.set_out_of_order(false);
        self.store
            .put_checkpoint(&self.id, &self.checkpoint_record(ctx))?;
        self.store.flush().await?;
        let will_hash = self.expected_sha256.is_some();
        if !self.digest.lease().intact() {
            // From byte 0 again: a lease taken now, before the cut, vouches for
            // everything from here (refused while whoever broke the last one still has
            // the file open).
            self.digest.release_lease();
            self.digest
                .replace_lease(Lease::take(&self.file, 0, will_hash));
        }
        self.digest.lease().cutting(0);
        self.cut_to(0).await?;
        let hash = will_hash || !self.digest.lease().intact();
        self.digest.run(hash.then(Sha256::new), 0)?;
        self.generation += 1;
        ctx.progress.set_done(0);
        Ok(())
    }

    /// After the `.part` was deleted (checksum mismatch): nothing is on disk.
    pub(in crate::engine) fn reset_after_delete(&mut self) {
        self.on_disk = 0;
        self.writeback_from = 0;
        self.block.clear();
    }

    pub(in crate::engine) fn id(&self) -> &DownloadId {
        &self.id
    }

    /// The directory handle and name of the `.part`.
    pub(in crate::engine) fn place(&self) -> &files::Place {
        &self.place
    }

    /// The `.part` was deleted, replaced or written by someone else: a new one (locked
    /// like the first), and the transfer from byte 0.
    pub(in crate::engine) async fn recreate(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await.ok();
        self.close_direct().await;
        if self.still_ours().is_ok() {
            // Written by someone else, but still ours (and locked): cut it back to 0.
            return self.restart(ctx).await;
        }
        let place = self.place.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<File, EngineError> {
            Ok(open_locked(&place, true)?.0)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;
        self.digest.release_lease();
        self.file = Arc::new(file);
        let lease = Lease::take(&self.file, 0, self.expected_sha256.is_some());
        self.digest.replace_lease(lease);
        self.restart(ctx).await
    }

    /// Whether the `.part` name still holds our file (a deleted or replaced one does not).
    pub(in crate::engine) fn still_ours(&self) -> Result<(), EngineError> {
        let ours = files::FileId::of(&self.file.metadata()?);
        match self.place.part_id()? {
            Some(id) if id == ours => Ok(()),
            _ => Err(EngineError::PartGone),
        }
    }
}

/// What of a checkpoint may be kept when the URL changed since it was written (a
/// `PATCH url`): everything with an expected digest (the end checks it); with a strong
/// ETag, the bytes and that ETag alone, to be proved by the new URL's answer (true);
/// else nothing: a file of the same size elsewhere may be another file.
fn after_url_swap(checkpoint: Checkpoint, job: &Job) -> (Checkpoint, bool) {
    let swapped = checkpoint.url.as_deref().is_some_and(|u| u != job.url);
    if !swapped || job.sha256.is_some() {
        return (checkpoint, false);
    }
    let strong = checkpoint.etag.clone().filter(|t| !t.starts_with("W/"));
    if strong.is_some() && checkpoint.total.is_some() {
        tracing::info!(download_id = %job.id, "new URL: the bytes done are kept if it proves the same file");
        let kept = Checkpoint {
            last_modified: None,
            ..checkpoint
        };
        return (kept, true);
    }
    tracing::info!(download_id = %job.id, "new URL and nothing to prove the file the same: starting over");
    let fresh = Checkpoint {
        elapsed_secs: checkpoint.elapsed_secs,
        url: checkpoint.url,
        ..Checkpoint::default()
    };
    (fresh, false)
}

/// How long a `.part` locked by someone else is waited for: a download of the same name
/// that was just cancelled or paused lets go within moments; another process does not.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the `.part` (`create`: made when missing) and takes its exclusive `flock`,
/// waiting [`LOCK_WAIT`] at most (blocking); true when it existed. The lock goes with
/// the file (or the process, after a crash): nothing is left to clean up. A file renamed
/// or replaced while its lock was awaited (the holder completed it) is not ours: the
/// name is opened again.
fn open_locked(place: &files::Place, create: bool) -> Result<(File, bool), EngineError> {
    use std::os::unix::io::AsRawFd;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let (file, existed) = match place.open_part(false, 0) {
            Ok(file) => (file, true),
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                (place.open_part(true, 0)?, false)
            }
            Err(e) => return Err(e.into()),
        };
        // SAFETY: a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let meta = file.metadata()?;
            if place.part_id()? == Some(files::FileId::of(&meta)) {
                return Ok((file, existed));
            }
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e.into());
        }
        if Instant::now() >= deadline {
            return Err(EngineError::PartBusy(format!(
                "{}.part",
                place.path().display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Opens (or creates) the `.part` at `part` and cuts it back to what its checkpoint
/// vouches for: `good` bytes on one connection, or the segments of a file of
/// `segments_end` bytes (blocking). With `want_hash`, the digest of the bytes kept.
fn open_part(
    part: &files::Place,
    store: &Store,
    id: &DownloadId,
    good: u64,
    segments_end: Option<u64>,
    want_hash: bool,
) -> Result<Opened, EngineError> {
    // O_NOFOLLOW: a `.part` that became a symlink is never written through. Locked
    // before anything is cut or written: a `.part` another process holds is its own.
    let (file, existed) = open_locked(part, true)?;
    // Before anything is cut or hashed: a write by someone else after this is seen. Until
    // the transfer says what it keeps, a break vouches for no byte.
    let lease = Lease::take(&file, 0, false);
    let len = file.metadata()?.len();
    // Each segment knows its own good bytes, in a file of full length.
    if let Some(end) = segments_end {
        if existed && len >= end {
            return Ok(Opened {
                file,
                lease,
                offset: 0,
                hasher: None,
                segmented: true,
            });
        }
    }
    let good = if segments_end.is_some() {
        // The checkpoint speaks of a file that is gone or was taken over (another
        // download of the same name truncated it): none of its segments can be trusted.
        // It goes before anything is written.
        tracing::warn!(download_id = %id, existed, len, "the .part does not match its checkpoint; starting over");
        store.remove_checkpoint(id)?;
        store.flush_blocking()?;
        0
    } else {
        good
    };
    let offset = good.min(len);
    if len != offset {
        file.set_len(offset)?;
    }
    let hasher = if want_hash {
        Some(hash_prefix(&file, offset)?)
    } else {
        None
    };
    Ok(Opened {
        file,
        lease,
        offset,
        hasher,
        segmented: false,
    })
}

#[cfg(test)]
#[path = "part/part_tests.rs"]
mod tests;
