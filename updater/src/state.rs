//! Persistent agent state under the state directory (on ROOT):
//!
//! * `progress.json` — the update being written or waiting for its reboot;
//! * `history.json` — what happened, and the versions that failed (never retried);
//! * `trust.json` — the newest verified repository root and the highest channel
//!   metadata version seen per channel (rollback protection);
//! * `wave-seed` — the host's stable rollout seed (configurable path).
//!
//! Every write is [`write_file`] (`durable_file`: temp file + fsync + rename +
//! directory fsync), so a power cut leaves either the old or the new file,
//! never a torn one.

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

    /// Why `v` failed here, if it did. Compared as versions: `1.2` and `1.2.0`
    /// are the same release, whichever spelling was recorded.
    pub fn failed_reason(&self, v: &Version) -> Option<&str> {
        failed_reason(&self.failed, v)
    }

    /// Records `v` as never to be installed again, replacing any other
    /// spelling of the same version.
    pub fn mark_failed(&mut self, v: &Version, why: String) {
        self.clear_failed(v);
        self.failed.insert(v.to_string(), why);
    }

    /// Forgets that `v` failed (every spelling); true if it was listed.
    pub fn clear_failed(&mut self, v: &Version) -> bool {
        let before = self.failed.len();
        self.failed.retain(|k, _| !same_version(k, v));
        self.failed.len() != before
    }
}

/// Whether the recorded key `k` names `v`: by parsed version, or textually for
/// a key that does not parse (kept from an older or hand-edited file).
fn same_version(k: &str, v: &Version) -> bool {
    match Version::parse(k) {
        Ok(f) => f == *v,
        Err(_) => k == v.as_str(),
    }
}

/// Looks `v` up in a failed list (version text -> why) by parsed version.
pub fn failed_reason<'a>(failed: &'a BTreeMap<String, String>, v: &Version) -> Option<&'a str> {
    failed
        .get(v.as_str())
        .or_else(|| {
            failed
                .iter()
                .find(|(k, _)| same_version(k, v))
                .map(|(_, why)| why)
        })
        .map(String::as_str)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    pub root: Option<Root>,
    /// Highest channel metadata version accepted, per channel.
    pub channels: BTreeMap<String, u64>,
    /// The root keys and threshold that verified the versions in `channels`.
    /// When a rotation changes them, the marks are reset (as TUF does for
    /// timestamp/snapshot): a channel version inflated to 2^64-1 with a stolen
    /// key must not lock hosts out after that key is rotated away. `None`: a
    /// file written before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_signers: Option<Signers>,
    /// The newest signed time seen (unix seconds): the `created` of verified
    /// release manifests. Part of the clock floor; never taken from the clock.
    #[serde(default)]
    pub signed_time: u64,
}

/// Who signs channel metadata: a root's key ids and threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signers {
    pub threshold: usize,
    pub keys: std::collections::BTreeSet<String>,
}

impl Signers {
    pub fn of(root: &Root) -> Signers {
        Signers {
            threshold: root.threshold,
            keys: root.keys.keys().cloned().collect(),
        }
    }
}

impl Trust {
    /// Makes the channel marks belong to `root`'s signers: kept when the
    /// signers are the ones that verified them, reset when a rotation changed
    /// them. Returns whether anything changed (to be persisted).
    pub fn adopt_signers(&mut self, root: &Root) -> bool {
        let now = Signers::of(root);
        if self.channel_signers.as_ref() == Some(&now) {
            return false;
        }
        if self.channel_signers.is_some() {
            self.channels.clear();
        }
        self.channel_signers = Some(now);
        true
    }
}

/// `2093-01-02 03:04:05 UTC` for unix seconds (proleptic Gregorian; no
/// time-zone data needed on the host).
pub fn format_utc(secs: u64) -> String {
    let t = reboot_window::DateTime::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
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

    pub(crate) fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    pub(crate) fn store<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::State(e.to_string()))?;
        write_file(&self.dir.join(name), &bytes)
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
                    Ok(()) => {
                        durable_file::sync_dir(&self.dir).map_err(|e| Error::State(e.to_string()))
                    }
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

