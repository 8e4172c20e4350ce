//! The download engine against a fault-injecting upstream: every test ends with the
//! file's sha256 compared to the source's.

use crate::common;

use std::time::{Duration, Instant};

use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

/// Adds `data` at `path` upstream and downloads it with its sha256; returns the id.
async fn fetch(
    svc: &TestService,
    up: &Upstream,
    path: &str,
    data: &[u8],
    behavior: Behavior,
) -> String {
    up.add_file(path, data.to_vec(), behavior);
    svc.add(json!({"url": up.url(path), "sha256": sha256_hex(data)}))
        .await
}

fn assert_file(svc: &TestService, name: &str, data: &[u8]) {
    let path = svc.download_dir().join(name);
    assert_eq!(
        file_sha256(&path),
        sha256_hex(data),
        "{name} differs from the source"
    );
    assert!(
        !svc.download_dir().join(format!("{name}.part")).exists(),
        ".part left behind"
    );
}

#[actix_web::test]
async fn drops_every_3_mib_resume_with_range_each_time() {
    // Written with O_DIRECT (the tests' threshold is 2 MiB), cut at unaligned offsets.
    drops_resume_with_range_each_time(3 * MIB as u64 + 1234, 2 * MIB as u64).await;
}

#[actix_web::test]
async fn drops_resume_with_range_through_the_page_cache_too() {
    drops_resume_with_range_each_time(3 * MIB as u64, 0).await;
}

async fn drops_resume_with_range_each_time(every: u64, direct_io_min_bytes: u64) {
    let up = Upstream::start();
    // One connection: this is about the resume sequence (tests/segments.rs has many).
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.direct_io_min_bytes = direct_io_min_bytes;
    })
    .await;
    let data = content(24 * MIB, 1);
    let behavior = Behavior {
        drop_every: Some(every),
        ..Default::default()
    };
    let id = fetch(&svc, &up, "big.bin", &data, behavior).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_done"], json!(24 * MIB));
    assert_file(&svc, "big.bin", &data);

    let reqs = up.requests("big.bin");
    let starts: Vec<Option<u64>> = reqs.iter().map(|r| r.range_start).collect();
    let expected: Vec<Option<u64>> = (0..(24 * MIB as u64).div_ceil(every))
        .map(|k| if k == 0 { None } else { Some(k * every) })
        .collect();
    assert_eq!(
        starts, expected,
        "each resume asks for the byte after the last one received"
    );
    for r in &reqs[1..] {
        assert_eq!(r.status, 206);
        assert!(r.if_range.is_some(), "resume without If-Range: {r:?}");
    }
}

#[actix_web::test]
async fn two_503s_then_success_honours_retry_after() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(MIB, 2);
    let behavior = Behavior {
        fail_first: vec![(503, Some(2)), (503, None)],
        ..Default::default()
    };
    let started = Instant::now();
    let id = fetch(&svc, &up, "f.bin", &data, behavior).await;
    // While waiting out the Retry-After, the download says so.
    let waiting = svc
        .wait_state(&id, "retrying", Duration::from_secs(5))
        .await;
    assert_eq!(waiting["attempt"], 1);
    assert_eq!(waiting["error"]["kind"], "http_status");
    assert!(waiting["next_retry_at"].is_string(), "{waiting}");
    svc.wait_state(&id, "completed", LONG).await;
    // base delay is 100 ms: without Retry-After the two waits would take ~0.3 s.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 not honoured: {:?}",
        started.elapsed()
    );
    assert_file(&svc, "f.bin", &data);
    let statuses: Vec<u16> = up.requests("f.bin").iter().map(|r| r.status).collect();
    // The first request asks for a bounded first piece (parallel connections may
    // follow), which here is the whole file.
    assert_eq!(statuses, vec![503, 503, 206]);
}

#[actix_web::test]
async fn ignored_range_restarts_from_zero() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(4 * MIB, 3);
    let behavior = Behavior {
        ignore_range: true,
        short_body_once: Some(MIB as u64 + 17),
        ..Default::default()
    };
    let id = fetch(&svc, &up, "ir.bin", &data, behavior).await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_file(&svc, "ir.bin", &data);
    let reqs = up.requests("ir.bin");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].range_start,
        Some(MIB as u64 + 17),
        "the resume asked for a range"
    );
    assert_eq!(
        reqs[1].status, 200,
        "and got the whole file, which replaced the partial one"
    );
}

#[actix_web::test]
async fn short_body_resumes() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(3 * MIB, 4);
    let behavior = Behavior {
        short_body_once: Some(MIB as u64),
        ..Default::default()
    };
    let id = fetch(&svc, &up, "short.bin", &data, behavior).await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_file(&svc, "short.bin", &data);
    let starts: Vec<Option<u64>> = up
        .requests("short.bin")
        .iter()
        .map(|r| r.range_start)
        .collect();
    // The first request asks for a bounded first piece (byte 0 on); the second resumes.
    assert_eq!(starts, vec![Some(0), Some(MIB as u64)]);
}

