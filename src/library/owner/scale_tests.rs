//! What completed downloads cost the index: every question a completion asks (the
//! file's record, the files of its digest, the files found at its commit, the totals
//! of the frame) is a lookup, never a walk of the whole index, so n completions cost
//! O(n) index work. Counted in records looked up or visited ([`Index::visits`]), not in
//! time: the count does not depend on the machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{Index, Mailbox, Msg};
use crate::library::{Folders, Shared};
use crate::queue::model::Download;
use crate::queue::store::Store;

/// Every 10th download is a URL without a digest (the hasher finds it); every 50th
/// has the bytes of the one before it (the library links the two).
fn is_url(i: usize) -> bool {
    i % 10 == 9
}

fn is_twin(i: usize) -> bool {
    i % 50 == 1
}

fn content(i: usize) -> String {
    let of = if is_twin(i) { i - 1 } else { i };
    format!("the bytes of file {of}\n")
}

/// The completed download of file `i`, as the queue announces it.
fn download(i: usize, root: &std::path::Path) -> Download {
    let bytes = content(i);
    let (path, source, sha256) = if is_url(i) {
        (
            format!("urls/u{i}.bin"),
            serde_json::json!({"kind": "url"}),
            None,
        )
    } else {
        let repo = format!("org/repo{}", i % 10);
        let file = format!("f{i}.bin");
        let source = serde_json::json!({
            "kind": "hub", "repo": repo, "revision": "main", "file": file,
            "commit": "0123456789abcdef0123456789abcdef01234567",
        });
        let sha: String = Sha256::digest(bytes.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (format!("{repo}/{file}"), source, Some(sha))
    };
    let full = root.join(&path);
    std::fs::create_dir_all(full.parent().expect("a folder")).expect("mkdir");
    std::fs::write(&full, &bytes).expect("write");
    serde_json::from_value(serde_json::json!({
        "id": format!("d{i}"), "url": format!("http://127.0.0.1:1/{path}"),
        "file_name": path.rsplit('/').next(), "path": path, "state": "completed",
        "order": i, "bytes_done": bytes.len(), "bytes_total": bytes.len(),
        "elapsed_secs": 0.0, "attempt": 1, "sha256": sha256, "source": source,
        "created_at": "2026-01-01T00:00:00Z",
    }))
    .expect("a download")
}

struct Run {
    /// Index work of the completions (and the digests the hasher found for them).
    completions: u64,
    /// Index work of one rescan of the whole library afterwards.
    rescan: u64,
}

fn ask<T>(mailbox: &Mailbox, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> T {
    let (done, answer) = oneshot::channel();
    mailbox.send(make(done)).expect("the owner runs");
    answer.blocking_recv().expect("an answer")
}

/// `n` downloads complete, one after the other, into a library with an HF cache.
fn complete(n: usize) -> Run {
    // In memory where there is a tmpfs: the disk's speed is not what is measured.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    let tmp = tmp.expect("tempdir");
    let root = tmp.path().join("models");
    std::fs::create_dir_all(&root).expect("mkdir");
    let root = root.canonicalize().expect("canonical");
    let store = Store::open(&tmp.path().join("data")).expect("a store");
    let shared = Arc::new(Shared {
        root: root.clone(),
        store,
        folders: Folders {
            hf_cache: Some(tmp.path().join("hf")),
            ..Folders::default()
        },
        index: RwLock::new(Index::of(Vec::new())),
        hub: None,
    });
    let frames = Arc::new(AtomicUsize::new(0));
    let counted = frames.clone();
    let sink = Box::new(move |_: String| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let mailbox = Mailbox::start(shared.clone(), None, Some(sink)).expect("the owner");
    let downloads: Vec<Download> = (0..n).map(|i| download(i, &root)).collect();
    let mut downloads = downloads.into_iter();
    for _ in 0..n {
        let download = Box::new(downloads.next().expect("one"));
        ask(&mailbox, |done| Msg::Completed { download, done }).expect("completed");
    }
    // One frame per completion, one per digest the hasher found.
    let hashed = (0..n).filter(|&i| is_url(i)).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while frames.load(Ordering::Relaxed) < n + hashed {
        assert!(Instant::now() < deadline, "the hasher did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let completed = shared.read().visits();
    check_the_work_was_done(&shared, n);
    let before = shared.read().visits();
    let walked = crate::library::scan::walk_and_sort(&shared).expect("a walk");
    let read = walked.unknown.iter().map(|(p, _)| p.clone()).collect();
    let seen = crate::library::scan::read_all(&shared, walked.unknown);
    let completions = Arc::new(crate::library::scan::Completions::default());
    let for_read = completions.clone();
    ask(&mailbox, |done| Msg::Read {
        seen,
        completions: for_read,
        done,
    })
    .expect("read");
    let known = walked.known;
    let files = ask(&mailbox, |done| Msg::Scanned {
        known,
        read,
        completions,
        done,
    })
    .expect("scanned");
    assert_eq!(files, n);
    let rescan = shared.read().visits() - before;
    Run {
        completions: completed,
        rescan,
    }
}

/// Every file is in the index with its digest, the twins are one inode, every Hub
/// file is in the HF cache: the counted work is the real work.
fn check_the_work_was_done(shared: &Shared, n: usize) {
    let index = shared.read();
    let records: Vec<_> = index.iter().map(|(p, r)| (p.clone(), r.clone())).collect();
    assert_eq!(records.len(), n);
    assert!(records.iter().all(|(_, r)| r.sha256.is_some() && r.ours));
    let hub = records.iter().filter(|(p, _)| p.starts_with("org/"));
    assert!(hub.clone().all(|(_, r)| r.published.hf_cache.is_some()));
    let twins = (0..n).filter(|&i| is_twin(i) && !is_url(i) && !is_url(i - 1));
    let saved: u64 = twins.map(|i| content(i).len() as u64).sum();
    assert!(saved > 0);
    assert_eq!(index.totals().1, saved, "each pair of twins is one inode");
}

#[test]
fn ten_thousand_completed_downloads_cost_linear_index_work() {
    let small = complete(1_000);
    let large = complete(10_000);
    // Today: about 6 lookups per completion. A walk of the index per completion (the
    // old `same_digest`, `siblings_at`, and the frame's totals) costs n²/2 each:
    // 5·10⁷ for 10,000.
    assert!(
        large.completions <= 20 * 10_000,
        "10,000 completions cost {} index visits",
        large.completions
    );
    assert!(
        large.completions <= 11 * small.completions,
        "10× the completions cost {}× the index work ({} vs {})",
        large.completions as f64 / small.completions as f64,
        large.completions,
        small.completions
    );
    assert!(
        large.rescan <= 10 * 10_000,
        "a rescan of 10,000 files cost {} index visits",
        large.rescan
    );
}
