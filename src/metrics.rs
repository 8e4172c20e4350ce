//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A handful of atomics and one small histogram: no metrics framework needed for what
//! this service reports, and nothing on the byte loop but a relaxed add.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the request-duration buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Every metric of one service (one per `start`, so that two services in one
/// process, as in the tests, do not count each other's work).
#[derive(Default)]
pub struct Metrics {
    pub bytes_downloaded: AtomicU64,
    pub active_connections: AtomicI64,
    pub websocket_clients: AtomicI64,
    /// Finished transfers whose bytes the `.part`'s write lease vouched for, and those
    /// that were read back from disk.
    part_checks: [AtomicU64; 2],
    /// Bytes of Xet-backed files: fetched from xorbs, and taken from files on disk.
    xet_bytes: [AtomicU64; 2],
    retries: Mutex<BTreeMap<&'static str, u64>>,
    http: Mutex<BTreeMap<String, Histogram>>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The `# HELP` and `# TYPE` lines of one metric.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Counts one open HTTP connection to an upstream while it lives.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_downloaded.fetch_add(n, Ordering::Relaxed);
    }

    /// A finished transfer was checked: by its lease, or by reading it back.
    pub fn part_checked(&self, by_lease: bool) {
        self.part_checks[usize::from(!by_lease)].fetch_add(1, Ordering::Relaxed);
    }

    /// Xet bytes fetched from the CAS (`reused` false) or copied from a file on disk.
    pub fn xet_bytes(&self, reused: bool, n: u64) {
        self.xet_bytes[usize::from(reused)].fetch_add(n, Ordering::Relaxed);
    }

    pub fn retry(&self, kind: &'static str) {
        *lock(&self.retries).entry(kind).or_default() += 1;
    }

    pub fn observe_request(&self, route: &str, seconds: f64) {
        let mut http = lock(&self.http);
        let h = http.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition text; `states` are the current downloads by state.
    pub fn render(&self, states: &[(&str, usize)]) -> String {
        let mut out = String::new();
        describe(
            &mut out,
            "mm_downloaded_bytes_total",
            "counter",
            "Bytes received from upstreams.",
        );
        let _ = writeln!(
            out,
            "mm_downloaded_bytes_total {}",
            self.bytes_downloaded.load(Ordering::Relaxed)
        );
        describe(&mut out, "mm_downloads", "gauge", "Downloads by state.");
        for (state, n) in states {
            let _ = writeln!(out, "mm_downloads{{state=\"{state}\"}} {n}");
        }
        describe(
            &mut out,
            "mm_retries_total",
            "counter",
            "Attempts that failed and were retried, by error kind.",
        );
        for (kind, n) in lock(&self.retries).iter() {
            let _ = writeln!(out, "mm_retries_total{{kind=\"{kind}\"}} {n}");
        }
        describe(
            &mut out,
            "mm_part_checks_total",
            "counter",
            "Finished transfers, by how their bytes on disk were \
             checked: the .part's write lease held (nothing else opened it), or read back.",
        );
        for (how, n) in ["lease", "read_back"].iter().zip(&self.part_checks) {
            let _ = writeln!(
                out,
                "mm_part_checks_total{{how=\"{how}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        describe(
            &mut out,
            "mm_xet_bytes_total",
            "counter",
            "Bytes of Xet-backed files: fetched from Xet storage, or reused from files on disk.",
        );
        for (kind, n) in ["fetched", "reused"].iter().zip(&self.xet_bytes) {
            let _ = writeln!(
                out,
                "mm_xet_bytes_total{{kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        describe(
            &mut out,
            "mm_active_connections",
            "gauge",
            "Open HTTP connections to upstreams.",
        );
        let _ = writeln!(
            out,
            "mm_active_connections {}",
            self.active_connections.load(Ordering::Relaxed).max(0)
        );
        describe(
            &mut out,
            "mm_websocket_clients",
            "gauge",
            "Connected websocket clients.",
        );
        let _ = writeln!(
            out,
            "mm_websocket_clients {}",
            self.websocket_clients.load(Ordering::Relaxed).max(0)
        );
        self.render_http(&mut out);
        out
    }

    /// The request-duration histogram, one series per route.
    fn render_http(&self, out: &mut String) {
        describe(
            out,
            "mm_http_request_duration_seconds",
            "histogram",
            "API request durations.",
        );
        for (route, h) in lock(&self.http).iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "mm_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}", h.buckets[i]);
            }
            let _ = writeln!(
                out,
                "mm_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "mm_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "mm_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.add_bytes(42);
        m.retry("network");
        m.retry("network");
        m.observe_request("/api/downloads", 0.003);
        let text = m.render(&[("queued", 2)]);
        assert!(text.contains("mm_downloaded_bytes_total 42\n"));
        assert!(text.contains("mm_downloads{state=\"queued\"} 2\n"));
        assert!(text.contains("mm_retries_total{kind=\"network\"} 2\n"));
        assert!(text.contains(
            "mm_http_request_duration_seconds_bucket{route=\"/api/downloads\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "mm_http_request_duration_seconds_bucket{route=\"/api/downloads\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains("mm_http_request_duration_seconds_count{route=\"/api/downloads\"} 1\n")
        );
    }
}
