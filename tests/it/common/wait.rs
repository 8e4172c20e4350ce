//! The one way a test waits for something to become true: `eventually` polls a probe
//! until it answers, and fails with the probe's last word when the time is up.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How often a probe is asked again.
const EVERY: Duration = Duration::from_millis(50);

/// Asks `probe` every 50 ms until it returns `Ok`; after `within`, panics with the
/// last `Err` (what was seen instead).
pub async fn eventually<T, Fut>(within: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("not within {within:?}: {seen}")
            }
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

/// `eventually` for a probe that does not await (threads, processes, files).
pub fn eventually_blocking<T>(within: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("not within {within:?}: {seen}")
            }
            Err(_) => std::thread::sleep(EVERY),
        }
    }
}

/// The library listing's entry for `path`.
pub fn library_file<'a>(lib: &'a Value, path: &str) -> Option<&'a Value> {
    lib["files"].as_array()?.iter().find(|f| f["path"] == path)
}

/// Polls a library listing (`list` fetches `GET /api/library` from wherever the test's
/// service is) until `pred` holds for the file at `path`; `what` says what is awaited.
pub async fn library_file_where<Fut>(
    within: Duration,
    list: impl Fn() -> Fut,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value
where
    Fut: Future<Output = Value>,
{
    eventually(within, || {
        let listing = list();
        let pred = &pred;
        async move {
            let lib = listing.await;
            library_file(&lib, path)
                .filter(|f| pred(f))
                .cloned()
                .ok_or_else(|| format!("{path} in the library: {what}; library: {lib}"))
        }
    })
    .await
}
