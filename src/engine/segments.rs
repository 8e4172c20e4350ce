//! Parallel ranged connections for one large file.
//!
//! The file is cut into segments, each fetched by one connection and written at its
//! offset in the preallocated `.part`. A connection that finishes early steals the upper
//! half of the largest segment left, so the tail never waits on one slow connection.
//! Which bytes are done is checkpointed (after an fsync), so a pause, crash or restart
//! resumes every segment where it was.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use reqwest::header;
use tokio::sync::watch;

use super::block::WriteBlock;
use super::limiter::RateLimiter;
use super::{
    backoff, describe_reqwest, parse_content_range, AttemptEnd, Engine, EngineError, Job, RunCtx,
    Transfer, Validators, CHECKPOINT_EVERY, WRITE_BLOCK,
};
use crate::progress::ProgressCell;

/// Files smaller than this (or with less than this left) use one connection.
pub const SEGMENT_THRESHOLD: u64 = 16 * 1024 * 1024;
/// A steal leaves at least this much to the victim and takes at least as much: far more
/// than one write block, so a victim can never have written past the new end.
const MIN_PIECE: u64 = 1024 * 1024;

/// The size of the pieces handed out in file order. In order, so that the written
/// prefix grows steadily and the digest can follow it during the transfer instead of
/// reading the whole file back at the end.
fn piece_size(total: u64) -> u64 {
    (total / 256).clamp(4 * MIN_PIECE, 64 * MIN_PIECE)
}

/// One range of the file: `[start, end)`, written up to `pos`.
#[derive(Debug)]
pub struct Segment {
    start: u64,
    pos: AtomicU64,
    end: AtomicU64,
    /// Held by one connection at a time: two writers would race on `pos`.
    owned: std::sync::atomic::AtomicBool,
}

impl Segment {
    fn new(start: u64, pos: u64, end: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            pos: AtomicU64::new(pos),
            end: AtomicU64::new(end),
            owned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn pos(&self) -> u64 {
        self.pos.load(Ordering::SeqCst)
    }

    fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }

    fn left(&self) -> u64 {
        self.end().saturating_sub(self.pos())
    }

    fn release(&self) {
        self.owned.store(false, Ordering::SeqCst);
    }
}

/// Every segment of the file.
#[derive(Debug, Default)]
pub struct SegmentTable {
    segs: Mutex<Vec<Arc<Segment>>>,
    piece: u64,
}

impl SegmentTable {
    /// `[from, total)` to fetch; `[0, from)` is already written.
    pub fn whole(from: u64, total: u64) -> SegmentTable {
        let mut segs = vec![Segment::new(from, from, total)];
        if from > 0 {
            segs.push(Segment::new(0, from, from));
        }
        SegmentTable {
            segs: Mutex::new(segs),
            piece: piece_size(total),
        }
    }

    /// From a checkpoint's `[start, pos, end]` triples.
    pub fn from_checkpoint(triples: &[[u64; 3]]) -> SegmentTable {
        let total = triples.iter().map(|t| t[2]).max().unwrap_or(0);
        SegmentTable {
            segs: Mutex::new(
                triples
                    .iter()
                    .map(|&[s, p, e]| Segment::new(s, p.min(e), e))
                    .collect(),
            ),
            piece: piece_size(total),
        }
    }

