//! A file the library does not have: asked of the upstream Hub (with the service's own
//! token), then fetched once as an ordinary download of the queue (seen in the page and
//! the history) that every client asking for it meanwhile follows.
//!
//! A download is followed only when it is the very version asked for: a Hub download
//! of the same repo, file, commit and sha256. One of another commit, or a download of
//! an ordinary URL that writes the same path (aria2's `dir=owner/name`), is never
//! followed: the answer then comes from the upstream as it is, not stored (see
//! [`super::upstream`]). A download of that version that has just completed is served
//! from its own record, without waiting for the library to index the file.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};

use super::headers::FileHeaders;
use super::range::{wanted, Wanted};
use super::stream::{self, Growing};
use super::{Mirror, MirrorError};
use crate::actors::queue_error::QueueError;
use crate::queue::model::{DownloadId, DownloadView, Source};

/// Answers a miss: `HEAD` with the upstream's headers (nothing is fetched for a
/// look), `GET` from the download of the file, started now or already running.
pub(super) async fn serve_miss(
    req: &HttpRequest,
    mirror: &Mirror,
    repo: &str,
    rev: &str,
    file: &str,
) -> Result<HttpResponse, MirrorError> {
    let up = mirror
        .hub
        .resolve(repo, rev, file)
        .await
        .map_err(MirrorError::from)?;
    if rev == "main" {
        if let Some(commit) = &up.commit {
            mirror.heads.saw_main(repo, commit);
        }
    }
    let size = up
        .size
        .ok_or_else(|| MirrorError::Upstream(format!("the Hub told no size for {repo}/{file}")))?;
    let headers = FileHeaders {
        etag: up
            .sha256
            .as_ref()
            .map(|s| format!("\"{s}\""))
            .or_else(|| up.etag.clone())
            .unwrap_or_else(|| format!("\"{size}\"")),
        sha256: up.sha256.clone(),
        commit: up.commit.clone(),
        size,
    };
    let part = wanted(
        req.headers()
            .get(actix_web::http::header::RANGE)
            .and_then(|v| v.to_str().ok()),
        size,
    );
    if part == Wanted::Unsatisfiable {
        return Err(MirrorError::RangeNotSatisfiable(size));
    }
    if req.method() == Method::HEAD {
        // A sized body that is never polled: actix sends its length and, for HEAD, no
        // body.
        let none = futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
        let mut response = HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(actix_web::body::SizedStream::new(size, none));
        headers.apply(&mut response);
        return Ok(response);
    }
    let path = format!("{repo}/{file}");
    let version = Version {
        repo,
        file,
        commit: up.commit.as_deref(),
        sha256: up.sha256.as_deref(),
    };
    let Some(id) = download_of(mirror, rev, &version, &up).await? else {
        return super::upstream::relay_file(req, mirror, &up, part, &headers).await;
    };
    crate::doors::conn::widen_send_buffer(req);
    let growing = Growing {
        queue: mirror.queue.clone(),
        id,
        root: mirror.download_dir.clone(),
        path,
        size,
    };
    Ok(stream::respond(growing, part, &headers))
}

/// The download that fetches `file` of `repo` at `rev` (started now, or the one
/// running), for a reader of its bytes that is no client of `/hf` (the registry reads
/// a miss's GGUF header from it), with what the upstream told of the file. `None`: the
/// path is another version's ([`download_of`]).
pub(super) async fn fetch_for(
    mirror: &Mirror,
    repo: &str,
    rev: &str,
    listed: &crate::hub::RepoFile,
) -> Result<Option<(DownloadId, crate::hub::Resolved)>, MirrorError> {
    let file = listed.path.as_str();
    let up = mirror.hub.resolve(repo, rev, file).await?;
    // The reader names these bytes by the listing's sha256 and size (a manifest's
    // digest): a resolve that names other bytes, or none, is refused before anything is
    // fetched, so that no blob is ever served under a digest it does not have.
    if up.sha256.is_none() || up.sha256 != listed.sha256 || up.size != Some(listed.size) {
        return Err(MirrorError::Upstream(format!(
            "{repo}/{file}: the Hub lists sha256 {} ({} bytes) but resolves it as sha256 {} ({} bytes)",
            listed.sha256.as_deref().unwrap_or("none"),
            listed.size,
            up.sha256.as_deref().unwrap_or("none"),
            up.size.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        )));
    }
    let version = Version {
        repo,
        file,
        commit: up.commit.as_deref(),
        sha256: up.sha256.as_deref(),
    };
    Ok(download_of(mirror, rev, &version, &up)
        .await?
        .map(|id| (id, up)))
}

