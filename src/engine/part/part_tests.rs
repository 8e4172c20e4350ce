//! The transport seam, with a fake transport: ranges delivered out of order, with a gap
//! and an overlap, into the same `Part` (open, checkpoint, resume, verify, rename) that
//! HTTP's parallel connections fill.

use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::hex;
use crate::config::DownloadsConfig;
use crate::engine::transfer::Transfer;
use crate::engine::{Ended, Engine, EngineError, Job, RateLimiter, RunCtx};
use crate::files::Place;
use crate::queue::progress::ProgressCell;
use crate::queue::store::Store;

const KIB: usize = 1024;
/// The gap the fake transport leaves: `[GAP]` is never delivered out of order.
const GAP: Range<usize> = 50 * KIB..60 * KIB;

/// One download of `data` (whose digest is expected) into a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Engine,
    job: Job,
    place: Arc<Place>,
    ctx: RunCtx,
    _stop: watch::Sender<bool>,
}

fn fixture(data: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let root = dir.path().join("models");
    let place = Arc::new(Place::open(&root, "fake/model.bin").unwrap());
    let job = Job {
        id: "fake-transport".into(),
        url: "fake://model.bin".into(),
        final_path: root.join("fake/model.bin"),
        download_dir: root.to_path_buf(),
        relative: "fake/model.bin".into(),
        place: Some(place.clone()),
        sha256: Some(hex(&Sha256::digest(data))),
        settings: DownloadsConfig::default(),
        hub: None,
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let engine = Engine::new(store.clone(), 0, &[], metrics).unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let ctx = RunCtx {
        events: Arc::new(|_| {}),
        progress: Arc::new(ProgressCell::new(0, None, 0.0)),
        stop,
        limiter: Arc::new(RateLimiter::new(0)),
    };
    Fixture {
        _dir: dir,
        store,
        engine,
        job,
        place,
        ctx,
        _stop: stop_tx,
    }
}

fn source() -> Vec<u8> {
    (0..100 * KIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The fake transport's first pass: three ranges out of order, the last overlapping
/// the second by 10 KiB, none covering [`GAP`]. `corrupt` flips one byte of the overlap
/// in the last delivery (written after the good one).
async fn deliver_out_of_order(t: &mut Transfer, data: &[u8], corrupt: bool) {
    let total = data.len() as u64;
    t.part.set_total(Some(total));
    let (ranges, fresh) = t.part.fill_ranges(total).await.unwrap();
    assert!(fresh);
    let overlap = 20 * KIB..GAP.start;
    let mut last = data[overlap.clone()].to_vec();
    if corrupt {
        last[5 * KIB] ^= 0xff;
    }
    let piece = |r: Range<usize>| bytes::Bytes::copy_from_slice(&data[r]);
    ranges
        .write_range(60 * KIB as u64, piece(60 * KIB..data.len()))
        .await
        .unwrap();
    ranges.write_range(0, piece(0..30 * KIB)).await.unwrap();
    ranges
        .write_range(overlap.start as u64, bytes::Bytes::from(last))
        .await
        .unwrap();
}

/// Asks the part what is missing and delivers it.
async fn fill_missing(t: &mut Transfer, data: &[u8]) {
    let (ranges, fresh) = t.part.fill_ranges(data.len() as u64).await.unwrap();
    assert!(!fresh, "the part was already filled as ranges");
    for gap in ranges.missing() {
        let (from, to) = (gap.start as usize, gap.end as usize);
        let piece = bytes::Bytes::copy_from_slice(&data[from..to]);
        ranges.write_range(gap.start, piece).await.unwrap();
    }
    assert!(ranges.missing().is_empty());
}

#[tokio::test]
async fn ranges_out_of_order_with_a_gap_and_an_overlap_end_in_a_verified_file() {
    let data = source();
    let mut f = fixture(&data);
    let mut t = Transfer::open(&f.store, &f.job).await.unwrap();
    deliver_out_of_order(&mut t, &data, false).await;
    let (ranges, _) = t.part.fill_ranges(data.len() as u64).await.unwrap();
    let gap = GAP.start as u64..GAP.end as u64;
    assert_eq!(
        ranges.missing(),
        vec![gap.clone()],
        "the part reports the gap"
    );
    assert!(
        t.part.ranges_complete().is_err(),
        "a part with a gap is not whole"
    );
    assert_eq!(t.part.held(), (data.len() - GAP.len()) as u64);

    // Checkpointed and opened again (a restart): the gap is still what is missing.
    t.part.checkpoint_now(&f.ctx).await.unwrap();
    drop((t, ranges));
    let mut t = Transfer::open(&f.store, &f.job).await.unwrap();
    let (ranges, fresh) = t.part.fill_ranges(data.len() as u64).await.unwrap();
    assert!(!fresh, "resumed as ranges");
    assert_eq!(ranges.missing(), vec![gap], "the gap survives a resume");
    drop(ranges);

    fill_missing(&mut t, &data).await;
    t.part.ranges_complete().unwrap();
    let ended = f.engine.finish(&f.job, &mut t, &mut f.ctx).await.unwrap();
    assert!(matches!(ended, Ended::Done), "{ended:?}");
    assert_eq!(std::fs::read(&f.job.final_path).unwrap(), data);
    assert_eq!(f.place.part_id().unwrap(), None, "the .part was renamed");
}

#[tokio::test]
async fn a_wrong_byte_in_an_overlap_fails_the_verify() {
    let data = source();
    let mut f = fixture(&data);
    let mut t = Transfer::open(&f.store, &f.job).await.unwrap();
    deliver_out_of_order(&mut t, &data, true).await;
    fill_missing(&mut t, &data).await;
    t.part.ranges_complete().unwrap();
    let err = f
        .engine
        .finish(&f.job, &mut t, &mut f.ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Checksum { .. }), "{err}");
    assert!(
        !f.job.final_path.exists(),
        "nothing completed under the final name"
    );
}

#[tokio::test]
async fn a_gap_never_filled_fails_the_verify() {
    let data = source();
    let mut f = fixture(&data);
    let mut t = Transfer::open(&f.store, &f.job).await.unwrap();
    deliver_out_of_order(&mut t, &data, false).await;
    assert!(t.part.ranges_complete().is_err());
    // Finished anyway: the hole reads back as zeros, and the digest says so.
    let err = f
        .engine
        .finish(&f.job, &mut t, &mut f.ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Checksum { .. }), "{err}");
    assert!(
        !f.job.final_path.exists(),
        "nothing completed under the final name"
    );
}
