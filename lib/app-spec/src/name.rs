//! App and volume names, and absolute paths.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};

/// The longest app name: a hostname label (RFC 1123), and a unit instance
/// name well inside systemd's 255 characters.
pub const MAX_APP_NAME: usize = 63;
pub const MAX_VOLUME_NAME: usize = 64;

/// An app's name: `[a-z0-9][a-z0-9-]*`, at most 63 characters.
///
/// It becomes the instance of `cairn-app@<name>.service`, directory names
/// (`/var/lib/cairn/volumes/<name>`, the bundle and state directories), the
/// libcontainer id, the cgroup (`cairn-<name>.scope` or `/cairn/<name>`),
/// the journal's SyslogIdentifier and the container's default hostname.
/// systemd would take `[A-Za-z0-9:_.-]` in an instance and a directory
/// anything but `/`, but a hostname label is `[A-Za-z0-9-]` and case
/// insensitive, `.` would make it a domain name, and a leading `-` reads as
/// an option on a command line; lowercase letters, digits and `-` mean the
/// same thing everywhere and no two names differ in case only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: String| Err(Error::new(What::AppName, s, problem));
        let Some(first) = s.chars().next() else {
            return bad("it is empty".into());
        };
        if s.len() > MAX_APP_NAME {
            return bad(format!("it is {} characters long", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            let hint = if c.is_ascii_uppercase() {
                " (lowercase only)"
            } else {
                ""
            };
            return bad(format!("{c:?} is not allowed{hint}"));
        }
        if first == '-' {
            return bad("it starts with '-'".into());
        }
        Ok(AppName(s.to_string()))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A named volume: `[a-z0-9][a-z0-9_.-]*`, at most 64 characters; a
/// directory under `/var/lib/cairn/volumes/<app>/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VolumeName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: String| Err(Error::new(What::VolumeName, s, problem));
        let Some(first) = s.chars().next() else {
            return bad("it is empty".into());
        };
        if s.len() > MAX_VOLUME_NAME {
            return bad(format!("it is {} characters long", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
        {
            return bad(format!("{c:?} is not allowed"));
        }
        if !first.is_ascii_alphanumeric() {
            return bad(format!("it starts with {first:?}"));
        }
        Ok(VolumeName(s.to_string()))
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute path, host or container side: no `..` component, no `:`
/// (the volume separator) and no NUL. Kept normalized: `//a/./b/` is `/a/b`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbsPath(String);

impl AbsPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// A path known to be absolute and normalized, without `:` or NUL.
    pub(crate) fn from_clean(path: String) -> Self {
        debug_assert_eq!(path.parse::<AbsPath>().map(|p| p.0), Ok(path.clone()));
        AbsPath(path)
    }
}

impl FromStr for AbsPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: &str| Err(Error::new(What::Path, s, problem));
        if !s.starts_with('/') {
            return bad("it is not absolute");
        }
        if s.contains('\0') {
            return bad("it contains a NUL byte");
        }
        if s.contains(':') {
            return bad("it contains ':'");
        }
        let mut out = String::with_capacity(s.len());
        for c in s.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if c == ".." {
                return bad("it has a \"..\" component");
            }
            out.push('/');
            out.push_str(c);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(AbsPath(out))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AbsPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
