//! The Hub's headers of a file, on every answer of the mirror that carries one.

use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpResponse;

/// The Hub's headers of one file.
pub(super) struct FileHeaders {
    /// Quoted, as the Hub sends it: `"<sha256>"` for an LFS file.
    pub etag: String,
    /// The sha256, when known (`X-Linked-Etag`).
    pub sha256: Option<String>,
    pub commit: Option<String>,
    pub size: u64,
}

impl FileHeaders {
    pub(super) fn apply(&self, response: &mut HttpResponse) {
        let h = response.headers_mut();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::HeaderName::from_static(name), v);
            }
        };
        put("etag", self.etag.clone());
        if let Some(sha) = &self.sha256 {
            put("x-linked-etag", format!("\"{sha}\""));
        }
        if let Some(commit) = &self.commit {
            put("x-repo-commit", commit.clone());
        }
        put("x-linked-size", self.size.to_string());
        put("accept-ranges", "bytes".to_owned());
    }
}
