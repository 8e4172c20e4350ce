//! The first hour (#27, api.md "The first hour"): asking again for what you have, and
//! the same name from another source, through REST against the fault-injecting
//! upstream and the emulated Hub.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

/// GETs of `path` the upstream answered (a `HEAD` is no fetch of the file).
fn gets(up: &Upstream, path: &str) -> usize {
    up.requests(path)
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

fn heads(up: &Upstream, path: &str) -> usize {
    up.requests(path)
        .iter()
        .filter(|r| r.method == "HEAD")
        .count()
}

async fn count(svc: &TestService) -> usize {
    let (_, v) = svc.get("/api/downloads").await;
    v["downloads"].as_array().map_or(0, Vec::len)
}

#[actix_web::test]
async fn a_url_asked_again_is_already_here_and_a_changed_one_is_fetched_as_an_update() {
    let up = Upstream::start();
    let v1 = content(300 * 1024, 1);
    // The same length: only the ETag tells the versions apart.
    let v2 = content(300 * 1024, 2);
    up.add_file("m.gguf", v1.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let first = svc.add(json!({"url": up.url("m.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;
    let fetched = gets(&up, "m.gguf");

    // The same file upstream: 200, that download, one HEAD and no GET.
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("m.gguf")}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["already"].as_bool(), v["id"].as_str()),
        (Some(true), Some(first.as_str())),
        "{v}"
    );
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(gets(&up, "m.gguf"), fetched, "the file was fetched again");
    assert_eq!(heads(&up, "m.gguf"), 1, "one HEAD checks the source");
    let head = up
        .requests("m.gguf")
        .into_iter()
        .find(|r| r.method == "HEAD")
        .unwrap();
    assert_eq!(
        head.header("if-none-match"),
        up.etag("m.gguf").as_deref(),
        "the HEAD carries the validators kept from the first download"
    );
    assert_eq!(count(&svc).await, 1);

    // Changed upstream (a new ETag): fetched as an update, under the same name; the
    // old file stays whole until the new one is in.
    up.replace_content("m.gguf", v2.clone());
    up.set_behavior(
        "m.gguf",
        Behavior {
            rate_bps: Some(100 * 1024),
            ..Default::default()
        },
    );
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("m.gguf")}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["already"], false, "{v}");
    assert_eq!(v["path"], "m.gguf", "{v}");
    let update = v["id"].as_str().unwrap().to_owned();
    assert_ne!(update, first);
    svc.wait_state(&update, "downloading", LONG).await;
    let file = svc.download_dir().join("m.gguf");
    assert_eq!(
        file_sha256(&file),
        sha256_hex(&v1),
        "the old file went early"
    );
    svc.wait_state(&update, "completed", LONG).await;
    assert_eq!(file_sha256(&file), sha256_hex(&v2));
    assert_eq!(svc.download(&first).await["state"], "completed");

    // Asked again after the update: the update is what is here.
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("m.gguf")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(update.as_str())), "{v}");

    // overwrite still forces a fresh download.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("m.gguf"), "overwrite": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["already"], false, "{v}");
}

#[actix_web::test]
async fn a_url_asked_again_while_it_downloads_is_that_download() {
    let up = Upstream::start();
    up.add_file(
        "slow.bin",
        content(4 * MIB, 3),
        Behavior {
            rate_bps: Some(512 * 1024),
            ..Default::default()
        },
    );
    let svc = TestService::start(|_| {}).await;
    let id = svc.add(json!({"url": up.url("slow.bin")})).await;
    svc.wait_state(&id, "downloading", LONG).await;
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("slow.bin")}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["already"].as_bool(), v["id"].as_str()),
        (Some(true), Some(id.as_str())),
        "{v}"
    );
    // In a batch too: every item already live is a 200.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"downloads": [{"url": up.url("slow.bin")}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["downloads"][0]["id"], id.as_str(), "{v}");
    assert_eq!(v["downloads"][0]["already"], true, "{v}");
    assert_eq!(count(&svc).await, 1);
    assert_eq!(heads(&up, "slow.bin"), 0, "a live download needs no check");
    svc.action(&id, "cancel").await;
}

