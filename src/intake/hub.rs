//! A file of the Hub as a new download of the queue, for every door that queues one
//! (REST, the terminal, the LAN mirror, the library's update), and every file of one
//! quantization.

use super::IntakeError;
use crate::files;
use crate::hub::{self, validate_repo, validate_revision, HubClient};
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

/// How a new download starts, and whether it may replace a finished file of its name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    pub paused: bool,
    pub overwrite: bool,
}

/// The download of `wanted`, landing in `download_dir/<owner>/<name>/<file>`; refused
/// ([`IntakeError::HubName`]) with why a repo, revision or file name is refused.
pub fn new_download(
    client: &HubClient,
    wanted: Wanted<'_>,
    start: Start,
) -> Result<NewDownload, IntakeError> {
    hub_file(client, wanted, start).map_err(IntakeError::HubName)
}

fn hub_file(client: &HubClient, wanted: Wanted<'_>, start: Start) -> Result<NewDownload, String> {
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
    let file_name = file.rsplit('/').next().unwrap_or(file).to_owned();
    files::validate_relative_path(file)
        .and_then(|()| files::validate_file_name(&file_name))
        .map_err(|e| format!("file {file:?}: {e}"))?;
    let url = client
        .resolve_url(repo, commit.as_deref().unwrap_or(revision), file)
        .map_err(|e| e.to_string())?;
    Ok(NewDownload {
        url: url.to_string(),
        file_name,
        path: format!("{repo}/{file}"),
        sha256,
        start_paused: start.paused,
        overwrite: start.overwrite,
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

/// The revision asked for (`main` when none is given), checked.
pub fn revision(revision: Option<&str>) -> Result<&str, IntakeError> {
    let r = revision.unwrap_or("main");
    validate_revision(r).map_err(IntakeError::HubName)?;
    Ok(r)
}

/// `owner/name`, checked.
pub fn repo(owner: &str, name: &str) -> Result<String, IntakeError> {
    let repo = format!("{owner}/{name}");
    validate_repo(&repo).map_err(IntakeError::HubName)?;
    Ok(repo)
}

/// What `owner/name[:TAG]` names: the files llama.cpp's `-hf` would fetch for it.
pub struct Quantization<'a> {
    pub owner: &'a str,
    pub name: &'a str,
    /// The tag as given (any case); `None` or empty: llama.cpp's default pick.
    pub quantization: Option<&'a str>,
    pub revision: Option<&'a str>,
    /// Also the matching `mmproj` file, as llama.cpp fetches it (unless `--no-mmproj`).
    pub mmproj: bool,
    pub start: Start,
}

/// The new downloads of what `-hf owner/name[:TAG]` picks ([`hub::pick`]: a root
/// `preset.ini` alone, else the model's parts and its mmproj), each with the sha256 of
/// its LFS pointer, all pinned to the same commit. A tag that reaches no model is
/// refused with the tags the repo has.
pub async fn quantization(
    client: &HubClient,
    q: Quantization<'_>,
) -> Result<Vec<NewDownload>, IntakeError> {
    let repo = repo(q.owner, q.name)?;
    let revision = revision(q.revision)?;
    let tag = q.quantization.map(str::trim).filter(|t| !t.is_empty());
    if let Some(t) = tag {
        hub::pick::validate_tag(t).map_err(IntakeError::HubName)?;
    }
    let files = client.list_files(&repo, revision).await?;
    let picked = hub::pick::pick(&files, tag, q.mmproj);
    let wanted_files = picked.files();
    let Some(first) = wanted_files.first() else {
        let names = hub::pick::tags(&files, hub::MAX_QUANTIZATIONS);
        let has = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        let wanted = tag.map_or_else(|| "GGUF model".to_owned(), str::to_ascii_uppercase);
        return Err(IntakeError::NoQuantization { repo, wanted, has });
    };
    // One commit for every part: resolve the first file now. A gated repo without a
    // token cannot be resolved; its downloads then fail with `unauthorized` on start.
    let commit = match client.resolve(&repo, revision, first).await {
        Ok(r) => r.commit,
        Err(e) if !e.is_transient() => {
            tracing::info!(%repo, error = %e, "cannot pin the commit now; each part pins its own");
            None
        }
        Err(e) => return Err(e.into()),
    };
    wanted_files
        .iter()
        .map(|f| {
            let sha256 = files
                .iter()
                .find(|x| x.path == *f)
                .and_then(|x| x.sha256.clone());
            let wanted = Wanted {
                repo: &repo,
                file: f,
                revision,
                commit: commit.clone(),
                sha256,
            };
            new_download(client, wanted, q.start)
        })
        .collect()
}
