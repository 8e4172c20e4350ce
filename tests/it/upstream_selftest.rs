//! Checks the fault-injecting test server itself, with a plain reqwest client, so that engine
//! tests built on it can trust what it does.

// Test scenarios read top to bottom as one story; splitting them would hide it.
#![allow(clippy::too_many_lines)]

use crate::common;

use std::time::{Duration, Instant};

use common::upstream::*;
use reqwest::header::{
    ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED,
    RANGE, RETRY_AFTER,
};
use reqwest::StatusCode;

const PATH: &str = "files/a.bin";

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("reqwest client")
}

/// Deterministic, non-repeating-looking content, so an off-by-N slice would not compare equal.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}

/// Reads the body chunk by chunk, keeping what arrived before any error.
async fn read_body(mut resp: reqwest::Response) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return (body, None),
            Err(e) => return (body, Some(e)),
        }
    }
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn http_date_is_imf_fixdate() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}

#[tokio::test]
async fn full_get_returns_bytes_and_validators() {
    let up = Upstream::start();
    let data = pattern(300_000);
    up.add_file(PATH, data.clone(), Behavior::default());

    let resp = client().get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = header(&resp, ETAG).map(str::to_string);
    assert_eq!(etag, up.etag(PATH));
    assert_eq!(etag.as_deref(), Some("\"v1-300000\""));
    assert_eq!(
        header(&resp, LAST_MODIFIED),
        Some("Tue, 14 Nov 2023 22:13:21 GMT")
    );
    assert_eq!(header(&resp, ACCEPT_RANGES), Some("bytes"));
    assert_eq!(header(&resp, CONTENT_LENGTH), Some("300000"));
    let (body, err) = read_body(resp).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, data);

    let head = client().head(up.url(PATH)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, CONTENT_LENGTH), Some("300000"));
    assert_eq!(header(&head, ETAG), etag.as_deref());

    let missing = client().get(up.url("files/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let reqs = up.requests(PATH);
    let methods: Vec<_> = reqs.iter().map(|r| (r.method.as_str(), r.status)).collect();
    assert_eq!(methods, [("GET", 200), ("HEAD", 200)]);
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[0].range_start, None);
    assert_eq!(up.requests("files/nope")[0].status, 404);
    assert_eq!(up.bytes_sent(PATH), 300_000);
}

#[tokio::test]
async fn range_requests_get_206_and_416() {
    let up = Upstream::start();
    let data = pattern(10_000);
    up.add_file(PATH, data.clone(), Behavior::default());
    let c = client();

    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, CONTENT_RANGE), Some("bytes 1000-1999/10000"));
    assert_eq!(header(&resp, CONTENT_LENGTH), Some("1000"));
    assert_eq!(read_body(resp).await.0, &data[1000..2000]);

    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=9000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, CONTENT_RANGE), Some("bytes 9000-9999/10000"));
    assert_eq!(read_body(resp).await.0, &data[9000..]);

    // An end past the content is clamped.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=9990-20000")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, CONTENT_RANGE), Some("bytes 9990-9999/10000"));
    assert_eq!(read_body(resp).await.0, &data[9990..]);

    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, CONTENT_RANGE), Some("bytes */10000"));

    let starts: Vec<_> = up
        .requests(PATH)
        .iter()
        .map(|r| (r.range_start, r.status))
        .collect();
    assert_eq!(
        starts,
        [
            (Some(1000), 206),
            (Some(9000), 206),
            (Some(9990), 206),
            (Some(10000), 416)
        ]
    );
    assert_eq!(up.bytes_sent(PATH), 1000 + 1000 + 10);
}

