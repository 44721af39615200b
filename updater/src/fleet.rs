//! The fleet lock of `[update] reboot = "etcd-lock" | "fleetlock"` (I/O over
//! `fleet-lock`; the decisions are in [`crate::reboot`]).
//!
//! * [`Coordinator`]: this host in its group. Takes and gives back the reboot
//!   slot (etcd semaphore, or a FleetLock server's pre-reboot/steady-state),
//!   renews an etcd slot's lease, and with etcd: sends the rollout outcomes
//!   and refuses to install a halted release ([`Coordinator::halt_gate`]).
//! * The host's id towards the fleet is [`node_id`]: an app-specific hash of
//!   `/etc/machine-id`, never the machine id itself.
//! * Local state in the agent's state directory: `fleet-outbox.json`, the
//!   rollout outcomes not yet in etcd (the agent adds one when it installs,
//!   commits or rolls back a release; cairn-updated sends them, so an etcd
//!   that is unreachable at boot loses none), and `fleet.json`: the FleetLock
//!   slot this host took (FleetLock cannot be asked) and the last halted
//!   release it refused, for `cairnctl status`.
//! * [`Admin`]: `cairnctl fleet` (a group's slots and holders, a release's
//!   outcomes, set-max, unlock).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fleet_lock::{
    Acquire, EtcdClient, EtcdConfig, EtcdError, FleetLockClient, FleetLockConfig, FleetLockError,
    KeepAlive, Outcome, OutcomeRecord, ReleaseReport, Rollout, Semaphore, SemaphoreOptions,
    TlsFiles,
};
use release_manifest::Version;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::{EtcdSettings, HaltThreshold, RebootStrategy, UpdateConfig};
use crate::state::StateDir;

/// The machine id the node id is made from.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Local fleet state ([`FleetState`]).
pub const FLEET_STATE: &str = "fleet.json";
/// Rollout outcomes not yet recorded in etcd ([`Pending`]).
pub const OUTBOX: &str = "fleet-outbox.json";
/// Outcomes kept while etcd is unreachable (the oldest go first).
const MAX_OUTBOX: usize = 64;
/// One request to etcd (per endpoint) or to the FleetLock server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serializes the read-modify-write of `fleet.json` and `fleet-outbox.json`
/// between the service's threads (its timer and an update asked for over
/// D-Bus).
static LOCAL: Mutex<()> = Mutex::new(());

fn local_lock() -> std::sync::MutexGuard<'static, ()> {
    LOCAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This host's id towards the fleet: `fleet_lock::node_id` of the machine id
/// file at `path` (normally [`MACHINE_ID`]).
pub fn node_id(path: &Path) -> Result<String, Error> {
    fleet_lock::node_id_from_file(path).map_err(|e| {
        Error::Fleet(format!(
            "the fleet lock needs this host's node id, a hash of {}: {e}",
            path.display()
        ))
    })
}

fn threshold(t: HaltThreshold) -> fleet_lock::HaltThreshold {
    fleet_lock::HaltThreshold {
        hosts: t.hosts,
        percent: t.percent,
    }
}

/// The etcd client, semaphore and rollout of `[update.etcd]`.
fn etcd_parts(e: &EtcdSettings) -> Result<(EtcdClient, Semaphore, Rollout), Error> {
    let fail = |err: EtcdError| Error::Fleet(format!("[update.etcd]: {err}"));
    let etcd = EtcdClient::new(&EtcdConfig {
        endpoints: e.endpoints.clone(),
        timeout: REQUEST_TIMEOUT,
        tls: TlsFiles {
            ca_file: e.ca_file.clone(),
            cert_file: e.cert_file.clone(),
            key_file: e.key_file.clone(),
        },
    })
    .map_err(fail)?;
    let semaphore = Semaphore::new(
        etcd.clone(),
        &e.group,
        SemaphoreOptions {
            // Validated to 1..=100000 by host-config.
            max_rebooting: u32::try_from(e.max_rebooting).unwrap_or(u32::MAX),
            lease_ttl: Duration::from_secs(e.lease_seconds),
        },
    )
    .map_err(fail)?;
    let rollout = Rollout::new(etcd.clone(), &e.group).map_err(fail)?;
    Ok((etcd, semaphore, rollout))
}

/// The slot a FleetLock server granted this host (recorded locally: the
/// protocol has no way to ask).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSlot {
    pub url: String,
    pub group: String,
    /// When pre-reboot succeeded (unix seconds).
    pub since: u64,
}

