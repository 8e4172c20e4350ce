//! What tells one version of a file from another: its ETag and Last-Modified.

use reqwest::header::{self, HeaderMap};

/// ETag and Last-Modified of a response: what `If-Range` and change detection use.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::engine) struct Validators {
    pub(in crate::engine) etag: Option<String>,
    pub(in crate::engine) last_modified: Option<String>,
}

impl Validators {
    pub(in crate::engine) fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    /// True when both sides carry the same kind of validator and it differs.
    pub(in crate::engine) fn changed_to(&self, now: &Validators) -> bool {
        self.tells(now).unwrap_or(false)
    }

    /// Whether the file changed, when the two can tell: both carry an ETag (it
    /// decides), else both a Last-Modified; `None` when they share neither.
    pub(in crate::engine) fn tells(&self, now: &Validators) -> Option<bool> {
        if let (Some(a), Some(b)) = (&self.etag, &now.etag) {
            return Some(a != b);
        }
        match (&self.last_modified, &now.last_modified) {
            (Some(a), Some(b)) => Some(a != b),
            _ => None,
        }
    }

    /// What goes in `If-Range`: it wants a strong ETag; a weak one cannot be used,
    /// Last-Modified can.
    pub(in crate::engine) fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(tag) if !tag.starts_with("W/") => Some(tag),
            _ => self.last_modified.as_deref(),
        }
    }

    /// The validator a log line or a notice shows.
    pub(in crate::engine) fn describe(&self) -> &str {
        self.etag
            .as_deref()
            .or(self.last_modified.as_deref())
            .unwrap_or("none")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag(tag: &str) -> Validators {
        Validators {
            etag: Some(tag.into()),
            last_modified: None,
        }
    }

    fn modified(at: &str) -> Validators {
        Validators {
            etag: None,
            last_modified: Some(at.into()),
        }
    }

    #[test]
    fn validators_detect_change_only_when_comparable() {
        let a = etag("\"a\"");
        assert!(a.changed_to(&etag("\"b\"")));
        assert!(!a.changed_to(&a.clone()));
        assert!(!a.changed_to(&Validators::default()));
        assert!(modified("Mon").changed_to(&modified("Tue")));
        assert!(!a.changed_to(&modified("Tue")), "nothing to compare");
    }

    #[test]
    fn if_range_wants_a_strong_etag_or_a_date() {
        assert_eq!(etag("\"a\"").if_range(), Some("\"a\""));
        assert_eq!(etag("W/\"a\"").if_range(), None);
        let both = Validators {
            etag: Some("W/\"a\"".into()),
            last_modified: Some("Mon".into()),
        };
        assert_eq!(both.if_range(), Some("Mon"));
        assert_eq!(Validators::default().if_range(), None);
    }
}
