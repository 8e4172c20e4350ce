//! Operating the service: Prometheus metrics, and a database that cannot be opened.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::binary::*;
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::json;

/// Parses the text exposition format into `name{labels}` → value.
fn scrape_text(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(key.to_owned(), v).is_none(),
            "duplicate series {key}"
        );
    }
    out
}

async fn scrape(svc: &TestService) -> HashMap<String, f64> {
    let resp = svc.client.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    scrape_text(&resp.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[actix_web::test]
async fn metrics_move_as_downloads_run() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let before = scrape(&svc).await;
    assert_eq!(get(&before, "mm_downloads{state=\"completed\"}"), 0.0);

    let data = content(3 * MIB, 1);
    up.add_file(
        "m.bin",
        data.clone(),
        Behavior {
            fail_first: vec![(503, None)],
            ..Default::default()
        },
    );
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{}/api/events", svc.base.replace("http", "ws")))
            .await
            .unwrap();
    let id = svc.add(json!({"url": up.url("m.bin")})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let after = scrape(&svc).await;
    let bytes =
        get(&after, "mm_downloaded_bytes_total") - get(&before, "mm_downloaded_bytes_total");
    assert!(bytes >= data.len() as f64, "bytes counter moved by {bytes}");
    assert_eq!(get(&after, "mm_downloads{state=\"completed\"}"), 1.0);
    assert_eq!(get(&after, "mm_downloads{state=\"queued\"}"), 0.0);
    assert!(
        get(&after, "mm_retries_total{kind=\"http_status\"}") >= 1.0,
        "{after:?}"
    );
    assert_eq!(get(&after, "mm_websocket_clients"), 1.0);
    assert_eq!(get(&after, "mm_active_connections"), 0.0);
    let posts = get(
        &after,
        "mm_http_request_duration_seconds_count{route=\"/api/downloads\"}",
    );
    assert!(posts >= 1.0, "{after:?}");
    let by_id = get(
        &after,
        "mm_http_request_duration_seconds_count{route=\"/api/downloads/{id}\"}",
    );
    assert!(by_id >= 1.0, "one series per route pattern, not per id");
    drop(ws);
}

#[actix_web::test]
async fn active_connections_are_counted_while_they_run() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    up.add_file(
        "slow.bin",
        content(64 * MIB, 2),
        Behavior {
            rate_bps: Some(4 * MIB as u64),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("slow.bin")})).await;
    svc.wait_until(&id, Duration::from_secs(20), "bytes", |d| {
        d["bytes_done"].as_u64().unwrap() > 2 * MIB as u64
    })
    .await;
    let m = scrape(&svc).await;
    assert_eq!(get(&m, "mm_active_connections"), 4.0, "{m:?}");
    svc.action(&id, "pause").await;
    let m = scrape(&svc).await;
    assert_eq!(get(&m, "mm_active_connections"), 0.0);
}

#[test]
fn a_corrupt_database_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let free = format!("127.0.0.1:{}", free_port());
    // A database directory full of garbage where sled expects its files.
    std::fs::create_dir_all(d.join("data/v1")).unwrap();
    std::fs::write(
        d.join("data/v1/conf"),
        b"\xff\xfe not a sled config \x00\x01",
    )
    .unwrap();
    std::fs::write(d.join("data/v1/db"), vec![0xAB; 4096]).unwrap();
    let (code, err) = run_to_exit(
        &[
            "--bind",
            &free,
            "--data-dir",
            "data",
            "--download-dir",
            "dl",
        ],
        &[],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("database"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[actix_web::test]
async fn the_openapi_description_covers_every_route() {
    let svc = TestService::start(|_| {}).await;
    let (s, spec) = svc.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/downloads", "get"),
        ("/api/downloads", "post"),
        ("/api/downloads/{id}", "get"),
        ("/api/downloads/{id}", "patch"),
        ("/api/downloads/{id}", "delete"),
        ("/api/downloads/{id}/pause", "post"),
        ("/api/downloads/{id}/resume", "post"),
        ("/api/downloads/{id}/cancel", "post"),
        ("/api/downloads/{id}/retry", "post"),
        ("/api/downloads/{id}/move", "post"),
        ("/api/pause-all", "post"),
        ("/api/resume-all", "post"),
        ("/api/history", "get"),
        ("/api/history", "delete"),
        ("/api/settings", "get"),
        ("/api/settings", "patch"),
        ("/api/stats", "get"),
        ("/api/hub/search", "get"),
        ("/api/hub/models/{owner}/{name}/files", "get"),
        ("/api/hub/models/{owner}/{name}/download", "post"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"]["default"].is_object(),
            "{method} {path} lacks the error shape"
        );
    }
    let view = &spec["components"]["schemas"]["DownloadView"]["properties"];
    for field in [
        "id",
        "url",
        "file_name",
        "path",
        "state",
        "position",
        "bytes_done",
        "bytes_total",
        "speed_bps",
        "eta_secs",
        "elapsed_secs",
        "attempt",
        "next_retry_at",
        "sha256",
        "error",
        "source",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert!(
            view[field].is_object(),
            "DownloadView.{field} is not documented"
        );
    }
}
