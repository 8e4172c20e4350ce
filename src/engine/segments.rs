//! Parallel ranged connections for one large file.
//!
//! The file is cut into segments (see [`SegmentTable`]), each fetched by one connection
//! and written at its offset in the preallocated `.part`. Pieces are handed out in file
//! order and shrink toward the end, so the connections finish close together; a
//! connection that runs out of work splits off only what no request has asked for yet
//! (a segment whose owner waits to retry), because a byte asked for is on its way and
//! fetching it again is waste. The first request's answer is kept whole: it asked for
//! a bounded first piece, which its connection fills. Which bytes are done is checkpointed (after an fsync), so a
//! pause, crash or restart resumes every segment where it was. Each response is judged
//! by the same classifier as on one connection, and each connection retries with the
//! same policy.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::http::classify::{classify, Asked, Known, Verdict};
use super::http::request::{self, stall_timeout, SpeedFloor};
use super::http::retry::{sleep_unless_stopped, LinkBudget, Retries};
use super::http::validators::Validators;
use super::limiter::RateLimiter;
use super::part::segment_table::{Segment, SegmentTable};
use super::part::{Ranges, WriteBlock, CHECKPOINT_EVERY, WRITE_BLOCK};
use super::transfer::Transfer;
use super::{Ended, Engine, EngineError, Job, RunCtx};
use crate::queue::progress::ProgressCell;

/// Files smaller than this (or with less than this left) use one connection.
pub const SEGMENT_THRESHOLD: u64 = 16 * 1024 * 1024;

/// What every connection shares.
struct Shared<'a> {
    engine: &'a Engine,
    job: &'a Job,
    table: &'a SegmentTable,
    /// The `.part`, through the seam: each connection writes its own segment.
    ranges: &'a Ranges,
    /// The current link; a Hub CDN link is replaced when it expires.
    link: tokio::sync::Mutex<Link>,
    /// The pinned commit, to resolve a Hub file again.
    commit: Option<String>,
    validators: Validators,
    /// The bytes came from another URL: every answer must prove the file the same.
    must_prove: bool,
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

impl Engine {
    /// Downloads the rest of the file on up to `connections_per_download` connections.
    /// `first` is a response already streaming from the start of the (single) segment,
    /// with one past the last byte it asked for.
    pub(super) async fn run_segments(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        target: (url::Url, Option<String>),
        first: Option<(reqwest::Response, u64)>,
    ) -> Result<Ended, EngineError> {
        let total = t
            .part
            .total()
            .ok_or_else(|| EngineError::Internal("segments need a size".into()))?;
        let (ranges, fresh) = t.part.fill_ranges(total).await?;
        let table = ranges.table().clone();
        if fresh {
            tracing::info!(download_id = %job.id, connections = job.settings.connections_per_download, "using parallel ranged connections");
        }
        ctx.progress.set_done(table.held());
        let shared = Shared {
            engine: self,
            job,
            table: &table,
            ranges: &ranges,
            link: tokio::sync::Mutex::new(Link {
                url: target.0,
                auth: target.1,
                generation: 0,
            }),
            commit: t.commit().map(str::to_owned),
            validators: t.part.validators().clone(),
            must_prove: t.part.must_prove(),
            total: ranges.total(),
            progress: ctx.progress.clone(),
            limiter: ctx.limiter.clone(),
            stop: ctx.stop.clone(),
        };
        let follower = t.part.follow_ranges(&table, total)?;
        let ended = drive(&shared, t, ctx, first).await;
        // A connection dropped mid-write leaves its write on its way: none may land
        // after what comes next (a restart cuts the file).
        ranges.settle().await;
        // The connections are gone: a segment that one of them held is free again for
        // the next attempt (else only splits could reach it, and never its last piece).
        table.release_all();
        // Keep a refreshed link for the next attempt.
        t.keep_link(shared.link.lock().await.url.clone());
        drop(shared);
        match ended? {
            Ended::Done if table.complete() => {
                ctx.progress.set_done(total);
                t.part.ranges_finished(total, follower).await?;
                Ok(Ended::Done)
            }
            Ended::Done => Err(EngineError::Internal(
                "connections ended with bytes left".into(),
            )),
            other => Ok(other),
        }
    }
}

