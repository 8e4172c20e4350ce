use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::actors::frames;

/// The supervisor's part, in small: a queue of download ids and their states that
/// publishes every change and builds snapshots of itself.
struct FakeQueue {
    broadcaster: Broadcaster,
    states: BTreeMap<String, String>,
    builds: Arc<AtomicUsize>,
}

impl FakeQueue {
    fn change(&mut self, id: &str, state: &str) {
        self.states.insert(id.to_owned(), state.to_owned());
        let frame = serde_json::json!({"type": "state", "download": {"id": id, "state": state}});
        self.broadcaster.publish(frame.to_string().into());
    }

    fn snapshot(&self) -> Taken {
        self.broadcaster.snapshot(|| {
            self.builds.fetch_add(1, Ordering::Relaxed);
            let text = serde_json::json!({"type": "snapshot", "downloads": self.states});
            Snapshot::from_text(&text.to_string())
        })
    }
}

impl Actor for FakeQueue {
    type Context = Context<Self>;
}

impl Handler<TakeSnapshot> for FakeQueue {
    type Result = MessageResult<TakeSnapshot>;
    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

/// Changes the queue; answers a new reader.
#[derive(Message)]
#[rtype(result = "()")]
struct Change(String, &'static str);

impl Handler<Change> for FakeQueue {
    type Result = ();
    fn handle(&mut self, msg: Change, _: &mut Self::Context) {
        self.change(&msg.0, msg.1);
    }
}

#[derive(Message)]
#[rtype(result = "Subscription")]
struct Subscribe;

impl Handler<Subscribe> for FakeQueue {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, _: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        let first = self.snapshot();
        MessageResult(self.broadcaster.subscribe(first, ctx.address().recipient()))
    }
}

fn start() -> (Broadcaster, Addr<FakeQueue>, Arc<AtomicUsize>) {
    let broadcaster = Broadcaster::new(Arc::default());
    let builds = Arc::new(AtomicUsize::new(0));
    let queue = FakeQueue {
        broadcaster: broadcaster.clone(),
        states: BTreeMap::new(),
        builds: builds.clone(),
    }
    .start();
    (broadcaster, queue, builds)
}

fn json(frame: ClientFrame) -> serde_json::Value {
    let text = match frame {
        ClientFrame::Text(t) => t.to_string(),
        ClientFrame::Snapshot(s) => s.to_text().to_string(),
    };
    serde_json::from_str(&text).expect("a JSON frame")
}

/// What a reader knows after applying a frame, as the page does.
fn apply(known: &mut BTreeMap<String, String>, frame: &serde_json::Value) {
    match frame["type"].as_str() {
        Some("snapshot") => {
            *known = serde_json::from_value(frame["downloads"].clone()).expect("states")
        }
        Some("state") => {
            let d = &frame["download"];
            known.insert(
                d["id"].as_str().expect("id").to_owned(),
                d["state"].as_str().expect("state").to_owned(),
            );
        }
        _ => {}
    }
}

#[actix::test]
async fn a_reader_starts_with_a_snapshot_then_gets_every_change_in_order() {
    let (_b, queue, _) = start();
    queue.send(Change("dl_0".into(), "queued")).await.unwrap();
    let mut reader = queue.send(Subscribe).await.unwrap();
    let first = json(reader.recv().await.expect("a snapshot"));
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["downloads"]["dl_0"], "queued");
    for i in 0..3 * BACKLOG / 2 {
        queue
            .send(Change(
                "dl_0".into(),
                if i % 2 == 0 { "paused" } else { "queued" },
            ))
            .await
            .unwrap();
        let f = json(reader.recv().await.expect("a frame"));
        assert_eq!(
            f["type"], "state",
            "a reader that keeps up gets no snapshot"
        );
        assert_eq!(
            f["download"]["state"],
            if i % 2 == 0 { "paused" } else { "queued" }
        );
    }
}

#[actix::test]
async fn a_reader_that_lags_gets_a_fresh_snapshot_and_misses_no_change() {
    let (b, queue, _) = start();
    let mut slow = queue.send(Subscribe).await.unwrap();
    let mut known = BTreeMap::new();
    apply(&mut known, &json(slow.recv().await.unwrap()));
    // Far more changes than the backlog, while it reads nothing.
    for i in 0..3 * BACKLOG {
        queue
            .send(Change(format!("dl_{i}"), "queued"))
            .await
            .unwrap();
    }
    queue.send(Change("dl_7".into(), "paused")).await.unwrap();
    let f = json(slow.recv().await.unwrap());
    assert_eq!(
        f["type"], "snapshot",
        "a reader that lagged starts again from a snapshot"
    );
    apply(&mut known, &f);
    assert_eq!(known.len(), 3 * BACKLOG);
    assert_eq!(known["dl_7"], "paused");
    // Nothing the snapshot holds comes again, and every later change comes.
    queue.send(Change("dl_8".into(), "paused")).await.unwrap();
    let f = json(slow.recv().await.unwrap());
    assert_eq!(f["download"]["id"], "dl_8", "{f}");
    drop(b);
}

