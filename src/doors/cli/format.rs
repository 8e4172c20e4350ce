//! Numbers as people read them: sizes, speeds, durations.

/// `812 B`, `1.5 KiB`, `23.4 MiB`, `1.21 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if value < 10.0 => format!("{value:.2} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `3.2 MiB/s`
pub fn speed(bps: u64) -> String {
    format!("{}/s", bytes(bps))
}

/// `7s`, `2m05s`, `1h02m`; `?` while unknown.
pub fn eta(secs: Option<u64>) -> String {
    match secs {
        None => "?".into(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `42%` of `done` in `total`, `?` while the total is unknown.
pub fn percent(done: u64, total: Option<u64>) -> String {
    match total {
        Some(0) => "100%".into(),
        Some(t) => format!("{}%", (done as u128 * 100 / t as u128).min(100)),
        None => "?%".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_speeds_and_durations() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(25 * 1024 * 1024), "25.0 MiB");
        assert_eq!(speed(3 * 1024 * 1024), "3.00 MiB/s");
        assert_eq!(eta(Some(7)), "7s");
        assert_eq!(eta(Some(125)), "2m05s");
        assert_eq!(eta(Some(3720)), "1h02m");
        assert_eq!(eta(None), "?");
        assert_eq!(percent(1, Some(3)), "33%");
        assert_eq!(percent(5, None), "?%");
    }
}
