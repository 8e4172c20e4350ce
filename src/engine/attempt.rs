//! One attempt on a single connection: ask for the rest of the file, judge the answer
//! with the classifier, then read the body into the `.part`, or hand over to parallel
//! connections when the file is large and the server serves ranges.

use std::ops::ControlFlow;
use std::time::SystemTime;

use futures_util::StreamExt;

use super::http::classify::{classify, Accepted, Asked, Known, Verdict};
use super::http::request::{self, stall_timeout, SpeedFloor};
use super::part::segment_table::FIRST_WINDOW;
use super::segments::SEGMENT_THRESHOLD;
use super::transfer::Transfer;
use super::{limiter, Ended, Engine, EngineError, EngineEvent, Job, RunCtx};
use crate::queue::model::{DownloadError, ErrorKind};

impl Engine {
    /// One HTTP request: from the current offset to the end of the body, or an error.
    pub(super) async fn attempt(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<Ended, EngineError> {
        // Bytes received before a drop are still in the write block; put them on disk
        // so that the next Range starts right after the last byte we have.
        t.part.flush_block().await?;
        // Someone opened the `.part` between attempts: this one starts where the bytes
        // the lease's keeper vouched for end.
        t.part.after_lease_break(ctx).await?;
        let (url, auth) = self.target(job, t, ctx).await?;
        if let Some(ended) = self.try_xet(job, t, ctx).await? {
            return Ok(ended);
        }
        self.over_http(job, t, ctx);
        if t.part.ranges().is_some() {
            return self.run_segments(job, t, ctx, (url, auth), None).await;
        }
        let asked = Asked {
            from: t.part.held(),
            to: self.first_window(job, t),
        };
        let request = request::get(
            &self.client,
            &url,
            auth.as_deref(),
            asked,
            t.part.validators(),
        );
        let Some(response) = request::send(request, stall_timeout(job), &mut ctx.stop).await?
        else {
            return Ok(Ended::Stopped);
        };
        let known = Known {
            total: t.part.total(),
            validators: t.part.validators(),
            held: t.part.held(),
            refreshable_link: t.link().is_some() && request::refreshable(job, &url),
            must_prove: t.part.must_prove(),
        };
        let verdict = classify(
            response.status().as_u16(),
            response.headers(),
            asked,
            known,
            SystemTime::now(),
        );
        if matches!(verdict, Verdict::Unsatisfiable) && asked.to.is_some() && asked.from == 0 {
            // No byte 0 to give: an empty file. Asked again for all of it, it comes
            // back whole (and empty).
            t.stay_on_one_connection();
            return Ok(Ended::Again);
        }
        let accepted = match self.judge(job, t, ctx, verdict).await? {
            ControlFlow::Continue(accepted) => accepted,
            ControlFlow::Break(ended) => return Ok(ended),
        };
        let ranges = accepted.ranges;
        // The body is the window asked for only when the answer is a range.
        let window = asked.to.filter(|_| response.status().as_u16() == 206);
        t.part.accept(accepted.total, accepted.validators);
        ctx.progress.set_total(t.part.total());
        (ctx.events)(EngineEvent::Total(t.part.total()));
        enough_space(t)?;
        let left = t
            .part
            .total()
            .map(|total| total.saturating_sub(t.part.held()))
            .unwrap_or(0);
        if job.settings.connections_per_download > 1
            && ranges
            && t.may_split()
            && left >= SEGMENT_THRESHOLD
        {
            let first = window.map(|upto| (response, upto));
            return self.run_segments(job, t, ctx, (url, auth), first).await;
        }
        if window.is_some() && t.part.total().is_none() {
            // A range answered without the file's size: the end of this body would not
            // be the end of the file. One connection, asking for all the rest, from now.
            tracing::info!(download_id = %job.id, "a range answered without the file's size; using one connection");
            t.stay_on_one_connection();
            return Ok(Ended::Again);
        }
        t.part
            .use_direct_writes(job.settings.direct_io_min_bytes)
            .await;
        self.read_body(job, t, ctx, response, window).await
    }

    /// Where the first request stops when parallel connections may take over: at
    /// [`FIRST_WINDOW`] bytes, so that they start where it ends and every byte it
    /// brings is kept (a request for the whole file, abandoned at the split, would have
    /// brought megabytes more, already on their way). `None`: the whole rest.
    fn first_window(&self, job: &Job, t: &Transfer) -> Option<u64> {
        let held = t.part.held();
        let large = t
            .part
            .total()
            .is_none_or(|total| total.saturating_sub(held) >= SEGMENT_THRESHOLD);
        (job.settings.connections_per_download > 1 && t.may_split() && large)
            .then(|| held + FIRST_WINDOW)
    }

    /// The bytes come over plain HTTP: said once, and the file at this path will not
    /// be the one a chunk map describes.
    fn over_http(&self, job: &Job, t: &mut Transfer, ctx: &RunCtx) {
        if t.announce(ctx, "http") {
            if let Err(e) = self.store.remove_xet_map(&job.relative) {
                tracing::warn!(download_id = %job.id, error = %e, "cannot drop a chunk map");
            }
        }
    }

    /// A Xet-backed file through the Xet transport: how it ended, or `None` when the
    /// bridge is to serve it (not Xet-backed, `[hub] xet` off, or Xet failed: then
    /// what failed is told and logged, and the `.part` starts over).
    async fn try_xet(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
    ) -> Result<Option<Ended>, EngineError> {
        let enabled = job.hub.as_ref().is_some_and(|h| h.client.xet_enabled());
        let Some(target) = t.xet_target(enabled) else {
            return Ok(None);
        };
        let _ = t.announce(ctx, "xet");
        let error = match self.run_xet(job, t, ctx, target).await {
            Ok(ended) => return Ok(Some(ended)),
            Err(super::xet::XetError::Engine(e)) => return Err(e),
            Err(e) => e,
        };
        let message =
            format!("Xet storage failed ({error}); fetching through the Hub's HTTP bridge");
        tracing::warn!(download_id = %job.id, "{message}");
        (ctx.events)(EngineEvent::Notice(DownloadError {
            kind: ErrorKind::Network,
            message,
        }));
        t.xet_failed(ctx).await?;
        Ok(None)
    }

    /// Acts on the classifier's verdict: what the single connection does before it
    /// reads a body (`Continue`), or how the attempt ends without one (`Break`).
    async fn judge(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        verdict: Verdict,
    ) -> Result<ControlFlow<Ended, Accepted>, EngineError> {
        Ok(match verdict {
            Verdict::Body(accepted) => ControlFlow::Continue(accepted),
            Verdict::Whole { accepted, changed } => {
                match changed {
                    Some(what) => self.changed_upstream(job, t, ctx, &what).await?,
                    // Nothing held: the whole file is all we want (a server that
                    // ignores the first request's bounded range).
                    None if t.part.held() == 0 => {}
                    None => {
                        tracing::info!(download_id = %job.id, "server sent the whole file to a ranged request; starting over");
                        t.part.restart(ctx).await?;
                    }
                }
                ControlFlow::Continue(accepted)
            }
            Verdict::Changed(what) => {
                self.changed_upstream(job, t, ctx, &what).await?;
                ControlFlow::Break(Ended::Again)
            }
            Verdict::Complete => ControlFlow::Break(Ended::Done),
            Verdict::Unsatisfiable => {
                tracing::info!(download_id = %job.id, "range not satisfiable; starting over");
                t.part.restart(ctx).await?;
                ControlFlow::Break(Ended::Again)
            }
            Verdict::LinkExpired { status } => ControlFlow::Break(Ended::LinkExpired { status }),
            Verdict::Failed(e) => return Err(e),
        })
    }

    /// The byte loop of one connection: the body, chunk by chunk, into the `.part`.
    /// `window`: one past the last byte asked for, when not the whole rest.
    async fn read_body(
        &self,
        job: &Job,
        t: &mut Transfer,
        ctx: &mut RunCtx,
        response: reqwest::Response,
        window: Option<u64>,
    ) -> Result<Ended, EngineError> {
        let stall = stall_timeout(job);
        let _connection = self.metrics.connection();
        let mut body = response.bytes_stream();
        let mut chunks = 0u64;
        let first = t.part.held();
        let mut floor = SpeedFloor::new(job, 1);
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(stall, body.next()) => n,
                _ = ctx.stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
            };
            let chunk = match next {
                Err(_) => return Err(EngineError::Stalled(stall.as_secs())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(EngineError::Network(crate::http::describe(&e))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            chunks += 1;
            t.part.append(&chunk).await?;
            if t.part.after_lease_break(ctx).await? {
                return Ok(Ended::Again);
            }
            ctx.progress.set_done(t.part.held());
            if let Some(total) = t.part.total() {
                if t.part.held() > total {
                    t.part.restart(ctx).await?;
                    return Err(EngineError::Overlong { expected: total });
                }
            }
            t.part.maybe_checkpoint(ctx).await?;
            floor.check(chunk.len(), [&self.global, &ctx.limiter])?;
            if !limiter::pace(&self.global, &ctx.limiter, chunk.len(), &mut ctx.stop).await {
                return Ok(Ended::Stopped);
            }
        }
        tracing::debug!(
            download_id = %job.id,
            chunks,
            bytes = t.part.held() - first,
            "body read to its end"
        );
        match t.part.total() {
            // The window asked for is in; the rest is the next request's.
            Some(total) if window.is_some_and(|w| t.part.held() >= w) && t.part.held() < total => {
                Ok(Ended::Again)
            }
            Some(total) if t.part.held() < total => Err(EngineError::Truncated {
                got: t.part.held(),
                expected: total,
            }),
            Some(_) => Ok(Ended::Done),
            None => {
                // No length announced: the end of the body is the end of the file.
                t.part.set_total(Some(t.part.held()));
                ctx.progress.set_total(t.part.total());
                (ctx.events)(EngineEvent::Total(t.part.total()));
                Ok(Ended::Done)
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
        if t.link().is_none() {
            let revision = t.commit().unwrap_or(&hub.revision).to_owned();
            let resolved = hub.client.resolve(&hub.repo, &revision, &hub.file).await?;
            if t.adopt(resolved)? {
                tracing::info!(download_id = %job.id, commit = ?t.commit(), sha256 = ?t.part.expected_sha256(), "Hub file resolved");
                (ctx.events)(EngineEvent::Pinned {
                    commit: t.commit().map(str::to_owned),
                    sha256: t.part.expected_sha256().map(str::to_owned),
                });
            }
        }
        let link = t
            .link()
            .cloned()
            .ok_or_else(|| EngineError::Internal("no link".into()))?;
        // The Hub chose this link, not the user: it obeys `allowed_hosts` like any URL.
        if let Some(why) = self.allowed.refusal(&link) {
            return Err(EngineError::NotAllowed(format!(
                "the Hub's file link: {why}"
            )));
        }
        let auth = hub.client.auth_for(&link);
        Ok((link, auth))
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
        t.part.restart(ctx).await
    }
}

/// The disk has room for the rest of a file of known size.
fn enough_space(t: &Transfer) -> Result<(), EngineError> {
    if let Some(total) = t.part.total() {
        let need = total.saturating_sub(t.part.held());
        let free = t.part.place().free_space()?;
        if need > free {
            return Err(EngineError::NoSpace { need, free });
        }
    }
    Ok(())
}
