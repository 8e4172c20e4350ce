//! `/api/hub`: search the HuggingFace Hub, list a repo's files, queue a quantization.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{Hub, Queue};
use crate::actors::again::Asked;
use crate::doors::error::ApiError;
use crate::hub;
use crate::intake::{self, hub::Start};

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

#[utoipa::path(get, path = "/api/hub/models/{owner}/{name}/files", params(("owner" = String, Path), ("name" = String, Path), RevisionQuery), responses((status = 200, body = RepoFiles)))]
pub(super) async fn hub_files(
    client: Hub,
    path: web::Path<(String, String)>,
    q: web::Query<RevisionQuery>,
) -> Result<HttpResponse, ApiError> {
    let repo = intake::hub::repo(&path.0, &path.1)?;
    let revision = intake::hub::revision(q.revision.as_deref())?;
    let files = client.list_files(&repo, revision).await?;
    // One pick per tag over the whole tree: on a blocking thread, not a worker's.
    let (files, quantizations) = web::block(move || {
        let q = hub::quantizations(&files);
        (files, q)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("listing the quantizations: {e}")))?;
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
    /// The tag, as `llama-server -hf owner/name:TAG` takes it; absent: its default pick.
    quantization: Option<String>,
    /// Also the matching mmproj file, as llama.cpp fetches it (default true).
    #[serde(default = "yes")]
    mmproj: bool,
    revision: Option<String>,
    #[serde(default)]
    start_paused: bool,
    #[serde(default)]
    overwrite: bool,
}

fn yes() -> bool {
    true
}

/// Queues what `llama-server -hf owner/name[:TAG]` fetches (every part of a split
/// model, and its mmproj), each with the sha256 of its LFS pointer, all pinned to the
/// same commit.
#[utoipa::path(post, path = "/api/hub/models/{owner}/{name}/download", params(("owner" = String, Path), ("name" = String, Path)), request_body = QuantizationBody, responses((status = 201, body = super::downloads::AddedList), (status = 200, description = "every file already here or live", body = super::downloads::AddedList)))]
pub(super) async fn hub_download(
    queue: Queue,
    client: Hub,
    path: web::Path<(String, String)>,
    body: web::Json<QuantizationBody>,
) -> Result<HttpResponse, ApiError> {
    let wanted = intake::hub::Quantization {
        owner: &path.0,
        name: &path.1,
        quantization: body.quantization.as_deref(),
        revision: body.revision.as_deref(),
        mmproj: body.mmproj,
        start: Start {
            paused: body.start_paused,
            overwrite: body.overwrite,
        },
    };
    let news = intake::hub::quantization(&client, wanted).await?;
    let asked = news.into_iter().map(Asked::named).collect();
    let downloads = queue.add_asked(asked).await?;
    Ok(super::downloads::added_status(&downloads).json(super::downloads::AddedList { downloads }))
}
