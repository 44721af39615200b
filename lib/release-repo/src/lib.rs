//! Release repositories: signed root and channel metadata over Cairn releases.
//!
//! A repository is a directory of static files; any HTTP server, object store or
//! CDN can serve it. Nothing in it is trusted because of where it came from: every
//! byte is reached through a signature chain that starts at a root the host ships.
//!
//! ```text
//! root.json, root.json.sig            newest root metadata (a convenience copy)
//! roots/<n>.json, roots/<n>.json.sig  every root version 1..=N, for the client's walk
//! channels/<name>.json (+ .sig)       the releases offered on a channel
//! releases/<board>/<version>/manifest.json (+ .sig)   copied from the release directory
//! chunks/<zsha256>.zst                content-addressed chunks shared by all releases
//! ```
//!
//! A manifest's chunk paths (`chunks/<zsha256>.zst`) resolve against the
//! repository root, so releases share one chunk store and a chunk that several
//! releases contain is stored and downloaded once.
//!
//! # Root metadata ([`Root`])
//! `{"type": "cairn-root", "version": n, "expires": unix s, "threshold": t,
//! "keys": {"<key id>": "cairn-ed25519-public <hex>"}}`. Version 1 is signed by its
//! own keys. Key rotation publishes version n+1 signed by at least the *old*
//! threshold of the old keys **and** the new threshold of the new keys; a client
//! walks `roots/<n+1>.json` from the root it trusts ([`verify_root_chain`]), so a
//! stolen minority of keys can neither sign metadata nor rotate itself in.
//! Intermediate roots may have expired; the newest one must not have.
//!
//! # Channel metadata ([`Channel`])
//! `{"type": "cairn-channel", "channel": name, "version": n, "expires": unix s,
//! "releases": [ReleaseEntry...]}` signed by the root keys with the root threshold.
//! `version` grows with every publish; clients persist the highest they accepted
//! and refuse a lower one (a replayed old channel, a rollback attack), and refuse an
//! expired channel (a freeze attack). Each [`ReleaseEntry`] names board, arch,
//! version, the manifest path and **pins the manifest bytes by sha256 and size**:
//! a manifest of another release (mix-and-match) or an endless stream instead of
//! the manifest is refused, and clients read at most `manifest_size + 1` bytes.
//! The manifest pins every chunk by size and hash in turn (see `release-manifest`).
//!
//! # Rollout waves ([`Wave`])
//! A release carries a wave: a start (unix s) and steps, each a cumulative share
//! of the fleet reached some seconds after the start, e.g. 1 % within 2 h, 10 %
//! by 24 h, 100 % by 72 h:
//! `{"start": T, "steps": [{"after_seconds": 7200, "percent": 1.0},
//! {"after_seconds": 86400, "percent": 10.0}, {"after_seconds": 259200, "percent": 100.0}]}`.
//! A host with the stable random seed `s` in `[0, 1)` may install once the
//! share, interpolated linearly inside each step, reaches `s` ([`install_time`],
//! [`turn_at`], [`wave_reached`]): seed 0 hosts are the canaries, at the start.
//! The single ramp `{"start": T, "duration": D}` (everyone by `T + D`, seed `s`
//! at `T + floor(s * D)`) is the one-step wave and is still how waves of at most
//! one step are written, so agents that predate steps keep reading channels
//! that use no multi-step wave. `duration = 0` releases everyone at `start`.
//!
//! # Halted releases ([`Halt`])
//! A publisher stops a rollout by re-signing the channel with the release's
//! entry marked `"halted": {"reason": "...", "at": unix s}` ([`halt`]) and
//! restarts it by removing the mark ([`resume`]). Hosts do not install a halted
//! release ([`ReleaseEntry::hold`]); hosts already running it keep it (a halt
//! is not a rollback). Each halt or resume is a new channel `version`, so a
//! host that has seen the halt refuses the pre-halt channel as a rollback. An
//! entry without `halted` is not halted; older agents cannot read a channel
//! that has a halted entry (their parser refuses unknown fields) and so install
//! nothing from it until it is resumed.
//!
//! # Publisher side
//! [`init`], [`publish`], [`halt`], [`resume`], [`rotate_keys`]. Files are written with
//! `durable_file::write` (temporary name, fsync, rename, fsync of the
//! directory), so a crash never leaves half a metadata file, and a manifest is
//! copied only after its chunks are durably in place.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use release_manifest::{Hex32, KeyPair, Manifest, PublicKey, Version, verify_signed};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod wave;

