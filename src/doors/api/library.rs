//! `/api/library`: the models on disk.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::doors::error::ApiError;
use crate::library::{LibraryHandle, Listing};

type Library = web::Data<LibraryHandle>;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/library", web::get().to(list))
        .route("/library/rescan", web::post().to(rescan))
        .route("/library/check-updates", web::post().to(check_updates))
        .route("/library/update", web::post().to(update))
        .route("/library/{path:.*}", web::delete().to(delete))
}

/// `GET /api/library`: every file under download_dir, with what it is.
#[utoipa::path(get, path = "/api/library", responses((status = 200, body = Listing)))]
pub(super) async fn list(library: Library) -> HttpResponse {
    HttpResponse::Ok().json(library.list())
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Scanned {
    files: usize,
}

/// `POST /api/library/rescan`: walks download_dir now; answers when the walk is done
/// (hashing of new files goes on in the background).
#[utoipa::path(post, path = "/api/library/rescan", responses((status = 200, body = Scanned)))]
pub(super) async fn rescan(library: Library) -> Result<HttpResponse, ApiError> {
    let files = library.rescan().await?;
    Ok(HttpResponse::Ok().json(Scanned { files }))
}

/// `DELETE /api/library/{path}`: the file and every link the service made to it.
#[utoipa::path(delete, path = "/api/library/{path}", params(("path" = String, Path)), responses((status = 204, description = "deleted")))]
pub(super) async fn delete(
    library: Library,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    library.delete(&path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/library/check-updates`: asks the Hub in the background (one request per
/// repo); the result shows in each file's `update` and in a `library` websocket frame.
#[utoipa::path(post, path = "/api/library/check-updates", responses((status = 202, description = "checking")))]
pub(super) async fn check_updates(library: Library) -> HttpResponse {
    let library = library.get_ref().clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = library.check_updates().await {
            tracing::warn!(error = %e, "the library update check failed");
        }
    });
    HttpResponse::Accepted().json(serde_json::json!({"checking": true}))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    path: String,
}

/// `POST /api/library/update`: queues the newer file the last check found; the old one
/// keeps its name until the new one is verified. 201 with the download.
#[utoipa::path(post, path = "/api/library/update", request_body = UpdateBody, responses((status = 201, body = crate::queue::model::DownloadView)))]
pub(super) async fn update(
    library: Library,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let download = library.update(&body.path).await?;
    Ok(HttpResponse::Created().json(download))
}
