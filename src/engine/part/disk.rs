//! How the bytes of one connection and the checkpoints reach the disk: the write
//! block (or the `O_DIRECT` writer of a large file), early writeback, and checkpoints
//! taken in the background so that the byte loop never waits on an fsync.
//!
//! No call here that waits on the disk runs on the caller's thread: every transfer
//! shares one (the `transfers` arbiter), so one slow disk would stall them all. A full
//! write block goes to a blocking thread and the byte loop goes on receiving the next
//! one; it waits only when that next one is full too (one write on its way at a time,
//! so writes land in order and memory stays bounded). Bytes count as on disk once their
//! write returned: a failed write never does.

use std::fs::File;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::block::WRITE_BLOCK;
use super::{direct, Part};
use crate::engine::{EngineError, RunCtx};
use crate::queue::store::Checkpoint;

/// How often the `.part` is fsynced and its offset recorded: at most this much data
/// is fetched again after a crash.
pub(in crate::engine) const CHECKPOINT_EVERY: std::time::Duration =
    std::time::Duration::from_secs(1);
/// How much is written before the kernel is asked to start writing it back.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

impl Part {
    pub(in crate::engine) async fn append(
        &mut self,
        chunk: &bytes::Bytes,
    ) -> Result<(), EngineError> {
        self.digest.update(chunk).await;
        if let Some(direct) = &mut self.direct {
            if let Err(e) = direct.push(chunk).await {
                return Err(self.end_direct_after(e).await);
            }
            return Ok(());
        }
        self.block.push(chunk.clone());
        if self.block.len() >= WRITE_BLOCK {
            self.send_block().await?;
        }
        Ok(())
    }

    /// Switches a single-connection transfer with at least `min` bytes left (0: never)
    /// to `O_DIRECT` writes, where the filesystem takes them; smaller ones are not worth
    /// the writer's buffers. Called with the write block empty.
    /// The writer is opened on a blocking thread (it reads the unaligned head back).
    pub(in crate::engine) async fn use_direct_writes(&mut self, min: u64) {
        let left = self
            .total
            .map(|total| total.saturating_sub(self.on_disk))
            .unwrap_or(0);
        let idle = self.block.is_empty() && self.landing.is_none();
        if min == 0 || left < min || self.direct.is_some() || !idle {
            return;
        }
        let (file, at) = (self.file.clone(), self.on_disk);
        let opened = tokio::task::spawn_blocking(move || direct::DirectWriter::open(&file, at))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match opened {
            Ok(Some(writer)) => self.direct = Some(writer),
            Ok(None) => {
                tracing::debug!(download_id = %self.id, "no O_DIRECT here; writing through the page cache")
            }
            Err(e) => {
                tracing::debug!(download_id = %self.id, error = %e, "O_DIRECT writer not opened; writing through the page cache")
            }
        }
    }

    /// Ends `O_DIRECT` writing (waiting for the writes on their way) and gives the file
    /// its exact length: the last direct write was rounded up to the alignment.
    pub(in crate::engine) async fn end_direct_writes(&mut self) -> Result<(), EngineError> {
        self.flush_block().await?;
        if self.close_direct().await {
            self.cut_to(self.on_disk).await?;
        }
        Ok(())
    }

    /// Gives the `.part` the length `len`, on a blocking thread (cutting a multi-GB
    /// file frees its blocks, which takes the disk a while).
    pub(in crate::engine) async fn cut_to(&self, len: u64) -> Result<(), EngineError> {
        let file = self.file.clone();
        off_thread(move || file.set_len(len)).await
    }

    /// Lets the direct writer go once its writes on their way are done (none lands
    /// after this returns); true when there was one.
    pub(in crate::engine) async fn close_direct(&mut self) -> bool {
        match self.direct.take() {
            Some(direct) => {
                direct.close().await;
                true
            }
            None => false,
        }
    }

    /// A direct write failed: what was taken since the last flush may not be on disk,
    /// so the writer goes (once its writes on their way are done) and `written` stays at
    /// that flush. The error ends the run (disk errors are not retried within a run), and
    /// the next run starts from the checkpoint, hashing the file again up to there.
    async fn end_direct_after(&mut self, e: std::io::Error) -> EngineError {
        self.close_direct().await;
        e.into()
    }

    /// Puts every byte received on disk (the write on its way, then the rest of the
    /// block), and waits for it.
    pub(in crate::engine) async fn flush_block(&mut self) -> Result<(), EngineError> {
        if let Some(direct) = &mut self.direct {
            match direct.flush().await {
                Ok(end) => {
                    self.on_disk = end;
                    self.digest.lease().set_on_disk(end);
                }
                Err(e) => return Err(self.end_direct_after(e).await),
            }
            return Ok(());
        }
        self.send_block().await?;
        self.landed().await
    }

    /// Sends the write block to a blocking thread, once the write before it landed;
    /// the byte loop does not wait for this one.
    async fn send_block(&mut self) -> Result<(), EngineError> {
        self.landed().await?;
        if self.block.is_empty() {
            return Ok(());
        }
        let mut block = std::mem::take(&mut self.block);
        let n = block.len();
        let at = self.on_disk;
        let end = at + n as u64;
        let writeback = self.writeback_due(end);
        let file = self.file.clone();
        let job = tokio::task::spawn_blocking(move || {
            block.write_at(&file, at, n)?;
            if let Some((from, len)) = writeback {
                start_writeback(&file, from, len);
            }
            Ok(())
        });
        self.landing = Some(Landing { end, job });
        Ok(())
    }