pub use wave::{
    MAX_WAVE_STEPS, Step, StepProblem, WAVE_SPEC_EXAMPLE, Wave, WaveError, WaveSpecError,
    fmt_duration, install_time, turn_at, wave_reached,
};

pub const ROOT_FILE: &str = "root.json";
pub const ROOTS_DIR: &str = "roots";
pub const CHANNELS_DIR: &str = "channels";
pub const RELEASES_DIR: &str = "releases";
pub const CHUNKS_DIR: &str = release_manifest::CHUNKS_DIR;
/// Appended to a metadata file's name for its signature file.
pub const SIG_SUFFIX: &str = ".sig";
/// Root and channel files are small; a bigger response is refused unread.
pub const MAX_METADATA: u64 = 4 << 20;
/// Signature files (the same bound release-manifest applies when parsing).
pub const MAX_SIGNATURES: u64 = 160 << 10;
/// Longest halt reason, in bytes.
pub const MAX_HALT_REASON: usize = 1024;

const ROOT_TYPE: &str = "cairn-root";
const CHANNEL_TYPE: &str = "cairn-channel";

/// Everything that can go wrong; each names the file or the attack it stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a repository file (the step and the path are in the message).
    #[error(transparent)]
    File(#[from] durable_file::Error),
    #[error("{what}: malformed metadata: {problem}")]
    Malformed { what: String, problem: String },
    #[error("{what}: signature check failed: {source}")]
    Signature {
        what: String,
        #[source]
        source: release_manifest::Error,
    },
    #[error("{what} expired at {expires} (now {now}): refusing possibly frozen metadata")]
    Expired {
        what: String,
        expires: u64,
        now: u64,
    },
    #[error(
        "root version {version} is not signed by the threshold of the previous root's keys (an unauthorized key rotation): {source}"
    )]
    RotationNotSignedByOld {
        version: u64,
        #[source]
        source: release_manifest::Error,
    },
    #[error("root version {version} is not signed by its own keys: {source}")]
    RotationNotSignedByNew {
        version: u64,
        #[source]
        source: release_manifest::Error,
    },
    #[error("root chain: expected root version {expected}, found {found}")]
    RootVersion { expected: u64, found: u64 },
    #[error(
        "channel {channel:?} version {version} is older than version {highest} already seen (rollback attack or stale mirror)"
    )]
    ChannelRollback {
        channel: String,
        version: u64,
        highest: u64,
    },
    #[error("channel file holds channel {found:?}, expected {expected:?}")]
    ChannelName { expected: String, found: String },
    #[error("release {version} is not newer than {current} (downgrade refused)")]
    Downgrade { version: String, current: String },
    #[error("{path}: more than the {size} bytes the channel signs (endless data refused)")]
    ManifestTooLarge { path: String, size: u64 },
    #[error("{path}: {actual} bytes, the channel signs {size} (truncated or replaced manifest)")]
    ManifestSize {
        path: String,
        size: u64,
        actual: u64,
    },
    #[error(
        "{path}: sha256 does not match the channel's pin (tampered manifest or one from another release)"
    )]
    ManifestHash { path: String },
    #[error(
        "{path}: the manifest says {field} {found:?}, the channel says {expected:?} (mix-and-match)"
    )]
    ManifestMismatch {
        path: String,
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("{what}: {source}")]
    Release {
        what: String,
        #[source]
        source: release_manifest::Error,
    },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("channel {channel:?} offers no release {version}{}", board_note(board))]
    NotOnChannel {
        channel: String,
        version: String,
        board: Option<String>,
    },
    #[error("release {version} on channel {channel:?} is already halted (since {at}: {reason})")]
    AlreadyHalted {
        channel: String,
        version: String,
        reason: String,
        at: u64,
    },
    #[error("release {version} on channel {channel:?} is not halted")]
    NotHalted { channel: String, version: String },
    #[error("halt reason {reason:?}: {problem}")]
    HaltReason {
        reason: String,
        problem: &'static str,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

fn board_note(board: &Option<String>) -> String {
    board
        .as_ref()
        .map(|b| format!(" for board {b}"))
        .unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(what: &str, problem: impl ToString) -> Error {
    Error::Malformed {
        what: what.to_string(),
        problem: problem.to_string(),
    }
}

/// Root metadata: who may sign, how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u64,
    pub expires: u64,
    pub threshold: usize,
    /// Key id -> `cairn-ed25519-public <hex>` line.
    pub keys: BTreeMap<String, String>,
}

impl Root {
    pub fn new(keys: &[PublicKey], threshold: usize, version: u64, expires: u64) -> Root {
        Root {
            kind: ROOT_TYPE.into(),
            version,
            expires,
            threshold,
            keys: keys
                .iter()
                .map(|k| (k.key_id(), k.to_line().trim_end().to_string()))
                .collect(),
        }
    }

    /// Parses and checks the document (no signature check: see [`verify_root_chain`]).
    pub fn from_json(bytes: &[u8]) -> Result<Root, Error> {
        let what = "root metadata";
        let root: Root = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
        if root.kind != ROOT_TYPE {
            return Err(malformed(what, format!("type is {:?}", root.kind)));
        }
        if root.version == 0 {
            return Err(malformed(what, "version 0"));
        }
        // Threshold 0 would accept unsigned metadata.
        if root.threshold == 0 || root.threshold > root.keys.len() {
            return Err(malformed(
                what,
                format!("threshold {} with {} keys", root.threshold, root.keys.len()),
            ));
        }
        root.public_keys()?;
        Ok(root)
    }

    /// The trusted keys; each must match the id it is listed under.
    pub fn public_keys(&self) -> Result<Vec<PublicKey>, Error> {
        self.keys
            .iter()
            .map(|(id, line)| {
                let key = PublicKey::parse(line).map_err(|e| malformed("root key", e))?;
                if &key.key_id() != id {
                    return Err(malformed(
                        "root metadata",
                        format!("key listed as {id} has id {}", key.key_id()),
                    ));
                }
                Ok(key)
            })
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Verifies `doc`/`sig` against this root's keys and threshold.
    pub fn verify(&self, what: &str, doc: &[u8], sig: &[u8]) -> Result<(), Error> {
        verify_signed(doc, sig, &self.public_keys()?, self.threshold).map_err(|source| {
            Error::Signature {
                what: what.to_string(),
                source,
            }
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Structs of strings, integers, lists and string-keyed maps always serialize.
    let mut out = serde_json::to_vec_pretty(value).expect("metadata always serializes");
    out.push(b'\n');
    out
}

/// One release offered on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseEntry {
    pub board: String,
    pub arch: String,
    pub version: Version,
    /// Path of manifest.json relative to the repository root; its signatures are
    /// next to it with [`SIG_SUFFIX`].
    pub manifest: String,
    pub manifest_sha256: Hex32,
    pub manifest_size: u64,
    pub wave: Wave,
    /// Set while the publisher has stopped this release's rollout ([`halt`]).
    /// Absent from the JSON when not halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// A publisher's stop of a release's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    /// Why, for operators (one line, at most [`MAX_HALT_REASON`] bytes).
    pub reason: String,
    /// When it was halted (unix seconds).
    pub at: u64,
}

/// Why a host may not install a release yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The publisher halted the rollout: not installed, whatever the wave says
    /// (hosts already running the release keep it).
    Halted(Halt),
    /// This host's turn comes at `at` (unix seconds).
    WaveNotReached { at: u64 },
}

impl ReleaseEntry {
    /// When the wave reaches a host with `seed` ([`turn_at`]).
    pub fn turn_at(&self, seed: f64) -> u64 {
        turn_at(self.wave, seed)
    }

    /// What keeps a host with `seed` from installing this release at `now`: a
    /// halt first, then the wave; `None` if it may install. (Board, version
    /// and the host's own history are the caller's checks.) An operator's
    /// "ignore the wave" may skip [`Hold::WaveNotReached`], never
    /// [`Hold::Halted`].
    pub fn hold(&self, seed: f64, now: u64) -> Option<Hold> {
        if let Some(h) = &self.halted {
            return Some(Hold::Halted(h.clone()));
        }
        let at = self.turn_at(seed);
        (now < at).then_some(Hold::WaveNotReached { at })
    }
}

/// A halt reason: not empty, one line of printable text, bounded.
pub fn check_halt_reason(reason: &str) -> Result<(), Error> {
    let problem = if reason.trim().is_empty() {
        "empty"
    } else if reason.len() > MAX_HALT_REASON {
        "longer than 1024 bytes"
    } else if reason.chars().any(char::is_control) {
        "control characters (a reason is one line of text)"
    } else {
        return Ok(());
    };
    Err(Error::HaltReason {
        reason: reason.chars().take(80).collect(),
        problem,
    })
}

/// A channel: the releases offered to hosts that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: String,
    pub version: u64,
    pub expires: u64,
    pub releases: Vec<ReleaseEntry>,
}

impl Channel {
    pub fn from_json(bytes: &[u8]) -> Result<Channel, Error> {
        let what = "channel metadata";
        let c: Channel = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
        if c.kind != CHANNEL_TYPE {
            return Err(malformed(what, format!("type is {:?}", c.kind)));
        }
        check_name("channel", &c.channel)?;
        for r in &c.releases {
            check_relative_path(&r.manifest)?;
            if let Some(h) = &r.halted {
                check_halt_reason(&h.reason).map_err(|e| malformed(what, e))?;
            }
        }
        Ok(c)
    }

    /// The entries for `version` (on `board`, or on every board).
    fn select(
        &mut self,
        version: &Version,
        board: Option<&str>,
    ) -> Result<Vec<&mut ReleaseEntry>, Error> {
        let picked: Vec<&mut ReleaseEntry> = self
            .releases
            .iter_mut()
            .filter(|r| r.version == *version && board.is_none_or(|b| r.board == b))
            .collect();
        if picked.is_empty() {
            return Err(Error::NotOnChannel {
                channel: self.channel.clone(),
                version: version.to_string(),
                board: board.map(str::to_string),
            });
        }
        Ok(picked)
    }

    /// Marks `version` (on `board`, or on every board) halted. Refused if the
    /// channel does not offer it or it is already halted. Does not bump the
    /// channel version ([`halt`] does, when it signs).
    pub fn halt_release(
        &mut self,
        version: &Version,
        board: Option<&str>,
        halt: Halt,
    ) -> Result<(), Error> {
        check_halt_reason(&halt.reason)?;
        let channel = self.channel.clone();
        let picked = self.select(version, board)?;
        if let Some(h) = picked.iter().find_map(|r| r.halted.as_ref()) {
            return Err(Error::AlreadyHalted {
                channel,
                version: version.to_string(),
                reason: h.reason.clone(),
                at: h.at,
            });
        }
        for r in picked {
            r.halted = Some(halt.clone());
        }
        Ok(())
    }

    /// Removes the halt of `version` (on `board`, or on every board), optionally
    /// restarting its wave at `restart_wave_at`. Refused if the channel does not
    /// offer it or none of those entries is halted. Does not bump the version.
    pub fn resume_release(
        &mut self,
        version: &Version,
        board: Option<&str>,
        restart_wave_at: Option<u64>,
    ) -> Result<(), Error> {
        let channel = self.channel.clone();
        let picked = self.select(version, board)?;
        if picked.iter().all(|r| r.halted.is_none()) {
            return Err(Error::NotHalted {
                channel,
                version: version.to_string(),
            });
        }
        for r in picked {
            r.halted = None;
            if let Some(start) = restart_wave_at {
                r.wave = r.wave.with_start(start);
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

fn check_name(what: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what} name {s:?}")))
    }
}

/// Metadata paths are joined to a base URL or directory: no escapes.
fn check_relative_path(p: &str) -> Result<(), Error> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(malformed("channel metadata", format!("bad path {p:?}")))
    }
}

/// Path of a channel's metadata file inside the repository.
pub fn channel_path(name: &str) -> String {
    format!("{CHANNELS_DIR}/{name}.json")
}

/// Path of root version `n` inside the repository.
pub fn root_path(version: u64) -> String {
    format!("{ROOTS_DIR}/{version}.json")
}

// ---------------------------------------------------------------- client side

/// Walks `chain` (the documents and signatures of root versions trusted+1,
/// trusted+2, ... in order) from the `trusted` root. Each step must be signed by
/// the previous root's threshold and by its own. The result must not be expired.
pub fn verify_root_chain(
    trusted: &Root,
    chain: &[(Vec<u8>, Vec<u8>)],
    now: u64,
) -> Result<Root, Error> {
    let mut current = trusted.clone();
    for (doc, sig) in chain {
        current = verify_root_step(&current, doc, sig)?;
    }
    if now >= current.expires {
        return Err(Error::Expired {
            what: format!("root metadata version {}", current.version),
            expires: current.expires,
            now,
        });
    }
    Ok(current)
}

/// One link of [`verify_root_chain`]: `doc`/`sig` must be root version
/// `current.version + 1`, signed by `current`'s threshold and by its own. Expiry
/// is not checked (intermediate roots may have expired). A client fetching the
/// chain checks each link with this before fetching the next, so a bad link
/// stops the walk without downloading the rest.
pub fn verify_root_step(current: &Root, doc: &[u8], sig: &[u8]) -> Result<Root, Error> {
    let next = Root::from_json(doc)?;
    if next.version != current.version + 1 {
        return Err(Error::RootVersion {
            expected: current.version + 1,
            found: next.version,
        });
    }
    verify_signed(doc, sig, &current.public_keys()?, current.threshold).map_err(|source| {
        Error::RotationNotSignedByOld {
            version: next.version,
            source,
        }
    })?;
    verify_signed(doc, sig, &next.public_keys()?, next.threshold).map_err(|source| {
        Error::RotationNotSignedByNew {
            version: next.version,
            source,
        }
    })?;
    Ok(next)
}

/// Checks a channel file: size, signatures by `root`'s threshold, the channel
/// name, expiry, and that its version is not below `highest_seen` (persisted by
/// the client; pass 0 the first time).
pub fn verify_channel(
    bytes: &[u8],
    sig: &[u8],
    name: &str,
    root: &Root,
    now: u64,
    highest_seen: u64,
) -> Result<Channel, Error> {
    let what = channel_path(name);
    if bytes.len() as u64 > MAX_METADATA {
        return Err(malformed(&what, format!("over {MAX_METADATA} bytes")));
    }
    root.verify(&what, bytes, sig)?;
    let channel = Channel::from_json(bytes)?;
    if channel.channel != name {
        return Err(Error::ChannelName {
            expected: name.to_string(),
            found: channel.channel,
        });
    }
    if now >= channel.expires {
        return Err(Error::Expired {
            what,
            expires: channel.expires,
            now,
        });
    }
    if channel.version < highest_seen {
        return Err(Error::ChannelRollback {
            channel: channel.channel,
            version: channel.version,
            highest: highest_seen,
        });
    }
    Ok(channel)
}

/// Checks manifest bytes fetched for `entry`: exactly the pinned size and hash,
/// signed by `release_keys` (the build keys the host trusts), and describing the
/// same board, arch and version as the channel entry.
pub fn verify_manifest(
    bytes: &[u8],
    sig: &[u8],
    entry: &ReleaseEntry,
    release_keys: &[PublicKey],
    threshold: usize,
) -> Result<Manifest, Error> {
    let path = entry.manifest.clone();
    let actual = bytes.len() as u64;
    if actual > entry.manifest_size {
        return Err(Error::ManifestTooLarge {
            path,
            size: entry.manifest_size,
        });
    }
    if actual != entry.manifest_size {
        return Err(Error::ManifestSize {
            path,
            size: entry.manifest_size,
            actual,
        });
    }
    if Sha256::digest(bytes)[..] != entry.manifest_sha256.0 {
        return Err(Error::ManifestHash { path });
    }
    let m = Manifest::parse_signed(bytes, sig, release_keys, threshold).map_err(|source| {
        Error::Release {
            what: path.clone(),
            source,
        }
    })?;
    let mismatch = |field, expected: &str, found: &str| {
        (expected != found).then(|| Error::ManifestMismatch {
            path: path.clone(),
            field,
            expected: expected.to_string(),
            found: found.to_string(),
        })
    };
    if let Some(e) = mismatch("board", &entry.board, &m.board)
        .or_else(|| mismatch("arch", &entry.arch, &m.arch))
        .or_else(|| mismatch("version", entry.version.as_str(), m.version.as_str()))
    {
        return Err(e);
    }
    // Version equality above is textual, so `1.2` vs `1.2.0` is refused too.
    Ok(m)
}

/// Versions never go down: `candidate` must be newer than `current`.
pub fn check_not_downgrade(candidate: &Version, current: &Version) -> Result<(), Error> {
    if candidate > current {
        Ok(())
    } else {
        Err(Error::Downgrade {
            version: candidate.to_string(),
            current: current.to_string(),
        })
    }
}

// ---------------------------------------------------------------- publisher side

/// Every file a publisher writes: temp file in the same directory, fsync,
/// rename, fsync of the directory, missing directories created. World
/// readable: a repository is published as static files, and the web server
/// serving them rarely runs as the publisher.
const REPO_FILE: durable_file::Options = durable_file::Options {
    create_parents: true,
    ..durable_file::Options::new(0o644)
};

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > max {
        return Err(malformed(
            &path.display().to_string(),
            format!("over {max} bytes"),
        ));
    }
    Ok(buf)
}

fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(SIG_SUFFIX);
    PathBuf::from(s)
}

