//! The etcd key layout (pure): names are checked here before they become
//! part of a key, so no name can reach into another group's keys.

use crate::error::InvalidName;
use crate::outcome::Outcome;

/// Every key of this crate starts with this.
pub const ROOT: &str = "cairn/fleet/";

/// The longest group, host id or release version accepted.
pub const MAX_NAME_LEN: usize = 128;

/// A group name as FleetLock defines it: `^[a-zA-Z0-9.-]+$`.
pub fn validate_group(group: &str) -> Result<(), InvalidName> {
    check(
        "group",
        group,
        |c| c.is_ascii_alphanumeric() || c == '.' || c == '-',
        "letters, digits, '.' and '-' (FleetLock's ^[a-zA-Z0-9.-]+$)",
    )
}

/// A host id as a key part: letters, digits and `._:@-`. The node id of
/// [`crate::node_id()`] (32 hex digits) always passes.
pub fn validate_id(id: &str) -> Result<(), InvalidName> {
    check(
        "host id",
        id,
        |c| c.is_ascii_alphanumeric() || "._:@-".contains(c),
        "letters, digits and '.', '_', ':', '@', '-'",
    )
}

/// A release version as a key part: letters, digits, `.`, `-` and `+`
/// (every version of `release-manifest` passes).
pub fn validate_version(version: &str) -> Result<(), InvalidName> {
    check(
        "release version",
        version,
        |c| c.is_ascii_alphanumeric() || ".-+".contains(c),
        "letters, digits, '.', '-' and '+'",
    )
}

fn check(
    what: &'static str,
    value: &str,
    allowed: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), InvalidName> {
    let problem = if value.is_empty() {
        Some("it is empty".to_string())
    } else if value.len() > MAX_NAME_LEN {
        Some(format!("it is longer than {MAX_NAME_LEN} bytes"))
    } else {
        value
            .chars()
            .find(|c| !allowed(*c))
            .map(|c| format!("{c:?} is not allowed"))
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(InvalidName {
            what,
            value: value.chars().take(MAX_NAME_LEN + 8).collect(),
            problem,
            rule,
        }),
    }
}

/// The keys of one group. Built only from a valid group name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKeys {
    prefix: String,
}

impl GroupKeys {
    pub fn new(group: &str) -> Result<GroupKeys, InvalidName> {
        validate_group(group)?;
        Ok(GroupKeys {
            prefix: format!("{ROOT}{group}/"),
        })
    }

    /// `cairn/fleet/<group>/`
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `cairn/fleet/<group>/max`: the number of slots, decimal.
    pub fn max(&self) -> String {
        format!("{}max", self.prefix)
    }

    /// `cairn/fleet/<group>/semaphore`: the guard whose mod revision orders
    /// every slot taken.
    pub fn guard(&self) -> String {
        format!("{}semaphore", self.prefix)
    }

    /// `cairn/fleet/<group>/holders/`
    pub fn holders(&self) -> String {
        format!("{}holders/", self.prefix)
    }

    /// `cairn/fleet/<group>/holders/<id>` (`id` checked by the caller).
    pub fn holder(&self, id: &str) -> String {
        format!("{}holders/{id}", self.prefix)
    }

    /// `cairn/fleet/<group>/releases/<version>/`
    pub fn release(&self, version: &str) -> String {
        format!("{}releases/{version}/", self.prefix)
    }

    /// `cairn/fleet/<group>/releases/<version>/<id>`
    pub fn outcome(&self, version: &str, id: &str) -> String {
        format!("{}releases/{version}/{id}", self.prefix)
    }

    /// `cairn/fleet/<group>/outcomes/<version>/`: the release's records
    /// again, grouped by outcome, so that etcd can count each outcome.
    pub fn by_outcome(&self, version: &str) -> String {
        format!("{}outcomes/{version}/", self.prefix)
    }

    /// `cairn/fleet/<group>/outcomes/<version>/<outcome>/`
    pub fn with_outcome(&self, version: &str, outcome: Outcome) -> String {
        format!("{}outcomes/{version}/{outcome}/", self.prefix)
    }