#[tokio::test]
async fn if_range_with_stale_validator_gets_whole_new_content() {
    let up = Upstream::start();
    up.add_file(PATH, pattern(5_000), Behavior::default());
    let old_etag = up.etag(PATH).unwrap();
    let old_lm = up.last_modified(PATH).unwrap();
    let new = pattern(6_000).into_iter().rev().collect::<Vec<_>>();
    up.replace_content(PATH, new.clone());
    let new_etag = up.etag(PATH).unwrap();
    assert_ne!(old_etag, new_etag);
    assert_ne!(old_lm, up.last_modified(PATH).unwrap());
    let c = client();

    for stale in [&old_etag, &old_lm] {
        let resp = c
            .get(up.url(PATH))
            .header(RANGE, "bytes=100-")
            .header(IF_RANGE, stale.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "If-Range {stale}");
        assert_eq!(header(&resp, ETAG), Some(new_etag.as_str()));
        assert_eq!(read_body(resp).await.0, new);
    }

    for fresh in [new_etag.clone(), up.last_modified(PATH).unwrap()] {
        let resp = c
            .get(up.url(PATH))
            .header(RANGE, "bytes=100-")
            .header(IF_RANGE, fresh.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PARTIAL_CONTENT,
            "If-Range {fresh}"
        );
        assert_eq!(read_body(resp).await.0, &new[100..]);
    }
    let if_ranges: Vec<_> = up.requests(PATH).into_iter().map(|r| r.if_range).collect();
    assert_eq!(if_ranges[0].as_deref(), Some(old_etag.as_str()));
}

#[tokio::test]
async fn drop_every_cuts_each_response_after_n_bytes() {
    let up = Upstream::start();
    let data = pattern(1_000_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            drop_every: Some(100_000),
            ..Default::default()
        },
    );
    let c = client();

    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The full length is announced even though the body will be cut.
    assert_eq!(header(&resp, CONTENT_LENGTH), Some("1000000"));
    let (body, err) = read_body(resp).await;
    assert!(err.is_some(), "a cut body must be an error");
    assert_eq!(body, &data[..100_000]);

    // A resumed request is cut 100 000 bytes after its own start.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let (body, err) = read_body(resp).await;
    assert!(
        err.is_some(),
        "the body ended cleanly after {} bytes",
        body.len()
    );
    assert_eq!(body, &data[100_000..200_000]);

    // A range shorter than the cut completes.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=950000-")
        .send()
        .await
        .unwrap();
    let (body, err) = read_body(resp).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, &data[950_000..]);
    assert_eq!(up.bytes_sent(PATH), 250_000);
}

