//! Sizes in messages as people read them, in binary units as the terminal shows them
//! (`96 MiB`, `1.50 GiB`, `812 B`): one convention for every error and answer.

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// `812 B`, `64 MiB` (a whole number of the unit shows no decimals), `1.50 GiB`,
/// `23.4 MiB`, `117 MiB`.
pub fn bytes(n: u64) -> String {
    let mut unit = 0;
    let mut whole = n;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        whole /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let scale = 1u64 << (10 * unit);
    if n.is_multiple_of(scale) {
        return format!("{} {}", n / scale, UNITS[unit]);
    }
    let value = n as f64 / scale as f64;
    match value {
        v if v < 10.0 => format!("{v:.2} {}", UNITS[unit]),
        v if v < 100.0 => format!("{v:.1} {}", UNITS[unit]),
        v => format!("{v:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1 KiB");
        assert_eq!(bytes(100_663_296), "96 MiB");
        assert_eq!(bytes(67_100_672), "64.0 MiB");
        assert_eq!(bytes(1536 << 20), "1.50 GiB");
        assert_eq!(bytes(3_145_728), "3 MiB");
        assert_eq!(bytes(3_150_000), "3.00 MiB");
        assert_eq!(bytes(122_683_392), "117 MiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
    }
}
