//! The whole queue: pause and resume all, the history, the settings, the stats.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{DownloadList, Queue};
use crate::config::{LiveSettings, SettingsPatch};
use crate::doors::error::ApiError;
use crate::queue::lifecycle::State;

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Affected {
    affected: usize,
}

#[utoipa::path(post, path = "/api/pause-all", responses((status = 200, body = Affected)))]
pub(super) async fn pause_all(queue: Queue) -> Result<HttpResponse, ApiError> {
    let affected = queue.pause_all().await?;
    Ok(HttpResponse::Ok().json(Affected { affected }))
}

#[utoipa::path(post, path = "/api/resume-all", responses((status = 200, body = Affected)))]
pub(super) async fn resume_all(queue: Queue) -> Result<HttpResponse, ApiError> {
    let affected = queue.resume_all().await?;
    Ok(HttpResponse::Ok().json(Affected { affected }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/history", params(HistoryQuery), responses((status = 200, body = DownloadList)))]
pub(super) async fn history(
    queue: Queue,
    q: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
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
    let downloads = queue.history(state, limit).await?;
    Ok(HttpResponse::Ok().json(DownloadList { downloads }))
}

#[utoipa::path(delete, path = "/api/history", responses((status = 200, body = Removed)))]
pub(super) async fn clear_history(queue: Queue) -> Result<HttpResponse, ApiError> {
    let removed = queue.clear_history().await?;
    Ok(HttpResponse::Ok().json(Removed { removed }))
}

#[utoipa::path(get, path = "/api/stats", responses((status = 200, body = crate::queue::model::Stats)))]
pub(super) async fn stats(queue: Queue) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(queue.stats().await?))
}

#[utoipa::path(get, path = "/api/settings", responses((status = 200, body = LiveSettings)))]
pub(super) async fn get_settings(queue: Queue) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(queue.settings().await?.live()))
}

/// Changes some run-time settings; merged with the others inside the queue, so two
/// concurrent changes of different keys both hold.
#[utoipa::path(patch, path = "/api/settings", request_body = SettingsPatch, responses((status = 200, body = LiveSettings)))]
pub(super) async fn patch_settings(
    queue: Queue,
    body: web::Json<SettingsPatch>,
) -> Result<HttpResponse, ApiError> {
    let s = queue.patch_settings(body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(s.live()))
}

/// `DELETE /api/history`: how many were forgotten.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    removed: usize,
}
