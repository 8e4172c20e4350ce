//! Model info, refs and trees: relayed from the upstream Hub when it answers (so that
//! `snapshot_download` sees every file, also those not fetched yet), else made from
//! what the library knows of the repo (a mirror that lost its uplink still serves).

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{checked, local, uplink, Mirror, MirrorError};
use crate::hub::{encode_segment, Relayed, MAX_RELAYED, MAX_RELAYED_REFS};

type Repo = web::Path<(String, String)>;
type AtRev = web::Path<(String, String, String)>;

/// `GET /hf/api/models/{owner}/{name}`: the default branch.
pub(super) async fn model_info(
    req: HttpRequest,
    path: Repo,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name) = path.into_inner();
    info(&req, &mirror, &owner, &name, None).await
}

/// `GET /hf/api/models/{owner}/{name}/revision/{rev}`.
pub(super) async fn model_info_at(
    req: HttpRequest,
    path: AtRev,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name, rev) = path.into_inner();
    info(&req, &mirror, &owner, &name, Some(&rev)).await
}

async fn info(
    req: &HttpRequest,
    mirror: &Mirror,
    owner: &str,
    name: &str,
    rev: Option<&str>,
) -> Result<HttpResponse, MirrorError> {
    let repo = checked(owner, name, None)?;
    rev.map(super::checked_revision).transpose()?;
    let rest = rev.map_or_else(String::new, |r| format!("revision/{}", encode_segment(r)));
    let files = mirror.library.repo_files(&repo);
    let upstream = ask(
        mirror,
        (&repo, &rest, req.query_string()),
        !files.is_empty(),
        MAX_RELAYED,
    )
    .await;
    if let Some(answer) = usable(upstream, !files.is_empty(), &repo)? {
        return relay(mirror, answer, None);
    }
    let info = local::model_info(&repo, rev.unwrap_or("main"), &files)
        .ok_or_else(|| MirrorError::RevisionNotFound(format!("{repo}: no such revision here")))?;
    Ok(HttpResponse::Ok().json(info))
}

/// `GET /hf/api/models/{owner}/{name}/refs`: the repo's branches and tags (llama.cpp's
/// `-hf` asks it first, and takes the commit of `main`).
pub(super) async fn refs(
    req: HttpRequest,
    path: Repo,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name) = path.into_inner();
    let repo = checked(&owner, &name, None)?;
    let files = mirror.library.repo_files(&repo);
    let ask_refs = (repo.as_str(), "refs", req.query_string());
    let upstream = ask(&mirror, ask_refs, !files.is_empty(), MAX_RELAYED_REFS).await;
    if let Some(answer) = usable(upstream, !files.is_empty(), &repo)? {
        if answer.status == 200 {
            if !super::heads::names_only_commits(&answer.body) {
                return Err(MirrorError::Upstream(
                    "the upstream Hub's refs name something that is no commit".into(),
                ));
            }
            mirror.heads.note(&repo, &answer.body);
        }
        return relay(&mirror, answer, None);
    }
    let refs = local::refs(&files)
        .ok_or_else(|| MirrorError::RepoNotFound(format!("{repo}: no commit of it here")))?;
    Ok(HttpResponse::Ok().json(refs))
}

/// `GET /hf/api/models/{owner}/{name}/tree/{rev}`.
pub(super) async fn tree_root(
    req: HttpRequest,
    path: AtRev,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name, rev) = path.into_inner();
    tree_of(&req, &mirror, (&owner, &name), &rev, "").await
}

/// `GET /hf/api/models/{owner}/{name}/tree/{rev}/{path}`.
pub(super) async fn tree(
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    mirror: web::Data<Mirror>,
) -> Result<HttpResponse, MirrorError> {
    let (owner, name, rev, dir) = path.into_inner();
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        // `tree/{rev}/` or `tree/{rev}/%2F`: not a folder's name (the root has its own route).
        return Err(MirrorError::EntryNotFound(format!(
            "{dir:?} is not a folder"
        )));
    }
    tree_of(&req, &mirror, (&owner, &name), &rev, dir).await
}

async fn tree_of(
    req: &HttpRequest,
    mirror: &Mirror,
    (owner, name): (&str, &str),
    rev: &str,
    dir: &str,
) -> Result<HttpResponse, MirrorError> {
    let repo = checked(owner, name, (!dir.is_empty()).then_some(dir))?;
    super::checked_revision(rev)?;
    let mut rest = format!("tree/{}", encode_segment(rev));
    for segment in dir.split('/').filter(|s| !s.is_empty()) {
        rest.push('/');
        rest.push_str(&encode_segment(segment));
    }
    let files = mirror.library.repo_files(&repo);
    let upstream = ask(
        mirror,
        (&repo, &rest, req.query_string()),
        !files.is_empty(),
        MAX_RELAYED,
    )
    .await;
    if let Some(answer) = usable(upstream, !files.is_empty(), &repo)? {
        let ours = format!("{}/hf", base_url(req, &mirror.trusted_proxies));
        let theirs = mirror
            .hub
            .endpoint()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        return relay(mirror, answer, Some((&theirs, &ours)));
    }
    let recursive =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("recursive").cloned())
            .is_some_and(|v| v == "true" || v == "1" || v == "True");
    let entries = local::tree(rev, dir, recursive, &files)
        .ok_or_else(|| MirrorError::EntryNotFound(format!("{repo}: no such folder here")))?;
    Ok(HttpResponse::Ok().json(entries))
}

