//! `GET /api/models/{repo}/revision/{rev}?blobs=true`: a repo at a revision in one
//! request (its commit and every file with its size and LFS sha256), which is what an
//! update check needs per repo.

use serde::Deserialize;

use super::{check, encode, quant, read_body, HubClient, HubError, RepoFile};

/// A repo as the Hub has it at one revision.
#[derive(Debug, Clone)]
pub struct RepoRevision {
    /// The commit the revision points to.
    pub commit: String,
    /// Gated (`"auto"`/`"manual"`): its files need a token that accepted the licence.
    pub gated: bool,
    pub files: Vec<RepoFile>,
}

#[derive(Deserialize)]
struct ApiInfo {
    sha: String,
    #[serde(default)]
    gated: serde_json::Value,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    lfs: Option<ApiSiblingLfs>,
}

#[derive(Deserialize)]
struct ApiSiblingLfs {
    sha256: String,
    size: Option<u64>,
}

impl HubClient {
    /// The commit of `repo` at `revision` and its files, in one request.
    pub async fn repo_revision(
        &self,
        repo: &str,
        revision: &str,
    ) -> Result<RepoRevision, HubError> {
        super::validate_repo(repo).map_err(HubError::Invalid)?;
        let mut url = self.url(&format!("/api/models/{repo}/revision/{}", encode(revision)))?;
        url.query_pairs_mut().append_pair("blobs", "true");
        let resp = check(self.send(reqwest::Method::GET, url).await?, repo).await?;
        let body = read_body(resp, crate::http::CAP_MODEL_INFO).await?;
        let info: ApiInfo = serde_json::from_slice(&body)
            .map_err(|e| HubError::Invalid(format!("model info of {repo}: {e}")))?;
        if !super::names::is_commit(&info.sha) {
            return Err(HubError::Invalid(format!(
                "{repo}: {:?} is not a commit",
                info.sha
            )));
        }
        let files = info
            .siblings
            .into_iter()
            .map(|s| RepoFile {
                quantization: quant::quantization(&s.rfilename),
                size: s.lfs.as_ref().and_then(|l| l.size).or(s.size).unwrap_or(0),
                sha256: s.lfs.and_then(|l| super::names::sha256_hex(&l.sha256)),
                path: s.rfilename,
            })
            .collect();
        Ok(RepoRevision {
            commit: info.sha.to_ascii_lowercase(),
            gated: !matches!(
                info.gated,
                serde_json::Value::Bool(false) | serde_json::Value::Null
            ),
            files,
        })
    }
}
