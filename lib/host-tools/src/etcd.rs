//! A real etcd for a test: `/usr/bin/etcd` (Debian package etcd-server) on
//! free loopback ports with a temporary data directory, killed and removed
//! when the [`EtcdServer`] drops.
//!
//! Without etcd the test fails under `CAIRN_REQUIRE_IMAGE_TESTS=1` or
//! `CAIRN_REQUIRE_QEMU=1` (CI) and is skipped with `SKIP:` otherwise (the
//! crate's rule, [`crate::require`]).
//!
//! Readiness is judged without an etcd client (this crate has none): the
//! member's `/health` on a plain-http metrics listener says `"health":"true"`
//! once it has a leader and serves reads, and for a plain-http server a
//! range request through the JSON gateway on the client URL must answer 200.
//! A TLS server's client URL is left to the caller's own client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started etcd may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// Whether etcd is installed. Without it: a panic under CI
/// (`CAIRN_REQUIRE_IMAGE_TESTS=1` or `CAIRN_REQUIRE_QEMU=1`), else `SKIP:`
/// and false.
pub fn available() -> bool {
    if crate::which("etcd").is_none()
        && std::env::var_os("CAIRN_REQUIRE_QEMU").is_some_and(|v| v == "1")
    {
        panic!(
            "missing etcd (Debian package etcd-server) (CAIRN_REQUIRE_QEMU=1): run `cargo xtask setup`"
        );
    }
    crate::require(&[("etcd", "etcd-server")])
}

/// A loopback port that was free a moment ago (etcd binds it right after; a
/// lost race is retried by [`EtcdServer`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The server side of TLS with client certificates: etcd serves https with
/// `cert`/`key` and accepts clients whose certificate `ca` signed.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running single-member etcd.
pub struct EtcdServer {
    child: Child,
    /// The client URL (`http://127.0.0.1:<port>` or `https://…`).
    pub url: String,
    /// Plain-http `/health` and `/metrics`.
    pub metrics_url: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd on plain http, or returns `None` (after `SKIP:`) when it is
    /// not installed and the run does not require it.
    pub fn start() -> Option<EtcdServer> {
        available().then(|| Self::spawn(None))
    }

    /// etcd on https, checking client certificates against `tls.ca`.
    pub fn start_tls(tls: &ServerTls) -> Option<EtcdServer> {
        available().then(|| Self::spawn(Some(tls)))
    }

    fn spawn(tls: Option<&ServerTls>) -> EtcdServer {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_spawn(tls) {
                Ok(e) => return e,
                Err(why) => last = why,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_spawn(tls: Option<&ServerTls>) -> Result<EtcdServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (cp, pp, mp) = (free_port(), free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let metrics_url = format!("http://127.0.0.1:{mp}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(crate::path_of("etcd"));
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg(format!("--listen-metrics-urls={metrics_url}"))
            // A fast election: the single member leads within ~0.1 s.
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(t) = tls {
            cmd.arg(format!("--cert-file={}", t.cert.display()))
                .arg(format!("--key-file={}", t.key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd.spawn().map_err(|e| format!("cannot run etcd: {e}"))?;
        let mut etcd = EtcdServer {
            child,
            url,
            metrics_url,
            dir,
        };
        etcd.wait_ready(tls.is_none())?;
        Ok(etcd)
    }

    fn wait_ready(&mut self, plain: bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited ({status}): {}", self.log()));
            }
            let health = http(&self.metrics_url, "GET", "/health", "");
            let ready = match &health {
                Ok((200, body)) if body.contains("\"health\":\"true\"") => {
                    !plain
                        || http(&self.url, "POST", "/v3/kv/range", r#"{"key":"cmVhZHk="}"#)
                            .is_ok_and(|(status, _)| status == 200)
                }
                _ => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not ready after {} s (/health: {health:?}); log: {}",
                    READY_WITHIN.as_secs(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What etcd logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// The server's temporary directory (data and log), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id (for a test that stops etcd on purpose).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request to a plain-http `base` (`http://host:port`):
/// (status, body). Enough for readiness probes; not a client.
fn http(base: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let host = base.strip_prefix("http://").ok_or("not an http URL")?;
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    let timeout = Some(Duration::from_secs(2));
    s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    s.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                answer.chars().take(80).collect::<String>()
            )
        })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_is_gone_after_drop() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let (status, body) = http(&etcd.url, "POST", "/v3/kv/range", r#"{"key":"eA=="}"#).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"header\""), "{body}");
        let (dir, url) = (etcd.dir().to_path_buf(), etcd.url.clone());
        drop(etcd);
        assert!(!dir.exists());
        assert!(http(&url, "POST", "/v3/kv/range", "{}").is_err());
    }
}