    /// `cairn/fleet/<group>/outcomes/<version>/<outcome>/<id>`
    pub fn indexed(&self, version: &str, outcome: Outcome, id: &str) -> String {
        format!("{}outcomes/{version}/{outcome}/{id}", self.prefix)
    }

    /// `cairn/fleet/<group>/tally/<version>/`: the release's counters.
    pub fn tally(&self, version: &str) -> String {
        format!("{}tally/{version}/", self.prefix)
    }

    /// `cairn/fleet/<group>/tally/<version>/<outcome>/entered` or `…/left`:
    /// a counter whose etcd version is how many times a host's outcome
    /// became, or stopped being, `outcome`.
    pub fn counter(&self, version: &str, outcome: Outcome, entered: bool) -> String {
        let way = if entered { "entered" } else { "left" };
        format!("{}tally/{version}/{outcome}/{way}", self.prefix)
    }
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's `range_end`): the prefix with its last byte below 0xff raised by
/// one and everything after it cut. All-0xff (or empty) → `\0`, "to the end".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let max = "a".repeat(MAX_NAME_LEN);
        // (value, group ok, id ok, version ok)
        let table: &[(&str, bool, bool, bool)] = &[
            ("default", true, true, true),
            ("web-eu.1", true, true, true),
            ("0123456789abcdef0123456789abcdef", true, true, true),
            ("1.2.10-rc1", true, true, true),
            ("1.0+build5", false, false, true),
            ("node_1", false, true, false),
            ("host@site:2", false, true, false),
            ("", false, false, false),
            ("a/b", false, false, false),
            ("../x", false, false, false),
            ("a b", false, false, false),
            ("ä", false, false, false),
            ("a\n", false, false, false),
            (&long, false, false, false),
            (&max, true, true, true),
        ];
        for (v, g, i, r) in table {
            assert_eq!(validate_group(v).is_ok(), *g, "group {v:?}");
            assert_eq!(validate_id(v).is_ok(), *i, "id {v:?}");
            assert_eq!(validate_version(v).is_ok(), *r, "version {v:?}");
        }
    }

    #[test]
    fn an_invalid_name_says_what_and_why() {
        let e = validate_group("a/b").unwrap_err().to_string();
        assert!(
            e.contains("group") && e.contains("a/b") && e.contains("'/'"),
            "{e}"
        );
        let e = validate_id("").unwrap_err().to_string();
        assert!(e.contains("host id") && e.contains("empty"), "{e}");
    }

    #[test]
    fn layout() {
        let k = GroupKeys::new("web").unwrap();
        assert_eq!(k.prefix(), "cairn/fleet/web/");
        assert_eq!(k.max(), "cairn/fleet/web/max");
        assert_eq!(k.guard(), "cairn/fleet/web/semaphore");
        assert_eq!(k.holders(), "cairn/fleet/web/holders/");
        assert_eq!(k.holder("n1"), "cairn/fleet/web/holders/n1");
        assert_eq!(k.release("1.2"), "cairn/fleet/web/releases/1.2/");
        assert_eq!(k.outcome("1.2", "n1"), "cairn/fleet/web/releases/1.2/n1");
        assert_eq!(k.by_outcome("1.2"), "cairn/fleet/web/outcomes/1.2/");
        assert_eq!(
            k.with_outcome("1.2", Outcome::RolledBack),
            "cairn/fleet/web/outcomes/1.2/rolled_back/"
        );
        assert_eq!(
            k.indexed("1.2", Outcome::Installed, "n1"),
            "cairn/fleet/web/outcomes/1.2/installed/n1"
        );
        assert_eq!(k.tally("1.2"), "cairn/fleet/web/tally/1.2/");
        assert_eq!(
            k.counter("1.2", Outcome::Committed, true),
            "cairn/fleet/web/tally/1.2/committed/entered"
        );
        assert_eq!(
            k.counter("1.2", Outcome::RolledBack, false),
            "cairn/fleet/web/tally/1.2/rolled_back/left"
        );
        assert!(GroupKeys::new("we/b").is_err());
    }

    #[test]
    fn prefix_ends() {
        let table: &[(&[u8], &[u8])] = &[
            (b"a/", b"a0"),
            (b"abc", b"abd"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (p, e) in table {
            assert_eq!(prefix_end(p), *e, "{p:?}");
        }
    }
}
