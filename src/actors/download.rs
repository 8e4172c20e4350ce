//! One download actor per running download: it drives the engine on a tokio task and
//! reports its events and its end (or a crash of that task) to whoever started it.
//! It knows no supervisor: it is given the two recipients of its reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::engine::{Engine, EngineEvent, Job, Outcome, RateLimiter, RunCtx};
use crate::files;
use crate::queue::model::{DownloadError, DownloadId, ErrorKind};
use crate::queue::progress::ProgressCell;

/// An event of a running engine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EngineNote {
    pub id: DownloadId,
    pub event: EngineEvent,
}

/// A download actor's end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub id: DownloadId,
    pub outcome: Outcome,
    pub elapsed_secs: f64,
}

/// Where the actor's reports go.
#[derive(Clone)]
pub struct Reports {
    pub events: Recipient<EngineNote>,
    pub finished: Recipient<Finished>,
}

/// A job whose final path is still relative to `download_dir`: the actor resolves it
/// on a blocking thread (it walks the directories), so its starter never touches disk.
pub struct PendingJob {
    pub job: Job,
    pub download_dir: PathBuf,
    pub path: String,
}

/// How long a stop may take before the caller stops waiting (the engine's last act is
/// an fsync, which a slow disk can stretch).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The download actor.
pub struct DownloadActor {
    id: DownloadId,
    job: Option<PendingJob>,
    engine: Engine,
    reports: Reports,
    progress: Arc<ProgressCell>,
    limiter: Arc<RateLimiter>,
    stop_tx: watch::Sender<bool>,
    done_tx: watch::Sender<bool>,
}

impl DownloadActor {
    pub fn new(
        job: PendingJob,
        engine: Engine,
        reports: Reports,
        progress: Arc<ProgressCell>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self {
            id: job.job.id.clone(),
            job: Some(job),
            engine,
            reports,
            progress,
            limiter,
            stop_tx: watch::channel(false).0,
            done_tx: watch::channel(false).0,
        }
    }
}

impl Actor for DownloadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(pending) = self.job.take() else {
            return;
        };
        let id = pending.job.id.clone();
        let events = self.reports.events.clone();
        let note_id = id.clone();
        let run_ctx = RunCtx {
            events: Arc::new(move |event| {
                events.do_send(EngineNote {
                    id: note_id.clone(),
                    event,
                })
            }),
            progress: self.progress.clone(),
            stop: self.stop_tx.subscribe(),
            limiter: self.limiter.clone(),
        };
        let engine = self.engine.clone();
        let progress = self.progress.clone();
        let bytes_before = self.progress.done();
        ctx.spawn(
            run_guarded(id, progress, async move {
                match resolve(pending).await {
                    Ok(job) => engine.run(job, run_ctx).await,
                    Err(error) => Outcome::Failed {
                        bytes: bytes_before,
                        error,
                    },
                }
            })
            .into_actor(self)
            .map(|outcome, act, ctx| {
                let id = act.id.clone();
                act.reports.finished.do_send(Finished {
                    id,
                    outcome,
                    elapsed_secs: act.progress.elapsed_secs(),
                });
                act.done_tx.send_replace(true);
                ctx.stop();
            }),
        );
    }
}

/// The job with its final path resolved inside `download_dir` (symlinks refused), and
/// the handle of the directory it was resolved to, which the transfer works through.
async fn resolve(pending: PendingJob) -> Result<Job, DownloadError> {
    let PendingJob {
        mut job,
        download_dir,
        path,
    } = pending;
    let resolved = tokio::task::spawn_blocking(move || {
        files::Place::open(&download_dir, &path).map_err(|e| format!("cannot use {path}: {e}"))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match resolved {
        Ok(place) => {
            job.final_path = place.path().to_path_buf();
            job.place = Some(Arc::new(place));
            Ok(job)
        }
        Err(message) => Err(DownloadError {
            kind: ErrorKind::Disk,
            message,
        }),
    }
}

/// Runs a download on a task of its own, so that a panic in the engine arrives here as
/// a `JoinError` and fails that one download (`internal`, keeping its bytes) instead of
/// taking the actor and its arbiter down with it.
async fn run_guarded(
    id: DownloadId,
    progress: Arc<ProgressCell>,
    run: impl std::future::Future<Output = Outcome> + Send + 'static,
) -> Outcome {
    match tokio::spawn(run).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(download_id = %id, error = %e, "download task died");
            Outcome::Failed {
                bytes: progress.done(),
                error: DownloadError {
                    kind: ErrorKind::Internal,
                    message: format!("the download task died: {e}"),
                },
            }
        }
    }
}

/// Ask the engine to stop; resolves once it has checkpointed and ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for DownloadActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Stop, _: &mut Self::Context) -> Self::Result {
        self.stop_tx.send_replace(true);
        let mut done = self.done_tx.subscribe();
        Box::pin(async move {
            let _ = tokio::time::timeout(STOP_WAIT, done.wait_for(|d| *d)).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_engine_fails_its_download_and_keeps_its_bytes() {
        let progress = Arc::new(ProgressCell::new(1234, Some(10_000), 0.0));
        let outcome = run_guarded("dl_test".into(), progress, async {
            panic!("an engine bug");
        })
        .await;
        match outcome {
            Outcome::Failed { bytes, error } => {
                assert_eq!(bytes, 1234);
                assert_eq!(error.kind, ErrorKind::Internal);
                assert!(error.message.contains("died"), "{}", error.message);
            }
            other => panic!("want failed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_engine_that_ends_is_passed_through() {
        let progress = Arc::new(ProgressCell::new(0, None, 0.0));
        let outcome = run_guarded("dl_test".into(), progress, async {
            Outcome::Completed {
                bytes: 7,
                file: None,
                validators: None,
            }
        })
        .await;
        assert!(
            matches!(outcome, Outcome::Completed { bytes: 7, .. }),
            "{outcome:?}"
        );
    }
}
