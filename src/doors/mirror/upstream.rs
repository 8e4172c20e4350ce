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
    let range = matches!(part, Wanted::Part { .. }).then_some((start, end));
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
    let len = end - start;
    if !fits || resp.content_length().is_some_and(|n| n != len) {
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
    // A whole file is checked against the sha256 its headers name as it passes.
    let check = range
        .is_none()
        .then(|| headers.sha256.clone())
        .flatten()
        .map(Check::new);
    // Never more than the length announced to the client.
    let body = resp
        .bytes_stream()
        .scan((len, check), |(left, check), chunk| {
            let item = match chunk {
                Ok(mut bytes) => {
                    bytes.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= bytes.len() as u64;
                    verified(bytes, *left, check)
                }
                Err(e) => Err(std::io::Error::other(crate::http::describe(&e))),
            };
            futures_util::future::ready(Some(item))
        });
    let mut response = match range {
        Some(_) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((
                actix_web::http::header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end - 1, headers.size),
            ));
            r
        }
        None => HttpResponse::Ok(),
    };
    let mut response = response
        .content_type("application/octet-stream")
        .body(SizedStream::new(len, body));
    headers.apply(&mut response);
    Ok(response)
}

/// The sha256 a relayed whole file must have, and its digest so far.
struct Check {
    want: String,
    hasher: Sha256,
}

impl Check {
    fn new(want: String) -> Check {
        Check {
            want,
            hasher: Sha256::new(),
        }
    }
}

/// `bytes` (the relay's next chunk, `left` bytes still to come after it), or an error in
/// its place when it is the last and the file's digest is not the one its headers named:
/// the client sees a body shorter than `Content-Length` (a cut connection), never all the
/// bytes of another file under that sha256.
fn verified(
    bytes: bytes::Bytes,
    left: u64,
    check: &mut Option<Check>,
) -> std::io::Result<bytes::Bytes> {
    let Some(c) = check else {
        return Ok(bytes);
    };
    c.hasher.update(&bytes);
    if left > 0 {
        return Ok(bytes);
    }
    let Some(c) = check.take() else {
        return Ok(bytes);
    };
    let got: String = c
        .hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got.eq_ignore_ascii_case(&c.want) {
        return Ok(bytes);
    }
    tracing::warn!(want = %c.want, %got,
        "mirror: the upstream's bytes are not the sha256 it named; the relay is cut before its end");
    Err(std::io::Error::other(format!(
        "the upstream sent bytes of sha256 {got}, not {}",
        c.want
    )))
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
