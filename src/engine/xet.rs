//! The Xet transport: a Hub file kept in Xet storage, fetched from its CAS instead of
//! through the plain HTTP bridge.
//!
//! The missing bytes of the `.part` are cut into units of [`UNIT`] bytes; up to
//! `connections_per_download` of them run at once, each asking the CAS how its range
//! is made (a reconstruction: terms of xorb chunks, and presigned URLs for them) and
//! fetching only those xorb bytes. Decoded chunks go through the transport seam
//! ([`Ranges::write_range`]) at their file offsets, so the lease, checkpoints and sha256
//! verification are the `.part`'s, as for HTTP; a restart asks the CAS only for the
//! ranges still missing, so a crash costs at most a chunk per range in flight.
//!
//! A Xet failure that retrying does not cure (the CAS down, a token refused, an answer
//! that makes no sense) ends the transport with an error, and the caller falls back to
//! the bridge for that file, from byte 0.

mod cas;
mod chunker;
mod estimate;
pub use estimate::OnDisk;
mod format;
mod plan;
mod reuse;
mod unit;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::watch;

use self::cas::Cas;
use self::reuse::Reuse;
use super::http::request::stall_timeout;
use super::http::retry::{sleep_unless_stopped, Retries};
use super::limiter::RateLimiter;
use super::part::segment_table::SegmentTable;
use super::part::{Ranges, CHECKPOINT_EVERY};
use super::transfer::Transfer;
use super::{Ended, Engine, EngineError, EngineEvent, Job, RunCtx};
use crate::hub::{HubError, XetLink};
use crate::queue::progress::ProgressCell;

/// The file range one reconstruction covers: small enough that a 128 MiB file keeps
/// several connections busy, large enough that the chunk fetched twice at each cut
/// (it straddles two units) costs under 1 %.
const UNIT: u64 = 16 * 1024 * 1024;
/// A checkpoint is taken once this much more is on disk (or [`CHECKPOINT_EVERY`] has
/// passed), looked at every [`CHECKPOINT_TICK`]: chunks written in any order are only
/// known to be there through a checkpoint, so its lag is what a crash costs. One runs
/// at a time, in the background: a fast disk gets them as fast as it can fsync.
const CHECKPOINT_BYTES: u64 = 1024 * 1024;
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
/// Expired xorb URLs renewed in a row, with no byte in between, before giving up.
const URL_RENEWALS: u32 = 3;

/// Why the Xet transport could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum XetError {
    #[error("the Xet CAS answered HTTP {status}")]
    Cas {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("Xet token: {0}")]
    Token(HubError),
    #[error("the Xet CAS sent something that makes no sense: {0}")]
    Malformed(String),
    #[error("a xorb URL expired")]
    UrlExpired,
    #[error("Xet network: {0}")]
    Network(String),
    #[error("no data from the Xet CAS for {0} s")]
    Stalled(u64),
    /// Not the transport's: the `.part`, the disk (never a reason to fall back).
    #[error("{0}")]
    Engine(#[from] EngineError),
}

impl XetError {
    /// The same error in the engine's terms, for its retry policy.
    fn for_retry(&self) -> Option<EngineError> {
        Some(match self {
            XetError::Network(m) => EngineError::Network(m.clone()),
            XetError::Stalled(s) => EngineError::Stalled(*s),
            XetError::Cas {
                status,
                retry_after,
            } => EngineError::Status {
                status: *status,
                retry_after: *retry_after,
            },
            _ => return None,
        })
    }
}

/// What every unit of one run shares.
pub(super) struct Shared<'a> {
    engine: &'a Engine,
    job: &'a Job,
    cas: Cas<'a>,
    ranges: &'a Ranges,
    table: &'a SegmentTable,
    reuse: Reuse,
    units: Mutex<VecDeque<Range<u64>>>,
    progress: Arc<ProgressCell>,
    limiter: Arc<RateLimiter>,
    stop: watch::Receiver<bool>,
    stall: Duration,
    /// Bytes fetched from the CAS by this run, and taken from files on disk.
    fetched: AtomicU64,
    reused: AtomicU64,
}

