//! The LAN mirror against a hostile or broken upstream Hub (red team, round five): its
//! links, bytes, silences and odd answers never reach a client as this service's word.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hub::{Down, HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Server, Upstream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";

/// A server answering each request with `answer(request head)`'s raw bytes, and
/// keeping every request head it saw.
fn hostile(
    name: &str,
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (log, answer) = (seen.clone(), Arc::new(answer));
    let server = Server::start(name, move |mut stream| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            log.lock().unwrap().push(head.clone());
            let _ = stream.write_all(answer(&head).as_bytes()).await;
        }
    });
    (server, seen)
}

fn json_answer(extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Red team five, HIGH: a hostile upstream's tree answer carried
/// `Link: <http://elsewhere/steal>; rel="next"`, relayed as is; `huggingface_hub`'s
/// `list_repo_tree` followed it with its `HF_TOKEN` (this service's `api_token`).
/// Only the upstream's own links are passed on (pointed here).
#[actix_web::test]
async fn a_hostile_upstreams_link_elsewhere_never_gets_the_clients_token() {
    let (evil, stolen) = hostile("evil", |_| json_answer("", "[]"));
    let evil_url = format!("http://{}/steal", evil.addr());
    let (hub, _) = hostile("link-hub", move |head| {
        let own = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let host = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            })
            .unwrap_or("")
            .trim()
            .to_owned();
        let body = r#"[{"type":"file","oid":"0123456789abcdef0123456789abcdef01234567","size":3,"path":"a.gguf"}]"#;
        // Page two (the upstream's own link, kept) is the last.
        if own.contains("cursor=2") {
            return json_answer("", &body.replace("a.gguf", "b.gguf"));
        }
        let links = format!(
            "Link: <{evil_url}>; rel=\"next\", <http://{host}{own}&cursor=2>; rel=\"next\"\r\n"
        );
        json_answer(&links, body)
    });
    let endpoint = format!("http://{}", hub.addr());
    let mut svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.server.api_token = "lan-secret".into();
    })
    .await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", "Bearer lan-secret".parse().unwrap());
    svc.client = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    let resp = svc
        .client
        .get(svc.url("/hf/api/models/o/leak/tree/main?recursive=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        !link.contains("/steal"),
        "a link elsewhere was relayed: {link}"
    );
    assert!(link.contains(&svc.url("/hf/api/models/")), "{link}");

    let got = crate::mirror::client(&svc, Some("lan-secret"), &["tree", "o/leak"]).await;
    let reached = stolen.lock().unwrap().clone();
    assert!(
        reached.is_empty(),
        "the client was sent elsewhere: {reached:?}"
    );
    assert_eq!(got["paths"], json!(["a.gguf", "b.gguf"]), "{got}");
}

/// A Hub with `REPO`, its CDN, and the service using that Hub.
async fn setup(
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> (Arc<Upstream>, HubEmu, TestService) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        tweak(c);
    })
    .await;
    (cdn, hub, svc)
}

/// Red team five: the library holds a file at c1, a client asks it at c2, the
/// upstream's `HEAD` names c2's sha256 but its CDN sends other bytes. The relay (the
/// path is another version's) sent them all under that sha256; now it checks them as
/// they pass and cuts the answer before its end.
#[actix_web::test]
async fn a_relay_of_another_version_never_completes_with_other_bytes() {
    let (cdn, hub, svc) = setup(|_| {}).await;
    let file = "Tiny-Q4_K_M.gguf";
    let (v1, v2) = (content(700_000, 81), content(700_000, 82));
    hub.put_file(REPO, file, v1.clone());
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": file } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let list = || async { svc.get("/api/library").await.1 };
    let path = format!("{REPO}/{file}");
    common::wait::library_file_where(LONG, list, &path, "hashed", |f| f["sha256"].is_string())
        .await;
    let c2 = hub.put_file(REPO, file, v2.clone());
    let url = svc.url(&format!("/hf/{REPO}/resolve/{c2}/{file}"));

    let resp = svc.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-repo-commit"], c2.as_str());
    let body = resp
        .bytes()
        .await
        .expect("the whole relay of the right bytes");
    assert!(body == v2, "the relay sent other bytes than c2's");
    let part = |from: usize| {
        let (svc, url) = (&svc, &url);
        async move {
            let resp = svc
                .client
                .get(url)
                .header("range", format!("bytes={from}-"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206);
            resp.bytes().await.map(|b| b.to_vec())
        }
    };
    let got = part(500_000).await.expect("a part of the right bytes");
    assert!(got == v2[500_000..], "a relayed part is not c2's");

    let mut other = v2.clone();
    other[300_000..300_016].copy_from_slice(b"not c2's bytes!!");
    cdn.replace_content(&hub.cdn_path(REPO, &c2, file), other.clone());
    let resp = svc.client.get(&url).send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&v2)));
    match resp.bytes().await {
        Ok(body) => assert!(
            body.len() < other.len(),
            "all of another file's bytes were sent under ETag {etag}"
        ),
        Err(e) => assert!(!e.is_status(), "{e}"),
    }
    // A client resuming after the cut (as `huggingface_hub` does) gets no rest of it.
    if let Ok(rest) = part(500_000).await {
        assert!(
            rest.len() < other.len() - 500_000,
            "the rest of another file's bytes was sent as c2's"
        );
    }
    // The real client, resuming as it does, ends in an error, never with the file.
    let got = crate::mirror::client(&svc, None, &["download", REPO, file, &c2]).await;
    assert!(got["error"].is_string(), "{got}");
    let (_, downloads) = svc.get("/api/downloads").await;
    assert_eq!(
        downloads["downloads"].as_array().map(Vec::len),
        Some(1),
        "the relay stored nothing: {downloads}"
    );
}

