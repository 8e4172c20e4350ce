//! The `.part`'s write lease: a one-connection transfer that nobody else opened is
//! vouched for without reading it back; one that somebody opened is read back, costs the
//! opener a moment and the transfer only the bytes after the keeper's look (not a start
//! from byte 0); and one written meanwhile, in `O_DIRECT` mode too, never completes with
//! wrong bytes.

use crate::common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// About 8 s for 8 MiB.
fn slow() -> Behavior {
    Behavior {
        rate_bps: Some(MIB as u64),
        ..Default::default()
    }
}

/// `mm_part_checks_total{how}` from `/metrics`.
async fn part_checks(svc: &TestService, how: &str) -> u64 {
    let resp = svc.client.get(svc.url("/metrics")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    let key = format!("mm_part_checks_total{{how=\"{how}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"));
    line[key.len()..]
        .parse()
        .unwrap_or_else(|_| panic!("bad value in {line:?}"))
}

/// 8 MiB files and 1 MiB ones; from 4 MiB up, `O_DIRECT` writes.
async fn service() -> TestService {
    TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.max_concurrent = 8;
        c.downloads.direct_io_min_bytes = 4 * MIB as u64;
    })
    .await
}

fn assert_file(svc: &TestService, name: &str, data: &[u8], d: &Value) {
    assert_eq!(d["state"], "completed", "{name}: {d}");
    let got = std::fs::read(svc.download_dir().join(name)).unwrap();
    assert!(
        got == data,
        "{name}: completed with wrong bytes ({} bytes, sha256 {}; want {} bytes, {}): {d}",
        got.len(),
        sha256_hex(&got),
        data.len(),
        sha256_hex(data)
    );
}

#[actix_web::test]
async fn a_transfer_nobody_else_opened_is_vouched_for_by_its_lease_not_read_back() {
    let up = Upstream::start();
    let svc = service().await;
    let mut runs = Vec::new();
    // Through the page cache (1 MiB) and with O_DIRECT (8 MiB); with and without sha256.
    for (i, size) in [MIB, 8 * MIB].into_iter().enumerate() {
        for with_sha in [false, true] {
            let name = format!("v{i}-{with_sha}.bin");
            let data = content(size, 70 + i as u64 * 2 + u64::from(with_sha));
            up.add_file(&name, data.clone(), Behavior::default());
            let mut body = json!({"url": up.url(&name)});
            if with_sha {
                body["sha256"] = json!(sha256_hex(&data));
            }
            runs.push((svc.add(body).await, name, data, with_sha));
        }
    }
    for (id, name, data, _) in &runs {
        let d = svc.wait_state(id, "completed", WAIT).await;
        assert_file(&svc, name, data, &d);
        // Without an expected digest too: a file this small is hashed as it arrives.
        assert_eq!(d["sha256"], json!(sha256_hex(data)), "{name}: {d}");
    }
    assert_eq!(
        part_checks(&svc, "read_back").await,
        0,
        "nothing was read back"
    );
    assert_eq!(part_checks(&svc, "lease").await, runs.len() as u64);
}

#[actix_web::test]
async fn a_reader_of_the_part_waits_a_moment_and_costs_only_the_bytes_after_it() {
    let up = Upstream::start();
    let svc = service().await;
    let size = 8 * MIB;
    let mut runs = Vec::new();
    // 5 MiB files are written through the page cache, 8 MiB ones with O_DIRECT.
    for (i, size) in [5 * MIB, size].into_iter().enumerate() {
        let name = format!("r{i}.bin");
        let data = content(size, 80 + i as u64);
        up.add_file(&name, data.clone(), slow());
        runs.push((svc.add(json!({"url": up.url(&name)})).await, name, data));
    }
    for (id, name, data) in &runs {
        svc.wait_past(id, 3 * MIB as u64, WAIT).await;
        let part = svc.download_dir().join(format!("{name}.part"));
        let (waited, head) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let f = std::fs::File::open(&part).unwrap();
            let waited = started.elapsed();
            let mut head = vec![0u8; MIB];
            f.read_exact_at(&mut head, 0).unwrap();
            (waited, head)
        })
        .await
        .unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "{name}: the reader waited {waited:?} to open the .part"
        );
        assert!(head == data[..MIB], "{name}: the reader read the first MiB");
    }
    for (id, name, data) in &runs {
        let d = svc.wait_state(id, "completed", WAIT).await;
        assert_file(&svc, name, data, &d);
        // A start from byte 0 would fetch the 3 MiB and more done again.
        let sent = up.bytes_sent(name);
        assert!(
            sent <= data.len() as u64 + 5 * MIB as u64 / 2,
            "{name}: fetched {sent} bytes for {}: more than the bytes after the reader",
            data.len()
        );
    }
    assert_eq!(
        part_checks(&svc, "read_back").await,
        2,
        "both were read back"
    );
    assert_eq!(part_checks(&svc, "lease").await, 0);
}

