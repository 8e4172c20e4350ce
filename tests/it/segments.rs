//! Parallel ranged connections against the fault-injecting upstream: always the right
//! bytes, every segment resumed where it was.

use crate::common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

fn ranged(up: &Upstream, path: &str) -> usize {
    up.requests(path)
        .iter()
        .filter(|r| r.range.is_some())
        .count()
}

#[actix_web::test]
async fn four_connections_fetch_a_large_file_in_parallel() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let size = 64 * MIB;
    let data = content(size, 1);
    // Capped per connection, like the CDNs this is for: 4 connections go 4x faster.
    up.add_file(
        "par.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(16 * MIB as u64),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let id = svc
        .add(json!({"url": up.url("par.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let took = started.elapsed();
    assert_eq!(
        file_sha256(&svc.download_dir().join("par.bin")),
        sha256_hex(&data)
    );
    // One connection would need 4 s; four need about 1.
    assert!(
        took < Duration::from_millis(3000),
        "not parallel: {took:?}: {:?}",
        up.requests("par.bin")
            .iter()
            .map(|r| (r.range.clone(), r.status))
            .collect::<Vec<_>>()
    );
    assert!(ranged(&up, "par.bin") >= 3, "{:?}", up.requests("par.bin"));
    let sent = up.bytes_sent("par.bin");
    assert!(
        sent <= size as u64 + 4 * MIB as u64,
        "fetched {sent} bytes for a {size}-byte file"
    );
}

#[actix_web::test]
async fn connections_that_drop_repeatedly_still_give_the_right_bytes() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let data = content(40 * MIB, 2);
    up.add_file(
        "drop.bin",
        data.clone(),
        Behavior {
            drop_every: Some(3 * MIB as u64),
            ..Default::default()
        },
    );
    let id = svc
        .add(json!({"url": up.url("drop.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("drop.bin")),
        sha256_hex(&data)
    );
    let reqs = up.requests("drop.bin");
    assert!(
        reqs.len() >= 14,
        "40 MiB dropped every 3 MiB needs many requests: {}",
        reqs.len()
    );
    for r in reqs.iter().skip(1) {
        assert!(
            r.range.is_some() && r.if_range.is_some(),
            "every resume is ranged and validated: {r:?}"
        );
    }
}

#[actix_web::test]
async fn a_server_that_ignores_range_on_the_second_request_falls_back_to_one_connection() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let data = content(32 * MIB, 3);
    let behavior = Behavior {
        ignore_range_after: Some(1),
        rate_bps: Some(64 * MIB as u64),
        ..Default::default()
    };
    up.add_file("ign.bin", data.clone(), behavior);
    let id = svc
        .add(json!({"url": up.url("ign.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("ign.bin")),
        sha256_hex(&data)
    );
    let reqs = up.requests("ign.bin");
    assert!(
        reqs.iter()
            .skip(1)
            .any(|r| r.range.is_some() && r.status == 200),
        "{reqs:?}"
    );
}

#[actix_web::test]
async fn a_file_changed_midway_ends_as_the_new_file() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let old = content(32 * MIB, 4);
    let new = content(33 * MIB, 5);
    // The file changes when the first ranged request of the parallel connections arrives
    // (request 1; request 0 is the GET whose answer started the download). With the
    // change tied to the end of that first answer instead (`swap_after_first`), which the
    // client abandons after its first piece and the server notices when it notices, a
    // loaded machine could let the connections take every piece of the old file first:
    // the old file then completed, whole and correct, and this test failed (about once
    // in 300 runs with two CPU hogs).
    let behavior = Behavior {
        swap_at_request: Some((1, new.clone())),
        rate_bps: Some(64 * MIB as u64),
        ..Default::default()
    };
    up.add_file("chg.bin", old, behavior);
    let id = svc.add(json!({"url": up.url("chg.bin")})).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_total"], json!(33 * MIB));
    assert_eq!(
        file_sha256(&svc.download_dir().join("chg.bin")),
        sha256_hex(&new)
    );
    // It did start on the old file: request 1 came with the old file's validator.
    let requests = up.requests("chg.bin");
    assert!(
        requests.len() >= 3 && requests[1].if_range.is_some() && requests[1].status == 200,
        "the change was met by a parallel connection: {requests:?}"
    );
}

#[actix_web::test]
async fn pause_and_resume_continue_every_segment() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let size = 64 * MIB;
    let data = content(size, 6);
    up.add_file(
        "pr.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(8 * MIB as u64),
            ..Default::default()
        },
    );
    let id = svc
        .add(json!({"url": up.url("pr.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_until(&id, LONG, "a third", |d| {
        d["bytes_done"].as_u64().unwrap() >= (size / 3) as u64
    })
    .await;
    let (_, paused) = svc.action(&id, "pause").await;
    let at_pause = paused["bytes_done"].as_u64().unwrap();
    let before = up.requests("pr.bin").len();
    svc.action(&id, "resume").await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("pr.bin")),
        sha256_hex(&data)
    );
    let after: Vec<_> = up.requests("pr.bin").into_iter().skip(before).collect();
    assert!(after.len() >= 2, "{after:?}");
    assert!(
        after.iter().all(|r| r.range_start.is_some_and(|s| s > 0)),
        "a segment started over: {after:?}"
    );
    let sent = up.bytes_sent("pr.bin");
    assert!(
        sent <= size as u64 + 8 * MIB as u64,
        "fetched {sent} bytes for {size} (paused at {at_pause}): segments were fetched again"
    );
}

#[tokio::test]
async fn kill_9_resumes_every_segment() {
    let up = Upstream::start();
    let size = 96 * MIB;
    let data = content(size, 7);
    up.add_file(
        "k.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(6 * MIB as u64),
            ..Default::default()
        },
    );
    let (dir, config, port, mut p) =
        Proc::start("[downloads]\nconnections_per_download = 4\n").await;
    let id = p
        .add(json!({"url": up.url("k.bin"), "sha256": sha256_hex(&data)}))
        .await;
    let shown = p
        .wait_download(&id, LONG, |d| {
            d["bytes_done"].as_u64().unwrap() >= (size / 2) as u64
        })
        .await["bytes_done"]
        .as_u64()
        .unwrap();
    p.kill9();
    let before = up.requests("k.bin").len();
    let sent_before = up.bytes_sent("k.bin");

    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    p.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    assert_eq!(
        file_sha256(&dir.path().join("downloads/k.bin")),
        sha256_hex(&data)
    );
    let after: Vec<_> = up.requests("k.bin").into_iter().skip(before).collect();
    assert!(after.len() >= 3, "{after:?}");
    assert!(
        after.iter().all(|r| r.range_start.is_some_and(|s| s > 0)),
        "a segment started over: {after:?}"
    );
    let refetched = (up.bytes_sent("k.bin") - sent_before) as i64 - (size as i64 - shown as i64);
    println!("kill -9 at {shown} bytes; fetched {refetched} bytes again after the restart");
    // Four connections at 6 MiB/s each, checkpointed every second.
    assert!(
        refetched <= 32 * MIB as i64,
        "fetched {refetched} bytes again"
    );
}

#[actix_web::test]
async fn an_outage_that_ends_an_attempt_leaves_no_segment_stranded() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 4;
        c.downloads.max_retries = 4;
        c.downloads.retry_base_delay_ms = 300;
    })
    .await;
    let data = content(32 * MIB, 21);
    let throttled = Behavior {
        rate_bps: Some(8 * MIB as u64),
        ..Default::default()
    };
    up.add_file("outage.bin", data.clone(), throttled.clone());
    let id = svc.add(json!({"url": up.url("outage.bin")})).await;
    svc.wait_until(&id, Duration::from_secs(20), "some progress", |d| {
        d["bytes_done"].as_u64() >= Some(2 * MIB as u64)
    })
    .await;
    // From now on every new request gets a 503: the connections give up one by one and
    // the first to give up ends the attempt while the others still hold their segments.
    up.set_behavior(
        "outage.bin",
        Behavior {
            fail_first: vec![(503, None); 1000],
            ..throttled.clone()
        },
    );
    svc.wait_state(&id, "retrying", Duration::from_secs(30))
        .await;
    up.set_behavior("outage.bin", throttled);
    // Without releasing the dropped connections' segments, the next attempt cannot
    // finish them and the download fails ("connections ended with bytes left").
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_done"], json!(32 * MIB));
    assert_eq!(
        file_sha256(&svc.download_dir().join("outage.bin")),
        sha256_hex(&data)
    );
}

#[actix_web::test]
async fn a_newer_download_of_the_same_name_deleted_leaves_the_old_one_to_start_over() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 4;
        c.downloads.max_retries = 0;
    })
    .await;
    let a = content(24 * MIB, 22);
    let a_id = a_failed_segmented_download(&svc, &up, &a).await;
    // B takes the name (allowed: A is finished), then goes away, and its delete removes
    // the `.part` (B is the newer owner of the name).
    up.add_file("b.bin", content(24 * MIB, 23), Behavior::default());
    let b_id = svc
        .add(json!({"url": up.url("b.bin"), "file_name": "model.bin", "start_paused": true}))
        .await;
    let (s, v) = svc.delete(&format!("/api/downloads/{b_id}")).await;
    assert!(s == 200 || s == 204, "{s} {v}");
    assert!(
        !svc.download_dir().join("model.bin.part").exists(),
        "the .part is still there: {:?}",
        tree(&svc.download_dir())
    );
    // A again: its old segments are not on disk any more and must not be trusted.
    retry_and_check(&svc, &a_id, &a).await;
}

