//! A file whose path here holds another version than the one asked for (a download of
//! another commit, another program's file, an aria2 download into `owner/name`): its
//! bytes are relayed from the upstream as they come, and not stored. The answer's
//! headers name the commit and sha256 of the upstream's version, so its bytes must be
//! that version's: a download of the path is never used for it.
//!
//! Why not `503` with `Retry-After` until the path is free: `huggingface_hub` (2.x)
//! retries a file's GET on 408 and 429 only, and once the other version is in the
//! library the path stays taken; a relay answers now, with the right bytes.

use actix_web::body::SizedStream;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::headers::FileHeaders;
use super::range::Wanted;
use super::{Mirror, MirrorError};
use crate::http::HostList;

/// Redirects followed from the link `resolve` handed out (each checked against
/// `allowed_hosts`).
const MAX_HOPS: usize = 5;

/// Answers `part` of the upstream's file `up` with the Hub's `headers`.
pub(super) async fn relay_file(
    req: &HttpRequest,
    mirror: &Mirror,
    up: &crate::hub::Resolved,
    part: Wanted,
    headers: &FileHeaders,
) -> Result<HttpResponse, MirrorError> {
    let (start, end) = match part {
        Wanted::Part { start, end } => (start, end),
        Wanted::Whole | Wanted::Unsatisfiable => (0, headers.size),
    };
    let partial = matches!(part, Wanted::Part { .. });
    // With a sha256 to check, the whole file is asked even for a part: a part cannot be
    // hashed alone, and a client resuming after a cut (`huggingface_hub` does) would
    // otherwise complete its file with bytes nobody checked.
    let range = (partial && headers.sha256.is_none()).then_some((start, end));
    let resp = fetch(mirror, up.location.clone(), range).await?;
    let status = resp.status().as_u16();
    let fits = match range {
        Some(_) => {
            status == 206
                && resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {start}-")))
        }
        None => status == 200,
    };
    let sent = if range.is_some() {
        end - start
    } else {
        headers.size
    };
    if !fits || resp.content_length().is_some_and(|n| n != sent) {
        return Err(MirrorError::Upstream(format!(
            "the upstream answered HTTP {status} with another length or range than the file's"
        )));
    }
    // The host only: a presigned link's query is a credential.
    tracing::info!(
        host = up.location.host_str().unwrap_or(""),
        start,
        end,
        "mirror: relaying another version's bytes from the upstream"
    );
    crate::doors::conn::widen_send_buffer(req);
    let len = end - start;
    let body = match &headers.sha256 {
        Some(sha) => Verified::new(resp, (start, end, headers.size), sha.clone()).stream(),
        None => resp
            .bytes_stream()
            // Never more than the length announced to the client.
            .scan(len, |left, chunk| {
                let item = match chunk {
                    Ok(mut bytes) => {
                        bytes.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= bytes.len() as u64;
                        Ok(bytes)
                    }
                    Err(e) => Err(std::io::Error::other(crate::http::describe(&e))),
                };
                futures_util::future::ready(Some(item))
            })
            .boxed_local(),
    };
    let mut response = if partial {
        let mut r = HttpResponse::PartialContent();
        r.insert_header((
            actix_web::http::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end - 1, headers.size),
        ));
        r
    } else {
        HttpResponse::Ok()
    };
    let mut response = response
        .content_type("application/octet-stream")
        .body(SizedStream::new(len, body));
    headers.apply(&mut response);
    Ok(response)
}

type Body = futures_util::stream::LocalBoxStream<'static, std::io::Result<bytes::Bytes>>;

/// The whole upstream file read and hashed, `[start, end)` of it passed on; the last
/// piece passed on is held until the whole file has been hashed, and replaced by an
/// error (the client sees a body shorter than `Content-Length`, a cut connection) when
/// its digest is not the sha256 the headers named: never all the bytes of another file
/// under that sha256.
struct Verified {
    resp: reqwest::Response,
    /// Bytes of the file read so far.
    pos: u64,
    start: u64,
    end: u64,
    size: u64,
    want: String,
    hasher: Sha256,
    held: Option<bytes::Bytes>,
}

impl Verified {
    fn new(resp: reqwest::Response, (start, end, size): (u64, u64, u64), want: String) -> Self {
        Verified {
            resp,
            pos: 0,
            start,
            end,
            size,
            want,
            hasher: Sha256::new(),
            held: None,
        }
    }

    fn stream(self) -> Body {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut v = state?;
            match v.next().await {
                Ok(Some(piece)) => Some((Ok(piece), Some(v))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed_local()
    }

    /// The next piece to pass on; `None` at the end.
    async fn next(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        while self.pos < self.size {
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|e| std::io::Error::other(crate::http::describe(&e)))?;
            let Some(mut chunk) = chunk else {
                return Err(std::io::Error::other("the upstream's body ended early"));
            };
            chunk.truncate(usize::try_from(self.size - self.pos).unwrap_or(usize::MAX));
            self.hasher.update(&chunk);
            let (from, to) = (self.pos, self.pos + chunk.len() as u64);
            self.pos = to;
            let (a, b) = (from.max(self.start), to.min(self.end));
            if a >= b {
                continue;
            }
            let piece = chunk.slice(to_usize(a - from)?..to_usize(b - from)?);
            if b < self.end {
                return Ok(Some(piece));
            }
            self.held = Some(piece);
        }
        let Some(last) = self.held.take() else {
            return Ok(None);
        };
        let got: String = std::mem::take(&mut self.hasher)
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got.eq_ignore_ascii_case(&self.want) {
            return Ok(Some(last));
        }
        tracing::warn!(want = %self.want, %got,
            "mirror: the upstream's bytes are not the sha256 it named; the relay is cut before its end");
        Err(std::io::Error::other(format!(
            "the upstream sent bytes of sha256 {got}, not {}",
            self.want
        )))
    }
}

fn to_usize(n: u64) -> std::io::Result<usize> {
    usize::try_from(n).map_err(std::io::Error::other)
}

/// The answer of the link (after up to [`MAX_HOPS`] redirects, each on `allowed_hosts`).
async fn fetch(
    mirror: &Mirror,
    mut url: url::Url,
    range: Option<(u64, u64)>,
) -> Result<reqwest::Response, MirrorError> {
    let allowed = HostList::new(&mirror.queue.settings().await?.allowed_hosts);
    for _ in 0..=MAX_HOPS {
        if let Some(why) = allowed.refusal(&url) {
            return Err(MirrorError::Forbidden(why));
        }
        let resp = mirror.hub.get_file(&url, range).await?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| MirrorError::Upstream("a redirect without Location".into()))?;
        url = url
            .join(location)
            .map_err(|e| MirrorError::Upstream(format!("Location {location:?}: {e}")))?;
    }
    Err(MirrorError::Upstream(format!(
        "more than {MAX_HOPS} redirects"
    )))
}
