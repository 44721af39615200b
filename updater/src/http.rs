//! HTTP fetching with hard size caps, stall timeouts, a minimum transfer rate
//! and Range resume.
//!
//! Nothing here trusts the server: every read is capped at the size the signed
//! metadata allows plus one byte (so "too long" is detected without reading an
//! endless stream), a body must arrive at [`MinRate`] or better (so a server
//! sending one byte just before each read timeout cannot hold the update for
//! ever: TUF's slow-retrieval attack), and callers verify hashes before using a
//! byte.
//!
//! # TLS
//! With the `tls` feature (on by default) `https://` repositories are verified
//! against Mozilla's root certificates compiled in (webpki-roots), or, when the
//! host config names `[update] ca_file`, against the CA certificates of that PEM
//! bundle *instead*: a host pointed at a private mirror should not also accept
//! a certificate for it from any public CA. A redirect from `https://` to
//! `http://` is refused ([`FetchError::InsecureRedirect`]); any other redirect is
//! followed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    #[error(
        "{url}: {bytes} bytes in {secs:.1} s ({rate:.1} bytes/s), below the minimum of {min} bytes/s \
         over {window:.1} s (a slow or drip-feeding server or network); gave up after {attempts} attempts, \
         the next check resumes"
    )]
    TooSlow {
        url: String,
        bytes: u64,
        secs: f64,
        rate: f64,
        min: u64,
        window: f64,
        attempts: u32,
    },
    #[error(
        "{url}: redirected from https to plain http ({to}); refused: the repository is configured \
         as https, fix the redirect on the server or CDN"
    )]
    InsecureRedirect { url: String, to: String },
    #[error(
        "{url}: fetching it would take {what} over its limit of {max} bytes in total (endless data refused)"
    )]
    OverBudget {
        url: String,
        what: &'static str,
        max: u64,
    },
    #[error("[update] ca_file {}: {problem}", path.display())]
    CaFile { path: PathBuf, problem: String },
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

/// The slowest body transfer accepted: at least `bytes_per_sec` on average over
/// every `window` of one response (counted from its first body byte on).
///
/// The read timeout alone cannot stop a server that sends one byte every 29 s
/// (each read gets a byte before the 30 s stall timeout): that server would hold
/// a 4 MiB chunk for four years. With this rate a response fails at the first
/// read after a `window` in which it sent too little, so within `window` plus
/// one stall timeout; the transfer is then retried with a Range request like a
/// broken connection, and a failed update resumes at the next check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

impl Default for MinRate {
    /// 1 KiB/s over 60 s: far below any link an OS update is possible over
    /// (a 1 GiB image at 1 KiB/s takes 12 days), so a real slow link (GPRS,
    /// a congested satellite hop) is never cut, while a drip-feeder fails
    /// within about 90 s per attempt. The window spans TCP slow start and short
    /// outages that the stall timeout tolerates anyway.
    fn default() -> Self {
        MinRate {
            bytes_per_sec: 1024,
            window: Duration::from_secs(60),
        }
    }
}

/// A repository base URL and a connection pool.
pub struct Http {
    agent: ureq::Agent,
    base: String,
    opts: HttpOptions,
    min_rate: MinRate,
    /// Body bytes received, including bytes later thrown away.
    received: AtomicU64,
}

/// Why an attempt broke (the last one decides the error reported).
enum Why {
    Other,
    Stalled,
    TooSlow { bytes: u64, secs: f64 },
}

enum Attempt {
    Done,
    /// Retry; the message says why.
    Broken(String, Why),
}

/// Reads the CA certificates of a PEM bundle (`[update] ca_file`), with the
/// same rules as the fleet's etcd `ca_file`.
#[cfg(feature = "tls")]
fn load_ca_file(path: &Path) -> Result<ureq::tls::RootCerts, FetchError> {
    fleet_lock::ca_certs(path).map_err(|e| FetchError::CaFile {
        path: e.path,
        problem: e.problem,
    })
}

impl Http {
    /// A client for `base_url`; `https://` is verified against the public web
    /// PKI (Mozilla's roots, compiled in).
    pub fn new(base_url: &str, opts: HttpOptions) -> Http {
        Self::build(base_url, opts, ureq::Agent::config_builder())
    }

    /// [`Http::new`], trusting the CA certificates of the PEM bundle `ca_file`
    /// instead of the public roots when it is given (`[update] ca_file`).
    pub fn with_ca_file(
        base_url: &str,
        opts: HttpOptions,
        ca_file: Option<&Path>,
    ) -> Result<Http, FetchError> {
        let config = ureq::Agent::config_builder();
        let Some(path) = ca_file else {
            return Ok(Self::build(base_url, opts, config));
        };
        #[cfg(feature = "tls")]
        {
            let roots = load_ca_file(path)?;
            let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
            Ok(Self::build(base_url, opts, config.tls_config(tls)))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = config;
            Err(FetchError::CaFile {
                path: path.to_path_buf(),
                problem: "this cairn-updater was built without the `tls` feature".into(),
            })
        }
    }

