//! REST handlers, one module per resource: parse and validate input, ask the queue
//! through its handle, shape the answer. Only `crate::doors::error` knows HTTP statuses.

mod downloads;
mod hub;
mod library;
mod openapi;
mod queue_ops;

use actix_web::{web, HttpResponse};
use serde::Serialize;

pub use openapi::ApiDoc;

use crate::actors::handle::QueueHandle;
use crate::doors::error::ApiError;
use crate::hub::HubClient;
use crate::intake::UrlPolicy;
use crate::queue::model::DownloadView;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

type Queue = web::Data<QueueHandle>;
type Hub = web::Data<HubClient>;
type Policy = web::Data<UrlPolicy>;

/// `{"downloads": [...]}`: the answer of every route that returns several.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DownloadList {
    pub(super) downloads: Vec<DownloadView>,
}

/// Registers every `/api` route; `events` is the websocket's (`/api/events`), another
/// door's, which the router hands in.
pub fn routes(cfg: &mut web::ServiceConfig, events: actix_web::Route) {
    let scope = web::scope("/api")
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
        .route("/downloads", web::get().to(downloads::list))
        .route("/downloads", web::post().to(downloads::add))
        .route("/downloads/{id}", web::get().to(downloads::get))
        .route("/downloads/{id}", web::patch().to(downloads::patch))
        .route("/downloads/{id}", web::delete().to(downloads::delete))
        .route("/downloads/{id}/pause", web::post().to(downloads::pause))
        .route("/downloads/{id}/resume", web::post().to(downloads::resume))
        .route("/downloads/{id}/cancel", web::post().to(downloads::cancel))
        .route("/downloads/{id}/retry", web::post().to(downloads::retry))
        .route("/downloads/{id}/move", web::post().to(downloads::move_to))
        .route("/pause-all", web::post().to(queue_ops::pause_all))
        .route("/resume-all", web::post().to(queue_ops::resume_all))
        .route("/openapi.json", web::get().to(openapi::openapi_json))
        .route("/history", web::get().to(queue_ops::history))
        .route("/history", web::delete().to(queue_ops::clear_history))
        .route("/settings", web::get().to(queue_ops::get_settings))
        .route("/settings", web::patch().to(queue_ops::patch_settings))
        .route("/stats", web::get().to(queue_ops::stats))
        .route("/events", events)
        .route("/hub/search", web::get().to(hub::hub_search))
        .route(
            "/hub/models/{owner}/{name}/files",
            web::get().to(hub::hub_files),
        )
        .route(
            "/hub/models/{owner}/{name}/download",
            web::post().to(hub::hub_download),
        );
    cfg.service(library::routes(scope).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::NotFound("no such route".into()))
    })));
}
