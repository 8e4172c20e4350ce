//! `pull SPEC`: queue what the spec names, then follow it on the websocket until every
//! file is completed (exit 0) or one failed (exit 1). With no service answering and
//! none named, the core runs in this process ([`super::embedded`]).

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::args::PullArgs;
use super::client::{Dl, Event, Remote};
use super::embedded::{self, Embedded};
use super::progress::{Display, Mode};
use super::spec::{self, Spec};
use super::{CliError, Target};
use crate::config::Config;

/// What a gated or private repo needs, printed with every `unauthorized` error.
pub const TOKEN_HINT: &str = "hint: the repo is gated or private: accept its terms on the Hub, \
     then set HF_TOKEN (or [hub] token in the config) where the service runs";

pub fn run(args: &PullArgs, target: &Target, config: &Config) -> Result<(), CliError> {
    let spec = spec::parse(&args.spec)?;
    actix_web::rt::System::new().block_on(async {
        match target.remote.probe().await {
            Ok(()) => follow(&Backend::Remote(target.remote.clone()), &spec, args).await,
            Err(e) if target.given => Err(e),
            Err(_) => pull_embedded(config, &spec, args).await,
        }
    })
}

async fn pull_embedded(config: &Config, spec: &Spec, args: &PullArgs) -> Result<(), CliError> {
    let opened = embedded::open(config).map_err(|e| CliError::Usage(e.to_string()))?;
    let core = Embedded::start(opened).map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!(
        "model-manager: no service at {}: downloading in this process (data dir {})",
        config.server.bind,
        config.storage.data_dir.display()
    );
    let result = follow(&Backend::Embedded(&core), spec, args).await;
    core.shutdown().await;
    result
}

/// The service over HTTP, or the core in this process: the same requests either way.
enum Backend<'a> {
    Remote(Remote),
    Embedded(&'a Embedded),
}

impl Backend<'_> {
    async fn cancel(&self, id: &str) -> Result<Dl, CliError> {
        match self {
            Backend::Remote(r) => dl(r
                .post(&format!("/api/downloads/{id}/cancel"), json!({}))
                .await?),
            Backend::Embedded(e) => e.cancel(id).await,
        }
    }

    async fn events(&self) -> Result<mpsc::Receiver<String>, CliError> {
        match self {
            Backend::Remote(r) => r.events().await,
            Backend::Embedded(e) => e.events().await,
        }
    }

    fn is_embedded(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }
}

fn dl(v: Value) -> Result<Dl, CliError> {
    serde_json::from_value(v).map_err(|e| CliError::Protocol(e.to_string()))
}

/// Queues what `spec` names.
async fn add(backend: &Backend<'_>, spec: &Spec, args: &PullArgs) -> Result<Vec<Dl>, CliError> {
    let remote = match backend {
        Backend::Remote(r) => r,
        Backend::Embedded(e) => return e.add(spec, args).await,
    };
    match spec {
        Spec::Url(url) => {
            let body = json!({"url": url, "sha256": args.sha256, "overwrite": args.overwrite});
            Ok(vec![dl(remote.post("/api/downloads", body).await?)?])
        }
        Spec::HubFile { repo, file } => {
            let hub = json!({"repo": repo, "file": file, "revision": args.revision});
            let body = json!({"hub": hub, "overwrite": args.overwrite});
            Ok(vec![dl(remote.post("/api/downloads", body).await?)?])
        }
        Spec::Quantization { repo, quantization } => {
            let body = json!({"quantization": quantization, "revision": args.revision,
                              "overwrite": args.overwrite, "mmproj": !args.no_mmproj});
            let path = format!("/api/hub/models/{repo}/download");
            let answer = remote.post(&path, body).await?;
            serde_json::from_value(answer["downloads"].clone())
                .map_err(|e| CliError::Protocol(e.to_string()))
        }
    }
}

async fn follow(backend: &Backend<'_>, spec: &Spec, args: &PullArgs) -> Result<(), CliError> {
    // Subscribe first, so that no change after the add is missed.
    let mut frames = backend.events().await?;
    let mut pulled = match add(backend, spec, args).await {
        Ok(added) => added,
        Err(e) => {
            if matches!(&e, CliError::Api { code, .. } if code == "unauthorized") {
                eprintln!("model-manager: {e}\n{TOKEN_HINT}");
                return Err(CliError::Failed(e.to_string()));
            }
            return Err(e);
        }
    };
    if let (Spec::Quantization { repo, .. }, [only]) = (spec, pulled.as_slice()) {
        if only.path == format!("{repo}/preset.ini") {
            eprintln!("model-manager: {repo} has a preset.ini at its root: `llama-server -hf {repo}` takes only that file (and runs in router mode from it), so only it is pulled; name a file (owner/name/path) to pull a model file");
        }
    }
    if up_to_date(&pulled, args.json) {
        return Ok(());
    }
    let mut display = Display::new(Mode::pick(args.json), &pulled);
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    while !pulled.iter().all(Dl::is_finished) {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(text) => apply(&text, &mut pulled, &mut display),
                None => {
                    display.finish();
                    return Err(CliError::Unreachable {
                        url: "the websocket".into(),
                        message: "the service closed the connection".into(),
                    });
                }
            },
            _ = &mut interrupt => {
                display.finish();
                return interrupted(backend, &pulled, args.cancel).await;
            }
        }
    }
    display.finish();
    outcome(&pulled)?;
    if !args.json {
        saved(backend, &pulled);
    }
    Ok(())
}

