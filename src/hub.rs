//! A client of the HuggingFace Hub's public HTTP API: model search, repo trees, and
//! `resolve` (which pins a revision to its commit and hands out the CDN link).
//!
//! The token goes to the Hub's own host only: the client never follows redirects by
//! itself, so a presigned CDN link is fetched by the engine without credentials.

mod info;
mod listing;
mod names;
pub mod pick;
pub mod quant;
mod relay;
mod trees;
mod xet;

pub use info::RepoRevision;
pub use listing::{quantizations, MAX_QUANTIZATIONS};
pub use names::{
    is_commit, is_git_oid, is_hub_shaped_token, sha256_hex, validate_repo, validate_revision,
};

use std::time::{Duration, SystemTime};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

pub use relay::{Relayed, MAX_RELAYED, MAX_RELAYED_REFS};
pub use xet::{XetLink, XetToken};

/// Characters escaped in one path segment of a Hub URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What went wrong talking to the Hub.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("the Hub asks to slow down (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the Hub answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the Hub: {0}")]
    Network(String),
    #[error("unexpected answer from the Hub: {0}")]
    Invalid(String),
}

impl HubError {
    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::RateLimited { .. } | HubError::Network(_) => true,
            HubError::Status { status, .. } => *status == 408 || *status >= 500,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HubError::RateLimited { retry_after } | HubError::Status { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A model in search results, in the contract's shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelSummary {
    pub id: String,
    pub downloads: u64,
    pub likes: u64,
    pub last_modified: Option<String>,
    pub tags: Vec<String>,
    pub gated: bool,
}

/// A file of a repo, with its sha256 when it is stored with LFS.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub quantization: Option<String>,
}

/// One quantization as `llama-server -hf owner/name:NAME` reaches it: its model files
/// (several for a split model), their total size, and the mmproj fetched alongside.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Quantization {
    /// The tag (`""` for the default pick of a file no tag reaches, or a preset).
    pub name: String,
    pub files: Vec<String>,
    pub size: u64,
    /// The multimodal projector llama.cpp fetches with it.
    pub mmproj: Option<String>,
    /// What `owner/name` without a tag picks.
    pub default: bool,
}

/// What `resolve` tells about one file.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The commit the revision points to now.
    pub commit: Option<String>,
    /// sha256 of an LFS file (`X-Linked-Etag`).
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// The validator the Hub gave (`X-Linked-Etag`, else `ETag`), quotes included: the
    /// git blob id of a small file that is not stored with LFS.
    pub etag: Option<String>,
    /// Where the bytes are: the CDN link of a redirect, or the resolve URL itself.
    pub location: url::Url,
    /// The file is kept in Xet storage: its hash and token route (the `location` is
    /// then the plain HTTP bridge to the same bytes).
    pub xet: Option<XetLink>,
}

/// A cheap-to-clone client of one Hub endpoint.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    endpoint: url::Url,
    token: Option<String>,
    trees: trees::Trees,
    /// `[hub] xet`: Xet-backed files are fetched from Xet storage.
    xet: bool,
}

#[derive(Deserialize)]
struct ApiModel {
    id: String,
    #[serde(default)]
    downloads: u64,
    #[serde(default)]
    likes: u64,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    gated: serde_json::Value,
}

#[derive(Deserialize)]
struct ApiTreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    oid: String,
    size: Option<u64>,
}

impl HubClient {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<HubClient, HubError> {
        let endpoint = url::Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| HubError::Invalid(format!("hub endpoint {endpoint:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("model-manager/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| HubError::Network(e.to_string()))?;
        Ok(HubClient {
            http,
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            trees: trees::Trees::default(),
            xet: true,
        })
    }

    /// Whether Xet-backed files are fetched from Xet storage (`[hub] xet`).
    pub fn with_xet(mut self, xet: bool) -> HubClient {
        self.xet = xet;
        self
    }

    pub fn xet_enabled(&self) -> bool {
        self.xet
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// True when `url` is on the Hub's own host and port: only there does the token go.
    pub fn is_hub_host(&self, url: &url::Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    /// The bearer header for a request to `url`, when it is the Hub's.
    pub fn auth_for(&self, url: &url::Url) -> Option<String> {
        match &self.token {
            Some(t) if self.is_hub_host(url) => Some(format!("Bearer {t}")),
            _ => None,
        }
    }

    /// `{endpoint}{path}` for a `path` that starts with `/`: the endpoint's own path is
    /// kept (`http://box:8080/hf`, a chained mirror; an Artifactory remote), where
    /// `Url::join` of an absolute path would drop it.
    fn url(&self, path: &str) -> Result<url::Url, HubError> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}{path}"))
            .map_err(|e| HubError::Invalid(format!("{path}: {e}")))
    }

