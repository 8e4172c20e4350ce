//! The store's tests: commits, background flushes, start-up after writes sled lacks.

use super::*;

fn download(n: usize) -> Download {
    serde_json::from_value(serde_json::json!({
        "id": format!("dl_{n:026}"),
        "url": format!("http://127.0.0.1:9/{n}.bin"),
        "file_name": format!("{n}.bin"),
        "path": format!("{n}.bin"),
        "state": "paused",
        "order": n,
        "bytes_done": 0,
        "elapsed_secs": 0.0,
        "attempt": 0,
        "source": {"kind": "url"},
        "created_at": "2026-12-07T00:00:00Z",
    }))
    .expect("a download")
}

fn damaged_dirs(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("damaged-")
        })
        .count()
}

/// What a kill -9 leaves: the journal has a write that sled had not flushed.
/// Before a flush marked it durable, that is no damage: sled is brought up to
/// the journal quietly. After, sled lacking it is damage: recovered, and kept.
#[test]
fn a_write_sled_never_flushed_is_recovered_and_is_damage_only_once_marked_durable() {
    for marked in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_download(&download(1)).unwrap();
        store.flush_blocking().unwrap();
        let mut entry = Entry::downloads();
        let lost = download(2);
        entry.put(lost.id.as_bytes(), &serde_json::to_vec(&lost).unwrap());
        store.journal.append(entry, || Ok(())).unwrap();
        if marked {
            store.flush_blocking().unwrap();
        }
        drop(store);
        let (_store, records) = Store::open_and_load(dir.path()).unwrap();
        let ids: Vec<&str> = records.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [download(1).id, download(2).id], "marked={marked}");
        assert_eq!(
            damaged_dirs(dir.path()),
            usize::from(marked),
            "marked={marked}"
        );
    }
}

/// A journal cut short (it reads like a torn last entry) must not take records
/// from sled: sled cannot make them up. They are kept, and the journal learns them.
#[test]
fn records_a_cut_journal_lost_are_kept_from_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_download(&download(1)).unwrap();
    store.flush_blocking().unwrap();
    let cut = std::fs::metadata(journal::path(dir.path())).unwrap().len();
    store.put_download(&download(2)).unwrap();
    store.flush_blocking().unwrap();
    drop(store);
    let journal = std::fs::OpenOptions::new()
        .write(true)
        .open(journal::path(dir.path()))
        .unwrap();
    journal.set_len(cut).unwrap();
    for _ in 0..2 {
        let (_store, records) = Store::open_and_load(dir.path()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(damaged_dirs(dir.path()), 1, "kept once, then agreed");
    }
}

/// Thousands of writes keep the journal within a few times its live size, and a
/// restart after them finds sled and the journal the same.
#[test]
fn the_journal_is_rewritten_as_it_grows_and_still_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for round in 0..60 {
        for n in 0..100 {
            let mut d = download(n);
            d.bytes_done = round;
            store.put_download(&d).unwrap();
        }
        store.remove_download(&download(round as usize).id).unwrap();
        store.flush_blocking().unwrap();
    }
    let live: u64 = store
        .downloads
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.len() + v.len()) as u64).unwrap())
        .sum();
    let size = std::fs::metadata(journal::path(dir.path())).unwrap().len();
    assert!(
        size < 8 * live + 384 * 1024,
        "journal of {size} bytes for {live} live"
    );
    drop(store);
    let (_store, records) = Store::open_and_load(dir.path()).unwrap();
    assert_eq!(records.len(), 99, "the last round removed one");
    assert!(records.iter().all(|d| d.bytes_done == 59));
    assert_eq!(damaged_dirs(dir.path()), 0);
}

/// The highest sequence number a `Durable` entry of the journal covers.
fn marked(data_dir: &Path) -> u64 {
    let mut marked = 0;
    journal::scan(&journal::path(data_dir), |f| {
        if f.kind == journal::Kind::Durable {
            marked = marked.max(f.seq);
        }
    })
    .unwrap();
    marked
}

/// A commit syncs the journal alone and answers; sled's flush (and the mark that
/// says sled has it) follows on its own within the window, once for a burst.
#[test]
fn a_commit_syncs_the_journal_and_sled_follows_in_the_background() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = marked(dir.path());
    for n in 0..20 {
        store.put_download(&download(n)).unwrap();
        rt.block_on(store.commit()).unwrap();
        assert!(
            store.journal.unsynced().is_none(),
            "synced before the answer"
        );
    }
    let written = store.journal.synced();
    assert!(written > before);
    // Nothing new: a commit is free.
    rt.block_on(store.commit()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while marked(dir.path()) < written {
        assert!(std::time::Instant::now() < deadline, "sled never flushed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(store);
    let (_store, records) = Store::open_and_load(dir.path()).unwrap();
    assert_eq!(records.len(), 20);
    assert_eq!(damaged_dirs(dir.path()), 0);
}

/// Commits that arrive together share one sync, and each returns once its own
/// writes are covered.
#[test]
fn commits_that_arrive_together_share_one_sync() {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for n in 0..50 {
        store.put_download(&download(n)).unwrap();
    }
    let before = store.journal.syncs.load(Ordering::Relaxed);
    rt.block_on(async {
        let commits: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.commit().await })
            })
            .collect();
        for c in commits {
            c.await.unwrap().unwrap();
        }
    });
    assert!(store.journal.unsynced().is_none());
    assert_eq!(store.journal.syncs.load(Ordering::Relaxed) - before, 1);
}

/// The flushing thread holds the store only while it flushes: a dropped store
/// lets go of sled at once, and the data dir opens again.
#[test]
fn a_dropped_store_is_not_kept_open_by_its_background_flush() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let store = Store::open(dir.path()).unwrap();
        store.put_download(&download(n)).unwrap();
        rt.block_on(store.commit()).unwrap();
        drop(store);
    }
    let (_store, records) = Store::open_and_load(dir.path()).unwrap();
    assert_eq!(records.len(), 3);
}

/// One record goes to sled as a plain insert, many as one batch: both read back.
#[test]
fn put_downloads_of_one_and_of_many_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_downloads([&download(1)]).unwrap();
    let many: Vec<Download> = (2..6).map(download).collect();
    store.put_downloads(&many).unwrap();
    store
        .put_downloads(std::iter::empty::<&Download>())
        .unwrap();
    store.flush_blocking().unwrap();
    drop(store);
    let (_store, records) = Store::open_and_load(dir.path()).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(damaged_dirs(dir.path()), 0);
}

/// A write sled refuses (failed after an I/O error of its own) is refused whole:
/// the journal does not keep it either, so no start-up brings it back.
#[test]
fn a_write_sled_refuses_leaves_nothing_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_download(&download(1)).unwrap();
    let refused = download(2);
    let mut entry = Entry::downloads();
    entry.put(
        refused.id.as_bytes(),
        &serde_json::to_vec(&refused).unwrap(),
    );
    let r: Result<(), _> = store
        .journal
        .append(entry, || Err(StoreError::Refused("sled failed".into())));
    assert!(r.is_err());
    store.put_download(&download(3)).unwrap();
    drop(store);
    let (_store, records) = Store::open_and_load(dir.path()).unwrap();
    let ids: Vec<&str> = records.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [download(1).id, download(3).id]);
    assert_eq!(damaged_dirs(dir.path()), 0);
}

#[test]
fn a_second_open_of_a_data_dir_is_refused_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(StoreError::InUse(_))));
    assert!(!dir.path().join(".v1-as-found").exists());
}
