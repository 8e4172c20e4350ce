//! What the Hub says of a file kept in Xet storage, and the token that opens it.
//!
//! `HEAD …/resolve/…` of such a file names its Xet hash (`X-Xet-Hash`) and the route
//! that hands out a read token (`Link: <…/xet-read-token/{rev}>; rel="xet-auth"`, or
//! `X-Xet-Refresh-Route` from older Hubs), exactly as huggingface_hub's
//! `parse_xet_file_data_from_response` reads them. The token route answers the CAS's
//! URL, the token and its expiry in `X-Xet-Cas-Url`, `X-Xet-Access-Token` and
//! `X-Xet-Token-Expiration` (huggingface_hub reads only those), and the same in a JSON
//! body `{accessToken, exp, casUrl}` (read when the headers are missing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::{check, read_body, HubClient, HubError};

/// Where a Xet-backed file's token comes from, and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XetLink {
    /// The file's Xet hash: 64 lower-case hex digits.
    pub hash: String,
    /// The Hub route that hands out a read token for the file's revision.
    pub token_route: url::Url,
}

/// A read token of the CAS.
#[derive(Clone)]
pub struct XetToken {
    pub access_token: String,
    pub expires: SystemTime,
    /// The CAS's base URL (`…/v1/reconstructions/{hash}` hangs under it).
    pub cas_url: url::Url,
}

impl std::fmt::Debug for XetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: it ends up in logs.
        write!(
            f,
            "XetToken(cas {}, expires {:?})",
            self.cas_url, self.expires
        )
    }
}

/// The token route's answer is a few hundred bytes.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// The Xet facts of a resolve answer, when the file is Xet-backed and they make sense;
/// `base` is the URL the answer came from (a relative route is taken against it).
pub(super) fn link_from(headers: &HeaderMap, base: &url::Url) -> Option<XetLink> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hash = text("x-xet-hash")?.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        tracing::warn!(hash = %hash.chars().take(80).collect::<String>(), "the Hub named a Xet hash that is none; using the plain link");
        return None;
    }
    let route = headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| link_with_rel(v, "xet-auth"))
        .or_else(|| text("x-xet-refresh-route").map(str::to_owned))?;
    let token_route = base.join(route.trim()).ok()?;
    Some(XetLink { hash, token_route })
}

/// The target of the `Link` entry with `rel="{rel}"` in one `Link` header value.
fn link_with_rel(value: &str, rel: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let wanted = params
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("rel="))
            .any(|r| r.trim_matches('"') == rel);
        wanted.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    access_token: String,
    exp: u64,
    cas_url: String,
}

impl HubClient {
    /// A read token for the file `link` names. The route must be on the Hub's own host:
    /// the Hub token goes there and nowhere else.
    pub async fn xet_token(&self, link: &XetLink) -> Result<XetToken, HubError> {
        if !self.is_hub_host(&link.token_route) {
            return Err(HubError::Invalid(format!(
                "the Xet token route {} is not on the Hub's host",
                crate::http::shown_url(link.token_route.as_str())
            )));
        }
        let resp = self
            .send(reqwest::Method::GET, link.token_route.clone())
            .await?;
        let resp = check(resp, "the Xet token route").await?;
        let headers = resp.headers().clone();
        let body = read_body(resp, MAX_TOKEN_ANSWER).await?;
        token_from(&headers, &body)
    }
}