/// Runs the connections until all are done or one ends the attempt, checkpointing
/// what they wrote meanwhile.
async fn drive(
    s: &Shared<'_>,
    t: &mut Transfer,
    ctx: &RunCtx,
    first: Option<(reqwest::Response, u64)>,
) -> Result<Ended, EngineError> {
    // Hand out the first segments before any connection runs, so that no two
    // connections ever start on the same one. With a response already streaming from
    // the start, the first piece (the lowest) is exactly what that response asked for.
    let lead = first.and_then(|(resp, upto)| Some((s.table.take_asked(upto)?, resp, upto)));
    let others = s.job.settings.connections_per_download.max(1) - usize::from(lead.is_some());
    let others: Vec<Arc<Segment>> = (0..others).filter_map(|_| s.table.take()).collect();
    let mut workers: FuturesUnordered<_> = lead
        .map(|(seg, resp, upto)| work(s, seg, Some((resp, upto))))
        .into_iter()
        .chain(others.into_iter().map(|seg| work(s, seg, None)))
        .collect();
    let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            done = workers.next() => match done {
                None => return Ok(Ended::Done),
                Some(Ok(Ended::Done)) => {}
                Some(other) => return other,
            },
            _ = ticker.tick() => t.part.segment_checkpoint(ctx)?,
        }
    }
}

/// One connection: the segment in hand, then others taken one after another, until
/// none is left. The segment in hand is owned until it is done (released here) or the
/// attempt ends (then `run_segments` releases every segment).
async fn work(
    s: &Shared<'_>,
    mut current: Arc<Segment>,
    mut first: Option<(reqwest::Response, u64)>,
) -> Result<Ended, EngineError> {
    let mut retries = Retries::new(&s.job.settings);
    let mut links = LinkBudget::default();
    // Bytes this connection wrote: a link refused after some is not refused for good.
    let mut wrote = 0u64;
    loop {
        if current.left() == 0 {
            current.release();
            match s.table.take() {
                Some(next) => {
                    current = next;
                    retries.reset();
                }
                None => return Ok(Ended::Done),
            }
        }
        let before = current.pos();
        let link = s.link.lock().await.clone();
        let result = match first.take() {
            Some((resp, upto)) => pump(s, &current, resp, upto).await,
            None => fetch(s, &current, &link).await,
        };
        let progressed = current.pos() > before;
        wrote += current.pos().saturating_sub(before);
        if !matches!(result, Ok(Ended::Done)) {
            // Its request is over: what it did not bring may go to another connection
            // while this one waits.
            current.unask();
        }
        match result {
            Ok(Ended::Done) => {}
            Ok(Ended::LinkExpired { status }) => {
                // Only this connection was refused: fetch a fresh link (once for all
                // connections refused together) and go on with the same segment.
                if !links.refused(wrote) {
                    return Ok(Ended::LinkExpired { status });
                }
                refresh_link(s, link.generation).await?;
            }
            Ok(ended) => return Ok(ended),
            Err(e) => {
                let Some(wait) = retries.after(&e, progressed) else {
                    return Err(e);
                };
                tracing::debug!(download_id = %s.job.id, error = %e, wait_ms = wait.as_millis() as u64, "connection failed; retrying its segment");
                let mut stop = s.stop.clone();
                if !sleep_unless_stopped(wait, &mut stop).await {
                    return Ok(Ended::Stopped);
                }
            }
        }
    }
}

/// Resolves a Hub file again, unless another connection already did since `seen`.
async fn refresh_link(s: &Shared<'_>, seen: u64) -> Result<(), EngineError> {
    let Some(hub) = &s.job.hub else {
        // Only a Hub link is ever taken for expired; anything else is refused for good.
        return Err(EngineError::Status {
            status: 403,
            retry_after: None,
        });
    };
    let mut link = s.link.lock().await;
    if link.generation != seen {
        return Ok(());
    }
    let revision = s.commit.as_deref().unwrap_or(&hub.revision);
    let resolved = hub.client.resolve(&hub.repo, revision, &hub.file).await?;
    if let Some(why) = s.engine.allowed.refusal(&resolved.location) {
        return Err(EngineError::NotAllowed(format!(
            "the Hub's file link: {why}"
        )));
    }
    tracing::info!(download_id = %s.job.id, "CDN link refused; resolved a fresh one");
    link.auth = hub.client.auth_for(&resolved.location);
    link.url = resolved.location;
    link.generation += 1;
    Ok(())
}

