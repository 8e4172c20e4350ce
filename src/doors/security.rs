//! Request guards of the contract's security section: API token (also for the LAN
//! mirror under `/hf`), foreign origins,
//! DNS rebinding and non-JSON bodies. Applied to every request before routing.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};

use crate::config::Config;
use crate::doors::error::ApiError;

/// What the guard needs to know about the service.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `None`: no token configured.
    pub token: Option<String>,
    /// Bound to a loopback address: only loopback `Host` names are accepted.
    pub loopback: bool,
    /// `[server] allowed_origins`: other origins whose pages may drive the service.
    pub allowed_origins: Vec<String>,
}

impl Guard {
    /// The guard of a listener of this config (the main bind and `[aria2] bind` alike);
    /// `loopback`: the listener's address is a loopback one.
    pub fn from_config(config: &Config, loopback: bool) -> Guard {
        Guard {
            token: Some(config.server.api_token.clone()).filter(|t| !t.is_empty()),
            loopback,
            allowed_origins: config.server.allowed_origins.clone(),
        }
    }

    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let host = header_str(req, header::HOST);
        if self.loopback {
            if let Some(h) = host {
                if !is_loopback_host(h) {
                    return Err(ApiError::Forbidden(format!(
                        "Host {h:?} is not a loopback name; this service answers only to localhost"
                    )));
                }
            }
        }
        // Decide on the path the router will see: decoded, with repeated slashes
        // folded. Matching the raw path let `/%61pi/...` walk past the token check.
        let path = normalized_path(req.path());
        let is_api = path.starts_with("/api/") || path == "/api";
        // /metrics tells who uses the service and how: behind the token too (Prometheus
        // sends it with `authorization: {credentials: ...}`).
        // The LAN mirror: its clients send the token as their HF_TOKEN.
        let needs_token =
            is_api || path == "/metrics" || crate::doors::mirror::is_mirror_path(&path);
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        // Every `/jsonrpc` request may change state (aria2's GET carries calls too), and
        // its preflight is answered only for the origins that may drive it.
        let is_rpc = path == "/jsonrpc";
        if let Some(origin) = header_str(req, header::ORIGIN) {
            if (changes_state || upgrade || is_rpc) && !self.origin_allowed(origin, host) {
                return Err(ApiError::Forbidden(format!(
                    "requests from origin {origin:?} are refused: only this service's own page \
                     and server.allowed_origins may drive it"
                )));
            }
        }
        // A GET of `/jsonrpc` can carry a call, and a page can make a browser send one
        // from a `<script>` or `<img>` without any `Origin`: refuse what the browser
        // says came from another site, unless from a listed origin.
        if is_rpc && *req.method() == Method::GET && !upgrade {
            let site = header_str(req, header::HeaderName::from_static("sec-fetch-site"));
            let listed = header_str(req, header::ORIGIN).is_some_and(|o| self.is_listed(o));
            if site.is_some_and(|s| !matches!(s, "same-origin" | "none")) && !listed {
                return Err(ApiError::Forbidden(
                    "a GET of /jsonrpc from another site's page is refused".into(),
                ));
            }
        }
        if needs_token {
            if let Some(token) = &self.token {
                if !has_token(req, token) {
                    return Err(ApiError::Unauthorized);
                }
            }
        }
        if is_api && has_body(req) {
            let json = header_str(req, header::CONTENT_TYPE).is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        Ok(())
    }
}

impl Guard {
    /// The service's own origin, or one listed in `allowed_origins`.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        same_origin(origin, host) || self.is_listed(origin)
    }

    /// Listed in `allowed_origins` (compared without a trailing `/`, case aside).
    pub fn is_listed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// The middleware: refuses a request before it reaches a handler.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(g) = req.app_data::<web::Data<Guard>>() {
        if let Err(e) = g.check(req.request()) {
            // The mirror's clients are HuggingFace tools: they read the Hub's error form.
            if crate::doors::mirror::is_mirror_path(&normalized_path(req.path())) {
                return Err(crate::doors::mirror::MirrorError::from(e).into());
            }
            return Err(e.into());
        }
    }
    next.call(req).await
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn has_body(req: &HttpRequest) -> bool {
    let length = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING)
}

fn has_token(req: &HttpRequest, token: &str) -> bool {
    if let Some(auth) = header_str(req, header::AUTHORIZATION) {
        // The scheme is case-insensitive (RFC 7235 §2.1): `bearer <token>` is as good.
        if let Some((scheme, given)) = auth.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return constant_time_eq(given.trim().as_bytes(), token.as_bytes());
            }
        }
    }
    // Browsers cannot set headers on a websocket: the contract allows `?token=` there.
    if normalized_path(req.path()) == "/api/events" {
        if let Ok(q) =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        {
            if let Some(given) = q.get("token") {
                return constant_time_eq(given.as_bytes(), token.as_bytes());
            }
        }
    }
    false
}

/// Compares without an early exit, so that timing does not reveal a prefix match.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
}

/// The percent-decoded path with runs of `/` folded into one.
fn normalized_path(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let origin = origin.trim_end_matches('/');
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The root span of each request as `TracingLogger` logs it, with the values of
/// `token` and `access_token` in its query redacted: the websocket's `?token=` (and a
/// client's `?token=` on any route) would otherwise be in the log in full.
pub struct RedactedSpans;

impl tracing_actix_web::RootSpanBuilder for RedactedSpans {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let route = request.match_pattern().unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %redacted_target(request.path(), request.query_string()),
            http.client_ip = %request.connection_info().peer_addr().unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// `path?query` with the value of every `token`/`access_token` parameter replaced.
fn redacted_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            // Named as the guard reads it: percent-decoded (`%74oken` is `token`).
            let name = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("token") || name.eq_ignore_ascii_case("access_token") {
                let raw = pair.split_once('=').map_or(pair, |(n, _)| n);
                format!("{raw}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:8080",
            "app.localhost",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1",
            "localhost.evil.example",
            "[::2]",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn constant_time_compare_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn paths_are_judged_decoded() {
        assert_eq!(normalized_path("/%61pi/downloads"), "/api/downloads");
        assert_eq!(normalized_path("//api//events"), "/api/events");
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
    }

    #[test]
    fn tokens_in_a_query_are_redacted_in_the_log() {
        assert_eq!(redacted_target("/hf/x", ""), "/hf/x");
        assert_eq!(
            redacted_target("/api/events", "token=s3cret&a=1"),
            "/api/events?token=REDACTED&a=1"
        );
        assert_eq!(
            redacted_target("/hf/x", "%74oken=s3cret&ACCESS_TOKEN=s3cret&tokens=kept"),
            "/hf/x?%74oken=REDACTED&ACCESS_TOKEN=REDACTED&tokens=kept"
        );
        assert_eq!(redacted_target("/x", "token"), "/x?token=REDACTED");
    }
}
