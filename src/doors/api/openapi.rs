//! `GET /api/openapi.json`: the API as OpenAPI 3, generated from the handlers.

use actix_web::HttpResponse;

use super::downloads::*;
use super::hub::*;
use super::queue_ops::*;
use crate::doors::error::ErrorBody;

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

pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(<ApiDoc as utoipa::OpenApi>::openapi())
}
