//! The HTTP client of the network sources: short timeouts, retries with
//! backoff within a deadline, bodies capped at [`MAX_CONFIG_BYTES`].

use std::time::{Duration, Instant};

use super::{MAX_CONFIG_BYTES, Timing};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Post,
}

/// One request.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str, headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
        Request {
            method: Method::Get,
            url,
            headers,
            body: None,
        }
    }
}

/// An answer that is not retried: any status but 5xx and 429.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Failure {
    /// Worth another attempt (no answer, a timeout, 5xx, 429).
    Retry(String),
    /// Would fail the same way again.
    Fatal(String),
}

pub(crate) struct Client {
    agent: ureq::Agent,
    request_timeout: Duration,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl Client {
    fn build(
        connect: Duration,
        request: Duration,
        https_only: bool,
        max_redirects: u32,
        timing: &Timing,
    ) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Metadata services must be reached directly, never through a
            // proxy from the environment; a boot has none to use anyway.
            .proxy(None)
            // An https URL never degrades to http through a redirect.
            .https_only(https_only)
            .max_redirects(max_redirects)
            .timeout_connect(Some(connect))
            .user_agent(concat!("cairn-config/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.new_agent(),
            request_timeout: request,
            first_backoff: timing.first_backoff,
            max_backoff: timing.max_backoff,
        }
    }

    /// For link-local metadata services (and Azure's WireServer): they do
    /// not redirect, so no redirect is followed.
    pub fn link_local(t: &Timing) -> Client {
        Self::build(t.link_local_connect, t.link_local_request, false, 0, t)
    }

    /// For the command-line URL.
    pub fn for_url(t: &Timing, url: &str) -> Client {
        Self::build(
            t.url_connect,
            t.url_request,
            url.starts_with("https://"),
            5,
            t,
        )
    }

    /// Sends `req` until it gets an answer that is not 5xx or 429, or the
    /// deadline passes.
    pub fn send(&self, req: &Request, deadline: Instant) -> Result<Answer, String> {
        let start = Instant::now();
        let mut backoff = self.first_backoff;
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: no time left", req.url));
            }
            attempts += 1;
            let problem = match self.once(req, self.request_timeout.min(left)) {
                Ok(a) => return Ok(a),
                Err(Failure::Fatal(e)) => return Err(format!("{}: {e}", req.url)),
                Err(Failure::Retry(e)) => e,
            };
            if deadline.saturating_duration_since(Instant::now()) <= backoff {
                return Err(format!(
                    "{}: {problem} ({attempts} attempt{} in {:.1} s)",
                    req.url,
                    if attempts == 1 { "" } else { "s" },
                    start.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    fn once(&self, req: &Request, timeout: Duration) -> Result<Answer, Failure> {
        let result = match req.method {
            Method::Get => {
                let mut b = self.agent.get(req.url);
                for (k, v) in req.headers {
                    b = b.header(*k, *v);
                }
                b.config().timeout_global(Some(timeout)).build().call()
            }
            Method::Put | Method::Post => {
                let mut b = if req.method == Method::Put {
                    self.agent.put(req.url)
                } else {
                    self.agent.post(req.url)
                };
                for (k, v) in req.headers {
                    b = b.header(*k, *v);
                }
                let b = b.config().timeout_global(Some(timeout)).build();
                match req.body {
                    Some(body) => b.send(body),
                    None => b.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(classify)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if status >= 500 || status == 429 {
            return Err(Failure::Retry(format!("HTTP status {status}")));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_CONFIG_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Failure::Fatal(format!(
                    "the answer is larger than {MAX_CONFIG_BYTES} bytes"
                )),
                e => classify(e),
            })?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(t) => Failure::Retry(format!("timed out ({t})")),
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Failure::Retry(e.to_string()),
        e => Failure::Fatal(e.to_string()),
    }
}
