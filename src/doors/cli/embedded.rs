//! Embedded mode: no service answers, so `pull` opens the data dir itself and runs the
//! same core (supervisor, engine) in-process, through the same [`QueueHandle`] every
//! front door uses. sled's file lock keeps a second process off the same data dir.

use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::mpsc;

use super::client::Dl;
use super::CliError;
use crate::actors::frames::ClientFrame;
use crate::config::Config;
use crate::doors::api::{in_process, UrlPolicy};
use crate::doors::error::ApiError;
use crate::queue::model::{DownloadView, NewDownload};
use crate::queue::store::Store;
use crate::{Core, StartError};

/// What [`open`] prepares before the actix System starts: what can fail for the
/// user's reasons (the download dir, the database and its lock).
pub struct Opened {
    config: Config,
    store: Store,
    records: Vec<crate::queue::model::Download>,
    download_dir: PathBuf,
}

/// Opens the download dir and the database of `config`.
pub fn open(config: &Config) -> Result<Opened, StartError> {
    let download_dir = crate::ensure_download_dir(config)?;
    let (store, records) = crate::open_store(config)?;
    Ok(Opened {
        config: config.clone(),
        store,
        records,
        download_dir,
    })
}

/// The core, running in this process.
pub struct Embedded {
    core: Core,
    store: Store,
    policy: UrlPolicy,
}

impl Embedded {
    /// Starts the core (inside the actix System).
    pub fn start(opened: Opened) -> Result<Embedded, StartError> {
        let Opened {
            config,
            store,
            records,
            download_dir,
        } = opened;
        let core = crate::start_core(&config, &store, records, &download_dir)?;
        Ok(Embedded {
            core,
            store,
            policy: UrlPolicy {
                allowed_hosts: config.downloads.allowed_hosts.clone(),
            },
        })
    }

    /// As `POST /api/downloads` with `body`.
    pub async fn add(&self, body: Value) -> Result<Vec<Dl>, CliError> {
        let new = in_process::new_download(body, &self.core.hub, &self.policy).map_err(api)?;
        self.queue(vec![new]).await
    }

    /// As `POST /api/hub/models/{owner}/{name}/download` with `body`.
    pub async fn add_quantization(&self, repo: &str, body: Value) -> Result<Vec<Dl>, CliError> {
        let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
        let news = in_process::quantization(&self.core.hub, owner, name, body)
            .await
            .map_err(api)?;
        self.queue(news).await
    }

    async fn queue(&self, news: Vec<NewDownload>) -> Result<Vec<Dl>, CliError> {
        let added = self.core.queue.add(news).await.map_err(|e| api(e.into()))?;
        added.iter().map(dl).collect()
    }

    pub async fn cancel(&self, id: &str) -> Result<Dl, CliError> {
        let d = self
            .core
            .queue
            .cancel(id)
            .await
            .map_err(|e| api(e.into()))?;
        dl(&d)
    }

    /// The websocket's frames, as text, from the snapshot on: the same frames the
    /// service sends, taken from the same source.
    pub async fn events(&self) -> Result<mpsc::Receiver<String>, CliError> {
        let mut frames = self.core.queue.events().await.map_err(|e| api(e.into()))?;
        let (tx, rx) = mpsc::channel(256);
        actix::spawn(async move {
            while let Some(frame) = frames.recv().await {
                let text = match frame {
                    ClientFrame::Text(t) => t.to_string(),
                    ClientFrame::Snapshot(s) => s.to_text().to_string(),
                };
                if tx.send(text).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Checkpoints every transfer that is still running (it stays queued for the next
    /// `serve` or `pull`) and flushes the database.
    pub async fn shutdown(self) {
        self.core.shutdown(&self.store).await;
    }
}

fn api(e: ApiError) -> CliError {
    CliError::Api {
        code: e.code().to_owned(),
        message: e.to_string(),
    }
}

fn dl(view: &DownloadView) -> Result<Dl, CliError> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| CliError::Protocol(e.to_string()))
}
