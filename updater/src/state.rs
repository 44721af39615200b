//! Persistent agent state under the state directory (on ROOT):
//!
//! * `progress.json` — the update being written or waiting for its reboot;
//! * `history.json` — what happened, and the versions that failed (never retried);
//! * `trust.json` — the newest verified repository root and the highest channel
//!   metadata version seen per channel (rollback protection);
//! * `wave-seed` — the host's stable rollout seed (configurable path).
//!
//! Every write is temp file + fsync + rename + directory fsync, so a power cut
//! leaves either the old or the new file, never a torn one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use release_manifest::{Hex32, Version};
use release_repo::Root;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Error;

pub const PROGRESS: &str = "progress.json";
pub const HISTORY: &str = "history.json";
pub const TRUST: &str = "trust.json";
/// History entries kept; older ones are dropped (failed versions are kept apart).
const MAX_EVENTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The slot is (0,0,0) and chunks are being written.
    Writing,
    /// Written, verified and flipped to (2,3,0): a reboot starts it.
    Ready,
}

/// The update in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `a` or `b`.
    pub slot: String,
    pub version: Version,
    /// The release is identified by its manifest bytes, not just its version, so
    /// a re-published release never resumes onto the old one's chunks.
    pub manifest_sha256: Hex32,
    /// Chunks of the usr image written, fsynced and verified, in order.
    pub chunks_verified: u64,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: u64,
    /// installed, booted, rolled-back, rollback, failed-write
    pub kind: String,
    pub version: String,
    pub slot: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
    /// Version -> why it failed. Such a version is never installed again.
    pub failed: BTreeMap<String, String>,
}

impl History {
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
        if self.events.len() > MAX_EVENTS {
            let drop = self.events.len() - MAX_EVENTS;
            self.events.drain(..drop);
        }
    }

    /// A newer version booted fine: older failures no longer matter.
    pub fn clear_failed_below(&mut self, v: &Version) {
        self.failed
            .retain(|k, _| Version::parse(k).map(|f| f > *v).unwrap_or(true));
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    pub root: Option<Root>,
    pub channels: BTreeMap<String, u64>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn store<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&self.dir.join(name), &bytes)
    }

    pub fn progress(&self) -> Result<Option<Progress>, Error> {
        self.load(PROGRESS)
    }

    pub fn set_progress(&self, p: Option<&Progress>) -> Result<(), Error> {
        match p {
            Some(p) => self.store(PROGRESS, p),
            None => {
                let path = self.dir.join(PROGRESS);
                match std::fs::remove_file(&path) {
                    Ok(()) => sync_dir(&self.dir),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
                }
            }
        }
    }

    pub fn history(&self) -> Result<History, Error> {
        Ok(self.load(HISTORY)?.unwrap_or_default())
    }

    pub fn set_history(&self, h: &History) -> Result<(), Error> {
        self.store(HISTORY, h)
    }

    pub fn trust(&self) -> Result<Trust, Error> {
        Ok(self.load(TRUST)?.unwrap_or_default())
    }

    pub fn set_trust(&self, t: &Trust) -> Result<(), Error> {
        self.store(TRUST, t)
    }
}

/// Temp file + fsync + rename + directory fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    release_repo::write_atomic(path, bytes).map_err(|e| Error::State(e.to_string()))
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

/// The host's rollout seed in `[0, 1)`: made once from the OS random generator
/// and kept, so a host keeps its place in every rollout. An unreadable seed is
/// replaced rather than failing updates forever.
pub fn wave_seed(path: &Path) -> Result<f64, Error> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(s) = text.trim().parse::<f64>()
        && (0.0..1.0).contains(&s)
    {
        return Ok(s);
    }
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::State(format!("random seed: {e}")))?;
    // 53 random bits: every value is exactly representable and below 1.
    let s = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    write_atomic(path, format!("{s}\n").as_bytes())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_made_once_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/wave-seed");
        let a = wave_seed(&p).unwrap();
        assert!((0.0..1.0).contains(&a));
        assert_eq!(wave_seed(&p).unwrap(), a);
        std::fs::write(&p, "7\n").unwrap();
        let b = wave_seed(&p).unwrap();
        assert!((0.0..1.0).contains(&b));
    }

    #[test]
    fn failed_versions_cleared_by_a_newer_boot() {
        let mut h = History::default();
        h.failed.insert("1.1.0".into(), "x".into());
        h.failed.insert("1.3.0".into(), "y".into());
        h.clear_failed_below(&Version::parse("1.2.0").unwrap());
        assert_eq!(h.failed.keys().collect::<Vec<_>>(), ["1.3.0"]);
    }
}
