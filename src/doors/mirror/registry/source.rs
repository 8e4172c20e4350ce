//! A repo's files, for picking the one a tag names and finding the one a digest names:
//! from the upstream Hub (one request: its commit and every file's sha256), else, when
//! the upstream cannot be reached, from the library (a box without uplink still
//! serves what it holds).

use super::error::RegistryError;
use crate::doors::mirror::Mirror;
use crate::hub::{HubError, RepoFile};

/// A repo's files and the commit they are at (`None` when they come from the library).
pub(super) struct Listing {
    pub commit: Option<String>,
    pub files: Vec<RepoFile>,
}

impl Listing {
    /// The revision to fetch a file of the listing at: its commit, so that every blob
    /// of a manifest is the version the manifest named.
    pub fn revision(&self) -> &str {
        self.commit.as_deref().unwrap_or("main")
    }
}

pub(super) async fn files(mirror: &Mirror, repo: &str) -> Result<Listing, RegistryError> {
    let why = match mirror.hub.repo_revision(repo, "main").await {
        Ok(r) => {
            return Ok(Listing {
                commit: Some(r.commit),
                files: r.files,
            })
        }
        // Unreachable, or the repo is gone upstream: what the library holds of it.
        Err(e) if e.is_transient() || matches!(e, HubError::NotFound(_)) => e,
        Err(e) => return Err(e.into()),
    };
    let files: Vec<RepoFile> = mirror
        .library
        .repo_files(repo)
        .into_iter()
        .map(|(path, r)| RepoFile {
            quantization: crate::hub::quant::quantization(&path),
            size: r.size,
            sha256: r.sha256,
            path,
        })
        .collect();
    if !files.is_empty() {
        tracing::info!(%repo, error = %why, "registry: the upstream Hub did not list the repo; answering from the library");
        return Ok(Listing {
            commit: None,
            files,
        });
    }
    Err(match why {
        HubError::NotFound(_) => {
            RegistryError::NameUnknown(format!("{repo}: no such repo on the Hub or here"))
        }
        other => RegistryError::from(other),
    })
}
