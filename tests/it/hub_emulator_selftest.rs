//! Checks the emulated HuggingFace Hub (`tests/it/common/hub.rs`) with a plain reqwest client that
//! does not follow redirects, so that Hub-client tests built on it can trust what it does.

// Test scenarios read top to bottom as one story; splitting them would hide it.
#![allow(clippy::too_many_lines)]

use crate::common;

use std::sync::Arc;

use common::hub::*;
use common::upstream::{Behavior, Upstream};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LINK, LOCATION, RANGE};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

fn start() -> (HubEmu, Arc<Upstream>) {
    let cdn = Arc::new(Upstream::start());
    (HubEmu::start(cdn.clone()), cdn)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761)).rotate_right(13) as u8)
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn get_json(url: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

fn ids(models: &Value) -> Vec<&str> {
    models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn search_filters_sorts_and_limits() {
    let (hub, _cdn) = start();
    let repo = |id: &str, downloads: u64, tags: &[&str], gated: bool| {
        hub.add_repo(
            id,
            RepoOptions {
                gated_token: gated.then(|| "tok".to_string()),
                downloads,
                likes: downloads / 10,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
        )
    };
    repo(
        "TheBloke/TinyLlama-1.1B-GGUF",
        500,
        &["gguf", "llama"],
        false,
    );
    repo("acme/tinyllama-fp16", 900, &["safetensors"], false);
    repo("other/TINYLLAMA-q", 100, &["gguf"], true);
    repo("x/unrelated", 10_000, &["gguf"], false);
    let base = format!("{}/api/models", hub.endpoint());

    // What the service's client sends, expand[] and all.
    let url = format!(
        "{base}?search=tinyllama&sort=downloads&direction=-1&limit=10\
         &expand%5B%5D=downloads&expand%5B%5D=tags&full=true"
    );
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let models: Value = resp.json().await.unwrap();
    assert_eq!(
        ids(&models),
        [
            "acme/tinyllama-fp16",
            "TheBloke/TinyLlama-1.1B-GGUF",
            "other/TINYLLAMA-q"
        ]
    );
    let m = &models[1];
    assert_eq!(m["modelId"], "TheBloke/TinyLlama-1.1B-GGUF");
    assert_eq!(m["downloads"], 500);
    assert_eq!(m["likes"], 50);
    assert_eq!(m["tags"], serde_json::json!(["gguf", "llama"]));
    assert_eq!(m["gated"], false);
    assert_eq!(m["private"], false);
    assert_eq!(m["lastModified"], LAST_MODIFIED);
    assert_eq!(m["_id"].as_str().unwrap().len(), 24);
    assert_eq!(models[2]["gated"], "manual");

    let (_, models) = get_json(&format!("{base}?search=TinyLlama&limit=2")).await;
    assert_eq!(
        ids(&models),
        ["acme/tinyllama-fp16", "TheBloke/TinyLlama-1.1B-GGUF"]
    );
    let (_, models) = get_json(&format!(
        "{base}?search=tinyllama&filter=gguf&sort=downloads&direction=-1"
    ))
    .await;
    assert_eq!(
        ids(&models),
        ["TheBloke/TinyLlama-1.1B-GGUF", "other/TINYLLAMA-q"]
    );
    let (_, models) = get_json(&format!("{base}?filter=gguf&limit=1")).await;
    assert_eq!(ids(&models), ["x/unrelated"]);
    let (_, models) = get_json(&format!("{base}?search=nothing-like-it")).await;
    assert_eq!(models, serde_json::json!([]));

    let reqs = hub.requests();
    assert!(reqs
        .iter()
        .all(|r| r.path == "/api/models" && r.status == 200));
    assert!(reqs[0]
        .query
        .as_deref()
        .unwrap()
        .contains("expand%5B%5D=tags"));
}

#[tokio::test]
async fn tree_paginates_with_link_headers() {
    let (hub, _cdn) = start();
    hub.add_repo("o/m", RepoOptions::default());
    let c0 = hub.commit("o/m");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("README.md", b"# m\n".to_vec()),
        ("config.json", b"{}".to_vec()),
        ("m-Q4_K_M.gguf", pattern(1_000, 1)),
        ("sub/a.gguf", pattern(2_000, 2)),
        ("sub/deep/b.bin", pattern(3_000, 3)),
    ];
    for (path, data) in &files {
        hub.put_file("o/m", path, data.clone());
    }
    assert_eq!(hub.commits("o/m").len(), 6);
    hub.set_page_size(3);

    // Recursive: 5 files and 2 directories, over 3 pages.
    let mut url = Some(format!(
        "{}/api/models/o/m/tree/main?recursive=true",
        hub.endpoint()
    ));
    let mut entries = Vec::new();
    let mut pages = 0;
    while let Some(u) = url.take() {
        pages += 1;
        let resp = client().get(&u).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        if let Some(link) = header(&resp, "link") {
            let prefix = format!(
                "<{}/api/models/o/m/tree/main?recursive=true&cursor=",
                hub.endpoint()
            );
            assert!(link.starts_with(&prefix), "{link}");
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            url = Some(link[1..link.find('>').unwrap()].to_string());
        }
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= 3, "a page of {}: {page:?}", page.len());
        entries.extend(page);
    }
    assert_eq!(pages, 3);
    let listed: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("file", "README.md"),
            ("file", "config.json"),
            ("file", "m-Q4_K_M.gguf"),
            ("directory", "sub"),
            ("file", "sub/a.gguf"),
            ("directory", "sub/deep"),
            ("file", "sub/deep/b.bin"),
        ]
    );
    for e in &entries {
        assert_eq!(e["oid"].as_str().unwrap().len(), 40, "{e}");
        let path = e["path"].as_str().unwrap();
        let Some((_, data)) = files.iter().find(|(p, _)| *p == path) else {
            assert_eq!(e["size"], 0);
            assert!(e.get("lfs").is_none(), "{e}");
            continue;
        };
        assert_eq!(e["size"], data.len());
        if path.ends_with(".md") || path.ends_with(".json") {
            assert!(e.get("lfs").is_none(), "{e}");
            assert_eq!(e["oid"], git_blob_oid(data));
        } else {
            assert_eq!(e["lfs"]["oid"], sha256_hex(data));
            assert_eq!(e["lfs"]["size"], data.len());
            let pointer = lfs_pointer(&sha256_hex(data), data.len() as u64);
            assert_eq!(e["lfs"]["pointerSize"], pointer.len());
            assert_eq!(e["oid"], git_blob_oid(pointer.as_bytes()));
        }
    }

    // Not recursive: the top level only; a directory lists its direct children.
    hub.set_page_size(50);
    let (headers, top) = get_json(&format!("{}/api/models/o/m/tree/main", hub.endpoint())).await;
    assert!(headers.get(LINK).is_none(), "{headers:?}");
    let top: Vec<&str> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["README.md", "config.json", "m-Q4_K_M.gguf", "sub"]);
    let (_, sub) = get_json(&format!(
        "{}/api/models/o/m/tree/main/sub?recursive=1",
        hub.endpoint()
    ))
    .await;
    assert_eq!(sub.as_array().unwrap().len(), 3);

    // An old commit keeps its (empty) tree; unknown repo and revision are 404s.
    let (_, old) = get_json(&format!("{}/api/models/o/m/tree/{c0}", hub.endpoint())).await;
    assert_eq!(old, serde_json::json!([]));
    let resp = client()
        .get(format!("{}/api/models/o/nope/tree/main", hub.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&resp, "x-error-code"), Some("RepoNotFound"));
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"error": "Repository not found"})
    );
    let resp = client()
        .get(format!("{}/api/models/o/m/tree/v9.9", hub.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&resp, "x-error-code"), Some("RevisionNotFound"));
}

