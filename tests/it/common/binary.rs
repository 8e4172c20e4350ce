//! Runs the real `model-manager` binary, for what only a process shows: start-up
//! errors, signals, crashes and restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_model-manager");

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Writes a config for a test under `dir` and returns its path.
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\n\n[storage]\ndata_dir = \"{}\"\ndownload_dir = \"{}\"\n\n{extra}\n",
        dir.join("data").display(),
        dir.join("downloads").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// An HTTP client whose requests give up after a minute: a service that hangs fails
/// the test that waits on it, instead of the whole suite.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// A running binary; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub base: String,
}

impl Proc {
    pub fn spawn(config: &Path, port: u16) -> Proc {
        let log = config.with_file_name(format!(
            "service-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(std::fs::File::create(log).expect("log file")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn model-manager");
        Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A fresh temp dir, a config in it with `extra` appended, and the binary started
    /// on a free port and healthy: what every process test begins with.
    pub async fn start(extra: &str) -> (tempfile::TempDir, PathBuf, u16, Proc) {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = write_config(dir.path(), port, extra);
        let mut proc = Proc::spawn(&config, port);
        proc.wait_healthy().await;
        (dir, config, port, proc)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until `/healthz` answers.
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", self.base);
        let child = &mut self.child;
        super::wait::eventually(Duration::from_secs(20), || {
            // A child that exited will never answer: say so at once.
            if let Ok(Some(status)) = child.try_wait() {
                panic!("model-manager exited during start-up: {status}");
            }
            let asked = client.get(&health).send();
            async move {
                match asked.await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!(
                        "model-manager did not become healthy: {}",
                        r.status()
                    )),
                    Err(e) => Err(format!("model-manager did not become healthy: {e}")),
                }
            }
        })
        .await
    }

    pub fn kill9(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
    }

    /// Waits for the process to exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        super::wait::eventually_blocking(timeout, || {
            self.child
                .try_wait()
                .expect("try_wait")
                .ok_or_else(|| "model-manager did not exit".to_owned())
        })
    }

    /// Adds a download; panics unless 201. Returns its id.
    pub async fn add(&self, body: Value) -> String {
        let (status, d) = self.post("/api/downloads", body).await;
        assert_eq!(status, 201, "{d}");
        d["id"].as_str().expect("id").to_owned()
    }

    /// Polls a download until `pred` holds; returns it (panics after `timeout`, or when it
    /// failed while waiting for something else).
    pub async fn wait_download(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        super::wait::eventually(timeout, || async {
            let d = self.get(&format!("/api/downloads/{id}")).await;
            if pred(&d) {
                return Ok(d);
            }
            assert!(d["state"] != "failed", "the download failed: {d}");
            Err(format!("timed out waiting on {d}"))
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        test_client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = test_client()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to its exit with `args` and `envs`; returns (status, stderr).
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("model-manager {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
