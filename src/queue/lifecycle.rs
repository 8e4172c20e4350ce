//! A download's lifecycle as data: the states of the contract, the actions that move
//! between them, and one pure function that decides every transition and refusal.
//!
//! Nothing here does I/O or knows actors. The supervisor asks [`apply`] and carries out
//! what it answers (stop an engine, leave or join the queue); the record's bookkeeping
//! fields follow from the [`Transition`] alone (`Download::enter`). A client reads the
//! same table through [`allowed_actions`], so no front end keeps a copy of it.

use serde::{Deserialize, Serialize};

/// The states of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Downloading,
    Retrying,
    Verifying,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    /// Every state, in the contract's order.
    pub const ALL: [State; 8] = [
        State::Queued,
        State::Downloading,
        State::Retrying,
        State::Verifying,
        State::Paused,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    /// Holding a transfer slot: an engine is (or is about to be) running.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            State::Downloading | State::Retrying | State::Verifying
        )
    }

    /// Finished for good (until a retry): these make up the history.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Downloading => "downloading",
            State::Retrying => "retrying",
            State::Verifying => "verifying",
            State::Paused => "paused",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Something that happens to a download: a client's command or an engine's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    // What clients ask for (the contract's `actions`).
    Pause,
    Resume,
    Cancel,
    Retry,
    Move,
    Delete,
    // What the scheduler and the engine report.
    /// The scheduler gives it a transfer slot.
    Start,
    /// A failed attempt: waiting out a backoff.
    Backoff,
    /// The backoff is over and bytes flow again.
    Recover,
    /// Every byte is there; the digest is being checked.
    Verify,
    /// The file is under its final name.
    Complete,
    /// Retries exhausted, or a fatal error.
    Fail,
    /// The engine stopped without being asked (a restart): back in line.
    Requeue,
    /// A new URL for the same file (an expired link): a running transfer stops and
    /// goes back in line to restart on it (keeping its bytes when the file is the
    /// same); in any other state only the URL changes.
    ChangeUrl,
}

impl Action {
    /// The actions a client may send, in the order a page shows them.
    pub const CLIENT: [Action; 6] = [
        Action::Pause,
        Action::Resume,
        Action::Cancel,
        Action::Retry,
        Action::Move,
        Action::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Move => "move",
            Action::Delete => "delete",
            Action::Start => "start",
            Action::Backoff => "backoff",
            Action::Recover => "recover",
            Action::Verify => "verify",
            Action::Complete => "complete",
            Action::Fail => "fail",
            Action::Requeue => "requeue",
            Action::ChangeUrl => "change_url",
        }
    }
}

/// How the record's bookkeeping fields change with a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamps {
    /// `finished_at`: set to now (`Some(true)`), cleared (`Some(false)`), or kept.
    pub finished: Option<bool>,
    /// `started_at` is set to now unless it already has a value.
    pub started: bool,
    /// `error` goes back to none.
    pub clear_error: bool,
    /// `attempt`, the count of failures in a row, goes back to 0.
    pub reset_attempt: bool,
    /// `next_retry_at` is cleared.
    pub clear_retry_at: bool,
}

/// What [`apply`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// A running (or still stopping) engine must be stopped, and waited for, first.
    pub stop_engine: bool,
    /// Nothing changes: the action is already true (resume of a queued download).
    pub no_op: bool,
    /// The record is forgotten once its engine has stopped (a delete): it leaves the
    /// queue at once, so that nothing starts it in the meantime.
    pub forgets: bool,
    pub stamps: Stamps,
}

impl Transition {
    /// Leaves the queue of downloads waiting for a slot.
    pub fn leaves_queue(&self) -> bool {
        self.from == State::Queued && (self.to != State::Queued || self.forgets)
    }

    /// Joins the queue of downloads waiting for a slot.
    pub fn joins_queue(&self) -> bool {
        self.from != State::Queued && self.to == State::Queued
    }
}

/// Why an action is refused in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("download is {}; {}", state.as_str(), self.hint())]
pub struct Refusal {
    pub state: State,
    pub action: Action,
}

