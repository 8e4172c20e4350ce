//! What running engines report: their events while they run, and their end.

use std::time::SystemTime;

use actix::prelude::*;

use super::Supervisor;
use crate::actors::download::{EngineNote, Finished};
use crate::engine::{EngineEvent, Outcome};
use crate::queue::lifecycle::Action;
use crate::queue::lifecycle::State;
use crate::queue::model::{rfc3339, Source};

impl Handler<EngineNote> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: EngineNote, _: &mut Self::Context) {
        // Events of an engine that was told to stop are stale: the command that
        // stopped it has already decided the state.
        if !self.running.contains_key(&msg.id) {
            return;
        }
        let id = msg.id;
        let changed = match msg.event {
            EngineEvent::Retrying {
                attempt,
                wait,
                error,
            } => {
                self.engine.metrics.retry(error.kind.as_str());
                let entered = self.try_enter(&id, Action::Backoff);
                if let (true, Some(d)) = (entered, self.queue.get_mut(&id)) {
                    d.attempt = attempt;
                    d.next_retry_at = Some(rfc3339(SystemTime::now() + wait));
                    d.error = Some(error);
                }
                entered
            }
            EngineEvent::BackoffOver => self.try_enter(&id, Action::Recover),
            EngineEvent::Verifying => self.try_enter(&id, Action::Verify),
            other => self.note_fields(&id, other),
        };
        if changed {
            self.save(&id);
        }
    }
}

impl Supervisor {
    /// Events that change a record's fields but not its state.
    fn note_fields(&mut self, id: &str, event: EngineEvent) -> bool {
        let Some(d) = self.queue.get_mut(id) else {
            return false;
        };
        match event {
            EngineEvent::Total(total) => {
                let changed = d.bytes_total != total;
                d.bytes_total = total;
                changed
            }
            EngineEvent::Notice(error) => {
                d.error = Some(error);
                true
            }
            EngineEvent::Pinned { commit, sha256 } => {
                if let Source::Hub { commit: pinned, .. } = &mut d.source {
                    if pinned.is_none() {
                        *pinned = commit;
                    }
                }
                if d.sha256.is_none() {
                    d.sha256 = sha256;
                }
                true
            }
            EngineEvent::Transport(kind) => {
                let changed = d.transport.as_deref() != Some(kind);
                d.transport = Some(kind.to_owned());
                changed
            }
            EngineEvent::Reused(n) => {
                d.bytes_reused = d.bytes_reused.saturating_add(n);
                true
            }
            EngineEvent::Retrying { .. } | EngineEvent::BackoffOver | EngineEvent::Verifying => {
                false
            }
        }
    }

    /// The state an engine's end leads to. `asked`: a command stopped it (and already
    /// decided the state), or the service is shutting down (which keeps the states,
    /// so that the next start resumes them).
    fn settle(&mut self, id: &str, outcome: Outcome, asked: bool) {
        let (bytes, action, error) = match outcome {
            // The file is under its final name: completed, even if a pause or a
            // shutdown came too late to stop it (a cancel keeps its word).
            Outcome::Completed {
                bytes,
                file,
                validators,
            } => {
                if let Some(d) = self.queue.get_mut(id) {
                    d.bytes_total = Some(bytes);
                    d.completed_as = file;
                    d.validators = validators;
                }
                (bytes, Some(Action::Complete), None)
            }
            // Nobody asked it to stop: back in line.
            Outcome::Stopped { bytes } => (bytes, (!asked).then_some(Action::Requeue), None),
            Outcome::Failed { bytes, error } => {
                (bytes, (!asked).then_some(Action::Fail), Some(error))
            }
        };
        if let Some(d) = self.queue.get_mut(id) {
            d.bytes_done = bytes;
        }
        let entered = action.is_some_and(|a| self.try_enter(id, a));
        if let (true, Some(error), Some(d)) = (entered, error, self.queue.get_mut(id)) {
            d.error = Some(error);
        }
    }
}

impl Handler<Finished> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Self::Context) {
        let natural_end = self.running.remove(&msg.id).is_some();
        self.stopping.remove(&msg.id);
        self.sampler.untrack(&msg.id);
        let Some(d) = self.queue.get_mut(&msg.id) else {
            self.schedule(ctx);
            return;
        };
        d.elapsed_secs = (msg.elapsed_secs * 100.0).round() / 100.0;
        let completed = matches!(msg.outcome, Outcome::Completed { .. });
        let asked = !natural_end || self.shutting_down;
        self.settle(&msg.id, msg.outcome, asked);
        if let Some(d) = self
            .queue
            .get(&msg.id)
            .filter(|d| d.state == State::Completed)
        {
            // Nobody listening is fine: the library also scans on its own.
            let _ = self.completed.send(d.clone());
        }
        if self.shutting_down {
            self.persist(&msg.id);
            if completed {
                let _ = self.store.remove_checkpoint(&msg.id);
            }
            return;
        }
        self.save(&msg.id);
        if completed {
            // Only after the record says so (sled keeps the order of writes), so that
            // no flush holds "no checkpoint" beside a record that is not completed.
            let _ = self.store.remove_checkpoint(&msg.id);
        }
        // The record is what must last (in the journal, one sync shared by the files
        // that end together); the checkpoint's removal reaches sled with the records
        // written before it, in the background: a crash before that leaves a stale
        // checkpoint beside a completed record, which nothing reads.
        let store = self.store.clone();
        actix::spawn(async move {
            if let Err(e) = store.commit().await {
                tracing::error!(error = %e, "journal sync failed");
            }
        });
        self.schedule(ctx);
    }
}