#[actix::test]
async fn frames_held_by_the_snapshot_are_not_given_again() {
    let (b, queue, _) = start();
    let mut reader = queue.send(Subscribe).await.unwrap();
    reader.recv().await.unwrap();
    for i in 0..BACKLOG + 10 {
        queue
            .send(Change(format!("dl_{i}"), "queued"))
            .await
            .unwrap();
    }
    // Lagged: the snapshot, then only what came after it.
    assert!(matches!(
        reader.recv().await,
        Some(ClientFrame::Snapshot(_))
    ));
    b.announce(Arc::from(r#"{"type":"progress","updates":[]}"#));
    let f = json(reader.recv().await.unwrap());
    assert_eq!(f["type"], "progress", "{f}");
}

#[actix::test]
async fn one_snapshot_is_shared_until_a_change() {
    let (b, queue, builds) = start();
    queue.send(Change("dl_1".into(), "queued")).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(queue.send(Subscribe).await.unwrap());
    }
    // Progress does not make a snapshot out of date.
    b.announce(Arc::from(r#"{"type":"progress","updates":[]}"#));
    readers.push(queue.send(Subscribe).await.unwrap());
    assert_eq!(
        builds.load(Ordering::Relaxed),
        1,
        "one build for four readers"
    );
    let mut firsts = Vec::new();
    for r in &mut readers {
        match r.recv().await {
            Some(ClientFrame::Snapshot(s)) => firsts.push(s),
            _ => panic!("no snapshot first"),
        }
    }
    assert!(firsts.iter().all(|s| Arc::ptr_eq(s, &firsts[0])));
    queue.send(Change("dl_1".into(), "paused")).await.unwrap();
    for r in &mut readers {
        // The progress frame (for those subscribed before it), then the change: no
        // frame is taken for lost, whichever frame its snapshot was built at.
        let mut f = json(r.recv().await.unwrap());
        if f["type"] == "progress" {
            f = json(r.recv().await.unwrap());
        }
        assert_eq!(f["download"]["state"], "paused", "{f}");
    }
    let mut newcomer = queue.send(Subscribe).await.unwrap();
    assert_eq!(
        builds.load(Ordering::Relaxed),
        2,
        "a change makes it out of date"
    );
    assert_eq!(
        json(newcomer.recv().await.unwrap())["downloads"]["dl_1"],
        "paused"
    );
    // Let go after a while, even with no change.
    b.forget_old_snapshot(Instant::now() + SNAPSHOT_KEEP + Duration::from_secs(1));
    let _late = queue.send(Subscribe).await.unwrap();
    assert_eq!(builds.load(Ordering::Relaxed), 3);
}

#[actix::test]
async fn readers_are_counted_and_end_when_closed() {
    let metrics = Arc::new(Metrics::default());
    let b = Broadcaster::new(metrics.clone());
    let queue = FakeQueue {
        broadcaster: b.clone(),
        states: BTreeMap::new(),
        builds: Arc::default(),
    }
    .start();
    let mut reader = queue.send(Subscribe).await.unwrap();
    let other = queue.send(Subscribe).await.unwrap();
    assert!(b.has_readers());
    assert_eq!(metrics.websocket_clients.load(Ordering::Relaxed), 2);
    drop(other);
    assert_eq!(metrics.websocket_clients.load(Ordering::Relaxed), 1);
    reader.recv().await.unwrap();
    queue.send(Change("dl_1".into(), "queued")).await.unwrap();
    b.close();
    assert_eq!(
        json(reader.recv().await.unwrap())["type"],
        "state",
        "what was sent still comes"
    );
    assert!(reader.recv().await.is_none(), "then the end");
    assert!(!b.has_readers());
}

#[test]
fn a_snapshot_from_text_is_that_text() {
    let s = Snapshot::from_text(r#"{"type":"snapshot","downloads":[]}"#);
    assert_eq!(&*s.to_text(), &*frames::snapshot(&[]));
}
