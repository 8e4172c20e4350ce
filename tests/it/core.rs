//! The core through the API: concurrent settings changes, the actions each state
//! allows, and which names a finished download still holds.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

/// The four run-time settings, each with the values some PATCH of the run sets
/// (none of them the test config's own value).
fn patch_plan() -> Vec<(&'static str, u64)> {
    (0..50u64)
        .map(|i| match i % 4 {
            0 => ("max_concurrent", 30 + i / 4),
            1 => ("speed_limit_bps", 1_000_000 + i),
            2 => ("connections_per_download", 20 + i / 4),
            _ => ("max_retries", 50 + i / 4),
        })
        .collect()
}

fn check_every_key_holds_one_of_its_values(
    settings: &Value,
    set: &BTreeMap<&str, BTreeSet<u64>>,
    when: &str,
) {
    for (key, values) in set {
        let now = settings[*key]
            .as_u64()
            .unwrap_or_else(|| panic!("{when}: {key} missing in {settings}"));
        assert!(
            values.contains(&now),
            "{when}: {key} is {now}, which no PATCH set (they set {values:?}): a change was reverted; settings: {settings}"
        );
    }
}

#[actix_web::test]
async fn fifty_concurrent_settings_patches_all_hold_and_survive_a_restart() {
    let svc = TestService::start(|_| {}).await;
    let plan = patch_plan();
    let patches = plan.iter().map(|&(key, value)| {
        let (client, url) = (svc.client.clone(), svc.url("/api/settings"));
        async move {
            let r = client
                .patch(url)
                .json(&json!({ key: value }))
                .send()
                .await
                .expect("PATCH sent");
            (key, value, r.status().as_u16())
        }
    });
    let results = futures_util::future::join_all(patches).await;
    let mut set: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (key, value, status) in results {
        assert_eq!(status, 200, "PATCH {key}={value}");
        set.entry(key).or_default().insert(value);
    }
    assert_eq!(set.len(), 4, "every key was patched");
    let (_, now) = svc.get("/api/settings").await;
    check_every_key_holds_one_of_its_values(&now, &set, "after the patches");

    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    let svc = TestService::start_in(dir, config).await;
    let (_, after) = svc.get("/api/settings").await;
    check_every_key_holds_one_of_its_values(&after, &set, "after a restart");
    assert_eq!(after, now, "the restart kept the settings as they were");
}

fn actions(v: &Value) -> Vec<&str> {
    v["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {v}"))
        .iter()
        .map(|a| a.as_str().unwrap_or("?"))
        .collect()
}

#[actix_web::test]
async fn every_download_carries_the_actions_its_state_allows() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.max_concurrent = 1).await;
    let slow = Behavior {
        rate_bps: Some(256 * 1024),
        ..Default::default()
    };
    up.add_file("slow.bin", content(8 * MIB, 1), slow);
    up.add_file("quick.bin", content(64 * 1024, 2), Behavior::default());
    let running = svc.add(json!({"url": up.url("slow.bin")})).await;
    let queued = svc.add(json!({"url": up.url("quick.bin")})).await;
    let paused = svc
        .add(json!({"url": up.url("quick.bin"), "file_name": "p.bin", "start_paused": true}))
        .await;
    let missing = svc.add(json!({"url": up.url("missing.bin")})).await;

    let d = svc.wait_state(&running, "downloading", LONG).await;
    assert_eq!(actions(&d), ["pause", "cancel", "delete"], "{d}");
    let d = svc.download(&queued).await;
    assert_eq!(actions(&d), ["pause", "cancel", "move", "delete"], "{d}");
    let d = svc.download(&paused).await;
    assert_eq!(actions(&d), ["resume", "cancel", "delete"], "{d}");
    // The list carries them too.
    let (_, list) = svc.get("/api/downloads").await;
    let listed = list["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == paused.as_str())
        .cloned()
        .unwrap();
    assert_eq!(actions(&listed), ["resume", "cancel", "delete"]);

    // An answer carries the actions of the new state.
    let (_, v) = svc.action(&running, "cancel").await;
    assert_eq!(v["state"], "cancelled");
    assert_eq!(actions(&v), ["retry", "delete"], "{v}");
    let d = svc.wait_state(&queued, "completed", LONG).await;
    assert_eq!(actions(&d), ["delete"], "{d}");
    let d = svc.wait_state(&missing, "failed", LONG).await;
    assert_eq!(actions(&d), ["retry", "delete"], "{d}");
    let (_, v) = svc.action(&paused, "resume").await;
    assert!(!actions(&v).contains(&"resume"), "{v}");
}

#[actix_web::test]
async fn a_finished_download_whose_file_was_deleted_by_hand_frees_its_name() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(256 * 1024, 3);
    up.add_file("m.gguf", data.clone(), Behavior::default());
    let first = svc.add(json!({"url": up.url("m.gguf")})).await;
    svc.wait_state(&first, "completed", LONG).await;

    // While the file is there, asking again answers that download (api.md, "The
    // first hour").
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("m.gguf")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(first.as_str())), "{v}");
    assert_eq!(v["already"], true, "{v}");

    // The user deletes it by hand: adding the same URL again just works.
    std::fs::remove_file(svc.download_dir().join("m.gguf")).unwrap();
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("m.gguf")}))
        .await;
    assert_eq!(s, 201, "a name whose file is gone is free: {v}");
    let again = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&again, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("m.gguf")),
        sha256_hex(&data)
    );
    // The old record stays in the history, untouched.
    assert_eq!(svc.download(&first).await["state"], "completed");
}

/// A new URL for a completed download is refused (found by attack, #23): it used to
/// answer 200 and rewrite `url`, so the record named a source its bytes never came from.
#[actix_web::test]
async fn a_completed_download_keeps_the_url_its_bytes_came_from() {
    let up = common::upstream::Upstream::start();
    up.add_file("a.bin", content(100_000, 7), Default::default());
    up.add_file("b.bin", content(100_000, 8), Default::default());
    let svc = TestService::start(|_| {}).await;
    let id = svc.add(json!({"url": up.url("a.bin")})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(30))
        .await;
    let r = svc
        .client
        .patch(svc.url(&format!("/api/downloads/{id}")))
        .json(&json!({"url": up.url("b.bin")}))
        .send()
        .await
        .expect("PATCH sent");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    let (_, d) = svc.get(&format!("/api/downloads/{id}")).await;
    assert_eq!(d["url"], up.url("a.bin"), "{d}");
}