fn sign(doc: &[u8], keys: &[KeyPair]) -> Result<Vec<u8>, Error> {
    release_manifest::sign_document(doc, keys).map_err(|source| Error::Release {
        what: "signing".into(),
        source,
    })
}

/// Loads the newest root of a repository and checks it is signed by its own keys.
pub fn load_root(repo: &Path) -> Result<Root, Error> {
    let path = repo.join(ROOT_FILE);
    let doc = read_capped(&path, MAX_METADATA)?;
    let sig = read_capped(&sig_path(&path), MAX_SIGNATURES)?;
    let root = Root::from_json(&doc)?;
    root.verify(ROOT_FILE, &doc, &sig)?;
    Ok(root)
}

fn write_root(repo: &Path, root: &Root, keys: &[KeyPair]) -> Result<(), Error> {
    let doc = root.to_json();
    let sig = sign(&doc, keys)?;
    let versioned = repo.join(root_path(root.version));
    // The versioned copy first: a client walking the chain finds it before the
    // convenience copy points at it.
    durable_file::write(sig_path(&versioned), &sig, REPO_FILE)?;
    durable_file::write(&versioned, &doc, REPO_FILE)?;
    let top = repo.join(ROOT_FILE);
    durable_file::write(sig_path(&top), &sig, REPO_FILE)?;
    Ok(durable_file::write(&top, &doc, REPO_FILE)?)
}

