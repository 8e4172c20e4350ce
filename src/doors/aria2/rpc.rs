//! The JSON-RPC envelope over HTTP: one request or a batch in a POST body, or in
//! GET's `method`/`id`/`params` (base64 JSON) query; the HTTP statuses aria2 gives
//! its errors; CORS for the origins in `allowed_origins`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{Aria2, RpcError};

/// Standard base64, padded or not (clients differ).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The answer to one request: its HTTP status (aria2's, for a lone request) and body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

fn error_body(code: i64, message: &str, id: Value) -> Value {
    json!({"id": id, "jsonrpc": "2.0", "error": {"code": code, "message": message}})
}

/// aria2's HTTP status for an error code (`HttpServerBodyCommand::sendJsonRpcResponse`).
fn http_status(code: i64) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 | -32600 => StatusCode::BAD_REQUEST,
        -32601 => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One request object: `(error code or 0, response)`.
async fn one(aria2: &Aria2, mut req: Map<String, Value>) -> (i64, Value) {
    let Some(id) = req.remove("id") else {
        return (-32600, error_body(-32600, "Invalid Request.", Value::Null));
    };
    let Some(method) = req.get("method").and_then(Value::as_str).map(str::to_owned) else {
        return (-32600, error_body(-32600, "Invalid Request.", id));
    };
    let params = match req.remove("params") {
        None => Vec::new(),
        Some(Value::Array(p)) => p,
        Some(_) => return (-32602, error_body(-32602, "Invalid params.", id)),
    };
    match aria2.dispatch(&method, params).await {
        Ok(result) => (0, json!({"id": id, "jsonrpc": "2.0", "result": result})),
        Err(RpcError { code, message }) => (code, error_body(code, &message, id)),
    }
}

/// A request text (one request or a batch) and its answer.
pub async fn answer(aria2: &Aria2, text: &[u8]) -> Reply {
    let parsed: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(_) => {
            return Reply {
                status: http_status(-32700),
                body: error_body(-32700, "Parse error.", Value::Null),
            }
        }
    };
    match parsed {
        Value::Object(req) => {
            let (code, body) = one(aria2, req).await;
            Reply {
                status: http_status(code),
                body,
            }
        }
        Value::Array(reqs) => {
            let mut out = Vec::with_capacity(reqs.len());
            // As aria2: entries that are not objects get no answer.
            for r in reqs {
                if let Value::Object(req) = r {
                    out.push(one(aria2, req).await.1);
                }
            }
            Reply {
                status: StatusCode::OK,
                body: Value::Array(out),
            }
        }
        _ => Reply {
            status: http_status(-32600),
            body: error_body(-32600, "Invalid Request.", Value::Null),
        },
    }
}

/// `POST /jsonrpc`: any `Content-Type` (aria2 clients send none).
pub async fn post(req: HttpRequest, body: Bytes, aria2: web::Data<Aria2>) -> HttpResponse {
    let reply = answer(&aria2, &body).await;
    respond(&req, &aria2, reply)
}

/// `GET /jsonrpc` without an upgrade: a call in the query (`params` base64 JSON; with
/// neither `method` nor `id`, `params` is a whole batch). aria2's JSONP
/// (`jsoncallback`) is left out on purpose: it exists to let other sites' pages read
/// the answers.
pub async fn get(req: HttpRequest, aria2: web::Data<Aria2>) -> HttpResponse {
    // Not decodable: answered as a parse error.
    let text = request_from_query(req.query_string()).unwrap_or_else(|()| b"\0".to_vec());
    let reply = answer(&aria2, &text).await;
    respond(&req, &aria2, reply)
}

/// aria2's `decodeGetParams`: the JSON text of the request a query carries.
fn request_from_query(query: &str) -> Result<Vec<u8>, ()> {
    let q = web::Query::<std::collections::HashMap<String, String>>::from_query(query)
        .map_err(|_| ())?
        .into_inner();
    let params = match q.get("params") {
        Some(p) => {
            // Browsers turn `+` into a space in a query; aria2 clients send either.
            let p = p.replace(' ', "+");
            let bytes = BASE64.decode(p.trim()).map_err(|_| ())?;
            Some(serde_json::from_slice::<Value>(&bytes).map_err(|_| ())?)
        }
        None => None,
    };
    let (method, id) = (q.get("method"), q.get("id"));
    let request = if method.is_none() && id.is_none() {
        params.unwrap_or(Value::Null)
    } else {
        let mut r = Map::new();
        if let Some(m) = method {
            r.insert("method".into(), json!(m));
        }
        if let Some(i) = id {
            r.insert("id".into(), json!(i));
        }
        if let Some(p) = params {
            r.insert("params".into(), p);
        }
        Value::Object(r)
    };
    serde_json::to_vec(&request).map_err(|_| ())
}

/// The reply as aria2 sends it (`application/json-rpc`), with CORS for a listed origin.
fn respond(req: &HttpRequest, aria2: &Aria2, reply: Reply) -> HttpResponse {
    let mut res = HttpResponse::build(reply.status);
    if let Some(origin) = listed_origin(req, aria2) {
        res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
    }
    res.content_type("application/json-rpc")
        .body(reply.body.to_string())
}

/// The request's `Origin` when it is one of `allowed_origins`.
fn listed_origin(req: &HttpRequest, aria2: &Aria2) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN)?.to_str().ok()?;
    aria2.guard.is_listed(origin).then(|| origin.to_owned())
}

/// `OPTIONS /jsonrpc`: the CORS preflight, answered as aria2c answers it. (A foreign
/// origin that is not listed was refused by the guard already.)
pub async fn preflight(req: HttpRequest, aria2: web::Data<Aria2>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    if let Some(origin) = listed_origin(&req, &aria2) {
        res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, GET, OPTIONS"))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "1728000"));
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()));
        }
    }
    res.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_query_carries_one_call_or_a_batch() {
        let q = format!(
            "method=aria2.tellActive&id=q1&params={}",
            b64(r#"[["gid"]]"#)
        );
        let text = request_from_query(&q).expect("decodes");
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            v,
            json!({"method": "aria2.tellActive", "id": "q1", "params": [["gid"]]})
        );
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"system.listMethods"}]"#;
        let text = request_from_query(&format!("params={}", b64(batch))).unwrap();
        assert!(serde_json::from_slice::<Value>(&text).unwrap().is_array());
        assert!(request_from_query("method=x&id=1&params=!!!").is_err());
    }
}