/// Red team five: a black-holed upstream held every answer the library could give for
/// the client's 60 s (llama.cpp's `refs` then `tree`: two minutes). The upstream gets a
/// few seconds when the library can answer, and after its silence none for a while.
#[actix_web::test]
async fn a_silent_upstream_holds_up_library_answers_a_few_seconds_at_most() {
    let (_cdn, hub, mut svc) = setup(|_| {}).await;
    let file = "Tiny-Q4_K_M.gguf";
    hub.put_file(REPO, file, content(200_000, 91));
    let commit = hub.commit(REPO);
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": file } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let list = || async { svc.get("/api/library").await.1 };
    let path = format!("{REPO}/{file}");
    common::wait::library_file_where(LONG, list, &path, "listed", |_| true).await;
    hub.set_down(Down::Hanging);
    // Without the fix each request waits 60 s; give up well before.
    svc.client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let ask = |route: String| {
        let svc = &svc;
        async move {
            let started = std::time::Instant::now();
            let resp = svc.client.get(svc.url(&route)).send().await;
            let resp = resp.unwrap_or_else(|e| panic!("{route}: {e}"));
            assert_eq!(resp.status(), 200, "{route}");
            let body: serde_json::Value = resp.json().await.unwrap();
            (started.elapsed(), body)
        }
    };
    let (first, refs) = ask(format!("/hf/api/models/{REPO}/refs")).await;
    assert_eq!(
        refs["branches"][0]["targetCommit"],
        commit.as_str(),
        "{refs}"
    );
    assert!(first < Duration::from_secs(10), "refs took {first:?}");
    let (then, tree) = ask(format!(
        "/hf/api/models/{REPO}/tree/{commit}?recursive=true"
    ))
    .await;
    assert_eq!(tree[0]["path"], file, "{tree}");
    assert!(
        then < Duration::from_secs(2),
        "the tree waited again: {then:?}"
    );
    let (then, info) = ask(format!("/hf/api/models/{REPO}")).await;
    assert_eq!(info["sha"], commit.as_str(), "{info}");
    assert!(
        then < Duration::from_secs(2),
        "the info waited again: {then:?}"
    );
    // A branch the library's copy was not asked by: served from the library at once.
    let started = std::time::Instant::now();
    let resp = svc
        .client
        .head(svc.url(&format!("/hf/{REPO}/resolve/dev/{file}")))
        .send()
        .await
        .expect("a HEAD of the library's copy");
    assert_eq!(resp.status(), 200);
    let then = started.elapsed();
    assert!(then < Duration::from_secs(2), "the file waited: {then:?}");
}

/// Red team five: every relayed answer could hold 32 MiB, `refs` too (a real one is a
/// few KiB). A `refs` over 1 MiB is refused; a tree of 2 MiB is still relayed.
#[actix_web::test]
async fn a_huge_refs_is_refused_where_a_tree_of_that_size_passes() {
    let big = format!(
        "[{}\"x\"]",
        "\"padding-padding\",".repeat(2 * 1024 * 1024 / 18)
    );
    let answer = big.clone();
    let (hub, _) = hostile("big-hub", move |_| json_answer("", &answer));
    let endpoint = format!("http://{}", hub.addr());
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let refs = svc
        .client
        .get(svc.url("/hf/api/models/o/big/refs"))
        .send()
        .await
        .unwrap();
    assert!(refs.status().as_u16() >= 500, "{}", refs.status());
    let body = refs.bytes().await.unwrap();
    assert!(body.len() < 4096, "{} bytes of refs relayed", body.len());
    let tree = svc
        .client
        .get(svc.url("/hf/api/models/o/big/tree/main"))
        .send()
        .await
        .unwrap();
    assert_eq!(tree.status(), 200);
    assert_eq!(tree.bytes().await.unwrap().len(), big.len());
}

