//! `HEAD`/`GET /hf/{owner}/{name}/resolve/{rev}/{file}`: a file of the library served
//! from disk by actix-files (`Range` → 206, `HEAD` without a body) with the Hub's
//! headers; anything else is a miss for [`super::pull`].

use actix_files::NamedFile;
use actix_web::{web, HttpRequest, HttpResponse};

use super::headers::FileHeaders;
use super::local::{at_revision, is_commit};
use super::{checked, pull, Mirror, MirrorError};
use crate::hub::HubError;
use crate::library::Record;

/// A file the library can serve for a request, and the commit to name in
/// `X-Repo-Commit`.
struct Hit {
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
    super::checked_revision(&rev)?;
    if let Some(hit) = find(&mirror, &repo, &rev, &file).await? {
        let path = format!("{repo}/{file}");
        if let Some(response) = serve(&req, &mirror, &path, hit).await? {
            return Ok(response);
        }
    }
    pull::serve_miss(&req, &mirror, &repo, &rev, &file).await
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
    let Some((_, record)) = mirror.library.hub_file(repo, file) else {
        return Ok(None);
    };
    if at_revision(&record, rev) {
        let commit = record.revision.clone();
        return Ok(Some(Hit { record, commit }));
    }
    // The library can answer a branch: a silent upstream gets a few seconds, and none
    // while it is remembered silent.
    let asked = if is_commit(rev) {
        mirror.hub.resolve(repo, rev, file).await
    } else if mirror.uplink.recently_down() {
        Err(HubError::Network(
            "the upstream Hub did not answer a moment ago".into(),
        ))
    } else {
        let quick = Some(super::uplink::QUICK);
        let asked = mirror.hub.resolve_within((repo, rev, file), quick).await;
        mirror.uplink.note(&asked);
        asked
    };
    match asked {
        Ok(up) if up.sha256.is_some() && up.sha256 == record.sha256 => Ok(Some(Hit {
            record,
            commit: up.commit,
        })),
        Ok(up) => {
            // Another version is ours: the upstream's answers for this one.
            tracing::info!(%repo, %file, %rev, ours = record.revision.as_deref().unwrap_or("unknown"),
                theirs = up.commit.as_deref().unwrap_or("unknown"),
                "mirror: the library holds another version");
            Ok(None)
        }
        Err(e) if e.is_transient() && !is_commit(rev) => {
            tracing::info!(%repo, %file, error = %e, "upstream Hub unreachable; serving the library's copy");
            let commit = record.revision.clone();
            Ok(Some(Hit { record, commit }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends a library file: opened without following a link on the way
/// (`LibraryHandle::open`), and only when the open file is the one the library indexed
/// (inode, device, size, mtime); else `None` (a miss). actix-files answers `Range`,
/// `If-Range` and `HEAD` from that open file; its own validators are replaced by the
/// Hub's.
async fn serve(
    req: &HttpRequest,
    mirror: &Mirror,
    path: &str,
    hit: Hit,
) -> Result<Option<HttpResponse>, MirrorError> {
    let (library, rel, record) = (mirror.library.clone(), path.to_owned(), hit.record.clone());
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Option<NamedFile>> {
        let (file, now) = match library.open(&rel) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::info!(path = %rel, error = %e, "mirror: a library file cannot be opened as indexed");
                return Ok(None);
            }
        };
        if !record.matches(&now) {
            tracing::info!(path = %rel, "mirror: a library file changed since it was indexed");
            return Ok(None);
        }
        NamedFile::from_file(file, library.full_path(&rel)).map(Some)
    })
    .await
    .map_err(|e| MirrorError::Internal(e.to_string()))?
    .map_err(|e| MirrorError::Internal(format!("cannot open a library file: {e}")))?;
    let Some(named) = opened else {
        return Ok(None);
    };
    let named = named
        .use_etag(false)
        .use_last_modified(false)
        .disable_content_disposition()
        .set_content_type(actix_web::mime::APPLICATION_OCTET_STREAM);
    crate::doors::conn::widen_send_buffer(req);
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
    Ok(Some(response))
}
