//! Image references: `[registry[:port]/]path[:tag][@sha256:<hex>]`, with Docker's defaults.

use std::fmt;

use crate::Error;

/// The registry Docker means when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/debian`, `org/app`, ...
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn bad(reference: &str, problem: impl Into<String>) -> Error {
    Error::Reference {
        reference: reference.to_string(),
        problem: problem.into(),
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn valid_path_component(c: &str) -> bool {
    // Distribution's grammar: lowercase alphanumerics separated by '.', '_', '__' or '-'s.
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.starts_with('_'))
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.is_empty() || s.len() > 1024 {
            return Err(bad(s, "empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !is_sha256_digest(d) {
                    return Err(bad(
                        s,
                        "the digest must be sha256: and 64 lowercase hex digits",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' is a tag; before it, it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(bad(s, format!("invalid tag {t:?}")));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if registry
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        {
            return Err(bad(s, format!("invalid registry host {registry:?}")));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if let Some(c) = repository.split('/').find(|c| !valid_path_component(c)) {
            return Err(bad(
                s,
                format!(
                    "invalid repository component {c:?} (lowercase letters, digits, '.', '_', '-')"
                ),
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`: what trust rules and signatures are about (no tag:
    /// a signature covers a digest, whatever tags point at it).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The host:port the API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The name an image is stored under: `registry/repo:tag`, or `registry/repo@digest`.
    pub fn store_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.name()),
            (None, Some(d)) => format!("{}@{d}", self.name()),
            (None, None) => format!("{}:{DEFAULT_TAG}", self.name()),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True for hosts where plain HTTP is allowed without an opt-in.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_table() {
        let d = format!("alpine@{D}");
        let dd = format!("127.0.0.1:5000/a/b:v1@{D}");
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
            ),
            (
                "alpine:3.19",
                "docker.io",
                "library/alpine",
                Some("3.19"),
                None,
            ),
            (
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
            ),
            (
                "index.docker.io/library/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
            ),
            ("user/app", "docker.io", "user/app", Some("latest"), None),
            (
                "ghcr.io/org/app:1.0",
                "ghcr.io",
                "org/app",
                Some("1.0"),
                None,
            ),
            ("localhost/app", "localhost", "app", Some("latest"), None),
            (
                "localhost:5000/app:x",
                "localhost:5000",
                "app",
                Some("x"),
                None,
            ),
            (
                "127.0.0.1:5000/cairn/hello",
                "127.0.0.1:5000",
                "cairn/hello",
                Some("latest"),
                None,
            ),
            (&d, "docker.io", "library/alpine", None, Some(D)),
            (&dd, "127.0.0.1:5000", "a/b", Some("v1"), Some(D)),
            ("[::1]:5000/x:y", "[::1]:5000", "x", Some("y"), None),
        ];
        for (input, reg, repo, tag, digest) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, *reg, "{input}");
            assert_eq!(r.repository, *repo, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.as_deref(), *digest, "{input}");
        }
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine@sha256:abc",
            "alpine@md5:0123",
            "a//b",
            "-a",
            "a:b:c",
            "evil host/x",
            "a/../b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_and_display() {
        let r = Reference::parse("alpine:3").unwrap();
        assert_eq!(r.name(), "docker.io/library/alpine");
        assert_eq!(r.store_name(), "docker.io/library/alpine:3");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_ref(), "3");
        let r = Reference::parse(&format!("localhost:1/x@{D}")).unwrap();
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.store_name(), format!("localhost:1/x@{D}"));
        assert_eq!(r.to_string(), format!("localhost:1/x@{D}"));
    }

    #[test]
    fn loopback() {
        for (h, want) in [
            ("127.0.0.1:5000", true),
            ("127.3.2.1", true),
            ("localhost", true),
            ("localhost:80", true),
            ("[::1]:5000", true),
            ("docker.io", false),
            ("10.0.0.1:5000", false),
            ("localhost.evil.com", false),
        ] {
            assert_eq!(is_loopback_host(h), want, "{h}");
        }
    }
}