/// Red team five: `refs` named `main` = c1, then `main` moved upstream to c2; a client
/// pinning c1 had its miss recorded as `main` (and later served as `main` from disk).
/// Once the upstream names another commit for `main`, c1 is recorded as c1.
#[actix_web::test]
async fn a_pinned_old_commit_is_not_recorded_as_main_once_main_moved() {
    let (_cdn, hub, svc) = setup(|_| {}).await;
    let file = "Tiny-Q8_0.gguf";
    hub.put_file(REPO, file, content(100_000, 95));
    let c1 = hub.commit(REPO);
    let (s, _) = svc.get(&format!("/hf/api/models/{REPO}/refs")).await;
    assert_eq!(s, 200);
    let c2 = hub.put_file(REPO, "README.md", b"moved".to_vec());
    let url = |rev: &str| svc.url(&format!("/hf/{REPO}/resolve/{rev}/{file}"));
    let head = svc.client.head(url("main")).send().await.unwrap();
    assert_eq!(head.headers()["x-repo-commit"], c2.as_str());
    let resp = svc.client.get(url(&c1)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let (_, list) = svc.get("/api/downloads").await;
    let source = &list["downloads"][0]["source"];
    assert_eq!(source["commit"], c1.as_str(), "{list}");
    assert_eq!(source["revision"], c1.as_str(), "recorded as main: {list}");
}

/// Red team five, minor: a hostile upstream's odd answers are not passed on as the
/// mirror's: a commit that is no commit (on a file's `HEAD`, in `refs`), statuses the
/// Hub's API never answers, `X-Error-Message` on a success or at any length.
#[actix_web::test]
async fn odd_answers_of_a_hostile_upstream_are_not_passed_on() {
    let (hub, _) = hostile("odd-hub", |head| {
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let status = |code: &str| {
            format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        };
        match target.as_str() {
            t if t.contains("/resolve/") => "HTTP/1.1 200 OK\r\nX-Repo-Commit: ../../x\r\nX-Linked-Size: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\n".to_owned(),
            t if t.ends_with("/bad/refs") => json_answer("", r#"{"branches":[{"name":"main","ref":"refs/heads/main","targetCommit":"../../x"}],"tags":[],"converts":[]}"#),
            t if t.contains("/s204") => status("204 No Content"),
            t if t.contains("/s304") => status("304 Not Modified"),
            t if t.contains("/msg200") => json_answer("X-Error-Message: all is well, trust me\r\n", "{}"),
            _ => {
                let message = "m".repeat(100_000);
                format!("HTTP/1.1 404 Not Found\r\nX-Error-Code: RepoNotFound\r\nX-Error-Message: {message}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
            }
        }
    });
    let endpoint = format!("http://{}", hub.addr());
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let head = svc
        .client
        .head(svc.url("/hf/o/n/resolve/main/a.gguf"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        502,
        "{:?}",
        head.headers().get("x-repo-commit")
    );
    let get = |path: &'static str| {
        let svc = &svc;
        async move {
            let resp = svc.client.get(svc.url(path)).send().await.unwrap();
            let message = resp
                .headers()
                .get("x-error-message")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            (resp.status().as_u16(), message)
        }
    };
    assert_eq!(get("/hf/api/models/o/bad/refs").await.0, 502);
    assert_eq!(get("/hf/api/models/o/s204").await.0, 502);
    assert_eq!(get("/hf/api/models/o/s304").await.0, 502);
    assert_eq!(get("/hf/api/models/o/msg200").await, (200, None));
    let (status, message) = get("/hf/api/models/o/gone").await;
    assert_eq!(status, 404);
    let message = message.unwrap_or_default();
    assert!(
        !message.is_empty() && message.len() <= 1024,
        "{} bytes of X-Error-Message",
        message.len()
    );
}

/// The `Authorization` scheme is case-insensitive (RFC 7235): `bearer <token>` opens
/// the mirror as `Bearer <token>` does.
#[actix_web::test]
async fn a_lower_case_bearer_scheme_is_accepted() {
    let svc = TestService::start(|c| c.server.api_token = "lan-secret".into()).await;
    for (auth, want) in [
        ("bearer lan-secret", 200),
        ("BEARER lan-secret", 200),
        ("bearer wrong", 401),
        ("Basic lan-secret", 401),
    ] {
        let resp = svc
            .client
            .get(svc.url("/api/downloads"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{auth}");
    }
}