#[tokio::test]
async fn resolve_redirects_to_the_cdn_and_pins_commits() {
    let (hub, cdn) = start();
    hub.add_repo("o/m", RepoOptions::default());
    let v1 = pattern(200_000, 7);
    let c1 = hub.put_file("o/m", "dir/model Q4.gguf", v1.clone());
    assert_eq!(c1, hub.commit("o/m"));
    assert_eq!(c1.len(), 40);
    hub.put_file("o/m", "config.json", br#"{"a": 1}"#.to_vec());
    let c2 = hub.commit("o/m");
    let c = client();

    let resolve = hub.resolve_url("o/m", "main", "dir/model Q4.gguf");
    assert!(
        resolve.ends_with("/o/m/resolve/main/dir/model%20Q4.gguf"),
        "{resolve}"
    );
    let resp = c.head(&resolve).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let sha = sha256_hex(&v1);
    assert_eq!(header(&resp, "x-repo-commit"), Some(c2.as_str()));
    assert_eq!(
        header(&resp, "x-linked-etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    assert_eq!(header(&resp, "x-linked-size"), Some("200000"));
    assert_eq!(header(&resp, "etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(header(&resp, "content-length"), Some("0"));
    let location = header(&resp, "location").unwrap().to_string();
    let object = hub.cdn_path("o/m", &c2, "dir/model Q4.gguf");
    assert_eq!(object, format!("cdn/o/m/{c2}/dir/model Q4.gguf"));
    let expected = cdn.url(&object).replace(' ', "%20");
    assert!(
        location.starts_with(&format!("{expected}?sig=1&expires=")),
        "{location}"
    );
    // The link is on another port: another host for the token rule.
    assert_ne!(cdn.addr().port(), hub.addr().port());

    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), v1);
    let cdn_reqs = cdn.requests(&object);
    assert_eq!(cdn_reqs.len(), 1);
    assert!(cdn_reqs[0]
        .query
        .as_deref()
        .unwrap()
        .starts_with("sig=1&expires="));

    // main moves on: resolving main follows it, the old commit still serves the old bytes,
    // and every resolve hands out a new link.
    let v2 = pattern(150_000, 8);
    let c3 = hub.put_file("o/m", "dir/model Q4.gguf", v2.clone());
    let resp = c.get(&resolve).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(header(&resp, "x-repo-commit"), Some(c3.as_str()));
    assert_eq!(header(&resp, "x-linked-size"), Some("150000"));
    let location = header(&resp, "location").unwrap().to_string();
    assert!(
        location.contains(&format!("/{c3}/")) && location.contains("?sig=2&"),
        "{location}"
    );
    assert_eq!(
        c.get(&location)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        v2
    );

    for old in [&c1, &c2] {
        let resp = c
            .head(hub.resolve_url("o/m", old, "dir/model Q4.gguf"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(header(&resp, "x-repo-commit"), Some(old.as_str()));
        assert_eq!(
            header(&resp, "x-linked-etag"),
            Some(format!("\"{sha}\"").as_str())
        );
        let location = header(&resp, "location").unwrap().to_string();
        assert_eq!(
            c.get(&location)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            v1
        );
    }

    // A small file is served by the Hub itself, ranges and all.
    let config = hub.resolve_url("o/m", "main", "config.json");
    let resp = c.get(&config).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-repo-commit"), Some(c3.as_str()));
    let oid = git_blob_oid(br#"{"a": 1}"#);
    assert_eq!(resp.headers()[ETAG].to_str().unwrap(), format!("\"{oid}\""));
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(resp.bytes().await.unwrap(), &br#"{"a": 1}"#[..]);
    let resp = c.head(&config).send().await.unwrap();
    assert_eq!(resp.headers()[CONTENT_LENGTH], "8");
    let resp = c
        .get(&config)
        .header(RANGE, "bytes=2-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap(), &br#"a": 1}"#[..]);
    // It did not exist at c1.
    let resp = c
        .head(hub.resolve_url("o/m", &c1, "config.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&resp, "x-error-code"), Some("EntryNotFound"));

    let methods: Vec<(String, u16)> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path == "/o/m/resolve/main/dir/model Q4.gguf")
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        methods,
        [("HEAD".to_string(), 302), ("GET".to_string(), 302)]
    );
}

#[tokio::test]
async fn gated_repo_wants_the_token_on_the_hub_only() {
    let (hub, cdn) = start();
    hub.add_repo(
        "meta/gated",
        RepoOptions {
            gated_token: Some("hf_secret".into()),
            ..Default::default()
        },
    );
    let data = pattern(10_000, 3);
    let commit = hub.put_file("meta/gated", "w.gguf", data.clone());
    let url = hub.resolve_url("meta/gated", "main", "w.gguf");
    let c = client();

    for auth in [None, Some("Bearer wrong")] {
        let mut req = c.head(&url);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(header(&resp, "x-error-code"), Some("GatedRepo"));
        assert_eq!(
            header(&resp, "x-error-message"),
            Some(
                "Access to model meta/gated is restricted. You must have access to it and be \
                 authenticated to access it. Please log in."
            )
        );
    }
    let resp = c.head(&url).bearer_auth("hf_secret").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = header(&resp, "location").unwrap().to_string();
    // The presigned link needs no token.
    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), data);
    let object = hub.cdn_path("meta/gated", &commit, "w.gguf");
    assert_eq!(cdn.requests(&object)[0].authorization, None);
    assert_eq!(cdn.content(&object), Some(data));

    // The tree of a gated repo is public, as on huggingface.co.
    let resp = c
        .get(format!(
            "{}/api/models/meta/gated/tree/main?recursive=true",
            hub.endpoint()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let auths: Vec<(Option<String>, u16)> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .map(|r| (r.authorization, r.status))
        .collect();
    assert_eq!(
        auths,
        [
            (None, 401),
            (Some("Bearer wrong".into()), 401),
            (Some("Bearer hf_secret".into()), 302)
        ]
    );
}

#[tokio::test]
async fn unknown_repo_file_and_revision() {
    let (hub, _cdn) = start();
    hub.add_repo("o/m", RepoOptions::default());
    hub.put_file("o/m", "a.gguf", pattern(10, 0));
    let c = client();
    let check = |url: String, status: StatusCode, code: &'static str| {
        let c = c.clone();
        async move {
            for req in [c.head(&url), c.get(&url)] {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), status, "{url}");
                assert_eq!(header(&resp, "x-error-code"), Some(code), "{url}");
            }
        }
    };
    check(
        hub.resolve_url("o/nope", "main", "a.gguf"),
        StatusCode::UNAUTHORIZED,
        "RepoNotFound",
    )
    .await;
    check(
        hub.resolve_url("o/m", "main", "b.gguf"),
        StatusCode::NOT_FOUND,
        "EntryNotFound",
    )
    .await;
    check(
        hub.resolve_url("o/m", &"0".repeat(40), "a.gguf"),
        StatusCode::NOT_FOUND,
        "RevisionNotFound",
    )
    .await;
    let statuses: Vec<u16> = hub.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 404, 404, 404, 404]);
}

#[tokio::test]
async fn cdn_faults_and_expiring_links() {
    let (hub, cdn) = start();
    hub.add_repo("o/m", RepoOptions::default());
    let data = pattern(100_000, 5);
    let commit = hub.put_file("o/m", "m.gguf", data.clone());
    hub.set_cdn_behavior(
        "o/m",
        "m.gguf",
        Behavior {
            expire_after: Some(40_000),
            ..Default::default()
        },
    );
    let c = client();
    let resolve = hub.resolve_url("o/m", "main", "m.gguf");
    let link = |resp: &reqwest::Response| resp.headers()[LOCATION].to_str().unwrap().to_string();

    let first = link(&c.head(&resolve).send().await.unwrap());
    let mut got = Vec::new();
    let mut resp = c.get(&first).send().await.unwrap();
    while let Ok(Some(chunk)) = resp.chunk().await {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, &data[..40_000]);
    // The link has expired; a fresh resolve hands out a new one that finishes the job.
    let resp = c
        .get(&first)
        .header(RANGE, "bytes=40000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let second = link(&c.head(&resolve).send().await.unwrap());
    assert_ne!(first, second);
    let resp = c
        .get(&second)
        .header(RANGE, "bytes=40000-79999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&resp.bytes().await.unwrap());
    let third = link(&c.head(&resolve).send().await.unwrap());
    let resp = c
        .get(&third)
        .header(RANGE, "bytes=80000-")
        .send()
        .await
        .unwrap();
    got.extend_from_slice(&resp.bytes().await.unwrap());
    assert_eq!(got, data);
    let statuses: Vec<u16> = cdn
        .requests(&hub.cdn_path("o/m", &commit, "m.gguf"))
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 403, 206, 206]);
    assert_eq!(hub.sha256("o/m", "m.gguf"), Some(sha256_hex(&data)));

    // Injected Hub failures come first, then normal service resumes.
    hub.fail_next(vec![(429, Some(3)), (503, None)]);
    let resp = c.head(&resolve).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), Some("3"));
    let resp = c.head(&resolve).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = c.head(&resolve).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
}

#[test]
fn git_oids_match_git() {
    assert_eq!(
        git_blob_oid(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        git_blob_oid(b"hello world\n"),
        "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
    );
    // Longer than one 64-byte block, and not a multiple of it.
    let long = b"The quick brown fox jumps over the lazy dog. ".repeat(23);
    assert_eq!(
        git_blob_oid(&long),
        "ba92d09ecb84df1d1deb71673c942612ebe6621a"
    );
    assert_eq!(
        lfs_pointer(&"a".repeat(64), 123_456_789).len(),
        134,
        "a 9-digit size gives huggingface.co's usual pointerSize"
    );
}
