//! What bad luck and hostile input can still do (issue: trust under attack and bad
//! luck): a database that cannot flush, names that cannot take their `.part` or that
//! hide their spelling, a `.part` written by someone else, an upstream that cuts every
//! answer, a folder swapped for a link, a URL swapped for another file, a trickle, a
//! Hub whose links point elsewhere.

use crate::common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use common::hub::HubEmu;
use common::service::*;
use common::tmpfs::Tmpfs;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Slow enough to act on mid-transfer: about 4 s for 4 MiB.
fn slow() -> Behavior {
    Behavior {
        rate_bps: Some(MIB as u64),
        ..Default::default()
    }
}

/// Waits for the download to end, in whatever state.
async fn ended(svc: &TestService, id: &str) -> Value {
    svc.wait_until(id, WAIT, "an end (completed, failed or cancelled)", |d| {
        matches!(
            d["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })
    .await
}

async fn listed(svc: &TestService) -> usize {
    let (s, v) = svc.get("/api/downloads").await;
    assert_eq!(s, 200, "{v}");
    v["downloads"].as_array().map_or(0, Vec::len)
}

/// Fills the file system at `dir` until it refuses a byte.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[actix_web::test]
async fn an_add_that_cannot_be_made_durable_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _disk = match Tmpfs::mount(&data, "24m") {
        Ok(d) => d,
        Err(why) => {
            println!("SKIPPED: cannot mount a small tmpfs here ({why}); run the tests as root");
            return;
        }
    };
    let mut config = test_config(root.path());
    config.storage.data_dir = data.clone();
    let svc = TestService::start_in(root, config).await;
    let one = |name: &str| json!({"url": "http://127.0.0.1:9/x.bin", "file_name": name, "start_paused": true});
    svc.add(one("before.bin")).await;
    assert_eq!(listed(&svc).await, 1);

    let filler = fill(&data);
    // Batches until the database refuses one: some fit what sled had allocated, then
    // one cannot be flushed (its insert into memory may still have succeeded).
    let mut expected = 1;
    let mut refused = None;
    for round in 0..400 {
        let batch: Vec<Value> = (0..20).map(|i| one(&format!("r{round}-{i}.bin"))).collect();
        let (s, v) = svc
            .post("/api/downloads", json!({ "downloads": batch }))
            .await;
        match s {
            201 => expected += 20,
            _ => {
                refused = Some((s, v));
                break;
            }
        }
    }
    let (s, v) = refused.expect("a full data_dir refuses an add within 400 batches");
    assert!(s >= 500, "{s}: {v}");
    assert_eq!(v["error"]["code"], "internal", "{v}");
    assert_eq!(
        listed(&svc).await,
        expected,
        "the refused batch is not listed: only the {expected} whose adds were answered 201"
    );
    // sled stays failed after an I/O error (until a restart); what it holds in
    // memory is still what the answers said.
    drop(filler);
}

#[actix_web::test]
async fn names_that_cannot_take_a_part_or_hide_their_spelling_are_refused() {
    let svc = TestService::start(|_| {}).await;
    let url = "http://127.0.0.1:9/x.bin";
    for name in [
        "x".repeat(251),
        "é".repeat(126),
        "invoice\u{202E}fdp.exe".into(),
        "mod\u{200B}el.gguf".into(),
        "\u{2067}x.gguf".into(),
    ] {
        let (s, v) = svc
            .post(
                "/api/downloads",
                json!({"url": url, "file_name": name, "start_paused": true}),
            )
            .await;
        assert_eq!(s, 422, "{name:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    }
    // A Hub file's path is checked the same way, every component.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "o/r", "file": "dir\u{200D}/m.gguf"}}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(listed(&svc).await, 0);
    // 250 bytes still fit (with ".part", 255).
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": url, "file_name": "y".repeat(250), "start_paused": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

/// What a test does to a `.part` under a running transfer.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Truncate,
    Extend,
    Overwrite,
}

fn tamper(part: &std::path::Path, how: Tamper) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(part)
        .unwrap_or_else(|e| panic!("open {}: {e}", part.display()));
    match how {
        Tamper::Truncate => f.set_len(100_000).unwrap(),
        Tamper::Extend => f.set_len(64 * MIB as u64).unwrap(),
        Tamper::Overwrite => f.write_all_at(&[0xAA; 300_000], 1000).unwrap(),
    }
}

#[actix_web::test]
async fn a_part_written_by_someone_else_never_completes_with_wrong_bytes() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.max_concurrent = 6;
    })
    .await;
    let mut runs = Vec::new();
    for (i, how) in [Tamper::Truncate, Tamper::Extend, Tamper::Overwrite]
        .into_iter()
        .enumerate()
    {
        for with_sha in [false, true] {
            let name = format!("t{i}-{with_sha}.bin");
            // 8 MiB, 8 s: past the first 2 MiB block (which an O_DIRECT writer keeps in
            // memory until full, then writes whole) with time to spare.
            let data = content(8 * MIB, 40 + i as u64 * 2 + u64::from(with_sha));
            up.add_file(&name, data.clone(), slow());
            let mut body = json!({"url": up.url(&name)});
            if with_sha {
                body["sha256"] = json!(sha256_hex(&data));
            }
            let id = svc.add(body).await;
            runs.push((id, name, data, how, with_sha));
        }
    }
    for (id, name, _, how, _) in &runs {
        svc.wait_past(id, 2_600_000, WAIT).await;
        tamper(&svc.download_dir().join(format!("{name}.part")), *how);
    }
    for (id, name, data, how, with_sha) in &runs {
        let d = ended(&svc, id).await;
        let what = format!("{how:?}, sha256 given: {with_sha}");
        assert_eq!(
            d["state"], "completed",
            "{what}: it starts over and completes: {d}"
        );
        let got = std::fs::read(svc.download_dir().join(name)).unwrap();
        assert!(
            got == *data,
            "{what}: completed with wrong bytes ({} bytes, sha256 {}; want {} bytes, {}): {d}",
            got.len(),
            sha256_hex(&got),
            data.len(),
            sha256_hex(data)
        );
    }
}

#[actix_web::test]
async fn a_second_instance_on_the_same_download_dir_never_writes_a_part_held_by_the_first() {
    let up = Upstream::start();
    let data = content(4 * MIB, 50);
    // Slow enough (8 s) that the second instance gives up waiting for the lock first.
    up.add_file(
        "same.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(MIB as u64 / 2),
            ..Default::default()
        },
    );
    let first = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let shared = first.download_dir();
    let second = TestService::start(move |c| c.storage.download_dir = shared).await;
    let a = first.add(json!({"url": up.url("same.bin")})).await;
    first.wait_past(&a, 500_000, WAIT).await;
    let b = second.add(json!({"url": up.url("same.bin")})).await;
    let d = ended(&second, &b).await;
    // The first's `.part` holds the name for it (api.md "The first hour"): the second
    // takes the next free name, or, when the `.part` appears only after its add,
    // refuses the name at its start. It never writes into the first's `.part`.
    if d["state"] == "completed" {
        assert_eq!(
            d["path"], "same (1).bin",
            "the second instance's own name: {d}"
        );
    } else {
        assert_eq!(d["state"], "failed", "{d}");
        let message = d["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("another download or process"),
            "the message says why: {d}"
        );
    }
    let d = ended(&first, &a).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(
        file_sha256(&first.download_dir().join("same.bin")),
        sha256_hex(&data),
        "the first instance's file is its own"
    );
}

