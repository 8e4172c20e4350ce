//! The CAS as one download sees it: a read token kept fresh, reconstructions asked for
//! byte ranges of the file (V2 first, V1 when the CAS has no V2), and ranged GETs of
//! xorb bytes from the presigned URLs a reconstruction names.
//!
//! The token goes to the CAS's own host only (its reconstruction routes); xorb URLs
//! are presigned and get no credentials. Every URL the CAS or the Hub chose obeys
//! `allowed_hosts`, like any link.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header;

use super::plan::{AnswerV1, AnswerV2, Fetch, Plan};
use super::XetError;
use crate::engine::Engine;
use crate::hub::{HubClient, XetLink, XetToken};

/// A reconstruction of a byte range is a few KiB per 64 MiB; this allows a whole
/// 400 GB file asked at once.
const MAX_RECONSTRUCTION: usize = 32 * 1024 * 1024;
/// The least cap of a reconstruction's answer, whatever the range.
const MIN_RECONSTRUCTION: u64 = 1024 * 1024;

/// What the reconstruction of `range` may weigh: a quarter of the bytes it describes
/// (the worst honest answer, a chunk of 8 KiB per xorb each with its presigned URL, is
/// about a seventh), between [`MIN_RECONSTRUCTION`] and [`MAX_RECONSTRUCTION`]. A unit of
/// 16 MiB takes 4 MiB at most: units in flight under a lying CAS stay within tens of
/// MiB, not 32 MiB each.
fn reconstruction_cap(range: &Range<u64>) -> usize {
    let cap = ((range.end - range.start) / 4).clamp(MIN_RECONSTRUCTION, MAX_RECONSTRUCTION as u64);
    usize::try_from(cap).unwrap_or(MAX_RECONSTRUCTION)
}

/// A token this young is never renewed for its `exp` alone.
const FRESH: Duration = Duration::from_secs(5);
/// A token is renewed this long before it expires (or at 4/5 of a shorter life).
const RENEW_AHEAD: Duration = Duration::from_secs(60);

/// The CAS of one Xet-backed file.
pub(super) struct Cas<'a> {
    engine: &'a Engine,
    hub: &'a HubClient,
    link: XetLink,
    token: tokio::sync::Mutex<Held>,
    /// The CAS answered 404/501 to V2: V1 from now on.
    v1_only: AtomicBool,
    timeout: Duration,
}

#[derive(Default)]
struct Held {
    token: Option<(XetToken, SystemTime)>,
    /// Bumped at each renewal, so that requests refused together renew once.
    generation: u64,
}

