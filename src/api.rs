//! REST handlers: parse and validate input, ask the supervisor, shape the answer.

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::supervisor::{
    Action, Add, All, ClearHistory, Control, Delete, Get, GetSettings, GetStats, History, List,
    Move, NewDownload, Patch, SetSettings, Supervisor,
};
use crate::config::DownloadsConfig;
use crate::error::ApiError;
use crate::files;
use crate::hub::{self, HubClient};
use crate::model::{DownloadView, Source, State};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

type Sup = web::Data<Addr<Supervisor>>;
type Hub = web::Data<HubClient>;
type Policy = web::Data<UrlPolicy>;

/// Which hosts downloads may come from (`[downloads] allowed_hosts`; empty: any), so
/// that a service reachable by others cannot be turned against the local network.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    pub allowed_hosts: Vec<String>,
}

impl UrlPolicy {
    pub fn allows(&self, url: &url::Url) -> bool {
        self.allowed_hosts.is_empty()
            || url
                .host_str()
                .is_some_and(|h| self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// [`validate_url`], plus the host allowlist.
    pub fn check(&self, raw: &str) -> Result<url::Url, ApiError> {
        let url = validate_url(raw)?;
        if !self.allows(&url) {
            return Err(ApiError::Unprocessable(format!(
                "host {:?} is not in downloads.allowed_hosts",
                url.host_str().unwrap_or("")
            )));
        }
        Ok(url)
    }
}

/// Registers every `/api` route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY)
                    .error_handler(|e, _| ApiError::from(e).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::NotFound(e.to_string()).into()),
            )
            .route("/downloads", web::get().to(list))
            .route("/downloads", web::post().to(add))
            .route("/downloads/{id}", web::get().to(get))
            .route("/downloads/{id}", web::patch().to(patch))
            .route("/downloads/{id}", web::delete().to(delete))
            .route("/downloads/{id}/pause", web::post().to(pause))
            .route("/downloads/{id}/resume", web::post().to(resume))
            .route("/downloads/{id}/cancel", web::post().to(cancel))
            .route("/downloads/{id}/retry", web::post().to(retry))
            .route("/downloads/{id}/move", web::post().to(move_to))
            .route("/pause-all", web::post().to(pause_all))
            .route("/resume-all", web::post().to(resume_all))
            .route("/openapi.json", web::get().to(openapi_json))
            .route("/history", web::get().to(history))
            .route("/history", web::delete().to(clear_history))
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::patch().to(patch_settings))
            .route("/stats", web::get().to(stats))
            .route("/events", web::get().to(crate::ws::events))
            .route("/hub/search", web::get().to(hub_search))
            .route("/hub/models/{owner}/{name}/files", web::get().to(hub_files))
            .route(
                "/hub/models/{owner}/{name}/download",
                web::post().to(hub_download),
            )
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::NotFound("no such route".into()))
            })),
    );
}

#[derive(Serialize, utoipa::ToSchema)]
struct DownloadList {
    downloads: Vec<DownloadView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only downloads in this state.
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DownloadPage {
    downloads: Vec<DownloadView>,
    /// Pass as `after` for the next page; null on the last one.
    next: Option<String>,
}

/// `GET /api/downloads?state=&limit=&after=`: everything by default, or a page.
#[utoipa::path(get, path = "/api/downloads", params(ListQuery), responses((status = 200, body = DownloadPage)))]
async fn list(sup: Sup, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
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
    let (downloads, next) = sup
        .send(List {
            state,
            after: q.after.clone(),
            limit,
        })
        .await??;
    Ok(HttpResponse::Ok().json(DownloadPage { downloads, next }))
}

#[utoipa::path(get, path = "/api/downloads/{id}", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
async fn get(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let d = sup.send(Get(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(d))
}

/// `POST /api/downloads`: one download, or `{"downloads": [...]}` for many at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddBody {
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
struct HubRef {
    repo: String,
    file: String,
    revision: Option<String>,
}

#[utoipa::path(post, path = "/api/downloads", request_body = AddBody, responses((status = 201, description = "the download, or {\"downloads\": [...]} for a batch", body = DownloadView)))]
async fn add(
    sup: Sup,
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
        let news = items
            .into_iter()
            .map(|i| new_download(i, &hub, &policy))
            .collect::<Result<Vec<_>, _>>()?;
        let downloads = sup.send(Add(news)).await??;
        return Ok(HttpResponse::Created().json(DownloadList { downloads }));
    }
    let new = new_download(body, &hub, &policy)?;
    let mut added = sup.send(Add(vec![new])).await??;
    let d = added
        .pop()
        .ok_or_else(|| ApiError::Internal("nothing was added".into()))?;
    Ok(HttpResponse::Created().json(d))
}

/// Validates one item of an add request (everything but name conflicts).
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
    let sha256 = body.sha256.as_deref().map(validate_sha256).transpose()?;
    if let Some(h) = body.hub {
        if body.url.is_some() || body.file_name.is_some() {
            return Err(ApiError::BadRequest(
                "give \"hub\" or \"url\", not both (a Hub file keeps its name)".into(),
            ));
        }
        let revision = validate_revision(h.revision.as_deref())?;
        return hub_download_new(
            client,
            &h.repo,
            &h.file,
            revision,
            None,
            sha256,
            body.start_paused,
            body.overwrite,
        );
    }
    let raw = body
        .url
        .ok_or_else(|| ApiError::BadRequest("\"url\" (or \"hub\") is required".into()))?;
    let url = policy.check(&raw)?;
    let file_name = match body.file_name {
        Some(name) => name,
        None => files::name_from_url(&url).ok_or_else(|| {
            ApiError::Unprocessable(format!("{raw} names no file; give \"file_name\""))
        })?,
    };
    files::validate_name(&file_name)
        .map_err(|e| ApiError::Unprocessable(format!("file_name: {e}")))?;
    Ok(NewDownload {
        url: url.to_string(),
        path: file_name.clone(),
        file_name,
        sha256,
        start_paused: body.start_paused,
        overwrite: body.overwrite,
        source: Source::Url,
    })
}

