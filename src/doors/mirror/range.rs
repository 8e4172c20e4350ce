//! The one `Range` form that download clients send (`bytes=N-`, `bytes=N-M`, `bytes=-N`),
//! for the answers the mirror makes itself (a file still arriving). Files already in
//! the library are answered by actix-files, which parses the same header.

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// No (usable) range: the whole file, 200.
    Whole,
    /// `[start, end)`, 206.
    Part { start: u64, end: u64 },
    /// Nothing of the file: 416.
    Unsatisfiable,
}

/// Parses one single-range `Range` header. Several ranges, or another unit, are
/// answered with the whole file, as RFC 9110 allows.
pub(super) fn wanted(header: Option<&str>, size: u64) -> Wanted {
    // The unit is compared case-insensitively (RFC 9110, 14.1).
    let spec = header
        .map(str::trim)
        .filter(|h| h.len() >= 6 && h.is_char_boundary(6) && h[..6].eq_ignore_ascii_case("bytes="))
        .map(|h| &h[6..]);
    let Some(spec) = spec else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    // Digits only (`u64::from_str` would take a `+`); past u64: not a usable range.
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) => (size.saturating_sub(n), size),
            None => return Wanted::Whole,
        },
        (false, true) => match number(first) {
            Some(s) => (s, size),
            None => return Wanted::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(s), Some(l)) if l >= s => (s, l.saturating_add(1).min(size)),
            _ => return Wanted::Whole,
        },
        (true, true) => return Wanted::Whole,
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_clients_send_them() {
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(
            wanted(Some("bytes=10-"), 100),
            Wanted::Part {
                start: 10,
                end: 100
            }
        );
        assert_eq!(
            wanted(Some("bytes=10-19"), 100),
            Wanted::Part { start: 10, end: 20 }
        );
        assert_eq!(
            wanted(Some("bytes=90-500"), 100),
            Wanted::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            wanted(Some("bytes=-5"), 100),
            Wanted::Part {
                start: 95,
                end: 100
            }
        );
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=5-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-"), 100), Wanted::Whole);
        // threats.md's edge cases: the unit in capitals, spaces, signs, huge numbers.
        let part = |start, end| Wanted::Part { start, end };
        assert_eq!(wanted(Some("BYTES=10-19"), 100), part(10, 20));
        assert_eq!(wanted(Some(" bytes=10 - 19 "), 100), part(10, 20));
        assert_eq!(wanted(Some("bytes=+10-"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=-+5"), 100), Wanted::Whole);
        assert_eq!(
            wanted(Some("bytes=99999999999999999999999-"), 100),
            Wanted::Whole
        );
        assert_eq!(
            wanted(Some("bytes=0-99999999999999999999999"), 100),
            Wanted::Whole
        );
        assert_eq!(
            wanted(Some("bytes=0-18446744073709551615"), 100),
            part(0, 100)
        );
        assert_eq!(
            wanted(Some("bytes=-18446744073709551615"), 100),
            part(0, 100)
        );
        assert_eq!(
            wanted(Some("bytes=18446744073709551615-"), 100),
            Wanted::Unsatisfiable
        );
        assert_eq!(wanted(Some("bytes="), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytés=0-1"), 100), Wanted::Whole);
    }
}
