//! Embedded mode: no service answers, so `pull` opens the data dir itself and runs the
//! same core (supervisor, engine) in-process, through the same [`QueueHandle`] every
//! front door uses. The store's lock (a `flock` on `data_dir/lock`) keeps a second process
//! off the same data dir.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::args::PullArgs;
use super::client::Dl;
use super::spec::Spec;
use super::CliError;
use crate::actors::again::Asked;
use crate::actors::frames::ClientFrame;
use crate::config::Config;
use crate::doors::error::ApiError;
use crate::intake::{self, hub::Start, parse_sha256, IntakeError, UrlFile, UrlPolicy};
use crate::queue::model::NewDownload;
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
    download_dir: PathBuf,
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
            policy: UrlPolicy::new(&config.downloads.allowed_hosts),
            download_dir,
        })
    }

    /// Where the files land.
    pub fn download_dir(&self) -> &std::path::Path {
        &self.download_dir
    }

    /// What `spec` names, queued: the same downloads, checked by the same intake, as
    /// the service queues for the REST requests of a remote `pull`.
    pub async fn add(&self, spec: &Spec, args: &PullArgs) -> Result<Vec<Dl>, CliError> {
        let news = self.new_downloads(spec, args).await.map_err(intake_error)?;
        // A URL's file is named after it (pull has no name option): numbered when
        // another source holds the name, as the REST add does.
        let auto_name = matches!(spec, Spec::Url(_));
        let asked = news
            .into_iter()
            .map(|new| Asked { new, auto_name })
            .collect();
        self.queue(asked).await
    }

    async fn new_downloads(
        &self,
        spec: &Spec,
        args: &PullArgs,
    ) -> Result<Vec<NewDownload>, IntakeError> {
        let hub = &self.core.hub;
        let start = Start {
            paused: false,
            overwrite: args.overwrite,
        };
        let new = match spec {
            Spec::Url(url) => UrlFile {
                url,
                sha256: args.sha256.as_deref().map(parse_sha256).transpose()?,
                overwrite: args.overwrite,
                ..UrlFile::default()
            }
            .new_download(&self.policy)?,
            Spec::HubFile { repo, file } => {
                let wanted = intake::hub::Wanted {
                    repo,
                    file,
                    revision: intake::hub::revision(Some(&args.revision))?,
                    commit: None,
                    sha256: None,
                };
                intake::hub::new_download(hub, wanted, start)?
            }
            Spec::Quantization { repo, quantization } => {
                let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
                let wanted = intake::hub::Quantization {
                    owner,
                    name,
                    quantization: quantization.as_deref(),
                    revision: Some(&args.revision),
                    mmproj: !args.no_mmproj,
                    start,
                };
                return intake::hub::quantization(hub, wanted).await;
            }
        };
        Ok(vec![new])
    }

    async fn queue(&self, asked: Vec<Asked>) -> Result<Vec<Dl>, CliError> {
        let added = self
            .core
            .queue
            .add_asked(asked)
            .await
            .map_err(|e| api(e.into()))?;
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

/// As the service answers the same refusal (REST's code and message).
fn intake_error(e: IntakeError) -> CliError {
    api(e.into())
}

fn api(e: ApiError) -> CliError {
    CliError::Api {
        code: e.code().to_owned(),
        message: e.to_string(),
    }
}

fn dl(view: &impl serde::Serialize) -> Result<Dl, CliError> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| CliError::Protocol(e.to_string()))
}
