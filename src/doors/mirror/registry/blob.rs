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

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use actix_files::NamedFile;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::error::RegistryError;
use super::{derive, source};
use crate::doors::mirror::headers::FileHeaders;
use crate::doors::mirror::range::{wanted, Wanted};
use crate::doors::mirror::stream::{self, Growing};
use crate::doors::mirror::{pull, Mirror, MirrorError};
use crate::hub::RepoFile;
use crate::queue::model::{DownloadView, Source};

/// Where a repo's model blob is, as the repo's listing named it. Kept, so that Ollama's
/// requests of a blob (a `HEAD`, a `GET`, then up to 16 ranged `GET`s at once) ask the
/// upstream nothing while its download runs: Ollama does not look at a part's status
/// and would write an error's body into the model.
#[derive(Clone)]
struct Located {
    repo: String,
    hex: String,
    path: String,
    size: u64,
    commit: String,
}

/// Blobs located: a few hundred bytes each.
const KEPT: usize = 1024;

static LOCATED: LazyLock<Mutex<VecDeque<Located>>> = LazyLock::new(Mutex::default);

/// Notes where `file` of `repo` is, from a listing of the upstream at `commit`.
pub(super) fn remember(repo: &str, file: &RepoFile, commit: &str) {
    let Some(hex) = &file.sha256 else { return };
    let mut located = LOCATED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    located.retain(|l| !(l.repo == repo && l.hex == *hex));
    located.push_back(Located {
        repo: repo.to_owned(),
        hex: hex.clone(),
        path: file.path.clone(),
        size: file.size,
        commit: commit.to_owned(),
    });
    while located.len() > KEPT {
        located.pop_front();
    }
}

fn located(repo: &str, hex: &str) -> Option<Located> {
    let located = LOCATED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    located
        .iter()
        .find(|l| l.repo == repo && l.hex == hex)
        .cloned()
}

pub(super) async fn blob(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, RegistryError> {
    super::authorize(&req)?;
    let (owner, name, digest) = path.into_inner();
    let repo = super::repo(&owner, &name)?;
    let hex = parse_digest(&digest)?;
    // The library before a re-derivation: a model blob found by its sha256 costs no
    // manifest made again.
    let mut response = if let Some(bytes) = derive::blob(&hex) {
        small(&req, bytes)?
    } else if let Some(response) = library(&req, &mirror, &repo, &hex).await? {
        response
    } else if let Some(bytes) = rederive(&mirror, &repo, &hex).await? {
        small(&req, bytes)?
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

/// Most GGUF files of a repo whose manifests are made again to find a generated blob.
const REDERIVED: usize = 64;

/// A generated blob (config, template, params) no longer kept (pushed out, or the
/// service restarted between a manifest and its blob requests: Ollama asks the config
/// last, after the model's hours): made again from the manifests of the repo's library
/// GGUFs, which are functions of their bytes and names, so the digests are the same.
async fn rederive(mirror: &Mirror, repo: &str, hex: &str) -> Result<Option<Bytes>, RegistryError> {
    let held = mirror.library.repo_files(repo);
    for (path, record) in held
        .into_iter()
        .filter(|(p, _)| p.ends_with(".gguf"))
        .take(REDERIVED)
    {
        let Some(sha256) = record.sha256.clone() else {
            continue;
        };
        let Ok(Some(facts)) = super::header::of_library(mirror, repo, &sha256).await else {
            continue;
        };
        let file = RepoFile {
            quantization: crate::hub::quant::quantization(&path),
            size: record.size,
            sha256: Some(sha256.clone()),
            path,
        };
        if derive::manifest(repo, &file, &sha256, &facts).is_ok() {
            if let Some(bytes) = derive::blob(hex) {
                return Ok(Some(bytes));
            }
        }
    }
    Ok(None)
}

/// The repo's file with this content, from the upstream through the queue: the
/// download of it that runs, else [`pull::serve_miss`] (which starts one).
async fn pull_through(
    req: &HttpRequest,
    mirror: &Mirror,
    repo: &str,
    hex: &str,
) -> Result<HttpResponse, RegistryError> {
    let at = locate(mirror, repo, hex).await?;
    if let Some(response) = from_running(req, mirror, &at).await? {
        return Ok(response);
    }
    Ok(pull::serve_miss(req, mirror, repo, &at.commit, &at.path).await?)
}

/// Where the blob is: noted by the manifest, else listed upstream (one request).
async fn locate(mirror: &Mirror, repo: &str, hex: &str) -> Result<Located, RegistryError> {
    if let Some(at) = located(repo, hex) {
        return Ok(at);
    }
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
    let Some(commit) = &listing.commit else {
        // Listed by the library only, yet not servable from it: nothing to fetch from.
        return Err(RegistryError::Unavailable(format!(
            "{repo}/{}: the upstream Hub is unreachable and the library's copy cannot be served",
            file.path
        )));
    };
    remember(repo, file, commit);
    located(repo, hex).ok_or_else(|| RegistryError::Internal("a blob was not noted".into()))
}

/// The answer from the download fetching exactly this blob (a Hub download with its
/// sha256), when one runs: no request upstream.
async fn from_running(
    req: &HttpRequest,
    mirror: &Mirror,
    at: &Located,
) -> Result<Option<HttpResponse>, RegistryError> {
    let rel = format!("{}/{}", at.repo, at.path);
    let Some(id) = mirror
        .queue
        .writer_of(&rel)
        .await
        .map_err(MirrorError::from)?
    else {
        return Ok(None);
    };
    let view = mirror.queue.get(&id).await.map_err(MirrorError::from)?;
    if !fetches(&view, &at.hex) {
        return Ok(None);
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let part = wanted(range, at.size);
    if part == Wanted::Unsatisfiable {
        return Err(RegistryError::RangeNotSatisfiable(at.size));
    }
    let headers = FileHeaders {
        etag: format!("\"{}\"", at.hex),
        sha256: Some(at.hex.clone()),
        commit: Some(at.commit.clone()),
        size: at.size,
    };
    if req.method() == Method::HEAD {
        // A sized body never polled: its length, and no body.
        let none = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        let mut response = HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(actix_web::body::SizedStream::new(at.size, none));
        headers.apply(&mut response);
        return Ok(Some(response));
    }
    crate::doors::conn::widen_send_buffer(req);
    let growing = Growing {
        queue: mirror.queue.clone(),
        id,
        root: mirror.download_dir.clone(),
        path: rel,
        size: at.size,
    };
    Ok(Some(stream::respond(growing, part, &headers)))
}

/// Whether `d` fetches the blob `hex`: a Hub download verified against that sha256.
fn fetches(d: &DownloadView, hex: &str) -> bool {
    matches!(d.source, Source::Hub { .. })
        && d.sha256
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(hex))
}
