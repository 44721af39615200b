//! Release versions: dotted numbers with an optional `-suffix` (a pre-release).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A release version such as `1.2.10` or `2.0.0-rc1`.
///
/// Ordering: numeric parts compare as numbers, missing parts count as 0 (so `1.2`
/// equals `1.2.0`); a version with a suffix is lower than the same version without
/// one (`1.0.0-rc1 < 1.0.0`). Suffixes compare dot-separated identifier by identifier
/// in natural order (digit runs as numbers, so `rc2 < rc10`; digits sort before
/// letters; `alpha < beta < rc`); a shorter suffix that is a prefix sorts first.
/// Numbers have no leading zeros, so every version has one spelling; `Display`
/// returns the string it was parsed from.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    text: String,
    numbers: Vec<u64>,
    /// Position of the `-` in `text`, if there is a suffix.
    dash: Option<usize>,
}

const MAX_LEN: usize = 128;

impl Version {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadVersion(s.to_string());
        if s.len() > MAX_LEN {
            return Err(bad());
        }
        let (nums, suffix) = match s.split_once('-') {
            Some((n, suf)) => (n, Some(suf)),
            None => (s, None),
        };
        let numbers = nums
            .split('.')
            .map(|p| {
                let canonical = !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && (p == "0" || !p.starts_with('0'));
                if canonical {
                    p.parse::<u64>().ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(bad)?;
        if let Some(suf) = suffix {
            let ok = suf
                .split('.')
                .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !ok {
                return Err(bad());
            }
        }
        Ok(Version {
            text: s.to_string(),
            numbers,
            dash: suffix.map(|_| nums.len()),
        })
    }

    /// The numeric parts.
    pub fn numbers(&self) -> &[u64] {
        &self.numbers
    }

    /// The pre-release suffix without the `-`.
    pub fn suffix(&self) -> Option<&str> {
        self.dash.map(|d| &self.text[d + 1..])
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Natural order of one suffix identifier: digit runs numerically, others bytewise,
/// a digit run before a letter run.
fn cmp_identifier(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (ad, bd) = (a[0].is_ascii_digit(), b[0].is_ascii_digit());
        let run =
            |s: &[u8], digit: bool| s.iter().take_while(|c| c.is_ascii_digit() == digit).count();
        let (ra, rb) = (&a[..run(a, ad)], &b[..run(b, bd)]);
        let ord = match (ad, bd) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (true, true) => {
                // Compare as unbounded numbers: strip zeros, then length, then digits.
                let strip = |r: &[u8]| {
                    let z = r.iter().take_while(|&&c| c == b'0').count();
                    r[z..].to_vec()
                };
                let (na, nb) = (strip(ra), strip(rb));
                na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb))
            }
            (false, false) => ra.cmp(rb),
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[ra.len()..];
        b = &b[rb.len()..];
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        for i in 0..n {
            let o = at(&self.numbers, i).cmp(&at(&other.numbers, i));
            if o != Ordering::Equal {
                return o;
            }
        }
        match (self.suffix(), other.suffix()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => {
                let (mut ia, mut ib) = (a.split('.'), b.split('.'));
                loop {
                    match (ia.next(), ib.next()) {
                        (None, None) => return Ordering::Equal,
                        (None, Some(_)) => return Ordering::Less,
                        (Some(_), None) => return Ordering::Greater,
                        (Some(x), Some(y)) => {
                            let o = cmp_identifier(x, y);
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Version::parse(s)
    }
}

impl TryFrom<String> for Version {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Version::parse(&s)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ordering_table() {
        let lower_higher = [
            ("1.2.9", "1.2.10"),
            ("1.0.0-rc1", "1.0.0"),
            ("1.0.0-rc1", "1.0.0-rc2"),
            ("1.0.0-rc2", "1.0.0-rc10"),
            ("1.0.0-alpha", "1.0.0-beta"),
            ("1.0.0-beta", "1.0.0-rc1"),
            ("1.0.0-rc", "1.0.0-rc1"),
            ("1.0.0-rc.1", "1.0.0-rc.1.1"),
            ("1.0.0-1", "1.0.0-a"),
            ("0.9", "1.0"),
            ("1.9.9", "2"),
            ("1.0", "1.0.1"),
            ("2024.1.5", "2024.11.0"),
            ("1.0.0", "1.0.1-rc1"),
            ("18446744073709551614", "18446744073709551615"),
        ];
        for (lo, hi) in lower_higher {
            assert!(v(lo) < v(hi), "{lo} < {hi}");
            assert!(v(hi) > v(lo), "{hi} > {lo}");
        }
        for (a, b) in [("1.2", "1.2.0"), ("1", "1.0.0"), ("3.1-rc1", "3.1.0-rc1")] {
            assert_eq!(v(a), v(b), "{a} == {b}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "1.",
            ".1",
            "1..2",
            "01.2",
            "1.02",
            "v1.2",
            "1.2-",
            "1.2-rc..1",
            "1.2-rc_1",
            "1.2 ",
            "1.-rc",
            "18446744073709551616",
        ] {
            assert!(Version::parse(s).is_err(), "{s:?} must be refused");
        }
    }

    #[test]
    fn keeps_spelling() {
        assert_eq!(v("1.2.0-rc.1").to_string(), "1.2.0-rc.1");
        assert_eq!(v("1.2.0-rc.1").suffix(), Some("rc.1"));
        assert_eq!(v("1.2").numbers(), &[1, 2]);
    }
}
