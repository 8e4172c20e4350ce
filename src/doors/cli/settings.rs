//! `settings [KEY=VALUE…]`: the run-time settings (`GET /api/settings`), or some of
//! them changed (`PATCH /api/settings`). Keys and values are checked here first, so a
//! typo is bad usage (exit 2) with what was meant, not the service's refusal.

use serde_json::{json, Map, Value};

use super::args::SettingsArgs;
use super::client::Remote;
use super::{format, CliError};

/// The settings `PATCH /api/settings` changes, with what each takes.
const KEYS: [(&str, &str); 4] = [
    ("max_concurrent", "downloads at once"),
    ("speed_limit_bps", "bytes/s for all downloads, 0: no limit"),
    (
        "connections_per_download",
        "parallel connections of one download",
    ),
    ("max_retries", "retries before a download fails"),
];

pub async fn run(r: &Remote, a: SettingsArgs) -> Result<(), CliError> {
    let answer = if a.changes.is_empty() {
        r.get("/api/settings").await?
    } else {
        let mut patch = Map::new();
        for change in &a.changes {
            let (key, value) = parse(change)?;
            patch.insert(key.to_owned(), json!(value));
        }
        r.patch("/api/settings", Value::Object(patch)).await?
    };
    if a.json {
        println!("{answer}");
        return Ok(());
    }
    let width = KEYS.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, what) in KEYS {
        let value = &answer[key];
        let shown = match (key, value.as_u64()) {
            ("speed_limit_bps", Some(0)) => "0 (no limit)".to_owned(),
            ("speed_limit_bps", Some(n)) => format!("{n} ({})", format::speed(n)),
            _ => value.to_string(),
        };
        println!("{key:<width$}  {shown:<24}  {what}");
    }
    Ok(())
}

/// `KEY=VALUE` as a known key and a whole number (sizes may carry a binary unit:
/// `8MiB`, `512KiB`, `1GiB`).
fn parse(change: &str) -> Result<(&'static str, u64), CliError> {
    let usage = CliError::Usage;
    let (key, value) = change
        .split_once('=')
        .ok_or_else(|| usage(format!("{change:?}: give KEY=VALUE, e.g. max_concurrent=2")))?;
    let key = key.trim();
    let Some((known, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
        let names: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let hint = closest(key).map_or_else(String::new, |k| format!("did you mean {k}? "));
        return Err(usage(format!(
            "{key:?} is no setting; {hint}the settings are {}",
            names.join(", ")
        )));
    };
    let value = value.trim();
    let n = number(value).ok_or_else(|| {
        let unit = if *known == "speed_limit_bps" {
            " (a unit may follow: KiB, MiB, GiB)"
        } else {
            ""
        };
        usage(format!(
            "{known}={value}: {known} takes a whole number{unit}"
        ))
    })?;
    Ok((*known, n))
}

/// `123`, `8MiB`, `8 MiB`, `1.5GiB`: a whole number of bytes.
fn number(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    if scale == 1 {
        return digits.parse().ok();
    }
    let v: f64 = digits.parse().ok()?;
    let bytes = v * scale as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The known key a typo most likely meant: one that contains it or that it contains,
/// else the one with the most letters in common at the start.
fn closest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    if key.is_empty() {
        return None;
    }
    let common = |k: &str| {
        k.chars()
            .zip(key.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    KEYS.iter()
        .map(|(k, _)| *k)
        .find(|k| k.contains(key.as_str()) || key.contains(k))
        .or_else(|| {
            KEYS.iter()
                .map(|(k, _)| *k)
                .max_by_key(|k| common(k))
                .filter(|k| common(k) >= 3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_a_known_key_and_a_whole_number() {
        assert_eq!(parse("max_concurrent=2").unwrap(), ("max_concurrent", 2));
        assert_eq!(
            parse(" speed_limit_bps = 8MiB").unwrap(),
            ("speed_limit_bps", 8 << 20)
        );
        assert_eq!(parse("speed_limit_bps=1.5 GiB").unwrap().1, 3 << 29);
        assert_eq!(parse("speed_limit_bps=0").unwrap().1, 0);
        for bad in [
            "max_concurrent",
            "max_concurrent=two",
            "max_concurrent=-1",
            "max_concurrent=2x",
        ] {
            assert!(matches!(parse(bad), Err(CliError::Usage(_))), "{bad}");
        }
        match parse("max_concurent=2") {
            Err(CliError::Usage(m)) => assert!(m.contains("did you mean max_concurrent?"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse("speed=1") {
            Err(CliError::Usage(m)) => assert!(m.contains("did you mean speed_limit_bps?"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