    /// After an attempt's connections are gone: a segment that a dropped connection
    /// held is free again for the next attempt (else only steals could reach it, and
    /// never its last piece).
    fn release_all(&self) {
        for seg in self.lock().iter() {
            seg.release();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Segment>>> {
        match self.segs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `[start, pos, end]` of every segment, for a checkpoint (read before the fsync),
    /// with runs of finished neighbours merged into one.
    pub fn snapshot(&self) -> Vec<[u64; 3]> {
        let mut triples: Vec<[u64; 3]> = self
            .lock()
            .iter()
            .map(|s| {
                let end = s.end();
                [s.start, s.pos().min(end), end]
            })
            .collect();
        triples.sort_unstable();
        let mut merged: Vec<[u64; 3]> = Vec::with_capacity(triples.len());
        for t in triples {
            match merged.last_mut() {
                Some(last) if last[1] == last[2] && t[1] == t[2] && last[2] == t[0] => {
                    last[1] = t[2];
                    last[2] = t[2];
                }
                _ => merged.push(t),
            }
        }
        merged
    }

    /// The end of the written prefix: every byte before it is on disk.
    pub fn prefix(&self) -> u64 {
        let segs = self.lock();
        let mut sorted: Vec<&Arc<Segment>> = segs.iter().collect();
        sorted.sort_unstable_by_key(|s| s.start);
        let mut at = 0;
        for s in sorted {
            if s.start > at {
                break;
            }
            let (pos, end) = (s.pos(), s.end());
            at = at.max(pos.min(end));
            if pos < end {
                break;
            }
        }
        at
    }

    /// Bytes written, over all segments.
    pub fn done(&self) -> u64 {
        self.lock()
            .iter()
            .map(|s| s.pos().min(s.end()) - s.start)
            .sum()
    }

    pub fn complete(&self) -> bool {
        self.lock().iter().all(|s| s.pos() >= s.end())
    }

    /// A segment nobody works on (after a resume), else the upper half of the largest
    /// one still running; either way now owned by the caller.
    fn take(&self) -> Option<Arc<Segment>> {
        let mut segs = self.lock();
        // The lowest segment nobody works on; a large one gives up only its first piece.
        let free = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.left() > 0 && !s.owned.load(Ordering::SeqCst))
            .min_by_key(|(_, s)| s.pos())
            .map(|(i, s)| (i, s.clone()));
        if let Some((i, free)) = free {
            let (pos, end) = (free.pos(), free.end());
            if end - pos > self.piece + MIN_PIECE {
                // Nobody writes to an unowned segment: it can be cut safely.
                let piece = Segment::new(free.start, pos, pos + self.piece);
                piece.owned.store(true, Ordering::SeqCst);
                segs[i] = piece.clone();
                segs.push(Segment::new(pos + self.piece, pos + self.piece, end));
                return Some(piece);
            }
            free.owned.store(true, Ordering::SeqCst);
            return Some(free);
        }
        let victim = segs.iter().max_by_key(|s| s.left())?.clone();
        let left = victim.left();
        if left < 2 * MIN_PIECE {
            return None;
        }
        let mid = victim.pos() + left / 2;
        let old_end = victim.end();
        victim.end.store(mid, Ordering::SeqCst);
        let stolen = Segment::new(mid, mid, old_end);
        stolen.owned.store(true, Ordering::SeqCst);
        segs.push(stolen.clone());
        Some(stolen)
    }
}

/// What every connection shares.
struct Shared<'a> {
    engine: &'a Engine,
    job: &'a Job,
    table: &'a SegmentTable,
    file: Arc<File>,
    /// The current link; a Hub CDN link is replaced when it expires.
    link: tokio::sync::Mutex<Link>,
    /// The pinned commit, to resolve a Hub file again.
    commit: Option<String>,
    validators: Validators,
    /// The file's size as this run knows it.
    total: u64,
    progress: Arc<ProgressCell>,
    limiter: Arc<RateLimiter>,
    stop: watch::Receiver<bool>,
}

#[derive(Clone)]
struct Link {
    url: url::Url,
    auth: Option<String>,
    /// Bumped on every refresh, so that connections refused together resolve once.
    generation: u64,
}

/// Why a connection gave up on a segment (or the whole run).
enum Abort {
    /// The server ignored a Range or the file changed: start over on one connection.
    Fallback(String),
    /// A presigned link of this generation was refused: resolve again.
    LinkExpired(u64),
    Error(EngineError),
    Stopped,
}

impl Engine {
    /// Downloads the rest of the file on up to `connections_per_download` connections.
    /// `first` is a response already streaming from the start of the (single) segment.
    pub(super) async fn run_segments(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        target: (url::Url, Option<String>),
        first: Option<reqwest::Response>,
    ) -> Result<AttemptEnd, EngineError> {
        let total = t
            .total
            .ok_or_else(|| EngineError::Internal("segments need a size".into()))?;
        if t.segments.is_none() {
            t.flush_block().await?;
            t.segments = Some(Arc::new(SegmentTable::whole(t.written, total)));
            // Bytes arrive out of order: the digest is taken by reading the file back.
            t.hasher = None;
            tracing::info!(download_id = %job.id, connections = job.settings.connections_per_download, "using parallel ranged connections");
        }
        let table = t
            .segments
            .clone()
            .ok_or_else(|| EngineError::Internal("no segments".into()))?;
        if t.file.metadata()?.len() < total {
            t.file.set_len(total)?;
        }
        let done_before = table.done();
        ctx.progress.set_done(done_before);
        let shared = Shared {
            engine: self,
            job,
            table: &table,
            file: Arc::new(t.file.try_clone()?),
            link: tokio::sync::Mutex::new(Link {
                url: target.0,
                auth: target.1,
                generation: 0,
            }),
            commit: t.commit.clone(),
            validators: t.validators.clone(),
            total,
            progress: ctx.progress.clone(),
            limiter: ctx.limiter.clone(),
            stop: ctx.stop.clone(),
        };
        // Hand out the first segments before any connection runs, so that no two
        // connections ever start on the same one.
        let mut first = first;
        let mut initial = Vec::new();
        for _ in 0..job.settings.connections_per_download.max(1) {
            // With a response already streaming from the start, the first piece (the
            // lowest) is the one that response is for.
            let seg = table.take();
            initial.push(seg);
        }
        let workers = FuturesUnordered::new();
        for seg in initial {
            let resp = if seg.is_some() { first.take() } else { None };
            workers.push(worker(&shared, seg, resp));
        }
        let mut workers = workers;
        let follower = match &t.expected_sha256 {
            Some(_) => Some(Follower::start(table.clone(), t.file.try_clone()?, total)?),
            None => None,
        };
        let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
        ticker.tick().await;
        let outcome = loop {
            tokio::select! {
                done = workers.next() => match done {
                    None => break None,
                    Some(Ok(())) => {}
                    Some(Err(abort)) => break Some(abort),
                },
                _ = ticker.tick() => t.segment_checkpoint(ctx)?,
            }
        };
        drop(workers);
        table.release_all();
        // Keep a refreshed link for the next attempt.
        t.link = Some(shared.link.lock().await.url.clone());
        drop(shared);
        match outcome {
            None if table.complete() => {
                t.written = total;
                t.block.clear();
                ctx.progress.set_done(total);
                if let Some(f) = follower {
                    t.digest_ready = tokio::task::spawn_blocking(move || f.finish())
                        .await
                        .map_err(|e| EngineError::Internal(e.to_string()))?;
                }
                Ok(AttemptEnd::Done)
            }
            None => Err(EngineError::Internal(
                "connections ended with bytes left".into(),
            )),
            Some(Abort::Stopped) => Ok(AttemptEnd::Stopped),
            Some(Abort::Error(e)) => Err(e),
            Some(Abort::LinkExpired(_)) => {
                t.link = None;
                // Only links refused in a row, with no byte in between, count.
                if table.done() > done_before {
                    t.reresolves = 0;
                }
                t.reresolves += 1;
                if t.reresolves > 3 {
                    return Err(EngineError::Status {
                        status: 403,
                        retry_after: None,
                    });
                }
                Ok(AttemptEnd::Again)
            }
            Some(Abort::Fallback(why)) => {
                tracing::warn!(download_id = %job.id, "{why}; starting over on one connection");
                t.restart(ctx).await?;
                t.one_connection = true;
                Ok(AttemptEnd::Again)
            }
        }
    }
}

/// One connection: fetch a segment, then steal another, until none is left.
async fn worker(
    s: &Shared<'_>,
    seg: Option<Arc<Segment>>,
    first: Option<reqwest::Response>,
) -> Result<(), Abort> {
    let Some(seg) = seg else { return Ok(()) };
    work(s, seg, first).await
}

/// The segments of one connection, one after another; the segment in hand is owned
/// until it is done (released here) or the attempt ends (any error ends it, and
/// `run_segments` then releases every segment).
async fn work(
    s: &Shared<'_>,
    mut current: Arc<Segment>,
    mut first: Option<reqwest::Response>,
) -> Result<(), Abort> {
    let mut failures = 0u32;
    let mut refreshes = 0u32;
    loop {
        if current.left() == 0 {
            current.release();
            match s.table.take() {
                Some(next) => {
                    current = next;
                    failures = 0;
                }
                None => return Ok(()),
            }
        }
        let before = current.pos();
        let result = match first.take() {
            Some(resp) => pump(s, &current, resp).await,
            None => fetch(s, &current).await,
        };
        if current.pos() > before {
            refreshes = 0;
        }
        match result {
            Ok(()) => {}
            Err(Abort::LinkExpired(generation)) => {
                // Only this connection was refused: fetch a fresh link (once for all
                // connections refused together) and go on with the same segment.
                refreshes += 1;
                if refreshes > 3 {
                    return Err(Abort::LinkExpired(generation));
                }
                refresh_link(s, generation).await?;
            }
            Err(Abort::Error(e)) if e.is_transient() => {
                let progressed = current.pos() > before;
                failures = if progressed { 1 } else { failures + 1 };
                if failures > s.job.settings.max_retries {
                    return Err(Abort::Error(e));
                }
                let wait = if progressed && e.retry_after().is_none() {
                    Duration::ZERO
                } else {
                    backoff(
                        failures,
                        Duration::from_millis(s.job.settings.retry_base_delay_ms),
                        e.retry_after(),
                    )
                };
                tracing::debug!(download_id = %s.job.id, error = %e, wait_ms = wait.as_millis() as u64, "connection failed; retrying its segment");
                let mut stop = s.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|x| *x) => return Err(Abort::Stopped),
                }
            }
            Err(other) => return Err(other),
        }
    }
}

