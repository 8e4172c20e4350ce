//! The contract's states paragraph as a table: every (state, action) pair with its
//! expected transition or refusal. A change to any arm of `apply` fails a row here.

use super::*;
use Action as A;
use State as S;

/// What a pair should do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Refused.
    No,
    /// Allowed and already true: nothing changes.
    Stay,
    /// To this state, the engine left alone.
    To(State),
    /// To this state, after stopping the engine.
    Stop(State),
}
use Want::{No, Stay, Stop, To};

/// Columns: queued, downloading, retrying, verifying, paused, completed, failed, cancelled.
const TABLE: [(Action, [Want; 8]); 13] = [
    (
        A::Pause,
        [
            To(S::Paused),
            Stop(S::Paused),
            Stop(S::Paused),
            No,
            Stay,
            No,
            No,
            No,
        ],
    ),
    (
        A::Resume,
        [Stay, Stay, Stay, Stay, To(S::Queued), No, No, No],
    ),
    (
        A::Cancel,
        [
            Stop(S::Cancelled),
            Stop(S::Cancelled),
            Stop(S::Cancelled),
            Stop(S::Cancelled),
            Stop(S::Cancelled),
            No,
            No,
            No,
        ],
    ),
    (
        A::Retry,
        [No, No, No, No, No, No, To(S::Queued), To(S::Queued)],
    ),
    (A::Move, [To(S::Queued), No, No, No, No, No, No, No]),
    (
        A::Delete,
        [
            Stop(S::Queued),
            Stop(S::Downloading),
            Stop(S::Retrying),
            Stop(S::Verifying),
            Stop(S::Paused),
            Stop(S::Completed),
            Stop(S::Failed),
            Stop(S::Cancelled),
        ],
    ),
    (A::Start, [To(S::Downloading), No, No, No, No, No, No, No]),
    (
        A::Backoff,
        [No, To(S::Retrying), To(S::Retrying), No, No, No, No, No],
    ),
    (
        A::Recover,
        [No, Stay, To(S::Downloading), No, No, No, No, No],
    ),
    (
        A::Verify,
        [No, To(S::Verifying), To(S::Verifying), No, No, No, No, No],
    ),
    (
        A::Complete,
        [
            To(S::Completed),
            To(S::Completed),
            To(S::Completed),
            To(S::Completed),
            To(S::Completed),
            No,
            No,
            No,
        ],
    ),
    (
        A::Fail,
        [
            To(S::Failed),
            To(S::Failed),
            To(S::Failed),
            To(S::Failed),
            No,
            No,
            No,
            No,
        ],
    ),
    (
        A::Requeue,
        [
            No,
            To(S::Queued),
            To(S::Queued),
            To(S::Queued),
            No,
            No,
            No,
            No,
        ],
    ),
];

fn observed(state: State, action: Action) -> Want {
    match apply(state, action) {
        Err(r) => {
            assert_eq!(
                (r.state, r.action),
                (state, action),
                "refusal names the pair"
            );
            No
        }
        Ok(t) if t.no_op => {
            assert_eq!((t.from, t.to, t.stop_engine), (state, state, false));
            Stay
        }
        Ok(t) if t.stop_engine => Stop(t.to),
        Ok(t) => To(t.to),
    }
}

#[test]
fn every_state_and_action_of_the_contract() {
    let mut rows = 0;
    for (action, wants) in TABLE {
        for (state, want) in State::ALL.into_iter().zip(wants) {
            assert_eq!(
                observed(state, action),
                want,
                "{} on a {} download",
                action.as_str(),
                state.as_str()
            );
            rows += 1;
        }
    }
    assert_eq!(rows, 8 * 13, "the table covers every pair");
}

/// The bookkeeping each allowed action does, whatever state it starts from.
#[test]
fn stamps_follow_the_action() {
    let none = Stamps::default();
    let finish = Stamps {
        finished: Some(true),
        clear_retry_at: true,
        ..none
    };
    let wait = Stamps {
        clear_retry_at: true,
        ..none
    };
    let expected = |a: Action| match a {
        A::Pause | A::Recover | A::Requeue | A::ChangeUrl => wait,
        A::Cancel | A::Fail => finish,
        A::Complete => Stamps {
            clear_error: true,
            reset_attempt: true,
            ..finish
        },
        A::Retry => Stamps {
            finished: Some(false),
            clear_error: true,
            reset_attempt: true,
            ..none
        },
        A::Start => Stamps {
            started: true,
            clear_error: true,
            clear_retry_at: true,
            ..none
        },
        A::Resume | A::Move | A::Delete | A::Backoff | A::Verify => none,
    };
    for (action, _) in TABLE {
        for state in State::ALL {
            if let Ok(t) = apply(state, action) {
                let want = if t.no_op { none } else { expected(action) };
                assert_eq!(t.stamps, want, "{} on {}", action.as_str(), state.as_str());
            }
        }
    }
}