    /// One request to `url` (a GET or a HEAD), with the token when `url` is the Hub's.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::Response, HubError> {
        self.send_within(method, url, None).await
    }

    /// [`Self::send`] within `timeout` (headers and body) instead of the client's 60 s.
    async fn send_within(
        &self,
        method: reqwest::Method,
        url: url::Url,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, HubError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(auth) = self.auth_for(&url) {
            req = req.header(header::AUTHORIZATION, auth);
        }
        req.send()
            .await
            .map_err(|e| HubError::Network(crate::http::describe(&e)))
    }

    /// Models matching `query`, most downloaded first, GGUF repos ahead of others
    /// (or only GGUF repos with `gguf_only`).
    pub async fn search(
        &self,
        query: &str,
        limit: usize,
        gguf_only: bool,
    ) -> Result<Vec<ModelSummary>, HubError> {
        let mut url = self.url("/api/models")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("search", query)
                .append_pair("sort", "downloads")
                .append_pair("direction", "-1")
                .append_pair("limit", &limit.to_string());
            for field in ["downloads", "likes", "lastModified", "tags", "gated"] {
                q.append_pair("expand[]", field);
            }
            if gguf_only {
                q.append_pair("filter", "gguf");
            }
        }
        let resp = check(self.send(reqwest::Method::GET, url).await?, "models").await?;
        let body = read_body(resp, crate::http::CAP_SEARCH).await?;
        let models: Vec<ApiModel> = serde_json::from_slice(&body)
            .map_err(|e| HubError::Invalid(format!("search results: {e}")))?;
        let mut out: Vec<ModelSummary> = models
            .into_iter()
            .map(|m| ModelSummary {
                gated: !matches!(
                    m.gated,
                    serde_json::Value::Bool(false) | serde_json::Value::Null
                ),
                id: m.id,
                downloads: m.downloads,
                likes: m.likes,
                last_modified: m.last_modified,
                tags: m.tags,
            })
            .collect();
        // Stable: keeps the Hub's download order within each group.
        out.sort_by_key(|m| !m.tags.iter().any(|t| t.eq_ignore_ascii_case("gguf")));
        Ok(out)
    }

    /// Every file of `repo` at `revision`, following the tree's pagination.
    pub async fn list_files(&self, repo: &str, revision: &str) -> Result<Vec<RepoFile>, HubError> {
        let mut next = Some({
            let mut u = self.url(&format!("/api/models/{repo}/tree/{}", encode(revision)))?;
            u.query_pairs_mut().append_pair("recursive", "true");
            u
        });
        let mut files = Vec::new();
        let (mut pages, mut read) = (0, 0);
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 1000 {
                return Err(HubError::Invalid("more than 1000 pages of files".into()));
            }
            let resp = check(self.send(reqwest::Method::GET, url).await?, repo).await?;
            next = next_link(resp.headers()).and_then(|l| self.endpoint.join(&l).ok());
            if next.as_ref().is_some_and(|u| !self.is_hub_host(u)) {
                return Err(HubError::Invalid(
                    "pagination points away from the Hub".into(),
                ));
            }
            let cap = crate::http::CAP_TREE_PAGE.min(crate::http::CAP_TREE_TOTAL - read);
            let body = read_body(resp, cap).await?;
            read += body.len();
            let entries: Vec<ApiTreeEntry> = serde_json::from_slice(&body)
                .map_err(|e| HubError::Invalid(format!("tree of {repo}: {e}")))?;
            for e in entries.into_iter().filter(|e| e.kind == "file") {
                // An LFS oid that is no hash is a lie about the file: llama.cpp does not
                // list such an entry (`is_valid_oid`: 40 or 64 hex digits), nor do we.
                if !e.lfs.as_ref().is_none_or(|l| names::is_git_oid(&l.oid)) {
                    continue;
                }
                files.push(RepoFile {
                    quantization: quant::quantization(&e.path),
                    size: e.lfs.as_ref().and_then(|l| l.size).unwrap_or(e.size),
                    sha256: e.lfs.and_then(|l| names::sha256_hex(&l.oid)),
                    path: e.path,
                });
            }
        }
        // Kept in the tree's order: llama.cpp's pick takes the first match in it.
        self.trees.remember(repo, &files);
        Ok(files)
    }

    /// The files of `repo` as the Hub last listed them to this client (any revision),
    /// in the tree's order.
    pub fn known_tree(&self, repo: &str) -> Option<std::sync::Arc<Vec<RepoFile>>> {
        self.trees.get(repo)
    }

    /// `HEAD /{repo}/resolve/{revision}/{file}`: the commit, digest, size and where
    /// the bytes are, without following the redirect.
    pub async fn resolve(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<Resolved, HubError> {
        self.resolve_within((repo, revision, file), None).await
    }

    /// [`Self::resolve`] within `timeout` instead of the client's 60 s.
    pub async fn resolve_within(
        &self,
        (repo, revision, file): (&str, &str, &str),
        timeout: Option<Duration>,
    ) -> Result<Resolved, HubError> {
        let url = self.resolve_url(repo, revision, file)?;
        let resp = self
            .send_within(reqwest::Method::HEAD, url.clone(), timeout)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let resp = check(resp, repo).await?;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let xet = xet::link_from(&headers, &url);
        let location = match status {
            300..=399 => {
                let loc = text("location")
                    .ok_or_else(|| HubError::Invalid("redirect without Location".into()))?;
                url.join(&loc)
                    .map_err(|e| HubError::Invalid(format!("Location {loc:?}: {e}")))?
            }
            _ => url,
        };
        drop(resp);
        let sha256 = text("x-linked-etag")
            .and_then(|e| names::sha256_hex(e.trim_start_matches("W/").trim_matches('"')));
        // A commit names folders and is sent to clients: 40 hex digits or refused.
        let commit = text("x-repo-commit");
        if let Some(c) = commit.as_deref() {
            if !names::is_commit(c) {
                return Err(HubError::Invalid(format!(
                    "the Hub named a commit that is none: {:?}",
                    c.chars().take(80).collect::<String>()
                )));
            }
        }
        Ok(Resolved {
            commit,
            sha256,
            // Never a redirect's Content-Length: the Hub says the real size in
            // X-Linked-Size; a small file answered directly has its own length.
            size: text("x-linked-size")
                .or_else(|| (status < 300).then(|| text("content-length")).flatten())
                .and_then(|s| s.parse().ok()),
            etag: text("x-linked-etag").or_else(|| text("etag")),
            xet,
            location,
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, each segment escaped.
    pub fn resolve_url(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<url::Url, HubError> {
        let file: Vec<String> = file.split('/').map(encode).collect();
        self.url(&format!(
            "/{repo}/resolve/{}/{}",
            encode(revision),
            file.join("/")
        ))
    }
}

/// One path segment escaped as the Hub's URLs escape it.
pub fn encode_segment(segment: &str) -> String {
    encode(segment)
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `Link: <url>; rel="next"`
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// A whole answer of the Hub, read within `cap` (see [`crate::http::read_capped`]).
async fn read_body(resp: reqwest::Response, cap: usize) -> Result<bytes::Bytes, HubError> {
    crate::http::read_capped(resp, cap)
        .await
        .map_err(|e| match e {
            crate::http::BodyError::TooLarge { .. } => HubError::Invalid(e.to_string()),
            crate::http::BodyError::Network(m) => HubError::Network(m),
        })
}

/// Turns a Hub error status into a [`HubError`] with a message a user can act on.
async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, HubError> {
    let status = resp.status().as_u16();
    if status < 400 {
        return Ok(resp);
    }
    let headers = resp.headers();
    let code = headers
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let retry_after = crate::http::retry_wait(headers, SystemTime::now());
    Err(match (status, code.as_str()) {
        (_, "GatedRepo") => HubError::Unauthorized(format!(
            "{what} is a gated model: accept its licence on the Hub and set HF_TOKEN (or [hub] token)"
        )),
        (401, "RepoNotFound") | (404, "RepoNotFound") => HubError::NotFound(format!(
            "{what}: repository not found (or private: set HF_TOKEN to a token that can read it)"
        )),
        (404, "EntryNotFound") => HubError::NotFound(format!("{what}: no such file in the repository")),
        (404, "RevisionNotFound") => HubError::NotFound(format!("{what}: no such revision")),
        (401 | 403, _) => HubError::Unauthorized(format!(
            "{what}: the Hub refused access (HTTP {status}): set HF_TOKEN to a token that can read it"
        )),
        (404 | 410, _) => HubError::NotFound(format!("{what}: not found on the Hub")),
        (429, _) => HubError::RateLimited { retry_after },
        _ => HubError::Status { status, retry_after },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            "<https://hf.co/api/models/a/b/tree/main?cursor=xyz>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://hf.co/api/models/a/b/tree/main?cursor=xyz")
        );
    }

    #[test]
    fn token_only_to_the_hub_host() {
        let c = HubClient::new("https://huggingface.co", Some("t".into())).unwrap();
        assert!(c
            .auth_for(&url::Url::parse("https://huggingface.co/x").unwrap())
            .is_some());
        assert!(c
            .auth_for(&url::Url::parse("https://cdn-lfs.hf.co/x").unwrap())
            .is_none());
        assert!(c
            .auth_for(&url::Url::parse("http://huggingface.co/x").unwrap())
            .is_none());
    }
}