/// A server whose `HEAD` lies (says another length, drops its validators) or fails:
/// the verified file on disk stands, nothing is fetched, the answer says so.
#[actix_web::test]
async fn a_source_that_cannot_be_checked_keeps_the_file_on_disk() {
    let up = Upstream::start();
    let data = content(200 * 1024, 4);
    up.add_file("k.bin", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let id = svc.add(json!({"url": up.url("k.bin")})).await;
    svc.wait_state(&id, "completed", LONG).await;
    let fetched = gets(&up, "k.bin");
    up.set_behavior(
        "k.bin",
        Behavior {
            fail_first: vec![(500, None); 8],
            ..Default::default()
        },
    );
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("k.bin")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    assert_eq!(gets(&up, "k.bin"), fetched);
    // A HEAD without validators, of the same length: nothing tells a change.
    up.set_behavior(
        "k.bin",
        Behavior {
            no_validators: true,
            ..Default::default()
        },
    );
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("k.bin")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    assert_eq!(gets(&up, "k.bin"), fetched);
    assert_eq!(
        file_sha256(&svc.download_dir().join("k.bin")),
        sha256_hex(&data)
    );
}

fn hub() -> HubEmu {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(
        "o/m-GGUF",
        RepoOptions {
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    hub
}

fn cdn_gets(hub: &HubEmu, file: &str) -> usize {
    let repo = "o/m-GGUF";
    hub.commits(repo)
        .iter()
        .map(|c| gets(hub.cdn(), &hub.cdn_path(repo, c, file)))
        .sum()
}

#[actix_web::test]
async fn a_hub_file_asked_again_is_checked_against_the_hub_and_updated_when_it_changed() {
    let hub = hub();
    let (repo, file) = ("o/m-GGUF", "m-Q4_K_M.gguf");
    let v1 = content(300 * 1024, 5);
    hub.put_file(repo, file, v1.clone());
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let body = json!({"hub": {"repo": repo, "file": file}});
    let first = svc.add(body.clone()).await;
    svc.wait_state(&first, "completed", LONG).await;
    let fetched = cdn_gets(&hub, file);

    let (s, v) = svc.post("/api/downloads", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["already"].as_bool(), v["id"].as_str()),
        (Some(true), Some(first.as_str())),
        "{v}"
    );
    // The Hub tab's Download (a quantization) says the same, and fetches nothing.
    let (s, v) = svc
        .post(
            &format!("/api/hub/models/{repo}/download"),
            json!({"quantization": "Q4_K_M"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["downloads"][0]["id"], first.as_str(), "{v}");
    assert_eq!(v["downloads"][0]["already"], true, "{v}");
    assert_eq!(cdn_gets(&hub, file), fetched, "the file was fetched again");

    // A new commit changes the file: the next ask fetches it, pinned to that commit.
    let v2 = content(400 * 1024, 6);
    hub.put_file(repo, file, v2.clone());
    let (s, v) = svc.post("/api/downloads", body.clone()).await;
    assert_eq!(s, 201, "{v}");
    let update = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["source"]["commit"], hub.commit(repo), "{v}");
    assert_eq!(v["sha256"], sha256_hex(&v2), "{v}");
    svc.wait_state(&update, "completed", LONG).await;
    let path = svc.download_dir().join(repo).join(file);
    assert_eq!(file_sha256(&path), sha256_hex(&v2));

    // Another file of a new commit leaves this one the same.
    hub.put_file(repo, "README.md", b"# m\n".to_vec());
    let (s, v) = svc.post("/api/downloads", body).await;
    assert_eq!((s, v["id"].as_str()), (200, Some(update.as_str())), "{v}");
}

#[actix_web::test]
async fn two_urls_of_one_name_both_complete_the_second_numbered() {
    let up = Upstream::start();
    let a = content(200 * 1024, 7);
    let b = content(250 * 1024, 8);
    up.add_file("a/x.gguf", a.clone(), Behavior::default());
    up.add_file("b/x.gguf", b.clone(), Behavior::default());
    up.add_file("c/x.gguf", content(1000, 9), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    let first = svc.add(json!({"url": up.url("a/x.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("b/x.gguf")}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["path"].as_str(), v["file_name"].as_str()),
        (Some("x (1).gguf"), Some("x (1).gguf")),
        "{v}"
    );
    let second = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&second, "completed", LONG).await;
    assert_eq!(file_sha256(&dl.join("x.gguf")), sha256_hex(&a));
    assert_eq!(file_sha256(&dl.join("x (1).gguf")), sha256_hex(&b));

    // Each source asked again finds its own file.
    for (url, id) in [("a/x.gguf", &first), ("b/x.gguf", &second)] {
        let (s, v) = svc
            .post("/api/downloads", json!({"url": up.url(url)}))
            .await;
        assert_eq!(
            (s, v["id"].as_str()),
            (200, Some(id.as_str())),
            "{url}: {v}"
        );
    }
    // A name given stays a conflict.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("c/x.gguf"), "file_name": "x.gguf"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    // A file we did not write holds its name too.
    std::fs::write(dl.join("y.gguf"), b"mine").unwrap();
    up.add_file("y.gguf", content(1000, 10), Behavior::default());
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("y.gguf")}))
        .await;
    assert_eq!((s, v["path"].as_str()), (201, Some("y (1).gguf")), "{v}");
    assert_eq!(std::fs::read(dl.join("y.gguf")).unwrap(), b"mine");
}

/// Many sources of one name at once: each gets a name of its own (the supervisor's
/// claim decides who was first; the others look again).
#[actix_web::test]
async fn many_adds_of_one_name_at_once_each_get_their_own_number() {
    let up = Arc::new(Upstream::start());
    let n = 6;
    for i in 0..n {
        up.add_file(
            &format!("s{i}/z.gguf"),
            content(50_000, 20 + i as u64),
            Behavior::default(),
        );
    }
    let svc = Arc::new(TestService::start(|_| {}).await);
    let adds = (0..n).map(|i| {
        let (svc, up) = (svc.clone(), up.clone());
        async move {
            svc.post(
                "/api/downloads",
                json!({"url": up.url(&format!("s{i}/z.gguf"))}),
            )
            .await
        }
    });
    let answers: Vec<(u16, Value)> = futures_util::future::join_all(adds).await;
    let mut paths = BTreeSet::new();
    for (i, (s, v)) in answers.iter().enumerate() {
        assert_eq!(*s, 201, "{v}");
        paths.insert(v["path"].as_str().unwrap().to_owned());
        let id = v["id"].as_str().unwrap();
        svc.wait_state(id, "completed", LONG).await;
        let path = svc.download_dir().join(v["path"].as_str().unwrap());
        assert_eq!(
            file_sha256(&path),
            sha256_hex(&content(50_000, 20 + i as u64))
        );
    }
    let want: BTreeSet<String> = std::iter::once("z.gguf".to_owned())
        .chain((1..n).map(|k| format!("z ({k}).gguf")))
        .collect();
    assert_eq!(paths, want);
}

/// Names that cannot be numbered, or reach outside download_dir, stay refused.
#[actix_web::test]
async fn numbering_never_makes_a_name_the_rules_refuse() {
    let up = Upstream::start();
    let long = format!("{}.gguf", "n".repeat(245));
    up.add_file(&format!("a/{long}"), content(1000, 30), Behavior::default());
    up.add_file(&format!("b/{long}"), content(1000, 31), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let id = svc.add(json!({"url": up.url(&format!("a/{long}"))})).await;
    svc.wait_state(&id, "completed", LONG).await;
    // No room for " (1)" in 250 bytes: the name is taken, as it was.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url(&format!("b/{long}"))}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    // A URL whose last segment decodes to a path is refused before any numbering.
    std::fs::write(svc.download_dir().join("..x.gguf"), b"").ok();
    for url in [up.url("a/..%2F..%2Fevil.gguf"), up.url("a/%2E%2E")] {
        let (s, v) = svc.post("/api/downloads", json!({"url": url})).await;
        assert!(matches!(s, 400 | 422), "{url}: {s} {v}");
    }
    assert!(!svc
        .download_dir()
        .parent()
        .unwrap()
        .join("evil.gguf")
        .exists());
}

/// A download that cannot connect fails with kind `network` and a message that does
/// not say `network` again (the page and the terminal show `kind: message`).
#[actix_web::test]
async fn a_failed_download_names_its_kind_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let svc = TestService::start(|c| c.downloads.max_retries = 0).await;
    let id = svc
        .add(json!({"url": format!("http://127.0.0.1:{port}/x.bin")}))
        .await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "network", "{d}");
    let message = d["error"]["message"].as_str().unwrap();
    assert!(!message.starts_with("network"), "{message}");
}

/// The same URL asked many times at once, before any of it is there: one download,
/// every other answer is that download (`already`), none a conflict.
#[actix_web::test]
async fn the_same_url_asked_many_times_at_once_is_one_download() {
    let up = Arc::new(Upstream::start());
    up.add_file("same.gguf", content(100_000, 60), Behavior::default());
    let svc = Arc::new(TestService::start(|_| {}).await);
    let adds = (0..8).map(|_| {
        let (svc, up) = (svc.clone(), up.clone());
        async move {
            svc.post("/api/downloads", json!({"url": up.url("same.gguf")}))
                .await
        }
    });
    let answers: Vec<(u16, Value)> = futures_util::future::join_all(adds).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let id = created[0]["id"].as_str().unwrap();
    for (s, v) in &answers {
        assert!(*s == 201 || (*s == 200 && v["already"] == true), "{s} {v}");
        assert_eq!(v["id"], id, "{v}");
    }
    svc.wait_state(id, "completed", LONG).await;
    assert_eq!(count(&svc).await, 1);
}

/// A completed file replaced under its name by another program is not ours any more:
/// asking again for its URL neither answers it nor writes over it.
#[actix_web::test]
async fn a_file_replaced_by_hand_is_not_taken_for_ours() {
    let up = Upstream::start();
    let data = content(100_000, 61);
    up.add_file("r.gguf", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    let first = svc.add(json!({"url": up.url("r.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;
    std::fs::write(dl.join("theirs.tmp"), b"another program's file").unwrap();
    std::fs::rename(dl.join("theirs.tmp"), dl.join("r.gguf")).unwrap();
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("r.gguf")}))
        .await;
    assert_eq!((s, v["path"].as_str()), (201, Some("r (1).gguf")), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        std::fs::read(dl.join("r.gguf")).unwrap(),
        b"another program's file"
    );
    assert_eq!(file_sha256(&dl.join("r (1).gguf")), sha256_hex(&data));
}

/// A `HEAD` that redirects outside `allowed_hosts` is not followed: the check tells
/// nothing, the file on disk stands, and the other host hears nothing.
#[actix_web::test]
async fn a_head_redirected_outside_the_allowlist_is_not_followed() {
    let up = Upstream::start();
    let elsewhere = Upstream::start();
    elsewhere.add_file("x.bin", content(1000, 70), Behavior::default());
    up.add_file("x.bin", content(50_000, 71), Behavior::default());
    let allowed = up.addr().to_string();
    let svc = TestService::start(move |c| c.downloads.allowed_hosts = vec![allowed]).await;
    let id = svc.add(json!({"url": up.url("x.bin")})).await;
    svc.wait_state(&id, "completed", LONG).await;
    up.set_behavior(
        "x.bin",
        Behavior {
            redirect_to: Some(elsewhere.url("x.bin")),
            ..Default::default()
        },
    );
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("x.bin")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    assert!(
        elsewhere.requests("x.bin").is_empty(),
        "the redirect was followed"
    );
}

/// A `.part` no download of ours wrote is another program's file in the making: a URL
/// named after it goes to the next free name and leaves it alone.
#[actix_web::test]
async fn a_part_file_we_did_not_write_holds_its_name() {
    let up = Upstream::start();
    let data = content(50_000, 90);
    up.add_file("w.gguf", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    std::fs::write(dl.join("w.gguf.part"), b"someone else is writing this").unwrap();
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("w.gguf")}))
        .await;
    assert_eq!((s, v["path"].as_str()), (201, Some("w (1).gguf")), "{v}");
    svc.wait_state(v["id"].as_str().unwrap(), "completed", LONG)
        .await;
    assert_eq!(
        std::fs::read(dl.join("w.gguf.part")).unwrap(),
        b"someone else is writing this"
    );
    assert_eq!(file_sha256(&dl.join("w (1).gguf")), sha256_hex(&data));
}

/// An update that failed (here a wrong sha256) leaves the verified file and its
/// download in place: asking again for the source is still that download, not a
/// fresh copy under a numbered name.
#[actix_web::test]
async fn a_failed_update_leaves_the_file_asked_again_already_here() {
    let up = Upstream::start();
    let data = content(100_000, 71);
    up.add_file("fu.gguf", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let first = svc.add(json!({"url": up.url("fu.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;
    let bad = svc
        .add(json!({"url": up.url("fu.gguf"), "sha256": "1".repeat(64)}))
        .await;
    svc.wait_state(&bad, "failed", LONG).await;
    let fetched = gets(&up, "fu.gguf");
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("fu.gguf")}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["already"].as_bool(), v["id"].as_str(), v["path"].as_str()),
        (Some(true), Some(first.as_str()), Some("fu.gguf")),
        "{v}"
    );
    assert_eq!(gets(&up, "fu.gguf"), fetched, "nothing fetched again");
    assert_eq!(
        file_sha256(&svc.download_dir().join("fu.gguf")),
        sha256_hex(&data)
    );
}

/// Two sources with the same bytes: the library makes the second file a hard link to
/// the first (one copy). Asking again for either source is still its download: the
/// queue learns the file's new identity from the library.
#[actix_web::test]
async fn a_file_the_library_linked_to_its_twin_is_still_already_here() {
    use std::os::unix::fs::MetadataExt;
    let up = Upstream::start();
    let data = content(100_000, 81);
    up.add_file("x1/dup.gguf", data.clone(), Behavior::default());
    up.add_file("x2/dup.gguf", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    let first = svc.add(json!({"url": up.url("x1/dup.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("x2/dup.gguf")}))
        .await;
    assert_eq!((s, v["path"].as_str()), (201, Some("dup (1).gguf")), "{v}");
    let second = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&second, "completed", LONG).await;
    let ino = |name: &str| std::fs::metadata(dl.join(name)).map(|m| m.ino()).ok();
    let linked = tokio::time::timeout(LONG, async {
        while ino("dup.gguf") != ino("dup (1).gguf") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(linked.is_ok(), "the library never linked the twins");
    // The library tells the queue without waiting: give the message a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetched = gets(&up, "x2/dup.gguf");
    for (url, id, path) in [
        (up.url("x2/dup.gguf"), &second, "dup (1).gguf"),
        (up.url("x1/dup.gguf"), &first, "dup.gguf"),
    ] {
        let (s, v) = svc.post("/api/downloads", json!({ "url": url })).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["already"].as_bool(), v["id"].as_str(), v["path"].as_str()),
            (Some(true), Some(id.as_str()), Some(path)),
            "{v}"
        );
    }
    assert_eq!(gets(&up, "x2/dup.gguf"), fetched, "nothing fetched again");
    assert_eq!(count(&svc).await, 2);
}
