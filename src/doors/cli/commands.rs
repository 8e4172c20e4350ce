//! Every client command but `pull`: one request (or one per id) to the service, and
//! its answer as an aligned table, a line per download changed, or `--json`.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::args::{AddArgs, Command, FilesArgs, Ids, LsArgs, RmArgs, SearchArgs};
use super::client::{Dl, Remote};
use super::{format, table, CliError, Target};

pub async fn run(command: Command, target: &Target) -> Result<(), CliError> {
    let r = &target.remote;
    match command {
        Command::Serve | Command::Pull(_) => Ok(()),
        Command::Add(a) => add(r, a).await,
        Command::Ls(a) => ls(r, a).await,
        Command::Pause(ids) => control(r, ids, "pause").await,
        Command::Resume(ids) => control(r, ids, "resume").await,
        Command::Cancel(ids) => control(r, ids, "cancel").await,
        Command::Retry(ids) => control(r, ids, "retry").await,
        Command::Rm(a) => rm(r, a).await,
        Command::Search(a) => search(r, a).await,
        Command::Files(a) => files(r, a).await,
        Command::Library(a) => library(r, a.json).await,
        Command::Settings(a) => super::settings::run(r, a).await,
    }
}

fn query(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn dl(v: Value) -> Result<Dl, CliError> {
    serde_json::from_value(v).map_err(|e| CliError::Protocol(e.to_string()))
}

/// `dl_01J…  paused  file.gguf`: what a command changed.
fn line(d: &Dl) {
    println!("{}  {}  {}", d.id, d.state, d.path);
}

async fn add(r: &Remote, a: AddArgs) -> Result<(), CliError> {
    let mut body = json!({"url": a.url, "start_paused": a.paused});
    if let Some(name) = a.name {
        body["file_name"] = json!(name);
    }
    if let Some(sha) = a.sha256 {
        body["sha256"] = json!(sha);
    }
    let answer = r.post("/api/downloads", body).await?;
    if a.json {
        println!("{answer}");
    } else {
        let d = dl(answer)?;
        line(&d);
        if d.already {
            println!("(already here: nothing new was queued)");
        }
    }
    Ok(())
}

async fn ls(r: &Remote, a: LsArgs) -> Result<(), CliError> {
    let path = match &a.state {
        Some(s) => format!("/api/downloads?state={}", query(s)),
        None => "/api/downloads".to_owned(),
    };
    let answer = r.get(&path).await?;
    if a.json {
        println!("{}", answer["downloads"]);
        return Ok(());
    }
    let downloads: Vec<Dl> = serde_json::from_value(answer["downloads"].clone())
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    let rows: Vec<Vec<String>> = downloads
        .iter()
        .map(|d| {
            let live = d.state == "downloading";
            vec![
                d.id.clone(),
                d.state.clone(),
                format::percent(d.bytes_done, d.bytes_total),
                d.bytes_total.map_or_else(|| "?".into(), format::bytes),
                if live {
                    format::speed(d.speed_bps)
                } else {
                    String::new()
                },
                if live {
                    format::eta(d.eta_secs)
                } else {
                    String::new()
                },
                // Why it failed (or retries): the kind, the message is in `--json`.
                d.error
                    .as_ref()
                    .filter(|_| matches!(d.state.as_str(), "failed" | "retrying"))
                    .map_or_else(String::new, |e| e.kind.clone()),
                d.path.clone(),
            ]
        })
        .collect();
    table::print(
        &[
            "ID", "STATE", "DONE", "SIZE", "SPEED", "ETA", "ERROR", "PATH",
        ],
        &[2, 3, 4, 5],
        &rows,
    );
    Ok(())
}

/// `pause|resume|cancel|retry ID…`: each id on its own; one that fails is reported and
/// the others still go (exit 1 at the end).
async fn control(r: &Remote, ids: Ids, action: &str) -> Result<(), CliError> {
    let (resolved, mut failed) = resolve_each(r, &ids.ids).await?;
    for id in resolved {
        let path = format!("/api/downloads/{}/{action}", query(&id));
        match r.post(&path, json!({})).await {
            Ok(answer) if ids.json => println!("{answer}"),
            Ok(answer) => line(&dl(answer)?),
            Err(e @ CliError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("model-manager: {id}: {e}");
            }
        }
    }
    done(failed)
}

/// The downloads `given` names (whole ids or prefixes), in order; one that names none
/// or several is told on stderr and counted as failed (the others still go).
async fn resolve_each(r: &Remote, given: &[String]) -> Result<(Vec<String>, usize), CliError> {
    let mut failed = 0;
    let mut resolved = Vec::with_capacity(given.len());
    for (asked, id) in given.iter().zip(super::ids::resolve(r, given).await?) {
        match id {
            Ok(id) => resolved.push(id),
            Err(e) => {
                failed += 1;
                eprintln!("model-manager: {asked}: {e}");
            }
        }
    }
    Ok((resolved, failed))
}

fn done(failed: usize) -> Result<(), CliError> {
    match failed {
        0 => Ok(()),
        n => Err(CliError::Failed(format!("{n} failed"))),
    }
}

async fn rm(r: &Remote, a: RmArgs) -> Result<(), CliError> {
    let (resolved, mut failed) = resolve_each(r, &a.ids).await?;
    for id in resolved {
        let path = format!(
            "/api/downloads/{}?delete_file={}",
            query(&id),
            a.delete_file
        );
        match r.delete(&path).await {
            Ok(_) => println!("{id}  removed"),
            Err(e @ CliError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("model-manager: {id}: {e}");
            }
        }
    }
    done(failed)
}

async fn search(r: &Remote, a: SearchArgs) -> Result<(), CliError> {
    let path = format!("/api/hub/search?q={}&limit={}", query(&a.query), a.limit);
    let answer = r.get(&path).await?;
    if a.json {
        println!("{}", answer["models"]);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list(&answer["models"])
        .map(|m| {
            vec![
                text(&m["id"]),
                text(&m["downloads"]),
                text(&m["likes"]),
                if m["gated"] == true { "gated" } else { "" }.to_owned(),
                text(&m["last_modified"]).chars().take(10).collect(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no model on the Hub matches {:?}", a.query);
        return Ok(());
    }
    table::print(
        &["MODEL", "DOWNLOADS", "LIKES", "GATED", "MODIFIED"],
        &[1, 2],
        &rows,
    );
    Ok(())
}

async fn files(r: &Remote, a: FilesArgs) -> Result<(), CliError> {
    crate::hub::validate_repo(&a.repo).map_err(CliError::Usage)?;
    let path = format!(
        "/api/hub/models/{}/files?revision={}",
        a.repo,
        query(&a.revision)
    );
    let answer = r.get(&path).await?;
    if a.json {
        println!("{answer}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list(&answer["quantizations"])
        .map(|q| {
            let files: Vec<String> = list(&q["files"]).map(text).collect();
            // A file no tag reaches, picked without one, has no name.
            let name = match text(&q["name"]) {
                n if n.is_empty() => "(default)".to_owned(),
                n if q["default"] == true => format!("{n} (default)"),
                n => n,
            };
            vec![
                name,
                format::bytes(q["size"].as_u64().unwrap_or(0)),
                files.len().to_string(),
                files.join(" "),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("{} has no quantized GGUF files", a.repo);
        return Ok(());
    }
    table::print(&["QUANTIZATION", "SIZE", "FILES", "NAMES"], &[1, 2], &rows);
    Ok(())
}

async fn library(r: &Remote, json: bool) -> Result<(), CliError> {
    let answer = r.get("/api/library").await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list(&answer["files"])
        .map(|f| {
            vec![
                text(&f["path"]),
                format::bytes(f["size"].as_u64().unwrap_or(0)),
                text(&f["quantization"]),
                text(&f["gguf"]["architecture"]),
                text(&f["repo"]),
            ]
        })
        .collect();
    table::print(&["PATH", "SIZE", "QUANT", "ARCH", "REPO"], &[1], &rows);
    print_run_commands(&answer["files"]);
    Ok(())
}

/// Each file's `run` commands, under its path, after the table (too wide for a column).
fn print_run_commands(files: &Value) {
    let mut header = false;
    for f in list(files) {
        let Some(run) = f["run"].as_object().filter(|r| !r.is_empty()) else {
            continue;
        };
        if !header {
            println!("\nRUN");
            header = true;
        }
        println!("{}", text(&f["path"]));
        let width = run.keys().map(String::len).max().unwrap_or(0);
        for (runtime, command) in run {
            println!("  {runtime:<width$}  {}", text(command));
        }
    }
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON value as a cell: strings bare, null empty.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
