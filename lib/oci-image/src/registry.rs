//! A blocking client for the OCI distribution API v2 (pull, and push of small blobs
//! and manifests for signatures).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::time::Duration;

use ureq::Agent;
use ureq::http::Response;

use crate::Error;
use crate::auth::{Challenge, base64, parse_challenge, url_encode};
use crate::digest::{copy_verified, read_capped, sha256_digest};
use crate::manifest::{Descriptor, MAX_MANIFEST_SIZE};
use crate::reference::{Reference, is_loopback_host};

/// Username and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

/// Token responses are small JSON documents.
const MAX_TOKEN_RESPONSE: u64 = 1024 * 1024;
/// Error bodies are shown shortened.
const MAX_ERROR_BODY: u64 = 4096;

/// One repository on one registry.
pub struct Registry {
    agent: Agent,
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that last worked.
    authorization: RefCell<Option<String>>,
}

pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

impl Registry {
    /// `insecure_http` allows plain HTTP for any host; loopback hosts always use it.
    pub fn new(
        reference: &Reference,
        insecure_http: bool,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Registry {
        let scheme = if insecure_http || is_loopback_host(&reference.registry) {
            "http"
        } else {
            "https"
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("cairn-oci-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Registry {
            agent,
            base: format!("{scheme}://{}", reference.api_host()),
            repository: reference.repository.clone(),
            credentials,
            authorization: RefCell::new(None),
        }
    }

    fn url(&self, kind: &str, rest: &str) -> String {
        format!("{}/v2/{}/{kind}/{rest}", self.base, self.repository)
    }

    /// Sends a request, following Basic and Bearer challenges (at most twice:
    /// a push may need a token with a wider scope than the pull token had).
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<ureq::Body>, Error> {
        for _ in 0..3 {
            let auth = self.authorization.borrow().clone();
            let resp = self.send_once(method, url, headers, body, auth.as_deref())?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let header = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let new_auth = match parse_challenge(&header) {
                Some(Challenge::Basic) => match &self.credentials {
                    Some(c) => basic_header(c),
                    None => {
                        return Err(Error::Auth {
                            url: url.to_string(),
                            message: "the registry requires a username and password".to_string(),
                        });
                    }
                },
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => format!(
                    "Bearer {}",
                    self.fetch_token(&realm, service.as_deref(), scope.as_deref())?
                ),
                None => {
                    return Err(Error::Auth {
                        url: url.to_string(),
                        message: format!("401 with no usable challenge ({header:?})"),
                    });
                }
            };
            if auth.as_deref() == Some(new_auth.as_str()) {
                return Err(Error::Auth {
                    url: url.to_string(),
                    message: "the credentials were refused".to_string(),
                });
            }
            *self.authorization.borrow_mut() = Some(new_auth);
        }
        Err(Error::Auth {
            url: url.to_string(),
            message: "still unauthorized after authenticating".to_string(),
        })
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        auth: Option<&str>,
    ) -> Result<Response<ureq::Body>, Error> {
        let http_err = |e: ureq::Error| Error::Http {
            url: url.to_string(),
            message: e.to_string(),
        };
        macro_rules! with_headers {
            ($rb:expr) => {{
                let mut rb = $rb;
                for (k, v) in headers {
                    rb = rb.header(*k, *v);
                }
                if let Some(a) = auth {
                    rb = rb.header("Authorization", a);
                }
                rb
            }};
        }
        match method {
            "GET" => with_headers!(self.agent.get(url)).call().map_err(http_err),
            "HEAD" => with_headers!(self.agent.head(url)).call().map_err(http_err),
            "POST" => with_headers!(self.agent.post(url))
                .send(body.unwrap_or(&[]))
                .map_err(http_err),
            _ => with_headers!(self.agent.put(url))
                .send(body.unwrap_or(&[]))
                .map_err(http_err),
        }
    }

    /// The token endpoint flow: GET realm?service=..&scope=.. (Basic auth when we
    /// have credentials) → {"token": ..} or {"access_token": ..}.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, Error> {
        let mut url = realm.to_string();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for (k, v) in [("service", service), ("scope", scope)] {
            if let Some(v) = v {
                url.push(sep);
                url.push_str(k);
                url.push('=');
                url.push_str(&url_encode(v));
                sep = '&';
            }
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::Auth {
                url,
                message: "the token realm is not an http(s) URL".to_string(),
            });
        }
        let auth = self.credentials.as_ref().map(basic_header);
        let resp = self.send_once("GET", &url, &[], None, auth.as_deref())?;
        let status = resp.status().as_u16();
        let mut reader = resp.into_body().into_reader();
        let body = read_capped(&mut reader, MAX_TOKEN_RESPONSE, &url)?;
        if status != 200 {
            return Err(Error::Auth {
                url,
                message: format!("token endpoint answered HTTP {status}: {}", shorten(&body)),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Auth {
            url: url.clone(),
            message: format!("token response is not JSON: {e}"),
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::Auth {
                url,
                message: "token response has no token".to_string(),
            })
    }

    fn error_for(url: &str, resp: Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let mut reader = resp.into_body().into_reader();
        let mut body = Vec::new();
        let _ = (&mut reader).take(MAX_ERROR_BODY).read_to_end(&mut body);
        Error::Registry {
            url: url.to_string(),
            status,
            message: shorten(&body),
        }
    }

    /// GET a manifest by tag or digest; None if the registry has no such manifest.
    pub(crate) fn get_manifest(
        &self,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Fetched>, Error> {
        let url = self.url("manifests", reference);
        let resp = self.send("GET", &url, &[("Accept", accept)], None)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(Self::error_for(&url, resp)),
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut reader = resp.into_body().into_reader();
        let bytes = read_capped(&mut reader, MAX_MANIFEST_SIZE, &url)?;
        Ok(Some(Fetched {
            bytes,
            content_type,
        }))
    }

    /// Streams a blob to `dst`, verifying digest and size; never more than
    /// `desc.size` bytes are accepted whatever the server announces.
    pub(crate) fn get_blob(&self, desc: &Descriptor, dst: &mut dyn Write) -> Result<(), Error> {
        let url = self.url("blobs", &desc.digest);
        let resp = self.send("GET", &url, &[], None)?;
        if resp.status().as_u16() != 200 {
            return Err(Self::error_for(&url, resp));
        }
        let mut reader = resp.into_body().into_reader();
        copy_verified(&mut reader, dst, &desc.digest, desc.size, &url)
    }

    /// Uploads a small blob in one request (POST then PUT ?digest=); returns its descriptor.
    pub fn put_blob(&self, data: &[u8], media_type: &str) -> Result<Descriptor, Error> {
        let digest = sha256_digest(data);
        let url = self.url("blobs", "uploads/");
        let resp = self.send("POST", &url, &[("Content-Length", "0")], Some(&[]))?;
        if resp.status().as_u16() != 202 {
            return Err(Self::error_for(&url, resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Registry {
                url: url.clone(),
                status: 202,
                message: "upload started without a Location header".to_string(),
            })?
            .to_string();
        let mut put_url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(&url_encode(&digest));
        let resp = self.send(
            "PUT",
            &put_url,
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(Self::error_for(&put_url, resp));
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: data.len() as u64,
            platform: None,
            annotations: None,
        })
    }

    /// PUTs a manifest under `tag`.
    pub fn put_manifest(&self, tag: &str, bytes: &[u8], media_type: &str) -> Result<(), Error> {
        let url = self.url("manifests", tag);
        let resp = self.send("PUT", &url, &[("Content-Type", media_type)], Some(bytes))?;
        if resp.status().as_u16() != 201 {
            return Err(Self::error_for(&url, resp));
        }
        Ok(())
    }
}

fn basic_header(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64(format!("{}:{}", c.username, c.password).as_bytes())
    )
}

fn shorten(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    let mut out: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out.replace('\n', " ")
}
