//! The parser of `Content-Range`, the header that decides whether bytes may be appended.

/// A parsed `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: Option<u64>,
}

/// Parses a satisfied `Content-Range`; `None` for anything malformed or unsatisfied.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange { first, last, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange {
                first: 100,
                last: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some(ContentRange {
                first: 0,
                last: 0,
                total: None
            })
        );
        for bad in [
            "",
            "bytes */1000",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes a-b/c",
            "bytes 1-2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }
}

/// Property tests over random inputs (a deterministic seed, many cases): the parsers
/// never panic, accept what a server would send, and refuse ranges that do not add up.
#[cfg(test)]
mod properties {
    use super::*;

    #[test]
    fn content_range_round_trips_and_never_panics() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..20_000 {
            let total = rng.u64(1..u64::MAX / 2);
            let first = rng.u64(0..total);
            let last = rng.u64(first..total);
            let header = format!("bytes {first}-{last}/{total}");
            assert_eq!(
                parse_content_range(&header),
                Some(ContentRange {
                    first,
                    last,
                    total: Some(total)
                }),
                "{header}"
            );
            // A last byte at or past the total is never accepted.
            let bad = format!("bytes {first}-{}/{total}", total + rng.u64(0..10));
            assert_eq!(parse_content_range(&bad), None, "{bad}");
            // Random bytes: no panic, and whatever parses is consistent.
            let noise: String = (0..rng.usize(0..24)).map(|_| rng.char(' '..='~')).collect();
            if let Some(r) = parse_content_range(&noise) {
                assert!(
                    r.first <= r.last && r.total.is_none_or(|t| r.last < t),
                    "{noise}"
                );
            }
        }
    }
}
