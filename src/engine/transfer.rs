//! The `.part` file of one download and everything known about it: how many bytes are
//! on disk, the size and validators they were fetched under, the running digest, the
//! Hub link, and the segment table while parallel connections fill it. Its fields are
//! this module's alone; the single connection, the segments and the end of a run go
//! through the methods here (and in [`disk`], how bytes and checkpoints reach the disk).

mod check;
mod disk;

pub(super) use disk::CHECKPOINT_EVERY;

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::hashing::hash_prefix;
use super::hashpipe::HashPipe;
use super::lease::Lease;
use super::retry::LinkBudget;
use super::segment_table::SegmentTable;
use super::validators::Validators;
use super::{block, direct, EngineError, Job, RunCtx};
use crate::files;
use crate::hub::Resolved;
use crate::queue::model::DownloadId;
use crate::queue::store::{Checkpoint, Store};

/// The `.part` file and what is known about it.
pub(super) struct Transfer {
    /// The `.part`, locked (`flock`) for the transfer's life: another process (a second
    /// instance on the same `download_dir`) cannot take it over meanwhile.
    file: File,
    /// The write lease on `file`: while intact, nothing else has opened the file since
    /// the transfer did, so what it wrote is what is on disk (see [`Lease`]).
    lease: Lease,
    /// The directory handle and name every file operation goes through.
    place: Arc<files::Place>,
    /// Where the running hash (`hasher`) starts: 0 with an expected digest, else the
    /// offset this run resumed from. The end compares it with what is on disk.
    hashed_from: u64,
    /// Bytes on disk (written, contiguous from 0).
    written: u64,
    /// Received but not yet written.
    block: block::WriteBlock,
    /// Large single-connection transfers: the `O_DIRECT` writer, used instead of `block`.
    direct: Option<direct::DirectWriter>,
    total: Option<u64>,
    validators: Validators,
    /// Digest of the bytes received from `hashed_from`: with an expected digest (from
    /// 0), or when the lease cannot vouch for the file (then the end compares it with
    /// the file read back).
    hasher: Option<HashPipe>,
    /// Counts restarts, so "progress" also covers starting over after a change.
    generation: u64,
    last_checkpoint: Instant,
    pending_checkpoint: Option<JoinHandle<Result<(), EngineError>>>,
    store: Store,
    id: DownloadId,
    /// The digest to verify: given by the user, or learned from the Hub.
    expected_sha256: Option<String>,
    /// Hub downloads: the pinned commit and the current (CDN) link.
    commit: Option<String>,
    link: Option<url::Url>,
    /// Fresh links asked for in a row without a byte in between.
    links: LinkBudget,
    /// Set while the file is fetched on parallel connections.
    segments: Option<Arc<SegmentTable>>,
    /// Where the next early-writeback range starts.
    writeback_from: u64,
    /// The digest of the whole file, when it was taken during the transfer.
    digest_ready: Option<Sha256>,
    /// The URL this run fetches (recorded in every checkpoint).
    url: String,
    /// The bytes held came from another URL (a `PATCH url`), with no expected digest:
    /// until an answer proves the file the same (strong ETag and size), they are not
    /// trusted (see `Known::must_prove`).
    must_prove: bool,
    /// Parallel connections failed once (a server that ignores some ranges): this run
    /// stays on one connection.
    one_connection: bool,
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

impl Transfer {
    /// Opens the `.part` and puts it back at its last checkpoint: bytes past the
    /// checkpoint may not have reached the disk, so they are not trusted.
    pub(super) async fn open(store: &Store, job: &Job) -> Result<Transfer, EngineError> {
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
        // A segmented file is read back whole at the end if the lease broke: no prefix.
        lease.set_hashing(hasher.is_some() || segmented);
        lease.set_on_disk(offset);
        // Without an expected digest and with the lease, nothing is hashed: nothing else
        // can write the file unseen. Without the lease, one connection follows what it
        // receives (from where it resumes), so that the end can compare it with what
        // is on disk.
        let hashed_from = if hasher.is_some() { 0 } else { offset };
        let hasher = match hasher {
            Some(h) => Some(HashPipe::start(h)?),
            None if lease.intact() => None,
            None => Some(HashPipe::start(Sha256::new())?),
        };
        let checkpoint = if !segmented && !checkpoint.segments.is_empty() {
            Checkpoint::default()
        } else {
            checkpoint
        };
        tracing::debug!(download_id = %job.id, offset, segmented, "transfer opened at its checkpoint");
        Ok(Transfer {
            file,
            lease,
            place,
            hashed_from,
            written: offset,
            block: block::WriteBlock::default(),
            direct: None,
            total: checkpoint.total,
            validators: Validators {
                etag: checkpoint.etag,
                last_modified: checkpoint.last_modified,
            },
            hasher,
            generation: 0,
            last_checkpoint: Instant::now(),
            pending_checkpoint: None,
            store: store.clone(),
            id: job.id.clone(),
            expected_sha256: job.sha256.clone(),
            commit: job.hub.as_ref().and_then(|h| h.commit.clone()),
            link: None,
            links: LinkBudget::default(),
            writeback_from: offset,
            digest_ready: None,
            one_connection: false,
            url: job.url.clone(),
            must_prove,
            segments: segmented
                .then(|| Arc::new(SegmentTable::from_checkpoint(&checkpoint.segments))),
        })
    }