/// The version of a file a client asked for, as the upstream named it.
struct Version<'a> {
    repo: &'a str,
    file: &'a str,
    commit: Option<&'a str>,
    sha256: Option<&'a str>,
}

impl Version<'_> {
    /// Whether `d` fetches (or fetched) exactly this version: a Hub download of the
    /// same repo and file pinned to the same commit, with the same sha256 (a file not
    /// stored with LFS has none: its commit fixes it). An upstream that names no commit
    /// (some remotes do not) is matched only by a download that has none either, by
    /// the sha256.
    fn is_fetched_by(&self, d: &DownloadView) -> bool {
        let Source::Hub {
            repo, file, commit, ..
        } = &d.source
        else {
            return false;
        };
        let same_sha = match self.sha256 {
            Some(want) => d
                .sha256
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(want)),
            None => true,
        };
        let same_commit = match self.commit {
            Some(want) => commit.as_deref() == Some(want),
            None => commit.is_none() && self.sha256.is_some(),
        };
        repo == self.repo && file == self.file && same_commit && same_sha
    }
}

/// The download whose bytes answer a request for `version`: the live one writing its
/// path, else a new one put first in the queue (a client waits on it), else the one
/// that just completed it. Two clients racing here make one: the queue gives a path to
/// one download, and the loser follows the winner. `None`: the path is another
/// version's (or another program's), and the answer comes from the upstream.
async fn download_of(
    mirror: &Mirror,
    rev: &str,
    version: &Version<'_>,
    up: &crate::hub::Resolved,
) -> Result<Option<DownloadId>, MirrorError> {
    let (repo, file) = (version.repo, version.file);
    let path = format!("{repo}/{file}");
    if let Some(id) = mirror.queue.writer_of(&path).await? {
        return follow(mirror, id, version).await;
    }
    let wanted = crate::intake::hub::Wanted {
        repo,
        file,
        revision: mirror.heads.revision_of(repo, rev),
        commit: up.commit.clone(),
        sha256: up.sha256.clone(),
    };
    let start = crate::intake::hub::Start::default();
    let new = crate::intake::hub::new_download(&mirror.hub, wanted, start)
        .map_err(|e| MirrorError::BadRequest(e.to_string()))?;
    match mirror.queue.add_one(new).await {
        Ok(view) => {
            tracing::info!(download_id = %view.id, %repo, %file, "mirror: fetching a miss");
            // A client is waiting for it: ahead of what nobody waits for. (Refused
            // when it has started already, which is as good.)
            let _ = mirror.queue.move_to(&view.id, 0).await;
            Ok(Some(view.id))
        }
        Err(QueueError::NameTaken(_)) => match mirror.queue.writer_of(&path).await? {
            Some(id) => follow(mirror, id, version).await,
            None => just_completed(mirror, &path, version).await,
        },
        Err(e) => Err(e.into()),
    }
}

/// `id` when it fetches `version`; else `None` (logged: the client gets the upstream's).
async fn follow(
    mirror: &Mirror,
    id: DownloadId,
    version: &Version<'_>,
) -> Result<Option<DownloadId>, MirrorError> {
    let view = mirror.queue.get(&id).await?;
    if version.is_fetched_by(&view) {
        return Ok(Some(id));
    }
    tracing::info!(download_id = %id, repo = version.repo, file = version.file,
        "mirror: the download writing this path fetches another version; relaying the upstream's");
    Ok(None)
}

/// The completed download of `version` whose file holds `path` (the newest), when the
/// library has not indexed it yet: served from the download's own record.
async fn just_completed(
    mirror: &Mirror,
    path: &str,
    version: &Version<'_>,
) -> Result<Option<DownloadId>, MirrorError> {
    let done = mirror.queue.completed().await?;
    let Some(d) = done
        .into_iter()
        .find(|d| d.path == path)
        .filter(|d| version.is_fetched_by(d))
    else {
        return Ok(None);
    };
    // Its file must still be the very file it completed (the library recorded its
    // identity then): else the path holds something else now (another program's
    // bytes, or another download's), and the upstream answers.
    let (library, rel, id) = (mirror.library.clone(), path.to_owned(), d.id.clone());
    let intact = tokio::task::spawn_blocking(move || library.completed_intact(&rel, &id))
        .await
        .map_err(|e| MirrorError::Internal(e.to_string()))?;
    Ok(intact.then_some(d.id))
}