#[test]
fn clients_are_offered_only_what_changes_something() {
    let names =
        |s: State| -> Vec<&str> { allowed_actions(s).into_iter().map(Action::as_str).collect() };
    assert_eq!(names(S::Queued), ["pause", "cancel", "move", "delete"]);
    assert_eq!(names(S::Downloading), ["pause", "cancel", "delete"]);
    assert_eq!(names(S::Retrying), ["pause", "cancel", "delete"]);
    assert_eq!(names(S::Verifying), ["cancel", "delete"]);
    assert_eq!(names(S::Paused), ["resume", "cancel", "delete"]);
    assert_eq!(names(S::Completed), ["delete"]);
    assert_eq!(names(S::Failed), ["retry", "delete"]);
    assert_eq!(names(S::Cancelled), ["retry", "delete"]);
}

#[test]
fn queue_membership_follows_from_and_to() {
    let t = apply(S::Paused, A::Resume).unwrap();
    assert!(t.joins_queue() && !t.leaves_queue());
    let t = apply(S::Queued, A::Start).unwrap();
    assert!(t.leaves_queue() && !t.joins_queue());
    let t = apply(S::Queued, A::Move).unwrap();
    assert!(!t.leaves_queue() && !t.joins_queue());
}

#[test]
fn refusals_say_what_to_do_instead() {
    let msg = apply(S::Completed, A::Resume).unwrap_err().to_string();
    assert_eq!(msg, "download is completed; use retry to start it again");
    let msg = apply(S::Verifying, A::Pause).unwrap_err().to_string();
    assert!(msg.contains("verifying"), "{msg}");
}

#[test]
fn states_round_trip_as_contract_strings() {
    for s in State::ALL {
        assert_eq!(State::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    assert_eq!(State::parse("bogus"), None);
}

/// A new URL: a running transfer stops and goes back in line, exactly as a requeue
/// does (the old supervisor requeued by hand and ignored a refusal); a completed
/// download refuses it (its record says where its bytes came from); in every other
/// state only the URL changes.
#[test]
fn a_new_url_restarts_only_a_running_transfer() {
    assert!(apply(State::Completed, A::ChangeUrl).is_err());
    for state in State::ALL.into_iter().filter(|s| *s != State::Completed) {
        let t = apply(state, A::ChangeUrl)
            .unwrap_or_else(|r| panic!("a new URL is refused on {}: {r}", state.as_str()));
        if state.is_running() {
            let requeue = apply(state, A::Requeue).expect("a running download can requeue");
            assert_eq!(
                t,
                Transition {
                    stop_engine: true,
                    ..requeue
                },
                "{}",
                state.as_str()
            );
            assert!(t.joins_queue(), "{}", state.as_str());
        } else {
            assert!(t.no_op && !t.stop_engine, "{}: {t:?}", state.as_str());
            assert!(
                apply(state, A::Requeue).is_err(),
                "{}: a requeue here is what the supervisor asked for and ignored",
                state.as_str()
            );
        }
    }
    assert!(
        !Action::CLIENT.contains(&A::ChangeUrl),
        "it is PATCH's, not a button"
    );
    assert_eq!(A::ChangeUrl.as_str(), "change_url");
}

/// A delete takes a queued download out of the line at once (the supervisor did that
/// by hand); from any other state it leaves no line, and nothing else forgets.
#[test]
fn a_delete_leaves_the_queue_at_once() {
    for state in State::ALL {
        let t = apply(state, A::Delete).unwrap();
        assert!(t.forgets && t.stop_engine, "{}", state.as_str());
        assert_eq!(t.to, state, "the state stays until it is forgotten");
        assert_eq!(t.leaves_queue(), state == S::Queued, "{}", state.as_str());
        assert!(!t.joins_queue(), "{}", state.as_str());
    }
    for (action, _) in TABLE {
        for state in State::ALL {
            if let (false, Ok(t)) = (action == A::Delete, apply(state, action)) {
                assert!(!t.forgets, "{} on {}", action.as_str(), state.as_str());
            }
        }
    }
}