    /// Bytes on disk, contiguous from 0 (one connection).
    pub(super) fn offset(&self) -> u64 {
        self.written
    }

    /// Bytes we have, on one connection or many.
    pub(super) fn done_bytes(&self) -> u64 {
        match &self.segments {
            Some(table) => table.done(),
            None => self.received(),
        }
    }

    /// Bytes received on one connection, on disk or still in a buffer.
    pub(super) fn received(&self) -> u64 {
        let pending = match &self.direct {
            Some(direct) => direct.unflushed(),
            None => self.block.len() as u64,
        };
        self.written + pending
    }

    /// How many times the transfer started over, and the bytes it has: an attempt
    /// that kept the first and grew the second delivered something.
    pub(super) fn progress_mark(&self) -> (u64, u64) {
        (self.generation, self.done_bytes())
    }

    pub(super) fn total(&self) -> Option<u64> {
        self.total
    }

    /// The size became known at the end of a body that announced none.
    pub(super) fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub(super) fn validators(&self) -> &Validators {
        &self.validators
    }

    /// A response was taken: its size and validators are what is known now (and,
    /// after a URL swap, proved the bytes held to be of the same file).
    pub(super) fn accept(&mut self, total: Option<u64>, validators: Validators) {
        self.total = total;
        self.validators = validators;
        self.must_prove = false;
        let small = total.is_some_and(|t| t < HASHED_AS_RECEIVED_BELOW);
        if small && self.hasher.is_none() && self.written == 0 && self.segments.is_none() {
            // Best effort: without it, the library's hasher takes the digest later.
            self.hasher = HashPipe::start(Sha256::new()).ok();
            self.hashed_from = 0;
            self.lease.set_hashing(self.hasher.is_some());
        }
    }

    /// Whether the bytes held still have to be proved of the same file (a URL swap).
    pub(super) fn must_prove(&self) -> bool {
        self.must_prove
    }

    /// The digest to verify, lower-case hex.
    pub(super) fn expected_sha256(&self) -> Option<&str> {
        self.expected_sha256.as_deref()
    }

    /// The `.part`, for the fsync and the identity checks at the end.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// The Hub commit this download is pinned to.
    pub(super) fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// The current CDN link of a Hub file; `None` until resolved, or after it was refused.
    pub(super) fn link(&self) -> Option<&url::Url> {
        self.link.as_ref()
    }

    /// Keeps a link that parallel connections refreshed, for the next attempt.
    pub(super) fn keep_link(&mut self, link: url::Url) {
        self.link = Some(link);
    }

    /// Takes in what the Hub resolved: the link, and the commit and digest when they
    /// were not known yet (then true: worth telling).
    pub(super) fn adopt(&mut self, resolved: Resolved) -> Result<bool, EngineError> {
        let newly_pinned = self.commit.is_none() && resolved.commit.is_some();
        if newly_pinned {
            self.commit = resolved.commit;
        }
        let learned_digest = self.expected_sha256.is_none() && resolved.sha256.is_some();
        if learned_digest {
            self.expected_sha256 = resolved.sha256;
            // The running hash covers what this run received; the end reads the file
            // back from byte 0 to take the whole digest.
            if self.written == 0 && self.segments.is_none() {
                self.hasher = Some(HashPipe::start(Sha256::new())?);
                self.hashed_from = 0;
                self.lease.set_hashing(true);
            }
        }
        self.link = Some(resolved.location);
        Ok(newly_pinned || learned_digest)
    }

