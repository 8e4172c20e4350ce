//! aria2 JSON-RPC, protocol level: every method of the contract in aria2's shapes,
//! batches and multicall with mixed results, GET with base64 params, keys filtering,
//! aria2's pagination, every error code, and a GID that survives a restart.

use crate::common;
use crate::common::rpc;

use std::time::Duration;

use base64::Engine as _;
use common::service::*;
use common::upstream::{Behavior, Upstream};
use rpc::Rpc;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn slow() -> Behavior {
    Behavior {
        rate_bps: Some(100_000),
        ..Behavior::default()
    }
}

/// A service, an upstream with a fast and some slow files, and an RPC client.
async fn setup(
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> (TestService, Upstream, Rpc) {
    let up = Upstream::start();
    up.add_file("fast.bin", content(300_000, 1), Behavior::default());
    for i in 0..5 {
        up.add_file(&format!("slow{i}.bin"), content(4 * MIB, 10 + i), slow());
    }
    let svc = TestService::start(tweak).await;
    let rpc = Rpc::new(&svc.base, None);
    (svc, up, rpc)
}

/// Every method of the contract, each with its shape: addUri with `out`, `dir`,
/// `checksum` and `max-download-limit`; tellStatus (keys), getFiles, getUris,
/// getGlobalStat, getVersion, the option methods, listMethods, listNotifications.
#[actix_web::test]
async fn each_method_answers_in_aria2_shapes() {
    let (svc, up, rpc) = setup(|_| {}).await;
    let data = content(300_000, 1);
    let sha = sha256_hex(&data);
    let opts =
        json!({"out": "renamed.bin", "dir": "models/sub", "checksum": format!("sha-256={sha}")});
    let gid = rpc
        .ok("aria2.addUri", json!([[up.url("fast.bin")], opts]))
        .await;
    let gid = gid.as_str().expect("a gid").to_owned();
    assert!(
        gid.len() == 16 && gid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{gid}"
    );
    let done = rpc.wait_status(&gid, "complete", WAIT).await;
    let root = svc.download_dir().canonicalize().unwrap();
    assert_eq!(done["totalLength"], "300000");
    assert_eq!(done["completedLength"], "300000");
    assert_eq!(done["dir"], root.join("models/sub").display().to_string());
    assert_eq!(done["errorCode"], "0");
    assert!(
        done.get("bittorrent").is_none() && done.get("infoHash").is_none(),
        "{done}"
    );
    assert_eq!(
        std::fs::read(root.join("models/sub/renamed.bin")).unwrap(),
        data
    );
    let (_, list) = svc.get("/api/downloads").await;
    let rest = &list["downloads"][0];
    assert_eq!(
        (rest["path"].as_str(), rest["sha256"].as_str()),
        (Some("models/sub/renamed.bin"), Some(sha.as_str()))
    );
    assert_eq!(
        model_manager::doors::aria2::gid_of(rest["id"].as_str().unwrap()),
        gid
    );

    let keys = rpc
        .ok(
            "aria2.tellStatus",
            json!([gid, ["gid", "status", "totalLength"]]),
        )
        .await;
    assert_eq!(
        keys,
        json!({"gid": gid, "status": "complete", "totalLength": "300000"})
    );
    let files = rpc.ok("aria2.getFiles", json!([gid])).await;
    assert_eq!(
        files[0]["path"],
        root.join("models/sub/renamed.bin").display().to_string()
    );
    assert_eq!(
        (files[0]["length"].as_str(), files[0]["selected"].as_str()),
        (Some("300000"), Some("true"))
    );
    assert_eq!(files[0]["uris"][0]["uri"], up.url("fast.bin"));
    let uris = rpc.ok("aria2.getUris", json!([gid])).await;
    assert_eq!(
        uris,
        json!([{"uri": up.url("fast.bin"), "status": "waiting"}])
    );
    let opt = rpc.ok("aria2.getOption", json!([gid])).await;
    assert_eq!(
        (opt["out"].as_str(), opt["checksum"].as_str()),
        (Some("renamed.bin"), Some(format!("sha-256={sha}").as_str()))
    );

    let version = rpc.ok("aria2.getVersion", json!([])).await;
    assert!(
        version["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{version}"
    );
    let stat = rpc.ok("aria2.getGlobalStat", json!([])).await;
    assert_eq!(
        (stat["numStopped"].as_str(), stat["numActive"].as_str()),
        (Some("1"), Some("0")),
        "{stat}"
    );
    let methods = rpc.ok("system.listMethods", json!([])).await;
    for m in [
        "aria2.addUri",
        "aria2.tellWaiting",
        "aria2.changePosition",
        "aria2.changeGlobalOption",
        "aria2.purgeDownloadResult",
        "system.multicall",
    ] {
        assert!(
            methods.as_array().unwrap().contains(&json!(m)),
            "{m} in {methods}"
        );
    }
    let notes = rpc.ok("system.listNotifications", json!([])).await;
    assert!(
        notes
            .as_array()
            .unwrap()
            .contains(&json!("aria2.onDownloadError")),
        "{notes}"
    );

    // Global options map onto the run-time settings.
    let set = json!([{"max-concurrent-downloads": "2", "max-overall-download-limit": "1M", "split": "3"}]);
    assert_eq!(rpc.ok("aria2.changeGlobalOption", set).await, "OK");
    let (_, settings) = svc.get("/api/settings").await;
    assert_eq!(
        (
            settings["max_concurrent"].as_u64(),
            settings["speed_limit_bps"].as_u64(),
            settings["connections_per_download"].as_u64()
        ),
        (Some(2), Some(1024 * 1024), Some(3)),
        "{settings}"
    );
    let global = rpc.ok("aria2.getGlobalOption", json!([])).await;
    assert_eq!(
        (
            global["max-concurrent-downloads"].as_str(),
            global["split"].as_str()
        ),
        (Some("2"), Some("3"))
    );
    assert_eq!(global["dir"], root.display().to_string());
    let bad = rpc
        .fails(
            "aria2.changeGlobalOption",
            json!([{"max-overall-download-limit": "fast"}]),
        )
        .await;
    assert!(bad.contains("max-overall-download-limit"), "{bad}");
    let _ = up;
}

/// `max-download-limit` and `pause` on addUri, changeOption, and the refusals of
/// what would leave download_dir or is not sha-256.
#[actix_web::test]
async fn download_options_map_and_bad_ones_are_refused() {
    let (svc, up, rpc) = setup(|_| {}).await;
    let opts = json!({"max-download-limit": "500K", "pause": "true", "split": "2"});
    let gid = rpc
        .ok("aria2.addUri", json!([[up.url("slow0.bin")], opts]))
        .await;
    let gid = gid.as_str().unwrap();
    let (_, list) = svc.get("/api/downloads").await;
    let d = &list["downloads"][0];
    assert_eq!(
        (
            d["state"].as_str(),
            d["speed_limit_bps"].as_u64(),
            d["connections"].as_u64()
        ),
        (Some("paused"), Some(500 * 1024), Some(2)),
        "{d}"
    );
    assert_eq!(rpc.ok("aria2.getOption", json!([gid])).await["split"], "2");
    assert_eq!(
        rpc.ok(
            "aria2.changeOption",
            json!([gid, {"max-download-limit": "2M"}])
        )
        .await,
        "OK"
    );
    assert_eq!(
        svc.download(d["id"].as_str().unwrap()).await["speed_limit_bps"],
        2 * 1024 * 1024
    );
    assert_eq!(
        rpc.ok("aria2.getOption", json!([gid])).await["max-download-limit"],
        (2 * 1024 * 1024).to_string()
    );
    let url = up.url("slow1.bin");
    let outside = svc.dir.path().join("elsewhere").display().to_string();
    for (opts, why) in [
        (json!({"dir": "../escape"}), "dir"),
        (json!({"dir": outside}), "dir"),
        (json!({"out": "../x.bin"}), "out"),
        (json!({"out": ".hidden"}), "out"),
        (json!({"checksum": "md5=0123"}), "sha-256"),
        (json!({"checksum": "sha-256=abc"}), "sha256"),
        (json!({"max-download-limit": "1G"}), "max-download-limit"),
        (json!({"split": "0"}), "split"),
    ] {
        let msg = rpc.fails("aria2.addUri", json!([[url], opts])).await;
        assert!(msg.contains(why), "{opts}: {msg}");
    }
    assert!(rpc
        .fails("aria2.addUri", json!([["ftp://h/x.bin"]]))
        .await
        .contains("scheme"));
    assert!(rpc
        .fails("aria2.addUri", json!([[]]))
        .await
        .contains("no URI"));
    // Every URI of the list is a mirror of the same file: a refused one refuses the call,
    // though only the first is fetched; so does an entry that is no string.
    let msg = rpc
        .fails("aria2.addUri", json!([[url, "file:///etc/passwd"]]))
        .await;
    assert!(msg.contains("scheme"), "{msg}");
    let msg = rpc.fails("aria2.addUri", json!([[url, 7]])).await;
    assert!(msg.contains("URI"), "{msg}");
    let (_, list) = svc.get("/api/downloads").await;
    assert_eq!(
        list["downloads"].as_array().map(Vec::len),
        Some(1),
        "nothing else was added: {list}"
    );
    assert!(!svc.dir.path().join("escape").exists() && !svc.dir.path().join("elsewhere").exists());
}

async fn gids_of(rpc: &Rpc, method: &str, params: Value) -> Vec<String> {
    let list = rpc.ok(method, params).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["gid"].as_str().unwrap().to_owned())
        .collect()
}

/// The queue through aria2's eyes: tellActive, tellWaiting with paused ones and
/// negative offsets, changePosition in its three modes, pause/unpause/remove,
/// tellStopped, removeDownloadResult and purgeDownloadResult.
#[actix_web::test]
async fn the_queue_pages_moves_and_steers_as_aria2s() {
    let (svc, up, rpc) = setup(|c| c.downloads.max_concurrent = 1).await;
    let mut g = Vec::new();
    for i in 0..5 {
        let gid = rpc
            .ok("aria2.addUri", json!([[up.url(&format!("slow{i}.bin"))]]))
            .await;
        g.push(gid.as_str().unwrap().to_owned());
    }
    rpc.wait_status(&g[0], "active", WAIT).await;
    assert_eq!(
        gids_of(&rpc, "aria2.tellActive", json!([["gid"]])).await,
        [g[0].clone()]
    );
    assert_eq!(
        gids_of(&rpc, "aria2.tellWaiting", json!([0, 1000])).await,
        g[1..].to_vec()
    );
    // Negative offsets count from the end and come in reverse.
    assert_eq!(
        gids_of(&rpc, "aria2.tellWaiting", json!([-1, 2])).await,
        [g[4].clone(), g[3].clone()]
    );
    assert_eq!(
        gids_of(&rpc, "aria2.tellWaiting", json!([1, 2])).await,
        g[2..4].to_vec()
    );
    assert!(gids_of(&rpc, "aria2.tellWaiting", json!([-10, 2]))
        .await
        .is_empty());

    // changePosition: POS_END 0 → last; POS_SET 0 → first; POS_CUR -1 → one up.
    assert_eq!(
        rpc.ok("aria2.changePosition", json!([g[1], 0, "POS_END"]))
            .await,
        3
    );
    assert_eq!(
        gids_of(&rpc, "aria2.tellWaiting", json!([0, 9])).await,
        [&g[2], &g[3], &g[4], &g[1]].map(|s| s.clone())
    );
    assert_eq!(
        rpc.ok("aria2.changePosition", json!([g[4], 0, "POS_SET"]))
            .await,
        0
    );
    assert_eq!(
        rpc.ok("aria2.changePosition", json!([g[1], -1, "POS_CUR"]))
            .await,
        2
    );
    assert_eq!(
        gids_of(&rpc, "aria2.tellWaiting", json!([0, 9])).await,
        [&g[4], &g[2], &g[1], &g[3]].map(|s| s.clone())
    );
    let (_, list) = svc.get("/api/downloads?state=queued").await;
    let rest: Vec<String> = list["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| model_manager::doors::aria2::gid_of(d["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rest,
        [&g[4], &g[2], &g[1], &g[3]].map(|s| s.clone()),
        "REST sees the same order"
    );
    assert!(rpc
        .fails("aria2.changePosition", json!([g[1], 0, "POS_NOWHERE"]))
        .await
        .contains("Illegal"));

    // Paused ones stay in tellWaiting, as in aria2.
    assert_eq!(rpc.ok("aria2.pause", json!([g[2]])).await, g[2]);
    let waiting = rpc
        .ok("aria2.tellWaiting", json!([0, 9, ["gid", "status"]]))
        .await;
    assert!(
        waiting
            .as_array()
            .unwrap()
            .contains(&json!({"gid": g[2], "status": "paused"})),
        "{waiting}"
    );
    assert!(rpc
        .fails("aria2.unpause", json!([g[3]]))
        .await
        .contains("cannot be unpaused"));
    assert_eq!(rpc.ok("aria2.unpause", json!([g[2]])).await, g[2]);
    assert_eq!(rpc.status(&g[2]).await["status"], "waiting");

    // remove: `removed` in tellStopped; its result can then be forgotten.
    assert_eq!(rpc.ok("aria2.forceRemove", json!([g[0]])).await, g[0]);
    assert_eq!(rpc.ok("aria2.remove", json!([g[3]])).await, g[3]);
    assert_eq!(rpc.status(&g[0]).await["status"], "removed");
    assert!(rpc
        .fails("aria2.remove", json!([g[0]]))
        .await
        .contains("cannot be removed"));
    let stopped = gids_of(&rpc, "aria2.tellStopped", json!([0, 1000])).await;
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    assert_eq!(
        gids_of(&rpc, "aria2.tellStopped", json!([-1, 1])).await,
        [stopped[1].clone()]
    );
    // The next one in line takes the freed slot (a moment after the remove).
    let live = common::wait::eventually(WAIT, || async {
        let active = rpc.ok("aria2.tellActive", json!([])).await;
        active[0]["gid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "nothing became active".to_owned())
    })
    .await;
    assert!(rpc
        .fails("aria2.removeDownloadResult", json!([live]))
        .await
        .contains("Could not remove"));
    assert_eq!(
        rpc.ok("aria2.removeDownloadResult", json!([g[0]])).await,
        "OK"
    );
    assert!(rpc
        .fails("aria2.tellStatus", json!([g[0]]))
        .await
        .contains("is not found"));
    assert_eq!(rpc.ok("aria2.purgeDownloadResult", json!([])).await, "OK");
    assert!(gids_of(&rpc, "aria2.tellStopped", json!([0, 1000]))
        .await
        .is_empty());

    // pauseAll / unpauseAll.
    assert_eq!(rpc.ok("aria2.pauseAll", json!([])).await, "OK");
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(
        (stats["paused"].as_u64(), stats["active"].as_u64()),
        (Some(3), Some(0)),
        "{stats}"
    );
    assert_eq!(
        rpc.ok("aria2.getGlobalStat", json!([])).await["numWaiting"],
        "3"
    );
    assert_eq!(rpc.ok("aria2.unpauseAll", json!([])).await, "OK");
    assert_eq!(rpc.ok("aria2.forcePauseAll", json!([])).await, "OK");
}

/// Batches and multicall with mixed results, GET with base64 params (one call,
/// a batch), every error code, and GIDs by unique prefix.
#[actix_web::test]
async fn batch_multicall_get_and_every_error_code() {
    let (svc, up, rpc) = setup(|_| {}).await;
    let gid = rpc
        .ok(
            "aria2.addUri",
            json!([[up.url("slow0.bin")], {"pause": "true"}]),
        )
        .await;
    let gid = gid.as_str().unwrap().to_owned();
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "aria2.tellStatus", "params": [gid, ["status"]]},
        {"jsonrpc": "2.0", "id": 2, "method": "aria2.nope"},
        {"jsonrpc": "2.0", "method": "aria2.getVersion"},
        {"jsonrpc": "2.0", "id": 4, "method": "aria2.tellStatus", "params": ["zz"]},
    ]);
    let (status, v) = rpc.raw(batch.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        v[0],
        json!({"id": 1, "jsonrpc": "2.0", "result": {"status": "paused"}})
    );
    assert_eq!(
        v[1]["error"],
        json!({"code": 1, "message": "No such method: aria2.nope"})
    );
    assert_eq!(
        (v[2]["id"].clone(), v[2]["error"]["code"].clone()),
        (Value::Null, json!(-32600))
    );
    assert_eq!(v[3]["error"]["message"], "Invalid GID zz");

    let calls = json!([[
        {"methodName": "aria2.tellStatus", "params": [gid, ["gid"]]},
        {"methodName": "aria2.unpause", "params": ["ffff0000ffff0000"]},
        {"methodName": "system.multicall", "params": [[]]},
        {"methodName": "aria2.getGlobalStat"},
    ]]);
    let r = rpc.ok("system.multicall", calls).await;
    assert_eq!(r[0], json!([{"gid": gid}]));
    assert_eq!(
        r[1],
        json!({"code": 1, "message": "GID ffff0000ffff0000 is not found"})
    );
    assert_eq!(r[2]["message"], "Recursive system.multicall forbidden.");
    assert!(r[3][0]["numWaiting"].is_string(), "{r}");

    // Unique prefixes name a download.
    assert_eq!(rpc.status(&gid[..6]).await["gid"], gid);

    // GET: one call in method/id/params, a batch in params alone, JSONP.
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let url = format!(
        "{}?method=aria2.tellStatus&id=g1&params={}",
        rpc.url,
        b64(&json!([gid, ["gid", "status"]]))
    );
    let got: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(
        got,
        json!({"id": "g1", "jsonrpc": "2.0", "result": {"gid": gid, "status": "paused"}})
    );
    let url = format!(
        "{}?params={}",
        rpc.url,
        b64(&json!([{"jsonrpc": "2.0", "id": "b", "method": "aria2.getVersion"}]))
    );
    let got: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert!(got[0]["result"]["version"].is_string(), "{got}");
    // No JSONP: it would let any page read the queue through a <script>.
    let url = format!("{}?method=system.listMethods&id=j&jsoncallback=cb", rpc.url);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(text.starts_with("{\"id\":\"j\""), "{text}");
    let resp = reqwest::get(format!(
        "{}?method=aria2.getVersion&id=1&params=%%%",
        rpc.url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 500, "bad base64 is a parse error");

    // Not JSON: -32700 (HTTP 500, as aria2); JSON but not a request: -32600 (400).
    let (status, v) = rpc.raw("{not json").await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_i64(),
            v["error"]["message"].as_str()
        ),
        (500, Some(-32700), Some("Parse error."))
    );
    let (status, v) = rpc.raw("\"hello\"").await;
    assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)));
    let (status, v) = rpc.raw(r#"{"id": 3, "params": []}"#).await;
    assert_eq!(
        (status, v["id"].as_i64(), v["error"]["code"].as_i64()),
        (400, Some(3), Some(-32600))
    );
    let (status, v) = rpc
        .raw(r#"{"id": 3, "method": "aria2.getVersion", "params": {"a": 1}}"#)
        .await;
    assert_eq!((status, v["error"]["code"].as_i64()), (500, Some(-32602)));
    assert_eq!(
        rpc.fails("aria2.nope", json!([])).await,
        "No such method: aria2.nope"
    );
    assert!(rpc
        .fails("aria2.tellStatus", json!([]))
        .await
        .contains("required"));
    assert!(rpc
        .fails("aria2.tellStatus", json!(["0123456789abcdef0"]))
        .await
        .contains("Invalid GID"));
    assert!(rpc
        .fails("aria2.addTorrent", json!(["AAAA"]))
        .await
        .contains("not supported"));
    let _ = svc;
}

/// The GID of a download is the same after a restart of the real binary, on the main
/// port and on the `[aria2] bind` listener alike (which serves only /jsonrpc).
#[actix_web::test]
async fn a_gid_survives_a_restart_of_the_binary() {
    use common::binary::{free_port, Proc};
    let up = Upstream::start();
    up.add_file("slow.bin", content(4 * MIB, 3), slow());
    let rpc_port = free_port();
    let (_dir, config, port, mut proc) =
        Proc::start(&format!("[aria2]\nbind = \"127.0.0.1:{rpc_port}\"")).await;
    let main = Rpc::new(&proc.base, None);
    let own = Rpc::new(&format!("http://127.0.0.1:{rpc_port}"), None);
    let gid = main
        .ok(
            "aria2.addUri",
            json!([[up.url("slow.bin")], {"pause": "true"}]),
        )
        .await;
    let gid = gid.as_str().unwrap().to_owned();
    assert_eq!(own.status(&gid).await["status"], "paused");
    let api = reqwest::get(format!("http://127.0.0.1:{rpc_port}/api/downloads"))
        .await
        .unwrap();
    assert_eq!(
        api.status().as_u16(),
        404,
        "the RPC listener serves /jsonrpc only"
    );
    proc.sigterm();
    assert!(proc.wait_exit(Duration::from_secs(15)).success());
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    let again = main.status(&gid).await;
    assert_eq!(
        (again["gid"].as_str(), again["status"].as_str()),
        (Some(gid.as_str()), Some("paused"))
    );
    let list = proc.get("/api/downloads").await;
    let id = list["downloads"][0]["id"].as_str().unwrap();
    assert_eq!(model_manager::doors::aria2::gid_of(id), gid);
    assert_eq!(own.ok("aria2.unpause", json!([gid])).await, gid);
    proc.sigterm();
    assert!(proc.wait_exit(Duration::from_secs(15)).success());
}

/// `split` on addUri is the download's own connection count: a file big enough for
/// parallel ranges comes on one connection with `split=1`, on several without.
#[actix_web::test]
async fn split_sets_one_downloads_connections() {
    let (_svc, up, rpc) = setup(|c| c.downloads.connections_per_download = 4).await;
    let big = content(17 * MIB, 7);
    up.add_file("one.bin", big.clone(), Behavior::default());
    up.add_file("many.bin", big, Behavior::default());
    let one = rpc
        .ok("aria2.addUri", json!([[up.url("one.bin")], {"split": "1"}]))
        .await;
    let many = rpc.ok("aria2.addUri", json!([[up.url("many.bin")]])).await;
    for gid in [&one, &many] {
        rpc.wait_status(gid.as_str().unwrap(), "complete", WAIT)
            .await;
    }
    let gets = |path: &str| {
        up.requests(path)
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    };
    assert_eq!(gets("one.bin"), 1, "split=1: one connection");
    assert!(
        gets("many.bin") > 1,
        "the setting's 4 connections: {}",
        gets("many.bin")
    );
}