/// Where the files are, on stderr (stdout keeps its lines per download): the full
/// path when this process downloaded them, else the path in the service's download_dir.
fn saved(backend: &Backend<'_>, pulled: &[Dl]) {
    for d in pulled {
        match backend {
            Backend::Embedded(e) => {
                eprintln!(
                    "model-manager: saved {}",
                    e.download_dir().join(&d.path).display()
                );
            }
            Backend::Remote(_) => {
                eprintln!(
                    "model-manager: saved {} in the service's download_dir",
                    d.path
                );
            }
        }
    }
}

/// Says which files were already here, complete and the same as upstream; true when
/// that is all of them (nothing to follow: exit 0).
fn up_to_date(pulled: &[Dl], json: bool) -> bool {
    let here = |d: &&Dl| d.already && d.state == "completed";
    for d in pulled.iter().filter(here) {
        if json {
            println!("{}", json!({"event": "up_to_date", "download": d}));
        } else {
            println!("{}: up to date ({})", d.path, d.id);
        }
    }
    pulled.iter().all(|d| here(&d))
}

/// Applies one websocket frame to the downloads followed.
fn apply(text: &str, pulled: &mut [Dl], display: &mut Display) {
    let Ok(event) = serde_json::from_str::<Event>(text) else {
        tracing::warn!(frame = %text.chars().take(200).collect::<String>(), "unreadable frame");
        return;
    };
    let index = |pulled: &[Dl], id: &str| pulled.iter().position(|d| d.id == id);
    match event {
        Event::Progress { updates } => {
            for u in updates {
                let Some(i) = index(pulled, &u.id) else {
                    continue;
                };
                let d = &mut pulled[i];
                (d.bytes_done, d.bytes_total) = (u.bytes_done, u.bytes_total.or(d.bytes_total));
                (d.speed_bps, d.eta_secs) = (u.speed_bps, u.eta_secs);
                display.progress(i, pulled);
            }
        }
        Event::State { download } => {
            if let Some(i) = index(pulled, &download.id) {
                let changed = pulled[i].state != download.state;
                pulled[i] = *download;
                if changed || pulled[i].state == "retrying" {
                    display.state(i, pulled);
                }
            }
        }
        Event::Removed { id } => {
            if let Some(i) = index(pulled, &id) {
                pulled[i].state = "cancelled".into();
                display.state(i, pulled);
            }
        }
        Event::Snapshot { downloads } => {
            for d in downloads {
                if let Some(i) = index(pulled, &d.id) {
                    pulled[i] = d;
                    display.state(i, pulled);
                }
            }
        }
        Event::Other => {}
    }
}

/// Ctrl-C: the downloads stay queued, or with `--cancel` are cancelled.
async fn interrupted(backend: &Backend<'_>, pulled: &[Dl], cancel: bool) -> Result<(), CliError> {
    let live: Vec<&Dl> = pulled.iter().filter(|d| !d.is_finished()).collect();
    if cancel {
        for d in &live {
            match backend.cancel(&d.id).await {
                Ok(_) => eprintln!("model-manager: {}: cancelled", d.path),
                Err(e) => eprintln!("model-manager: {}: cannot cancel: {e}", d.path),
            }
        }
    } else {
        let ids: Vec<&str> = live.iter().map(|d| d.id.as_str()).collect();
        let later = if backend.is_embedded() {
            "the next `serve` or `pull` on this data dir continues them"
        } else {
            "the service goes on with them (`model-manager ls`)"
        };
        eprintln!(
            "model-manager: left in the queue: {}; {later}",
            ids.join(" ")
        );
    }
    Err(CliError::Interrupted)
}

/// 0 when every file completed (verified where a digest is known), else 1 with each
/// failure's kind and message on stderr.
fn outcome(pulled: &[Dl]) -> Result<(), CliError> {
    let mut failed = 0;
    for d in pulled.iter().filter(|d| d.state != "completed") {
        failed += 1;
        match &d.error {
            Some(e) => eprintln!(
                "model-manager: {}: {}: {}: {}",
                d.path, d.state, e.kind, e.message
            ),
            None => eprintln!("model-manager: {}: {}", d.path, d.state),
        }
        if d.error.as_ref().is_some_and(|e| e.kind == "unauthorized") {
            eprintln!("{TOKEN_HINT}");
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "{n} download(s) did not complete"
        ))),
    }
}