#[actix_web::test]
async fn no_content_length_reads_to_the_end() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(2 * MIB + 123, 5);
    let behavior = Behavior {
        no_content_length: true,
        ..Default::default()
    };
    let id = fetch(&svc, &up, "nolen.bin", &data, behavior).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_total"], json!(2 * MIB + 123));
    assert_file(&svc, "nolen.bin", &data);
}

#[actix_web::test]
async fn etag_change_mid_download_starts_over_with_the_new_file() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let old = content(4 * MIB, 6);
    let new = content(5 * MIB, 7);
    let behavior = Behavior {
        short_body_once: Some(2 * MIB as u64),
        swap_after_first: Some(new.clone()),
        ..Default::default()
    };
    up.add_file("chg.bin", old, behavior);
    // No digest: the new content is what the user gets, and it must be whole.
    let id = svc.add(json!({"url": up.url("chg.bin")})).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_done"], json!(5 * MIB));
    assert_file(&svc, "chg.bin", &new);
    let reqs = up.requests("chg.bin");
    assert_eq!(reqs[1].range_start, Some(2 * MIB as u64));
    assert!(reqs[1].if_range.is_some(), "the resume must carry If-Range");
    assert_eq!(
        reqs[1].status, 200,
        "If-Range mismatch: the server sent the new file whole"
    );
}

#[actix_web::test]
async fn a_stalled_connection_is_dropped_and_resumed() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.stall_timeout_secs = 2).await;
    let data = content(3 * MIB, 8);
    let behavior = Behavior {
        stall_once_after: Some(MIB as u64),
        ..Default::default()
    };
    let started = Instant::now();
    let id = fetch(&svc, &up, "stall.bin", &data, behavior).await;
    svc.wait_state(&id, "completed", LONG).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "resumed before the stall timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the stall was not cut: {took:?}"
    );
    assert_file(&svc, "stall.bin", &data);
    let starts: Vec<Option<u64>> = up
        .requests("stall.bin")
        .iter()
        .map(|r| r.range_start)
        .collect();
    // The first request asks for a bounded first piece (byte 0 on); the second resumes.
    assert_eq!(starts, vec![Some(0), Some(MIB as u64)]);
}

#[actix_web::test]
async fn not_found_fails_at_once() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let id = svc.add(json!({"url": up.url("missing.bin")})).await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "not_found");
    // Give a wrongly scheduled retry the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.requests("missing.bin").len(),
        1,
        "404 must not be retried"
    );
    assert!(
        tree(&svc.download_dir()).is_empty(),
        "{:?}",
        tree(&svc.download_dir())
    );
}

#[actix_web::test]
async fn unauthorized_fails_with_a_clear_kind() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(1000, 9);
    let behavior = Behavior {
        require_auth: Some("sekrit".into()),
        ..Default::default()
    };
    up.add_file("private.bin", data, behavior);
    let id = svc.add(json!({"url": up.url("private.bin")})).await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "unauthorized");
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("token"),
        "{d}"
    );
    assert_eq!(
        up.requests("private.bin").len(),
        1,
        "401 must not be retried"
    );
}

#[actix_web::test]
async fn wrong_sha256_keeps_no_file() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(2 * MIB, 10);
    up.add_file("bad.bin", data, Behavior::default());
    let wrong = sha256_hex(b"something else");
    let id = svc
        .add(json!({"url": up.url("bad.bin"), "sha256": wrong}))
        .await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "checksum_mismatch");
    assert!(
        tree(&svc.download_dir()).is_empty(),
        "files kept: {:?}",
        tree(&svc.download_dir())
    );
}

#[actix_web::test]
async fn retries_are_bounded_by_max_retries() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.max_retries = 2).await;
    let data = content(1000, 11);
    let behavior = Behavior {
        fail_first: vec![(500, None); 10],
        ..Default::default()
    };
    up.add_file("flaky.bin", data, behavior);
    let id = svc.add(json!({"url": up.url("flaky.bin")})).await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "http_status");
    assert!(
        d["error"]["message"].as_str().unwrap_or("").contains("500"),
        "{d}"
    );
    // The first attempt and two retries.
    assert_eq!(up.requests("flaky.bin").len(), 3);
}

/// The open-file flags of every descriptor this process has on `path` (the service
/// under test runs in this process), from `/proc/self/fdinfo`.
fn open_flags(path: &std::path::Path) -> Vec<i32> {
    let mut flags = Vec::new();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return flags;
    };
    for fd in fds.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(octal) = info.lines().find_map(|l| l.strip_prefix("flags:")) {
            flags.push(i32::from_str_radix(octal.trim(), 8).unwrap_or(0));
        }
    }
    flags
}