/// A release this host did not install because its rollout is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halted {
    pub version: String,
    pub group: String,
    /// Counts, threshold and every host's reason, one line.
    pub detail: String,
    /// When it was last refused (unix seconds).
    pub time: u64,
}

/// `fleet.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleetlock_slot: Option<HeldSlot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
}

/// One outcome waiting in `fleet-outbox.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub version: String,
    #[serde(flatten)]
    pub record: OutcomeRecord,
}

/// Reads `fleet.json` (missing: empty).
pub fn fleet_state(state: &StateDir) -> Result<FleetState, Error> {
    Ok(state.load(FLEET_STATE)?.unwrap_or_default())
}

fn update_fleet_state(state: &StateDir, f: impl FnOnce(&mut FleetState)) -> Result<(), Error> {
    let _g = local_lock();
    let mut s = fleet_state(state)?;
    let before = s.clone();
    f(&mut s);
    if s != before {
        state.store(FLEET_STATE, &s)?;
    }
    Ok(())
}

/// The outcomes not yet in etcd.
pub fn outbox(state: &StateDir) -> Result<Vec<Pending>, Error> {
    Ok(state.load(OUTBOX)?.unwrap_or_default())
}

/// Queues `outcome` of `version` for etcd (the agent calls this when it
/// installs, commits or rolls back a release under `etcd-lock`).
pub fn queue_outcome(
    state: &StateDir,
    version: &str,
    outcome: Outcome,
    reason: &str,
    time: u64,
) -> Result<(), Error> {
    let _g = local_lock();
    let mut q = outbox(state)?;
    q.push(Pending {
        version: version.to_string(),
        record: OutcomeRecord {
            outcome,
            reason: reason.to_string(),
            time,
        },
    });
    if q.len() > MAX_OUTBOX {
        let drop = q.len() - MAX_OUTBOX;
        q.drain(..drop);
    }
    state.store(OUTBOX, &q)
}

/// What [`Coordinator::acquire`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAnswer {
    /// A slot is now this host's; `held` of `max` slots are taken (when known).
    Taken { held: Option<(usize, u32)> },
    /// This host held a slot already (its lease renewed).
    AlreadyHeld,
    /// No slot free: who holds them, as a line.
    Full(String),
    /// The lock service could not be asked.
    Failed(String),
}

enum Backend {
    Etcd {
        etcd: EtcdClient,
        semaphore: Semaphore,
        rollout: Rollout,
        lease_ttl: Duration,
    },
    FleetLock {
        client: FleetLockClient,
        url: String,
    },
}

/// This host in its fleet group (a lock strategy is configured).
pub struct Coordinator {
    pub strategy: RebootStrategy,
    /// [`node_id`].
    pub id: String,
    pub group: String,
    backend: Backend,
    threshold: fleet_lock::HaltThreshold,
    state: StateDir,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("strategy", &self.strategy)
            .field("id", &self.id)
            .field("group", &self.group)
            .finish()
    }
}

impl Coordinator {
    /// The coordinator of `cfg`'s lock strategy, `None` for the others. Reads
    /// the machine id at `machine_id` and the TLS files; sends nothing yet.
    pub fn new(
        cfg: &UpdateConfig,
        machine_id: &Path,
        state_dir: &Path,
    ) -> Result<Option<Coordinator>, Error> {
        if !crate::reboot::is_lock(cfg.reboot) {
            return Ok(None);
        }
        let id = node_id(machine_id)?;
        let (group, backend) = match (cfg.reboot, &cfg.etcd, &cfg.fleetlock) {
            (RebootStrategy::EtcdLock, Some(e), _) => {
                let (etcd, semaphore, rollout) = etcd_parts(e)?;
                let backend = Backend::Etcd {
                    etcd,
                    semaphore,
                    rollout,
                    lease_ttl: Duration::from_secs(e.lease_seconds),
                };
                (e.group.clone(), backend)
            }
            (RebootStrategy::FleetLock, _, Some(f)) => {
                let client = FleetLockClient::new(&FleetLockConfig {
                    group: f.group.clone(),
                    timeout: REQUEST_TIMEOUT,
                    ..FleetLockConfig::new(&f.url, &id)
                })
                .map_err(|e| Error::Fleet(format!("[update.fleetlock]: {e}")))?;
                let backend = Backend::FleetLock {
                    client,
                    url: f.url.clone(),
                };
                (f.group.clone(), backend)
            }
            // host-config refuses a lock strategy without its table.
            (s, ..) => {
                return Err(Error::Config(format!(
                    "reboot = \"{}\" needs its [update.etcd] or [update.fleetlock] table",
                    s.as_str()
                )));
            }
        };
        Ok(Some(Coordinator {
            strategy: cfg.reboot,
            id,
            group,
            backend,
            threshold: threshold(cfg.halt_after_rollbacks),
            state: StateDir::new(state_dir),
        }))
    }

