//! How a response is judged, in one place for every path that fetches bytes (the single
//! connection and each parallel one): from its status and headers, what was asked and
//! what was known, to a [`Verdict`]. Pure: no I/O, no clock of its own, so the whole
//! protocol is one table test.

use std::time::SystemTime;

use reqwest::header::{self, HeaderMap};

use super::range::parse_content_range;
use super::validators::Validators;
use crate::engine::EngineError;

/// What a request asked for.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Asked {
    /// The first byte asked for (0 and no `to`: the whole file, no `Range` sent).
    pub(in crate::engine) from: u64,
    /// One past the last byte asked for, for a bounded range (a segment).
    pub(in crate::engine) to: Option<u64>,
}

impl Asked {
    /// Whether the request carries a `Range` (and an `If-Range` when we have a validator).
    pub(in crate::engine) fn ranged(&self) -> bool {
        self.from > 0 || self.to.is_some()
    }
}

/// What was known of the file when the request went out.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Known<'a> {
    pub(in crate::engine) total: Option<u64>,
    pub(in crate::engine) validators: &'a Validators,
    /// Bytes already held: a whole file sent back means they go.
    pub(in crate::engine) held: u64,
    /// The URL is a presigned CDN link that the Hub can hand out again: a refusal there
    /// means it expired, not that the file is forbidden.
    pub(in crate::engine) refreshable_link: bool,
    /// The bytes held came from another URL: they are kept only when this answer has
    /// the same strong ETag and size (else the file may be another of the same size).
    pub(in crate::engine) must_prove: bool,
}

/// What a usable response tells about the file.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) struct Accepted {
    /// The file's size; `None` until the body ends when no length is announced.
    pub(in crate::engine) total: Option<u64>,
    /// The validators to keep for the next `If-Range` and change check.
    pub(in crate::engine) validators: Validators,
    /// The server serves ranges: a resume, or parallel connections, can use them.
    pub(in crate::engine) ranges: bool,
}

/// What to do with a response.
#[derive(Debug)]
pub(in crate::engine) enum Verdict {
    /// The bytes asked for, from where they were asked: take the body.
    Body(Accepted),
    /// The whole file from byte 0 although we asked for a range or hold bytes: what we
    /// hold goes, then the body is the file. `changed` says how the file changed upstream
    /// when its validator tells (else the server merely ignores `Range`).
    Whole {
        accepted: Accepted,
        changed: Option<String>,
    },
    /// A range of another version of the file (its validator or its size is new; the
    /// text says which): its bytes must not follow ours, so everything starts over.
    Changed(String),
    /// `416` where the file ends: every byte is already there.
    Complete,
    /// `416` anywhere else: the file is not what we think it is; start over.
    Unsatisfiable,
    /// A presigned link was refused with `status`: ask the Hub for a fresh one.
    LinkExpired { status: u16 },
    /// The attempt fails. Whether another one helps, and when, is the error's to say
    /// ([`EngineError::is_transient`], [`EngineError::retry_after`]).
    Failed(EngineError),
}

/// Judges a response to a request for `asked`, given what was `known`. `now` dates a
/// `Retry-After` given as an HTTP-date.
pub(in crate::engine) fn classify(
    status: u16,
    headers: &HeaderMap,
    asked: Asked,
    known: Known<'_>,
    now: SystemTime,
) -> Verdict {
    match status {
        200 => whole_file(headers, asked, known),
        206 => partial(headers, asked, known),
        416 if known.total == Some(asked.from) => Verdict::Complete,
        416 => Verdict::Unsatisfiable,
        401 | 403 | 410 if known.refreshable_link => Verdict::LinkExpired { status },
        300..=399 if headers.contains_key(header::LOCATION) => redirect(status, headers),
        _ => Verdict::Failed(EngineError::Status {
            status,
            retry_after: crate::http::retry_wait(headers, now),
        }),
    }
}