impl Refusal {
    /// What to do instead, for people.
    pub fn hint(&self) -> &'static str {
        match (self.action, self.state) {
            (Action::Pause, State::Verifying) => "it cannot be paused while its digest is checked",
            (Action::Pause, _) => "it cannot be paused",
            (Action::Resume, _) => "use retry to start it again",
            (Action::Cancel, _) => "nothing to cancel",
            (Action::Retry, _) => "only failed or cancelled downloads can be retried",
            (Action::Move, _) => "only queued downloads can be moved",
            _ => "that does not apply to it now",
        }
    }
}

/// The whole state machine of the contract: what `action` does to a download in `state`.
pub fn apply(state: State, action: Action) -> Result<Transition, Refusal> {
    use Action as A;
    use State as S;
    let refuse = Err(Refusal { state, action });
    let go = |to: State, stop_engine: bool, stamps: Stamps| {
        Ok(Transition {
            from: state,
            to,
            stop_engine,
            no_op: false,
            forgets: false,
            stamps,
        })
    };
    let stay = Ok(Transition {
        from: state,
        to: state,
        stop_engine: false,
        no_op: true,
        forgets: false,
        stamps: Stamps::default(),
    });
    let finish = Stamps {
        finished: Some(true),
        clear_retry_at: true,
        ..Stamps::default()
    };
    let wait = Stamps {
        clear_retry_at: true,
        ..Stamps::default()
    };
    match (action, state) {
        (A::Pause, S::Queued) => go(S::Paused, false, wait),
        (A::Pause, S::Downloading | S::Retrying) => go(S::Paused, true, wait),
        (A::Pause, S::Paused) => stay,
        (A::Resume, S::Paused) => go(S::Queued, false, Stamps::default()),
        (A::Resume, S::Queued | S::Downloading | S::Retrying | S::Verifying) => stay,
        (A::Cancel, s) if !s.is_finished() => go(S::Cancelled, true, finish),
        (A::Retry, S::Failed | S::Cancelled) => go(
            S::Queued,
            false,
            Stamps {
                finished: Some(false),
                clear_error: true,
                reset_attempt: true,
                ..Stamps::default()
            },
        ),
        (A::Move, S::Queued) => go(S::Queued, false, Stamps::default()),
        (A::Delete, s) => go(s, true, Stamps::default()).map(|t| Transition { forgets: true, ..t }),
        (A::Start, S::Queued) => go(
            S::Downloading,
            false,
            Stamps {
                started: true,
                clear_error: true,
                clear_retry_at: true,
                ..Stamps::default()
            },
        ),
        (A::Backoff, S::Downloading | S::Retrying) => go(S::Retrying, false, Stamps::default()),
        (A::Recover, S::Retrying) => go(S::Downloading, false, wait),
        (A::Recover, S::Downloading) => stay,
        (A::Verify, S::Downloading | S::Retrying) => go(S::Verifying, false, Stamps::default()),
        // The file is under its final name: completed, even when a pause came too late
        // to stop it (and a resume put it back in line). A cancel keeps its word.
        (A::Complete, S::Downloading | S::Retrying | S::Verifying | S::Paused | S::Queued) => go(
            S::Completed,
            false,
            Stamps {
                clear_error: true,
                reset_attempt: true,
                ..finish
            },
        ),
        // A start that cannot even begin (its path is refused) fails from the queue.
        (A::Fail, S::Queued | S::Downloading | S::Retrying | S::Verifying) => {
            go(S::Failed, false, finish)
        }
        (A::Requeue, S::Downloading | S::Retrying | S::Verifying) => go(S::Queued, false, wait),
        (A::ChangeUrl, s) if s.is_running() => go(S::Queued, true, wait),
        // A completed record names the source of its bytes: a new URL would make it lie.
        (A::ChangeUrl, s) if s != S::Completed => stay,
        _ => refuse,
    }
}

/// The client actions that change something in `state`: what a page offers as buttons.
pub fn allowed_actions(state: State) -> Vec<Action> {
    Action::CLIENT
        .into_iter()
        .filter(|&a| apply(state, a).is_ok_and(|t| !t.no_op))
        .collect()
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