    /// Whether rollout outcomes are recorded (etcd).
    pub fn records_outcomes(&self) -> bool {
        matches!(self.backend, Backend::Etcd { .. })
    }

    /// The back-off seed: the node id's first 64 bits, so each host has its
    /// own jitter and keeps it across restarts.
    pub fn backoff_seed(&self) -> u64 {
        self.id
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    }

    /// Where the lock lives, for log lines.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Etcd { .. } => format!("group {}", self.group),
            Backend::FleetLock { url, .. } => {
                format!("group {} of FleetLock server {url}", self.group)
            }
        }
    }

    /// Asks for a reboot slot (etcd: acquire; FleetLock: pre-reboot).
    pub fn acquire(&self) -> SlotAnswer {
        match &self.backend {
            Backend::Etcd { semaphore, .. } => match semaphore.acquire(&self.id) {
                Ok(Acquire::Taken) => SlotAnswer::Taken {
                    held: semaphore.status().ok().map(|s| {
                        let max = s.max.unwrap_or(semaphore.options().max_rebooting);
                        (s.holders.len(), max)
                    }),
                },
                Ok(Acquire::AlreadyHeld) => SlotAnswer::AlreadyHeld,
                Ok(Acquire::Full { max: 0, .. }) => SlotAnswer::Full(format!(
                    "reboots are paused in group {} (0 slots; `cairnctl fleet set-max N` resumes them)",
                    self.group
                )),
                Ok(Acquire::Full { max, holders }) => SlotAnswer::Full(format!(
                    "{}/{max} held by {}",
                    holders.len(),
                    holders.join(", ")
                )),
                Err(e) => SlotAnswer::Failed(e.to_string()),
            },
            Backend::FleetLock { client, url } => match client.pre_reboot() {
                Ok(()) => {
                    let slot = HeldSlot {
                        url: url.clone(),
                        group: self.group.clone(),
                        since: now(),
                    };
                    match update_fleet_state(&self.state, |s| s.fleetlock_slot = Some(slot)) {
                        Ok(()) => SlotAnswer::Taken { held: None },
                        // Not rebooting with a slot nobody would give back.
                        Err(e) => {
                            let _ = client.steady_state();
                            SlotAnswer::Failed(format!("recording the FleetLock slot: {e}"))
                        }
                    }
                }
                Err(FleetLockError::Refused { kind, value, .. }) => {
                    SlotAnswer::Full(format!("the FleetLock server refused ({kind}: {value})"))
                }
                Err(e) => SlotAnswer::Failed(e.to_string()),
            },
        }
    }

    /// Gives this host's slot back (etcd: release; FleetLock: steady-state).
    /// True when a slot was held (etcd) or recorded as held (FleetLock).
    pub fn release(&self) -> Result<bool, Error> {
        match &self.backend {
            Backend::Etcd { semaphore, .. } => semaphore
                .release(&self.id)
                .map_err(|e| Error::Fleet(format!("releasing the reboot slot: {e}"))),
            Backend::FleetLock { client, .. } => {
                client
                    .steady_state()
                    .map_err(|e| Error::Fleet(format!("reporting steady-state: {e}")))?;
                let held = fleet_state(&self.state)?.fleetlock_slot.is_some();
                update_fleet_state(&self.state, |s| s.fleetlock_slot = None)?;
                Ok(held)
            }
        }
    }

    /// Whether this host holds a slot. etcd: asks (and renews the lease if
    /// so); `None` when etcd does not answer. FleetLock: the local record.
    pub fn holds_slot(&self) -> Option<bool> {
        match &self.backend {
            Backend::Etcd { semaphore, .. } => {
                semaphore.keep_alive(&self.id).ok().map(|t| t.is_some())
            }
            Backend::FleetLock { .. } => fleet_state(&self.state)
                .ok()
                .map(|s| s.fleetlock_slot.is_some()),
        }
    }

    /// Renews this host's etcd slot on a thread (every third of the lease)
    /// until the handle drops or the slot is gone. `None` for FleetLock.
    pub fn keep_alive(&self) -> Result<Option<KeepAlive>, Error> {
        match &self.backend {
            Backend::Etcd {
                semaphore,
                lease_ttl,
                ..
            } => semaphore
                .spawn_keep_alive(&self.id, (*lease_ttl / 3).max(Duration::from_secs(1)))
                .map(Some)
                .map_err(|e| Error::Fleet(e.to_string())),
            Backend::FleetLock { .. } => Ok(None),
        }
    }

    /// The lease TTL of an etcd slot.
    pub fn lease_ttl(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Etcd { lease_ttl, .. } => Some(*lease_ttl),
            Backend::FleetLock { .. } => None,
        }
    }

    /// Before installing `version` (etcd): `Err(Halted)` when the group's
    /// outcomes halt it (also kept in `fleet.json` for the status);
    /// `Err(Fleet)` when etcd cannot tell (nothing is installed blind).
    pub fn halt_gate(&self, version: &Version) -> Result<(), Error> {
        let Backend::Etcd { rollout, .. } = &self.backend else {
            return Ok(());
        };
        let report = rollout.halt_check(version.as_str(), self.threshold).map_err(|e| {
            Error::Fleet(format!(
                "reading the rollout outcomes of {version} in group {}: {e}; not installing it until etcd answers",
                self.group
            ))
        })?;
        if !report.halted {
            return self.clear_halt();
        }
        let detail = halt_detail(&report, &self.group, self.threshold);
        let halted = Halted {
            version: version.to_string(),
            group: self.group.clone(),
            detail: detail.clone(),
            time: now(),
        };
        update_fleet_state(&self.state, |s| s.halted = Some(halted))?;
        Err(Error::Halted {
            version: version.to_string(),
            detail,
        })
    }

    /// Forgets a halted release refused earlier (a release installed, or
    /// nothing to install).
    pub fn clear_halt(&self) -> Result<(), Error> {
        update_fleet_state(&self.state, |s| s.halted = None)
    }

    /// Sends the queued outcomes to etcd, oldest first; returns how many were
    /// sent. Stops at the first failure (the rest wait for the next cycle).
    pub fn flush_outcomes(&self) -> Result<usize, Error> {
        let Backend::Etcd { rollout, .. } = &self.backend else {
            return Ok(0);
        };
        let queued = outbox(&self.state)?;
        let mut sent = Vec::new();
        let mut failure = None;
        for p in &queued {
            match rollout.record_at(&p.version, &self.id, &p.record) {
                Ok(()) => sent.push(p.clone()),
                // A version etcd keys cannot hold is dropped, not retried forever.
                Err(EtcdError::InvalidName(e)) => {
                    sent.push(p.clone());
                    failure = Some(Error::Fleet(format!(
                        "dropped the outcome of {}: {e}",
                        p.version
                    )));
                }
                Err(e) => {
                    failure = Some(Error::Fleet(format!(
                        "recording outcome {} of {} in etcd: {e}; kept for the next try",
                        p.record.outcome, p.version
                    )));
                    break;
                }
            }
        }
        if !sent.is_empty() {
            let _g = local_lock();
            // Entries queued meanwhile stay.
            let mut now = outbox(&self.state)?;
            for s in &sent {
                if let Some(i) = now.iter().position(|p| p == s) {
                    now.remove(i);
                }
            }
            self.state.store(OUTBOX, &now)?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(sent.len()),
        }
    }

    /// This host's slot as `cairnctl status` shows it.
    pub fn status(&self) -> RebootStatus {
        let local = fleet_state(&self.state).unwrap_or_default();
        let mut s = RebootStatus {
            strategy: self.strategy.as_str().into(),
            group: Some(self.group.clone()),
            node_id: Some(self.id.clone()),
            halted: local.halted,
            outcomes_unsent: outbox(&self.state).map_or(0, |q| q.len()),
            ..RebootStatus::default()
        };
        match &self.backend {
            Backend::Etcd { semaphore, .. } => match semaphore.status() {
                Ok(st) => {
                    let mine = st.holders.iter().find(|h| h.id == self.id);
                    s.holds_slot = Some(mine.is_some());
                    s.max = Some(st.max.unwrap_or(semaphore.options().max_rebooting));
                    s.held = Some(st.holders.len());
                    s.since = mine.map(|h| h.since);
                    s.lease_seconds_left = mine.and_then(|h| h.ttl).map(|t| t.as_secs());
                }
                Err(e) => s.error = Some(e.to_string()),
            },
            Backend::FleetLock { url, .. } => {
                s.url = Some(url.clone());
                s.holds_slot = Some(local.fleetlock_slot.is_some());
                s.since = local.fleetlock_slot.map(|h| h.since);
            }
        }
        s
    }

    /// The etcd client (tests, `cairnctl fleet`).
    pub fn etcd(&self) -> Option<&EtcdClient> {
        match &self.backend {
            Backend::Etcd { etcd, .. } => Some(etcd),
            Backend::FleetLock { .. } => None,
        }
    }
}

