//! `/api/downloads`: add, list, show, steer, change and forget downloads.

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Hub, Policy, Queue};
use crate::actors::again::{Added, Asked};
use crate::actors::handle::QueueHandle;
use crate::doors::error::ApiError;
use crate::hub::HubClient;
use crate::intake::{self, hub::Start, parse_sha256, UrlFile, UrlPolicy};
use crate::queue::lifecycle::{Action, State};
use crate::queue::model::{DownloadId, DownloadPatch, DownloadView, NewDownload};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only downloads in this state.
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DownloadPage {
    downloads: Vec<DownloadView>,
    /// Pass as `after` for the next page; null on the last one.
    next: Option<String>,
}

/// Downloads per chunk of a list answer. The answer is streamed a chunk at a time,
/// each asked of the queue when the socket has taken the one before: a client that
/// stops reading holds what is left of one chunk (at most some 150 KiB), not the whole
/// list. Each chunk costs the queue a pass over every download, hence not smaller.
const LIST_CHUNK: usize = 256;
/// Bytes handed to the server at a time: what it copies into a connection's buffer.
const LIST_PIECE: usize = 16 * 1024;
/// Chunks asked of the queue at once by all list answers together: however many
/// connections list at once, every other question waits behind at most these.
static LIST_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `GET /api/downloads?state=&limit=&after=`: everything by default, or a page.
#[utoipa::path(get, path = "/api/downloads", params(ListQuery), responses((status = 200, body = DownloadPage)))]
pub(super) async fn list(queue: Queue, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            State::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("state {s:?} is not a state")))?,
        ),
    };
    let limit = match q.limit {
        None => usize::MAX,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "limit must be between 1 and 10000".into(),
            ))
        }
    };
    // The first chunk before the answer starts, so that an unknown cursor is a 400.
    let mut listing = Listing::new(queue.get_ref().clone(), state, limit);
    listing.after = q.after.clone();
    let (views, next) = listing.fetch().await?;
    let first = listing.encode(&views, next)?;
    if listing.done {
        // It all fits in one chunk (a page): one body with its length, one write.
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(first));
    }
    listing.pending = first;
    let body = futures_util::stream::unfold(listing, Listing::next_chunk);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

/// A list answer being streamed: `{"downloads": [...], "next": ...}`, the same text as
/// [`DownloadPage`] serialized whole.
struct Listing {
    queue: QueueHandle,
    state: Option<State>,
    /// Downloads still to send before the request's `limit`.
    left: usize,
    /// Downloads sent so far.
    sent: usize,
    /// The last download sent, where the next chunk starts.
    after: Option<DownloadId>,
    /// What is encoded and not yet handed to the server.
    pending: Bytes,
    done: bool,
}

impl Listing {
    fn new(queue: QueueHandle, state: Option<State>, limit: usize) -> Self {
        Listing {
            queue,
            state,
            left: limit,
            sent: 0,
            after: None,
            pending: Bytes::new(),
            done: false,
        }
    }

    async fn next_chunk(mut self) -> Option<(Result<Bytes, ApiError>, Listing)> {
        if self.pending.is_empty() {
            if self.done {
                return None;
            }
            let page = self.fetch().await;
            match page.and_then(|(views, next)| self.encode(&views, next)) {
                Ok(chunk) => self.pending = chunk,
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
            }
        }
        let piece = self.pending.split_to(self.pending.len().min(LIST_PIECE));
        Some((Ok(piece), self))
    }

    /// The next chunk after the last download sent. When that one was forgotten in the
    /// meantime, the chunk after as many as were sent (one may then be skipped or come
    /// twice, as in any list that changes while it is read).
    async fn fetch(&self) -> Result<(Vec<DownloadView>, Option<DownloadId>), ApiError> {
        let _turn = LIST_GATE
            .acquire()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let n = self.left.min(LIST_CHUNK);
        match self.queue.list(self.state, self.after.clone(), n).await {
            Err(crate::actors::queue_error::QueueError::UnknownCursor(_)) if self.sent > 0 => {
                let (mut views, next) = self.queue.list(self.state, None, self.sent + n).await?;
                views.drain(..self.sent.min(views.len()));
                Ok((views, next))
            }
            other => Ok(other?),
        }
    }

