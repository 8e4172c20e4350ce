//! One `HEAD` of a URL, through the engine's client (its redirect policy obeys the
//! host allowlist): what asking again for a finished URL download compares with the
//! validators the file was fetched under.

use std::time::Duration;

use reqwest::header;

use super::http::validators::Validators as HeaderValidators;
use super::Engine;
use crate::queue::model::Validators;

/// A `HEAD` waits no longer than this: the caller is a person waiting for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest validator kept: anything longer is no header a real server sends.
const MAX_VALIDATOR: usize = 1024;

/// What a `HEAD` told of the file at a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `304 Not Modified`: the validators sent still hold.
    pub not_modified: bool,
    pub validators: Validators,
    /// `Content-Length`, when given.
    pub length: Option<u64>,
}

/// Why a `HEAD` told nothing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Network(String),
    #[error("HEAD answered {0}")]
    Status(u16),
}

impl Engine {
    /// `HEAD url` (redirects followed within the allowlist), within [`PROBE_TIMEOUT`],
    /// conditional on `known` (`If-None-Match`, `If-Modified-Since`) when given.
    pub async fn probe(&self, url: &str, known: &Validators) -> Result<Probe, ProbeError> {
        let url = url::Url::parse(url).map_err(|e| ProbeError::Refused(e.to_string()))?;
        if let Some(why) = self.allowed.refusal(&url) {
            return Err(ProbeError::Refused(why));
        }
        let mut request = self.client.head(url).timeout(PROBE_TIMEOUT);
        if let Some(etag) = &known.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &known.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, date);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| ProbeError::Network(crate::http::describe(&e)))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Probe {
                not_modified: true,
                ..Probe::default()
            });
        }
        if !resp.status().is_success() {
            return Err(ProbeError::Status(resp.status().as_u16()));
        }
        let now = HeaderValidators::from_headers(resp.headers());
        let kept = |v: Option<String>| v.filter(|v| v.len() <= MAX_VALIDATOR);
        Ok(Probe {
            not_modified: false,
            validators: Validators {
                etag: kept(now.etag),
                last_modified: kept(now.last_modified),
            },
            length: resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.parse().ok()),
        })
    }
}

impl Probe {
    /// Whether the file changed since it was fetched under `known`, when the answer
    /// can tell: `304` (no), else the rule of a download's own change detection
    /// (the ETag decides, else Last-Modified); `None` when they share no validator.
    pub fn changed_since(&self, known: &Validators) -> Option<bool> {
        if self.not_modified {
            return Some(false);
        }
        let engine = |v: &Validators| HeaderValidators {
            etag: v.etag.clone(),
            last_modified: v.last_modified.clone(),
        };
        engine(known).tells(&engine(&self.validators))
    }
}
