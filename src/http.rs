//! What every part that talks HTTP reads the same way: a reqwest error as one line of
//! text, and how long a server asks us to stay away (`Retry-After`, or the IETF
//! `RateLimit` fields when it names no explicit wait).
//!
//! Both the transfer engine and the Hub client use it, so neither imports the other
//! for these, and a server's wait is honoured the same way on every path.

use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap};

/// `[downloads] allowed_hosts`: where downloads, their redirects and the Hub's file
/// links may go. An entry is `host` (every port) or `host:port` (that port only;
/// `[v6]:port` for an IPv6 address); empty, any host.
#[derive(Clone, Debug, Default)]
pub struct HostList {
    entries: Vec<(String, Option<u16>)>,
}

impl HostList {
    pub fn new(entries: &[String]) -> HostList {
        let entries = entries
            .iter()
            .map(|e| {
                let e = e.trim().to_ascii_lowercase();
                match e.rsplit_once(':') {
                    // "host:port" or "[v6]:port"; a bare IPv6 address has colons too.
                    Some((host, port))
                        if !port.is_empty()
                            && port.bytes().all(|b| b.is_ascii_digit())
                            && (!host.contains(':') || host.ends_with(']')) =>
                    {
                        (host.to_owned(), port.parse().ok())
                    }
                    _ => (e, None),
                }
            })
            .map(|(host, port)| {
                let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                    Some(inner) => inner.to_owned(),
                    None => host,
                };
                (host, port)
            })
            .collect();
        HostList { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `url`'s host (and port, where the entry names one) is on the list.
    pub fn allows(&self, url: &url::Url) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => return false,
        };
        let port = url.port_or_known_default();
        self.entries
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port))
    }

    /// Why `url` may not be used, or `None` when it may: only http and https, on the list.
    pub fn refusal(&self, url: &url::Url) -> Option<String> {
        if !matches!(url.scheme(), "http" | "https") {
            // Without its query: a presigned link's signature does not belong in logs.
            let mut shown = url.clone();
            shown.set_query(None);
            return Some(format!(
                "{}: another scheme ({}:); only http and https are followed",
                shown_url(shown.as_str()),
                url.scheme()
            ));
        }
        if !self.allows(url) {
            let port = url
                .port_or_known_default()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            return Some(format!(
                "host {}{port} is not allowed: not in downloads.allowed_hosts",
                url.host_str().unwrap_or("")
            ));
        }
        None
    }
}

/// A body that could not be read whole within its cap.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// More than the cap: nothing of it is parsed.
    #[error("an answer of more than {cap} bytes")]
    TooLarge { cap: usize },
    #[error("{0}")]
    Network(String),
}

/// The most a search answer of the Hub may hold (100 models with their tags).
pub const CAP_SEARCH: usize = 8 * 1024 * 1024;
/// The most one page of a repo's tree may hold (the Hub pages at 1000 entries).
pub const CAP_TREE_PAGE: usize = 16 * 1024 * 1024;
/// The most all the pages of one tree may hold together.
pub const CAP_TREE_TOTAL: usize = 64 * 1024 * 1024;
/// The most a model info (with every file and its LFS digest) may hold: a repo with
/// tens of thousands of files is a few MiB.
pub const CAP_MODEL_INFO: usize = 32 * 1024 * 1024;

/// How many whole bodies [`read_capped`] reads at once.
const WHOLE_BODIES_AT_ONCE: usize = 4;

/// Reads a whole body, refusing it as soon as it announces or sends more than `cap`
/// bytes: a hostile server's endless body costs at most `cap` of memory. Every body
/// the service reads whole (the Hub's API answers, the mirror's relay) comes through
/// here.
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<bytes::Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge { cap });
    }
    // Each body is capped, and so is their sum: a few are read at a time, so that a
    // hostile upstream asked by many clients at once costs a few caps, not one each.
    static WHOLE_BODIES: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(WHOLE_BODIES_AT_ONCE);
    let _turn = WHOLE_BODIES
        .acquire()
        .await
        .map_err(|_| BodyError::Network("shutting down".into()))?;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Network(describe(&e)))?
    {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Flattens a reqwest error with its sources: "error sending request" alone says nothing.
/// A URL as it may be shown (API, frames, aria2, logs): any user name and password in it
/// become `***`. The record keeps them, since resuming needs them; whoever can read the API
/// of a LAN box must not learn a password for another host from it.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Both setters fail only for URLs that cannot have credentials, which these have.
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

pub fn describe(error: &reqwest::Error) -> String {
    let mut msg = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// How long the server asks us to wait before coming back: `Retry-After` when it is
/// there (it is the explicit answer), else the reset of an exhausted `RateLimit` quota.
pub fn retry_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| rate_limit_wait(headers))
}

/// `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait until an exhausted quota resets, from the fields of
/// draft-ietf-httpapi-ratelimit-headers in any of the forms servers send:
///
/// - `RateLimit: "default";r=0;t=30` (drafts 08 and later): the longest `t` among the
///   quotas with nothing remaining (`r=0`); a quota without `t` waits out its window, the
///   `w` of the policy of that name in `RateLimit-Policy: "default";q=100;w=60`.
/// - `RateLimit: limit=100, remaining=0, reset=30` (draft 07).
/// - `RateLimit-Reset: 30` with `RateLimit-Remaining: 0` (drafts 06 and earlier).
///
/// A quota that is not exhausted is no reason to wait, whatever its reset. An older
/// form without any `remaining` is taken at its word: the server sent it with a refusal.
pub fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let secs = match text("ratelimit") {
        Some(v) if v.contains('=') && !v.contains(';') => draft07_wait(&v),
        Some(v) => structured_wait(&v, text("ratelimit-policy").as_deref()),
        None => {
            let reset = text("ratelimit-reset")?;
            let remaining = text("ratelimit-remaining");
            match remaining.as_deref().map(first_number) {
                Some(Some(r)) if r > 0 => None,
                _ => first_number(&reset),
            }
        }
    }?;
    Some(Duration::from_secs(secs))
}

