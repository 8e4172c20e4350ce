//! Download ids as the terminal takes them: whole, or any unambiguous start of one (as
//! git and docker take a commit's or a container's), with or without the `dl_`, in any
//! case (ULIDs are written in capitals, typed in either).

use serde_json::Value;

use super::client::Remote;
use super::CliError;

/// Candidates an ambiguous prefix lists.
const SHOWN: usize = 10;
/// `dl_` and a ULID.
const FULL_LEN: usize = 29;

/// Each id given, as the whole id of the one download it names (or why none): one
/// list of the downloads for them all, and none when every one is already whole.
pub async fn resolve(
    r: &Remote,
    given: &[String],
) -> Result<Vec<Result<String, CliError>>, CliError> {
    if given
        .iter()
        .all(|g| g.len() == FULL_LEN && g.starts_with("dl_"))
    {
        return Ok(given.iter().map(|g| Ok(g.clone())).collect());
    }
    let answer = r.get("/api/downloads").await?;
    let ids: Vec<String> = answer["downloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d: &Value| d["id"].as_str().map(str::to_owned))
        .collect();
    Ok(given.iter().map(|g| pick(&ids, g)).collect())
}

/// The one id of `ids` that `given` names: itself, or the only one it starts.
pub fn pick(ids: &[String], given: &str) -> Result<String, CliError> {
    let want = given.trim();
    if ids.iter().any(|i| i == want) {
        return Ok(want.to_owned());
    }
    let bare = |s: &str| s.strip_prefix("dl_").unwrap_or(s).to_ascii_uppercase();
    let start = bare(want);
    if start.is_empty() {
        return Err(CliError::Usage(format!(
            "{want:?} names no download: give an id or the start of one"
        )));
    }
    let found: Vec<&String> = ids.iter().filter(|i| bare(i).starts_with(&start)).collect();
    match found.as_slice() {
        [] => Err(CliError::Api {
            code: "not_found".into(),
            message: format!("no download has an id starting with {want}"),
        }),
        [one] => Ok((*one).clone()),
        many => {
            let shown: Vec<&str> = many.iter().take(SHOWN).map(|s| s.as_str()).collect();
            let more = match many.len().saturating_sub(SHOWN) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            Err(CliError::Api {
                code: "ambiguous".into(),
                message: format!(
                    "{want} is the start of {} ids: {}{more}; give more of it",
                    many.len(),
                    shown.join(", ")
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_names_the_one_id_it_starts_or_says_which_it_starts() {
        let ids: Vec<String> = [
            "dl_01M975N37E0000000000000000",
            "dl_01M975N37F0000000000000000",
            "dl_01ABCDEFGH0000000000000000",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(pick(&ids, "dl_01A").unwrap(), ids[2]);
        assert_eq!(pick(&ids, "01abc").unwrap(), ids[2]);
        assert_eq!(pick(&ids, "dl_01M975N37E").unwrap(), ids[0]);
        assert_eq!(pick(&ids, &ids[1]).unwrap(), ids[1]);
        match pick(&ids, "dl_01M9") {
            Err(CliError::Api { code, message }) => {
                assert_eq!(code, "ambiguous");
                assert!(
                    message.contains(&ids[0]) && message.contains(&ids[1]),
                    "{message}"
                );
                assert!(!message.contains(&ids[2]), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(pick(&ids, "dl_01Z"), Err(CliError::Api { code, .. }) if code == "not_found")
        );
        assert!(matches!(pick(&ids, "dl_"), Err(CliError::Usage(_))));
        assert!(matches!(pick(&ids, ""), Err(CliError::Usage(_))));
        // Not a wildcard, not a path: a prefix is matched as text.
        assert!(pick(&ids, "../dl_01A").is_err());
    }
}