/// A redirect that reached us was not followed (the client follows the ones it may):
/// say where it led and why, not a bare status.
fn redirect(status: u16, headers: &HeaderMap) -> Verdict {
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let scheme = location
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase());
    let why = match scheme.as_deref() {
        Some("http" | "https") | None => "its host is not allowed, or too many redirects".into(),
        Some(other) => format!("another scheme ({other}:); only http and https are followed"),
    };
    Verdict::Failed(EngineError::Redirect {
        status,
        location,
        why,
    })
}

fn whole_file(headers: &HeaderMap, asked: Asked, known: Known<'_>) -> Verdict {
    let validators = Validators::from_headers(headers);
    let changed = known.validators.changed_to(&validators).then(|| {
        format!(
            "validator {} -> {}",
            known.validators.describe(),
            validators.describe()
        )
    });
    let accepted = Accepted {
        total: content_length(headers),
        validators,
        ranges: accepts_ranges(headers),
    };
    if asked.ranged() || known.held > 0 {
        Verdict::Whole { accepted, changed }
    } else {
        Verdict::Body(accepted)
    }
}

fn partial(headers: &HeaderMap, asked: Asked, known: Known<'_>) -> Verdict {
    let shown = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    let Some(range) = shown
        .and_then(parse_content_range)
        .filter(|r| r.first == asked.from)
    else {
        let to = asked.to.map(|to| (to - 1).to_string()).unwrap_or_default();
        return Verdict::Failed(EngineError::BadContentRange(format!(
            "asked bytes={}-{to}, got Content-Range: {}",
            asked.from,
            shown.unwrap_or("none")
        )));
    };
    let validators = Validators::from_headers(headers);
    if known.must_prove && !proves_same(known, &validators, range.total) {
        return Verdict::Changed(format!(
            "a new URL without the same strong validator and size ({} -> {})",
            known.validators.describe(),
            validators.describe()
        ));
    }
    if known.validators.changed_to(&validators) {
        // No If-Range support upstream, but the validator tells: another file.
        return Verdict::Changed(format!(
            "validator {} -> {}",
            known.validators.describe(),
            validators.describe()
        ));
    }
    if let (Some(known), Some(now)) = (known.total, range.total) {
        if known != now {
            // Without validators the size is all there is to tell, and a new size is a
            // new file.
            return Verdict::Changed(format!("size {known} -> {now} bytes"));
        }
    }
    Verdict::Body(Accepted {
        total: range.total.or(known.total),
        validators,
        ranges: true,
    })
}

/// The same strong ETag, and the same size: the same file, whatever the URL.
fn proves_same(known: Known<'_>, now: &Validators, total: Option<u64>) -> bool {
    let strong = |v: &Validators| v.etag.clone().filter(|t| !t.starts_with("W/"));
    strong(known.validators).is_some()
        && strong(known.validators) == strong(now)
        && known.total.is_some()
        && known.total == total
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn accepts_ranges(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("bytes"))
}

