//! A blocking client for the OCI distribution API v2 (pull, and push of small blobs
//! and manifests for signatures).
//!
//! # Where credentials go
//! The username and password are sent only over HTTPS: as Basic auth to the
//! registry when it asks for it, or to the token service (realm) the
//! registry names in a Bearer challenge, when both the registry and the
//! realm are HTTPS (the realm is the registry's own choice, made over an
//! authenticated channel; Docker Hub's is `auth.docker.io`, GitLab's is not
//! on the registry host either). Over plain HTTP (loopback and insecure
//! registries) pulls are anonymous: tokens are still fetched, without
//! credentials. An `Authorization` header (Basic or the token) goes only to
//! the origin it was made for; redirects are followed here, not by ureq, so
//! a redirect to another host (blob storage) never gets it, HTTPS is never
//! downgraded to HTTP by a redirect, and a 401 from any host but the
//! registry is never answered.

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
/// Redirects followed for one request (blob storage needs one or two).
const MAX_REDIRECTS: usize = 10;

/// The scheme, host and port of a URL: where a header is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub https: bool,
    /// Lowercased; IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The origin of an absolute http(s) URL; None for anything else, including
/// URLs with user info (never made here; a server sending one is not trusted
/// with a header).
pub(crate) fn origin_of(url: &str) -> Option<Origin> {
    // `get`, not indexing: a server's Location may have any UTF-8 there.
    let scheme_is = |s: &str| {
        url.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    let (https, rest) = if scheme_is("https://") {
        (true, &url[8..])
    } else if scheme_is("http://") {
        (false, &url[7..])
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if after.is_empty() => (host, default_port),
            None => return None,
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Origin {
        https,
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The absolute URL a `Location` header points at, seen from `base`.
pub(crate) fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if origin_of(location).is_some() {
        return Some(location.to_string());
    }
    let scheme_end = base.find("://")? + 3;
    let path_start = base[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(base.len(), |i| scheme_end + i);
    let resolved = if let Some(rest) = location.strip_prefix("//") {
        format!("{}{rest}", &base[..scheme_end])
    } else if location.starts_with('/') {
        format!("{}{location}", &base[..path_start])
    } else if location.is_empty()
        || location
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        // Another scheme (or nothing): not a place to fetch from.
        return None;
    } else {
        let path_end = base[path_start..]
            .find(['?', '#'])
            .map_or(base.len(), |i| path_start + i);
        let dir_end = base[path_start..path_end]
            .rfind('/')
            .map_or(path_start, |i| path_start + i + 1);
        if dir_end == path_start {
            format!("{}/{location}", &base[..path_start])
        } else {
            format!("{}{location}", &base[..dir_end])
        }
    };
    origin_of(&resolved).map(|_| resolved)
}

/// Where a redirect from `from` to `location` goes; Err (the reason) for
/// anything but an http(s) URL, and for a downgrade from HTTPS to HTTP.
pub(crate) fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let next = resolve_location(from, location)
        .ok_or_else(|| format!("redirect to {location:?}, which is not an http(s) URL"))?;
    let from_https = origin_of(from).is_some_and(|o| o.https);
    if from_https && origin_of(&next).is_some_and(|o| !o.https) {
        return Err(format!(
            "redirected from HTTPS to plain HTTP ({next}); refused: the registry or its storage is misconfigured"
        ));
    }
    Ok(next)
}

/// Whether the username and password may go to `target` (the registry, or
/// the token realm it named) for a registry at `registry`; Err says why not.
pub(crate) fn credentials_allowed(registry: &Origin, target: &Origin) -> Result<(), String> {
    if !registry.https {
        return Err(format!(
            "the registry {registry} is plain HTTP and credentials are only sent over HTTPS"
        ));
    }
    if !target.https {
        return Err(format!(
            "the registry's token service {target} is plain HTTP and credentials are only sent over HTTPS"
        ));
    }
    Ok(())
}

/// One repository on one registry.
pub struct Registry {
    agent: Agent,
    base: String,
    /// Where the registry's `Authorization` header may go.
    origin: Origin,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that last worked.
    authorization: RefCell<Option<String>>,
    /// Why the credentials were kept back, for the error if the anonymous
    /// attempt is refused.
    withheld: RefCell<Option<String>>,
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
            // Followed in `request`, which decides where headers go.
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("cairn-oci-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let base = format!("{scheme}://{}", reference.api_host());
        // A reference's host always parses (Reference checked it); the
        // fallback only keeps headers away from anything unexpected.
        let origin = origin_of(&base).unwrap_or(Origin {
            https: true,
            host: String::new(),
            port: 0,
        });
        Registry {
            agent,
            base,
            origin,
            repository: reference.repository.clone(),
            credentials,
            authorization: RefCell::new(None),
            withheld: RefCell::new(None),
        }
    }

    /// `message`, plus why the credentials were not sent if they were not.
    fn auth_error(&self, url: &str, message: &str) -> Error {
        let message = match self.withheld.borrow().as_deref() {
            Some(why) => format!(
                "{message}; the credentials were not sent: {why} (serve the registry and its token service over HTTPS)"
            ),
            None => message.to_string(),
        };
        Error::Auth {
            url: url.to_string(),
            message,
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
            let (resp, answered) = self.request(
                method,
                url,
                headers,
                body,
                auth.as_deref().map(|a| (a, &self.origin)),
            )?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            // Only the registry's own challenges are answered: a host it
            // redirected to (blob storage) asking for credentials gets
            // nothing, not even a token request made on its say-so.
            if origin_of(&answered).as_ref() != Some(&self.origin) {
                return Err(Error::Auth {
                    url: answered,
                    message: format!(
                        "asked for authentication after a redirect away from the registry {}; credentials and tokens are only sent to the registry",
                        self.origin
                    ),
                });
            }
            let header = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let new_auth = match parse_challenge(&header) {
                Some(Challenge::Basic) => match &self.credentials {
                    Some(c) => {
                        if let Err(why) = credentials_allowed(&self.origin, &self.origin) {
                            return Err(Error::Auth {
                                url: url.to_string(),
                                message: format!(
                                    "the registry asks for a username and password, and {why}; serve the registry over HTTPS"
                                ),
                            });
                        }
                        basic_header(c)
                    }
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
                return Err(self.auth_error(url, "the credentials were refused"));
            }
            *self.authorization.borrow_mut() = Some(new_auth);
        }
        Err(self.auth_error(url, "still unauthorized after authenticating"))
    }

    /// Sends a request and follows redirects of GET and HEAD. `auth` is the
    /// `Authorization` value and the one origin it may be sent to: a hop to
    /// any other origin goes without it. A redirect from HTTPS to plain HTTP
    /// is refused. Returns the last response and the URL that gave it.
    fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        auth: Option<(&str, &Origin)>,
    ) -> Result<(Response<ureq::Body>, String), Error> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let here = origin_of(&url).ok_or_else(|| Error::Http {
                url: url.clone(),
                message: "not an http(s) URL".to_string(),
            })?;
            let header = auth.filter(|(_, to)| **to == here).map(|(a, _)| a);
            let resp = self.send_once(method, &url, headers, body, header)?;
            let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect || !matches!(method, "GET" | "HEAD") {
                return Ok((resp, url));
            }
            let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Ok((resp, url));
            };
            let next = redirect_target(&url, location).map_err(|message| Error::Http {
                url: url.clone(),
                message,
            })?;
            url = next;
        }
        Err(Error::Http {
            url,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// One HTTP request, no redirect followed.
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
        let Some(realm_origin) = origin_of(&url) else {
            return Err(Error::Auth {
                url,
                message: "the token realm is not an http(s) URL".to_string(),
            });
        };
        // Without credentials (or when they may not go there) the token is
        // an anonymous one: enough for public images.
        let auth = self.credentials.as_ref().and_then(|c| {
            match credentials_allowed(&self.origin, &realm_origin) {
                Ok(()) => Some(basic_header(c)),
                Err(why) => {
                    *self.withheld.borrow_mut() = Some(why);
                    None
                }
            }
        });
        let (resp, _) = self.request(
            "GET",
            &url,
            &[],
            None,
            auth.as_deref().map(|a| (a, &realm_origin)),
        )?;
        let status = resp.status().as_u16();
        let mut reader = resp.into_body().into_reader();
        let body = read_capped(&mut reader, MAX_TOKEN_RESPONSE, &url)?;
        if status != 200 {
            return Err(self.auth_error(
                &url,
                &format!("token endpoint answered HTTP {status}: {}", shorten(&body)),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn o(https: bool, host: &str, port: u16) -> Origin {
        Origin {
            https,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn origin_table() {
        for (url, want) in [
            (
                "https://registry-1.docker.io/v2/",
                Some(o(true, "registry-1.docker.io", 443)),
            ),
            (
                "HTTP://Example.COM:5000",
                Some(o(false, "example.com", 5000)),
            ),
            (
                "http://127.0.0.1:8080?x=1",
                Some(o(false, "127.0.0.1", 8080)),
            ),
            ("https://[::1]:5000/v2/", Some(o(true, "::1", 5000))),
            ("https://[::1]/v2/", Some(o(true, "::1", 443))),
            // User info could make "https://registry@evil/" look like the registry.
            ("https://registry.example@evil.example/v2/", None),
            ("https://:443/", None),
            ("https://host:notaport/", None),
            ("ftp://host/", None),
            ("httpé://x/", None),
            ("ht€p://x/", None),
            ("/v2/x", None),
            ("", None),
        ] {
            assert_eq!(origin_of(url), want, "{url}");
        }
    }

    #[test]
    fn location_table() {
        let base = "https://reg.example/v2/app/blobs/sha256:ab?x=1";
        for (loc, want) in [
            (
                "https://cdn.example/b?sig=1",
                Some("https://cdn.example/b?sig=1"),
            ),
            ("//cdn.example/b", Some("https://cdn.example/b")),
            ("/v2/other", Some("https://reg.example/v2/other")),
            ("next", Some("https://reg.example/v2/app/blobs/next")),
            ("javascript:alert(1)", None),
            ("file:///etc/passwd", None),
            ("", None),
        ] {
            assert_eq!(resolve_location(base, loc).as_deref(), want, "{loc}");
        }
        assert_eq!(
            resolve_location("http://127.0.0.1:5000", "x").as_deref(),
            Some("http://127.0.0.1:5000/x")
        );
    }

    #[test]
    fn redirects_never_downgrade_to_http() {
        let blob = "https://reg.example/v2/app/blobs/sha256:ab";
        assert_eq!(
            redirect_target(blob, "https://cdn.example/x").unwrap(),
            "https://cdn.example/x"
        );
        let e = redirect_target(blob, "http://cdn.example/x").unwrap_err();
        assert!(e.contains("plain HTTP"), "{e}");
        assert!(redirect_target(blob, "ftp://cdn.example/x").is_err());
        // Plain HTTP to HTTPS is an upgrade; plain to plain stays as it was.
        let plain = "http://127.0.0.1:5000/v2/app/blobs/sha256:ab";
        assert!(redirect_target(plain, "https://cdn.example/x").is_ok());
        assert!(redirect_target(plain, "http://127.0.0.2:5001/x").is_ok());
    }

    #[test]
    fn credentials_only_over_https() {
        let registry = o(true, "registry-1.docker.io", 443);
        // The registry itself, and the HTTPS token service it names
        // (Docker Hub's is on another host).
        assert!(credentials_allowed(&registry, &registry).is_ok());
        assert!(credentials_allowed(&registry, &o(true, "auth.docker.io", 443)).is_ok());
        // A plain-HTTP realm, from an HTTPS registry or not.
        let e = credentials_allowed(&registry, &o(false, "auth.docker.io", 80)).unwrap_err();
        assert!(e.contains("http://auth.docker.io:80"), "{e}");
        // A plain-HTTP registry (loopback, insecure): never, even to an HTTPS
        // realm: the challenge naming it was not authenticated.
        let plain = o(false, "127.0.0.1", 5000);
        for target in [&plain, &o(true, "auth.example", 443)] {
            let e = credentials_allowed(&plain, target).unwrap_err();
            assert!(e.contains("plain HTTP"), "{e}");
        }
    }
}
