//! `HEAD`/`GET /hf/{owner}/{name}/resolve/{rev}/{file}`: a file of the library served
//! from disk by actix-files (`Range` → 206, `HEAD` without a body) with the Hub's
//! headers; anything else is a miss for [`super::pull`].

use std::path::PathBuf;

use actix_files::NamedFile;
use actix_web::{web, HttpRequest, HttpResponse};

use super::headers::FileHeaders;
use super::local::{at_revision, is_commit};
use super::{checked, pull, Mirror, MirrorError};
use crate::library::Record;

/// A file the library can serve for a request, and the commit to name in
/// `X-Repo-Commit`.
struct Hit {
    full: PathBuf,
    record: Record,
    commit: Option<String>,
}

/// The route's handler.
pub(super) async fn resolve(
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name, rev, file) = path.into_inner();
    let repo = checked(&owner, &name, Some(&file))?;
    match find(&mirror, &repo, &rev, &file).await? {
        Some(hit) => serve(&req, hit).await,
        None => pull::serve_miss(&req, &mirror, &repo, &rev, &file).await,
    }
}

/// The library's copy of `file` when it is the one asked for: fetched at that commit
/// or by that branch name, without asking the upstream; else the same content as the
/// upstream's at `rev` (one `HEAD` there). Offline, a branch is served from what we
/// have (a mirror without uplink still serves); a commit only when it is ours.
async fn find(
    mirror: &Mirror,
    repo: &str,
    rev: &str,
    file: &str,
) -> Result<Option<Hit>, MirrorError> {
    let Some((full, record)) = mirror.library.hub_file(repo, file) else {
        return Ok(None);
    };
    if at_revision(&record, rev) {
        let commit = record.revision.clone();
        return Ok(Some(Hit {
            full,
            record,
            commit,
        }));
    }
    match mirror.hub.resolve(repo, rev, file).await {
        Ok(up) if up.sha256.is_some() && up.sha256 == record.sha256 => Ok(Some(Hit {
            full,
            record,
            commit: up.commit,
        })),
        Ok(up) => Err(MirrorError::Conflict(format!(
            "the library holds another version of {repo}/{file} (commit {}) than {rev} ({}): \
             update it on this service first",
            record.revision.as_deref().unwrap_or("unknown"),
            up.commit.as_deref().unwrap_or("unknown"),
        ))),
        Err(e) if e.is_transient() && !is_commit(rev) => {
            tracing::info!(%repo, %file, error = %e, "upstream Hub unreachable; serving the library's copy");
            let commit = record.revision.clone();
            Ok(Some(Hit {
                full,
                record,
                commit,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends a library file: actix-files answers `Range`, `If-Range` and `HEAD`; its own
/// validators are replaced by the Hub's.
async fn serve(req: &HttpRequest, hit: Hit) -> Result<HttpResponse, MirrorError> {
    let full = hit.full.clone();
    let named = tokio::task::spawn_blocking(move || NamedFile::open(full))
        .await
        .map_err(|e| MirrorError::Internal(e.to_string()))?
        .map_err(|e| MirrorError::Internal(format!("cannot open a library file: {e}")))?
        .use_etag(false)
        .use_last_modified(false)
        .disable_content_disposition()
        .set_content_type(actix_web::mime::APPLICATION_OCTET_STREAM);
    crate::conn::widen_send_buffer(req);
    let mut response = named.into_response(req);
    let etag = match &hit.record.sha256 {
        Some(sha) => format!("\"{sha}\""),
        // Not hashed yet: still a strong validator of this very file.
        None => format!(
            "\"{}-{}-{}\"",
            hit.record.size, hit.record.ino, hit.record.mtime_ns
        ),
    };
    FileHeaders {
        etag,
        sha256: hit.record.sha256.clone(),
        commit: hit.commit,
        size: hit.record.size,
    }
    .apply(&mut response);
    Ok(response)
}
