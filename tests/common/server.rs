//! [`Server`]: runs the real `ociregistry` binary as a child process.
//!
//! The child is started with
//! `serve --listen 127.0.0.1:0 --data-dir <root>/data --config-file <root>/config.yaml --log-level info` (or the
//! config's `log_level` filter).
//! A reader thread echoes every stderr line (prefixed with the generation and pid) to the test's
//! output and waits for `listening on http://ADDR` (timeout 20 s). The harness can stop the server
//! with SIGTERM (asserting a clean exit 0), kill it with SIGKILL and restart it on the same data
//! directory. Dropping a [`Server`] kills the child so no stray processes are left behind.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::upstream::TestUpstream;

/// How long to wait for the `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM'd server may take to exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The config file written for the server.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Registries (host:port) to contact over plain http.
    pub http_registries: Vec<String>,
    /// `tag_ttl` (humantime, e.g. "10m", "1s"); omitted when `None`.
    pub tag_ttl: Option<String>,
    /// `default_registry`; omitted when `None`.
    pub default_registry: Option<String>,
    /// Extra YAML lines appended verbatim.
    pub extra_yaml: String,
    /// The `--log-level` filter (`RUST_LOG` syntax); `info` when `None`. It must let the `listening on` line
    /// through.
    pub log_level: Option<String>,
}

impl ServerConfig {
    /// Config listing `upstream` with `scheme: http` and `tag_ttl: 10m`.
    pub fn for_upstream(upstream: &TestUpstream) -> ServerConfig {
        ServerConfig::for_hosts(&[upstream.host()])
    }

    pub fn for_hosts(hosts: &[String]) -> ServerConfig {
        ServerConfig {
            http_registries: hosts.to_vec(),
            tag_ttl: Some("10m".to_string()),
            ..ServerConfig::default()
        }
    }

    pub fn tag_ttl(mut self, ttl: &str) -> ServerConfig {
        self.tag_ttl = Some(ttl.to_string());
        self
    }

    pub fn default_registry(mut self, host: &str) -> ServerConfig {
        self.default_registry = Some(host.to_string());
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        if let Some(ttl) = &self.tag_ttl {
            y.push_str(&format!("tag_ttl: {ttl}\n"));
        }
        if let Some(d) = &self.default_registry {
            y.push_str(&format!("default_registry: \"{d}\"\n"));
        }
        if !self.http_registries.is_empty() {
            y.push_str("registries:\n");
            for host in &self.http_registries {
                y.push_str(&format!("  - name: \"{host}\"\n    scheme: http\n"));
            }
        }
        y.push_str(&self.extra_yaml);
        y
    }
}

