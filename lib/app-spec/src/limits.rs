//! Resource limits: memory, CPUs, processes.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};

/// Below this cairn-run cannot even set the container up.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The OCI spec and the cgroup files take a signed 64-bit number.
pub const MAX_MEMORY: u64 = i64::MAX as u64;
/// The kernel's smallest CFS quota is 1 ms per 100 ms period.
pub const MIN_CPUS: f64 = 0.01;
pub const MAX_CPUS: f64 = 4096.0;
/// The kernel's pid_max ceiling.
pub const MAX_PIDS: u64 = 4_194_304;

/// A memory limit in bytes, at least [`MIN_MEMORY`].
///
/// Written as bytes or a whole number with a binary suffix, any case, with
/// an optional `B` or `iB` after it: `268435456`, `256M`, `256m`, `256MB`,
/// `256MiB`, `1G`, `1GiB`, `8192k`, `1T`. Displayed as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(u64);

impl Memory {
    pub fn from_bytes(bytes: u64) -> Result<Self, Error> {
        Self::checked(&bytes.to_string(), Some(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    fn checked(input: &str, bytes: Option<u64>) -> Result<Self, Error> {
        match bytes {
            None => Err(Error::new(What::Memory, input, "too large")),
            Some(b) if b < MIN_MEMORY => Err(Error::new(
                What::Memory,
                input,
                "below 6M, the least a container can be set up in",
            )),
            Some(b) if b > MAX_MEMORY => Err(Error::new(What::Memory, input, "too large")),
            Some(b) => Ok(Memory(b)),
        }
    }
}

impl FromStr for Memory {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.trim().to_ascii_lowercase();
        let unit_end = lower
            .strip_suffix("ib")
            .filter(|n| n.ends_with(['k', 'm', 'g', 't']))
            .or_else(|| lower.strip_suffix('b'))
            .unwrap_or(&lower);
        let (num, shift) = match unit_end.as_bytes().last() {
            Some(b'k') => (&unit_end[..unit_end.len() - 1], 10),
            Some(b'm') => (&unit_end[..unit_end.len() - 1], 20),
            Some(b'g') => (&unit_end[..unit_end.len() - 1], 30),
            Some(b't') => (&unit_end[..unit_end.len() - 1], 40),
            _ => (unit_end, 0),
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::new(
                What::Memory,
                s,
                format!("{num:?} is not a whole number"),
            ));
        }
        let bytes = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift));
        Self::checked(s, bytes)
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A CPU limit: how many CPUs' worth of time per period, from 0.01 to 4096.
///
/// Written as a decimal number (`0.5`, `2`, `.25`); no sign, exponent,
/// `inf` or `nan`. Displayed as the shortest decimal that reads back the
/// same (`0.5`, `2`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Cpus(f64);

impl Cpus {
    pub fn new(cpus: f64) -> Result<Self, Error> {
        Self::checked(&cpus.to_string(), cpus)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    fn checked(input: &str, c: f64) -> Result<Self, Error> {
        if (MIN_CPUS..=MAX_CPUS).contains(&c) {
            Ok(Cpus(c))
        } else {
            Err(Error::new(What::Cpus, input, "out of range"))
        }
    }
}

impl FromStr for Cpus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let digits = s.bytes().filter(u8::is_ascii_digit).count();
        let dots = s.bytes().filter(|b| *b == b'.').count();
        if digits == 0 || dots > 1 || digits + dots != s.len() {
            return Err(Error::new(What::Cpus, s, "not a decimal number"));
        }
        match s.parse::<f64>() {
            Ok(c) => Self::checked(s, c),
            Err(_) => Err(Error::new(What::Cpus, s, "not a decimal number")),
        }
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust prints the shortest round-tripping decimal, never an exponent.
        self.0.fmt(f)
    }
}

/// The most processes (tasks) the app may have, from 1 to [`MAX_PIDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pids(u64);

impl Pids {
    pub fn new(pids: u64) -> Result<Self, Error> {
        if (1..=MAX_PIDS).contains(&pids) {
            Ok(Pids(pids))
        } else {
            Err(Error::new(What::Pids, &pids.to_string(), "out of range"))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for Pids {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::new(What::Pids, s, "not a whole number"));
        }
        match s.parse::<u64>() {
            Ok(n) => Self::new(n).map_err(|e| Error::new(What::Pids, s, e.problem())),
            Err(_) => Err(Error::new(What::Pids, s, "out of range")),
        }
    }
}

impl fmt::Display for Pids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
