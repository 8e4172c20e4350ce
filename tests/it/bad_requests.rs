//! Every bad input gets the contract's status and JSON error, and changes nothing.

use crate::common;

use common::service::*;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn raw(
    svc: &TestService,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = svc
        .client
        .request(method, svc.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let svc = TestService::start(|_| {}).await;
    let post = reqwest::Method::POST;

    let (s, b) = raw(
        &svc,
        post.clone(),
        "/api/downloads",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");

    let (s, b) = raw(
        &svc,
        post.clone(),
        "/api/downloads",
        "application/x-www-form-urlencoded",
        b"url=http://x/y".to_vec(),
    )
    .await;
    assert_error(s, &b, 415, "unsupported_media_type");

    let big = format!(
        "{{\"url\": \"http://127.0.0.1/x\", \"file_name\": \"{}\"}}",
        "a".repeat(2 * MIB)
    );
    let (s, b) = raw(
        &svc,
        post.clone(),
        "/api/downloads",
        "application/json",
        big.into_bytes(),
    )
    .await;
    assert_error(s, &b, 413, "payload_too_large");

    for url in [
        "file:///etc/passwd",
        "ftp://example.com/x.bin",
        "not a url",
        "http:///nohost",
    ] {
        let (s, b) = svc.post("/api/downloads", json!({"url": url})).await;
        assert_error(s, &b, 422, "invalid_request");
    }
    let (s, b) = svc
        .post("/api/downloads", json!({"url": "http://127.0.0.1:9/"}))
        .await;
    assert_error(s, &b, 422, "invalid_request");

    for name in [
        "../x", "/abs", ".hidden", "a\u{0}b", "a/b", "a\\b", "CON", "x\ny",
    ] {
        let (s, b) = svc
            .post(
                "/api/downloads",
                json!({"url": "http://127.0.0.1:9/f.bin", "file_name": name}),
            )
            .await;
        assert_error(s, &b, 422, "invalid_request");
    }
    for sha in ["abc", "zz".repeat(32).as_str(), &"a".repeat(65)] {
        let (s, b) = svc
            .post(
                "/api/downloads",
                json!({"url": "http://127.0.0.1:9/f.bin", "sha256": sha}),
            )
            .await;
        assert_error(s, &b, 400, "bad_request");
    }
    let (s, b) = svc
        .post(
            "/api/downloads",
            json!({"url": "http://127.0.0.1:9/f.bin", "sha265": "typo"}),
        )
        .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = svc.post("/api/downloads", json!({})).await;
    assert_error(s, &b, 400, "bad_request");

    let unknown = "dl_01JD3XXXXXXXXXXXXXXXXXXXXX";
    let (s, b) = svc.get(&format!("/api/downloads/{unknown}")).await;
    assert_error(s, &b, 404, "not_found");
    for action in ["pause", "resume", "cancel", "retry"] {
        let (s, b) = svc.action(unknown, action).await;
        assert_error(s, &b, 404, "not_found");
    }
    let (s, b) = svc.delete(&format!("/api/downloads/{unknown}")).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = svc.get("/api/nope").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = svc.get("/api/history?state=queued").await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = svc.get("/api/history?limit=-1").await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = svc
        .call(
            reqwest::Method::PATCH,
            "/api/settings",
            Some(json!({"max_concurrent": 0})),
        )
        .await;
    assert_error(s, &b, 400, "bad_request");

    // Nothing was added, written, or changed.
    let (_, list) = svc.get("/api/downloads").await;
    assert_eq!(list["downloads"], json!([]));
    assert!(
        tree(&svc.download_dir()).is_empty(),
        "{:?}",
        tree(&svc.download_dir())
    );
    let (_, settings) = svc.get("/api/settings").await;
    assert_eq!(settings["max_concurrent"], 3);
}

#[actix_web::test]
async fn settings_change_and_persist() {
    let svc = TestService::start(|_| {}).await;
    let (s, v) = svc
        .call(
            reqwest::Method::PATCH,
            "/api/settings",
            Some(json!({"max_concurrent": 5, "max_retries": 7})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["max_concurrent"], 5);
    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    let svc = TestService::start_in(dir, config).await;
    let (_, v) = svc.get("/api/settings").await;
    assert_eq!(v["max_concurrent"], 5);
    assert_eq!(v["max_retries"], 7);
}
