//! `/api/hub`: search the HuggingFace Hub, list a repo's files, queue a quantization.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::validate::validate_revision;
use super::{DownloadList, Hub, Queue};
use crate::doors::error::ApiError;

use crate::hub::{self, HubClient};
use crate::queue::model::NewDownload;

/// A Hub file as a new download (see [`hub::new_download`]); a refused name is 422.
#[allow(clippy::too_many_arguments)]
pub(super) fn hub_download_new(
    client: &HubClient,
    repo: &str,
    file: &str,
    revision: &str,
    commit: Option<String>,
    sha256: Option<String>,
    start_paused: bool,
    overwrite: bool,
) -> Result<NewDownload, ApiError> {
    crate::intake::hub::new_download(
        client,
        crate::intake::hub::Wanted {
            repo,
            file,
            revision,
            commit,
            sha256,
        },
        start_paused,
        overwrite,
    )
    .map_err(ApiError::Unprocessable)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
    /// Only repos tagged `gguf` (by default they are listed first).
    gguf: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Models {
    models: Vec<hub::ModelSummary>,
}

#[utoipa::path(get, path = "/api/hub/search", params(SearchQuery), responses((status = 200, body = Models)))]
pub(super) async fn hub_search(
    client: Hub,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
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
pub(super) struct RevisionQuery {
    revision: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RepoFiles {
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
pub(super) async fn hub_files(
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
pub(super) struct QuantizationBody {
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
pub(super) async fn hub_download(
    queue: Queue,
    client: Hub,
    path: web::Path<(String, String)>,
    body: web::Json<QuantizationBody>,
) -> Result<HttpResponse, ApiError> {
    let news = quantization_downloads(&client, &path, &body).await?;
    let downloads = queue.add(news).await?;
    Ok(HttpResponse::Created().json(DownloadList { downloads }))
}

/// The new downloads of one quantization of `owner/name` (what the route above queues).
/// An unknown quantization is refused with the names of those the repo has.
pub(super) async fn quantization_downloads(
    client: &HubClient,
    path: &(String, String),
    body: &QuantizationBody,
) -> Result<Vec<NewDownload>, ApiError> {
    let repo = repo_of(path)?;
    let revision = validate_revision(body.revision.as_deref())?;
    let files = client.list_files(&repo, revision).await?;
    let wanted = body.quantization.trim().to_ascii_uppercase();
    let groups = hub::group_quantizations(&files);
    let Some(group) = groups.iter().find(|q| q.name == wanted) else {
        let names: Vec<&str> = groups.iter().map(|q| q.name.as_str()).collect();
        let has = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        return Err(ApiError::NotFound(format!(
            "{repo} has no {wanted} quantization; it has: {has}"
        )));
    };
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
    group
        .files
        .iter()
        .map(|f| {
            let sha = files
                .iter()
                .find(|x| &x.path == f)
                .and_then(|x| x.sha256.clone());
            hub_download_new(
                client,
                &repo,
                f,
                revision,
                commit.clone(),
                sha,
                body.start_paused,
                body.overwrite,
            )
        })
        .collect()
}