/// Only absolute `http`/`https` URLs with a host.
pub fn validate_url(raw: &str) -> Result<url::Url, ApiError> {
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::Unprocessable(format!("url {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::Unprocessable(format!(
            "url scheme {:?} is refused: only http and https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::Unprocessable(format!("url {raw:?} has no host")));
    }
    Ok(url)
}

/// 64 hex digits, returned in lower case.
pub fn validate_sha256(s: &str) -> Result<String, ApiError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::BadRequest(format!(
            "sha256 {s:?} is not 64 hex digits"
        )))
    }
}

#[utoipa::path(post, path = "/api/downloads/{id}/pause", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
async fn pause(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(sup, id, Action::Pause).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/resume", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
async fn resume(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(sup, id, Action::Resume).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/cancel", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
async fn cancel(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(sup, id, Action::Cancel).await
}

#[utoipa::path(post, path = "/api/downloads/{id}/retry", params(("id" = String, Path)), responses((status = 200, body = DownloadView)))]
async fn retry(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    control(sup, id, Action::Retry).await
}

async fn control(
    sup: Sup,
    id: web::Path<String>,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let d = sup
        .send(Control {
            id: id.into_inner(),
            action,
        })
        .await??;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    position: usize,
}

#[utoipa::path(post, path = "/api/downloads/{id}/move", params(("id" = String, Path)), request_body = MoveBody, responses((status = 200, body = DownloadView)))]
async fn move_to(
    sup: Sup,
    id: web::Path<String>,
    body: web::Json<MoveBody>,
) -> Result<HttpResponse, ApiError> {
    let d = sup
        .send(Move {
            id: id.into_inner(),
            position: body.position,
        })
        .await??;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    /// `null` removes the cap; absent leaves it.
    #[serde(default, deserialize_with = "some_or_null")]
    speed_limit_bps: Option<Option<u64>>,
    url: Option<String>,
}

fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[utoipa::path(patch, path = "/api/downloads/{id}", params(("id" = String, Path)), request_body = PatchBody, responses((status = 200, body = DownloadView)))]
async fn patch(
    sup: Sup,
    policy: Policy,
    id: web::Path<String>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = body
        .url
        .map(|u| policy.check(&u).map(|u| u.to_string()))
        .transpose()?;
    // 0 means "no cap", as in the config.
    let speed_limit_bps = body.speed_limit_bps.map(|l| l.filter(|&n| n > 0));
    let d = sup
        .send(Patch {
            id: id.into_inner(),
            speed_limit_bps,
            url,
        })
        .await??;
    Ok(HttpResponse::Ok().json(d))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    delete_file: bool,
}

#[utoipa::path(delete, path = "/api/downloads/{id}", params(("id" = String, Path), DeleteQuery), responses((status = 204, description = "forgotten")))]
async fn delete(
    sup: Sup,
    id: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    sup.send(Delete {
        id: id.into_inner(),
        delete_file: q.delete_file,
    })
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
struct Affected {
    affected: usize,
}

#[utoipa::path(post, path = "/api/pause-all", responses((status = 200, body = Affected)))]
async fn pause_all(sup: Sup) -> Result<HttpResponse, ApiError> {
    all(sup, true).await
}

#[utoipa::path(post, path = "/api/resume-all", responses((status = 200, body = Affected)))]
async fn resume_all(sup: Sup) -> Result<HttpResponse, ApiError> {
    all(sup, false).await
}

async fn all(sup: Sup, pause: bool) -> Result<HttpResponse, ApiError> {
    let affected = sup.send(All { pause }).await??;
    Ok(HttpResponse::Ok().json(Affected { affected }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/history", params(HistoryQuery), responses((status = 200, body = DownloadList)))]
async fn history(sup: Sup, q: web::Query<HistoryQuery>) -> Result<HttpResponse, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => match State::parse(s) {
            Some(st) if st.is_finished() => Some(st),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "state {s:?}: history holds completed, failed or cancelled"
                )))
            }
        },
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 10000".into(),
        ));
    }
    let downloads = sup.send(History { state, limit }).await?;
    Ok(HttpResponse::Ok().json(DownloadList { downloads }))
}