/// The token from the headers, else from the JSON body.
fn token_from(headers: &HeaderMap, body: &[u8]) -> Result<XetToken, HubError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (token, exp, cas) = match (
        text("x-xet-access-token"),
        text("x-xet-token-expiration"),
        text("x-xet-cas-url"),
    ) {
        (Some(t), Some(e), Some(c)) => (
            t.to_owned(),
            e.trim()
                .parse::<u64>()
                .map_err(|_| HubError::Invalid(format!("Xet token expiry {e:?}")))?,
            c.to_owned(),
        ),
        _ => {
            let b: TokenBody = serde_json::from_slice(body)
                .map_err(|e| HubError::Invalid(format!("the Xet token answer: {e}")))?;
            (b.access_token, b.exp, b.cas_url)
        }
    };
    let cas_url = url::Url::parse(cas.trim())
        .map_err(|e| HubError::Invalid(format!("the Xet CAS URL {cas:?}: {e}")))?;
    if !matches!(cas_url.scheme(), "http" | "https") {
        return Err(HubError::Invalid(format!(
            "the Xet CAS URL {cas:?} is not http(s)"
        )));
    }
    if !cas_url.username().is_empty() || cas_url.password().is_some() {
        // Credentials of the Hub's choosing would go along with our token.
        return Err(HubError::Invalid(
            "the Xet CAS URL carries credentials".into(),
        ));
    }
    // A header value holds visible ASCII only: anything else fails every request as a
    // "network" error, retried until the retries run out, instead of falling back now.
    if token.is_empty() || token.len() > 16 * 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HubError::Invalid("the Xet token is not a token".into()));
    }
    Ok(XetToken {
        access_token: token,
        expires: UNIX_EPOCH + Duration::from_secs(exp.min(u64::from(u32::MAX) * 4)),
        cas_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_link_header_names_the_token_route() {
        let base = url::Url::parse("https://hf.co/a/b/resolve/main/x.gguf").unwrap();
        let hash = "ab".repeat(32);
        let h = headers(&[
            ("x-xet-hash", &hash),
            (
                "link",
                "<https://hf.co/api/models/a/b/xet-read-token/abc>; rel=\"xet-auth\", <https://cas/v1/reconstructions/ab>; rel=\"xet-reconstruction-info\"",
            ),
        ]);
        let link = link_from(&h, &base).unwrap();
        assert_eq!(link.hash, hash);
        assert_eq!(
            link.token_route.as_str(),
            "https://hf.co/api/models/a/b/xet-read-token/abc"
        );
        // Older Hubs: the refresh-route header, relative.
        let h = headers(&[
            ("x-xet-hash", &hash),
            ("x-xet-refresh-route", "/api/models/a/b/xet-read-token/abc"),
        ]);
        assert_eq!(
            link_from(&h, &base).unwrap().token_route.as_str(),
            "https://hf.co/api/models/a/b/xet-read-token/abc"
        );
        // A hash that is none, or no route: not Xet.
        let h = headers(&[("x-xet-hash", "../../etc"), ("x-xet-refresh-route", "/r")]);
        assert!(link_from(&h, &base).is_none());
        assert!(link_from(&headers(&[("x-xet-hash", &hash)]), &base).is_none());
    }

    #[test]
    fn the_token_comes_from_headers_or_json() {
        let h = headers(&[
            ("x-xet-access-token", "tok"),
            ("x-xet-token-expiration", "1900000000"),
            ("x-xet-cas-url", "https://cas.example"),
        ]);
        let t = token_from(&h, b"").unwrap();
        assert_eq!(t.access_token, "tok");
        assert_eq!(t.cas_url.as_str(), "https://cas.example/");
        let t = token_from(
            &HeaderMap::new(),
            br#"{"accessToken":"j","exp":5,"casUrl":"http://c:1"}"#,
        )
        .unwrap();
        assert_eq!(t.access_token, "j");
        assert_eq!(t.expires, UNIX_EPOCH + Duration::from_secs(5));
        assert!(token_from(&HeaderMap::new(), b"{}").is_err());
        assert!(token_from(
            &HeaderMap::new(),
            br#"{"accessToken":"j","exp":5,"casUrl":"file:///etc"}"#
        )
        .is_err());
        assert!(format!("{t:?}").contains("http://c:1") && !format!("{t:?}").contains('j'));
        for bad in [
            r#"{"accessToken":"j\r\nX-Evil: 1","exp":5,"casUrl":"http://c:1"}"#,
            r#"{"accessToken":"jé","exp":5,"casUrl":"http://c:1"}"#,
            r#"{"accessToken":"a b","exp":5,"casUrl":"http://c:1"}"#,
            r#"{"accessToken":"j","exp":5,"casUrl":"http://user:pw@c:1"}"#,
            r#"{"accessToken":"j","exp":-1,"casUrl":"http://c:1"}"#,
        ] {
            assert!(
                token_from(&HeaderMap::new(), bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        // An absurd expiry is kept within what SystemTime holds.
        let far = token_from(
            &HeaderMap::new(),
            br#"{"accessToken":"j","exp":18446744073709551615,"casUrl":"http://c:1"}"#,
        )
        .unwrap();
        assert!(far.expires > UNIX_EPOCH);
    }
}