    fn encode(
        &mut self,
        views: &[DownloadView],
        next: Option<DownloadId>,
    ) -> Result<Bytes, ApiError> {
        let json = |e: serde_json::Error| ApiError::Internal(e.to_string());
        let mut buf = Vec::with_capacity(views.len() * 320 + 64);
        if self.sent == 0 {
            buf.extend_from_slice(br#"{"downloads":["#);
        }
        for v in views {
            if self.sent > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, v).map_err(json)?;
            self.sent += 1;
        }
        self.left = self.left.saturating_sub(views.len());
        if next.is_none() || self.left == 0 {
            buf.extend_from_slice(br#"],"next":"#);
            serde_json::to_writer(&mut buf, &next).map_err(json)?;
            buf.push(b'}');
            self.done = true;
        } else {
            self.after = next;
        }
        Ok(Bytes::from(buf))
    }
}

#[utoipa::path(get, path = "/api/downloads/{id}", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
pub(super) async fn get(queue: Queue, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let d = queue.get(&id).await?;
    Ok(HttpResponse::Ok().json(d))
}

/// `POST /api/downloads`: one download, or `{"downloads": [...]}` for many at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBody {
    url: Option<String>,
    file_name: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    start_paused: bool,
    #[serde(default)]
    overwrite: bool,
    hub: Option<HubRef>,
    /// Many downloads at once, each an object like this one (without `downloads`).
    #[schema(no_recursion)]
    downloads: Option<Vec<AddBody>>,
}

/// `{"repo": "owner/name", "file": "x.gguf", "revision"?: "main"}`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HubRef {
    repo: String,
    file: String,
    revision: Option<String>,
}

/// The answer to an add of many: each download, new or `already` there.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AddedList {
    pub(super) downloads: Vec<Added>,
}