/// Whether the filesystem of `dir` takes O_DIRECT at all (tmpfs before Linux 6.6 did not).
fn takes_o_direct(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".o_direct_probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[actix_web::test]
async fn a_large_file_on_one_connection_is_written_with_o_direct_a_small_one_is_not() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.direct_io_min_bytes = 4 * MIB as u64;
    })
    .await;
    if !takes_o_direct(&svc.download_dir()) {
        println!("SKIPPED: the download dir's filesystem does not take O_DIRECT");
        return;
    }
    let throttled = |rate| Behavior {
        rate_bps: Some(rate),
        ..Default::default()
    };
    // (name, size, whether O_DIRECT is expected): 8 MiB is above the 4 MiB threshold.
    for (name, size, direct) in [("large.bin", 8 * MIB, true), ("small.bin", 3 * MIB, false)] {
        let data = content(size, 12);
        let id = fetch(&svc, &up, name, &data, throttled(2 * MIB as u64)).await;
        let part = svc.download_dir().join(format!("{name}.part"));
        // Look at the descriptors while the bytes flow (the transfer takes > 1 s).
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while seen.iter().all(|f| f & libc::O_DIRECT == 0) && Instant::now() < until {
            let d = svc.download(&id).await;
            if d["bytes_done"].as_u64().unwrap_or(0) > MIB as u64 {
                seen = open_flags(&part);
                if !seen.is_empty() && !direct {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !seen.is_empty(),
            "{name}: no descriptor open on the .part seen"
        );
        assert_eq!(
            seen.iter().any(|f| f & libc::O_DIRECT != 0),
            direct,
            "{name}: flags {seen:x?}"
        );
        svc.wait_state(&id, "completed", LONG).await;
        assert_file(&svc, name, &data);
        // The last direct write was rounded up to 4 KiB: the file has its exact length.
        let len = std::fs::metadata(svc.download_dir().join(name))
            .unwrap()
            .len();
        assert_eq!(len, size as u64);
    }
}

#[actix_web::test]
async fn a_backoff_lets_the_direct_writer_go_and_the_next_attempt_resumes_unaligned() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.stall_timeout_secs = 2;
    })
    .await;
    if !takes_o_direct(&svc.download_dir()) {
        println!("SKIPPED: the download dir's filesystem does not take O_DIRECT");
        return;
    }
    let data = content(12 * MIB, 13);
    let cut = 3 * MIB as u64 + 123;
    // The first response goes silent after `cut` bytes (a stall: progress, so an
    // immediate retry); the retry gets a 503 with Retry-After (no progress: a backoff).
    let id = fetch(
        &svc,
        &up,
        "backoff.bin",
        &data,
        Behavior {
            stall_once_after: Some(cut),
            ..Default::default()
        },
    )
    .await;
    let part = svc.download_dir().join("backoff.bin.part");
    svc.wait_until(&id, Duration::from_secs(10), "the stall", |d| {
        d["bytes_done"].as_u64() >= Some(cut)
    })
    .await;
    assert!(
        open_flags(&part).iter().any(|f| f & libc::O_DIRECT != 0),
        "written with O_DIRECT before the stall"
    );
    up.set_behavior(
        "backoff.bin",
        Behavior {
            fail_first: vec![(503, Some(2))],
            ..Default::default()
        },
    );
    svc.wait_state(&id, "retrying", Duration::from_secs(10))
        .await;
    assert!(
        open_flags(&part).iter().all(|f| f & libc::O_DIRECT == 0),
        "the direct writer is gone during the backoff"
    );
    svc.wait_state(&id, "completed", LONG).await;
    assert_file(&svc, "backoff.bin", &data);
    let reqs = up.requests("backoff.bin");
    let seen: Vec<(u16, Option<u64>)> = reqs.iter().map(|r| (r.status, r.range_start)).collect();
    assert_eq!(
        seen,
        vec![(200, None), (503, Some(cut)), (206, Some(cut))],
        "the resume after the backoff starts at the unaligned byte after the last one"
    );
}

#[actix_web::test]
async fn a_new_size_without_validators_starts_over_with_the_new_file() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let old = content(4 * MIB, 14);
    let new = content(5 * MIB, 15);
    // Neither ETag nor Last-Modified: only the size in Content-Range can tell.
    up.add_file(
        "noval.bin",
        old,
        Behavior {
            no_validators: true,
            short_body_once: Some(MIB as u64 + 5),
            swap_after_first: Some(new.clone()),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("noval.bin")})).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["bytes_done"], json!(5 * MIB));
    assert_file(&svc, "noval.bin", &new);
    let starts: Vec<(u16, Option<u64>)> = up
        .requests("noval.bin")
        .iter()
        .map(|r| (r.status, r.range_start))
        .collect();
    assert_eq!(
        starts,
        vec![(200, None), (206, Some(MIB as u64 + 5)), (200, None)],
        "the resume saw the new size and started over"
    );
}
