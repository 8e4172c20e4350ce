//! Sending one ranged GET, the same way for the single connection and each parallel
//! one: `Range` and `If-Range` from what is asked and known, credentials only where
//! they may go, and an answer awaited no longer than the stall timeout or a stop.

use std::time::Duration;

use reqwest::header;
use tokio::sync::watch;

use super::classify::Asked;
use super::validators::Validators;
use super::{EngineError, Job};

/// A GET of `asked` from `url`. A ranged request carries `If-Range` when a validator
/// is known, so that a changed file comes back whole instead of spliced.
pub(super) fn get(
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
pub(super) async fn send(
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
pub(super) fn refreshable(job: &Job, url: &url::Url) -> bool {
    job.hub.as_ref().is_some_and(|h| !h.client.is_hub_host(url))
}

/// How long a connection may go without a byte before it is taken for dead.
pub(super) fn stall_timeout(job: &Job) -> Duration {
    Duration::from_secs(job.settings.stall_timeout_secs)
}