#[cfg(test)]
#[allow(clippy::too_many_lines)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One row: a response, what was asked and known, and the verdict written short.
    struct Row {
        what: &'static str,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        from: u64,
        to: Option<u64>,
        total: Option<u64>,
        etag: Option<&'static str>,
        held: u64,
        refreshable: bool,
        want: &'static str,
    }

    const ROW: Row = Row {
        what: "",
        status: 200,
        headers: &[],
        from: 0,
        to: None,
        total: None,
        etag: None,
        held: 0,
        refreshable: false,
        want: "",
    };

    /// The verdict as a short string, so that a row fits on a line or two.
    fn short(v: &Verdict) -> String {
        let acc = |a: &Accepted| {
            format!(
                "total={:?} etag={} ranges={}",
                a.total,
                a.validators.etag.as_deref().unwrap_or("-"),
                a.ranges
            )
        };
        match v {
            Verdict::Body(a) => format!("body {}", acc(a)),
            Verdict::Whole { accepted, changed } => {
                format!("whole {} changed={changed:?}", acc(accepted))
            }
            Verdict::Changed(what) => format!("changed {what}"),
            Verdict::Complete => "complete".into(),
            Verdict::Unsatisfiable => "unsatisfiable".into(),
            Verdict::LinkExpired { status } => format!("link expired {status}"),
            Verdict::Failed(e) => format!(
                "failed {:?} transient={} after={:?}",
                e.kind(),
                e.is_transient(),
                e.retry_after()
            ),
        }
    }

    #[test]
    fn the_protocol_as_a_table() {
        let rows = [
            Row {
                what: "a fresh download: the whole file",
                headers: &[("content-length", "100"), ("etag", "\"a\""), ("accept-ranges", "bytes")],
                want: "body total=Some(100) etag=\"a\" ranges=true",
                ..ROW
            },
            Row {
                what: "a fresh download without a length: read to the end",
                want: "body total=None etag=- ranges=false",
                ..ROW
            },
            Row {
                what: "a resume served",
                status: 206,
                headers: &[("content-range", "bytes 40-99/100"), ("etag", "\"a\"")],
                from: 40,
                total: Some(100),
                etag: Some("\"a\""),
                held: 40,
                want: "body total=Some(100) etag=\"a\" ranges=true",
                ..ROW
            },
            Row {
                what: "a resume with an unknown total keeps the known one",
                status: 206,
                headers: &[("content-range", "bytes 40-99/*")],
                from: 40,
                total: Some(100),
                want: "body total=Some(100) etag=- ranges=true",
                ..ROW
            },
            Row {
                what: "a segment served",
                status: 206,
                headers: &[("content-range", "bytes 0-49/100")],
                from: 0,
                to: Some(50),
                total: Some(100),
                want: "body total=Some(100) etag=- ranges=true",
                ..ROW
            },
            Row {
                what: "Range ignored: start over with this body",
                headers: &[("content-length", "100"), ("etag", "\"a\"")],
                from: 40,
                etag: Some("\"a\""),
                held: 40,
                want: "whole total=Some(100) etag=\"a\" ranges=false changed=None",
                ..ROW
            },
            Row {
                what: "bytes held but none asked (a restart): start over too",
                held: 10,
                want: "whole total=None etag=- ranges=false changed=None",
                ..ROW
            },
            Row {
                what: "If-Range did not match: the new file, and say so",
                headers: &[("content-length", "120"), ("etag", "\"b\"")],
                from: 40,
                etag: Some("\"a\""),
                held: 40,
                want: "whole total=Some(120) etag=\"b\" ranges=false changed=Some(\"validator \\\"a\\\" -> \\\"b\\\"\")",
                ..ROW
            },
            Row {
                what: "a segment answered with the whole file",
                headers: &[("content-length", "100")],
                from: 0,
                to: Some(50),
                total: Some(100),
                want: "whole total=Some(100) etag=- ranges=false changed=None",
                ..ROW
            },
            Row {
                what: "a range of a new version (no If-Range upstream)",
                status: 206,
                headers: &[("content-range", "bytes 40-99/100"), ("etag", "\"b\"")],
                from: 40,
                total: Some(100),
                etag: Some("\"a\""),
                want: "changed validator \"a\" -> \"b\"",
                ..ROW
            },
            Row {
                what: "a range of a file of another size, no validators",
                status: 206,
                headers: &[("content-range", "bytes 40-99/200")],
                from: 40,
                total: Some(100),
                want: "changed size 100 -> 200 bytes",
                ..ROW
            },
            Row {
                what: "a range we did not ask for",
                status: 206,
                headers: &[("content-range", "bytes 0-99/100")],
                from: 40,
                total: Some(100),
                want: "failed HttpStatus transient=true after=None",
                ..ROW
            },
            Row {
                what: "a 206 without Content-Range",
                status: 206,
                from: 40,
                want: "failed HttpStatus transient=true after=None",
                ..ROW
            },
            Row {
                what: "416 at the end: all there",
                status: 416,
                from: 100,
                total: Some(100),
                want: "complete",
                ..ROW
            },
            Row {
                what: "416 elsewhere: start over",
                status: 416,
                from: 40,
                total: Some(100),
                want: "unsatisfiable",
                ..ROW
            },
            Row {
                what: "an expired CDN link",
                status: 403,
                refreshable: true,
                want: "link expired 403",
                ..ROW
            },
            Row {
                what: "a gone CDN link",
                status: 410,
                refreshable: true,
                want: "link expired 410",
                ..ROW
            },
            Row {
                what: "a 401 of a CDN link",
                status: 401,
                refreshable: true,
                want: "link expired 401",
                ..ROW
            },
            Row {
                what: "403 from the origin",
                status: 403,
                want: "failed Unauthorized transient=false after=None",
                ..ROW
            },
            Row {
                what: "401",
                status: 401,
                want: "failed Unauthorized transient=false after=None",
                ..ROW
            },
            Row {
                what: "404, even on a CDN link",
                status: 404,
                refreshable: true,
                want: "failed NotFound transient=false after=None",
                ..ROW
            },
            Row {
                what: "410 from the origin",
                status: 410,
                want: "failed NotFound transient=false after=None",
                ..ROW
            },
            Row {
                what: "503 with Retry-After",
                status: 503,
                headers: &[("retry-after", "2")],
                want: "failed HttpStatus transient=true after=Some(2s)",
                ..ROW
            },
            Row {
                what: "429 with RateLimit",
                status: 429,
                headers: &[("ratelimit", "\"default\";r=0;t=30")],
                want: "failed HttpStatus transient=true after=Some(30s)",
                ..ROW
            },
            Row {
                what: "429 with the older RateLimit-Reset",
                status: 429,
                headers: &[("ratelimit-reset", "7")],
                want: "failed HttpStatus transient=true after=Some(7s)",
                ..ROW
            },
            Row {
                what: "408",
                status: 408,
                want: "failed HttpStatus transient=true after=None",
                ..ROW
            },
            Row {
                what: "500",
                status: 500,
                want: "failed HttpStatus transient=true after=None",
                ..ROW
            },
            Row {
                what: "204: nothing to take, nothing to retry",
                status: 204,
                want: "failed HttpStatus transient=false after=None",
                ..ROW
            },
        ];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for row in rows {
            let mut headers = HeaderMap::new();
            for (k, v) in row.headers {
                headers.append(*k, v.parse().unwrap());
            }
            let validators = Validators {
                etag: row.etag.map(str::to_owned),
                last_modified: None,
            };
            let asked = Asked {
                from: row.from,
                to: row.to,
            };
            let known = Known {
                total: row.total,
                validators: &validators,
                held: row.held,
                refreshable_link: row.refreshable,
                must_prove: false,
            };
            let got = short(&classify(row.status, &headers, asked, known, now));
            assert_eq!(got, row.want, "{}", row.what);
        }
    }

    #[test]
    fn a_bad_range_names_what_was_asked_and_what_came() {
        let mut headers = HeaderMap::new();
        headers.insert("content-range", "bytes 0-9/100".parse().unwrap());
        let known = Known {
            total: Some(100),
            validators: &Validators::default(),
            held: 0,
            refreshable_link: false,
            must_prove: false,
        };
        let asked = Asked {
            from: 50,
            to: Some(60),
        };
        let Verdict::Failed(e) = classify(206, &headers, asked, known, SystemTime::now()) else {
            panic!("not a failure");
        };
        assert_eq!(
            e.to_string(),
            "server answered a range we did not ask for: asked bytes=50-59, got Content-Range: bytes 0-9/100"
        );
    }
}
