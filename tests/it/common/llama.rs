//! The real llama.cpp, as a test's client: its `-hf` download (the code behind
//! `llama-server -hf`, from PyPI's `xllamacpp`) run by `tests/it/llama/llama_hf.py`,
//! which then loads the model it resolved and generates a few tokens. And tiny llama
//! GGUFs for it to load, written by `tests/it/llama/tiny_llama.py` with the `gguf`
//! package.
//!
//! Each run is a `python3` process in a process group of its own, killed whole when it
//! outlives its timeout. It sees only the environment given here (no `HF_TOKEN`,
//! `LLAMA_CACHE` or `HF_HOME` of the machine): `MODEL_ENDPOINT` and `HF_HUB_CACHE`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a run of llama.cpp may take at most (the tiny model generates in
/// milliseconds; a failed file download is retried after 2 s and 4 s).
pub const TIMEOUT: Duration = Duration::from_secs(90);

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/llama");

/// What llama.cpp resolved, and what the model it loaded generated.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Every file of the cache's snapshots after the run, repo-relative and sorted:
    /// with a fresh cache, exactly the files llama.cpp fetched.
    pub paths: Vec<String>,
    /// The file llama.cpp loads (in the cache's `snapshots/<commit>/`).
    pub model: PathBuf,
    /// The `mmproj` file it fetched alongside, if any.
    pub mmproj: Option<PathBuf>,
    /// The text generated (the tiny model's random bytes), empty with `generate: false`.
    pub generated: String,
    /// Tokens generated: more than 0 when `generate`.
    pub tokens: u64,
    /// llama.cpp's log (stderr).
    pub log: String,
}

/// A run that failed: llama.cpp's exit status and log.
#[derive(Debug, Clone)]
pub struct Failed {
    pub status: Option<i32>,
    pub log: String,
}

/// One run of llama.cpp's `-hf`.
#[derive(Debug, Clone)]
pub struct Run {
    /// `MODEL_ENDPOINT` (e.g. `http://127.0.0.1:PORT/hf`); `None`: unset (only for
    /// `--offline`: else llama.cpp asks huggingface.co).
    pub endpoint: Option<String>,
    /// `HF_HUB_CACHE`.
    pub cache: PathBuf,
    /// `owner/name[:TAG]`, given as `-hf`.
    pub spec: String,
    /// More of llama.cpp's arguments (`--offline`, `-hft TOKEN`, `--no-mmproj`).
    pub args: Vec<String>,
    /// `HF_TOKEN`.
    pub hf_token: Option<String>,
    /// Load the model and generate (false: resolve and download only, e.g. for repos
    /// whose files are not real models).
    pub generate: bool,
}

impl Run {
    pub fn new(endpoint: Option<&str>, cache: &Path, spec: &str, args: &[&str]) -> Run {
        Run {
            endpoint: endpoint.map(str::to_owned),
            cache: cache.to_owned(),
            spec: spec.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            hf_token: None,
            generate: true,
        }
    }
}

/// Runs llama.cpp's `-hf spec extra_args` with `MODEL_ENDPOINT=endpoint` and
/// `HF_HUB_CACHE=cache_dir`, and panics (with llama.cpp's log) unless it resolved a
/// model that generated tokens.
pub async fn resolve(
    endpoint: Option<&str>,
    cache_dir: &Path,
    spec: &str,
    extra_args: &[&str],
) -> Resolved {
    let run = Run::new(endpoint, cache_dir, spec, extra_args);
    match try_run(run.clone()).await {
        Ok(r) => r,
        Err(f) => panic!(
            "llama.cpp -hf {spec} {extra_args:?} failed ({:?}):\n{}",
            f.status, f.log
        ),
    }
}

/// Runs llama.cpp on a blocking thread (a test's service runs on the test's own
/// thread, and must keep answering meanwhile).
pub async fn try_run(run: Run) -> Result<Resolved, Failed> {
    tokio::task::spawn_blocking(move || run_blocking(&run))
        .await
        .expect("join llama.cpp's runner")
}

/// [`try_run`] on this thread.
pub fn run_blocking(run: &Run) -> Result<Resolved, Failed> {
    let out = tempfile::tempdir().expect("temp dir");
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{DIR}/llama_hf.py"));
    if !run.generate {
        cmd.arg("--resolve-only");
    }
    cmd.arg("-hf").arg(&run.spec).args(&run.args);
    for var in [
        "MODEL_ENDPOINT",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "LLAMA_CACHE",
        "HF_HOME",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("LLAMA_ARG_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("HF_HUB_CACHE", &run.cache).env("NO_COLOR", "1");
    if let Some(e) = &run.endpoint {
        cmd.env("MODEL_ENDPOINT", e);
    }
    if let Some(t) = &run.hf_token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .process_group(0);
    let mut child = cmd.spawn().expect("python3 runs (install Python 3)");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for llama.cpp") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        !log.contains("ModuleNotFoundError"),
        "xllamacpp or gguf is missing: run `python3 -m pip install xllamacpp gguf` \
         (scripts/test.sh does): {log}"
    );
    let Some(status) = status else {
        return Err(Failed {
            status: None,
            log: format!("{log}\n(killed after {TIMEOUT:?})"),
        });
    };
    if !status.success() {
        return Err(Failed {
            status: status.code(),
            log,
        });
    }
    let text = std::fs::read_to_string(&stdout).unwrap_or_default();
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("llama_hf.py printed no JSON ({e}): {text}\n{log}"));
    let path = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(PathBuf::from);
    Ok(Resolved {
        paths: snapshot_files(&run.cache),
        model: path("model").unwrap_or_default(),
        mmproj: path("mmproj"),
        generated: v["text"].as_str().unwrap_or_default().to_owned(),
        tokens: v["tokens"].as_u64().unwrap_or(0),
        log,
    })
}

/// Kills the whole process group of `child` (python and anything it started).
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory
        // is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// The files of every repo's snapshots in an HF cache, relative to their snapshot
/// folder (`snapshots/<commit>/`), sorted.
pub fn snapshot_files(cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(repos) = std::fs::read_dir(cache) else {
        return out;
    };
    for repo in repos.flatten() {
        let Ok(snapshots) = std::fs::read_dir(repo.path().join("snapshots")) else {
            continue;
        };
        for snap in snapshots.flatten() {
            out.extend(super::service::tree(&snap.path()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A tiny llama GGUF (about 50 KiB) that llama.cpp loads and generates from in
/// milliseconds; other seeds give other bytes.
pub fn tiny_model(seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    let out = Command::new("python3")
        .arg(format!("{DIR}/tiny_llama.py"))
        .arg(&path)
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .expect("python3 runs (install Python 3)");
    assert!(
        out.status.success(),
        "tiny_llama.py failed (python3 -m pip install gguf): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).expect("read the tiny model")
}