#[utoipa::path(delete, path = "/api/history", responses((status = 200, body = Removed)))]
async fn clear_history(sup: Sup) -> Result<HttpResponse, ApiError> {
    let removed = sup.send(ClearHistory).await??;
    Ok(HttpResponse::Ok().json(Removed { removed }))
}

#[utoipa::path(get, path = "/api/stats", responses((status = 200, body = crate::actors::supervisor::Stats)))]
async fn stats(sup: Sup) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(sup.send(GetStats).await?))
}

/// The `[downloads]` settings that can change at run time.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingsView {
    max_concurrent: usize,
    speed_limit_bps: u64,
    connections_per_download: usize,
    max_retries: u32,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    max_concurrent: Option<usize>,
    speed_limit_bps: Option<u64>,
    connections_per_download: Option<usize>,
    max_retries: Option<u32>,
}

fn settings_view(s: &DownloadsConfig) -> SettingsView {
    SettingsView {
        max_concurrent: s.max_concurrent,
        speed_limit_bps: s.speed_limit_bps,
        connections_per_download: s.connections_per_download,
        max_retries: s.max_retries,
    }
}

#[utoipa::path(get, path = "/api/settings", responses((status = 200, body = SettingsView)))]
async fn get_settings(sup: Sup) -> Result<HttpResponse, ApiError> {
    let s = sup.send(GetSettings).await?;
    Ok(HttpResponse::Ok().json(settings_view(&s)))
}

#[utoipa::path(patch, path = "/api/settings", request_body = SettingsPatch, responses((status = 200, body = SettingsView)))]
async fn patch_settings(
    sup: Sup,
    body: web::Json<SettingsPatch>,
) -> Result<HttpResponse, ApiError> {
    let mut s = sup.send(GetSettings).await?;
    let p = body.into_inner();
    if let Some(v) = p.max_concurrent {
        s.max_concurrent = v;
    }
    if let Some(v) = p.speed_limit_bps {
        s.speed_limit_bps = v;
    }
    if let Some(v) = p.connections_per_download {
        s.connections_per_download = v;
    }
    if let Some(v) = p.max_retries {
        s.max_retries = v;
    }
    let s = sup.send(SetSettings(s)).await??;
    Ok(HttpResponse::Ok().json(settings_view(&s)))
}

/// A Hub file as a new download, landing in `download_dir/<owner>/<name>/<file>`.
#[allow(clippy::too_many_arguments)]
fn hub_download_new(
    client: &HubClient,
    repo: &str,
    file: &str,
    revision: &str,
    commit: Option<String>,
    sha256: Option<String>,
    start_paused: bool,
    overwrite: bool,
) -> Result<NewDownload, ApiError> {
    hub::validate_repo(repo).map_err(ApiError::Unprocessable)?;
    files::validate_relative_path(file)
        .map_err(|e| ApiError::Unprocessable(format!("file {file:?}: {e}")))?;
    let url = client
        .resolve_url(repo, commit.as_deref().unwrap_or(revision), file)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let file_name = file.rsplit('/').next().unwrap_or(file).to_owned();
    Ok(NewDownload {
        url: url.to_string(),
        file_name,
        path: format!("{repo}/{file}"),
        sha256,
        start_paused,
        overwrite,
        source: Source::Hub {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
            file: file.to_owned(),
            commit,
        },
    })
}

