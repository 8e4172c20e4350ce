//! Checks of what clients send: URLs (and the host allowlist), digests, revisions.

use crate::doors::error::ApiError;

/// Which hosts downloads may come from (`[downloads] allowed_hosts`; empty: any), so
/// that a service reachable by others cannot be turned against the local network.
/// Entries are `host` (any port) or `host:port` (see [`crate::http::HostList`]).
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    pub allowed_hosts: Vec<String>,
}

impl UrlPolicy {
    pub fn allows(&self, url: &url::Url) -> bool {
        crate::http::HostList::new(&self.allowed_hosts).allows(url)
    }

    /// [`validate_url`], plus the host allowlist.
    pub fn check(&self, raw: &str) -> Result<url::Url, ApiError> {
        let url = validate_url(raw)?;
        if let Some(why) = crate::http::HostList::new(&self.allowed_hosts).refusal(&url) {
            return Err(ApiError::Unprocessable(why));
        }
        Ok(url)
    }
}

/// Only absolute `http`/`https` URLs with a host.
pub fn validate_url(raw: &str) -> Result<url::Url, ApiError> {
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::Unprocessable(format!("url {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::Unprocessable(format!(
            "url scheme {:?} is refused: only http and https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::Unprocessable(format!("url {raw:?} has no host")));
    }
    Ok(url)
}

/// 64 hex digits, returned in lower case.
pub fn validate_sha256(s: &str) -> Result<String, ApiError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::BadRequest(format!(
            "sha256 {s:?} is not 64 hex digits"
        )))
    }
}

/// A branch, tag or commit (`main` when none is given), as [`crate::hub::validate_revision`]
/// checks it.
pub fn validate_revision(revision: Option<&str>) -> Result<&str, ApiError> {
    let r = revision.unwrap_or("main");
    crate::hub::validate_revision(r).map_err(ApiError::Unprocessable)?;
    Ok(r)
}