impl Shared<'_> {
    /// Writes each `(at, bytes)` at its file offset, clipped to `unit`, in one trip
    /// to the writing thread.
    async fn write(&self, pieces: Vec<(u64, Bytes)>, unit: &Range<u64>) -> Result<(), XetError> {
        let clipped: Vec<(u64, Bytes)> = pieces
            .into_iter()
            .filter_map(|(at, bytes)| {
                let end = at + bytes.len() as u64;
                let (from, to) = (at.max(unit.start), end.min(unit.end));
                (from < to).then(|| (from, bytes.slice((from - at) as usize..(to - at) as usize)))
            })
            .collect();
        if !clipped.is_empty() {
            self.ranges.write_ranges(clipped).await?;
            self.progress.set_done(self.table.held());
        }
        Ok(())
    }

    fn fetched(&self, n: u64) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
        self.engine.metrics.xet_bytes(false, n);
    }

    fn reused(&self, n: u64) {
        self.reused.fetch_add(n, Ordering::Relaxed);
        self.engine.metrics.xet_bytes(true, n);
    }
}

impl Engine {
    /// Fetches the rest of a `total`-byte Xet-backed file from its CAS.
    pub(super) async fn run_xet(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        (link, total): (XetLink, u64),
    ) -> Result<Ended, XetError> {
        let hub = job
            .hub
            .as_ref()
            .ok_or_else(|| EngineError::Internal("Xet without a Hub file".into()))?;
        let (ranges, fresh) = t.part.fill_ranges(total).await?;
        let table = ranges.table().clone();
        let missing = ranges.missing();
        if fresh {
            tracing::info!(download_id = %job.id, xet_hash = %link.hash, "fetching from Xet storage");
        }
        ctx.progress.set_done(table.held());
        let shared = Shared {
            engine: self,
            job,
            cas: Cas::new(self, &hub.client, link, stall_timeout(job)),
            ranges: &ranges,
            table: &table,
            reuse: Reuse::load(&self.store, &job.download_dir, !t.reuse_allowed()),
            units: Mutex::new(units(&missing)),
            progress: ctx.progress.clone(),
            limiter: ctx.limiter.clone(),
            stop: ctx.stop.clone(),
            stall: stall_timeout(job),
            fetched: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        };
        let follower = t.part.follow_ranges(&table, total)?;
        let ended = run_units(&shared, t, ctx, total).await;
        // A unit dropped mid-write leaves its write on its way: none may land after
        // what comes next (a fall back to the bridge cuts the file).
        ranges.settle().await;
        let (ended, told) = ended;
        let (fetched, reused) = (shared.fetched.into_inner(), shared.reused.into_inner());
        tracing::info!(download_id = %job.id, fetched, reused, missing = missing.iter().map(|r| r.end - r.start).sum::<u64>(), "Xet transfer ended");
        t.add_reused(reused);
        if reused > told {
            (ctx.events)(EngineEvent::Reused(reused - told));
        }
        match ended? {
            Ended::Done if table.complete() => {
                ctx.progress.set_done(total);
                t.part.ranges_finished(total, follower).await?;
                keep_chunk_map(&shared.cas, job, &self.store, total).await;
                Ok(Ended::Done)
            }
            Ended::Done => {
                Err(EngineError::Internal("Xet units ended with bytes left".into()).into())
            }
            other => Ok(other),
        }
    }
}