/// 200 when every download asked for was already here (or live), 201 when one is new.
pub(super) fn added_status(added: &[Added]) -> actix_web::HttpResponseBuilder {
    if added.iter().all(|a| a.already) {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
}

#[utoipa::path(post, path = "/api/downloads", request_body = AddBody, responses((status = 201, description = "the download, or {\"downloads\": [...]} for a batch", body = Added), (status = 200, description = "already here or live: that download, with \"already\": true", body = Added)))]
pub(super) async fn add(
    queue: Queue,
    hub: Hub,
    policy: Policy,
    body: web::Json<AddBody>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    if let Some(items) = body.downloads.take() {
        if body.url.is_some() || body.hub.is_some() {
            return Err(ApiError::BadRequest(
                "give either \"downloads\" or one download, not both".into(),
            ));
        }
        if items.is_empty() || items.len() > 10_000 {
            return Err(ApiError::BadRequest(
                "\"downloads\" must hold 1 to 10000 items".into(),
            ));
        }
        let asked = items
            .into_iter()
            .map(|i| to_asked(i, &hub, &policy))
            .collect::<Result<Vec<_>, _>>()?;
        let downloads = queue.add_asked(asked).await?;
        return Ok(added_status(&downloads).json(AddedList { downloads }));
    }
    let added = queue.add_asked_one(to_asked(body, &hub, &policy)?).await?;
    Ok(added_status(std::slice::from_ref(&added)).json(added))
}

/// One item of an add request as asked: a URL's file without a name given is named
/// after the URL, and numbered when another source holds that name.
fn to_asked(body: AddBody, client: &HubClient, policy: &UrlPolicy) -> Result<Asked, ApiError> {
    let auto_name = body.hub.is_none() && body.file_name.is_none();
    Ok(Asked {
        new: new_download(body, client, policy)?,
        auto_name,
    })
}

/// One item of an add request as a download (everything but name conflicts): the
/// body's shape is checked here, the rest by intake.
fn new_download(
    body: AddBody,
    client: &HubClient,
    policy: &UrlPolicy,
) -> Result<NewDownload, ApiError> {
    if body.downloads.is_some() {
        return Err(ApiError::BadRequest(
            "\"downloads\" cannot be nested".into(),
        ));
    }
    let sha256 = body.sha256.as_deref().map(parse_sha256).transpose()?;
    let start = Start {
        paused: body.start_paused,
        overwrite: body.overwrite,
    };
    if let Some(h) = body.hub {
        if body.url.is_some() || body.file_name.is_some() {
            return Err(ApiError::BadRequest(
                "give \"hub\" or \"url\", not both (a Hub file keeps its name)".into(),
            ));
        }
        let wanted = intake::hub::Wanted {
            repo: &h.repo,
            file: &h.file,
            revision: intake::hub::revision(h.revision.as_deref())?,
            commit: None,
            sha256,
        };
        return Ok(intake::hub::new_download(client, wanted, start)?);
    }
    let raw = body
        .url
        .ok_or_else(|| ApiError::BadRequest("\"url\" (or \"hub\") is required".into()))?;
    let file = UrlFile {
        url: &raw,
        file_name: body.file_name,
        sha256,
        start_paused: start.paused,
        overwrite: start.overwrite,
        ..UrlFile::default()
    };
    Ok(file.new_download(policy)?)
}

#[utoipa::path(post, path = "/api/downloads/{id}/pause", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
pub(super) async fn pause(queue: Queue, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(queue, id, Action::Pause).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/resume", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
pub(super) async fn resume(queue: Queue, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(queue, id, Action::Resume).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/cancel", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
pub(super) async fn cancel(queue: Queue, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(queue, id, Action::Cancel).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/retry", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
pub(super) async fn retry(queue: Queue, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(queue, id, Action::Retry).await
}

async fn control(
    queue: Queue,
    id: web::Path<String>,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let d = queue.control(&id, action).await?;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveBody {
    position: usize,
}

#[utoipa::path(post, path = "/api/downloads/{id}/move", params(("id" = String, Path)), request_body = MoveBody, responses((status = 200, body = DownloadView)))]
pub(super) async fn move_to(
    queue: Queue,
    id: web::Path<String>,
    body: web::Json<MoveBody>,
) -> Result<HttpResponse, ApiError> {
    let d = queue.move_to(&id, body.position).await?;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchBody {
    /// `null` removes the cap; absent leaves it.
    #[serde(default, deserialize_with = "some_or_null")]
    speed_limit_bps: Option<Option<u64>>,
    url: Option<String>,
}

fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[utoipa::path(patch, path = "/api/downloads/{id}", params(("id" = String, Path)), request_body = PatchBody, responses((status = 200, body = DownloadView)))]
pub(super) async fn patch(
    queue: Queue,
    policy: Policy,
    id: web::Path<String>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = body
        .url
        .map(|u| policy.check(&u).map(|u| u.to_string()))
        .transpose()
        .map_err(ApiError::from)?;
    // 0 means "no cap", as in the config.
    let speed_limit_bps = body.speed_limit_bps.map(|l| l.filter(|&n| n > 0));
    let patch = DownloadPatch {
        speed_limit_bps,
        url,
    };
    let d = queue.patch(&id, patch).await?;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    delete_file: bool,
}

#[utoipa::path(delete, path = "/api/downloads/{id}", params(("id" = String, Path), DeleteQuery), responses((status = 204, description = "forgotten")))]
pub(super) async fn delete(
    queue: Queue,
    id: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    queue.delete(&id, q.delete_file).await?;
    Ok(HttpResponse::NoContent().finish())
}
