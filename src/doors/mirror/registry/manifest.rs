//! `GET`/`HEAD /v2/{owner}/{name}/manifests/{tag}`: the manifest of the file the tag
//! names. Ollama asks it with `Accept: application/vnd.docker.distribution.manifest.v2+json`
//! (`server/images.go`, `pullModelManifest`); that is the only form there is here, so
//! it is the answer whatever the `Accept`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::RegistryError;
use super::{blob, derive, header, pick, source};
use crate::doors::mirror::Mirror;
use crate::library::ollama::MANIFEST_MEDIA_TYPE;

pub(super) async fn manifest(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, RegistryError> {
    super::authorize(&req)?;
    let (owner, name, tag) = path.into_inner();
    let repo = super::repo(&owner, &name)?;
    super::check_tag(&tag)?;
    let listing = source::files(&mirror, &repo).await?;
    let file = pick::pick(&listing.files, &repo, &tag).map_err(|e| match e {
        // Offline, what the library lacks may well exist: not a 404 (which Ollama
        // shows as "file does not exist").
        RegistryError::ManifestUnknown(m) if listing.commit.is_none() => {
            RegistryError::Unavailable(format!(
                "{m}: the upstream Hub cannot be reached, and the library has no such file"
            ))
        }
        e => e,
    })?;
    let sha256 = file.sha256.clone().ok_or_else(|| {
        RegistryError::Unsupported(format!(
            "{repo}/{}: the Hub tells no sha256 for it (not stored with LFS), and a blob is named by it",
            file.path
        ))
    })?;
    if let Some(commit) = &listing.commit {
        blob::remember(&repo, file, commit);
    }
    let facts = header::facts(&mirror, &repo, &listing, file, &sha256).await?;
    // A split part by its header (whatever its name says): Ollama cannot load it, as
    // the library's Ollama publisher refuses it too.
    if facts.info.split.as_ref().is_some_and(|s| s.count > 1) {
        return Err(RegistryError::Unsupported(format!(
            "{repo}/{}: its GGUF header says it is a part of a split model, which Ollama cannot load: pick another quantization",
            file.path
        )));
    }
    let built = derive::manifest(&repo, file, &sha256, &facts)?;
    tracing::info!(%repo, %tag, file = %file.path, digest = %built.digest, "registry: manifest");
    Ok(HttpResponse::Ok()
        .content_type(MANIFEST_MEDIA_TYPE)
        .insert_header(("Docker-Content-Digest", built.digest))
        .body(built.bytes))
}
