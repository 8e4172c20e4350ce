use super::*;
use crate::queue::lifecycle::{apply, Action};
use crate::queue::model::Source;

fn record(id: &str, path: &str, state: State) -> Download {
    Download {
        id: id.to_owned(),
        url: format!("http://h/{path}"),
        file_name: path.to_owned(),
        path: path.to_owned(),
        state,
        order: 0,
        bytes_done: 0,
        bytes_total: None,
        elapsed_secs: 0.0,
        attempt: 0,
        next_retry_at: None,
        sha256: None,
        error: None,
        source: Source::Url,
        speed_limit_bps: None,
        connections: None,
        created_at: "2026-12-01T00:00:00Z".into(),
        transport: None,
        bytes_reused: 0,
        started_at: None,
        finished_at: None,
        completed_as: None,
        validators: None,
    }
}

fn finished(id: &str, state: State, at: &str) -> Download {
    Download {
        finished_at: Some(at.to_owned()),
        ..record(id, &format!("{id}.bin"), state)
    }
}

/// Queued downloads `q0`..`q{n-1}`, pushed in that order.
fn queued(n: usize) -> Queue {
    let mut q = Queue::default();
    for i in 0..n {
        q.push(record(
            &format!("q{i}"),
            &format!("q{i}.bin"),
            State::Queued,
        ));
    }
    q
}

fn waiting_ids(q: &Queue) -> Vec<String> {
    let mut w: Vec<&Download> = q.iter().filter(|d| d.state == State::Queued).collect();
    w.sort_by_key(|d| q.position(d));
    w.into_iter().map(|d| d.id.clone()).collect()
}

#[test]
fn push_keeps_order_and_positions() {
    let q = queued(3);
    assert_eq!(waiting_ids(&q), ["q0", "q1", "q2"]);
    let positions = q.positions();
    assert_eq!((positions["q0"], positions["q2"]), (0, 2));
    assert_eq!(q.position(q.get("q1").unwrap()), Some(1));
    assert_eq!(q.waiting_len(), 3);
}

#[test]
fn move_slots_between_neighbours_without_renumbering() {
    let mut q = queued(4);
    let changed = q.move_to("q3", 1);
    assert_eq!(changed, ["q3"], "only the moved one changes");
    assert_eq!(waiting_ids(&q), ["q0", "q3", "q1", "q2"]);
    q.move_to("q0", 99);
    assert_eq!(
        waiting_ids(&q),
        ["q3", "q1", "q2", "q0"],
        "clamped to the end"
    );
    q.move_to("q2", 0);
    assert_eq!(waiting_ids(&q), ["q2", "q3", "q1", "q0"]);
}

#[test]
fn moves_that_exhaust_the_gap_renumber_every_live_download() {
    let mut q = queued(3);
    // Halving the gap before q1 twenty times uses it up (ORDER_STEP = 2^20).
    let mut renumbered = None;
    for i in 0..40 {
        let who = if i % 2 == 0 { "q2" } else { "q0" };
        let changed = q.move_to(who, 1);
        if changed.len() > 1 {
            renumbered = Some(changed);
            break;
        }
    }
    let changed = renumbered.expect("a renumber within 40 moves");
    assert_eq!(changed.len(), 3, "every live download gets a new key");
    let mut orders: Vec<u64> = q.iter().map(|d| d.order).collect();
    orders.sort_unstable();
    assert_eq!(orders, [ORDER_STEP, 2 * ORDER_STEP, 3 * ORDER_STEP]);
    // The queue is usable after: a new download goes to the end.
    q.push(record("q9", "q9.bin", State::Queued));
    assert_eq!(waiting_ids(&q).last().map(String::as_str), Some("q9"));
}

#[test]
fn transitions_keep_the_waiting_line_in_step() {
    let mut q = queued(3);
    let start = apply(State::Queued, Action::Start).unwrap();
    q.enter("q0", &start, "now");
    assert_eq!(waiting_ids(&q), ["q1", "q2"]);
    assert_eq!(q.position(q.get("q1").unwrap()), Some(0));
    assert_eq!(q.next_waiting(|id| id == "q1"), Some("q2".into()));
    let requeue = apply(State::Downloading, Action::Requeue).unwrap();
    q.enter("q0", &requeue, "now");
    assert_eq!(waiting_ids(&q), ["q0", "q1", "q2"], "back at its own place");
    q.remove("q1");
    assert_eq!(waiting_ids(&q), ["q0", "q2"]);
    assert_eq!(q.waiting_len(), 2);
}

