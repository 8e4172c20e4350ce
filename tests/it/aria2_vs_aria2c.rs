//! Our `/jsonrpc` beside the real aria2c (Debian's, 1.36), asked the same things:
//! the same keys with the same types in every status struct, file and stat, the same
//! error codes, HTTP statuses and messages. What aria2 clients were written against
//! is aria2c itself; this keeps us honest where the manual is vague.

use crate::common;
use crate::common::rpc;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::binary::free_port;
use common::service::*;
use common::upstream::{Behavior, Upstream};
use rpc::Rpc;
use serde_json::{json, Value};

const TOKEN: &str = "same-secret";
const WAIT: Duration = Duration::from_secs(20);

/// A real aria2c with RPC on; killed when dropped.
struct Aria2c(Child);

impl Drop for Aria2c {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn aria2c(dir: &std::path::Path) -> (Aria2c, Rpc) {
    let port = free_port();
    let child = Aria2c(
        Command::new("aria2c")
            .args([
                "--enable-rpc",
                "--no-conf",
                "--quiet",
                "--rpc-listen-all=false",
            ])
            .arg(format!("--rpc-listen-port={port}"))
            .arg(format!("--rpc-secret={TOKEN}"))
            .arg(format!("--dir={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aria2c (Debian's aria2) is installed by scripts/test.sh"),
    );
    let rpc = Rpc::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN));
    for _ in 0..100 {
        if rpc.client.post(&rpc.url).body("{}").send().await.is_ok() {
            return (child, rpc);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("aria2c did not start");
}

/// Each key with the JSON type of its value (`files` and `uris` looked into).
fn shape(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let kind = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    };
    for (k, val) in v.as_object().into_iter().flatten() {
        out.insert(format!("{k}: {}", kind(val)));
        if let Some(first) = val.as_array().and_then(|a| a.first()) {
            for inner in shape(first) {
                out.insert(format!("{k}[].{inner}"));
            }
        }
    }
    out
}

/// Every key of aria2c's answer is in ours with the same type (ours may have more:
/// AriaNg asks for `numSeeders` and `seeder` on every download).
fn covers(ours: &Value, theirs: &Value, what: &str) {
    let missing: Vec<_> = shape(theirs).difference(&shape(ours)).cloned().collect();
    assert!(
        missing.is_empty(),
        "{what}: aria2c has {missing:?} that we lack\n ours: {ours}\n aria2c: {theirs}"
    );
}

#[actix_web::test]
async fn our_answers_have_the_shape_of_real_aria2c() {
    let up = Upstream::start();
    up.add_file("fast.bin", content(3 * MIB + 5, 1), Behavior::default());
    let slow = Behavior {
        rate_bps: Some(100_000),
        ..Behavior::default()
    };
    up.add_file("slow.bin", content(4 * MIB, 2), slow);
    let svc = TestService::start(|c| c.server.api_token = TOKEN.into()).await;
    let ours = Rpc::new(&svc.base, Some(TOKEN));
    let tmp = tempfile::tempdir().unwrap();
    let (_child, theirs) = aria2c(tmp.path()).await;

    let mut gids = Vec::new();
    for rpc in [&ours, &theirs] {
        let done = rpc.ok("aria2.addUri", json!([[up.url("fast.bin")]])).await;
        let paused = rpc
            .ok(
                "aria2.addUri",
                json!([[up.url("slow.bin")], {"pause": "true"}]),
            )
            .await;
        rpc.wait_status(done.as_str().unwrap(), "complete", WAIT)
            .await;
        gids.push((
            done.as_str().unwrap().to_owned(),
            paused.as_str().unwrap().to_owned(),
        ));
    }
    let (ours_done, ours_paused) = &gids[0];
    let (their_done, their_paused) = &gids[1];
    for (what, ours_v, theirs_v) in [
        (
            "complete",
            ours.status(ours_done).await,
            theirs.status(their_done).await,
        ),
        (
            "paused",
            ours.status(ours_paused).await,
            theirs.status(their_paused).await,
        ),
    ] {
        covers(&ours_v, &theirs_v, what);
        for k in [
            "status",
            "totalLength",
            "completedLength",
            "numPieces",
            "pieceLength",
            "bitfield",
        ] {
            assert_eq!(ours_v[k], theirs_v[k], "{what}: {k}");
        }
    }
    for (method, params_ours, params_theirs) in [
        ("aria2.getGlobalStat", json!([]), json!([])),
        ("aria2.getVersion", json!([]), json!([])),
        ("aria2.getFiles", json!([ours_done]), json!([their_done])),
        // (aria2c forgets the URIs of a finished download; we keep them.)
        ("aria2.getUris", json!([ours_paused]), json!([their_paused])),
        (
            "aria2.tellStatus",
            json!([ours_done, ["gid", "files"]]),
            json!([their_done, ["gid", "files"]]),
        ),
    ] {
        let (a, b) = (
            ours.ok(method, params_ours).await,
            theirs.ok(method, params_theirs).await,
        );
        let (a, b) = match (&a, &b) {
            (Value::Array(x), Value::Array(y)) => (x[0].clone(), y[0].clone()),
            _ => (a, b),
        };
        covers(&a, &b, method);
        if method == "aria2.tellStatus" {
            assert_eq!(shape(&a), shape(&b), "keys filter gives the same keys");
        }
    }
    // The same queue gives the same counts (aria2c's speed lingers a while after a
    // download ends; ours is of now).
    let mut stat = ours.ok("aria2.getGlobalStat", json!([])).await;
    let mut their_stat = theirs.ok("aria2.getGlobalStat", json!([])).await;
    for s in [&mut stat, &mut their_stat] {
        s.as_object_mut().unwrap().remove("downloadSpeed");
    }
    assert_eq!(stat, their_stat, "same queue, same stat");

    // Pages of the waiting list, negative offsets included, in the same order.
    let mut index = Vec::new();
    for rpc in [&ours, &theirs] {
        let mut gids = vec![rpc
            .status(if index.is_empty() {
                ours_paused
            } else {
                their_paused
            })
            .await["gid"]
            .as_str()
            .unwrap()
            .to_owned()];
        for i in 0..3 {
            let url = up.url(&format!("slow.bin?{i}"));
            let g = rpc
                .ok(
                    "aria2.addUri",
                    json!([[url], {"pause": "true", "out": format!("p{i}.bin")}]),
                )
                .await;
            gids.push(g.as_str().unwrap().to_owned());
        }
        index.push(gids);
    }
    for (offset, num) in [
        (0, 10),
        (1, 2),
        (-1, 2),
        (-1, 10),
        (-2, 1),
        (3, 5),
        (-5, 2),
        (0, 0),
    ] {
        let mut pages = Vec::new();
        for (rpc, gids) in [(&ours, &index[0]), (&theirs, &index[1])] {
            let page = rpc
                .ok("aria2.tellWaiting", json!([offset, num, ["gid"]]))
                .await;
            let at: Vec<usize> = page
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    gids.iter()
                        .position(|g| s["gid"] == g.as_str())
                        .expect("one of ours")
                })
                .collect();
            pages.push(at);
        }
        assert_eq!(pages[0], pages[1], "tellWaiting({offset}, {num})");
    }

    // The same errors, in code, message and HTTP status.
    for (method, params) in [
        ("aria2.nope", json!([])),
        ("aria2.tellStatus", json!(["zz"])),
        ("aria2.tellStatus", json!(["0123456789abcdef"])),
        ("aria2.unpause", json!(["0123456789abcdef0"])),
        (
            "aria2.changePosition",
            json!([ours_paused, 0, "POS_NOWHERE"]),
        ),
    ] {
        let (sa, a) = ours.call(method, params.clone()).await;
        let theirs_params = if method == "aria2.changePosition" {
            json!([their_paused, 0, "POS_NOWHERE"])
        } else {
            params
        };
        let (sb, b) = theirs.call(method, theirs_params).await;
        assert_eq!((sa, &a["error"]), (sb, &b["error"]), "{method}");
    }
    let (sa, a) = ours.call("aria2.unpause", json!([ours_done])).await;
    let (sb, b) = theirs.call("aria2.unpause", json!([their_done])).await;
    assert_eq!(
        (sa, a["error"]["code"].clone()),
        (sb, b["error"]["code"].clone())
    );
    for bad in [
        Rpc::new(&svc.base, Some("wrong")),
        Rpc::new(&theirs.url.replace("/jsonrpc", ""), Some("wrong")),
    ] {
        let (s, v) = bad.call("aria2.tellActive", json!([])).await;
        assert_eq!(
            (s, v["error"].clone()),
            (400, json!({"code": 1, "message": "Unauthorized"}))
        );
    }
    for body in [
        "{not json",
        "\"hello\"",
        r#"{"id": 3, "params": []}"#,
        r#"[{"id": 1, "method": "system.listMethods"}, 7]"#,
    ] {
        let ((sa, a), (sb, b)) = (ours.raw(body).await, theirs.raw(body).await);
        assert_eq!(sa, sb, "HTTP status for {body}");
        let strip = |v: &Value| match v {
            Value::Array(a) => a.iter().map(|x| x["error"].clone()).collect::<Vec<_>>(),
            v => vec![v["error"].clone()],
        };
        assert_eq!(strip(&a), strip(&b), "errors for {body}");
    }
    // multicall: results and errors in aria2c's forms.
    let calls = |gid: &str| {
        json!([[
            {"methodName": "aria2.tellStatus", "params": [format!("token:{TOKEN}"), gid, ["status"]]},
            {"methodName": "aria2.tellStatus", "params": [format!("token:{TOKEN}"), "zz"]},
        ]])
    };
    let (a, b) = (
        Rpc::new(&svc.base, None)
            .ok("system.multicall", calls(ours_done))
            .await,
        Rpc::new(&theirs.url.replace("/jsonrpc", ""), None)
            .ok("system.multicall", calls(their_done))
            .await,
    );
    assert_eq!(a, b, "multicall");
}