#[actix_web::test]
async fn an_upstream_that_cuts_every_answer_and_ignores_range_fails_after_max_retries() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.max_retries = 3).await;
    up.add_file(
        "cut.bin",
        content(MIB, 60),
        Behavior {
            drop_every: Some(64 * 1024),
            ignore_range: true,
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("cut.bin")})).await;
    let d = svc
        .wait_until(&id, Duration::from_secs(30), "failed", |d| {
            d["state"] == "failed"
        })
        .await;
    let requests = up.requests("cut.bin").len();
    // The first answer is progress (its bytes are new), then max_retries failures in a
    // row, each backed off, then the end.
    assert!(
        requests <= 3 + 2,
        "{requests} requests for max_retries = 3: the same bytes again are no progress: {d}"
    );
    assert_eq!(d["error"]["kind"], "network", "{d}");
}

#[actix_web::test]
async fn a_url_swapped_for_another_file_of_the_same_size_ends_as_the_new_file() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let old = content(4 * MIB, 70);
    let new = content(4 * MIB, 71);
    let no_validators = Behavior {
        no_validators: true,
        ..slow()
    };
    up.add_file("old.bin", old, no_validators.clone());
    up.add_file("new.bin", new.clone(), no_validators);
    let id = svc
        .add(json!({"url": up.url("old.bin"), "file_name": "model.bin"}))
        .await;
    svc.wait_past(&id, 1_500_000, WAIT).await;
    let (s, v) = svc
        .call(
            reqwest::Method::PATCH,
            &format!("/api/downloads/{id}"),
            Some(json!({"url": up.url("new.bin")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = ended(&svc, &id).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(
        file_sha256(&svc.download_dir().join("model.bin")),
        sha256_hex(&new),
        "the new file exactly, not old bytes followed by new ones: {d}"
    );
}

#[actix_web::test]
async fn a_url_swap_keeps_the_bytes_when_a_strong_etag_proves_the_same_file() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let data = content(4 * MIB, 72);
    // Two names of one file (a new link to it): the same ETag and size.
    up.add_file("a.bin", data.clone(), slow());
    let etag = up.etag("a.bin").expect("an etag");
    let same = Behavior {
        extra_headers: vec![("ETag".into(), etag)],
        ..slow()
    };
    up.add_file("b.bin", data.clone(), same);
    let id = svc
        .add(json!({"url": up.url("a.bin"), "file_name": "m.bin"}))
        .await;
    svc.wait_past(&id, 1_500_000, WAIT).await;
    let (s, v) = svc
        .call(
            reqwest::Method::PATCH,
            &format!("/api/downloads/{id}"),
            Some(json!({"url": up.url("b.bin")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = ended(&svc, &id).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(
        file_sha256(&svc.download_dir().join("m.bin")),
        sha256_hex(&data)
    );
    let resumed = up
        .requests("b.bin")
        .iter()
        .any(|r| r.range_start.is_some_and(|s| s > 0));
    assert!(
        resumed,
        "the new URL was asked for the rest only: {:?}",
        up.requests("b.bin")
    );
}

#[actix_web::test]
async fn a_part_deleted_under_a_running_transfer_starts_it_over() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let data = content(4 * MIB, 80);
    up.add_file("del.bin", data.clone(), slow());
    let id = svc.add(json!({"url": up.url("del.bin")})).await;
    svc.wait_past(&id, 1_500_000, WAIT).await;
    std::fs::remove_file(svc.download_dir().join("del.bin.part")).unwrap();
    let d = ended(&svc, &id).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(
        file_sha256(&svc.download_dir().join("del.bin")),
        sha256_hex(&data)
    );
}

#[actix_web::test]
async fn a_trickle_below_min_speed_counts_as_a_stall() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.max_retries = 1;
        c.downloads.min_speed_bps = 1024;
    })
    .await;
    up.add_file(
        "trickle.bin",
        content(200_000, 81),
        Behavior {
            rate_bps: Some(300),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("trickle.bin")})).await;
    let d = svc
        .wait_until(&id, Duration::from_secs(30), "failed", |d| {
            d["state"] == "failed"
        })
        .await;
    let message = d["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("min_speed_bps"), "{d}");
}

#[actix_web::test]
async fn a_redirect_to_another_scheme_says_so() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    up.add_file(
        "jump.bin",
        content(1000, 82),
        Behavior {
            redirect_to: Some("file:///etc/passwd".into()),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("jump.bin")})).await;
    let d = ended(&svc, &id).await;
    assert_eq!(d["state"], "failed", "{d}");
    let message = d["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("another scheme (file:)"), "{d}");
}

fn hub_with_file(size: usize, seed: u64) -> (HubEmu, Vec<u8>) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn);
    hub.add_repo("o/r", Default::default());
    let data = content(size, seed);
    hub.put_file("o/r", "f.bin", data.clone());
    (hub, data)
}