/// A running (or stopped) `ociregistry serve` child process.
pub struct Server {
    root: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    generation: usize,
    log_level: String,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

struct Started {
    child: Child,
    addr: SocketAddr,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Writes `<root>/config.yaml` and starts the server with data dir `<root>/data`.
    pub async fn start(root: &Path, cfg: &ServerConfig) -> Server {
        let yaml = cfg.to_yaml();
        std::fs::write(root.join("config.yaml"), &yaml).expect("write config file");
        eprintln!("[harness] config.yaml:\n{yaml}");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_level = cfg.log_level.clone().unwrap_or_else(|| "info".into());
        let started = spawn_server(root.to_path_buf(), 1, &log_level, logs.clone()).await;
        Server {
            root: root.to_path_buf(),
            child: Some(started.child),
            addr: started.addr,
            generation: 1,
            log_level,
            logs,
            readers: started.readers,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Every stderr line of every generation so far (ANSI escapes removed).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until a log line satisfies `pred`: lines arrive through a pipe and a reader thread,
    /// a moment after the server wrote them.
    pub async fn wait_for_log(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.wait_for_logs(|logs| logs.iter().any(|l| pred(l)))
            .await
    }

    /// Waits (at most 5 s) until the log lines so far, taken together, satisfy `pred` (e.g. a count of lines).
    pub async fn wait_for_logs(&self, pred: impl Fn(&[String]) -> bool) -> bool {
        for _ in 0..250 {
            if pred(&self.logs()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGTERM, wait (at most [`SHUTDOWN_TIMEOUT`]) and assert exit code 0.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        let pid = child.id();
        eprintln!("[harness] SIGTERM -> ociregistry pid {pid}");
        // SAFETY: plain kill(2) on the pid of our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let status = tokio::task::spawn_blocking(move || wait_with_deadline(&mut child))
            .await
            .expect("waiter panicked");
        self.join_readers().await;
        match status {
            Some(status) => {
                eprintln!("[harness] ociregistry pid {pid} exited: {status}");
                assert!(
                    status.success(),
                    "ociregistry did not exit cleanly after SIGTERM: {status}"
                );
            }
            None => panic!(
                "ociregistry pid {pid} did not exit within {SHUTDOWN_TIMEOUT:?} after SIGTERM (killed)"
            ),
        }
    }

    /// SIGKILL and reap the child.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        let pid = child.id();
        eprintln!("[harness] SIGKILL -> ociregistry pid {pid}");
        tokio::task::spawn_blocking(move || {
            let _ = child.kill();
            let _ = child.wait();
        })
        .await
        .expect("killer panicked");
        self.join_readers().await;
    }

    /// Starts a new server process on the same config file and data dir (new port).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop() or kill9() the server first");
        self.generation += 1;
        let started = spawn_server(
            self.root.clone(),
            self.generation,
            &self.log_level,
            self.logs.clone(),
        )
        .await;
        self.child = Some(started.child);
        self.addr = started.addr;
        self.readers = started.readers;
    }

    async fn join_readers(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let _ = tokio::task::spawn_blocking(move || {
            for r in readers {
                let _ = r.join();
            }
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            eprintln!(
                "[harness] dropping Server: killing ociregistry pid {}",
                child.id()
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for the child to exit, killing it after [`SHUTDOWN_TIMEOUT`] (then returns `None`).
fn wait_with_deadline(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

async fn spawn_server(
    root: PathBuf,
    generation: usize,
    log_level: &str,
    logs: Arc<Mutex<Vec<String>>>,
) -> Started {
    let log_level = log_level.to_string();
    match tokio::task::spawn_blocking(move || {
        spawn_server_blocking(&root, generation, &log_level, logs)
    })
    .await
    {
        Ok(started) => started,
        Err(err) => match err.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(err) => panic!("server start task failed: {err}"),
        },
    }
}

fn spawn_server_blocking(
    root: &Path,
    generation: usize,
    log_level: &str,
    logs: Arc<Mutex<Vec<String>>>,
) -> Started {
    let data_dir = root.join("data");
    let config_file = root.join("config.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ociregistry"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--config-file")
        .arg(&config_file)
        .arg("--log-level")
        .arg(log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("spawn ociregistry");
    let pid = child.id();
    eprintln!("[harness] started ociregistry #{generation} pid {pid}: {cmd:?}");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let tag = format!("ociregistry#{generation} pid {pid}");
    let err_reader = {
        let tag = tag.clone();
        let logs = logs.clone();
        std::thread::spawn(move || echo_lines(stderr, &tag, logs, Some(tx)))
    };
    let out_reader =
        std::thread::spawn(move || echo_lines(stdout, &format!("{tag} stdout"), logs, None));
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(addr) => {
            eprintln!("[harness] ociregistry #{generation} pid {pid} listening on {addr}");
            Started {
                child,
                addr,
                readers: vec![err_reader, out_reader],
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ociregistry pid {pid} did not log `listening on http://..` within {STARTUP_TIMEOUT:?}");
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = wait_with_deadline(&mut child);
            let _ = err_reader.join();
            panic!("ociregistry pid {pid} exited before listening: {status:?}");
        }
    }
}

/// Echoes lines of `pipe` with eprintln (captured per test by libtest), records them in `logs`,
/// and sends the first `listening on http://ADDR` address on `tx`.
fn echo_lines(
    pipe: impl Read,
    tag: &str,
    logs: Arc<Mutex<Vec<String>>>,
    mut tx: Option<mpsc::Sender<SocketAddr>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let raw = String::from_utf8_lossy(&buf);
        let line = strip_ansi(raw.trim_end_matches(['\n', '\r']));
        eprintln!("[{tag}] {line}");
        let listening = tx.as_ref().and_then(|_| parse_listening(&line));
        // Recorded before the address is handed over: a test that saw the server start sees its line too.
        logs.lock().unwrap().push(line);
        if let Some(addr) = listening {
            let _ = tx.take().unwrap().send(addr);
        }
    }
}

/// Equivalent of regex `listening on https?://([0-9.:]+)`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    const NEEDLE: &str = "listening on http";
    let start = line.find(NEEDLE)? + NEEDLE.len();
    let start = start + line[start..].strip_prefix("s").map_or(0, |_| 1);
    let start = start + line[start..].strip_prefix("://").map(|_| 3)?;
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.trim_end_matches(['.', ':']).parse().ok()
}

/// Removes ANSI escape sequences (`ESC [ ... final`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
