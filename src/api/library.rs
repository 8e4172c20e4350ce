//! `/api/library`: the models on disk.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::ApiError;
use crate::library::{LibraryHandle, Listing};

type Library = web::Data<LibraryHandle>;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/library", web::get().to(list))
        .route("/library/rescan", web::post().to(rescan))
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
