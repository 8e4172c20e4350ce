//! What bad luck and hostile input can still do (issue: trust under attack and bad
//! luck): a database that cannot flush, names that cannot take their `.part` or that
//! hide their spelling.

mod common;

use std::io::Write;

use common::service::*;
use common::tmpfs::Tmpfs;
use serde_json::{json, Value};

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