impl<'a> Cas<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        hub: &'a HubClient,
        link: XetLink,
        timeout: Duration,
    ) -> Cas<'a> {
        Cas {
            engine,
            hub,
            link,
            token: tokio::sync::Mutex::new(Held::default()),
            v1_only: AtomicBool::new(false),
            timeout,
        }
    }

    /// The file's Xet hash.
    pub(super) fn hash(&self) -> &str {
        &self.link.hash
    }

    /// A token with some life left, and its generation.
    async fn token(&self) -> Result<(XetToken, u64), XetError> {
        let mut held = self.token.lock().await;
        let now = SystemTime::now();
        if let Some((t, got)) = &held.token {
            let life = t.expires.duration_since(*got).unwrap_or_default();
            let ahead = RENEW_AHEAD.min(life / 5);
            // A token handed out already spent by its `exp` (a Hub clock behind ours,
            // or `exp: 0`) is used for a few seconds all the same: the CAS judges it,
            // and a refusal renews it; else every unit would ask the Hub again.
            let fresh = life.is_zero() && now.duration_since(*got).unwrap_or_default() < FRESH;
            if fresh || t.expires.duration_since(now).unwrap_or_default() > ahead {
                return Ok((t.clone(), held.generation));
            }
        }
        self.renew(&mut held).await
    }

    /// A refused token: renewed, unless another request already did since `seen`.
    async fn refused(&self, seen: u64) -> Result<(), XetError> {
        let mut held = self.token.lock().await;
        if held.generation == seen {
            self.renew(&mut held).await?;
        }
        Ok(())
    }

    async fn renew(&self, held: &mut Held) -> Result<(XetToken, u64), XetError> {
        let token = self
            .hub
            .xet_token(&self.link)
            .await
            .map_err(XetError::Token)?;
        if let Some(why) = self.engine.allowed.refusal(&token.cas_url) {
            return Err(XetError::Malformed(format!("the CAS URL: {why}")));
        }
        tracing::debug!(cas = %crate::http::shown_url(token.cas_url.as_str()), "Xet token renewed");
        held.token = Some((token.clone(), SystemTime::now()));
        held.generation += 1;
        Ok((token, held.generation))
    }

    /// How bytes `range` of the file are made; a refused token is renewed once.
    pub(super) async fn plan(&self, range: &Range<u64>) -> Result<Plan, XetError> {
        let (token, generation) = self.token().await?;
        match self.ask_plan(&token, range).await {
            Err(XetError::Cas {
                status: 401 | 403, ..
            }) => {
                self.refused(generation).await?;
                let (token, _) = self.token().await?;
                self.ask_plan(&token, range).await
            }
            other => other,
        }
    }

    async fn ask_plan(&self, token: &XetToken, range: &Range<u64>) -> Result<Plan, XetError> {
        if !self.v1_only.load(Ordering::Relaxed) {
            match self.reconstruction(token, "v2", range).await {
                Err(XetError::Cas {
                    status: 404 | 501, ..
                }) => {
                    tracing::debug!("the CAS has no V2 reconstructions; using V1");
                    self.v1_only.store(true, Ordering::Relaxed);
                }
                Ok(body) => {
                    let answer: AnswerV2 = serde_json::from_slice(&body)
                        .map_err(|e| XetError::Malformed(format!("reconstruction: {e}")))?;
                    return Plan::from_v2(answer, range);
                }
                Err(e) => return Err(e),
            }
        }
        let body = self.reconstruction(token, "v1", range).await?;
        let answer: AnswerV1 = serde_json::from_slice(&body)
            .map_err(|e| XetError::Malformed(format!("reconstruction: {e}")))?;
        Plan::from_v1(answer, range)
    }

    async fn reconstruction(
        &self,
        token: &XetToken,
        version: &str,
        range: &Range<u64>,
    ) -> Result<bytes::Bytes, XetError> {
        let path = format!("{version}/reconstructions/{}", self.link.hash);
        let base = token.cas_url.as_str().trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}/{path}"))
            .map_err(|e| XetError::Malformed(format!("the CAS URL: {e}")))?;
        let resp = self
            .engine
            .client
            .get(url)
            .bearer_auth(&token.access_token)
            .header(
                header::RANGE,
                format!("bytes={}-{}", range.start, range.end - 1),
            )
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| XetError::Network(crate::http::describe(&e)))?;
        let resp = refused(resp)?;
        crate::http::read_capped(resp, reconstruction_cap(range))
            .await
            .map_err(|e| match e {
                crate::http::BodyError::TooLarge { .. } => XetError::Malformed(e.to_string()),
                crate::http::BodyError::Network(m) => XetError::Network(m),
            })
    }

    /// A GET of `fetch`'s bytes; an expired URL is [`XetError::UrlExpired`].
    pub(super) async fn open(&self, fetch: &Fetch) -> Result<reqwest::Response, XetError> {
        let url = url::Url::parse(&fetch.url)
            .map_err(|e| XetError::Malformed(format!("a xorb URL: {e}")))?;
        if let Some(why) = self.engine.allowed.refusal(&url) {
            return Err(XetError::Malformed(format!("a xorb URL: {why}")));
        }
        let request = self.engine.client.get(url).header(
            header::RANGE,
            format!("bytes={}-{}", fetch.bytes.0, fetch.bytes.1),
        );
        let resp = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| XetError::Stalled(self.timeout.as_secs()))?
            .map_err(|e| XetError::Network(crate::http::describe(&e)))?;
        match resp.status().as_u16() {
            401 | 403 | 410 => Err(XetError::UrlExpired),
            206 => Ok(resp),
            // A whole xorb for a ranged ask: not what the plan's offsets describe.
            200 if fetch.bytes.0 > 0 => Err(XetError::Malformed(
                "a xorb URL ignored the range asked".into(),
            )),
            _ => refused(resp),
        }
    }
}

/// An error answer as [`XetError::Cas`].
fn refused(resp: reqwest::Response) -> Result<reqwest::Response, XetError> {
    let status = resp.status().as_u16();
    if status < 400 {
        return Ok(resp);
    }
    Err(XetError::Cas {
        status,
        retry_after: crate::http::retry_wait(resp.headers(), SystemTime::now()),
    })
}
