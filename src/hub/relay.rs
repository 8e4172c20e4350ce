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
pub const MAX_RELAYED: usize = 32 * 1024 * 1024;

impl HubClient {
    /// `GET {endpoint}/api/models/{repo}/{rest}?{query}` with the service's own token
    /// (never a client's), for the mirror. `rest` is already escaped.
    pub async fn relay_api(
        &self,
        repo: &str,
        rest: &str,
        query: &str,
    ) -> Result<Relayed, HubError> {
        let path = if rest.is_empty() {
            format!("/api/models/{repo}")
        } else {
            format!("/api/models/{repo}/{rest}")
        };
        let mut url = self.url(&path)?;
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        let mut resp = self.get(url, reqwest::Method::GET).await?;
        let text = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, link) = (text("content-type"), text("link"));
        let (error_code, error_message) = (text("x-error-code"), text("x-error-message"));
        let status = resp.status().as_u16();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RELAYED as u64)
        {
            return Err(HubError::Invalid(format!(
                "an answer of more than {MAX_RELAYED} bytes"
            )));
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HubError::Network(crate::http::describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_RELAYED {
                return Err(HubError::Invalid(format!(
                    "an answer of more than {MAX_RELAYED} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Relayed {
            status,
            content_type,
            link,
            error_code,
            error_message,
            body: body.freeze(),
        })
    }
}
