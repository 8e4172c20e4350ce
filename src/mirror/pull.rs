//! A file the library does not have: asked of the upstream Hub (with the service's own
//! token), then fetched once as an ordinary download of the queue (seen in the page and
//! the history) that every client asking for it meanwhile follows.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};

use super::headers::FileHeaders;
use super::range::{wanted, Wanted};
use super::stream::{self, Growing};
use super::{Mirror, MirrorError};
use crate::actors::queue_error::QueueError;
use crate::model::DownloadId;

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
    let id = download_of(mirror, repo, rev, file, &up).await?;
    crate::conn::widen_send_buffer(req);
    let path = format!("{repo}/{file}");
    let growing = Growing {
        queue: mirror.queue.clone(),
        id,
        part: mirror.library.full_path(&format!("{path}.part")),
        done: mirror.library.full_path(&path),
        size,
    };
    Ok(stream::respond(growing, part, &headers))
}

/// The download that fetches `repo/file`: the live one writing its path, else a new one
/// put first in the queue (a client waits on it). Two clients racing here make one:
/// the queue gives a path to one download, and the loser follows the winner.
async fn download_of(
    mirror: &Mirror,
    repo: &str,
    rev: &str,
    file: &str,
    up: &crate::hub::Resolved,
) -> Result<DownloadId, MirrorError> {
    let path = format!("{repo}/{file}");
    if let Some(id) = mirror.queue.writer_of(&path).await? {
        return Ok(id);
    }
    let wanted = crate::hub::Wanted {
        repo,
        file,
        revision: rev,
        commit: up.commit.clone(),
        sha256: up.sha256.clone(),
    };
    let new = crate::hub::new_download(&mirror.hub, wanted, false, false)
        .map_err(MirrorError::BadRequest)?;
    match mirror.queue.add_one(new).await {
        Ok(view) => {
            tracing::info!(download_id = %view.id, %repo, %file, "mirror: fetching a miss");
            // A client is waiting for it: ahead of what nobody waits for. (Refused
            // when it has started already, which is as good.)
            let _ = mirror.queue.move_to(&view.id, 0).await;
            Ok(view.id)
        }
        Err(QueueError::NameTaken(_)) => match mirror.queue.writer_of(&path).await? {
            Some(id) => Ok(id),
            None => Err(MirrorError::Conflict(format!(
                "{path} is on this service already but not as {rev} of {repo}: update it here first"
            ))),
        },
        Err(e) => Err(e.into()),
    }
}
