//! The service's REST API and websocket, as the terminal client uses them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

use super::CliError;

/// The most one answer of the service may hold: a list of 100,000 downloads is about
/// 60 MiB; whatever `--server` names, the client reads no more than this.
const ANSWER_CAP: usize = 256 * 1024 * 1024;

/// A download as the client reads it (the contract's shape; fields it does not show
/// are left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Dl {
    pub id: String,
    pub file_name: String,
    pub path: String,
    pub state: String,
    pub position: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub speed_bps: u64,
    pub eta_secs: Option<u64>,
    pub attempt: u32,
    pub sha256: Option<String>,
    pub error: Option<DlError>,
    /// The answer to an add: it was already here (or live), nothing new was queued.
    pub already: bool,
}

/// The `error` field of a download.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlError {
    pub kind: String,
    pub message: String,
}

impl Dl {
    /// `completed`, `failed` or `cancelled`: nothing more will happen on its own.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// One entry of a `progress` frame.
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub id: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub speed_bps: u64,
    pub eta_secs: Option<u64>,
}

/// A websocket frame of the contract.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Snapshot {
        downloads: Vec<Dl>,
    },
    Progress {
        updates: Vec<Update>,
    },
    State {
        download: Box<Dl>,
    },
    Removed {
        id: String,
    },
    /// Frames the client has no use for (`library`, and those to come).
    #[serde(other)]
    Other,
}

/// The service at one base URL.
#[derive(Clone)]
pub struct Remote {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(base: &str, token: Option<String>) -> Result<Remote, CliError> {
        let base = url::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| CliError::Usage(format!("--server {base:?} is not an http(s) URL")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Remote {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// Whether the service answers `/healthz`; why not, as [`CliError::Unreachable`].
    pub async fn probe(&self) -> Result<(), CliError> {
        let request = self
            .http
            .get(self.url("/healthz"))
            .timeout(Duration::from_secs(5));
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(CliError::Unreachable {
                url: self.base.to_string(),
                message: format!("/healthz answered {}", r.status()),
            }),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// One request; a JSON answer (`null` for 204), or the service's error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = crate::http::read_capped(response, ANSWER_CAP)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::TooLarge { .. } => {
                    CliError::Protocol(format!("{path}: {e}: not this service's answer"))
                }
                crate::http::BodyError::Network(message) => CliError::Unreachable {
                    url: self.base.to_string(),
                    message,
                },
            })?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .map_err(|e| CliError::Protocol(format!("{path}: not JSON: {e}")));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.refused_token());
        }
        let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| error["error"][k].as_str().map(str::to_owned);
        Err(CliError::Api {
            code: field("code").unwrap_or_else(|| status.as_u16().to_string()),
            message: field("message").unwrap_or(text),
        })
    }

    /// 401 from our own service: a config problem of the client (exit 2).
    fn refused_token(&self) -> CliError {
        let why = if self.token.is_some() {
            "refused the token"
        } else {
            "needs a token"
        };
        CliError::Usage(format!(
            "the service at {} {why}: set MM_TOKEN (or server.api_token in the config)",
            self.base
        ))
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.to_string(),
            message: crate::http::describe(e),
        }
    }

    /// The websocket's frames, as text, from its snapshot on.
    pub async fn events(&self) -> Result<mpsc::Receiver<String>, CliError> {
        let mut ws_url = self.base.clone();
        let scheme = if self.base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        let _ = ws_url.set_scheme(scheme);
        ws_url.set_path("/api/events");
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| CliError::Usage("MM_TOKEN is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (mut socket, _) =
            tokio_tungstenite::connect_async(request)
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(r) if r.status().as_u16() == 401 => {
                        self.refused_token()
                    }
                    tungstenite::Error::Http(r) => CliError::Api {
                        code: r.status().as_u16().to_string(),
                        message: "the websocket was refused".into(),
                    },
                    e => CliError::Unreachable {
                        url: self.base.to_string(),
                        message: e.to_string(),
                    },
                })?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            // Reading also answers the service's pings (tungstenite queues the pong).
            while let Some(Ok(message)) = socket.next().await {
                let text = match message {
                    Message::Text(t) => t.as_str().to_owned(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if tx.send(text).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }
}
