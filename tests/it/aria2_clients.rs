//! aria2 JSON-RPC with the clients people run: the real aria2p (library and CLI),
//! AriaNg's exact call sequence, websocket notifications for downloads started from
//! REST and from RPC, and the origin, CORS and token rules a browser page meets.

use crate::common;
use crate::common::rpc;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::service::*;
use common::upstream::{Behavior, Upstream};
use futures_util::{SinkExt, StreamExt};
use model_manager::doors::aria2::gid_of;
use rpc::Rpc;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const TOKEN: &str = "s3cret-token";
const LISTED: &str = "http://ariang.example:6880";
const WAIT: Duration = Duration::from_secs(20);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn files(up: &Upstream) {
    up.add_file("fast.bin", content(200_000, 1), Behavior::default());
    up.add_file("fast2.bin", content(200_000, 2), Behavior::default());
    for i in 0..4 {
        let slow = Behavior {
            rate_bps: Some(100_000),
            ..Behavior::default()
        };
        up.add_file(&format!("slow{i}.bin"), content(4 * MIB, 10 + i), slow);
    }
}

async fn secured() -> (TestService, Upstream, Rpc) {
    let up = Upstream::start();
    files(&up);
    let svc = TestService::start(|c| {
        c.server.api_token = TOKEN.into();
        c.server.allowed_origins = vec![LISTED.into()];
    })
    .await;
    let rpc = Rpc::new(&svc.base, Some(TOKEN));
    (svc, up, rpc)
}

