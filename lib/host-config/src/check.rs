//! The toolkit every section's validation uses: errors that name the source
//! and the dotted key, and typed reads of TOML values.

use std::fmt;

use toml::{Table, Value};

/// A config error: where it came from, which key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// `fw_cfg opt/cairn/config`, `/oem/config.toml`, …
    pub origin: String,
    /// Dotted key path (`users[0].name`); empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Builds errors for one source.
pub(crate) struct Ctx<'a> {
    pub(crate) source: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.source.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn unknown_keys(
        &self,
        prefix: &str,
        t: &Table,
        known: &[&str],
    ) -> Result<(), ConfigError> {
        // BTreeMap order: the first unknown key alphabetically, so the
        // message is deterministic.
        match t.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                &join(prefix, k),
                format!("unknown key (known: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.err(key, format!("expected a string, found {}", kind(other)))),
        }
    }

    pub(crate) fn boolean(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match v {
            Value::Boolean(b) => Ok(*b),
            other => Err(self.err(
                key,
                format!("expected true or false, found {}", kind(other)),
            )),
        }
    }

    pub(crate) fn array<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Vec<Value>, ConfigError> {
        match v {
            Value::Array(a) => Ok(a),
            other => Err(self.err(key, format!("expected an array, found {}", kind(other)))),
        }
    }

    pub(crate) fn table<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Table, ConfigError> {
        match v {
            Value::Table(t) => Ok(t),
            other => Err(self.err(key, format!("expected a table, found {}", kind(other)))),
        }
    }

    pub(crate) fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        self.array(key, v)?
            .iter()
            .enumerate()
            .map(|(i, e)| self.string(&format!("{key}[{i}]"), e))
            .collect()
    }

    pub(crate) fn seconds(
        &self,
        key: &str,
        v: &Value,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Value::Integer(n) = v else {
            return Err(self.err(key, format!("expected an integer, found {}", kind(v))));
        };
        match u64::try_from(*n) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(key, format!("{n} is out of range {min}..={max}"))),
        }
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// 1-based line of a byte offset, for syntax errors.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Tests of every section: each config text is refused with one line that
/// names the source and contains every expected part (the key, the problem).
#[cfg(test)]
pub(crate) fn assert_refused(cases: &[(&str, &[&str])]) {
    for (text, wants) in cases {
        let e = match crate::HostConfig::parse(text, "t") {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!e.contains('\n'), "multi-line error for {text:?}: {e}");
        assert!(e.starts_with("t: "), "{e}");
        for w in *wants {
            assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
        }
    }
}