#[tokio::test]
async fn expire_after_limits_each_link_then_403s() {
    let up = Upstream::start();
    let data = pattern(100_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            expire_after: Some(30_000),
            ..Default::default()
        },
    );
    let c = client();
    let link = |q: &str| format!("{}?{q}", up.url(PATH));

    // Link 1 serves 30 000 bytes, then the response is reset...
    let resp = c.get(link("sig=1&expires=9")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, CONTENT_LENGTH), Some("100000"));
    let (body, err) = read_body(resp).await;
    assert!(err.is_some(), "a body cut at the budget must be an error");
    assert_eq!(body, &data[..30_000]);
    // ...and is dead from then on, whatever is asked.
    let resp = c
        .get(link("sig=1&expires=9"))
        .header(RANGE, "bytes=30000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let text = resp.text().await.unwrap();
    assert!(!text.is_empty(), "an empty 403 body");
    let resp = c.head(link("sig=1&expires=9")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // A fresh link has its own budget, spent across several responses.
    let resp = c
        .get(link("sig=2"))
        .header(RANGE, "bytes=30000-49999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let (body, err) = read_body(resp).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, &data[30_000..50_000]);
    let resp = c
        .get(link("sig=2"))
        .header(RANGE, "bytes=50000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let (body, err) = read_body(resp).await;
    assert!(
        err.is_some(),
        "the body ended cleanly after {} bytes",
        body.len()
    );
    assert_eq!(body, &data[50_000..60_000]);
    let resp = c.get(link("sig=2")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Link 1 is still dead; no query at all is one more link.
    let resp = c.get(link("sig=1&expires=9")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (body, err) = read_body(c.get(up.url(PATH)).send().await.unwrap()).await;
    assert!(
        err.is_some(),
        "the body ended cleanly after {} bytes",
        body.len()
    );
    assert_eq!(body, &data[..30_000]);

    let seen: Vec<_> = up
        .requests(PATH)
        .into_iter()
        .map(|r| (r.method, r.query, r.status))
        .collect();
    let q = |s: &str| Some(s.to_string());
    assert_eq!(
        seen,
        [
            ("GET".to_string(), q("sig=1&expires=9"), 200),
            ("GET".to_string(), q("sig=1&expires=9"), 403),
            ("HEAD".to_string(), q("sig=1&expires=9"), 403),
            ("GET".to_string(), q("sig=2"), 206),
            ("GET".to_string(), q("sig=2"), 206),
            ("GET".to_string(), q("sig=2"), 403),
            ("GET".to_string(), q("sig=1&expires=9"), 403),
            ("GET".to_string(), None, 200),
        ]
    );
    assert_eq!(up.bytes_sent(PATH), 30_000 + 20_000 + 10_000 + 30_000);

    // set_behavior forgets every link.
    up.set_behavior(
        PATH,
        Behavior {
            expire_after: Some(30_000),
            ..Default::default()
        },
    );
    let resp = c
        .get(link("sig=1&expires=9"))
        .header(RANGE, "bytes=90000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(read_body(resp).await.0, &data[90_000..]);
}

#[tokio::test]
async fn expire_after_counts_only_bytes_written() {
    let up = Upstream::start();
    let data = pattern(100_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            expire_after: Some(30_000),
            rate_bps: Some(200_000),
            ..Default::default()
        },
    );
    let c = client();
    let url = format!("{}?sig=7", up.url(PATH));
    // Abandon the first response early: its unsent share of the budget comes back.
    let mut resp = c.get(&url).send().await.unwrap();
    let chunk = resp.chunk().await;
    assert!(
        chunk.as_ref().is_ok_and(|c| c.is_some()),
        "no first chunk: {chunk:?}"
    );
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = up.bytes_sent(PATH);
    assert!(spent > 0 && spent < 30_000, "{spent}");
    let resp = c
        .get(&url)
        .header(RANGE, format!("bytes={spent}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let (body, err) = read_body(resp).await;
    assert!(
        err.is_some(),
        "the body ended cleanly after {} bytes",
        body.len()
    );
    assert_eq!(body, &data[spent as usize..30_000]);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn fail_first_answers_statuses_then_serves() {
    let up = Upstream::start();
    let data = pattern(1_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            fail_first: vec![(503, Some(2)), (429, None), (500, Some(7))],
            ..Default::default()
        },
    );
    let c = client();

    let resp = c.head(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, RETRY_AFTER), Some("2"));
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, RETRY_AFTER), None);
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&resp, RETRY_AFTER), Some("7"));
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read_body(resp).await.0, data);

    let statuses: Vec<_> = up.requests(PATH).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 500, 200]);
    // Error texts are not file content.
    assert_eq!(up.bytes_sent(PATH), 1_000);

    // set_behavior re-arms the failures.
    up.set_behavior(
        PATH,
        Behavior {
            fail_first: vec![(502, None)],
            ..Default::default()
        },
    );
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn rate_bps_throttles_to_the_average() {
    let up = Upstream::start();
    let data = pattern(2 * 1024 * 1024);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            rate_bps: Some(1024 * 1024),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let resp = client().get(up.url(PATH)).send().await.unwrap();
    let (body, err) = read_body(resp).await;
    let elapsed = started.elapsed();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, data);
    assert!(elapsed >= Duration::from_millis(1_800), "{elapsed:?}");
    // Nominally 2 s; the upper bound is loose because a loaded CI box (tests run in parallel on
    // two cores) adds scheduling delay on the client side.
    assert!(elapsed < Duration::from_millis(4_000), "{elapsed:?}");
}

#[tokio::test]
async fn no_content_length_is_close_delimited() {
    let up = Upstream::start();
    let data = pattern(200_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            no_content_length: true,
            ..Default::default()
        },
    );
    let resp = client().get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get(CONTENT_LENGTH).is_none(),
        "{:?}",
        resp.headers()
    );
    assert_eq!(resp.content_length(), None);
    let (body, err) = read_body(resp).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, data);
}

