//! HTTP fetching with hard size caps, stall timeouts and Range resume.
//!
//! Nothing here trusts the server: every read is capped at the size the signed
//! metadata allows plus one byte (so "too long" is detected without reading an
//! endless stream), and callers verify hashes before using a byte.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: not found (HTTP 404)")]
    NotFound { url: String },
    #[error(
        "{url}: no data for {secs} s (stalled server or network); gave up after {attempts} attempts"
    )]
    Stalled {
        url: String,
        secs: u64,
        attempts: u32,
    },
    #[error("{url}: {problem}; gave up after {attempts} attempts")]
    Transport {
        url: String,
        problem: String,
        attempts: u32,
    },
    #[error("{url}: more than the {max} bytes the signed metadata allows (endless data refused)")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: bad Range response: {problem}")]
    BadRange { url: String, problem: String },
}

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// A read that gets no byte for this long fails (then is retried).
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per file, resuming with a Range request after a broken transfer.
    pub attempts: u32,
    /// Pause between attempts.
    pub retry_pause: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            attempts: 5,
            retry_pause: Duration::from_secs(2),
        }
    }
}

/// A repository base URL and a connection pool.
pub struct Http {
    agent: ureq::Agent,
    base: String,
    opts: HttpOptions,
    /// Body bytes received, including bytes later thrown away.
    received: AtomicU64,
}

enum Attempt {
    Done,
    /// Retry; the message says why.
    Broken(String, bool),
}

impl Http {
    pub fn new(base_url: &str, opts: HttpOptions) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.stall_timeout))
            .timeout_recv_response(Some(opts.stall_timeout))
            .user_agent(concat!("cairn-updated/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            base: base_url.trim_end_matches('/').to_string(),
            opts,
            received: AtomicU64::new(0),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// GETs `path`, at most `max` bytes. `Ok(None)` for 404 (used to find the end
    /// of the root chain).
    pub fn get_optional(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.get(path, max, None) {
            Ok(b) => Ok(Some(b)),
            Err(FetchError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GETs `path`: exactly `exact` bytes if given (resuming a broken transfer
    /// with Range), otherwise up to `max`.
    pub fn get(&self, path: &str, max: u64, exact: Option<u64>) -> Result<Vec<u8>, FetchError> {
        let mut buf = Vec::with_capacity(exact.unwrap_or(0).min(128 << 20) as usize);
        self.get_into(path, max, exact, &mut buf)?;
        Ok(buf)
    }

    /// [`Http::get`] into `buf` (cleared first), so a caller fetching many
    /// chunks reuses one allocation instead of faulting in fresh pages each time.
    pub fn get_into(
        &self,
        path: &str,
        max: u64,
        exact: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        let url = self.url(path);
        let max = exact.unwrap_or(max);
        buf.clear();
        let mut last = String::new();
        let mut stalled = false;
        for attempt in 1..=self.opts.attempts.max(1) {
            if attempt > 1 {
                std::thread::sleep(self.opts.retry_pause);
            }
            match self.attempt(&url, max, exact.is_some(), buf)? {
                Attempt::Done => return Ok(()),
                Attempt::Broken(why, timeout) => {
                    last = why;
                    stalled = timeout;
                }
            }
        }
        let attempts = self.opts.attempts.max(1);
        Err(if stalled {
            FetchError::Stalled {
                url,
                secs: self.opts.stall_timeout.as_secs(),
                attempts,
            }
        } else {
            FetchError::Transport {
                url,
                problem: last,
                attempts,
            }
        })
    }

    /// One request; appends to `buf`, asking only for the bytes still missing.
    fn attempt(
        &self,
        url: &str,
        max: u64,
        exact: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Attempt, FetchError> {
        let have = buf.len() as u64;
        let mut req = self.agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                let timeout = matches!(e, ureq::Error::Timeout(_));
                return Ok(Attempt::Broken(e.to_string(), timeout));
            }
        };
        let status = resp.status().as_u16();
        match status {
            200 => buf.clear(), // a server without Range support: start over
            206 if have > 0 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let start = cr
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(have) {
                    return Err(FetchError::BadRange {
                        url: url.into(),
                        problem: format!("asked for bytes {have}-, got Content-Range {cr:?}"),
                    });
                }
            }
            404 => return Err(FetchError::NotFound { url: url.into() }),
            // Transient server trouble: worth another attempt.
            500..=599 | 429 => {
                return Ok(Attempt::Broken(format!("HTTP status {status}"), false));
            }
            _ => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status,
                });
            }
        }
        let start = buf.len() as u64;
        // One byte more than allowed tells "too long" apart from "exactly right".
        let limit = (max + 1).saturating_sub(start);
        let mut reader = resp.body_mut().as_reader().take(limit);
        // Read straight into `buf` (no second copy of every byte). Its length
        // runs ahead of `filled` by up to one step, so each byte is zeroed once.
        let mut filled = buf.len();
        let outcome = loop {
            if filled == buf.len() {
                let room = (max + 1).saturating_sub(filled as u64).clamp(1, 1 << 20);
                buf.resize(filled + room as usize, 0);
            }
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break None,
                Ok(n) => {
                    filled += n;
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                    if filled as u64 > max {
                        buf.truncate(filled);
                        return Err(FetchError::TooLarge {
                            url: url.into(),
                            max,
                        });
                    }
                }
                Err(e) => {
                    let timeout = e.kind() == std::io::ErrorKind::TimedOut
                        || e.to_string().to_lowercase().contains("timeout");
                    break Some(Attempt::Broken(e.to_string(), timeout));
                }
            }
        };
        buf.truncate(filled);
        if let Some(broken) = outcome {
            return Ok(broken);
        }
        if exact && (buf.len() as u64) < max {
            // The server closed early: resume from here on the next attempt.
            return Ok(Attempt::Broken(
                format!("connection closed after {} of {max} bytes", buf.len()),
                false,
            ));
        }
        Ok(Attempt::Done)
    }
}
