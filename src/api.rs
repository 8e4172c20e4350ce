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
            .route(
                "/downloads/{id}/pause",
                web::post().to(|s: Sup, p: web::Path<String>| control(s, p, Action::Pause)),
            )
            .route(
                "/downloads/{id}/resume",
                web::post().to(|s: Sup, p: web::Path<String>| control(s, p, Action::Resume)),
            )
            .route(
                "/downloads/{id}/cancel",
                web::post().to(|s: Sup, p: web::Path<String>| control(s, p, Action::Cancel)),
            )
            .route(
                "/downloads/{id}/retry",
                web::post().to(|s: Sup, p: web::Path<String>| control(s, p, Action::Retry)),
            )
            .route("/downloads/{id}/move", web::post().to(move_to))
            .route("/pause-all", web::post().to(|s: Sup| all(s, true)))
            .route("/resume-all", web::post().to(|s: Sup| all(s, false)))
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

#[derive(Serialize)]
struct DownloadList {
    downloads: Vec<DownloadView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Serialize)]
struct DownloadPage {
    downloads: Vec<DownloadView>,
    /// Pass as `after` for the next page; null on the last one.
    next: Option<String>,
}

/// `GET /api/downloads?state=&limit=&after=`: everything by default, or a page.
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

async fn get(sup: Sup, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let d = sup.send(Get(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(d))
}

/// `POST /api/downloads`: one download, or `{"downloads": [...]}` for many at once.
#[derive(Debug, Deserialize)]
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
    downloads: Option<Vec<AddBody>>,
}

/// `{"repo": "owner/name", "file": "x.gguf", "revision"?: "main"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubRef {
    repo: String,
    file: String,
    revision: Option<String>,
}

async fn add(sup: Sup, hub: Hub, body: web::Json<AddBody>) -> Result<HttpResponse, ApiError> {
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
            .map(|i| new_download(i, &hub))
            .collect::<Result<Vec<_>, _>>()?;
        let downloads = sup.send(Add(news)).await??;
        return Ok(HttpResponse::Created().json(DownloadList { downloads }));
    }
    let new = new_download(body, &hub)?;
    let mut added = sup.send(Add(vec![new])).await??;
    let d = added
        .pop()
        .ok_or_else(|| ApiError::Internal("nothing was added".into()))?;
    Ok(HttpResponse::Created().json(d))
}

/// Validates one item of an add request (everything but name conflicts).
fn new_download(body: AddBody, client: &HubClient) -> Result<NewDownload, ApiError> {
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
    let url = validate_url(&raw)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    position: usize,
}

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

#[derive(Deserialize)]
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

async fn patch(
    sup: Sup,
    id: web::Path<String>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = body
        .url
        .map(|u| validate_url(&u).map(|u| u.to_string()))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    delete_file: bool,
}

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

#[derive(Serialize)]
struct Affected {
    affected: usize,
}

async fn all(sup: Sup, pause: bool) -> Result<HttpResponse, ApiError> {
    let affected = sup.send(All { pause }).await??;
    Ok(HttpResponse::Ok().json(Affected { affected }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    state: Option<String>,
    limit: Option<usize>,
}

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

async fn clear_history(sup: Sup) -> Result<HttpResponse, ApiError> {
    let removed = sup.send(ClearHistory).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": removed })))
}

async fn stats(sup: Sup) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(sup.send(GetStats).await?))
}

/// The `[downloads]` settings that can change at run time.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsView {
    max_concurrent: usize,
    speed_limit_bps: u64,
    connections_per_download: usize,
    max_retries: u32,
}

#[derive(Deserialize)]
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

async fn get_settings(sup: Sup) -> Result<HttpResponse, ApiError> {
    let s = sup.send(GetSettings).await?;
    Ok(HttpResponse::Ok().json(settings_view(&s)))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
    /// Only repos tagged `gguf` (by default they are listed first).
    gguf: Option<bool>,
}

#[derive(Serialize)]
struct Models {
    models: Vec<hub::ModelSummary>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionQuery {
    revision: Option<String>,
}

#[derive(Serialize)]
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

#[derive(Deserialize)]
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
