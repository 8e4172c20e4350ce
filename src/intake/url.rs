//! A file at a URL as a new download: the URL checked against the host allowlist, the
//! name taken from the URL when none is given, the digest checked.

use super::IntakeError;
use crate::files;
use crate::http::HostList;
use crate::queue::model::{NewDownload, Source};

/// Which hosts downloads may come from (`[downloads] allowed_hosts`; empty: any), so
/// that a service reachable by others cannot be turned against the local network.
/// Entries are `host` (any port) or `host:port` (see [`HostList`]), parsed once.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    hosts: HostList,
}

impl UrlPolicy {
    pub fn new(allowed_hosts: &[String]) -> UrlPolicy {
        UrlPolicy {
            hosts: HostList::new(allowed_hosts),
        }
    }

    /// Only absolute `http`/`https` URLs with a host, on the allowlist.
    pub fn check(&self, raw: &str) -> Result<url::Url, IntakeError> {
        let url =
            url::Url::parse(raw).map_err(|e| IntakeError::Url(format!("url {raw:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(IntakeError::Url(format!(
                "url scheme {:?} is refused: only http and https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(IntakeError::Url(format!("url {raw:?} has no host")));
        }
        if let Some(why) = self.hosts.refusal(&url) {
            return Err(IntakeError::Url(why));
        }
        Ok(url)
    }
}

/// A sha256 as a client gives it: 64 hex digits, returned in lower case.
pub fn parse_sha256(s: &str) -> Result<String, IntakeError> {
    crate::hub::sha256_hex(s).ok_or_else(|| IntakeError::Sha256(s.to_owned()))
}

/// A file at a URL, as a door asks for it.
#[derive(Debug, Default)]
pub struct UrlFile<'a> {
    /// The URL as given (checked here).
    pub url: &'a str,
    /// The name to give the file; `None`: the last segment of the URL's path.
    pub file_name: Option<String>,
    /// A folder inside `download_dir`, already checked (`/`-separated); `None`: the
    /// top of it.
    pub dir: Option<String>,
    /// The expected digest, already read by [`parse_sha256`].
    pub sha256: Option<String>,
    pub start_paused: bool,
    pub overwrite: bool,
    /// bytes/s; `Some(0)` or `None`: no cap of its own.
    pub speed_limit_bps: Option<u64>,
    pub connections: Option<usize>,
}

impl UrlFile<'_> {
    /// The download, landing in `download_dir/[dir/]<file_name>`.
    pub fn new_download(self, policy: &UrlPolicy) -> Result<NewDownload, IntakeError> {
        let url = policy.check(self.url)?;
        let file_name = match self.file_name {
            Some(name) => name,
            None => files::name_from_url(&url)
                .ok_or_else(|| IntakeError::NoFileName(self.url.to_owned()))?,
        };
        files::validate_file_name(&file_name).map_err(|e| IntakeError::FileName(e.to_string()))?;
        let path = match &self.dir {
            Some(dir) => format!("{dir}/{file_name}"),
            None => file_name.clone(),
        };
        Ok(NewDownload {
            url: url.to_string(),
            file_name,
            path,
            sha256: self.sha256,
            start_paused: self.start_paused,
            overwrite: self.overwrite,
            source: Source::Url,
            speed_limit_bps: self.speed_limit_bps.filter(|&n| n > 0),
            connections: self.connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_download_is_named_after_its_path_or_refused() {
        let policy = UrlPolicy::new(&["example.com".to_owned()]);
        let file = |url| UrlFile {
            url,
            ..UrlFile::default()
        };
        let d = file("https://example.com/a/model.gguf?x=1")
            .new_download(&policy)
            .unwrap();
        assert_eq!(
            (d.file_name.as_str(), d.path.as_str()),
            ("model.gguf", "model.gguf")
        );
        assert!(matches!(
            file("https://example.com/").new_download(&policy),
            Err(IntakeError::NoFileName(u)) if u == "https://example.com/"
        ));
        assert!(matches!(
            file("https://other.example/m.gguf").new_download(&policy),
            Err(IntakeError::Url(why)) if why.contains("not allowed")
        ));
        assert!(matches!(
            file("ftp://example.com/m.gguf").new_download(&policy),
            Err(IntakeError::Url(why)) if why.contains("only http and https")
        ));
        let d = UrlFile {
            url: "https://example.com/m.gguf",
            dir: Some("o/r".into()),
            speed_limit_bps: Some(0),
            ..UrlFile::default()
        }
        .new_download(&policy)
        .unwrap();
        assert_eq!((d.path.as_str(), d.speed_limit_bps), ("o/r/m.gguf", None));
    }

    #[test]
    fn a_digest_is_64_hex_digits_in_lower_case() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_sha256(&hex).unwrap(), "ab".repeat(32));
        assert!(matches!(parse_sha256("abc"), Err(IntakeError::Sha256(s)) if s == "abc"));
    }
}
