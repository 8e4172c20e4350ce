//! The transfer engine: one download from its URL into `<path>.part`, resumed with
//! `Range`/`If-Range`, retried with backoff, checkpointed, verified, then renamed.
//!
//! The engine knows nothing of actors: it reports through [`RunCtx`] and is stopped
//! through a watch channel, which keeps it testable and lets any runtime drive it.
//!
//! How it is laid out, in three rooms. `http/` is the protocol: the request of an
//! attempt or a connection, the one classifier of every answer, validators, `Range`,
//! and the retry policy. `part/` is the `.part` ([`part::Part`], the one owner of the
//! file, its lease, its running digest and the bytes held) and the transport seam
//! ([`part::Ranges`]): a transport hands it bytes in order, or ranges at offsets in any
//! order, and asks what is still missing; only `part/` writes a `.part`. The rest is
//! the orchestration: this module (what the supervisor sees, the retry loop of a run),
//! `attempt` (one request on one connection), `segments` (parallel connections, one
//! transport through the seam), `transfer` (the `Part` of a run and the Hub link beside
//! it) and `finish` (verify, rename).

mod attempt;
mod error;
mod finish;
mod http;
mod limiter;
mod part;
mod probe;
mod segments;
mod transfer;
mod xet;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::http::range::{parse_content_range, ContentRange};
pub use self::http::retry::backoff;
pub use error::EngineError;
pub use limiter::RateLimiter;
pub use part::hex;
pub use segments::SEGMENT_THRESHOLD;
pub use xet::OnDisk;

use self::http::retry::{sleep_unless_stopped, Retries};
use crate::config::DownloadsConfig;
use crate::files;
use crate::http::HostList;
use crate::hub::HubClient;
use crate::queue::model::{DownloadError, DownloadId};
use crate::queue::progress::ProgressCell;
use crate::queue::store::Store;
pub use probe::{Probe, ProbeError};
use transfer::Transfer;

/// What one run of the engine is to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: DownloadId,
    pub url: String,
    /// The final path, already resolved inside `download_dir` (for messages).
    pub final_path: PathBuf,
    /// `download_dir`, and the final path relative to it (`/`-separated).
    pub download_dir: PathBuf,
    pub relative: String,
    /// The directory handle that path was resolved to, and the name: every file
    /// operation of the transfer goes through it. Set by the download actor.
    pub place: Option<Arc<files::Place>>,
    /// Expected digest, lower-case hex.
    pub sha256: Option<String>,
    pub settings: DownloadsConfig,
    /// Set for Hub downloads: the URL is resolved through the Hub at each (re)start.
    pub hub: Option<HubTarget>,
}

