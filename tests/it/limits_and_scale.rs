//! Speed limits (global and per download, changed live) and a queue of 10,000.

use crate::common;

use std::time::{Duration, Instant};

use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

async fn total_bytes(svc: &TestService) -> u64 {
    svc.get("/api/stats").await.1["bytes_done_total"]
        .as_u64()
        .unwrap()
}

/// Aggregate rate over `window`, in bytes per second.
async fn measure(svc: &TestService, window: Duration) -> f64 {
    let (b0, t0) = (total_bytes(svc).await, Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (total_bytes(svc).await, Instant::now());
    (b1 - b0) as f64 / (t1 - t0).as_secs_f64()
}

#[actix_web::test]
async fn the_global_limit_holds_across_downloads_and_changes_live() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.speed_limit_bps = 8 * MIB as u64).await;
    for i in 0..3 {
        let name = format!("l{i}.bin");
        up.add_file(&name, content(128 * MIB, i), Behavior::default());
        svc.add(json!({"url": up.url(&name)})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = measure(&svc, Duration::from_secs(3)).await;
    let want = 8.0 * MIB as f64;
    println!("global 8 MiB/s: measured {:.2} MiB/s", rate / MIB as f64);
    assert!(
        (rate - want).abs() / want < 0.15,
        "aggregate {rate} vs limit {want}"
    );

    let (s, v) = svc
        .call(
            reqwest::Method::PATCH,
            "/api/settings",
            Some(json!({"speed_limit_bps": 16 * MIB})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rate = measure(&svc, Duration::from_secs(2)).await;
    let want = 16.0 * MIB as f64;
    println!(
        "raised live to 16 MiB/s: measured {:.2} MiB/s",
        rate / MIB as f64
    );
    assert!(
        (rate - want).abs() / want < 0.2,
        "after the change {rate} vs {want}"
    );
    svc.post("/api/pause-all", json!({})).await;
}

#[actix_web::test]
async fn a_per_download_cap_applies_live() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    up.add_file(
        "cap.bin",
        content(256 * MIB, 9),
        Behavior {
            rate_bps: Some(64 * MIB as u64),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("cap.bin")})).await;
    svc.wait_state(&id, "downloading", Duration::from_secs(10))
        .await;
    let (s, v) = svc
        .call(
            reqwest::Method::PATCH,
            &format!("/api/downloads/{id}"),
            Some(json!({"speed_limit_bps": 2 * MIB})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["speed_limit_bps"], json!(2 * MIB));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rate = measure(&svc, Duration::from_secs(3)).await;
    println!(
        "per-download 2 MiB/s: measured {:.2} MiB/s",
        rate / MIB as f64
    );
    let want = 2.0 * MIB as f64;
    assert!((rate - want).abs() / want < 0.2, "{rate} vs {want}");
    svc.action(&id, "pause").await;
}

/// A download held back by a low cap spends its time waiting for tokens, not reading:
/// a pause must end that wait, on one connection and on four.
#[actix_web::test]
async fn a_pause_does_not_wait_for_a_low_speed_limit() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    for (name, size) in [
        ("small-capped.bin", 8 * MIB),
        ("large-capped.bin", 64 * MIB),
    ] {
        up.add_file(name, content(size, 11), Behavior::default());
        let id = svc
            .add(json!({"url": up.url(name), "start_paused": true}))
            .await;
        // 1 KiB/s: a chunk of 16 KiB costs 16 s of tokens.
        let (s, v) = svc
            .call(
                reqwest::Method::PATCH,
                &format!("/api/downloads/{id}"),
                Some(json!({"speed_limit_bps": 1024})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        svc.action(&id, "resume").await;
        svc.wait_until(&id, Duration::from_secs(20), name, |d| {
            d["bytes_done"].as_u64() > Some(0)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let (s, v) = svc.action(&id, "pause").await;
        let took = t.elapsed();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["state"], "paused");
        assert!(
            took < Duration::from_secs(3),
            "{name}: the pause waited {took:?} for the speed limit"
        );
    }
}

#[actix_web::test]
async fn ten_thousand_downloads_page_and_restart() {
    let svc = TestService::start(|_| {}).await;
    let items: Vec<Value> = (0..10_000)
        .map(|i| json!({"url": format!("http://127.0.0.1:9/f{i}.bin"), "start_paused": true}))
        .collect();
    let t = Instant::now();
    let (s, v) = svc
        .post("/api/downloads", json!({"downloads": items}))
        .await;
    assert_eq!(s, 201, "{}", &v.to_string()[..200.min(v.to_string().len())]);
    let ids: Vec<String> = v["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10_000);
    println!("batch add of 10,000: {:?}", t.elapsed());

    // Page through all of them, 100 at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut worst = Duration::ZERO;
    loop {
        let q = match &after {
            Some(a) => format!("/api/downloads?limit=100&after={a}"),
            None => "/api/downloads?limit=100".into(),
        };
        let t = Instant::now();
        let (s, page) = svc.get(&q).await;
        worst = worst.max(t.elapsed());
        assert_eq!(s, 200, "{page}");
        let ds = page["downloads"].as_array().unwrap();
        assert!(ds.len() <= 100, "a page of {}", ds.len());
        seen.extend(
            ds.iter()
                .map(|d| d["file_name"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    println!("slowest page of 100 (debug build): {worst:?}");
    let want: Vec<String> = (0..10_000).map(|i| format!("f{i}.bin")).collect();
    assert_eq!(seen, want, "every download once, in queue order");

    let (_, page) = svc.get("/api/downloads?state=queued&limit=5").await;
    assert_eq!(page["downloads"], json!([]));
    let (s, _) = svc.get("/api/downloads?limit=0").await;
    assert_eq!(s, 400);
    let (s, _) = svc.get("/api/downloads?after=dl_nope").await;
    assert_eq!(s, 400);

    // A restart loads them all.
    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    let t = Instant::now();
    let svc = TestService::start_in(dir, config).await;
    println!(
        "start-up with 10,000 records (debug build): {:?}",
        t.elapsed()
    );
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(stats["paused"], 10_000);

    // With this many records the database is opened a second time after the start-up
    // scan (to give sled's pages back): what the service writes then must last.
    let (s, v) = svc.action(&ids[0], "cancel").await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = svc.delete(&format!("/api/downloads/{}", ids[1])).await;
    assert_eq!(s, 204);
    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    let svc = TestService::start_in(dir, config).await;
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(stats["paused"], 9_998, "{stats}");
    assert_eq!(svc.download(&ids[0]).await["state"], "cancelled");
    let (s, _) = svc.get(&format!("/api/downloads/{}", ids[1])).await;
    assert_eq!(s, 404);
}