    fn build(
        base_url: &str,
        opts: HttpOptions,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Http {
        let base = base_url.trim_end_matches('/').to_string();
        let config = config
            .http_status_as_error(false)
            // ureq then refuses any http:// URL, redirects included, before
            // connecting: an https repository never degrades to plain http.
            .https_only(base.starts_with("https://"))
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_send_request(Some(opts.stall_timeout))
            .timeout_per_read(Some(opts.stall_timeout))
            .timeout_recv_response(Some(opts.stall_timeout))
            .user_agent(concat!("cairn-updated/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            base,
            opts,
            min_rate: MinRate::default(),
            received: AtomicU64::new(0),
        }
    }

    /// Replaces the minimum transfer rate (tests use a short window).
    pub fn with_min_rate(mut self, min_rate: MinRate) -> Http {
        self.min_rate = min_rate;
        self
    }

    pub fn min_rate(&self) -> MinRate {
        self.min_rate
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
        self.fetch(path, max, exact, None, buf)
    }

    /// Bytes `[start, start + len)` of `path` into `buf` (cleared first), by
    /// a Range request, resumed like [`Http::get`]. A server that answers
    /// with the whole file (200) is refused: the caller wanted a few KiB.
    pub fn get_range(
        &self,
        path: &str,
        start: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        self.fetch(path, len, Some(len), Some(start), buf)
    }

    fn fetch(
        &self,
        path: &str,
        max: u64,
        exact: Option<u64>,
        base: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        let url = self.url(path);
        let max = exact.unwrap_or(max);
        buf.clear();
        let mut last = (String::new(), Why::Other);
        for attempt in 1..=self.opts.attempts.max(1) {
            if attempt > 1 {
                std::thread::sleep(self.opts.retry_pause);
            }
            match self.attempt(&url, max, exact.is_some(), base, buf)? {
                Attempt::Done => return Ok(()),
                Attempt::Broken(problem, why) => last = (problem, why),
            }
        }
        let attempts = self.opts.attempts.max(1);
        Err(match last {
            (_, Why::Stalled) => FetchError::Stalled {
                url,
                secs: self.opts.stall_timeout.as_secs(),
                attempts,
            },
            (_, Why::TooSlow { bytes, secs }) => FetchError::TooSlow {
                url,
                bytes,
                secs,
                rate: bytes as f64 / secs.max(f64::MIN_POSITIVE),
                min: self.min_rate.bytes_per_sec,
                window: self.min_rate.window.as_secs_f64(),
                attempts,
            },
            (problem, Why::Other) => FetchError::Transport {
                url,
                problem,
                attempts,
            },
        })
    }

    /// One request; appends to `buf`, asking only for the bytes still missing
    /// (of the `max` bytes from `base`, when a range was asked for).
    fn attempt(
        &self,
        url: &str,
        max: u64,
        exact: bool,
        base: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<Attempt, FetchError> {
        let have = buf.len() as u64;
        let mut req = self.agent.get(url);
        match base {
            Some(b) => {
                let last = (b + max).saturating_sub(1);
                req = req.header("Range", format!("bytes={}-{last}", b + have));
            }
            None if have > 0 => req = req.header("Range", format!("bytes={have}-")),
            None => {}
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            // Not retried: the server says so on every attempt.
            Err(ureq::Error::RequireHttpsOnly(to)) => {
                return Err(FetchError::InsecureRedirect {
                    url: url.into(),
                    to,
                });
            }
            Err(e) => {
                let why = if matches!(e, ureq::Error::Timeout(_)) {
                    Why::Stalled
                } else {
                    Why::Other
                };
                let mut problem = e.to_string();
                if problem.contains("certificate") {
                    problem += " (a repository behind a private CA needs [update] ca_file: \
                                the PEM bundle of that CA)";
                }
                return Ok(Attempt::Broken(problem, why));
            }
        };
        let status = resp.status().as_u16();
        match status {
            // The whole file for a range from 0 is still the bytes asked
            // for, if it is no longer (capped below); from elsewhere it is not.
            200 if base.is_some_and(|b| b > 0) => {
                return Err(FetchError::BadRange {
                    url: url.into(),
                    problem: "the server ignored the Range request (HTTP 200)".into(),
                });
            }
            200 => buf.clear(), // a server without Range support: start over
            206 if have > 0 || base.is_some() => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let start = cr
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                let from = base.unwrap_or(0) + have;
                if start != Some(from) {
                    return Err(FetchError::BadRange {
                        url: url.into(),
                        problem: format!("asked for bytes {from}-, got Content-Range {cr:?}"),
                    });
                }
            }
            404 => return Err(FetchError::NotFound { url: url.into() }),
            // Transient server trouble: worth another attempt.
            500..=599 | 429 => {
                return Ok(Attempt::Broken(format!("HTTP status {status}"), Why::Other));
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
        // The rate is measured over consecutive windows of this response.
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        let outcome = loop {
            if filled == buf.len() {
                let room = (max + 1).saturating_sub(filled as u64).clamp(1, 1 << 20);
                buf.resize(filled + room as usize, 0);
            }
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break None,
                Ok(n) => {
                    filled += n;
                    window_bytes += n as u64;
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                    if filled as u64 > max {
                        buf.truncate(filled);
                        return Err(FetchError::TooLarge {
                            url: url.into(),
                            max,
                        });
                    }
                    let elapsed = window_start.elapsed();
                    if elapsed >= self.min_rate.window {
                        let secs = elapsed.as_secs_f64();
                        if (window_bytes as f64) < self.min_rate.bytes_per_sec as f64 * secs {
                            let why = Why::TooSlow {
                                bytes: window_bytes,
                                secs,
                            };
                            break Some(Attempt::Broken(
                                format!("{window_bytes} bytes in {secs:.1} s"),
                                why,
                            ));
                        }
                        window_start = Instant::now();
                        window_bytes = 0;
                    }
                }
                Err(e) => {
                    let why = if e.kind() == std::io::ErrorKind::TimedOut
                        || e.to_string().to_lowercase().contains("timeout")
                    {
                        Why::Stalled
                    } else {
                        Why::Other
                    };
                    break Some(Attempt::Broken(e.to_string(), why));
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
                Why::Other,
            ));
        }
        Ok(Attempt::Done)
    }
}