#[actix_web::test]
async fn a_part_overwritten_in_direct_mode_never_completes_with_wrong_bytes() {
    let up = Upstream::start();
    let svc = service().await;
    let mut runs = Vec::new();
    for with_sha in [false, true] {
        let name = format!("o-{with_sha}.bin");
        let data = content(8 * MIB, 90 + u64::from(with_sha));
        up.add_file(&name, data.clone(), slow());
        let mut body = json!({"url": up.url(&name)});
        if with_sha {
            body["sha256"] = json!(sha256_hex(&data));
        }
        runs.push((svc.add(body).await, name, data));
    }
    for (id, name, _) in &runs {
        // Past the first 4 MiB buffer of the O_DIRECT writer, which it writes whole.
        svc.wait_past(id, 4_600_000, WAIT).await;
        let part = svc.download_dir().join(format!("{name}.part"));
        tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
            f.write_all_at(&[0xAA; 300_000], 1000).unwrap();
        })
        .await
        .unwrap();
    }
    for (id, name, data) in &runs {
        let d = svc.wait_state(id, "completed", WAIT).await;
        assert_file(&svc, name, data, &d);
        let sent = up.bytes_sent(name);
        assert!(
            sent > data.len() as u64 + MIB as u64,
            "{name}: fetched {sent} bytes for {}: the overwrite went unseen",
            data.len()
        );
    }
}

/// Files of at most 1 MiB are hashed inline (no thread) and all leases share one
/// keeper: a `.part` overwritten by another process among several small transfers is
/// still caught (read back and compared with what was received), and only it.
#[actix_web::test]
async fn a_small_part_overwritten_among_others_never_completes_with_wrong_bytes() {
    let up = Upstream::start();
    let svc = service().await;
    let mut runs = Vec::new();
    for i in 0..4u64 {
        let name = format!("small-{i}.bin");
        let data = content(MIB, 120 + i);
        // About 4 s each: time to overwrite one while all four run.
        let rate = Behavior {
            rate_bps: Some(256 * 1024),
            ..Default::default()
        };
        up.add_file(&name, data.clone(), rate);
        runs.push((svc.add(json!({"url": up.url(&name)})).await, name, data));
    }
    let (victim, victim_name, _) = &runs[1];
    // Past the first two 256 KiB write blocks: on disk, or on their way there.
    svc.wait_past(victim, 600_000, WAIT).await;
    let part = svc.download_dir().join(format!("{victim_name}.part"));
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.write_all_at(&[0xAA; 300_000], 1000).unwrap();
    })
    .await
    .unwrap();
    for (id, name, data) in &runs {
        let d = svc.wait_state(id, "completed", WAIT).await;
        assert_file(&svc, name, data, &d);
        let sent = up.bytes_sent(name);
        if name == victim_name {
            assert!(
                sent > data.len() as u64,
                "{name}: fetched {sent} bytes for {}: the overwrite went unseen",
                data.len()
            );
        } else {
            assert_eq!(sent, data.len() as u64, "{name}: fetched once");
        }
    }
    assert!(
        part_checks(&svc, "lease").await >= 3,
        "the others by their lease"
    );
}