/// Replaces a state file durably (temp file, fsync, rename, directory fsync),
/// mode 0600, creating the state directory if needed.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    const STATE_FILE: durable_file::Options = durable_file::Options {
        create_parents: true,
        ..durable_file::Options::new(0o600)
    };
    durable_file::write(path, bytes, STATE_FILE).map_err(|e| Error::State(e.to_string()))
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
    write_file(path, format!("{s}\n").as_bytes())?;
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
    fn failed_versions_compare_as_versions() {
        let v = |s: &str| Version::parse(s).unwrap();
        // (recorded key, looked-up version, found)
        let table = [
            ("1.2", "1.2.0", true),
            ("1.2.0", "1.2", true),
            ("1.2.0", "1.2.0", true),
            ("1", "1.0.0", true),
            ("1.2.0-rc1", "1.2-rc1", true),
            ("1.2.0", "1.2.1", false),
            ("1.2.0-rc1", "1.2.0", false),
            ("1.2.0", "1.20", false),
            ("not a version", "1.2.0", false),
        ];
        for (key, look, found) in table {
            let mut h = History::default();
            h.failed.insert(key.into(), "why".into());
            assert_eq!(
                h.failed_reason(&v(look)).is_some(),
                found,
                "{key:?} recorded, {look:?} looked up"
            );
            assert_eq!(h.clone().clear_failed(&v(look)), found, "clear {look:?}");
        }
        // Marking a version replaces its other spellings.
        let mut h = History::default();
        h.failed.insert("1.2".into(), "old".into());
        h.mark_failed(&v("1.2.0"), "new".into());
        assert_eq!(h.failed.len(), 1);
        assert_eq!(h.failed_reason(&v("1.2")), Some("new"));
    }

    #[test]
    fn channel_marks_reset_only_when_the_signers_change() {
        use release_manifest::KeyPair;
        let k = |n: u8| KeyPair::from_seed([n; 32]).public();
        let root =
            |keys: &[release_manifest::PublicKey], t: usize, v: u64| Root::new(keys, t, v, 0);
        let marks = || BTreeMap::from([("stable".to_string(), u64::MAX)]);
        // (signers recorded, new root, marks kept, changed)
        let table = [
            (None, root(&[k(1), k(2)], 2, 1), true, true),
            (
                Some(root(&[k(1), k(2)], 2, 1)),
                root(&[k(1), k(2)], 2, 1),
                true,
                false,
            ),
            // A new root version with the same keys (say, a new expiry): kept.
            (
                Some(root(&[k(1), k(2)], 2, 1)),
                root(&[k(1), k(2)], 2, 2),
                true,
                false,
            ),
            (
                Some(root(&[k(1), k(2)], 2, 1)),
                root(&[k(1), k(3)], 2, 2),
                false,
                true,
            ),
            (
                Some(root(&[k(1), k(2)], 2, 1)),
                root(&[k(1), k(2)], 1, 2),
                false,
                true,
            ),
            (
                Some(root(&[k(1), k(2)], 2, 1)),
                root(&[k(3)], 1, 2),
                false,
                true,
            ),
        ];
        for (i, (before, now, kept, changed)) in table.into_iter().enumerate() {
            let mut t = Trust {
                channels: marks(),
                channel_signers: before.as_ref().map(Signers::of),
                ..Trust::default()
            };
            assert_eq!(t.adopt_signers(&now), changed, "row {i}");
            assert_eq!(t.channels == marks(), kept, "row {i}");
            assert_eq!(t.channel_signers, Some(Signers::of(&now)), "row {i}");
        }
    }

    #[test]
    fn utc_dates() {
        for (secs, text) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (1_800_000_000, "2027-01-15 08:00:00 UTC"),
            (3_881_605_445, "2092-12-31 23:44:05 UTC"),
        ] {
            assert_eq!(format_utc(secs), text);
        }
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