/// Keeps the file's chunk map for later downloads to reuse (asked of the CAS: one
/// reconstruction of the whole file). Without it, an update fetches every chunk.
async fn keep_chunk_map(cas: &Cas<'_>, job: &Job, store: &crate::queue::store::Store, total: u64) {
    let kept = match cas.plan(&(0..total)).await {
        Ok(plan) => store
            .put_xet_map(
                &job.relative,
                &reuse::ChunkMap::of(total, cas.hash(), &plan.terms),
            )
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = kept {
        tracing::warn!(download_id = %job.id, error = %e, "the chunk map was not kept; an update will fetch every chunk");
    }
}

/// Copies what files on disk hold of the whole file before the units run (one
/// reconstruction of the whole file), then cuts what is still missing into units.
async fn reuse_first(s: &Shared<'_>, total: u64) -> Result<Ended, XetError> {
    if s.reuse.is_empty() || s.table.complete() {
        return Ok(Ended::Done);
    }
    let plan = s.cas.plan(&(0..total)).await?;
    let copied = s.reuse.copy_each(s, &plan.terms, &(0..total)).await?;
    if *s.stop.borrow() {
        return Ok(Ended::Stopped);
    }
    tracing::debug!(download_id = %s.job.id, copied, "chunks on disk copied");
    if let Ok(mut queue) = s.units.lock() {
        *queue = units(&s.table.missing());
    }
    Ok(Ended::Done)
}

/// Copies what files on disk hold, then fetches the rest: how the units ended, and the
/// bytes reused already told.
async fn run_units(
    s: &Shared<'_>,
    t: &mut Transfer,
    ctx: &RunCtx,
    total: u64,
) -> (Result<Ended, XetError>, u64) {
    match reuse_first(s, total).await {
        Ok(Ended::Done) => {
            // Most of what a delta reuses is copied by now: told before the fetch,
            // which may take long.
            let first = s.reused.load(Ordering::Relaxed);
            if first > 0 {
                (ctx.events)(EngineEvent::Reused(first));
            }
            let ended = drive(s, t, ctx).await;
            (ended, first)
        }
        other => (other, 0),
    }
}

/// The missing ranges cut into units.
fn units(missing: &[Range<u64>]) -> VecDeque<Range<u64>> {
    missing
        .iter()
        .flat_map(|r| {
            (r.start..r.end)
                .step_by(UNIT as usize)
                .map(move |s| s..(s + UNIT).min(r.end))
        })
        .collect()
}

/// Runs the units on up to `connections_per_download` workers, checkpointing what they
/// wrote meanwhile.
async fn drive(s: &Shared<'_>, t: &mut Transfer, ctx: &RunCtx) -> Result<Ended, XetError> {
    let mut workers: FuturesUnordered<_> = (0..s.job.settings.connections_per_download.max(1))
        .map(|_| work(s))
        .collect();
    let mut ticker = tokio::time::interval(CHECKPOINT_TICK);
    ticker.tick().await;
    let mut last = (Instant::now(), s.table.held());
    loop {
        tokio::select! {
            done = workers.next() => match done {
                None => return Ok(Ended::Done),
                Some(Ok(Ended::Done)) => {}
                Some(other) => return other,
            },
            _ = ticker.tick() => {
                let held = s.table.held();
                if held >= last.1 + CHECKPOINT_BYTES || last.0.elapsed() >= CHECKPOINT_EVERY {
                    t.part.segment_checkpoint(ctx)?;
                    last = (Instant::now(), held);
                }
            }
        }
    }
}

/// One worker: units one after another, each retried by the download's policy.
async fn work(s: &Shared<'_>) -> Result<Ended, XetError> {
    loop {
        let Some(unit) = s.units.lock().map(|mut q| q.pop_front()).unwrap_or(None) else {
            return Ok(Ended::Done);
        };
        if let Ended::Stopped = unit_with_retries(s, &unit).await? {
            return Ok(Ended::Stopped);
        }
    }
}

async fn unit_with_retries(s: &Shared<'_>, unit: &Range<u64>) -> Result<Ended, XetError> {
    let mut retries = Retries::new(&s.job.settings);
    let mut renewals = 0;
    loop {
        let before = s.table.held();
        let err = match run_missing(s, unit).await {
            Ok(ended) => return Ok(ended),
            Err(e) => e,
        };
        let progressed = s.table.held() > before;
        if let XetError::UrlExpired = err {
            // A fresh reconstruction hands out fresh URLs.
            renewals = if progressed { 1 } else { renewals + 1 };
            if renewals <= URL_RENEWALS {
                tracing::info!(download_id = %s.job.id, "xorb URLs expired; asking the CAS again");
                continue;
            }
            return Err(err);
        }
        let Some(as_engine) = err.for_retry() else {
            return Err(err);
        };
        let Some(wait) = retries.after(&as_engine, progressed) else {
            return Err(err);
        };
        let wait = wait.max(unit::asked_wait(&err).unwrap_or_default());
        tracing::debug!(download_id = %s.job.id, error = %err, wait_ms = wait.as_millis() as u64, "Xet unit failed; retrying");
        let mut stop = s.stop.clone();
        if !sleep_unless_stopped(wait, &mut stop).await {
            return Ok(Ended::Stopped);
        }
    }
}

/// Runs what is still missing of `unit`: all of it the first time; after a failure,
/// only the chunks that did not reach the disk.
async fn run_missing(s: &Shared<'_>, unit: &Range<u64>) -> Result<Ended, XetError> {
    let missing: Vec<Range<u64>> = s
        .table
        .missing()
        .into_iter()
        .filter_map(|m| {
            let (from, to) = (m.start.max(unit.start), m.end.min(unit.end));
            (from < to).then_some(from..to)
        })
        .collect();
    for piece in missing {
        if let Ended::Stopped = unit::run(s, &piece).await? {
            return Ok(Ended::Stopped);
        }
    }
    Ok(Ended::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ranges_are_cut_into_units() {
        let u = units(&[0..(UNIT * 2 + 5), (UNIT * 3)..(UNIT * 3 + 1)]);
        let got: Vec<Range<u64>> = u.into_iter().collect();
        assert_eq!(
            got,
            vec![
                0..UNIT,
                UNIT..UNIT * 2,
                UNIT * 2..UNIT * 2 + 5,
                UNIT * 3..UNIT * 3 + 1
            ]
        );
    }
}
