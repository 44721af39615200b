//! Environment variables and users.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};

/// `NAME=VALUE`: NAME is `[A-Za-z_][A-Za-z0-9_]*` (the portable shell
/// name), VALUE anything but NUL, empty included.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvVar {
    name: String,
    value: String,
}

fn is_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl EnvVar {
    pub fn new(name: &str, value: &str) -> Result<Self, Error> {
        let bad = |problem: String| Err(Error::new(What::Env, &format!("{name}={value}"), problem));
        if !is_env_name(name) {
            return bad(format!("{name:?} is not a valid variable name"));
        }
        if value.contains('\0') {
            return bad("the value contains a NUL byte".into());
        }
        Ok(EnvVar {
            name: name.to_string(),
            value: value.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for EnvVar {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('=') {
            Some((name, value)) => Self::new(name, value),
            None => Err(Error::new(What::Env, s, "it has no '='")),
        }
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

const MAX_USER_PART: usize = 32;

/// `user[:group]`: each a name or a number, as cairn-run resolves them in
/// the image's /etc/passwd and /etc/group (a name means nothing on the
/// host). A part is at most 32 of `[A-Za-z0-9_.-]` and does not start with
/// `-`; a number is a uid or gid below 4294967295 (which is -1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    user: String,
    group: Option<String>,
}

impl User {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Both parts are numbers (`1000` or `1000:1000`): an owner the host
    /// understands too.
    pub fn is_numeric(&self) -> bool {
        let num = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        num(&self.user) && self.group.as_deref().is_none_or(num)
    }
}

fn check_user_part(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("a part is empty".into());
    }
    if p.len() > MAX_USER_PART {
        return Err(format!("{p:?} is longer than {MAX_USER_PART}"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("{c:?} is not allowed"));
    }
    if p.starts_with('-') {
        return Err(format!("{p:?} starts with '-'"));
    }
    if p.bytes().all(|b| b.is_ascii_digit()) && !p.parse::<u32>().is_ok_and(|n| n != u32::MAX) {
        return Err(format!("{p} is not a valid id"));
    }
    Ok(())
}

impl FromStr for User {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        check_user_part(user)
            .and_then(|()| group.map_or(Ok(()), check_user_part))
            .map_err(|p| Error::new(What::User, s, p))?;
        Ok(User {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
}
