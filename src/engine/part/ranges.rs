//! The transport seam: a transport hands the `.part` byte ranges at file offsets, in any
//! order, and asks which are still missing; the `.part`'s guarantees (lease, verify,
//! checkpoint) hold for any transport because only this module writes them.
//!
//! HTTP's parallel connections are one transport through it (each connection fills its
//! own segment, a block at a time, without a lock); a content-addressed one (chunks
//! fetched by hash and written where they belong, resumed chunk by chunk) is another,
//! through [`Ranges::write_range`] and [`Ranges::missing`].
//!
//! Every write runs on a blocking thread (the transports share one thread with every
//! other transfer, which a slow disk must not stall), and counts as on its way until it
//! returned, even when its caller stopped waiting: [`Ranges::settle`] waits for them
//! all, so that none lands after the run moved on (and, say, cut the file).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::RwLock;

use super::block::WriteBlock;
use super::disk::off_thread;
use super::hashing::Follower;
use super::segment_table::{Segment, SegmentTable};
use super::Part;
use crate::engine::EngineError;

/// A transport's handle on a `.part` filled as ranges at offsets: cheap to share
/// between connections (one file description, one table).
#[derive(Clone)]
pub(in crate::engine) struct Ranges {
    file: Arc<File>,
    table: Arc<SegmentTable>,
    total: u64,
    /// Held shared by every write on its way; taken whole by [`Ranges::settle`].
    writes: Arc<RwLock<()>>,
}

impl Part {
    /// Switches to filling the file as ranges over `total` bytes (kept when already so:
    /// a resume) and gives the `.part` its full length; true when newly switched. The
    /// bytes held in order so far count as the first range.
    pub(in crate::engine) async fn fill_ranges(
        &mut self,
        total: u64,
    ) -> Result<(Ranges, bool), EngineError> {
        let fresh = self.ranges.is_none();
        if fresh {
            self.end_direct_writes().await?;
            self.ranges = Some(Arc::new(SegmentTable::whole(self.on_disk, total)));
            // Bytes arrive out of order: the digest is taken by reading the file back.
            self.digest.set_out_of_order(true);
        }
        let table = self
            .ranges
            .clone()
            .ok_or_else(|| EngineError::Internal("no ranges".into()))?;
        let file = self.file.clone();
        off_thread(move || {
            if file.metadata()?.len() < total {
                file.set_len(total)?;
            }
            Ok(())
        })
        .await?;
        let ranges = Ranges {
            file: self.file.clone(),
            table,
            total,
            writes: Arc::new(RwLock::new(())),
        };
        Ok((ranges, fresh))
    }

    /// A reader that hashes the file as its written prefix grows (on its own thread),
    /// when a digest is expected: the end then needs no read-back.
    pub(in crate::engine) fn follow_ranges(
        &self,
        table: &Arc<SegmentTable>,
        total: u64,
    ) -> Result<Option<Follower>, EngineError> {
        if self.expected_sha256().is_none() {
            return Ok(None);
        }
        Ok(Some(Follower::start(
            table.clone(),
            self.file.try_clone()?,
            total,
        )?))
    }

    /// A transport that wrote ranges says every one is there: the follower's digest is
    /// taken and the file is whole.
    pub(in crate::engine) async fn ranges_finished(
        &mut self,
        total: u64,
        follower: Option<Follower>,
    ) -> Result<(), EngineError> {
        let digest = match follower {
            Some(f) => tokio::task::spawn_blocking(move || f.finish())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?,
            None => None,
        };
        self.ranges_done(total, digest);
        Ok(())
    }

    /// The transport says every range is there: the file is whole (an error when some
    /// are still missing), its digest to be read back at the end.
    // For a transport that knows no digest of its own (the fake one of
    // `part/part_tests.rs`); segments and Xet end through `ranges_done` with theirs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(in crate::engine) fn ranges_complete(&mut self) -> Result<(), EngineError> {
        let table = self
            .ranges
            .as_ref()
            .ok_or_else(|| EngineError::Internal("no ranges".into()))?;
        if !table.complete() {
            return Err(EngineError::Internal(
                "ranges of the file are missing".into(),
            ));
        }
        let total = self.total.unwrap_or_else(|| table.end());
        self.ranges_done(total, None);
        Ok(())
    }
}

impl Ranges {
    /// Which bytes are present, segment by segment (handed out to connections).
    pub(in crate::engine) fn table(&self) -> &Arc<SegmentTable> {
        &self.table
    }

    /// The file's size.
    pub(in crate::engine) fn total(&self) -> u64 {
        self.total
    }