/// A ranged request for the rest of `seg` from `link`, judged before a byte is used.
async fn fetch(s: &Shared<'_>, seg: &Segment, link: &Link) -> Result<Ended, EngineError> {
    let (from, to) = s.table.ask(seg);
    if from >= to {
        return Ok(Ended::Done);
    }
    let asked = Asked { from, to: Some(to) };
    let request = request::get(
        &s.engine.client,
        &link.url,
        link.auth.as_deref(),
        asked,
        &s.validators,
    );
    let mut stop = s.stop.clone();
    let Some(resp) = request::send(request, stall_timeout(s.job), &mut stop).await? else {
        return Ok(Ended::Stopped);
    };
    let known = Known {
        total: Some(s.total),
        validators: &s.validators,
        // A ranged request: a whole file sent back is never taken for it anyway.
        held: 0,
        refreshable_link: request::refreshable(s.job, &link.url),
        must_prove: s.must_prove,
    };
    let verdict = classify(
        resp.status().as_u16(),
        resp.headers(),
        asked,
        known,
        SystemTime::now(),
    );
    let why = match verdict {
        Verdict::Body(_) => return pump(s, seg, resp, to).await,
        Verdict::LinkExpired { status } => return Ok(Ended::LinkExpired { status }),
        Verdict::Failed(e) => return Err(e),
        Verdict::Whole { .. } => "the server answered a range with the whole file".into(),
        Verdict::Changed(what) => format!("the file changed upstream ({what})"),
        Verdict::Complete | Verdict::Unsatisfiable => {
            "the server refused a range of the file".into()
        }
    };
    Ok(Ended::StartOver(why))
}

/// Streams a response into `seg` from its `pos`, in large writes, until `upto` (one past
/// the last byte it asked for) or the segment's end, whichever comes first.
async fn pump(
    s: &Shared<'_>,
    seg: &Segment,
    resp: reqwest::Response,
    upto: u64,
) -> Result<Ended, EngineError> {
    let stall = stall_timeout(s.job);
    let _connection = s.engine.metrics.connection();
    let mut body = resp.bytes_stream();
    let mut block = WriteBlock::default();
    let mut stop = s.stop.clone();
    let started = Instant::now();
    let mut floor = SpeedFloor::new(s.job, s.job.settings.connections_per_download);
    loop {
        // The stop's `Ref` must not live across the flush's await (it is not `Send`).
        let next = tokio::select! {
            n = tokio::time::timeout(stall, body.next()) => Some(n),
            _ = stop.wait_for(|x| *x) => None,
        };
        let Some(next) = next else {
            flush(s, seg, &mut block).await?;
            return Ok(Ended::Stopped);
        };
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Err(_) => {
                flush(s, seg, &mut block).await?;
                return Err(EngineError::Stalled(stall.as_secs()));
            }
            Ok(Some(Err(e))) => {
                flush(s, seg, &mut block).await?;
                return Err(EngineError::Network(crate::http::describe(&e)));
            }
            Ok(None) => {
                flush(s, seg, &mut block).await?;
                let expected = seg.end().min(upto);
                if seg.pos() < expected {
                    return Err(EngineError::Truncated {
                        got: seg.pos(),
                        expected,
                    });
                }
                return Ok(Ended::Done);
            }
        };
        // Bytes past the end belong to another connection (a server that sent more
        // than it was asked for).
        let room = seg.end().saturating_sub(seg.pos() + block.len() as u64) as usize;
        let useful = chunk.slice(..chunk.len().min(room));
        let took = useful.len();
        s.progress.add_done(took as u64);
        block.push(useful);
        if block.len() >= WRITE_BLOCK || took < chunk.len() || room == took {
            flush(s, seg, &mut block).await?;
        }
        // Every byte received counts against the limits, the last one of a piece too.
        if let Err(e) = floor.check(chunk.len(), [&s.engine.global, &s.limiter]) {
            flush(s, seg, &mut block).await?;
            return Err(e);
        }
        if !super::limiter::pace(&s.engine.global, &s.limiter, chunk.len(), &mut stop).await {
            flush(s, seg, &mut block).await?;
            return Ok(Ended::Stopped);
        }
        if seg.pos() >= seg.end().min(upto) {
            tracing::trace!(
                segment_start = seg.start(),
                took_ms = started.elapsed().as_millis() as u64,
                "segment done"
            );
            // When the response ends here too, read its end, so that the connection goes
            // back to the pool: otherwise every piece would open a new connection and
            // the download would use more than `connections_per_download` of them.
            let _ = tokio::time::timeout(Duration::from_millis(50), body.next()).await;
            return Ok(Ended::Done);
        }
    }
}

/// Writes the block at the segment's position, clipped to its current end (on a
/// blocking thread: this connection waits for it, the others do not).
async fn flush(s: &Shared<'_>, seg: &Segment, block: &mut WriteBlock) -> Result<(), EngineError> {
    s.ranges.write_segment(seg, block).await
}
