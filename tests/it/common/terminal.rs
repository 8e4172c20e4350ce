//! The terminal client as a user runs it: through a pipe, with `--json`, or in a
//! pseudo-terminal (python's stdlib `pty`, `pty_capture.py`) whose screen is captured
//! with the time each piece was drawn.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::binary::BIN;

/// What a finished client command left.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The client with `args`, in `cwd`, its environment cleaned of what would point it
/// elsewhere (`MM_SERVER`, `MM_TOKEN`, `HF_TOKEN`).
pub fn command(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("MM_SERVER")
        .env_remove("MM_TOKEN")
        .env_remove("HF_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Starts the client with stdout and stderr piped.
pub fn spawn(args: &[&str], cwd: &Path) -> Child {
    command(args, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn model-manager")
}

/// Waits for `child` (killed and a panic after `timeout`) and collects its output.
pub fn finish(mut child: Child, timeout: Duration) -> Run {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the client did not exit in {timeout:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the client to its exit through pipes, off the async runtime's thread.
pub async fn run(args: &[&str], cwd: &Path) -> Run {
    run_env(args, &[], cwd).await
}

/// [`run`] with `envs` set.
pub async fn run_env(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Run {
    let mut cmd = command(args, cwd);
    cmd.envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn model-manager");
    tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(60)))
        .await
        .expect("client thread")
}

/// One read from the pseudo-terminal: `t` seconds after the start.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub t: f64,
    pub data: String,
}

/// Runs the client in a pseudo-terminal (200 columns) to its exit; its status and
/// everything it drew, in order.
pub async fn run_in_pty(args: &[&str], cwd: &Path) -> (Option<i32>, Vec<Chunk>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/common/pty_capture.py"
    );
    let out = cwd.join(format!("pty-{}.jsonl", std::process::id()));
    let mut full = vec![out.to_str().expect("utf-8 path"), BIN];
    full.extend_from_slice(args);
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(&full)
        .current_dir(cwd)
        .env_remove("MM_SERVER")
        .env_remove("MM_TOKEN")
        .env_remove("HF_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("python3 (for the pty)");
    let run = tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(60)))
        .await
        .expect("pty thread");
    assert!(
        run.stderr.is_empty() || run.code.is_some(),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}: {}", run.stderr));
    let chunks = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a capture line");
            Chunk {
                t: v["t"].as_f64().expect("t"),
                data: v["data"].as_str().expect("data").to_owned(),
            }
        })
        .collect();
    (run.code, chunks)
}

/// `text` without its ANSI escape sequences (CSI `ESC [ … final`, and two-byte ones).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// A progress bar's line as it was drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct BarLine {
    pub t: f64,
    pub percent: u32,
    pub speed: String,
    pub eta: String,
    pub text: String,
}

/// Every drawing of the bar whose line starts with `name`: its percentage, speed and
/// ETA (`name [====>   ]  42%  1.00 MiB/2.00 MiB  512.0 KiB/s  ETA 2s`).
pub fn bar_lines(chunks: &[Chunk], name: &str) -> Vec<BarLine> {
    let mut lines = Vec::new();
    for chunk in chunks {
        for piece in strip_ansi(&chunk.data).split(['\r', '\n']) {
            let piece = piece.trim();
            if !piece.starts_with(name) {
                continue;
            }
            let Some(rest) = piece.split_once("] ").map(|(_, r)| r) else {
                continue;
            };
            let tokens: Vec<&str> = rest.split_whitespace().collect();
            let percent = tokens
                .first()
                .and_then(|p| p.strip_suffix('%'))
                .and_then(|p| p.parse().ok());
            let speed = tokens.iter().position(|t| t.ends_with("/s"));
            let eta = tokens.iter().position(|t| *t == "ETA");
            if let (Some(percent), Some(s), Some(e)) = (percent, speed, eta) {
                lines.push(BarLine {
                    t: chunk.t,
                    percent,
                    speed: format!("{} {}", tokens[s - 1], tokens[s]),
                    eta: tokens.get(e + 1).unwrap_or(&"").to_string(),
                    text: rest.to_owned(),
                });
            }
        }
    }
    lines
}
