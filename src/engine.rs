//! The transfer engine: one download from its URL into `<path>.part`, resumed with
//! `Range`/`If-Range`, retried with backoff, checkpointed, verified, then renamed.
//!
//! The engine knows nothing of actors: it reports through [`RunCtx`] and is stopped
//! through a watch channel, which keeps it testable and lets any runtime drive it.

mod block;
mod direct;
mod error;
mod hashpipe;
mod limiter;
mod range;
mod retry;
mod segments;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{describe as describe_reqwest, EngineError};
use hashpipe::HashPipe;
pub use limiter::RateLimiter;
pub use range::{parse_content_range, parse_retry_after, ContentRange};
pub use retry::backoff;
pub use segments::SEGMENT_THRESHOLD;

use crate::config::DownloadsConfig;
use crate::files;
use crate::hub::HubClient;
use crate::model::{DownloadError, DownloadId, ErrorKind};
use crate::progress::ProgressCell;
use crate::store::{Checkpoint, Store};

/// Writes go to disk in blocks at least this large: one syscall per network chunk
/// (often 8-16 KiB) would cost more CPU than the rest of the loop.
const WRITE_BLOCK: usize = 256 * 1024;
/// How often the `.part` is fsynced and its offset recorded: at most this much data
/// is fetched again after a crash.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How much is written before the kernel is asked to start writing it back.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// What one run of the engine is to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: DownloadId,
    pub url: String,
    /// The final path, already resolved inside `download_dir`.
    pub final_path: PathBuf,
    /// Expected digest, lower-case hex.
    pub sha256: Option<String>,
    pub settings: DownloadsConfig,
    /// Set for Hub downloads: the URL is resolved through the Hub at each (re)start.
    pub hub: Option<HubTarget>,
}

/// A file on the HuggingFace Hub.
#[derive(Clone)]
pub struct HubTarget {
    pub client: HubClient,
    pub repo: String,
    pub revision: String,
    pub file: String,
    /// The commit pinned by an earlier run, if any.
    pub commit: Option<String>,
}

impl std::fmt::Debug for HubTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}",
            self.repo,
            self.commit.as_deref().unwrap_or(&self.revision),
            self.file
        )
    }
}

/// Things worth telling the supervisor while a run goes on (never per chunk).
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// The size became known (or changed).
    Total(Option<u64>),
    /// Waiting out a backoff before attempt `attempt + 1`.
    Retrying {
        attempt: u32,
        wait: Duration,
        error: DownloadError,
    },
    /// Transferring again after a backoff.
    Resumed,
    /// Something the user should see while it lasts (e.g. the file changed upstream).
    Notice(DownloadError),
    /// All bytes are there; hashing.
    Verifying,
    /// A Hub download resolved: its revision is pinned to `commit`, and the Hub told
    /// the file's sha256 (from the LFS pointer).
    Pinned {
        commit: Option<String>,
        sha256: Option<String>,
    },
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        bytes: u64,
    },
    /// Asked to stop; the `.part` and its checkpoint are on disk.
    Stopped {
        bytes: u64,
    },
    Failed {
        bytes: u64,
        error: DownloadError,
    },
}

/// What a run reports through, and listens to.
pub struct RunCtx {
    pub events: Arc<dyn Fn(EngineEvent) + Send + Sync>,
    pub progress: Arc<ProgressCell>,
    pub stop: watch::Receiver<bool>,
    /// This download's own speed cap (rate 0: none).
    pub limiter: Arc<RateLimiter>,
}

