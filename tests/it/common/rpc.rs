//! A JSON-RPC client for the aria2 tests: aria2's envelope, sent as aria2 clients send
//! it (a POST without `Content-Type`).

use std::time::Duration;

use serde_json::{json, Value};

pub struct Rpc {
    pub url: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

impl Rpc {
    pub fn new(base: &str, token: Option<&str>) -> Rpc {
        Rpc {
            url: format!("{base}/jsonrpc"),
            token: token.map(str::to_owned),
            client: reqwest::Client::new(),
        }
    }

    /// POSTs a raw body; status and JSON answer.
    pub async fn raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(&self.url)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The params with the token first, as aria2 clients put it.
    pub fn params(&self, params: Value) -> Value {
        let mut p = params.as_array().cloned().unwrap_or_default();
        if let Some(t) = &self.token {
            p.insert(0, json!(format!("token:{t}")));
        }
        Value::Array(p)
    }

    /// One call; the whole answer.
    pub async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        let body =
            json!({"jsonrpc": "2.0", "id": "t1", "method": method, "params": self.params(params)});
        self.raw(body.to_string()).await
    }

    /// One call that must succeed; its result.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        let (status, v) = self.call(method, params).await;
        assert_eq!(status, 200, "{method}: {v}");
        assert_eq!(v["id"], "t1", "{v}");
        v["result"].clone()
    }

    /// One call that must fail with code 1; its message.
    pub async fn fails(&self, method: &str, params: Value) -> String {
        let (status, v) = self.call(method, params).await;
        assert_eq!(
            (status, v["error"]["code"].as_i64()),
            (400, Some(1)),
            "{method}: {v}"
        );
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn status(&self, gid: &str) -> Value {
        self.ok("aria2.tellStatus", json!([gid])).await
    }

    /// Polls `tellStatus` until its `status` is `want`.
    pub async fn wait_status(&self, gid: &str, want: &str, timeout: Duration) -> Value {
        super::wait::eventually(timeout, || async {
            let s = self.status(gid).await;
            if s["status"] == want {
                Ok(s)
            } else {
                Err(format!("waiting for {gid} to be {want}: {s}"))
            }
        })
        .await
    }
}