/// Resolves a Hub file again, unless another connection already did since `seen`.
async fn refresh_link(s: &Shared<'_>, seen: u64) -> Result<(), Abort> {
    let Some(hub) = &s.job.hub else {
        return Err(Abort::Error(EngineError::Status {
            status: 403,
            retry_after: None,
        }));
    };
    let mut link = s.link.lock().await;
    if link.generation != seen {
        return Ok(());
    }
    let revision = s.commit.as_deref().unwrap_or(&hub.revision);
    let resolved = hub
        .client
        .resolve(&hub.repo, revision, &hub.file)
        .await
        .map_err(|e| Abort::Error(e.into()))?;
    tracing::info!(download_id = %s.job.id, "CDN link refused; resolved a fresh one");
    link.auth = hub.client.auth_for(&resolved.location);
    link.url = resolved.location;
    link.generation += 1;
    Ok(())
}

/// A ranged request for the rest of `seg`, checked before a byte is used.
async fn fetch(s: &Shared<'_>, seg: &Segment) -> Result<(), Abort> {
    let (from, to) = (seg.pos(), seg.end());
    if from >= to {
        return Ok(());
    }
    let link = s.link.lock().await.clone();
    let stall = Duration::from_secs(s.job.settings.stall_timeout_secs);
    let mut req = s
        .engine
        .client
        .get(link.url.clone())
        .header(header::RANGE, format!("bytes={from}-{}", to - 1));
    if let Some(v) = if_range(&s.validators) {
        req = req.header(header::IF_RANGE, v);
    }
    if let Some(auth) = &link.auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let mut stop = s.stop.clone();
    let resp = tokio::select! {
        r = tokio::time::timeout(stall, req.send()) => match r {
            Err(_) => return Err(Abort::Error(EngineError::Stalled(stall.as_secs()))),
            Ok(Err(e)) => return Err(Abort::Error(EngineError::Network(describe_reqwest(&e)))),
            Ok(Ok(r)) => r,
        },
        _ = stop.wait_for(|x| *x) => return Err(Abort::Stopped),
    };
    let status = resp.status().as_u16();
    match status {
        206 => {
            let range = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            let Some(range) = range.filter(|r| r.first == from) else {
                return Err(Abort::Error(EngineError::BadContentRange(format!(
                    "asked bytes={from}-{}",
                    to - 1
                ))));
            };
            if range.total.is_some_and(|now| now != s.total) {
                // Without validators the size is all there is to tell: a new file.
                return Err(Abort::Fallback("the file's size changed upstream".into()));
            }
            if s.validators
                .changed_to(&Validators::from_headers(resp.headers()))
            {
                return Err(Abort::Fallback("the file changed upstream".into()));
            }
            pump(s, seg, resp).await
        }
        200 => Err(Abort::Fallback(
            "the server answered a range with the whole file".into(),
        )),
        416 => Err(Abort::Fallback(
            "the server refused a range of the file".into(),
        )),
        401 | 403 | 410
            if s.job
                .hub
                .as_ref()
                .is_some_and(|h| !h.client.is_hub_host(&link.url)) =>
        {
            Err(Abort::LinkExpired(link.generation))
        }
        _ => {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| super::parse_retry_after(v, std::time::SystemTime::now()));
            Err(Abort::Error(EngineError::Status {
                status,
                retry_after,
            }))
        }
    }
}