    /// Writes the first bytes of `block` at `seg`'s position, clipped to its current
    /// end, and moves the segment on (only the segment's owner calls it). The block
    /// goes to the writing thread and comes back empty.
    pub(in crate::engine) async fn write_segment(
        &self,
        seg: &Segment,
        block: &mut WriteBlock,
    ) -> Result<(), EngineError> {
        if block.is_empty() {
            return Ok(());
        }
        // The block starts at `pos`: only the owner of a segment moves it.
        let pos = seg.pos();
        let n = (block.len() as u64).min(seg.end().saturating_sub(pos)) as usize;
        let mut taken = std::mem::take(block);
        self.write_off_thread(move |file| taken.write_at(file, pos, n))
            .await?;
        seg.written_to(pos + n as u64);
        Ok(())
    }

    /// Writes `bytes` at `offset` (clipped to the file) and records them present, in any
    /// order; a range overlapping one already there writes those bytes again.
    // One piece at a time, for the fake transport of `part/part_tests.rs`; Xet writes
    // the chunks of a body's piece together (`write_ranges`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(in crate::engine) async fn write_range(
        &self,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), EngineError> {
        self.write_ranges(vec![(offset, bytes)]).await
    }

    /// Writes each piece at its offset (clipped to the file) in one trip to the
    /// writing thread, then records them present (none when one failed).
    pub(in crate::engine) async fn write_ranges(
        &self,
        pieces: Vec<(u64, Bytes)>,
    ) -> Result<(), EngineError> {
        let total = self.total;
        let clipped: Vec<(u64, Bytes)> = pieces
            .into_iter()
            .filter_map(|(offset, bytes)| {
                let end = offset.saturating_add(bytes.len() as u64).min(total);
                (offset < end).then(|| (offset, bytes.slice(..(end - offset) as usize)))
            })
            .collect();
        if clipped.is_empty() {
            return Ok(());
        }
        let marks: Vec<(u64, u64)> = clipped
            .iter()
            .map(|(offset, b)| (*offset, offset + b.len() as u64))
            .collect();
        self.write_off_thread(move |file| {
            super::slow_disk::pause(file);
            for (offset, bytes) in &clipped {
                file.write_all_at(bytes, *offset)?;
            }
            Ok(())
        })
        .await?;
        for (from, to) in marks {
            self.table.mark(from, to);
        }
        Ok(())
    }

    /// Copies `len` bytes at offset `from` of `src` to offset `to` (clipped to the file)
    /// and records them present: in the kernel (`copy_file_range`, a reflink where
    /// the filesystem shares extents), else read and written a MiB at a time.
    pub(in crate::engine) async fn copy_from(
        &self,
        src: Arc<File>,
        from: u64,
        to: u64,
        len: u64,
    ) -> Result<(), EngineError> {
        let end = to.saturating_add(len).min(self.total);
        if to >= end {
            return Ok(());
        }
        let len = end - to;
        self.write_off_thread(move |file| {
            super::slow_disk::pause(file);
            let mut done = 0u64;
            while done < len {
                let n = copy_range(&src, from + done, file, to + done, len - done)?;
                if n == 0 {
                    return Err(std::io::Error::other("the source file ended early"));
                }
                done += n;
            }
            Ok(())
        })
        .await?;
        self.table.mark(to, end);
        Ok(())
    }

    /// Runs `job` on the `.part` on a blocking thread, as a write on its way until it
    /// returns.
    async fn write_off_thread<T: Send + 'static>(
        &self,
        job: impl FnOnce(&File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, EngineError> {
        let on_its_way = self.writes.clone().read_owned().await;
        let file = self.file.clone();
        off_thread(move || {
            let _on_its_way = on_its_way;
            job(&file)
        })
        .await
    }

    /// Waits until every write started through this handle (or its clones) returned:
    /// a transport whose futures were dropped mid-write may have left some behind.
    pub(in crate::engine) async fn settle(&self) {
        let _all = self.writes.write().await;
    }

    /// The ranges still missing, in file order.
    pub(in crate::engine) fn missing(&self) -> Vec<Range<u64>> {
        self.table.missing()
    }
}

/// One step of [`Ranges::copy_from`]: how many bytes were copied (0 at the source's end).
fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let (mut off_in, mut off_out) = (from as libc::loff_t, to as libc::loff_t);
    let want = len.min(1 << 30) as usize;
    // SAFETY: both descriptors are open for the call's length; the offsets are ours.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            want,
            0,
        )
    };
    if n >= 0 {
        return Ok(n as u64);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Not on this filesystem (or across two): by hand.
        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
            let mut buf = vec![0u8; want.min(1024 * 1024)];
            let n = src.read_at(&mut buf, from)?;
            dst.write_all_at(&buf[..n], to)?;
            Ok(n as u64)
        }
        _ => Err(err),
    }
}