/// A branch, tag or commit: 1 to 255 characters, no control characters, no `..`.
fn validate_revision(revision: Option<&str>) -> Result<&str, ApiError> {
    let r = revision.unwrap_or("main");
    if r.is_empty() || r.len() > 255 || r.chars().any(char::is_control) || r.contains("..") {
        return Err(ApiError::Unprocessable(format!(
            "revision {r:?} is not a valid revision"
        )));
    }
    Ok(r)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
    /// Only repos tagged `gguf` (by default they are listed first).
    gguf: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Models {
    models: Vec<hub::ModelSummary>,
}

#[utoipa::path(get, path = "/api/hub/search", params(SearchQuery), responses((status = 200, body = Models)))]
async fn hub_search(client: Hub, q: web::Query<SearchQuery>) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 100".into(),
        ));
    }
    let query = q.q.as_deref().unwrap_or("").trim();
    if query.len() > 200 {
        return Err(ApiError::BadRequest(
            "q is longer than 200 characters".into(),
        ));
    }
    let models = client.search(query, limit, q.gguf.unwrap_or(false)).await?;
    Ok(HttpResponse::Ok().json(Models { models }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RevisionQuery {
    revision: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RepoFiles {
    repo: String,
    revision: String,
    files: Vec<hub::RepoFile>,
    quantizations: Vec<hub::Quantization>,
}

fn repo_of(path: &(String, String)) -> Result<String, ApiError> {
    let repo = format!("{}/{}", path.0, path.1);
    hub::validate_repo(&repo).map_err(ApiError::Unprocessable)?;
    Ok(repo)
}

#[utoipa::path(get, path = "/api/hub/models/{owner}/{name}/files", params(("owner" = String, Path), ("name" = String, Path), RevisionQuery), responses((status = 200, body = RepoFiles)))]
async fn hub_files(
    client: Hub,
    path: web::Path<(String, String)>,
    q: web::Query<RevisionQuery>,
) -> Result<HttpResponse, ApiError> {
    let repo = repo_of(&path)?;
    let revision = validate_revision(q.revision.as_deref())?;
    let files = client.list_files(&repo, revision).await?;
    let quantizations = hub::group_quantizations(&files);
    Ok(HttpResponse::Ok().json(RepoFiles {
        repo,
        revision: revision.to_owned(),
        files,
        quantizations,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QuantizationBody {
    quantization: String,
    revision: Option<String>,
    #[serde(default)]
    start_paused: bool,
    #[serde(default)]
    overwrite: bool,
}

/// Queues every file of one quantization (all parts of a split model), each with the
/// sha256 of its LFS pointer, all pinned to the same commit.
#[utoipa::path(post, path = "/api/hub/models/{owner}/{name}/download", params(("owner" = String, Path), ("name" = String, Path)), request_body = QuantizationBody, responses((status = 201, body = DownloadList)))]
async fn hub_download(
    sup: Sup,
    client: Hub,
    path: web::Path<(String, String)>,
    body: web::Json<QuantizationBody>,
) -> Result<HttpResponse, ApiError> {
    let repo = repo_of(&path)?;
    let revision = validate_revision(body.revision.as_deref())?;
    let files = client.list_files(&repo, revision).await?;
    let wanted = body.quantization.trim().to_ascii_uppercase();
    let group = hub::group_quantizations(&files)
        .into_iter()
        .find(|q| q.name == wanted)
        .ok_or_else(|| ApiError::NotFound(format!("{repo} has no {wanted} quantization")))?;
    // One commit for every part: resolve the first file now. A gated repo without a
    // token cannot be resolved; its downloads then fail with `unauthorized` on start.
    let commit = match client.resolve(&repo, revision, &group.files[0]).await {
        Ok(r) => r.commit,
        Err(e) if !e.is_transient() => {
            tracing::info!(%repo, error = %e, "cannot pin the commit now; each part pins its own");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let news = group
        .files
        .iter()
        .map(|f| {
            let sha = files
                .iter()
                .find(|x| &x.path == f)
                .and_then(|x| x.sha256.clone());
            hub_download_new(
                &client,
                &repo,
                f,
                revision,
                commit.clone(),
                sha,
                body.start_paused,
                body.overwrite,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let downloads = sup.send(Add(news)).await??;
    Ok(HttpResponse::Created().json(DownloadList { downloads }))
}

/// `DELETE /api/history`: how many were forgotten.
#[derive(Serialize, utoipa::ToSchema)]
struct Removed {
    removed: usize,
}

/// The API as OpenAPI 3, generated from the handlers and their types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "model-manager", description = "A self-hosted download orchestrator."),
    paths(
        list, add, get, patch, delete, pause, resume, cancel, retry, move_to, pause_all, resume_all,
        history, clear_history, get_settings, patch_settings, stats, hub_search, hub_files, hub_download
    ),
    components(schemas(ErrorBody)),
    modifiers(&ErrorResponses)
)]
pub struct ApiDoc;

use crate::error::ErrorBody;

/// Every operation may answer the JSON error shape: documented as its `default`.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = ResponseBuilder::new()
            .description("an error: {\"error\": {\"code\", \"message\"}}")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .insert("default".into(), error.clone().into());
            }
        }
    }
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(<ApiDoc as utoipa::OpenApi>::openapi())
}
