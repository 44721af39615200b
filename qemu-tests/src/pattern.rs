//! What `Vm::wait_for` looks for in the console: a plain substring or a regex.

use anyhow::{Context, Result};
use std::fmt;

/// A console pattern, matched against one line at a time (the line as it is
/// so far, so prompts without a trailing newline match too).
#[derive(Clone, Debug)]
pub enum Pattern {
    /// Matches if the line contains this text.
    Substring(String),
    /// `regex-lite` syntax; `^`/`$` anchor at the line's start and end.
    Regex(regex_lite::Regex),
}

impl Pattern {
    pub fn regex(re: &str) -> Result<Pattern> {
        let r = regex_lite::Regex::new(re).with_context(|| format!("bad console regex {re:?}"))?;
        Ok(Pattern::Regex(r))
    }

    /// Byte range of the first match in `line` that starts at or after `from`.
    pub(crate) fn find_in(&self, line: &str, from: usize) -> Option<(usize, usize)> {
        if from > line.len() || !line.is_char_boundary(from) {
            return None;
        }
        match self {
            Pattern::Substring(s) => line[from..]
                .find(s.as_str())
                .map(|i| (from + i, from + i + s.len())),
            Pattern::Regex(r) => r.find_at(line, from).map(|m| (m.start(), m.end())),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Pattern {
        Pattern::Substring(s.to_string())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Pattern {
        Pattern::Substring(s)
    }
}

impl From<&Pattern> for Pattern {
    fn from(p: &Pattern) -> Pattern {
        p.clone()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Substring(s) => write!(f, "{s:?}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_and_regex_respect_the_start_offset() -> Result<()> {
        let p = Pattern::from("ab");
        assert_eq!(p.find_in("xabab", 0), Some((1, 3)));
        assert_eq!(p.find_in("xabab", 2), Some((3, 5)));
        assert_eq!(p.find_in("xabab", 4), None);
        let r = Pattern::regex(r"rc=(\d+)$")?;
        assert_eq!(r.find_in("a rc=12", 0), Some((2, 7)));
        // An anchored regex still sees the whole line when searching from an offset.
        let a = Pattern::regex("^ab")?;
        assert_eq!(a.find_in("abab", 1), None);
        assert!(Pattern::regex("(").is_err());
        Ok(())
    }
}