/// The upstream's answer to `GET /api/models/{repo}/{rest}?{query}`, within `cap`.
/// When the library holds files of the repo (it can answer instead), the upstream gets
/// [`uplink::QUICK`], and none at all while it is remembered silent.
async fn ask(
    mirror: &Mirror,
    what: (&str, &str, &str),
    have_files: bool,
    cap: usize,
) -> Result<Relayed, crate::hub::HubError> {
    if have_files && mirror.uplink.recently_down() {
        return Err(crate::hub::HubError::Network(
            "the upstream Hub did not answer a moment ago".into(),
        ));
    }
    let answer = mirror
        .hub
        .relay_api(what, cap, have_files.then_some(uplink::QUICK))
        .await;
    mirror.uplink.note(&answer);
    answer
}

/// The upstream's answer when it is one to pass on: any answer below 500, except a
/// "not found" or "not allowed" for a repo the library holds files of (a private or
/// gone repo is still served from here). `None`: answer from the library.
fn usable(
    upstream: Result<Relayed, crate::hub::HubError>,
    have_files: bool,
    repo: &str,
) -> Result<Option<Relayed>, MirrorError> {
    match upstream {
        // What the Hub's API answers: 200 or an error of the client's. Anything else
        // (101, 204, 304, a redirect without its `Location`) is no answer to pass on.
        Ok(r) if r.status == 200 => Ok(Some(r)),
        Ok(r) if (400..500).contains(&r.status) && !have_files => Ok(Some(r)),
        Ok(r) if r.status < 400 && !have_files => Err(MirrorError::Upstream(format!(
            "the upstream Hub answered HTTP {}, no answer of its API",
            r.status
        ))),
        Ok(r) => {
            tracing::info!(%repo, status = r.status, "upstream Hub refused; answering from the library");
            Ok(None)
        }
        Err(e) if have_files => {
            tracing::info!(%repo, error = %e, "upstream Hub unreachable; answering from the library");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The upstream's answer, its pagination links pointed at the mirror. Always typed as
/// JSON, whatever the upstream said: these routes answer JSON, and a hostile Hub's
/// `text/html` would run its script on this service's own origin (where the page keeps
/// its token).
fn relay(
    mirror: &Mirror,
    answer: Relayed,
    rewrite: Option<(&str, &str)>,
) -> Result<HttpResponse, MirrorError> {
    let held = mirror.uplink.hold(answer.body.len()).ok_or_else(|| {
        MirrorError::Unavailable(
            "too many answers of the upstream are on their way to clients; try again".into(),
        )
    })?;
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    response.content_type(actix_web::mime::APPLICATION_JSON);
    // The Hub's error headers, on errors only and short: `huggingface_hub` shows the
    // message, and an upstream's must not grow or fill a success.
    let errors = [
        ("X-Error-Code", answer.error_code, MAX_ERROR_CODE),
        ("X-Error-Message", answer.error_message, MAX_ERROR_MESSAGE),
    ];
    for (name, value, most) in errors {
        if let Some(value) = value.filter(|_| answer.status >= 400) {
            response.insert_header((name, truncated(&value, most)));
        }
    }
    // Only the upstream's own links, pointed here (see `links`): any other would be
    // followed by the client with its token.
    let link = answer
        .link
        .zip(rewrite)
        .and_then(|(link, (theirs, ours))| super::links::kept(&link, theirs, ours));
    if let Some(link) = link {
        response.insert_header((actix_web::http::header::LINK, link));
    }
    // The share is given back when the body is done with (sent, or its client gone).
    let len = answer.body.len() as u64;
    let body =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(answer.body) })
            .chain(futures_util::stream::once(async move {
                drop(held);
                Ok(bytes::Bytes::new())
            }));
    Ok(response.body(actix_web::body::SizedStream::new(len, body)))
}

/// The most of an upstream's `X-Error-Code` and `X-Error-Message` passed on.
const MAX_ERROR_CODE: usize = 64;
const MAX_ERROR_MESSAGE: usize = 1024;

/// `text` cut to at most `most` bytes, at a character's boundary.
fn truncated(text: &str, most: usize) -> String {
    let mut end = text.len().min(most);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `scheme://host` as the client reached us: from `Host` (HTTP/1.1; the authority of
/// HTTP/2) and the connection's own scheme, or from `Forwarded`/`X-Forwarded-*` only
/// when the peer is one of `trusted_proxies` (any client can send those headers, and a
/// shared cache in front would hand its links to everyone).
fn base_url(req: &HttpRequest, trusted: &[std::net::IpAddr]) -> String {
    let peer = req.peer_addr().map(|a| a.ip().to_canonical());
    if peer.is_some_and(|ip| trusted.iter().any(|t| t.to_canonical() == ip)) {
        let info = req.connection_info();
        let scheme = info.scheme();
        if matches!(scheme, "http" | "https") && plain_authority(info.host()) {
            return format!("{scheme}://{}", info.host());
        }
        tracing::info!(
            scheme,
            host = info.host(),
            "mirror: forwarded headers that are no scheme and host; ignored"
        );
    }
    let config = req.app_config();
    let scheme = if config.secure() { "https" } else { "http" };
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .filter(|h| plain_authority(h))
        .unwrap_or_else(|| config.host().to_owned());
    format!("{scheme}://{host}")
}

/// A host with an optional port and nothing else (`box`, `10.0.0.2:8080`, `[::1]:80`):
/// what may stand in a `Link` header's URL. A `>`, `;`, `,`, `@`, `/` or space from a
/// client or a proxy's forwarded header would add links or change where one points.
fn plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
