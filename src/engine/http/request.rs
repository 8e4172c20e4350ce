//! Sending one ranged GET, the same way for the single connection and each parallel
//! one: `Range` and `If-Range` from what is asked and known, credentials only where
//! they may go, and an answer awaited no longer than the stall timeout or a stop.

use std::time::Duration;

use reqwest::header;
use tokio::sync::watch;

use super::classify::Asked;
use super::validators::Validators;
use crate::engine::limiter::RateLimiter;
use crate::engine::{EngineError, Job};

/// A GET of `asked` from `url`. A ranged request carries `If-Range` when a validator
/// is known, so that a changed file comes back whole instead of spliced.
pub(in crate::engine) fn get(
    client: &reqwest::Client,
    url: &url::Url,
    auth: Option<&str>,
    asked: Asked,
    validators: &Validators,
) -> reqwest::RequestBuilder {
    let mut request = client.get(url.clone());
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    if asked.ranged() {
        let last = asked.to.map(|to| (to - 1).to_string()).unwrap_or_default();
        request = request.header(header::RANGE, format!("bytes={}-{last}", asked.from));
        if let Some(validator) = validators.if_range() {
            request = request.header(header::IF_RANGE, validator);
        }
    }
    request
}

/// Sends `request` and waits for its answer at most `stall`; `None` when asked to stop
/// first.
pub(in crate::engine) async fn send(
    request: reqwest::RequestBuilder,
    stall: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<reqwest::Response>, EngineError> {
    tokio::select! {
        r = tokio::time::timeout(stall, request.send()) => match r {
            Err(_) => Err(EngineError::Stalled(stall.as_secs())),
            Ok(Err(e)) => Err(EngineError::Network(crate::http::describe(&e))),
            Ok(Ok(r)) => Ok(Some(r)),
        },
        _ = stop.wait_for(|s| *s) => Ok(None),
    }
}

/// Whether `url` is a presigned CDN link of a Hub file, which the Hub hands out again
/// when it expires (the Hub's own host refuses for good).
pub(in crate::engine) fn refreshable(job: &Job, url: &url::Url) -> bool {
    job.hub.as_ref().is_some_and(|h| !h.client.is_hub_host(url))
}

/// How long a connection may go without a byte before it is taken for dead.
pub(in crate::engine) fn stall_timeout(job: &Job) -> Duration {
    Duration::from_secs(job.settings.stall_timeout_secs)
}

/// The slowest a connection may be, over a whole stall window, before it is taken for
/// stalled too: a trickle of a byte a second is never silent, yet holds a slot for ever.
pub(in crate::engine) struct SpeedFloor {
    /// `min_speed_bps` of this connection's share (0: off).
    min: u64,
    window: Duration,
    since: std::time::Instant,
    bytes: u64,
}

impl SpeedFloor {
    /// The floor of one of `share` connections of `job`.
    pub(in crate::engine) fn new(job: &Job, share: usize) -> SpeedFloor {
        SpeedFloor {
            min: job.settings.min_speed_bps / share.max(1) as u64,
            window: stall_timeout(job),
            since: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes received; at the end of each window, an error when fewer came
    /// than the floor asks. Our own speed limits lower the floor (to half of what they
    /// allow), so that a cap the user set is never taken for a stall.
    pub(in crate::engine) fn check(
        &mut self,
        n: usize,
        limits: [&RateLimiter; 2],
    ) -> Result<(), EngineError> {
        self.bytes += n as u64;
        let elapsed = self.since.elapsed();
        if self.min == 0 || elapsed < self.window {
            return Ok(());
        }
        let min = limits
            .iter()
            .map(|l| l.rate())
            .filter(|&r| r > 0)
            .fold(self.min, |m, r| m.min(r / 2));
        let bps = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
        self.since = std::time::Instant::now();
        self.bytes = 0;
        if bps < min {
            return Err(EngineError::TooSlow {
                bps,
                min,
                secs: elapsed.as_secs(),
            });
        }
        Ok(())
    }
}