fn if_range(v: &Validators) -> Option<String> {
    match &v.etag {
        Some(tag) if !tag.starts_with("W/") => Some(tag.clone()),
        _ => v.last_modified.clone(),
    }
}

/// Streams a response into `seg` from its `pos`, in large writes, until the segment's
/// (possibly shrunk) end.
async fn pump(s: &Shared<'_>, seg: &Segment, resp: reqwest::Response) -> Result<(), Abort> {
    let stall = Duration::from_secs(s.job.settings.stall_timeout_secs);
    let _connection = s.engine.metrics.connection();
    let mut body = resp.bytes_stream();
    let mut block = WriteBlock::default();
    let mut stop = s.stop.clone();
    let started = Instant::now();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(stall, body.next()) => n,
            _ = stop.wait_for(|x| *x) => {
                flush(s, seg, &mut block).map_err(Abort::Error)?;
                return Err(Abort::Stopped);
            }
        };
        let chunk = match next {
            Err(_) => {
                flush(s, seg, &mut block).map_err(Abort::Error)?;
                return Err(Abort::Error(EngineError::Stalled(stall.as_secs())));
            }
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                flush(s, seg, &mut block).map_err(Abort::Error)?;
                return Err(Abort::Error(EngineError::Network(describe_reqwest(&e))));
            }
            Ok(None) => {
                flush(s, seg, &mut block).map_err(Abort::Error)?;
                if seg.pos() < seg.end() {
                    return Err(Abort::Error(EngineError::Truncated {
                        got: seg.pos(),
                        expected: seg.end(),
                    }));
                }
                return Ok(());
            }
        };
        // Bytes past the end (after a steal) belong to another connection.
        let room = seg.end().saturating_sub(seg.pos() + block.len() as u64) as usize;
        let useful = chunk.slice(..chunk.len().min(room));
        let took = useful.len();
        s.progress.add_done(took as u64);
        block.push(useful);
        if block.len() >= WRITE_BLOCK || took < chunk.len() || room == took {
            flush(s, seg, &mut block).map_err(Abort::Error)?;
        }
        // Every byte received counts against the limits, the last one of a piece too.
        if !super::limiter::pace(&s.engine.global, &s.limiter, chunk.len(), &mut stop).await {
            flush(s, seg, &mut block).map_err(Abort::Error)?;
            return Err(Abort::Stopped);
        }
        if seg.pos() >= seg.end() {
            tracing::trace!(
                segment_start = seg.start,
                took_ms = started.elapsed().as_millis() as u64,
                "segment done"
            );
            // When the response ends here too, read its end, so that the connection goes
            // back to the pool: otherwise every piece would open a new connection and
            // the download would use more than `connections_per_download` of them.
            let _ = tokio::time::timeout(Duration::from_millis(50), body.next()).await;
            return Ok(());
        }
    }
}