#[actix_web::test]
async fn a_hub_link_to_a_port_not_in_allowed_hosts_is_refused() {
    let (hub, _) = hub_with_file(3 * MIB, 90);
    let endpoint = hub.endpoint();
    // The Hub's own host and port only: its CDN (another local port) is not on the list.
    let only_hub = format!("127.0.0.1:{}", hub.addr().port());
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.downloads.allowed_hosts = vec![only_hub];
    })
    .await;
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "o/r", "file": "f.bin"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("an id").to_owned();
    let d = ended(&svc, &id).await;
    assert_eq!(d["state"], "failed", "{d}");
    let message = d["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("allowed_hosts"), "{d}");
    let commit = hub.commit("o/r");
    assert_eq!(
        hub.cdn().bytes_sent(&hub.cdn_path("o/r", &commit, "f.bin")),
        0,
        "the CDN sent bytes"
    );
    // The same list for URLs: another port of an allowed host is another host.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": format!("http://127.0.0.1:{}/x.bin", hub.cdn().addr().port())}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
}

#[actix_web::test]
async fn a_folder_swapped_for_a_symlink_mid_download_leaves_nothing_outside() {
    let (hub, data) = hub_with_file(4 * MIB, 91);
    let commit = hub.commit("o/r");
    hub.set_cdn_behavior_at("o/r", &commit, "f.bin", slow());
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.downloads.connections_per_download = 1;
    })
    .await;
    let outside = svc.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let moved = outside.join("r");
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "o/r", "file": "f.bin"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("an id").to_owned();
    svc.wait_past(&id, 1_000_000, WAIT).await;
    // The folder goes out of download_dir, and a link to it takes its place: the
    // transfer's handle moved with it.
    let folder = svc.download_dir().join("o/r");
    std::fs::rename(&folder, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &folder).unwrap();
    let d = ended(&svc, &id).await;
    assert_eq!(
        tree(&outside),
        Vec::<String>::new(),
        "a file was completed (or left) outside download_dir: {d}"
    );
    assert_eq!(d["state"], "failed", "{d}");
    let _ = data;
}