    /// The presigned link was refused with `status`: the next attempt resolves a fresh
    /// one, unless too many were refused in a row with no byte in between (then the
    /// refusal is the error).
    pub(super) fn link_refused(&mut self, status: u16) -> Result<(), EngineError> {
        self.link = None;
        if self.links.refused(self.done_bytes()) {
            tracing::info!(download_id = %self.id, status, "CDN link refused; resolving again");
            return Ok(());
        }
        Err(EngineError::Status {
            status,
            retry_after: None,
        })
    }

    /// The segment table, while parallel connections fetch the file.
    pub(super) fn segments(&self) -> Option<&Arc<SegmentTable>> {
        self.segments.as_ref()
    }

    /// Whether this run may still use parallel connections.
    pub(super) fn may_split(&self) -> bool {
        !self.one_connection
    }

    /// Switches to parallel connections over a file of `total` bytes (kept when already
    /// on them) and gives the `.part` its full length. True when newly switched.
    pub(super) async fn start_segments(
        &mut self,
        total: u64,
    ) -> Result<(Arc<SegmentTable>, bool), EngineError> {
        let fresh = self.segments.is_none();
        if fresh {
            self.end_direct_writes().await?;
            self.segments = Some(Arc::new(SegmentTable::whole(self.written, total)));
            // Bytes arrive out of order: the digest is taken by reading the file back
            // (the whole file, when the lease broke: a break needs no prefix).
            self.hasher = None;
            self.lease.set_hashing(true);
        }
        let table = self
            .segments
            .clone()
            .ok_or_else(|| EngineError::Internal("no segments".into()))?;
        if self.file.metadata()?.len() < total {
            self.file.set_len(total)?;
        }
        Ok((table, fresh))
    }

    /// Every segment is written: the file is whole, with `digest` if it was followed.
    pub(super) fn segments_done(&mut self, total: u64, digest: Option<Sha256>) {
        self.written = total;
        self.block.clear();
        self.digest_ready = digest;
    }

    /// Parallel connections could not be used (a range ignored or refused, the file
    /// changed): drops every byte, and the rest of this run uses one connection.
    pub(super) async fn fall_back(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.restart(ctx).await?;
        self.one_connection = true;
        Ok(())
    }

    /// Drops every byte and starts from 0 (the server ignored Range, or the file changed).
    /// The checkpoint says 0 before the file is truncated, so a crash in between never
    /// pairs an old offset with new bytes.
    pub(super) async fn restart(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        // Its writes on their way end first, so none lands after the truncation.
        self.close_direct().await;
        self.block.clear();
        self.written = 0;
        self.writeback_from = 0;
        self.total = None;
        self.validators = Validators::default();
        self.must_prove = false;
        self.segments = None;
        self.digest_ready = None;
        self.store
            .put_checkpoint(&self.id, &self.checkpoint_record(ctx))?;
        self.store.flush().await?;
        let will_hash = self.expected_sha256.is_some();
        if !self.lease.intact() {
            // From byte 0 again: a lease taken now, before the cut, vouches for
            // everything from here (refused while whoever broke the last one still has
            // the file open).
            self.lease.release();
            self.lease = Lease::take(&self.file, 0, will_hash);
        }
        self.lease.cutting(0);
        self.file.set_len(0)?;
        self.hasher = match will_hash || !self.lease.intact() {
            true => Some(HashPipe::start(Sha256::new())?),
            false => None,
        };
        self.lease.set_hashing(self.hasher.is_some());
        self.hashed_from = 0;
        self.generation += 1;
        ctx.progress.set_done(0);
        Ok(())
    }

    /// After the `.part` was deleted (checksum mismatch): nothing is on disk.
    pub(super) fn reset_after_delete(&mut self) {
        self.written = 0;
        self.writeback_from = 0;
        self.block.clear();
    }

    /// The directory handle and name of the `.part`.
    pub(super) fn place(&self) -> &files::Place {
        &self.place
    }

    /// The `.part` was deleted, replaced or written by someone else: a new one (locked
    /// like the first), and the transfer from byte 0.
    pub(super) async fn recreate(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
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
        self.lease.release();
        self.file = file;
        self.lease = Lease::take(&self.file, 0, self.expected_sha256.is_some());
        self.restart(ctx).await
    }

    /// Whether the `.part` name still holds our file (a deleted or replaced one does not).
    pub(super) fn still_ours(&self) -> Result<(), EngineError> {
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