/// Writes the block at the segment's position, clipped to its current end.
fn flush(s: &Shared<'_>, seg: &Segment, block: &mut WriteBlock) -> Result<(), EngineError> {
    if block.is_empty() {
        return Ok(());
    }
    // The block starts at `pos`: only the owner of a segment moves it.
    let pos = seg.pos();
    let n = (block.len() as u64).min(seg.end().saturating_sub(pos)) as usize;
    block.write_at(&s.file, pos, n)?;
    seg.pos.store(pos + n as u64, Ordering::SeqCst);
    Ok(())
}

/// Hashes the written prefix of the file while the connections fill it, so that the
/// digest is ready (or nearly) when the last byte lands.
pub(super) struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    worker: Option<std::thread::JoinHandle<Option<sha2::Sha256>>>,
}

impl Follower {
    pub(super) fn start(
        table: Arc<SegmentTable>,
        file: File,
        total: u64,
    ) -> std::io::Result<Follower> {
        use sha2::Digest;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let worker = std::thread::Builder::new()
            .name("sha256-follow".into())
            .spawn(move || {
                let mut hasher = sha2::Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut at = 0u64;
                loop {
                    let prefix = table.prefix();
                    while at < prefix {
                        let n = ((prefix - at) as usize).min(buf.len());
                        file.read_exact_at(&mut buf[..n], at).ok()?;
                        hasher.update(&buf[..n]);
                        at += n as u64;
                    }
                    if at >= total {
                        return Some(hasher);
                    }
                    // All written, yet the prefix stops short: the table does not cover
                    // the file. Give up; the digest is then taken by reading it back.
                    if table.complete() && table.prefix() == at {
                        return None;
                    }
                    if stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        Ok(Follower {
            stop,
            worker: Some(worker),
        })
    }

    /// Waits for the digest of the whole file (blocking; the table must be complete).
    pub(super) fn finish(mut self) -> Option<sha2::Sha256> {
        self.worker.take()?.join().ok().flatten()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn pieces_go_out_in_file_order_then_the_largest_is_split() {
        let t = SegmentTable::whole(0, 64 * MIB);
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        assert_eq!((a.start, a.end()), (0, 4 * MIB), "the first piece first");
        assert_eq!((b.start, b.end()), (4 * MIB, 8 * MIB));
        assert_eq!(t.prefix(), 0);
        a.pos.store(4 * MIB, Ordering::SeqCst);
        b.pos.store(5 * MIB, Ordering::SeqCst);
        assert_eq!(
            t.prefix(),
            5 * MIB,
            "the written prefix runs through finished pieces"
        );
        assert_eq!(t.done(), 5 * MIB);
        // A checkpoint and back: the same bytes done, the rest still to fetch.
        let again = SegmentTable::from_checkpoint(&t.snapshot());
        assert_eq!(again.done(), 5 * MIB);
        assert_eq!(again.prefix(), 5 * MIB);
        assert!(!again.complete());
        // Owned segments are not handed out twice; released ones are.
        let c = t.take().unwrap();
        assert_eq!(c.start, 8 * MIB);
        c.release();
        assert_eq!(t.take().unwrap().start, 8 * MIB);
    }

    #[test]
    fn with_nothing_free_the_largest_running_segment_is_split() {
        let t = SegmentTable::whole(0, 8 * MIB);
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        assert_eq!((a.end() - a.start, b.end() - b.start), (4 * MIB, 4 * MIB));
        let c = t.take().unwrap();
        assert_eq!(
            c.end() - c.start,
            2 * MIB,
            "half of one of the two running pieces"
        );
        assert!(a.end() == c.start || b.end() == c.start);
    }

    #[test]
    fn bytes_written_before_the_switch_count_as_the_prefix() {
        let t = SegmentTable::whole(3 * MIB, 64 * MIB);
        assert_eq!(t.prefix(), 3 * MIB);
        assert_eq!(t.done(), 3 * MIB);
        assert_eq!(t.take().unwrap().start, 3 * MIB);
    }

    #[test]
    fn small_remainders_are_not_split() {
        let t = SegmentTable::whole(0, MIB);
        assert!(t.take().is_some());
        assert!(
            t.take().is_none(),
            "the only segment is owned and too small to split"
        );
    }
}