/// A download is never named as another one's `.part` (found by attack, #23): a
/// completed `c.bin.part` used to be adopted as the partial file of a later `c.bin`
/// and renamed, so the first download's file was gone while its record said
/// completed. Refused on every door that names a file; the file already there stays.
#[actix_web::test]
async fn a_download_named_as_another_ones_part_is_refused_and_its_twin_keeps_its_file() {
    let up = common::upstream::Upstream::start();
    let first = content(200_000, 41);
    let second = content(300_000, 42);
    up.add_file("f4.bin", first.clone(), Default::default());
    up.add_file("f5.bin", second.clone(), Default::default());
    let svc = TestService::start(|_| {}).await;
    let (s, b) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("f4.bin"), "file_name": "c.bin.part"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["code"], "invalid_request", "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains(".part"),
        "{b}"
    );
    let rpc = common::rpc::Rpc::new(&svc.base, None);
    let (_, answer) = rpc
        .call(
            "aria2.addUri",
            json!([[up.url("f4.bin")], {"out": "c.bin.part"}]),
        )
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(".part"),
        "{answer}"
    );
    let (_, listed) = svc.get("/api/downloads").await;
    assert_eq!(
        listed["downloads"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    // The name beside it is fine, and completes with its own bytes.
    let id = svc
        .add(json!({"url": up.url("f5.bin"), "file_name": "c.bin"}))
        .await;
    svc.wait_state(&id, "completed", Duration::from_secs(30))
        .await;
    let dir = svc.download_dir();
    assert_eq!(std::fs::read(dir.join("c.bin")).unwrap(), second);
    assert!(!dir.join("c.bin.part").exists());
}