#[test]
fn pages_follow_after_and_limit_and_count_positions_across_pages() {
    let mut q = queued(5);
    q.push(finished("old", State::Completed, "2026-12-01T10:00:00Z"));
    q.push(finished("new", State::Failed, "2026-12-01T11:00:00Z"));
    let first = q.page(None, None, 2).unwrap();
    let ids: Vec<&str> = first.items.iter().map(|(d, _)| d.id.as_str()).collect();
    assert_eq!(ids, ["q0", "q1"]);
    assert_eq!(first.next.as_deref(), Some("q1"));
    let second = q.page(None, first.next.as_deref(), 4).unwrap();
    let got: Vec<(&str, Option<usize>)> = second
        .items
        .iter()
        .map(|(d, p)| (d.id.as_str(), *p))
        .collect();
    assert_eq!(
        got,
        [
            ("q2", Some(2)),
            ("q3", Some(3)),
            ("q4", Some(4)),
            ("new", None)
        ]
    );
    let last = q.page(None, second.next.as_deref(), 4).unwrap();
    assert_eq!(last.items.len(), 1);
    assert_eq!(last.next, None, "no next on the last page");
    let only_failed = q.page(Some(State::Failed), None, 10).unwrap();
    assert_eq!(only_failed.items.len(), 1);
    assert_eq!(q.page(None, Some("nope"), 1).err().as_deref(), Some("nope"));
}

#[test]
fn history_is_newest_first_and_filtered() {
    let mut q = queued(1);
    q.push(finished("a", State::Completed, "2026-12-01T09:00:00Z"));
    q.push(finished("b", State::Cancelled, "2026-12-01T12:00:00Z"));
    q.push(finished("c", State::Completed, "2026-12-01T10:00:00Z"));
    let ids = |v: Vec<&Download>| v.into_iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(q.history(None, 10)), ["b", "c", "a"]);
    assert_eq!(ids(q.history(Some(State::Completed), 10)), ["c", "a"]);
    assert_eq!(ids(q.history(None, 1)), ["b"]);
    let all = ids(q.ordered());
    assert_eq!(all, ["q0", "b", "c", "a"], "live first, then the history");
}

#[test]
fn a_live_download_holds_its_name_even_with_overwrite() {
    let mut q = Queue::default();
    q.push(record("live", "x.bin", State::Downloading));
    for overwrite in [false, true] {
        let e = q.claim("x.bin", overwrite, false, |_| false).unwrap_err();
        assert!(matches!(e, NameTaken::Live { .. }), "{e}");
    }
    assert!(q.claim("y.bin", false, false, |_| false).is_ok());
}

#[test]
fn a_finished_download_holds_its_name_only_while_its_file_is_on_disk() {
    let mut q = Queue::default();
    q.push(finished("done", State::Completed, "2026-12-01T09:00:00Z"));
    let e = q.claim("done.bin", false, true, |_| false).unwrap_err();
    assert_eq!(
        e,
        NameTaken::Completed {
            path: "done.bin".into(),
            by: "done".into()
        }
    );
    assert!(
        q.claim("done.bin", true, true, |_| false).is_ok(),
        "overwrite"
    );
    assert!(
        q.claim("done.bin", false, false, |_| false).is_ok(),
        "its file was deleted by hand: the name is free"
    );
    // A file nobody downloaded.
    let e = q.claim("hand.bin", false, true, |_| false).unwrap_err();
    assert!(matches!(e, NameTaken::OnDisk { .. }), "{e}");
}

#[test]
fn a_cancelled_download_still_stopping_holds_its_name() {
    let mut q = Queue::default();
    q.push(finished("gone", State::Cancelled, "2026-12-01T09:00:00Z"));
    assert!(q.claim("gone.bin", false, false, |_| false).is_ok());
    let e = q
        .claim("gone.bin", true, false, |id| id == "gone")
        .unwrap_err();
    assert!(matches!(e, NameTaken::Live { .. }), "{e}");
}

#[test]
fn other_claims_are_live_or_newer_downloads_of_the_path() {
    let mut q = Queue::default();
    q.push(record("dl_1", "x.bin", State::Failed));
    q.push(record("dl_2", "x.bin", State::Completed));
    assert_eq!(
        q.other_claim("dl_1", "x.bin").map(|d| d.id.as_str()),
        Some("dl_2")
    );
    assert!(
        q.other_claim("dl_2", "x.bin").is_none(),
        "an older finished one is not"
    );
    q.remove("dl_2");
    assert!(q.other_claim("dl_1", "x.bin").is_none());
    assert_eq!(q.with_path("x.bin").count(), 1);
}