/// The reboot strategy and this host's slot (`Status.reboot`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootStatus {
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Whether this host holds a reboot slot (`null`: no lock strategy, or
    /// the lock could not be asked).
    pub holds_slot: Option<bool>,
    /// etcd: the group's slots and how many are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<usize>,
    /// When this host took its slot (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// etcd: the time left on this host's slot lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds_left: Option<u64>,
    /// Why the lock could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last release refused because its rollout is halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
    /// Rollout outcomes waiting for etcd.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outcomes_unsent: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RebootStatus {
    /// The status of `strategy` with `fleet` (when a lock strategy is set).
    pub fn of(strategy: RebootStrategy, fleet: Option<&Coordinator>) -> RebootStatus {
        match fleet {
            Some(c) => c.status(),
            None => RebootStatus {
                strategy: strategy.as_str().into(),
                ..RebootStatus::default()
            },
        }
    }
}

/// The halt explained in one line: counts, the threshold, every rollback's
/// host and reason.
pub fn halt_detail(r: &ReleaseReport, group: &str, t: fleet_lock::HaltThreshold) -> String {
    let reasons: Vec<String> = r
        .rollbacks
        .iter()
        .map(|(id, why)| format!("{id}: {}", why.replace('\n', " ")))
        .collect();
    format!(
        "{} of {} hosts in group {group} that installed it rolled back (halts at {} hosts or {} %): {}",
        r.rolled_back,
        r.installed,
        t.hosts,
        t.percent,
        reasons.join("; ")
    )
}

