//! One run's transfer: the `.part` ([`Part`], which owns every byte and what vouches
//! for it) and what the HTTP transport knows beside it (the Hub link and commit, the
//! links refused, whether parallel connections may be used).

use crate::engine::http::retry::LinkBudget;
use crate::engine::part::Part;
use crate::engine::{EngineError, Job, RunCtx};
use crate::hub::{Resolved, XetLink};
use crate::queue::store::Store;

/// The `.part` of a run, and the transport's state beside it.
pub(in crate::engine) struct Transfer {
    pub(in crate::engine) part: Part,
    /// Hub downloads: the pinned commit and the current (CDN) link.
    commit: Option<String>,
    link: Option<url::Url>,
    /// Fresh links asked for in a row without a byte in between.
    links: LinkBudget,
    /// Parallel connections failed once (a server that ignores some ranges): this run
    /// stays on one connection.
    one_connection: bool,
    /// The file is Xet-backed (and its size, as the Hub said it).
    xet: Option<(XetLink, Option<u64>)>,
    /// The Xet transport failed for good in this run: the bridge serves the rest.
    xet_failed: bool,
    /// The transport last announced (`"xet"` or `"http"`).
    announced: Option<&'static str>,
    /// Bytes copied from files on disk in this run, and whether that is still allowed
    /// (not after a file made so failed its sha256).
    reused: u64,
    reuse_off: bool,
}

impl Transfer {
    /// Opens the `.part` at its last checkpoint (see [`Part::open`]).
    pub(in crate::engine) async fn open(store: &Store, job: &Job) -> Result<Transfer, EngineError> {
        Ok(Transfer {
            part: Part::open(store, job).await?,
            commit: job.hub.as_ref().and_then(|h| h.commit.clone()),
            link: None,
            links: LinkBudget::default(),
            one_connection: false,
            xet: None,
            xet_failed: false,
            announced: None,
            reused: 0,
            reuse_off: false,
        })
    }

    /// The Hub commit this download is pinned to.
    pub(in crate::engine) fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// The current CDN link of a Hub file; `None` until resolved, or after it was refused.
    pub(in crate::engine) fn link(&self) -> Option<&url::Url> {
        self.link.as_ref()
    }

    /// Keeps a link that parallel connections refreshed, for the next attempt.
    pub(in crate::engine) fn keep_link(&mut self, link: url::Url) {
        self.link = Some(link);
    }

    /// Takes in what the Hub resolved: the link, and the commit and digest when they
    /// were not known yet (then true: worth telling).
    pub(in crate::engine) fn adopt(&mut self, resolved: Resolved) -> Result<bool, EngineError> {
        let newly_pinned = self.commit.is_none() && resolved.commit.is_some();
        if newly_pinned {
            self.commit = resolved.commit;
        }
        let learned_digest = self.part.expected_sha256().is_none() && resolved.sha256.is_some();
        if let Some(sha256) = resolved.sha256.filter(|_| learned_digest) {
            self.part.learn_sha256(sha256)?;
        }
        self.xet = resolved.xet.map(|x| (x, resolved.size));
        self.link = Some(resolved.location);
        Ok(newly_pinned || learned_digest)
    }

    /// The presigned link was refused with `status`: the next attempt resolves a fresh
    /// one, unless too many were refused in a row with no byte in between (then the
    /// refusal is the error).
    pub(in crate::engine) fn link_refused(&mut self, status: u16) -> Result<(), EngineError> {
        self.link = None;
        if self.links.refused(self.part.held()) {
            tracing::info!(download_id = %self.part.id(), status, "CDN link refused; resolving again");
            return Ok(());
        }
        Err(EngineError::Status {
            status,
            retry_after: None,
        })
    }

    /// The Xet link and size of the file when the Xet transport is to fetch it: a
    /// Xet-backed file of known size, with `[hub] xet` on, not failed in this run.
    pub(in crate::engine) fn xet_target(&self, xet_enabled: bool) -> Option<(XetLink, u64)> {
        if !xet_enabled || self.xet_failed {
            return None;
        }
        let (link, size) = self.xet.as_ref()?;
        Some((link.clone(), (*size)?))
    }

    /// The Xet transport failed for good: the bridge serves this file from byte 0 (its
    /// bytes are the same revision's, but no byte of two transports is ever mixed).
    pub(in crate::engine) async fn xet_failed(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.xet_failed = true;
        self.part.restart(ctx).await
    }

    /// Tells the supervisor which transport fetches the bytes; true when it changed.
    pub(in crate::engine) fn announce(&mut self, ctx: &RunCtx, transport: &'static str) -> bool {
        if self.announced == Some(transport) {
            return false;
        }
        self.announced = Some(transport);
        (ctx.events)(crate::engine::EngineEvent::Transport(transport));
        true
    }

    /// Counts bytes copied from files on disk.
    pub(in crate::engine) fn add_reused(&mut self, n: u64) {
        self.reused += n;
    }

    /// Whether bytes were copied from files on disk in this run.
    pub(in crate::engine) fn reused_chunks(&self) -> bool {
        self.reused > 0 && !self.reuse_off
    }

    /// Chunks of files on disk are not to be used again in this run.
    pub(in crate::engine) fn no_reuse(&mut self) {
        self.reuse_off = true;
    }

    pub(in crate::engine) fn reuse_allowed(&self) -> bool {
        !self.reuse_off
    }

    /// Whether this run may still use parallel connections.
    pub(in crate::engine) fn may_split(&self) -> bool {
        !self.one_connection
    }

    /// The rest of this run uses one connection, keeping the bytes held (the server
    /// answers ranges, but something it says rules parallel connections out).
    pub(in crate::engine) fn stay_on_one_connection(&mut self) {
        self.one_connection = true;
    }

    /// Parallel connections could not be used (a range ignored or refused, the file
    /// changed): drops every byte, and the rest of this run uses one connection.
    pub(in crate::engine) async fn fall_back(&mut self, ctx: &RunCtx) -> Result<(), EngineError> {
        self.part.restart(ctx).await?;
        self.one_connection = true;
        Ok(())
    }
}
