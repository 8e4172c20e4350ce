//! The end of a one-connection transfer's trust in its `.part`: what is on disk,
//! checked (by the write lease, or by reading the file back), and a break of the lease
//! met while the transfer runs.

use sha2::{Digest, Sha256};

use super::hashing::{hash_prefix, hash_range_of, hex};
use super::lease::Break;
use super::Part;
use crate::engine::{EngineError, RunCtx};

/// What [`Part::settle`] found: the digest of the whole file (when known or
/// wanted), and whether the lease vouched for the bytes (else they were read back).
pub(in crate::engine) struct Settled {
    pub digest: Option<String>,
    pub by_lease: bool,
}

impl Settled {
    fn new(digest: Option<String>, by_lease: bool) -> Settled {
        Settled { digest, by_lease }
    }
}

impl Part {
    /// What is on disk, checked, and the digest of the whole file when it is known or
    /// wanted (an expected one to compare). On one connection with the lease intact,
    /// nothing else can have written the file: the size is checked, and the digest is
    /// the running one. Otherwise the file is read back (through our own handle) and
    /// compared with the running hash of what was received, so a `.part` truncated,
    /// extended or overwritten meanwhile is never taken for the download. Parallel
    /// connections read it back already (again when the lease broke meanwhile).
    /// `None`: someone opened the `.part` since the transfer last looked, and nothing
    /// follows what was received: meet that break ([`Part::after_lease_break`]) and
    /// go again.
    pub(in crate::engine) async fn settle(&mut self) -> Result<Option<Settled>, EngineError> {
        let one_connection = self.ranges.is_none();
        if one_connection && !self.digest.is_running() && self.digest.lease().break_pending() {
            return Ok(None);
        }
        let intact = self.digest.lease().intact();
        // Checked from here on: an opener waits no longer.
        self.digest.release_lease();
        let want_digest = self.expected_sha256.is_some();
        if let Some(h) = self.digest.take_ready().filter(|_| intact) {
            return Ok(Some(Settled::new(Some(hex(&h.finalize())), true)));
        }
        let received = match self.digest.take_running() {
            Some(pipe) if pipe.is_inline() => pipe.finish(),
            Some(pipe) => tokio::task::spawn_blocking(move || pipe.finish())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?,
            None => None,
        };
        // Neither the lease nor a running hash vouches for the bytes (a break is met before
        // this, so only a fault on the way gets here): they are not taken.
        if one_connection && !intact && received.is_none() {
            return Err(EngineError::PartTampered(
                "another process opened it and nothing followed what was received".into(),
            ));
        }
        let (from, total) = (self.digest.from(), self.total);
        if let Some(h) = received.as_ref().filter(|_| intact && from == 0) {
            // The lease held and the digest ran from byte 0: only the size is left to
            // check, here rather than on a blocking thread (a hop that cost a small file
            // more than the check): the filesystem kept a lease, so it is local, and
            // `fstat` of an open file reads no disk.
            let len = self.file.metadata()?.len();
            if one_connection && total.is_some_and(|t| t != len) {
                return Err(EngineError::PartTampered(format!(
                    "{len} bytes on disk, {} received",
                    total.unwrap_or(0)
                )));
            }
            return Ok(Some(Settled::new(Some(hex(&h.clone().finalize())), true)));
        }
        let file = self.file.try_clone()?;
        let checked = tokio::task::spawn_blocking(move || -> Result<Settled, EngineError> {
            let len = file.metadata()?.len();
            if one_connection && total.is_some_and(|t| t != len) {
                return Err(EngineError::PartTampered(format!(
                    "{len} bytes on disk, {} received",
                    total.unwrap_or(0)
                )));
            }
            if intact {
                let digest = match received {
                    Some(h) if from == 0 => Some(h.finalize()),
                    _ if want_digest => Some(hash_prefix(&file, len)?.finalize()),
                    _ => None,
                };
                return Ok(Settled::new(digest.map(|d| hex(&d)), true));
            }
            let on_disk = match &received {
                Some(_) => Some(hash_range_of(&file, from, len)?.finalize()),
                None => None,
            };
            if let (Some(got), Some(disk)) = (received, &on_disk) {
                if got.finalize() != *disk {
                    return Err(EngineError::PartTampered("its digest differs".into()));
                }
            }
            let digest = match on_disk {
                Some(d) if from == 0 => d,
                _ => hash_prefix(&file, len)?.finalize(),
            };
            Ok(Settled::new(Some(hex(&digest)), false))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;
        Ok(Some(checked))
    }

    /// Meets a break of the lease (someone opened the `.part`) that the keeper found.
    /// True when the transfer went back to the bytes the keeper hashed while the file
    /// was still ours alone: what came after may have been written by the opener, so
    /// it is fetched again (a new attempt from there, not a failure); from there on,
    /// what is received is hashed, and the end reads the file back.
    pub(in crate::engine) async fn after_lease_break(
        &mut self,
        ctx: &RunCtx,
    ) -> Result<bool, EngineError> {
        let Some(found) = self.digest.take_break() else {
            return Ok(false);
        };
        if self.ranges.is_some() {
            // The end reads a segmented file back whole.
            return Ok(false);
        }
        match found {
            Break::Hashing if self.digest.is_running() => Ok(false),
            // A prefix longer than what is written was hashed before a cut.
            Break::Prefix { len, digest } if len <= self.on_disk => {
                self.rewind(len, digest, ctx).await?;
                Ok(true)
            }
            Break::Hashing | Break::Prefix { .. } | Break::Nothing => {
                self.restart(ctx).await?;
                Ok(true)
            }
        }
    }

    /// Goes back to the first `len` bytes, whose digest is `digest`, and hashes from there.
    async fn rewind(&mut self, len: u64, digest: Sha256, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        // Its writes on their way end first, so none lands after the cut.
        self.close_direct().await;
        self.drop_unwritten().await;
        // A checkpoint taken after the keeper's look may vouch for more than `len`:
        // it says `len` before the file is cut (those bytes were fsynced with it).
        let recorded = self.store.checkpoint(&self.id)?.map_or(0, |c| c.offset);
        self.on_disk = len;
        self.writeback_from = self.writeback_from.min(self.on_disk);
        if recorded > self.on_disk {
            self.store
                .put_checkpoint(&self.id, &self.checkpoint_record(ctx))?;
            self.store.flush().await?;
        }
        self.cut_to(self.on_disk).await?;
        self.digest.run(Some(digest), 0)?;
        ctx.progress.set_done(self.on_disk);
        tracing::info!(download_id = %self.id, from = self.on_disk, "fetching again what came after someone opened the .part");
        Ok(())
    }
}