/// Creates a repository in `repo` (which may exist but must not hold a root) with
/// root version 1 over the public halves of `keys`.
pub fn init(repo: &Path, keys: &[KeyPair], threshold: usize, expires: u64) -> Result<Root, Error> {
    let top = repo.join(ROOT_FILE);
    if top.symlink_metadata().is_ok() {
        return Err(Error::Exists { path: top });
    }
    let publics: Vec<PublicKey> = keys.iter().map(KeyPair::public).collect();
    let root = Root::new(&publics, threshold, 1, expires);
    // Round-trip through the checks so a bad threshold is refused here, not on hosts.
    Root::from_json(&root.to_json())?;
    for d in [CHANNELS_DIR, RELEASES_DIR, CHUNKS_DIR, ROOTS_DIR] {
        let p = repo.join(d);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    write_root(repo, &root, keys)?;
    Ok(root)
}

/// Publishing options.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    pub wave: Wave,
    /// Expiry of the channel metadata written (unix seconds).
    pub expires: u64,
}

/// Copies the release directory into the repository (chunks first, then the
/// manifest) and adds it to `channel`, re-signing the channel with `keys`, which
/// must meet the root's threshold. Returns the new channel document.
pub fn publish(
    release_dir: &Path,
    repo: &Path,
    channel: &str,
    keys: &[KeyPair],
    opts: PublishOptions,
) -> Result<Channel, Error> {
    check_name("channel", channel)?;
    let root = load_root(repo)?;
    let mpath = release_dir.join(release_manifest::MANIFEST_FILE);
    let doc = read_capped(&mpath, 64 << 20)?;
    let sig = read_capped(&sig_path(&mpath), MAX_SIGNATURES)?;
    let manifest = Manifest::from_json(&doc).map_err(|source| Error::Release {
        what: mpath.display().to_string(),
        source,
    })?;
    check_name("board", &manifest.board)?;
    // Chunks: verify each against the manifest while copying, so a corrupt build
    // output never reaches the CDN.
    for image in &manifest.images {
        for chunk in &image.chunks {
            let dst = repo.join(&chunk.file);
            if dst.exists() && file_sha256(&dst)? == chunk.zsha256.0 {
                continue;
            }
            let src = release_dir.join(&chunk.file);
            let bytes = read_capped(&src, release_manifest::MAX_CHUNK_SIZE * 2)?;
            release_manifest::ChunkVerifier::new(chunk)
                .verify(&bytes)
                .map_err(|source| Error::Release {
                    what: src.display().to_string(),
                    source,
                })?;
            durable_file::write(&dst, &bytes, REPO_FILE)?;
        }
    }
    let rel = format!(
        "{RELEASES_DIR}/{}/{}/{}",
        manifest.board,
        manifest.version,
        release_manifest::MANIFEST_FILE
    );
    let dst = repo.join(&rel);
    durable_file::write(sig_path(&dst), &sig, REPO_FILE)?;
    durable_file::write(&dst, &doc, REPO_FILE)?;

    let cpath = repo.join(channel_path(channel));
    let mut ch = if cpath.exists() {
        Channel::from_json(&read_capped(&cpath, MAX_METADATA)?)?
    } else {
        Channel {
            kind: CHANNEL_TYPE.into(),
            channel: channel.into(),
            version: 0,
            expires: 0,
            releases: Vec::new(),
        }
    };
    // Republishing a halted release keeps it halted: only `resume` lifts a halt.
    let mut halted = None;
    ch.releases.retain(|r| {
        let same = r.board == manifest.board && r.version == manifest.version;
        if same {
            halted = r.halted.clone();
        }
        !same
    });
    ch.releases.push(ReleaseEntry {
        board: manifest.board.clone(),
        arch: manifest.arch.clone(),
        version: manifest.version.clone(),
        manifest: rel,
        manifest_sha256: Hex32(Sha256::digest(&doc).into()),
        manifest_size: doc.len() as u64,
        wave: opts.wave,
        halted,
    });
    ch.releases
        .sort_by(|a, b| (&a.board, &a.version).cmp(&(&b.board, &b.version)));
    ch.version += 1;
    ch.expires = opts.expires;
    write_channel(repo, &root, &ch, keys)?;
    Ok(ch)
}

