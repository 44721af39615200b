//! The Cairn update agent: check a release repository, write the inactive A/B
//! slot, verify every byte, flip the GPT attributes, detect rollbacks.
//!
//! # Flow ([`Agent`])
//! 1. [`Agent::check`]: walk the repository's root chain from the trusted root
//!    (key rotation), fetch and verify the channel (threshold signatures, expiry,
//!    metadata version not below the highest seen), then [`plan::choose`] the newest
//!    release for this board that is newer than the booted version, has not failed
//!    here, and whose rollout wave has reached this host's seed.
//! 2. [`Agent::apply`]: fetch the manifest (read at most its pinned size + 1, check
//!    the pinned sha256 and its build signature), then
//!    * mark the inactive slot (0,0,0) with a crash-safe GPT commit **before**
//!      writing anything;
//!    * stream the usr chunks through [`pipeline`]: exact-size download (Range
//!      resume after a broken connection), zsize/zsha256 checked before
//!      decompressing, decompression capped at the signed size, O_DIRECT write,
//!      read back from the device and compared, dm-verity hashed on the way;
//!      every 64 MiB (or second) an fdatasync, then `progress.json` records the chunks it
//!      covers (so a restart resumes at the first chunk not known to be durable,
//!      after re-checking the earlier ones against their signed sha256);
//!    * the slot's dm-verity tree, recomputed from the bytes read back
//!      ([`verity_tree::VerityStream`]), must give the signed root hash;
//!    * boot files: `cairn/<slot>/*.tmp`, fsync, read back and check `boot.sig`
//!      against the host's trusted keys, rename, fsync the folder;
//!    * only then (2,3,0) via `gpt_slots::mark_updated` and a crash-safe commit.
//!
//!    Nothing unverified is ever made bootable, and the booted slot's data and
//!    boot files are never opened for writing ([`target::Target`] refuses).
//! 3. [`Agent::reconcile`] at startup: a pending slot that was not booted and has
//!    no tries left is a rollback — its version goes to the failed list in
//!    `history.json` and is never installed again (Flatcar #1924); a pending slot
//!    that booted and was marked successful is recorded as a success.
//!
//! 4. Fleets ([`fleet`], [`reboot`], [`daemon`]): with `reboot = "etcd-lock"`
//!    or `"fleetlock"` a staged update reboots only once the host holds one
//!    of its group's reboot slots (inside a maintenance window when windows
//!    are set), and the slot goes back once the booted slot is committed.
//!    With etcd, hosts record what became of each release (installed,
//!    committed, rolled back) and do not install one whose rollout enough
//!    of them rolled back from (halted).
//!
//! `cairn-updated` serves the agent on the system bus ([`dbus`]: Status, Check,
//! Update, Rollback, History, Progress and StateChanged signals); `cairnctl`
//! talks to it there, or runs the agent in-process with explicit paths.
//!
//! Pure decisions ([`plan`], [`config::in_window`], wave math in `release-repo`) are
//! separate from I/O so they are table-tested.

pub mod agent;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod delta;
pub mod diagnose;
pub mod fleet;
pub mod host;
pub mod http;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod reboot;
pub mod setup;
pub mod state;
pub mod target;

#[cfg(feature = "bench")]
pub mod fixture;

pub use agent::{Agent, ApplyOutcome, CheckOutcome, Event, Status};
pub use host::Host;
pub use target::Target;

/// Errors of the agent library; each names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("state: {0}")]
    State(String),
    #[error("host: {0}")]
    Host(String),
    // The cause is part of the message and deliberately not a `source()`:
    // callers print anyhow chains, which would repeat it.
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error(transparent)]
    Fetch(#[from] http::FetchError),
    #[error(transparent)]
    Repo(#[from] release_repo::Error),
    /// A durable write or fsync (the step and the path are in the message).
    #[error(transparent)]
    File(#[from] durable_file::Error),
    #[error("{what}: {cause}")]
    Release {
        what: String,
        cause: release_manifest::Error,
    },
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("refusing to write slot {0}: it is the booted slot")]
    ActiveSlot(&'static str),
    #[error("slot {slot} holds {have} bytes, the release needs {need}")]
    SlotTooSmall {
        slot: &'static str,
        need: u64,
        have: u64,
    },
    #[error("boot files: {0}")]
    BootSig(boot_sig::VerifyError),
    #[error("read-back check failed: {0}")]
    ReadBack(String),
    #[error("release: {0}")]
    BadRelease(String),
    #[error("stopped after {0} chunks (test hook)")]
    Interrupted(u64),
    #[error("rollback refused: {0}")]
    Rollback(String),
    /// The booted slot has not been marked good yet: the other slot is the only
    /// proven fallback and must not be touched (issue 11, item 1).
    #[error(
        "slot {slot} is on trial (not yet marked good by the health checks): the other slot is the fallback and is not written until this boot is committed; wait for cairn-mark-good (see `cairnctl status`), the update installs after that"
    )]
    OnTrial { slot: &'static str },
    /// `cairnctl rollback` set the other slot to boot next and the host has
    /// not rebooted yet: writing that slot would undo the rollback.
    #[error(
        "slot {slot} is set to boot next by a rollback that waits for a reboot: nothing is written over it; reboot to finish the rollback, then update"
    )]
    RollbackPending { slot: &'static str },
    /// Metadata expired by the effective time, with what the operator can do.
    #[error("{}", agent::expired_message(what, *expires, *clock, *floor))]
    Expired {
        what: String,
        expires: u64,
        /// The system clock (unix seconds).
        clock: u64,
        /// The trusted time floor (unix seconds; 0 if none).
        floor: u64,
    },
    /// `cairnctl update --version V` cannot install V.
    #[error("version {version}: {why}")]
    VersionRefused { version: String, why: String },
    /// The fleet lock (etcd, FleetLock) or the host's node id.
    #[error("{0}")]
    Fleet(String),
    /// The group's rollout outcomes halt this release: it is not installed.
    #[error(
        "not installing {version}: its rollout is halted: {detail}; `cairnctl update --version {version}` installs it anyway"
    )]
    Halted { version: String, detail: String },
}

impl Error {
    /// Not a failure but "not now": this boot must be committed, or a
    /// rollback's reboot must happen, before the other slot may be written.
    pub fn waits_for_boot(&self) -> bool {
        matches!(self, Error::OnTrial { .. } | Error::RollbackPending { .. })
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            cause: source,
        }
    }
}