/// The HTTP transfer engine; cheap to clone (one connection pool for all downloads).
#[derive(Clone)]
pub struct Engine {
    client: reqwest::Client,
    store: Store,
    /// The global speed limit, shared by every connection of every download.
    global: Arc<RateLimiter>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Engine {
    pub fn new(
        store: Store,
        speed_limit_bps: u64,
        allowed_hosts: &[String],
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Engine, reqwest::Error> {
        let allowed: Vec<String> = allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        // Redirects obey the host allowlist too, and never go to another scheme than http(s).
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let ok_scheme = matches!(attempt.url().scheme(), "http" | "https");
            let ok_host = allowed.is_empty()
                || attempt
                    .url()
                    .host_str()
                    .is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h)));
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if ok_scheme && ok_host {
                attempt.follow()
            } else {
                attempt.error("redirect to a host or scheme that is not allowed")
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .user_agent(concat!("model-manager/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .tcp_nodelay(true)
            .build()?;
        Ok(Engine {
            client,
            store,
            global: Arc::new(RateLimiter::new(speed_limit_bps)),
            metrics,
        })
    }

    /// A crash between the final rename and the record saying `completed` leaves the
    /// file under its final name and the checkpoint written just before the rename,
    /// which names that file's inode: it is the download's (verified before the
    /// rename), not something to fetch again. Any other file there (an older one of
    /// the same size, say) is not taken for it.
    fn renamed_before_a_crash(&self, job: &Job) -> Option<u64> {
        let cp = self.store.checkpoint(&job.id).ok()??;
        let total = cp.total?;
        let renamed = cp.renaming?;
        let meta = std::fs::symlink_metadata(&job.final_path)
            .ok()
            .filter(|m| m.is_file())?;
        let part = files::part_path(&job.final_path);
        let ours = file_identity(&meta) == renamed && meta.len() == total;
        (ours && !part.exists()).then_some(total)
    }

    /// Changes the global speed limit live (0: none).
    pub fn set_speed_limit(&self, bps: u64) {
        self.global.set_rate(bps);
    }

    /// Runs a download to its end: completed, failed, or stopped on request.
    pub async fn run(&self, job: Job, ctx: RunCtx) -> Outcome {
        let mut ctx = ctx;
        if let Some(bytes) = self.renamed_before_a_crash(&job) {
            tracing::info!(download_id = %job.id, "the file was already complete under its final name");
            let _ = self.store.remove_checkpoint(&job.id);
            return Outcome::Completed { bytes };
        }
        let mut transfer = match Transfer::open(&self.store, &job).await {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Failed {
                    bytes: 0,
                    error: e.to_download_error(),
                }
            }
        };
        ctx.progress.set_done(transfer.done_bytes());
        ctx.progress.set_total(transfer.total);
        let result = self.run_transfer(&job, &mut transfer, &mut ctx).await;
        let bytes = transfer.done_bytes();
        match result {
            Ok(RunEnd::Completed) => Outcome::Completed { bytes },
            Ok(RunEnd::Stopped) => match transfer.checkpoint_now(&ctx).await {
                Ok(()) => {
                    tracing::info!(download_id = %job.id, bytes = transfer.done_bytes(), "stopped; checkpoint saved");
                    Outcome::Stopped {
                        bytes: transfer.done_bytes(),
                    }
                }
                Err(e) => {
                    tracing::error!(download_id = %job.id, error = %e, "stopped, but the checkpoint failed");
                    Outcome::Failed {
                        // What is on disk: a failed flush gave up what it held.
                        bytes: transfer.done_bytes(),
                        error: e.to_download_error(),
                    }
                }
            },
            Err(e) => {
                // Keep what we have: a later retry continues from it (unless the
                // bytes themselves are wrong, which `finish` already removed). An empty
                // `.part` (a 404, say) is no use to anyone: leave nothing behind.
                if transfer.done_bytes() == 0 {
                    let _ = std::fs::remove_file(files::part_path(&job.final_path));
                    let _ = self.store.remove_checkpoint(&job.id);
                } else if !matches!(e, EngineError::Checksum { .. }) {
                    if let Err(cp) = transfer.checkpoint_now(&ctx).await {
                        tracing::warn!(download_id = %job.id, error = %cp, "checkpoint after failure failed");
                    }
                }
                tracing::warn!(download_id = %job.id, error = %e, "download failed");
                Outcome::Failed {
                    bytes: transfer.done_bytes(),
                    error: e.to_download_error(),
                }
            }
        }
    }

    async fn run_transfer(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<RunEnd, EngineError> {
        let settings = &job.settings;
        let mut failures: u32 = 0;
        loop {
            if *ctx.stop.borrow() {
                return Ok(RunEnd::Stopped);
            }
            let before = t.progress_mark();
            let err = match self.attempt(job, t, ctx).await {
                Ok(AttemptEnd::Done) => break,
                Ok(AttemptEnd::Stopped) => return Ok(RunEnd::Stopped),
                Ok(AttemptEnd::Again) => continue,
                Err(e) => e,
            };
            if !err.is_transient() {
                return Err(err);
            }
            let progressed = t.progress_mark() != before;
            failures = if progressed { 1 } else { failures + 1 };
            if failures > settings.max_retries {
                return Err(err);
            }
            // A connection that dropped after delivering data is resumed at once; only
            // attempts that got nothing back off.
            let wait = if progressed && err.retry_after().is_none() {
                Duration::ZERO
            } else {
                backoff(
                    failures,
                    Duration::from_millis(settings.retry_base_delay_ms),
                    err.retry_after(),
                )
            };
            tracing::info!(download_id = %job.id, error = %err, attempt = failures, wait_ms = wait.as_millis() as u64, "attempt failed; retrying");
            if wait.is_zero() {
                continue;
            }
            (ctx.events)(EngineEvent::Retrying {
                attempt: failures,
                wait,
                error: err.to_download_error(),
            });
            // A backoff can last minutes: the direct writer's thread and buffers go
            // meanwhile (the next attempt opens another one).
            t.end_direct_writes().await?;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.stop.wait_for(|s| *s) => return Ok(RunEnd::Stopped),
            }
            (ctx.events)(EngineEvent::Resumed);
        }
        if self.finish(job, t, ctx).await? {
            Ok(RunEnd::Completed)
        } else {
            Ok(RunEnd::Stopped)
        }
    }

    /// One HTTP request: from the current offset to the end of the body, or an error.
    async fn attempt(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<AttemptEnd, EngineError> {
        let stall = Duration::from_secs(job.settings.stall_timeout_secs);
        // Bytes received before a drop are still in the write block; put them on disk
        // so that the next Range starts right after the last byte we have.
        t.flush_block().await?;
        let (url, auth) = self.target(job, t, ctx).await?;
        if t.segments.is_some() {
            t.end_direct_writes().await?;
            return self.run_segments(job, t, ctx, (url, auth), None).await;
        }
        let mut request = self.client.get(url.clone());
        let auth_for_segments = auth.clone();
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let asked_from = t.offset();
        if asked_from > 0 {
            request = request.header(header::RANGE, format!("bytes={asked_from}-"));
            if let Some(validator) = t.if_range() {
                request = request.header(header::IF_RANGE, validator);
            }
        }
        let response = tokio::select! {
            r = tokio::time::timeout(stall, request.send()) => match r {
                Err(_) => return Err(EngineError::Stalled(stall.as_secs())),
                Ok(Err(e)) => return Err(EngineError::Network(error::describe(&e))),
                Ok(Ok(r)) => r,
            },
            _ = ctx.stop.wait_for(|s| *s) => return Ok(AttemptEnd::Stopped),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let validators = Validators::from_headers(&headers);
        match status {
            200 => {
                if asked_from > 0 || t.has_data() {
                    if t.validators.changed_to(&validators) {
                        self.remote_changed(job, t, ctx, &validators).await?;
                    } else {
                        tracing::info!(download_id = %job.id, "server sent the whole file to a ranged request; starting over");
                        t.restart(ctx).await?;
                    }
                }
                t.total = content_length(&headers);
            }
            206 => {
                let range = headers
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                let Some(range) = range.filter(|r| r.first == asked_from) else {
                    let shown = headers
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none");
                    return Err(EngineError::BadContentRange(format!(
                        "asked bytes={asked_from}-, got Content-Range: {shown}"
                    )));
                };
                if t.validators.changed_to(&validators) {
                    // No If-Range support upstream, but the validator tells: discard.
                    self.remote_changed(job, t, ctx, &validators).await?;
                    return Ok(AttemptEnd::Again);
                }
                if let (Some(known), Some(now)) = (t.total, range.total) {
                    if known != now {
                        // Without validators the size is all there is to tell, and a
                        // new size is a new file: its bytes must not follow the old ones.
                        let what = format!("size {known} -> {now} bytes");
                        self.changed_upstream(job, t, ctx, &what).await?;
                        return Ok(AttemptEnd::Again);
                    }
                }
                if range.total.is_some() {
                    t.total = range.total;
                }
            }
            416 if t.total.is_some_and(|total| total == asked_from) => {
                return Ok(AttemptEnd::Done);
            }
            416 => {
                tracing::info!(download_id = %job.id, "range not satisfiable; starting over");
                t.restart(ctx).await?;
                return Ok(AttemptEnd::Again);
            }
            401 | 403 | 410
                if t.link.is_some()
                    && job
                        .hub
                        .as_ref()
                        .is_some_and(|h| !h.client.is_hub_host(&url)) =>
            {
                // A presigned CDN link expired: ask the Hub for a fresh one and go on
                // from the bytes on disk. Bounded, in case the CDN refuses for good.
                t.link = None;
                t.reresolves += 1;
                if t.reresolves <= 3 {
                    tracing::info!(download_id = %job.id, status, "CDN link refused; resolving again");
                    return Ok(AttemptEnd::Again);
                }
                return Err(EngineError::Status {
                    status,
                    retry_after: None,
                });
            }
            _ => {
                let retry_after = headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                return Err(EngineError::Status {
                    status,
                    retry_after,
                });
            }
        }
        t.validators = validators;
        ctx.progress.set_total(t.total);
        (ctx.events)(EngineEvent::Total(t.total));
        if let Some(total) = t.total {
            let need = total.saturating_sub(t.offset());
            let dir = job.final_path.parent().unwrap_or(Path::new("."));
            let free = files::free_space(dir)?;
            if need > free {
                return Err(EngineError::NoSpace { need, free });
            }
        }

        let accepts_ranges = status == 206
            || headers
                .get(header::ACCEPT_RANGES)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
        let left = t
            .total
            .map(|total| total.saturating_sub(t.offset()))
            .unwrap_or(0);
        if job.settings.connections_per_download > 1
            && accepts_ranges
            && !t.one_connection
            && left >= SEGMENT_THRESHOLD
        {
            t.end_direct_writes().await?;
            return self
                .run_segments(job, t, ctx, (url, auth_for_segments), Some(response))
                .await;
        }

        t.use_direct_writes(
            &files::part_path(&job.final_path),
            job.settings.direct_io_min_bytes,
        );
        let _connection = self.metrics.connection();
        let mut body = response.bytes_stream();
        let mut chunks = 0u64;
        let first = t.received();
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(stall, body.next()) => n,
                _ = ctx.stop.wait_for(|s| *s) => return Ok(AttemptEnd::Stopped),
            };
            let chunk = match next {
                Err(_) => return Err(EngineError::Stalled(stall.as_secs())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(EngineError::Network(error::describe(&e))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            chunks += 1;
            t.append(&chunk).await?;
            t.reresolves = 0;
            ctx.progress.set_done(t.received());
            if let Some(total) = t.total {
                if t.received() > total {
                    t.restart(ctx).await?;
                    return Err(EngineError::Overlong { expected: total });
                }
            }
            t.maybe_checkpoint(ctx).await?;
            if !limiter::pace(&self.global, &ctx.limiter, chunk.len(), &mut ctx.stop).await {
                return Ok(AttemptEnd::Stopped);
            }
        }
        tracing::debug!(
            download_id = %job.id,
            chunks,
            bytes = t.received() - first,
            "body read to its end"
        );
        match t.total {
            Some(total) if t.received() < total => Err(EngineError::Truncated {
                got: t.received(),
                expected: total,
            }),
            Some(_) => Ok(AttemptEnd::Done),
            None => {
                // No length announced: the end of the body is the end of the file.
                t.total = Some(t.received());
                ctx.progress.set_total(t.total);
                (ctx.events)(EngineEvent::Total(t.total));
                Ok(AttemptEnd::Done)
            }
        }
    }

    /// Where this attempt fetches from, and the credentials that may go there: the
    /// URL itself, or for a Hub file its resolved (CDN) link, pinned to one commit.
    async fn target(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &RunCtx,
    ) -> Result<(url::Url, Option<String>), EngineError> {
        let Some(hub) = &job.hub else {
            let url = url::Url::parse(&job.url)
                .map_err(|e| EngineError::Internal(format!("bad url: {e}")))?;
            return Ok((url, None));
        };
        if t.link.is_none() {
            let revision = t.commit.clone().unwrap_or_else(|| hub.revision.clone());
            let resolved = hub.client.resolve(&hub.repo, &revision, &hub.file).await?;
            let newly_pinned = t.commit.is_none() && resolved.commit.is_some();
            if newly_pinned {
                t.commit = resolved.commit.clone();
            }
            let learned_digest = t.expected_sha256.is_none() && resolved.sha256.is_some();
            if learned_digest {
                t.expected_sha256 = resolved.sha256.clone();
                if t.offset() == 0 {
                    t.hasher = Some(HashPipe::start(Sha256::new())?);
                }
            }
            if newly_pinned || learned_digest {
                tracing::info!(download_id = %job.id, commit = ?t.commit, sha256 = ?t.expected_sha256, "Hub file resolved");
                (ctx.events)(EngineEvent::Pinned {
                    commit: t.commit.clone(),
                    sha256: t.expected_sha256.clone(),
                });
            }
            t.link = Some(resolved.location);
        }
        let link = t
            .link
            .clone()
            .ok_or_else(|| EngineError::Internal("no link".into()))?;
        let auth = hub.client.auth_for(&link);
        Ok((link, auth))
    }

    async fn remote_changed(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        now: &Validators,
    ) -> Result<(), EngineError> {
        let what = format!(
            "validator {} -> {}",
            t.validators.describe(),
            now.describe()
        );
        self.changed_upstream(job, t, ctx, &what).await
    }

    /// Says that the file changed upstream (`what` tells how) and starts over.
    async fn changed_upstream(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        what: &str,
    ) -> Result<(), EngineError> {
        let message = format!("the file changed upstream ({what}); starting over");
        tracing::warn!(download_id = %job.id, "{message}");
        (ctx.events)(EngineEvent::Notice(DownloadError {
            kind: ErrorKind::RemoteChanged,
            message,
        }));
        t.restart(ctx).await
    }

    /// Verifies (when a digest is known), fsyncs and renames into place.
    /// Returns false when asked to stop before the rename (a cancel during
    /// verification must not leave a file under its final name).
    async fn finish(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<bool, EngineError> {
        t.wait_checkpoint().await?;
        // Writes what is left (on either path) and gives a direct-written file its length.
        t.end_direct_writes().await?;
        let part = files::part_path(&job.final_path);
        // The fsync before the rename runs while the digest is taken: one writes back
        // what the page cache holds, the other reads it, on two cores.
        let for_sync = t.file.try_clone()?;
        let syncing = tokio::task::spawn_blocking(move || for_sync.sync_all());
        if let Some(expected) = t.expected_sha256.clone() {
            let expected = &expected;
            (ctx.events)(EngineEvent::Verifying);
            let actual = t.digest(&part).await?;
            if &actual != expected {
                tracing::warn!(download_id = %job.id, %expected, %actual, "checksum mismatch; removing the file");
                // The checkpoint goes first: a crash in between must not leave one that
                // says complete beside no `.part`.
                self.store.remove_checkpoint(&job.id)?;
                self.store.flush().await?;
                let _ = std::fs::remove_file(&part);
                t.reset_after_delete();
                return Err(EngineError::Checksum {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        if *ctx.stop.borrow() {
            return Ok(false);
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
        let ours = t.file.metadata()?;
        let mut record = t.checkpoint_record(ctx);
        record.renaming = Some(file_identity(&ours));
        self.store.put_checkpoint(&job.id, &record)?;
        self.store.flush().await?;
        let final_path = job.final_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // The rename is by name: make sure the name is still our file, not the
            // `.part` of a newer download of the same name (after a cancel that gave up
            // waiting for this engine, say).
            let named = std::fs::symlink_metadata(&part)?;
            if !files::same_file(&named, &ours) {
                return Err(std::io::Error::other(
                    "the .part was replaced by another file; not renaming it",
                ));
            }
            std::fs::rename(&part, &final_path)?;
            if let Some(dir) = final_path.parent() {
                // The file is complete and verified under its name: a failed directory
                // fsync only risks the `.part` name coming back after a power loss, and
                // that is resumed (at its end) and renamed again.
                if let Err(e) = files::sync_dir(dir) {
                    tracing::warn!(error = %e, dir = %dir.display(), "directory fsync after the rename failed");
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;
        // The checkpoint goes when the supervisor records `completed`, not before.
        tracing::info!(download_id = %job.id, bytes = t.offset(), path = %job.final_path.display(), "download completed");
        Ok(true)
    }
}

enum RunEnd {
    Completed,
    Stopped,
}

enum AttemptEnd {
    /// Every byte is there.
    Done,
    /// Start another attempt now; not a failure (e.g. restarting from byte 0).
    Again,
    Stopped,
}

/// ETag and Last-Modified of a response: what `If-Range` and change detection use.
#[derive(Debug, Clone, Default, PartialEq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    /// True when both sides carry the same kind of validator and it differs.
    fn changed_to(&self, now: &Validators) -> bool {
        match (&self.etag, &now.etag) {
            (Some(a), Some(b)) => return a != b,
            (Some(_), None) | (None, Some(_)) => {}
            (None, None) => {}
        }
        matches!((&self.last_modified, &now.last_modified), (Some(a), Some(b)) if a != b)
    }

    fn describe(&self) -> String {
        self.etag
            .clone()
            .or_else(|| self.last_modified.clone())
            .unwrap_or_else(|| "none".into())
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The `.part` file and what is known about it.
struct Transfer {
    file: File,
    /// Bytes on disk (written, contiguous from 0).
    written: u64,
    /// Received but not yet written.
    block: block::WriteBlock,
    /// Large single-connection transfers: the `O_DIRECT` writer, used instead of `block`.
    direct: Option<direct::DirectWriter>,
    total: Option<u64>,
    validators: Validators,
    /// Digest of bytes `[0, written + block.len())`, when a digest is expected.
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
    reresolves: u32,
    /// Set while the file is fetched on parallel connections.
    segments: Option<Arc<segments::SegmentTable>>,
    /// Where the next early-writeback range starts.
    writeback_from: u64,
    /// The digest of the whole file, when it was taken during the transfer.
    digest_ready: Option<Sha256>,
    /// Parallel connections failed once (a server that ignores some ranges): this run
    /// stays on one connection.
    one_connection: bool,
}

impl Transfer {
    /// Opens the `.part` and puts it back at its last checkpoint: bytes past the
    /// checkpoint may not have reached the disk, so they are not trusted.
    async fn open(store: &Store, job: &Job) -> Result<Transfer, EngineError> {
        let part = files::part_path(&job.final_path);
        let checkpoint = store.checkpoint(&job.id)?.unwrap_or_default();
        let want_hash = job.sha256.is_some();
        let good = checkpoint.offset;
        let segmented = !checkpoint.segments.is_empty();
        let segments_end = checkpoint.segments.iter().map(|t| t[2]).max().unwrap_or(0);
        let (for_store, id) = (store.clone(), job.id.clone());
        let (file, offset, hasher, segmented) =
            tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
                // O_NOFOLLOW: a `.part` that became a symlink is never written through.
                let open = |create: bool| {
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(create)
                        .truncate(false)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&part)
                };
                let (file, existed) = match open(false) {
                    Ok(file) => (file, true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (open(true)?, false),
                    Err(e) => return Err(e.into()),
                };
                let len = file.metadata()?.len();
                // Each segment knows its own good bytes, in a file of full length.
                if segmented && existed && len >= segments_end {
                    return Ok((file, 0, None, true));
                }
                let good = if segmented {
                    // The checkpoint speaks of a file that is gone or was taken over
                    // (another download of the same name truncated it): none of its
                    // segments can be trusted. It goes before anything is written.
                    tracing::warn!(download_id = %id, existed, len, "the .part does not match its checkpoint; starting over");
                    for_store.remove_checkpoint(&id)?;
                    for_store.flush_blocking()?;
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
                Ok((file, offset, hasher, false))
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let hasher = hasher.map(HashPipe::start).transpose()?;
        let checkpoint = if !segmented && !checkpoint.segments.is_empty() {
            Checkpoint::default()
        } else {
            checkpoint
        };
        tracing::debug!(download_id = %job.id, offset, segmented, "transfer opened at its checkpoint");
        Ok(Transfer {
            file,
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
            reresolves: 0,
            one_connection: false,
            writeback_from: offset,
            digest_ready: None,
            segments: segmented.then(|| {
                Arc::new(segments::SegmentTable::from_checkpoint(
                    &checkpoint.segments,
                ))
            }),
        })
    }

    fn offset(&self) -> u64 {
        self.written
    }

    /// Bytes we have, on one connection or many.
    fn done_bytes(&self) -> u64 {
        match &self.segments {
            Some(table) => table.done(),
            None => self.received(),
        }
    }

    fn received(&self) -> u64 {
        let pending = match &self.direct {
            Some(direct) => direct.unflushed(),
            None => self.block.len() as u64,
        };
        self.written + pending
    }

    fn has_data(&self) -> bool {
        self.received() > 0
    }

    fn progress_mark(&self) -> (u64, u64) {
        (self.generation, self.received())
    }

    /// `If-Range` wants a strong ETag; a weak one cannot be used, Last-Modified can.
    fn if_range(&self) -> Option<String> {
        match &self.validators.etag {
            Some(tag) if !tag.starts_with("W/") => Some(tag.clone()),
            _ => self.validators.last_modified.clone(),
        }
    }

    async fn append(&mut self, chunk: &bytes::Bytes) -> Result<(), EngineError> {
        if let Some(h) = &self.hasher {
            h.update(chunk.clone());
        }
        if let Some(direct) = &mut self.direct {
            if let Err(e) = direct.push(chunk).await {
                return Err(self.end_direct_after(e).await);
            }
            return Ok(());
        }
        self.block.push(chunk.clone());
        if self.block.len() >= WRITE_BLOCK {
            self.flush_block().await?;
        }
        Ok(())
    }

    /// Switches a single-connection transfer with at least `min` bytes left (0: never)
    /// to `O_DIRECT` writes, where the filesystem takes them; smaller ones are not worth
    /// the writer's buffers. Called with the write block empty.
    fn use_direct_writes(&mut self, part: &Path, min: u64) {
        let left = self
            .total
            .map(|total| total.saturating_sub(self.written))
            .unwrap_or(0);
        if min == 0 || left < min || self.direct.is_some() || !self.block.is_empty() {
            return;
        }
        match direct::DirectWriter::open(part, &self.file, self.written) {
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
    async fn end_direct_writes(&mut self) -> Result<(), EngineError> {
        self.flush_block().await?;
        if self.close_direct().await {
            self.file.set_len(self.written)?;
        }
        Ok(())
    }

    /// Lets the direct writer go once its writes on their way are done (none lands
    /// after this returns); true when there was one.
    async fn close_direct(&mut self) -> bool {
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

    async fn flush_block(&mut self) -> Result<(), EngineError> {
        if let Some(direct) = &mut self.direct {
            match direct.flush().await {
                Ok(end) => self.written = end,
                Err(e) => return Err(self.end_direct_after(e).await),
            }
            return Ok(());
        }
        if !self.block.is_empty() {
            let n = self.block.len();
            self.block.write_at(&self.file, self.written, n)?;
            self.written += n as u64;
            self.start_writeback();
        }
        Ok(())
    }

    /// Every [`WRITEBACK_EVERY`] bytes, asks the kernel to start writing them out
    /// (without waiting): the disk works while the network does, so the fsyncs of the
    /// checkpoints and of the end find little left to do, and dirty pages never pile up
    /// enough to throttle the byte loop.
    fn start_writeback(&mut self) {
        if self.written < self.writeback_from + WRITEBACK_EVERY {
            return;
        }
        use std::os::unix::io::AsRawFd;
        let len = self.written - self.writeback_from;
        // SAFETY: a valid fd and a range inside the file; failure only loses the hint.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.writeback_from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.writeback_from = self.written;
    }

    fn checkpoint_record(&self, ctx: &RunCtx) -> Checkpoint {
        Checkpoint {
            offset: self.written,
            total: self.total,
            etag: self.validators.etag.clone(),
            last_modified: self.validators.last_modified.clone(),
            elapsed_secs: ctx.progress.elapsed_secs(),
            segments: self
                .segments
                .as_ref()
                .map(|t| t.snapshot())
                .unwrap_or_default(),
            renaming: None,
        }
    }

    /// The job that makes a checkpoint true: fsync the `.part`, then record `record`
    /// (whose positions were read before the fsync) and flush sled.
    fn persist(
        &self,
        record: Checkpoint,
    ) -> Result<impl FnOnce() -> Result<(), EngineError> + Send + 'static, EngineError> {
        let file = self.file.try_clone()?;
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
    fn segment_checkpoint(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.start_checkpoint(ctx)
    }

    /// Every [`CHECKPOINT_EVERY`] on one connection: the write block first, then a
    /// background checkpoint of the offset.
    async fn maybe_checkpoint(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        if self.last_checkpoint.elapsed() < CHECKPOINT_EVERY {
            return Ok(());
        }
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

    async fn wait_checkpoint(&mut self) -> Result<(), EngineError> {
        if let Some(handle) = self.pending_checkpoint.take() {
            handle
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
        }
        Ok(())
    }

    /// Writes, fsyncs and records everything received so far, and waits for it.
    async fn checkpoint_now(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        self.flush_block().await?;
        let job = self.persist(self.checkpoint_record(ctx))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Drops every byte and starts from 0 (the server ignored Range, or the file changed).
    /// The checkpoint says 0 before the file is truncated, so a crash in between never
    /// pairs an old offset with new bytes.
    async fn restart(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.wait_checkpoint().await?;
        // Its writes on their way end first, so none lands after the truncation.
        self.close_direct().await;
        self.block.clear();
        self.written = 0;
        self.writeback_from = 0;
        self.total = None;
        self.validators = Validators::default();
        self.segments = None;
        self.digest_ready = None;
        self.store
            .put_checkpoint(&self.id, &self.checkpoint_record(ctx))?;
        self.store.flush().await?;
        self.file.set_len(0)?;
        if self.hasher.is_some() {
            self.hasher = Some(HashPipe::start(Sha256::new())?);
        }
        self.generation += 1;
        ctx.progress.set_done(0);
        Ok(())
    }

    /// After the `.part` was deleted (checksum mismatch): nothing is on disk.
    fn reset_after_delete(&mut self) {
        self.written = 0;
        self.writeback_from = 0;
        self.block.clear();
    }

    /// The digest of the whole file: from the running hash when it covers every byte,
    /// else by reading the file back on a blocking thread.
    async fn digest(&mut self, part: &Path) -> Result<String, EngineError> {
        if let Some(h) = self.digest_ready.take() {
            return Ok(hex(&h.finalize()));
        }
        if let Some(pipe) = self.hasher.take() {
            let digest = tokio::task::spawn_blocking(move || pipe.finish())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            if let Some(h) = digest {
                return Ok(hex(&h.finalize()));
            }
            // The hashing thread died: read the file back instead.
        }
        let part = part.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<String, EngineError> {
            let file = File::open(&part)?;
            let len = file.metadata()?.len();
            Ok(hex(&hash_prefix(&file, len)?.finalize()))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
    }
}

/// Which file this is, as far as survives a remount: the inode and the last write's
/// time (the device number is not stable across reboots or container restarts).
fn file_identity(meta: &std::fs::Metadata) -> [u64; 2] {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = (meta.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(meta.mtime_nsec() as u64);
    [meta.ino(), mtime_ns]
}

/// Hashes the first `len` bytes of `file` (blocking).
fn hash_prefix(file: &File, len: u64) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than its checkpoint",
            ));
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

/// Lower-case hex, as the contract writes digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_detect_change_only_when_comparable() {
        let a = Validators {
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        let b = Validators {
            etag: Some("\"b\"".into()),
            last_modified: None,
        };
        assert!(a.changed_to(&b));
        assert!(!a.changed_to(&a.clone()));
        assert!(!a.changed_to(&Validators::default()));
        let lm1 = Validators {
            etag: None,
            last_modified: Some("Mon".into()),
        };
        let lm2 = Validators {
            etag: None,
            last_modified: Some("Tue".into()),
        };
        assert!(lm1.changed_to(&lm2));
    }
}