/// Halting options.
#[derive(Debug, Clone, Copy)]
pub struct HaltOptions<'a> {
    /// Only this board's entry (default: the version on every board).
    pub board: Option<&'a str>,
    /// The halt's time (unix seconds).
    pub now: u64,
    /// Expiry of the channel metadata written (unix seconds).
    pub expires: u64,
}

/// Resuming options.
#[derive(Debug, Clone, Copy)]
pub struct ResumeOptions<'a> {
    /// Only this board's entry (default: the version on every board).
    pub board: Option<&'a str>,
    /// Start the wave over at this time (unix seconds). Without it the wave
    /// keeps its start, so every host whose turn came during the halt may
    /// install at once.
    pub restart_wave_at: Option<u64>,
    /// Expiry of the channel metadata written (unix seconds).
    pub expires: u64,
}

/// Stops the rollout of `version` on `channel`: re-signs the channel with the
/// entry marked halted and a higher channel version, so hosts that see it
/// refuse the pre-halt channel from then on. Returns the new channel.
pub fn halt(
    repo: &Path,
    channel: &str,
    version: &Version,
    reason: &str,
    keys: &[KeyPair],
    opts: HaltOptions,
) -> Result<Channel, Error> {
    let halt = Halt {
        reason: reason.to_string(),
        at: opts.now,
    };
    update_channel(repo, channel, keys, opts.expires, |ch| {
        ch.halt_release(version, opts.board, halt)
    })
}