    /// Waits for the write on its way, if any: its bytes are on disk once it returned
    /// (a failed one leaves `on_disk` where it was). Cancel-safe: the write stays known
    /// until it is seen to end.
    async fn landed(&mut self) -> Result<(), EngineError> {
        let Some(landing) = &mut self.landing else {
            return Ok(());
        };
        let result = (&mut landing.job).await;
        let end = landing.end;
        self.landing = None;
        result.map_err(|e| EngineError::Internal(e.to_string()))??;
        self.on_disk = end;
        self.digest.lease().set_on_disk(end);
        Ok(())
    }

    /// Bytes of the write on its way.
    pub(super) fn landing_len(&self) -> u64 {
        self.landing
            .as_ref()
            .map_or(0, |l| l.end.saturating_sub(self.on_disk))
    }

    /// Drops what was received and not written, after the write on its way ended (so
    /// none lands after a cut that follows); what it wrote is not counted.
    pub(super) async fn drop_unwritten(&mut self) {
        if let Some(landing) = self.landing.take() {
            let _ = landing.job.await;
        }
        self.block.clear();
    }

    /// Every [`WRITEBACK_EVERY`] bytes, the range the kernel is to start writing out
    /// (without waiting) once the write ending at `end` is in: the disk works while the
    /// network does, so the fsyncs of the checkpoints and of the end find little left
    /// to do, and dirty pages never pile up enough to throttle the byte loop.
    fn writeback_due(&mut self, end: u64) -> Option<(u64, u64)> {
        if end < self.writeback_from + WRITEBACK_EVERY {
            return None;
        }
        let range = (self.writeback_from, end - self.writeback_from);
        self.writeback_from = end;
        Some(range)
    }

    pub(in crate::engine) fn checkpoint_record(&self, ctx: &RunCtx) -> Checkpoint {
        Checkpoint {
            offset: self.on_disk,
            total: self.total,
            etag: self.validators.etag.clone(),
            last_modified: self.validators.last_modified.clone(),
            elapsed_secs: ctx.progress.elapsed_secs(),
            segments: self
                .ranges
                .as_ref()
                .map(|t| t.snapshot())
                .unwrap_or_default(),
            renaming: None,
            url: Some(self.url.clone()),
        }
    }

    /// The job that makes a checkpoint true: fsync the `.part`, then record `record`
    /// (whose positions were read before the fsync) and flush sled.
    fn persist(
        &self,
        record: Checkpoint,
    ) -> Result<impl FnOnce() -> Result<(), EngineError> + Send + 'static, EngineError> {
        let file = self.file.clone();
        let store = self.store.clone();
        let id = self.id.clone();
        Ok(move || {
            file.sync_data()?;
            store.put_checkpoint(&id, &record)?;
            store.flush_blocking()?;
            Ok(())
        })
    }

    /// Starts a checkpoint in the background, so that the byte loop keeps reading while
    /// the disk catches up; skipped while the previous one still runs.
    fn start_checkpoint(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        if self
            .pending_checkpoint
            .as_ref()
            .is_some_and(|h| !h.is_finished())
        {
            return Ok(());
        }
        if let Some(done) = self.pending_checkpoint.take() {
            // It has finished: surface a failure of it now.
            match futures_util::FutureExt::now_or_never(done) {
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(join)) => return Err(EngineError::Internal(join.to_string())),
                _ => {}
            }
        }
        let job = self.persist(self.checkpoint_record(ctx))?;
        self.pending_checkpoint = Some(tokio::task::spawn_blocking(job));
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// The periodic checkpoint of a segmented run (the connections write themselves).
    pub(in crate::engine) fn segment_checkpoint(
        &mut self,
        ctx: &RunCtx,
    ) -> Result<(), EngineError> {
        self.still_ours()?;
        self.start_checkpoint(ctx)
    }

    /// Every [`CHECKPOINT_EVERY`] on one connection: the write block first, then a
    /// background checkpoint of the offset.
    pub(in crate::engine) async fn maybe_checkpoint(
        &mut self,
        ctx: &RunCtx,
    ) -> Result<(), EngineError> {
        if self.last_checkpoint.elapsed() < CHECKPOINT_EVERY {
            return Ok(());
        }
        // Once a checkpoint's time: a `.part` deleted (or replaced) under us is found
        // here, not at the rename after the last byte.
        self.still_ours()?;
        if self
            .pending_checkpoint
            .as_ref()
            .is_some_and(|h| !h.is_finished())
        {
            // The disk is still busy with the last one: flushing now (at every chunk
            // until it is done) would only add to its work.
            return Ok(());
        }
        self.flush_block().await?;
        self.start_checkpoint(ctx)
    }

    pub(in crate::engine) async fn wait_checkpoint(&mut self) -> Result<(), EngineError> {
        if let Some(handle) = self.pending_checkpoint.take() {
            handle
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
        }
        Ok(())
    }

    /// Writes, fsyncs and records everything received so far, and waits for it.
    pub(in crate::engine) async fn checkpoint_now(
        &mut self,
        ctx: &RunCtx,
    ) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        self.flush_block().await?;
        let job = self.persist(self.checkpoint_record(ctx))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// A write of the write block on a blocking thread: where it ends, and how it went.
pub(super) struct Landing {
    end: u64,
    job: JoinHandle<std::io::Result<()>>,
}

/// Runs `job` (a call that may wait on the disk) on a blocking thread.
pub(super) async fn off_thread<T: Send + 'static>(
    job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(EngineError::from)
}

/// Asks the kernel to start writing `len` bytes from `from` out; failure only loses
/// the hint.
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid fd and a range inside the file.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
