//! `GET`/`HEAD /v2/{owner}/{name}/blobs/sha256:{hex}`: a generated blob (config,
//! template, params) from memory, the model from the library (by its sha256: no
//! upstream request at all), else pulled through like any miss of the mirror (one
//! queue download that every client follows).
//!
//! What Ollama does with a blob (`server/download.go`): a `HEAD` for its size
//! (`Prepare`, `Content-Length`), then a `GET` without `Range` whose answer must be a
//! `307` or a `200` and must carry `Location` (`run`: `resp.Location()`, an error
//! without one; redirects to the same host are followed first), then ranged `GET`s of
//! that location, in parts of `size/16` clamped to 100 MB..1000 MB, with plain
//! `http.DefaultClient` (no credentials, status unchecked: the bytes are copied as
//! they come and only the whole file's sha256 is verified). So every blob answer
//! carries `Location` (its own path), and a `Range` is answered `206` exactly.

use actix_files::NamedFile;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::error::RegistryError;
use super::{derive, source};
use crate::doors::mirror::range::{wanted, Wanted};
use crate::doors::mirror::{pull, Mirror};

pub(super) async fn blob(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, RegistryError> {
    super::authorize(&req)?;
    let (owner, name, digest) = path.into_inner();
    let repo = super::repo(&owner, &name)?;
    let hex = parse_digest(&digest)?;
    let mut response = if let Some(bytes) = derive::blob(&hex) {
        small(&req, bytes)?
    } else if let Some(response) = library(&req, &mirror, &repo, &hex).await? {
        response
    } else {
        pull_through(&req, &mirror, &repo, &hex).await?
    };
    let h = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::HeaderName::from_static(name), v);
        }
    };
    put("docker-content-digest", format!("sha256:{hex}"));
    put("location", format!("/v2/{repo}/blobs/sha256:{hex}"));
    put("accept-ranges", "bytes".to_owned());
    Ok(response)
}

/// `sha256:` and 64 lower-case hex digits (the only digest Ollama uses); the hex.
fn parse_digest(digest: &str) -> Result<String, RegistryError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .map(str::to_owned)
        .ok_or_else(|| {
            RegistryError::DigestInvalid(format!(
                "{:?} is not a digest (sha256: and 64 lower-case hex digits)",
                digest.chars().take(100).collect::<String>()
            ))
        })
}

/// A generated blob, whole or the part asked for.
fn small(req: &HttpRequest, bytes: Bytes) -> Result<HttpResponse, RegistryError> {
    let size = bytes.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    Ok(match wanted(range, size) {
        Wanted::Whole => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes),
        Wanted::Part { start, end } => {
            // `wanted` keeps `start < end <= size`.
            let part = bytes.slice(start as usize..end as usize);
            HttpResponse::PartialContent()
                .content_type("application/octet-stream")
                .insert_header((
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{size}", end - 1),
                ))
                .body(part)
        }
        Wanted::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable(size)),
    })
}

/// The library's file of `repo` with this content, served by actix-files (`Range`,
/// `HEAD`) when it is still the file the library indexed; else `None`.
async fn library(
    req: &HttpRequest,
    mirror: &Mirror,
    repo: &str,
    hex: &str,
) -> Result<Option<HttpResponse>, RegistryError> {
    let Some((path, record)) = mirror
        .library
        .repo_files(repo)
        .into_iter()
        .find(|(_, r)| r.sha256.as_deref() == Some(hex))
    else {
        return Ok(None);
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    if wanted(range, record.size) == Wanted::Unsatisfiable {
        return Err(RegistryError::RangeNotSatisfiable(record.size));
    }
    let (library, rel) = (mirror.library.clone(), format!("{repo}/{path}"));
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Option<NamedFile>> {
        let Ok((file, now)) = library.open(&rel) else {
            return Ok(None);
        };
        if !record.matches(&now) {
            tracing::info!(path = %rel, "registry: a library file changed since it was indexed");
            return Ok(None);
        }
        NamedFile::from_file(file, library.full_path(&rel)).map(Some)
    })
    .await
    .map_err(|e| RegistryError::Internal(e.to_string()))?
    .map_err(|e| RegistryError::Internal(format!("cannot open a library file: {e}")))?;
    let Some(named) = opened else {
        return Ok(None);
    };
    crate::doors::conn::widen_send_buffer(req);
    let named = named
        .use_etag(false)
        .use_last_modified(false)
        .disable_content_disposition()
        .set_content_type(actix_web::mime::APPLICATION_OCTET_STREAM);
    Ok(Some(named.into_response(req)))
}

/// The repo's file with this content, from the upstream through the queue.
async fn pull_through(
    req: &HttpRequest,
    mirror: &Mirror,
    repo: &str,
    hex: &str,
) -> Result<HttpResponse, RegistryError> {
    let listing = source::files(mirror, repo).await?;
    let Some(file) = listing
        .files
        .iter()
        .find(|f| f.sha256.as_deref() == Some(hex))
    else {
        return Err(RegistryError::BlobUnknown(format!(
            "{repo} has no blob sha256:{hex}"
        )));
    };
    if listing.commit.is_none() {
        // Listed by the library only, yet not servable from it: nothing to fetch from.
        return Err(RegistryError::Unavailable(format!(
            "{repo}/{}: the upstream Hub is unreachable and the library's copy cannot be served",
            file.path
        )));
    }
    Ok(pull::serve_miss(req, mirror, repo, listing.revision(), &file.path).await?)
}
