//! The upstream's answers to API requests, passed on as they came by the LAN mirror.

use super::{HubClient, HubError};

/// The answer of the upstream Hub to an API request, kept for the mirror to pass on.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub status: u16,
    pub content_type: Option<String>,
    /// `Link` (the tree's pagination), still pointing at the upstream.
    pub link: Option<String>,
    /// `X-Error-Code`, which `huggingface_hub` turns into its typed errors.
    pub error_code: Option<String>,
    /// `X-Error-Message`, what it shows of them.
    pub error_message: Option<String>,
    pub body: bytes::Bytes,
}

/// The most an API answer relayed by the mirror may hold (a model info of a repo with
/// tens of thousands of files is a few MiB).
pub const MAX_RELAYED: usize = crate::http::CAP_MODEL_INFO;
/// The most a relayed `refs` may hold: a real one is a few KiB (a branch or tag is a
/// hundred bytes), and each answer is held in memory until its client has it.
pub const MAX_RELAYED_REFS: usize = 1024 * 1024;

impl HubClient {
    /// `GET {endpoint}/api/models/{repo}/{rest}?{query}` with the service's own token
    /// (never a client's), for the mirror. `rest` is already escaped; the body is held to
    /// `cap`, and the whole request to `timeout` when given (else the client's 60 s).
    pub async fn relay_api(
        &self,
        (repo, rest, query): (&str, &str, &str),
        cap: usize,
        timeout: Option<std::time::Duration>,
    ) -> Result<Relayed, HubError> {
        let path = if rest.is_empty() {
            format!("/api/models/{repo}")
        } else {
            format!("/api/models/{repo}/{rest}")
        };
        let mut url = self.url(&path)?;
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        let resp = self.send_within(reqwest::Method::GET, url, timeout).await?;
        let text = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, link) = (text("content-type"), text("link"));
        let (error_code, error_message) = (text("x-error-code"), text("x-error-message"));
        let status = resp.status().as_u16();
        let body = super::read_body(resp, cap.min(MAX_RELAYED)).await?;
        Ok(Relayed {
            status,
            content_type,
            link,
            error_code,
            error_message,
            body,
        })
    }
}

impl HubClient {
    /// `GET url` of a file's bytes (the link `resolve` handed out), `range` as
    /// `[start, end)`, for the mirror to pass on without storing. The token goes to the
    /// Hub's own host only; no redirect is followed here (the caller checks each hop).
    pub async fn get_file(
        &self,
        url: &url::Url,
        range: Option<(u64, u64)>,
    ) -> Result<reqwest::Response, HubError> {
        // The client's 60 s is for API answers; a file takes as long as it takes.
        let mut req = self
            .http
            .get(url.clone())
            .timeout(std::time::Duration::from_secs(24 * 3600));
        if let Some(auth) = self.auth_for(url) {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some((start, end)) = range {
            req = req.header(
                reqwest::header::RANGE,
                format!("bytes={start}-{}", end.saturating_sub(1)),
            );
        }
        req.send()
            .await
            .map_err(|e| HubError::Network(crate::http::describe(&e)))
    }
}