impl Job {
    /// Where the transfer writes (see [`Job::place`]).
    pub(crate) fn place(&self) -> Result<Arc<files::Place>, EngineError> {
        self.place
            .clone()
            .ok_or_else(|| EngineError::Internal("the job's place was not resolved".into()))
    }
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
    /// The backoff is over: transferring again.
    BackoffOver,
    /// Something the user should see while it lasts (e.g. the file changed upstream).
    Notice(DownloadError),
    /// All bytes are there; hashing.
    Verifying,
    /// The bytes come from Xet storage (`"xet"`) or over plain HTTP (`"http"`).
    Transport(&'static str),
    /// This many bytes of the run were taken from files on disk, not the network.
    Reused(u64),
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
        /// The identity (inode, mtime in ns) of the file renamed into place, as the
        /// checkpoint recorded it before the rename: what lets the library know the
        /// file as this download's after a crash lost its own record of it.
        file: Option<[u64; 2]>,
        /// The validators the bytes were fetched under, as the last checkpoint kept
        /// them: what a later `HEAD` compares to tell whether the URL's file changed.
        validators: Option<crate::queue::model::Validators>,
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
    /// `allowed_hosts`: checked again for every Hub link (the client checks redirects).
    allowed: HostList,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Engine {
    pub fn new(
        store: Store,
        speed_limit_bps: u64,
        allowed_hosts: &[String],
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Engine, reqwest::Error> {
        let allowed = HostList::new(allowed_hosts);
        let for_redirects = allowed.clone();
        // Every redirect obeys the host allowlist (with its ports) too, and never goes
        // to another scheme than http(s).
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("too many redirects");
            }
            match for_redirects.refusal(attempt.url()) {
                None => attempt.follow(),
                Some(why) => attempt.error(format!("redirect not followed: {why}")),
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
            allowed,
            metrics,
        })
    }

    /// Changes the global speed limit live (0: none).
    pub fn set_speed_limit(&self, bps: u64) {
        self.global.set_rate(bps);
    }

    /// Runs a download to its end: completed, failed, or stopped on request.
    pub async fn run(&self, job: Job, ctx: RunCtx) -> Outcome {
        let mut ctx = ctx;
        if let Some((bytes, file)) = self.renamed_before_a_crash(&job) {
            tracing::info!(download_id = %job.id, "the file was already complete under its final name");
            let _ = self.store.remove_checkpoint(&job.id);
            return Outcome::Completed {
                bytes,
                file: Some(file),
                validators: None,
            };
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
        ctx.progress.set_done(transfer.part.held());
        ctx.progress.set_total(transfer.part.total());
        let result = self.run_transfer(&job, &mut transfer, &mut ctx).await;
        let bytes = transfer.part.held();
        match result {
            // The checkpoint written just before the rename names the file (it goes
            // when the supervisor records `completed`).
            Ok(Ended::Done) => {
                let last = self.store.checkpoint(&job.id).ok().flatten();
                Outcome::Completed {
                    bytes,
                    file: last.as_ref().and_then(|c| c.renaming),
                    validators: last
                        .filter(|c| c.etag.is_some() || c.last_modified.is_some())
                        .map(|c| crate::queue::model::Validators {
                            etag: c.etag,
                            last_modified: c.last_modified,
                        }),
                }
            }
            // The only other way a run ends without an error.
            Ok(_stopped) => match transfer.part.checkpoint_now(&ctx).await {
                Ok(()) => {
                    tracing::info!(download_id = %job.id, bytes = transfer.part.held(), "stopped; checkpoint saved");
                    Outcome::Stopped {
                        bytes: transfer.part.held(),
                    }
                }
                Err(e) => {
                    tracing::error!(download_id = %job.id, error = %e, "stopped, but the checkpoint failed");
                    Outcome::Failed {
                        // What is on disk: a failed flush gave up what it held.
                        bytes: transfer.part.held(),
                        error: e.to_download_error(),
                    }
                }
            },
            Err(e) => {
                // Keep what we have: a later retry continues from it (unless the
                // bytes themselves are wrong, which `finish` already removed). An empty
                // `.part` (a 404, say) is no use to anyone: leave nothing behind.
                if transfer.part.held() == 0 {
                    let _ = transfer.part.place().remove_part();
                    let _ = self.store.remove_checkpoint(&job.id);
                } else if !matches!(e, EngineError::Checksum { .. }) {
                    if let Err(cp) = transfer.part.checkpoint_now(&ctx).await {
                        tracing::warn!(download_id = %job.id, error = %cp, "checkpoint after failure failed");
                    }
                }
                tracing::warn!(download_id = %job.id, error = %e, "download failed");
                Outcome::Failed {
                    bytes: transfer.part.held(),
                    error: e.to_download_error(),
                }
            }
        }
    }

    /// Attempts until every byte is there (then finishes the file) or the run must
    /// end; ends [`Ended::Done`] or [`Ended::Stopped`], or with the error that ended it.
    async fn run_transfer(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<Ended, EngineError> {
        let mut retries = Retries::new(&job.settings);
        // Progress is a byte added to those kept, or past the furthest one this run
        // ever held: an upstream that cuts every answer short and ignores Range hands
        // the same bytes again and again after starting over (or a body longer than
        // announced, which is dropped), and that is no progress: it backs off like any
        // failure and ends after `max_retries`.
        let mut furthest = t.part.held();
        loop {
            if *ctx.stop.borrow() {
                return Ok(Ended::Stopped);
            }
            let before = t.part.progress_mark();
            let err = match self.attempt_to_the_end(job, t, ctx).await {
                Ok(ended) => match self.go_on(job, t, ctx, ended).await? {
                    Some(end) => return Ok(end),
                    None => continue,
                },
                Err(EngineError::PartGone) => {
                    // Deleted or replaced by someone else: its bytes are not ours to
                    // trust or keep; a fresh `.part` from byte 0.
                    tracing::warn!(download_id = %job.id, "the .part is gone; starting over");
                    t.part.recreate(ctx).await?;
                    continue;
                }
                Err(e @ EngineError::PartTampered(_)) => {
                    tracing::warn!(download_id = %job.id, error = %e, "starting over");
                    t.part.recreate(ctx).await?;
                    e
                }
                Err(e) => e,
            };
            let now = t.part.progress_mark();
            let kept_and_added = now.0 == before.0 && now.1 > before.1;
            let progressed = kept_and_added || now.1 > furthest;
            furthest = furthest.max(now.1);
            let Some(wait) = retries.after(&err, progressed) else {
                return Err(err);
            };
            tracing::info!(download_id = %job.id, error = %err, attempt = retries.failures(), wait_ms = wait.as_millis() as u64, "attempt failed; retrying");
            if wait.is_zero() {
                continue;
            }
            (ctx.events)(EngineEvent::Retrying {
                attempt: retries.failures(),
                wait,
                error: err.to_download_error(),
            });
            // A backoff can last minutes: the direct writer's thread and buffers go
            // meanwhile (the next attempt opens another one).
            t.part.end_direct_writes().await?;
            if !sleep_unless_stopped(wait, &mut ctx.stop).await {
                return Ok(Ended::Stopped);
            }
            (ctx.events)(EngineEvent::BackoffOver);
        }
    }

    /// An attempt, and when it got every byte, the end of the file (verified, renamed):
    /// [`Ended::Done`] then, or [`Ended::Stopped`] when asked to stop before the rename.
    /// A `.part` found deleted or written by someone else at the end is retried too.
    async fn attempt_to_the_end(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<Ended, EngineError> {
        match self.attempt(job, t, ctx).await? {
            Ended::Done => match self.finish(job, t, ctx).await {
                // Chunks copied from a file on disk were not what its chunk map said:
                // the next attempt fetches every chunk.
                Err(EngineError::Checksum { .. }) if t.reused_chunks() => {
                    tracing::warn!(download_id = %job.id, "the file made with reused chunks failed its sha256; fetching every chunk");
                    t.no_reuse();
                    t.part.recreate(ctx).await?;
                    Ok(Ended::Again)
                }
                other => other,
            },
            other => Ok(other),
        }
    }

    /// After an attempt that did not fail: the end of the run (`Some`), or `None` to
    /// go on with another attempt at once.
    async fn go_on(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        ended: Ended,
    ) -> Result<Option<Ended>, EngineError> {
        match ended {
            Ended::Done | Ended::Stopped => return Ok(Some(ended)),
            Ended::Again => {}
            Ended::StartOver(why) => {
                tracing::warn!(download_id = %job.id, "{why}; starting over on one connection");
                t.fall_back(ctx).await?;
            }
            Ended::LinkExpired { status } => t.link_refused(status)?,
        }
        Ok(None)
    }
}

/// How a run, an attempt or one parallel connection ended, short of an error: the one
/// vocabulary of the engine's control flow (what the supervisor sees is [`Outcome`]).
#[derive(Debug)]
enum Ended {
    /// Every byte is there: of the file, or for a connection, of every segment it
    /// could take.
    Done,
    /// Asked to stop.
    Stopped,
    /// Go again at once; not a failure (after starting over from byte 0, say).
    Again,
    /// Parallel connections cannot be used (a range ignored or refused, the file
    /// changed upstream; the text says which): start over on one connection.
    StartOver(String),
    /// A presigned link was refused with `status`: resolve a fresh one, within
    /// [`retry::LINK_REFRESHES`].
    LinkExpired { status: u16 },
}