/// A fails on its first dropped connection, keeping a segmented checkpoint and its
/// `.part`; no sha256, so nothing would catch wrong bytes at the end.
async fn a_failed_segmented_download(svc: &TestService, up: &Upstream, a: &[u8]) -> String {
    up.add_file(
        "a.bin",
        a.to_vec(),
        Behavior {
            drop_every: Some(MIB as u64 + 77),
            ..Default::default()
        },
    );
    let id = svc
        .add(json!({"url": up.url("a.bin"), "file_name": "model.bin"}))
        .await;
    let failed = svc.wait_state(&id, "failed", LONG).await;
    assert!(failed["bytes_done"].as_u64() > Some(0), "{failed}");
    assert!(
        svc.download_dir().join("model.bin.part").exists(),
        "no .part: {:?}",
        tree(&svc.download_dir())
    );
    up.set_behavior("a.bin", Behavior::default());
    id
}

async fn retry_and_check(svc: &TestService, id: &str, a: &[u8]) {
    let (s, v) = svc.action(id, "retry").await;
    assert_eq!(s, 200, "{v}");
    svc.wait_state(id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("model.bin")),
        sha256_hex(a),
        "completed with bytes it never fetched"
    );
}

#[actix_web::test]
async fn a_segmented_checkpoint_whose_part_is_gone_starts_over() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 4;
        c.downloads.max_retries = 0;
    })
    .await;
    let a = content(24 * MIB, 24);
    let id = a_failed_segmented_download(&svc, &up, &a).await;
    // Removed by hand (or lost in a crash between unlinking it and dropping its
    // checkpoint): the retry must not trust segments that are no longer on disk.
    std::fs::remove_file(svc.download_dir().join("model.bin.part")).unwrap();
    retry_and_check(&svc, &id, &a).await;
}

#[actix_web::test]
async fn a_new_size_without_validators_midway_ends_as_the_new_file() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    let old = content(32 * MIB, 27);
    let new = content(40 * MIB, 28);
    up.add_file(
        "noval.bin",
        old,
        Behavior {
            no_validators: true,
            rate_bps: Some(16 * MIB as u64),
            // Request 1 is the first of the parallel connections (see the test above).
            swap_at_request: Some((1, new.clone())),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("noval.bin")})).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_done"], json!(40 * MIB));
    assert_eq!(
        file_sha256(&svc.download_dir().join("noval.bin")),
        sha256_hex(&new),
        "old and new bytes were spliced"
    );
}