/// `limit=100, remaining=0, reset=30`: the reset, unless quota remains.
fn draft07_wait(value: &str) -> Option<u64> {
    let param = |key: &str| {
        value.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    match param("remaining") {
        Some(r) if r > 0 => None,
        _ => param("reset"),
    }
}

/// `"a";r=0;t=30, "b";r=5;t=9` with the policies beside it: see [`rate_limit_wait`].
fn structured_wait(value: &str, policy: Option<&str>) -> Option<u64> {
    // A policy is named by any of its bare members: the Hub writes
    // `"fixed window";"api";q=500;w=300` for the quota `"api"`.
    let window = |name: &str| {
        policy?
            .split(',')
            .map(parse_item)
            .find(|(names, _)| names.contains(&name))
            .and_then(|(_, params)| param(&params, "w"))
    };
    value
        .split(',')
        .map(parse_item)
        .filter(|(_, params)| param(params, "r") == Some(0))
        .filter_map(|(names, params)| {
            param(&params, "t").or_else(|| names.first().and_then(|n| window(n)))
        })
        .max()
}

/// One member of a structured-field list: its bare members (the name first; quotes and
/// surrounding whitespace gone) and its `key=value` parameters.
fn parse_item(item: &str) -> (Vec<&str>, Vec<(&str, &str)>) {
    let (mut names, mut params) = (Vec::new(), Vec::new());
    for part in item.split(';') {
        match part.split_once('=') {
            Some((k, v)) => params.push((k.trim(), v.trim())),
            None => names.push(part.trim().trim_matches('"')),
        }
    }
    (names, params)
}

fn param(params: &[(&str, &str)], key: &str) -> Option<u64> {
    params
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The first integer of a list (`30` of `30, 60`): a server with several quotas lists
/// the one closest to its limit first.
fn first_number(value: &str) -> Option<u64> {
    value.split([',', ';']).next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: Fields) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// Header fields of one case of a table.
    type Fields = &'static [(&'static str, &'static str)];

    #[test]
    fn rate_limit_forms() {
        let secs = |s| Some(Duration::from_secs(s));
        let cases: &[(Fields, Option<Duration>)] = &[
            (&[("ratelimit", "\"default\";r=0;t=30")], secs(30)),
            (&[("ratelimit", "\"api\";r=0;t=1")], secs(1)),
            (&[("ratelimit", "\"default\";r=5;t=30")], None),
            (
                &[("ratelimit", "\"burst\";r=0;t=5, \"day\";r=0;t=900")],
                secs(900),
            ),
            (
                &[("ratelimit", "\"burst\";r=3;t=5, \"day\";r=0;t=900")],
                secs(900),
            ),
            (
                &[
                    ("ratelimit", "\"default\";r=0"),
                    (
                        "ratelimit-policy",
                        "\"other\";q=1;w=5, \"default\";q=100;w=60",
                    ),
                ],
                secs(60),
            ),
            (
                &[
                    ("ratelimit", "\"api\";r=0"),
                    ("ratelimit-policy", "\"fixed window\";\"api\";q=500;w=300"),
                ],
                secs(300),
            ),
            (&[("ratelimit", "\"default\";r=0")], None),
            (
                &[("ratelimit", "limit=100, remaining=0, reset=30")],
                secs(30),
            ),
            (&[("ratelimit", "limit=100, remaining=9, reset=30")], None),
            (&[("ratelimit-reset", "30")], secs(30)),
            (
                &[("ratelimit-reset", "30"), ("ratelimit-remaining", "0")],
                secs(30),
            ),
            (
                &[("ratelimit-reset", "30"), ("ratelimit-remaining", "4")],
                None,
            ),
            (&[("ratelimit-reset", "soon")], None),
            (&[("ratelimit-policy", "\"default\";q=100;w=60")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(rate_limit_wait(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn retry_after_wins_over_rate_limit() {
        let now = SystemTime::UNIX_EPOCH;
        let h = headers(&[("retry-after", "3"), ("ratelimit", "\"d\";r=0;t=30")]);
        assert_eq!(retry_wait(&h, now), Some(Duration::from_secs(3)));
        let h = headers(&[("retry-after", "later"), ("ratelimit", "\"d\";r=0;t=30")]);
        assert_eq!(retry_wait(&h, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_wait(&HeaderMap::new(), now), None);
    }

    /// Random header values: no panic.
    #[test]
    fn never_panics() {
        let mut rng = fastrand::Rng::with_seed(0x7a7e);
        for _ in 0..5_000 {
            let noise: String = (0..rng.usize(0..32)).map(|_| rng.char(' '..='~')).collect();
            let _ = parse_retry_after(&noise, SystemTime::UNIX_EPOCH);
            for name in ["ratelimit", "ratelimit-reset", "ratelimit-policy"] {
                let mut h = HeaderMap::new();
                if let Ok(v) = noise.parse() {
                    h.insert(name, v);
                }
                let _ = rate_limit_wait(&h);
            }
        }
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(shown_url("https://u:p%40ss@h/x.bin"), "https://***@h/x.bin");
        assert_eq!(shown_url("https://ghp_token@h/x"), "https://***@h/x");
        assert_eq!(shown_url("https://:only-pass@h/x"), "https://***@h/x");
        assert_eq!(shown_url("https://h/x?a=b"), "https://h/x?a=b");
        assert_eq!(shown_url("not a url"), "not a url");
    }
}