/// A slot holder for `cairnctl fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct HolderView {
    pub id: String,
    pub since: u64,
    /// `null`: the lease just ran out, or the key has none.
    pub lease_seconds_left: Option<u64>,
    pub this_host: bool,
}

/// A release's outcomes for `cairnctl fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    pub version: String,
    pub installed: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub halted: bool,
    pub threshold: fleet_lock::HaltThreshold,
    pub rollbacks: Vec<RollbackView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackView {
    pub id: String,
    pub reason: String,
}

/// `cairnctl fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub group: String,
    /// The group's `max` key (`null`: not set yet; the first host to take a
    /// slot writes its `max_rebooting`).
    pub max: Option<u32>,
    /// This host's `max_rebooting`, used while `max` is not set.
    pub configured_max: u32,
    pub holders: Vec<HolderView>,
    /// The release asked for, or the newest with outcomes (`null`: none).
    pub release: Option<ReleaseView>,
}

/// `cairnctl fleet`: a group's semaphore and outcomes in etcd.
pub struct Admin {
    pub group: String,
    etcd: EtcdClient,
    semaphore: Semaphore,
    rollout: Rollout,
    threshold: fleet_lock::HaltThreshold,
    /// This host's node id, when its machine id is readable.
    this_host: Option<String>,
}

impl Admin {
    /// From `[update.etcd]`; refused unless `reboot = "etcd-lock"`.
    pub fn new(cfg: &UpdateConfig, machine_id: &Path) -> Result<Admin, Error> {
        let etcd_settings = match (&cfg.etcd, cfg.reboot) {
            (Some(e), RebootStrategy::EtcdLock) => e,
            _ => {
                return Err(Error::Config(format!(
                    "cairnctl fleet works on the etcd-lock reboot semaphore: set [update] reboot = \"etcd-lock\" and configure [update.etcd] (endpoints, group) in the host config (this host has reboot = \"{}\")",
                    cfg.reboot.as_str()
                )));
            }
        };
        let (etcd, semaphore, rollout) = etcd_parts(etcd_settings)?;
        Ok(Admin {
            group: etcd_settings.group.clone(),
            etcd,
            semaphore,
            rollout,
            threshold: threshold(cfg.halt_after_rollbacks),
            this_host: node_id(machine_id).ok(),
        })
    }