#[tokio::test]
async fn short_body_once_ends_early_once() {
    let up = Upstream::start();
    let data = pattern(500_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            short_body_once: Some(123_456),
            ..Default::default()
        },
    );
    let c = client();
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(header(&resp, CONTENT_LENGTH), Some("500000"));
    let (body, err) = read_body(resp).await;
    assert!(err.is_some(), "a premature EOF must be an error");
    assert_eq!(body, &data[..123_456]);

    let (body, err) = read_body(c.get(up.url(PATH)).send().await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, data);
}

#[tokio::test]
async fn require_auth_wants_the_bearer_token() {
    let up = Upstream::start();
    let data = pattern(1_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            require_auth: Some("s3cret".into()),
            ..Default::default()
        },
    );
    let c = client();
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .get(up.url(PATH))
        .header(AUTHORIZATION, "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .get(up.url(PATH))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read_body(resp).await.0, data);

    let auths: Vec<_> = up
        .requests(PATH)
        .into_iter()
        .map(|r| (r.authorization, r.status))
        .collect();
    assert_eq!(
        auths,
        [
            (None, 401),
            (Some("Bearer wrong".to_string()), 401),
            (Some("Bearer s3cret".to_string()), 200)
        ]
    );
}

#[tokio::test]
async fn stall_once_goes_silent_then_serves() {
    let up = Upstream::start();
    let data = pattern(100_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            stall_once_after: Some(10_000),
            ..Default::default()
        },
    );
    let c = client();
    let mut resp = c.get(up.url(PATH)).send().await.unwrap();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => got.extend_from_slice(&chunk),
            Ok(other) => panic!("stream ended instead of stalling: {other:?}"),
            Err(_) => break, // silent, as asked
        }
    }
    assert_eq!(got, &data[..10_000]);
    drop(resp);

    let (body, err) = read_body(c.get(up.url(PATH)).send().await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body, data);
}

#[tokio::test]
async fn swap_and_ignore_range_after() {
    let up = Upstream::start();
    let first = pattern(4_000);
    let second: Vec<u8> = first.iter().map(|b| b ^ 0xff).collect();
    up.add_file(
        PATH,
        first.clone(),
        Behavior {
            swap_after_first: Some(second.clone()),
            ignore_range_after: Some(2),
            ..Default::default()
        },
    );
    let c = client();
    let etag1 = up.etag(PATH).unwrap();
    // Request 0: HEAD does not trigger the swap.
    let resp = c.head(up.url(PATH)).send().await.unwrap();
    assert_eq!(header(&resp, ETAG), Some(etag1.as_str()));
    // Request 1: ranged, honoured; once it ends the content is swapped.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(read_body(resp).await.0, &first[10..]);
    // Request 2: the range is now ignored, and the content is the new one.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_ne!(header(&resp, ETAG), Some(etag1.as_str()));
    assert_eq!(read_body(resp).await.0, second);
    assert_eq!(up.version(PATH), Some(2));
}

#[tokio::test]
async fn swap_at_request_n_is_seen_by_request_n_whatever_the_others_do() {
    let up = Upstream::start();
    let first = pattern(4_000);
    let second: Vec<u8> = pattern(5_000).into_iter().rev().collect();
    up.add_file(
        PATH,
        first.clone(),
        Behavior {
            swap_at_request: Some((1, second.clone())),
            ..Default::default()
        },
    );
    let c = client();
    let etag1 = up.etag(PATH).unwrap();
    // Request 0 is answered with the old content; its body is not even read yet.
    let r0 = c.get(up.url(PATH)).send().await.unwrap();
    assert_eq!(header(&r0, ETAG), Some(etag1.as_str()));
    // Request 1, with the old validator: the new content, whole.
    let r1 = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=10-")
        .header(IF_RANGE, etag1.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r1.status(), StatusCode::OK);
    assert_ne!(header(&r1, ETAG), Some(etag1.as_str()));
    assert_eq!(read_body(r1).await.0, second);
    assert_eq!(
        read_body(r0).await.0,
        first,
        "request 0 goes on with what it had"
    );
    assert_eq!(up.version(PATH), Some(2));
}