/// Lifts a [`halt`]: re-signs the channel without the mark, with a higher
/// channel version. Returns the new channel.
pub fn resume(
    repo: &Path,
    channel: &str,
    version: &Version,
    keys: &[KeyPair],
    opts: ResumeOptions,
) -> Result<Channel, Error> {
    update_channel(repo, channel, keys, opts.expires, |ch| {
        ch.resume_release(version, opts.board, opts.restart_wave_at)
    })
}

/// Loads an existing channel, checks it is signed by the repository's root
/// (re-signing a tampered file would bless it), applies `edit`, then signs it
/// as the next version with `expires`.
fn update_channel(
    repo: &Path,
    channel: &str,
    keys: &[KeyPair],
    expires: u64,
    edit: impl FnOnce(&mut Channel) -> Result<(), Error>,
) -> Result<Channel, Error> {
    check_name("channel", channel)?;
    let root = load_root(repo)?;
    let what = channel_path(channel);
    let path = repo.join(&what);
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "{} has no channel {channel:?} (publish a release to it first)",
            repo.display()
        )));
    }
    let doc = read_capped(&path, MAX_METADATA)?;
    let sig = read_capped(&sig_path(&path), MAX_SIGNATURES)?;
    root.verify(&what, &doc, &sig)?;
    let mut ch = Channel::from_json(&doc)?;
    if ch.channel != channel {
        return Err(Error::ChannelName {
            expected: channel.to_string(),
            found: ch.channel,
        });
    }
    edit(&mut ch)?;
    ch.version = ch
        .version
        .checked_add(1)
        .ok_or_else(|| Error::Invalid(format!("channel {channel:?} version overflows")))?;
    ch.expires = expires;
    write_channel(repo, &root, &ch, keys)?;
    Ok(ch)
}

