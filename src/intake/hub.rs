//! A file of the Hub as a new download of the queue, for every front door that queues
//! one (the REST API, the LAN mirror).

use crate::files;
use crate::hub::{validate_repo, validate_revision, HubClient};
use crate::queue::model::{NewDownload, Source};

/// Which file of the Hub, at which revision, with what the Hub already told of it.
pub struct Wanted<'a> {
    pub repo: &'a str,
    pub file: &'a str,
    /// The revision asked for (a branch, tag or commit).
    pub revision: &'a str,
    /// The commit it was pinned to, when already resolved.
    pub commit: Option<String>,
    /// The expected sha256, when known.
    pub sha256: Option<String>,
}

/// The download of `wanted`, landing in `download_dir/<owner>/<name>/<file>`; the error
/// says why a repo or file name is refused.
pub fn new_download(
    client: &HubClient,
    wanted: Wanted<'_>,
    start_paused: bool,
    overwrite: bool,
) -> Result<NewDownload, String> {
    let Wanted {
        repo,
        file,
        revision,
        commit,
        sha256,
    } = wanted;
    validate_repo(repo)?;
    for r in std::iter::once(revision).chain(commit.as_deref()) {
        validate_revision(r)?;
    }
    files::validate_relative_path(file).map_err(|e| format!("file {file:?}: {e}"))?;
    let url = client
        .resolve_url(repo, commit.as_deref().unwrap_or(revision), file)
        .map_err(|e| e.to_string())?;
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
        speed_limit_bps: None,
        connections: None,
    })
}