    fn fail(what: &str) -> impl Fn(EtcdError) -> Error + '_ {
        move |e| Error::Fleet(format!("{what}: {e}"))
    }

    /// The slots and holders, and `version`'s outcomes (or the newest
    /// release's with outcomes).
    pub fn status(&self, version: Option<&Version>) -> Result<GroupView, Error> {
        let st = self
            .semaphore
            .status()
            .map_err(Self::fail("reading the reboot semaphore"))?;
        let holders = st
            .holders
            .into_iter()
            .map(|h| HolderView {
                this_host: self.this_host.as_deref() == Some(h.id.as_str()),
                id: h.id,
                since: h.since,
                lease_seconds_left: h.ttl.map(|t| t.as_secs()),
            })
            .collect();
        let version = match version {
            Some(v) => Some(v.to_string()),
            None => self.newest_release()?,
        };
        let release = match version {
            None => None,
            Some(v) => {
                let r = self
                    .rollout
                    .report(&v, self.threshold)
                    .map_err(Self::fail("reading the rollout outcomes"))?;
                Some(ReleaseView {
                    version: r.version,
                    installed: r.installed,
                    committed: r.committed,
                    rolled_back: r.rolled_back,
                    halted: r.halted,
                    threshold: self.threshold,
                    rollbacks: r
                        .rollbacks
                        .into_iter()
                        .map(|(id, reason)| RollbackView { id, reason })
                        .collect(),
                })
            }
        };
        Ok(GroupView {
            group: self.group.clone(),
            max: st.max,
            configured_max: self.semaphore.options().max_rebooting,
            holders,
            release,
        })
    }

    /// The newest version (by version order) with outcomes in the group.
    fn newest_release(&self) -> Result<Option<String>, Error> {
        let prefix = format!("cairn/fleet/{}/releases/", self.group);
        let kvs = self
            .etcd
            .get_prefix(&prefix)
            .map_err(Self::fail("listing the releases with outcomes"))?
            .kvs;
        let newest = kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str();
                let v = key.strip_prefix(&prefix)?.split('/').next()?.to_string();
                Version::parse(&v).ok()
            })
            .max();
        Ok(newest.map(|v| v.to_string()))
    }

    /// Sets the number of slots; returns the previous value.
    pub fn set_max(&self, max: u32) -> Result<Option<u32>, Error> {
        self.semaphore
            .set_max(max)
            .map_err(Self::fail("setting the number of reboot slots"))
    }

    /// Frees `id`'s slot; false if it held none.
    pub fn unlock(&self, id: &str) -> Result<bool, Error> {
        self.semaphore
            .unlock(id)
            .map_err(Self::fail("freeing the reboot slot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_lines_name_counts_threshold_and_reasons() {
        let rec = |o, r: &str| OutcomeRecord {
            outcome: o,
            reason: r.into(),
            time: 1,
        };
        let r = ReleaseReport::new(
            "1.1.0",
            vec![
                ("b".into(), rec(Outcome::RolledBack, "health\ncheck failed")),
                ("a".into(), rec(Outcome::RolledBack, "tries used up")),
                ("c".into(), rec(Outcome::Committed, "")),
            ],
            fleet_lock::HaltThreshold::default(),
        );
        assert_eq!(
            halt_detail(&r, "web", fleet_lock::HaltThreshold::default()),
            "2 of 3 hosts in group web that installed it rolled back (halts at 2 hosts or 5 %): a: tries used up; b: health check failed"
        );
    }

    #[test]
    fn the_outbox_keeps_order_and_a_bound() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        assert!(outbox(&s).unwrap().is_empty());
        for i in 0..(MAX_OUTBOX + 3) {
            queue_outcome(&s, &format!("1.{i}.0"), Outcome::Installed, "", i as u64).unwrap();
        }
        let q = outbox(&s).unwrap();
        assert_eq!(q.len(), MAX_OUTBOX);
        assert_eq!(q[0].version, "1.3.0");
        assert_eq!(q.last().unwrap().record.time, (MAX_OUTBOX + 2) as u64);
    }

    #[test]
    fn a_node_id_error_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("machine-id");
        let e = node_id(&missing).unwrap_err().to_string();
        assert!(e.contains("machine-id") && e.contains("node id"), "{e}");
        std::fs::write(&missing, "").unwrap();
        let e = node_id(&missing).unwrap_err().to_string();
        assert!(e.contains("not initialized"), "{e}");
        std::fs::write(&missing, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            node_id(&missing).unwrap(),
            "1001ca318bd7491ea216a805e84ee0ee"
        );
    }
}