/// Signs and writes a channel, refusing keys that do not meet the root threshold
/// (hosts would refuse the result).
pub fn write_channel(
    repo: &Path,
    root: &Root,
    ch: &Channel,
    keys: &[KeyPair],
) -> Result<(), Error> {
    let doc = ch.to_json();
    let sig = sign(&doc, keys)?;
    let what = channel_path(&ch.channel);
    root.verify(&what, &doc, &sig)?;
    let path = repo.join(&what);
    durable_file::write(sig_path(&path), &sig, REPO_FILE)?;
    Ok(durable_file::write(&path, &doc, REPO_FILE)?)
}

fn file_sha256(path: &Path) -> Result<[u8; 32], Error> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Publishes root version n+1 over `new_keys` with `threshold`, signed by
/// `old_keys` (which must meet the current threshold) and `new_keys`, then
/// re-signs every channel with `new_keys`.
pub fn rotate_keys(
    repo: &Path,
    old_keys: &[KeyPair],
    new_keys: &[KeyPair],
    threshold: usize,
    expires: u64,
) -> Result<Root, Error> {
    let current = load_root(repo)?;
    let publics: Vec<PublicKey> = new_keys.iter().map(KeyPair::public).collect();
    let next = Root::new(&publics, threshold, current.version + 1, expires);
    let doc = next.to_json();
    Root::from_json(&doc)?;
    let all: Vec<KeyPair> = old_keys.iter().chain(new_keys).cloned().collect();
    let sig = sign(&doc, &all)?;
    // The same walk a host does, so a rotation hosts would refuse is never published.
    verify_root_chain(&current, &[(doc.clone(), sig)], 0)?;
    write_root(repo, &next, &all)?;
    let dir = repo.join(CHANNELS_DIR);
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let p = entry.map_err(io_err(&dir))?.path();
        if p.extension().is_some_and(|e| e == "json") {
            let ch = Channel::from_json(&read_capped(&p, MAX_METADATA)?)?;
            write_channel(repo, &next, &ch, new_keys)?;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