#[tokio::test]
async fn dropping_the_upstream_stops_it() {
    let up = Upstream::start();
    up.add_file(PATH, pattern(10), Behavior::default());
    let url = up.url(PATH);
    let sent = client().get(&url).send().await;
    assert!(sent.is_ok(), "{sent:?}");
    drop(up);
    let sent = client().get(&url).send().await;
    assert!(sent.is_err(), "a stopped upstream answered: {sent:?}");
}

#[tokio::test]
async fn swap_after_a_cut_is_seen_by_an_immediate_retry() {
    let up = Upstream::start();
    let old = pattern(300_000);
    let new: Vec<u8> = pattern(310_000).into_iter().rev().collect();
    up.add_file(
        PATH,
        old.clone(),
        Behavior {
            short_body_once: Some(50_000),
            swap_after_first: Some(new.clone()),
            ..Default::default()
        },
    );
    let c = client();
    let resp = c.get(up.url(PATH)).send().await.unwrap();
    let old_etag = header(&resp, ETAG).unwrap().to_string();
    let (body, err) = read_body(resp).await;
    assert!(
        err.is_some(),
        "the body ended cleanly after {} bytes",
        body.len()
    );
    assert_eq!(body, &old[..50_000]);
    // Resume at once, as an engine would: the stale If-Range must yield the new file in full.
    let resp = c
        .get(up.url(PATH))
        .header(RANGE, "bytes=50000-")
        .header(IF_RANGE, old_etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read_body(resp).await.0, new);
}

#[tokio::test]
async fn drop_without_content_length_is_still_an_error() {
    // Close-delimited bodies can only signal a cut by a reset, not by a clean close.
    let up = Upstream::start();
    let data = pattern(400_000);
    up.add_file(
        PATH,
        data.clone(),
        Behavior {
            no_content_length: true,
            drop_every: Some(150_000),
            ..Default::default()
        },
    );
    let (body, err) = read_body(client().get(up.url(PATH)).send().await.unwrap()).await;
    assert!(err.is_some(), "a reset must surface as an error");
    assert_eq!(body, &data[..150_000]);
}

/// Plain `#[test]`, raw socket: the server needs no runtime from the caller, and the wire format
/// is what the engine will parse.
#[test]
fn raw_wire_format_from_a_plain_test() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    up.add_file(
        "dir/my file.bin",
        b"hello world".to_vec(),
        Behavior::default(),
    );
    let exchange = |request: &str| {
        let mut s = std::net::TcpStream::connect(up.addr()).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let get = exchange("GET /dir/my%20file.bin?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=6-\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{get}");
    assert!(get.contains("\r\nConnection: close\r\n"), "{get}");
    assert!(
        get.contains("\r\nContent-Range: bytes 6-10/11\r\n"),
        "{get}"
    );
    assert!(get.ends_with("\r\n\r\nworld"), "{get}");
    let head = exchange("HEAD /dir/my%20file.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: 11\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let post = exchange("POST /dir/my%20file.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");

    up.add_file(
        "model.json",
        b"{}".to_vec(),
        Behavior {
            extra_headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Linked-Size".into(), "2".into()),
            ],
            ..Default::default()
        },
    );
    let json = exchange("GET /model.json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(json.matches("Content-Type:").count(), 1, "{json}");
    assert!(
        json.contains("\r\nContent-Type: application/json\r\n"),
        "{json}"
    );
    assert!(json.contains("\r\nX-Linked-Size: 2\r\n"), "{json}");
    let unsatisfiable = exchange("GET /model.json HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n");
    assert!(
        unsatisfiable.starts_with("HTTP/1.1 416 "),
        "{unsatisfiable}"
    );
    assert_eq!(
        unsatisfiable.matches("Content-Type:").count(),
        1,
        "{unsatisfiable}"
    );
    assert!(
        unsatisfiable.contains("\r\nContent-Range: bytes */2\r\n"),
        "{unsatisfiable}"
    );

    let reqs = up.requests("dir/my file.bin");
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].header("Host"), Some("x"));
    assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
    assert_eq!(reqs[1].query, None);
}