/// A websocket to `path`, with `origin` when given; the handshake's status on refusal.
async fn ws(base: &str, path: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("{}{path}", base.replace("http://", "ws://"))
        .into_client_request()
        .expect("ws request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("origin"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// The next JSON text message, or None after `timeout`.
async fn next_json(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A call over the websocket; notifications that come first are kept in `seen`.
async fn ws_call(
    ws: &mut Ws,
    id: &str,
    method: &str,
    params: Value,
    seen: &mut Vec<Value>,
) -> Value {
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    loop {
        let v = next_json(ws, WAIT).await.expect("an answer");
        if v["id"] == id {
            return v;
        }
        seen.push(v);
    }
}

/// The real aria2p from PyPI, as a library and as its CLI (`add`, `show`, `pause`,
/// `resume`, `remove`): every action shows in REST, and its numbers agree with it.
#[actix_web::test]
async fn aria2p_library_and_cli_agree_with_rest() {
    let (svc, up, _) = secured().await;
    let port = svc.base.rsplit(':').next().unwrap().to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aria2/aria2p_check.py");
    let args = vec![
        script.to_owned(),
        port,
        TOKEN.to_owned(),
        svc.base.clone(),
        up.url("fast.bin"),
        up.url("slow0.bin"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(&args).output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/test.sh installs aria2p)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "aria2p check failed:\n{text}");
    assert!(text.contains("agree with REST"), "{text}");
}

/// onDownloadStart, onDownloadPause, onDownloadStop, onDownloadComplete and
/// onDownloadError on the /jsonrpc websocket, for downloads added by REST and by RPC.
#[actix_web::test]
async fn websocket_notifications_for_rest_and_rpc_downloads() {
    let (svc, up, _) = secured().await;
    let mut ws = ws(&svc.base, "/jsonrpc", None).await.expect("websocket");
    let tok = format!("token:{TOKEN}");
    let mut seen = Vec::new();
    let mut want: HashSet<(String, String)> = HashSet::new();
    let mut expect = |gid: &str, events: &[&str]| {
        for e in events {
            want.insert((format!("aria2.{e}"), gid.to_owned()));
        }
    };
    // REST: one completes, one is paused then cancelled, one fails (404).
    let bearer = format!("Bearer {TOKEN}");
    let add = |body: Value| {
        let (client, url, bearer) = (
            svc.client.clone(),
            svc.url("/api/downloads"),
            bearer.clone(),
        );
        async move {
            let r = client
                .post(url)
                .header("authorization", bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            gid_of(r.json::<Value>().await.unwrap()["id"].as_str().unwrap())
        }
    };
    let rest_fast = add(json!({"url": up.url("fast.bin")})).await;
    let rest_slow = add(json!({"url": up.url("slow0.bin")})).await;
    let rest_bad = add(json!({"url": up.url("missing.bin")})).await;
    expect(&rest_fast, &["onDownloadStart", "onDownloadComplete"]);
    expect(
        &rest_slow,
        &["onDownloadStart", "onDownloadPause", "onDownloadStop"],
    );
    expect(&rest_bad, &["onDownloadError"]);
    // RPC, over the same websocket.
    let mut gids = Vec::new();
    for (i, url) in [
        up.url("fast2.bin"),
        up.url("slow1.bin"),
        up.url("missing2.bin"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = ws_call(
            &mut ws,
            &format!("add{i}"),
            "aria2.addUri",
            json!([tok, [url]]),
            &mut seen,
        )
        .await;
        gids.push(r["result"].as_str().expect("a gid").to_owned());
    }
    expect(&gids[0], &["onDownloadStart", "onDownloadComplete"]);
    expect(
        &gids[1],
        &["onDownloadStart", "onDownloadPause", "onDownloadStop"],
    );
    expect(&gids[2], &["onDownloadError"]);
    let rpc = Rpc::new(&svc.base, Some(TOKEN));
    for gid in [&rest_slow, &gids[1]] {
        rpc.wait_status(gid, "active", WAIT).await;
        rpc.ok("aria2.pause", json!([gid])).await;
        rpc.wait_status(gid, "paused", WAIT).await;
        rpc.ok("aria2.remove", json!([gid])).await;
    }
    let deadline = Instant::now() + WAIT;
    let mut got: HashSet<(String, String)> = HashSet::new();
    let note = |v: &Value, got: &mut HashSet<(String, String)>| {
        if let (Some(m), Some(g)) = (v["method"].as_str(), v["params"][0]["gid"].as_str()) {
            got.insert((m.to_owned(), g.to_owned()));
        }
    };
    for v in &seen {
        note(v, &mut got);
    }
    while !want.is_subset(&got) && Instant::now() < deadline {
        if let Some(v) = next_json(&mut ws, Duration::from_millis(500)).await {
            assert_eq!(v["jsonrpc"], "2.0", "{v}");
            note(&v, &mut got);
        }
    }
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(missing.is_empty(), "never told: {missing:?}; told: {got:?}");
}

/// A cross-origin POST, preflight and websocket upgrade are refused, and accepted
/// (with CORS) from an origin in allowed_origins, on /jsonrpc and the REST API alike;
/// a wrong or missing token is "Unauthorized" and never reveals a download.
#[actix_web::test]
async fn origins_cors_and_the_token() {
    let (svc, up, rpc) = secured().await;
    let gid = rpc
        .ok(
            "aria2.addUri",
            json!([[up.url("slow0.bin")], {"pause": "true", "out": "secret-name.bin"}]),
        )
        .await;
    let gid = gid.as_str().unwrap().to_owned();
    let c = &svc.client;
    let url = svc.url("/jsonrpc");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "aria2.tellWaiting", "params": [format!("token:{TOKEN}"), 0, 10]}).to_string();
    let r = c
        .post(&url)
        .header("origin", "http://evil.example")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a foreign origin is refused");
    let r = c
        .post(&url)
        .header("origin", LISTED)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(LISTED)
    );
    assert_eq!(r.json::<Value>().await.unwrap()["result"][0]["gid"], gid);
    // A GET carries calls too: a foreign page's, and one a <script> or <img> of another
    // site makes (no Origin; the browser says where it came from), are refused.
    let query = format!(
        "{url}?method=aria2.getGlobalStat&id=1&params={}",
        base64::engine::general_purpose::STANDARD.encode(format!("[\"token:{TOKEN}\"]"))
    );
    let r = c
        .get(&query)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .get(&query)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .get(&query)
        .header("sec-fetch-site", "cross-site")
        .header("origin", LISTED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(&query)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight(LISTED).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        (
            h("access-control-allow-origin").as_deref(),
            h("access-control-allow-headers").as_deref()
        ),
        (Some(LISTED), Some("content-type"))
    );
    assert!(h("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert_eq!(
        preflight("http://evil.example")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        ws(&svc.base, "/jsonrpc", Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        ws(&svc.base, "/jsonrpc", Some(LISTED)).await.is_ok(),
        "a listed origin opens the websocket"
    );
    // The REST API and its websocket follow the same list.
    let events = format!("/api/events?token={TOKEN}");
    assert_eq!(
        ws(&svc.base, &events, Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert!(ws(&svc.base, &events, Some(LISTED)).await.is_ok());
    let pause_all = |origin: &'static str| {
        c.post(svc.url("/api/pause-all"))
            .header("origin", origin)
            .header("authorization", format!("Bearer {TOKEN}"))
            .json(&json!({}))
            .send()
    };
    assert_eq!(
        pause_all("http://evil.example")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(pause_all(LISTED).await.unwrap().status().as_u16(), 200);

    // A wrong or missing token: Unauthorized, and nothing about the download.
    for bad in [
        Rpc::new(&svc.base, Some("wrong")),
        Rpc::new(&svc.base, None),
    ] {
        for (method, params) in [
            ("aria2.tellWaiting", json!([0, 10])),
            ("aria2.tellActive", json!([])),
            ("aria2.tellStatus", json!([gid])),
            ("aria2.getGlobalStat", json!([])),
            ("aria2.unpause", json!([gid])),
        ] {
            let (status, v) = bad.call(method, params).await;
            assert_eq!(
                (
                    status,
                    v["error"]["code"].as_i64(),
                    v["error"]["message"].as_str()
                ),
                (400, Some(1), Some("Unauthorized")),
                "{method}: {v}"
            );
            let text = v.to_string();
            assert!(
                !text.contains(&gid) && !text.contains("secret-name"),
                "{text}"
            );
        }
        let inner = json!([[
            {"methodName": "aria2.tellStatus", "params": ["token:wrong", gid]},
            {"methodName": "aria2.tellStatus", "params": [gid]},
        ]]);
        let multi = bad.ok("system.multicall", inner).await;
        let no = json!({"code": 1, "message": "Unauthorized"});
        assert_eq!(multi, json!([no, no]));
    }
    assert_eq!(
        rpc.status(&gid).await["status"],
        "paused",
        "the unpause with a wrong token did nothing"
    );
    assert!(Rpc::new(&svc.base, None)
        .ok("system.listMethods", json!([]))
        .await
        .is_array());
    let good = json!([[{"methodName": "aria2.tellStatus", "params": [format!("token:{TOKEN}"), gid, ["status"]]}]]);
    assert_eq!(
        Rpc::new(&svc.base, None).ok("system.multicall", good).await,
        json!([[{"status": "paused"}]])
    );
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 is refused too.
    let r = c
        .post(&url)
        .header("host", "evil.example:6800")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // aria2 clients send no Content-Type: accepted here (the REST API wants JSON).
    let r = c
        .post(&url)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"system.listNotifications"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Digits, as AriaNg's parseInt needs them.
fn number(v: &Value, key: &str) {
    assert!(
        v[key]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())),
        "{key} in {v}"
    );
}

/// AriaNg's keys (aria2RpcService.getBasicTaskParams / getFullTaskParams).
const BASIC: [&str; 12] = [
    "gid",
    "totalLength",
    "completedLength",
    "uploadSpeed",
    "downloadSpeed",
    "connections",
    "numSeeders",
    "seeder",
    "status",
    "errorCode",
    "verifiedLength",
    "verifyIntegrityPending",
];

fn full_keys() -> Vec<&'static str> {
    let mut k = BASIC.to_vec();
    k.extend(["files", "bittorrent", "infoHash"]);
    k
}

/// What AriaNg's list page reads of a task (aria2TaskService.processDownloadTask).
fn check_task(t: &Value, full: bool) {
    for k in [
        "totalLength",
        "completedLength",
        "uploadSpeed",
        "downloadSpeed",
        "connections",
        "numSeeders",
    ] {
        number(t, k);
    }
    assert!(
        t["gid"].as_str().is_some_and(|g| g.len() == 16) && t["status"].is_string(),
        "{t}"
    );
    assert!(
        matches!(t["seeder"].as_str(), Some("true" | "false")),
        "{t}"
    );
    assert!(
        t.get("bittorrent").is_none() && t.get("infoHash").is_none(),
        "no BitTorrent keys: {t}"
    );
    if matches!(t["status"].as_str(), Some("complete" | "error" | "removed")) {
        number(t, "errorCode");
    }
    if full {
        let f = &t["files"][0];
        for k in ["length", "completedLength"] {
            number(f, k);
        }
        assert!(
            f["path"].as_str().is_some_and(|p| p.starts_with('/')) && f["selected"] == "true",
            "{f}"
        );
        assert!(
            f["uris"][0]["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://")),
            "{f}"
        );
    } else {
        assert!(t.get("files").is_none(), "keys filter: {t}");
    }
}

/// The calls AriaNg makes when its main page opens and every second after, in its own
/// three transports (POST with JSON, GET with base64 params, websocket), from a hosted
/// origin: every key its page reads is there, and it lists the running download.
#[actix_web::test]
async fn ariang_call_sequence_is_answered_with_every_key_it_reads() {
    let (svc, up, rpc) = secured().await;
    let rest = svc
        .client
        .post(svc.url("/api/downloads"))
        .header("authorization", format!("Bearer {TOKEN}"));
    let r = rest
        .json(&json!({"url": up.url("slow0.bin")}))
        .send()
        .await
        .unwrap();
    let running = gid_of(r.json::<Value>().await.unwrap()["id"].as_str().unwrap());
    let done = rpc.ok("aria2.addUri", json!([[up.url("fast.bin")]])).await;
    let paused = rpc
        .ok(
            "aria2.addUri",
            json!([[up.url("slow1.bin")], {"pause": "true"}]),
        )
        .await;
    rpc.wait_status(done.as_str().unwrap(), "complete", WAIT)
        .await;
    rpc.wait_status(&running, "active", WAIT).await;
    let tok = format!("token:{TOKEN}");
    let full = full_keys();
    // main.js refreshGlobalStat, then list.js refreshDownloadTask (full keys first).
    let mut sequence = vec![
        ("aria2.getGlobalStat", json!([tok])),
        ("aria2.tellActive", json!([tok, full])),
    ];
    for _ in 0..2 {
        sequence.push(("aria2.getGlobalStat", json!([tok])));
        sequence.push(("aria2.tellActive", json!([tok, BASIC])));
    }
    sequence.push(("aria2.tellWaiting", json!([tok, 0, 1000, full])));
    sequence.push(("aria2.tellStopped", json!([tok, -1, 1000, full])));
    let mut ws = ws(&svc.base, "/jsonrpc", Some(LISTED))
        .await
        .expect("websocket");
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    for (i, (method, params)) in sequence.iter().enumerate() {
        let id = format!("ariang-{i}");
        let body = json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params});
        let post = svc
            .client
            .post(svc.url("/jsonrpc"))
            .header("origin", LISTED)
            .header("content-type", "application/json")
            .body(body.to_string());
        let via_post: Value = post.send().await.unwrap().json().await.unwrap();
        let query = format!(
            "/jsonrpc?jsonrpc=2.0&method={method}&id={id}&params={}",
            percent_encode(&b64(params))
        );
        let via_get: Value = svc
            .client
            .get(svc.url(&query))
            .header("origin", LISTED)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let via_ws = ws_call(&mut ws, &id, method, params.clone(), &mut Vec::new()).await;
        for answer in [&via_post, &via_get, &via_ws] {
            assert_eq!(answer["id"], id.as_str(), "{answer}");
            let result = &answer["result"];
            if *method == "aria2.getGlobalStat" {
                for k in [
                    "downloadSpeed",
                    "uploadSpeed",
                    "numActive",
                    "numWaiting",
                    "numStopped",
                    "numStoppedTotal",
                ] {
                    number(result, k);
                }
                continue;
            }
            let tasks = result
                .as_array()
                .unwrap_or_else(|| panic!("{method}: {answer}"));
            let has_files = params
                .as_array()
                .unwrap()
                .last()
                .is_some_and(|k| k.to_string().contains("files"));
            for t in tasks {
                check_task(t, has_files);
            }
            let gids: Vec<&str> = tasks.iter().filter_map(|t| t["gid"].as_str()).collect();
            match *method {
                "aria2.tellActive" => {
                    assert_eq!(gids, [running.as_str()], "the running download is listed")
                }
                "aria2.tellWaiting" => assert_eq!(gids, [paused.as_str().unwrap()]),
                _ => assert_eq!(gids, [done.as_str().unwrap()]),
            }
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}
