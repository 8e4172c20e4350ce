//! The end of a download: verify the digest, fsync, record that the file is whole (with
//! its identity), rename it into place; and, at the next start, recognise a file that a
//! crash caught right after that rename.

use super::transfer::Transfer;
use super::{Ended, Engine, EngineError, EngineEvent, Job, RunCtx};
use crate::files;

impl Engine {
    /// A crash between the final rename and the record saying `completed` leaves the
    /// file under its final name and the checkpoint written just before the rename,
    /// which names that file's inode: it is the download's (verified before the
    /// rename), not something to fetch again. Any other file there (an older one of
    /// the same size, say) is not taken for it.
    /// Its size and identity (inode, mtime in ns).
    pub(super) fn renamed_before_a_crash(&self, job: &Job) -> Option<(u64, [u64; 2])> {
        let cp = self.store.checkpoint(&job.id).ok()??;
        let total = cp.total?;
        let renamed = cp.renaming?;
        let place = job.place().ok()?;
        let (identity, len) = place.final_identity().ok()??;
        let ours = identity == renamed && len == total;
        (ours && place.part_id().ok()?.is_none()).then_some((total, renamed))
    }

    /// Verifies (when a digest is known), fsyncs and renames into place: [`Ended::Done`].
    /// [`Ended::Stopped`] when asked to stop before the rename (a cancel during
    /// verification must not leave a file under its final name); [`Ended::Again`] when
    /// someone opened the `.part` since the byte loop last looked (see
    /// [`Transfer::after_lease_break`]).
    pub(super) async fn finish(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<Ended, EngineError> {
        t.part.wait_checkpoint().await?;
        // Writes what is left (on either path) and gives a direct-written file its length.
        t.part.end_direct_writes().await?;
        // The fsync before the rename runs while the digest is taken: one writes back
        // what the page cache holds, the other reads it, on two cores.
        let for_sync = t.part.file().try_clone()?;
        let syncing = tokio::task::spawn_blocking(move || for_sync.sync_all());
        if !self.verify(job, t, ctx).await? {
            // Someone opened the `.part` since the byte loop last looked: as there.
            t.part.after_lease_break(ctx).await?;
            return Ok(Ended::Again);
        }
        if *ctx.stop.borrow() {
            return Ok(Ended::Stopped);
        }
        // The bytes are on disk before a checkpoint says that all of them are: a power
        // loss in between would otherwise leave a record of a whole file over a `.part`
        // with holes, which a download without a digest would then rename as complete.
        syncing
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        // Every byte is there and verified: say so before the rename, with the file's
        // identity, so that a crash right after it is recognised on the next start
        // (see renamed_before_a_crash).
        let ours = t.part.file().metadata()?;
        let mut record = t.part.checkpoint_record(ctx);
        record.renaming = Some(file_identity(&ours));
        self.store.put_checkpoint(&job.id, &record)?;
        self.store.flush().await?;
        let place = job.place()?;
        tokio::task::spawn_blocking(move || rename_into_place(&place, &ours))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        // The checkpoint goes when the supervisor records `completed`, not before.
        tracing::info!(download_id = %job.id, bytes = t.part.held(), path = %job.final_path.display(), "download completed");
        Ok(Ended::Done)
    }

    /// Checks what is on disk (see [`Transfer::settle`]) and compares its digest with
    /// the expected one, when there is one. A mismatch removes the file: its bytes are
    /// wrong, and none are worth resuming. False: someone opened the `.part` since the
    /// transfer last looked, and it has to go again first.
    async fn verify(&self, job: &Job, t: &mut Transfer, ctx: &RunCtx) -> Result<bool, EngineError> {
        let expected = t.part.expected_sha256().map(str::to_owned);
        if expected.is_some() {
            (ctx.events)(EngineEvent::Verifying);
        }
        // A download without an expected digest records the digest when it was taken
        // anyway (a read-back); else the library's hasher takes it later.
        let Some(settled) = t.part.settle().await? else {
            return Ok(false);
        };
        self.metrics.part_checked(settled.by_lease);
        let actual = settled.digest;
        let Some(expected) = expected else {
            if actual.is_some() {
                (ctx.events)(EngineEvent::Pinned {
                    commit: None,
                    sha256: actual,
                });
            }
            return Ok(true);
        };
        let Some(actual) = actual else {
            return Ok(true);
        };
        if actual == expected {
            return Ok(true);
        }
        tracing::warn!(download_id = %job.id, %expected, %actual, "checksum mismatch; removing the file");
        // The checkpoint goes first: a crash in between must not leave one that says
        // complete beside no `.part`.
        self.store.remove_checkpoint(&job.id)?;
        self.store.flush().await?;
        let _ = t.part.place().remove_part();
        t.part.reset_after_delete();
        Err(EngineError::Checksum { expected, actual })
    }
}

/// Renames the verified `.part` to its final name, in the directory walked when the
/// transfer started (blocking).
fn rename_into_place(place: &files::Place, ours: &std::fs::Metadata) -> Result<(), EngineError> {
    // The rename is by name: make sure the name is still our file, not the `.part` of a
    // newer download of the same name, nor one that replaced a deleted one: then the
    // transfer starts over.
    if place.part_id()? != Some(files::FileId::of(ours)) {
        return Err(EngineError::PartGone);
    }
    if !place.still_inside()? {
        // Its folder was moved out of download_dir (a link left in its place): our
        // bytes go, rather than complete a file out there.
        let _ = place.remove_part();
        return Err(EngineError::Disk(std::io::Error::other(format!(
            "{}: a folder on the way was moved or replaced by a link during the download; \
             the .part was removed and nothing completed outside download_dir",
            place.path().display()
        ))));
    }
    place.rename_into_place()?;
    // The file is complete and verified under its name: a failed directory fsync only
    // risks the `.part` name coming back after a power loss, and that is resumed (at its
    // end) and renamed again.
    if let Err(e) = place.sync() {
        tracing::warn!(error = %e, dir = %place.path().display(), "directory fsync after the rename failed");
    }
    Ok(())
}

/// Which file this is, as far as survives a remount: the inode and the last write's
/// time (the device number is not stable across reboots or container restarts).
pub(super) fn file_identity(meta: &std::fs::Metadata) -> [u64; 2] {
    crate::files::identity(meta)
}
