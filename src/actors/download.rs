//! One download actor per running download: it drives the engine on a tokio task and
//! reports the end (or a crash of that task) to the supervisor.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::actors::supervisor::{EngineNote, Finished, Supervisor};
use crate::engine::{Engine, Job, Outcome, RateLimiter, RunCtx};
use crate::model::{DownloadError, DownloadId, ErrorKind};
use crate::progress::ProgressCell;

/// How long a stop may take before the caller stops waiting (the engine's last act is
/// an fsync, which a slow disk can stretch).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The download actor.
pub struct DownloadActor {
    id: DownloadId,
    job: Option<Job>,
    engine: Engine,
    supervisor: Addr<Supervisor>,
    progress: Arc<ProgressCell>,
    limiter: Arc<RateLimiter>,
    stop_tx: watch::Sender<bool>,
    done_tx: watch::Sender<bool>,
}

impl DownloadActor {
    pub fn new(
        job: Job,
        engine: Engine,
        supervisor: Addr<Supervisor>,
        progress: Arc<ProgressCell>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self {
            id: job.id.clone(),
            job: Some(job),
            engine,
            supervisor,
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
        let Some(job) = self.job.take() else { return };
        let id = job.id.clone();
        let supervisor = self.supervisor.clone();
        let note_id = id.clone();
        let run_ctx = RunCtx {
            events: Arc::new(move |event| {
                supervisor.do_send(EngineNote {
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
        ctx.spawn(
            run_guarded(id, progress, async move { engine.run(job, run_ctx).await })
                .into_actor(self)
                .map(|outcome, act, ctx| {
                    let id = act.id.clone();
                    act.supervisor.do_send(Finished {
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
            Outcome::Completed { bytes: 7 }
        })
        .await;
        assert!(
            matches!(outcome, Outcome::Completed { bytes: 7 }),
            "{outcome:?}"
        );
    }
}
