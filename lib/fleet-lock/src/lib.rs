//! Fleet reboot coordination: hosts of a group reboot in turn, and a release
//! that the hosts which took it roll back from is halted for the rest.
//!
//! Two back-ends for the reboot slot:
//! - **etcd v3** ([`Semaphore`]): a counting semaphore whose holders are bound
//!   to leases, so a host that never comes back frees its slot by itself;
//!   plus the rollout outcomes ([`Rollout`]). Over etcd's JSON gateway
//!   ([`EtcdClient`]), TLS with a client certificate (feature `tls`).
//! - **FleetLock** ([`FleetLockClient`]): Zincati's protocol, for fleets that
//!   already run airlock or poseidon/fleetlock.
//!
//! And the pure parts: the halt rule ([`halted`]), retry back-off with
//! jitter ([`BackoffPolicy`]), the node id ([`node_id()`]).
//!
//! # Use (the update agent)
//! 1. At start, once the boot is committed healthy: [`Semaphore::release`]
//!    (FleetLock: steady-state), and record [`Outcome::Committed`] or
//!    [`Outcome::RolledBack`] for the release it booted or fell back from.
//!    Before that (the health gate still running): [`Semaphore::keep_alive`],
//!    so a slot taken before the reboot does not run out meanwhile.
//! 2. Before installing a release: [`Rollout::halt_check`] (counts, not
//!    records); do not install a halted one. [`Rollout::report`] reads every
//!    record, with reasons, for an operator (`cairnctl fleet status`).
//! 3. Once staged: record [`Outcome::Installed`], then [`Semaphore::acquire`]
//!    (FleetLock: pre-reboot), retrying with [`Backoff`] while full; keep the
//!    slot alive ([`Semaphore::spawn_keep_alive`]) until the reboot.
//!
//! # etcd keys
//!
//! | key | value | lease |
//! |---|---|---|
//! | `cairn/fleet/<group>/max` | number of slots, decimal (`0` pauses reboots) | none |
//! | `cairn/fleet/<group>/semaphore` | guard: the id of the last host that took a slot; what counts is its mod revision | none |
//! | `cairn/fleet/<group>/holders/<id>` | `{"since": <unix s>}` | the holder's own lease |
//! | `cairn/fleet/<group>/releases/<version>/<id>` | `{"outcome": "installed"\|"committed"\|"rolled_back", "reason": "…", "time": <unix s>}` | none |
//! | `cairn/fleet/<group>/outcomes/<version>/<outcome>/<id>` | the same record, under the host's latest outcome only | none |
//! | `cairn/fleet/<group>/tally/<version>/<outcome>/entered` and `…/left` | empty: the key's etcd version counts the hosts whose outcome became, or stopped being, `<outcome>` | none |
//!
//! `<group>` matches FleetLock's `^[a-zA-Z0-9.-]+$`, `<id>` letters, digits
//! and `._:@-`, `<version>` letters, digits and `.-+`: no name holds a `/`,
//! so no name reaches into another's keys. `etcdctl get --prefix
//! cairn/fleet/<group>/` shows a group.
//!
//! ## Why the semaphore is correct
//! etcd's transactions compare single keys; they cannot count. So:
//! - A slot is a key `holders/<id>`; the slots in use are the keys under
//!   `holders/`. A host reads `max`, `semaphore` and `holders/` in one
//!   read-only transaction (one revision), decides ([`slots::decide`]), and
//!   takes a slot with a transaction that puts `holders/<id>` **and rewrites
//!   `semaphore`**, on condition that `semaphore`'s and `max`'s mod revisions
//!   are still the ones it read.
//! - Every addition of a holder rewrites `semaphore`, so additions are
//!   totally ordered: a take succeeds only if no other take (and no `set_max`)
//!   happened since its read, so it counted every holder there is, bar the
//!   ones gone since. Removals (release, unlock, lease expiry) need no guard:
//!   they only shrink the set, and a count made before one is at worst too high
//!   (a host waits one retry more), never too low. Hence holders ≤ max at
//!   every take.
//! - A losing transaction changes nothing; the host reads again (16 times at
//!   most, then [`EtcdError::Contended`]).
//!
//! airlock keeps `{"total_slots", "holders": [...]}` in one key instead; a
//! name in a JSON list cannot expire, so a dead host keeps its slot until an
//! operator frees it. Keys bound to leases expire on their own.
//!
//! ## Leases and reboots
//! Each holder key has its own lease ([`SemaphoreOptions::lease_ttl`],
//! default 15 min). The agent renews it while it waits to reboot; it cannot
//! while the host is down, so the TTL must cover shutdown, firmware, boot and
//! the health gate. After boot the agent renews it again
//! ([`Semaphore::keep_alive`] finds the lease from the holder key: no local
//! state) and releases once the new boot is committed. A host that never
//! comes back frees its slot one TTL after its last renewal. The trade-off:
//! a longer TTL survives slower reboots but blocks the group longer when a
//! host dies; [`Semaphore::unlock`] frees a slot at once. A reboot that takes
//! longer than the TTL loses its slot: another host may then reboot at the
//! same time (the group briefly has one more host down than `max`).
//!
//! `max` is written by the first host that takes a slot (its
//! `max_rebooting`), then changed only by [`Semaphore::set_max`], so hosts
//! with different settings still agree on one number.
//!
//! ## Outcomes and halts
//! A host's record for a release replaces its previous one, so it counts once
//! with its latest outcome. Every host with a record installed the release;
//! [`halted`] decides from "installed" and "rolled back" (default: 2 hosts or
//! 5 %, whichever first). The agent must not reinstall a release it rolled
//! back from (that would turn its `rolled_back` back into `installed`).
//! [`Rollout::clear`] forgets a release's outcomes (an operator resuming it).
//!
//! Every host checks before each install, so the check must not read every
//! record (a fleet's rollout would be quadratic). A record is written in one
//! transaction with its index entry under its outcome and the release's
//! counters (see [`rollout`]); [`Rollout::halt_check`] reads the six
//! counters and, once halted, a few rollback reasons: one request of the
//! same size for 10 hosts or 100,000. Hosts and operators change outcomes
//! only through [`Rollout`]: a record put or deleted by hand is not counted
//! (a halt check that finds counters not adding up reads every record).

pub mod backoff;
pub mod error;
pub mod etcd;
pub mod fleetlock;
mod http;
pub mod keys;
pub mod node_id;
pub mod outcome;
pub mod rollout;
pub mod semaphore;
pub mod slots;

use std::time::Duration;

pub use backoff::{Backoff, BackoffPolicy};
pub use error::{EtcdError, FleetLockError, InvalidName, NodeIdError, TlsError};
pub use etcd::{EtcdClient, EtcdConfig};
pub use fleetlock::{DEFAULT_GROUP, FleetLockClient, FleetLockConfig};
pub use http::TlsFiles;
#[cfg(feature = "tls")]
pub use http::ca_certs;
pub use keys::validate_group;
pub use node_id::{node_id, node_id_from_file};
pub use outcome::{HaltThreshold, Outcome, OutcomeRecord, ReleaseReport, Tally, halted};
pub use rollout::Rollout;
pub use semaphore::{
    Acquire, Holder, KeepAlive, KeepAliveState, Semaphore, SemaphoreOptions, Status,
};

/// Everything the etcd back-end needs on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub etcd: EtcdConfig,
    pub group: String,
    /// Slots, when the group has none set yet.
    pub max_rebooting: u32,
    pub lease_ttl: Duration,
}

impl FleetConfig {
    /// Group `group` on `endpoints` with the defaults: 1 slot, 15 min leases,
    /// 5 s per request.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>, group: &str) -> Self {
        let d = SemaphoreOptions::default();
        FleetConfig {
            etcd: EtcdConfig::new(endpoints),
            group: group.to_string(),
            max_rebooting: d.max_rebooting,
            lease_ttl: d.lease_ttl,
        }
    }
}

/// A group's semaphore and rollout outcomes over one etcd client.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub semaphore: Semaphore,
    pub rollout: Rollout,
}

impl Fleet {
    /// Checks the configuration and builds the clients (no request yet).
    pub fn new(config: &FleetConfig) -> Result<Fleet, EtcdError> {
        let etcd = EtcdClient::new(&config.etcd)?;
        Ok(Fleet {
            semaphore: Semaphore::new(
                etcd.clone(),
                &config.group,
                SemaphoreOptions {
                    max_rebooting: config.max_rebooting,
                    lease_ttl: config.lease_ttl,
                },
            )?,
            rollout: Rollout::new(etcd, &config.group)?,
        })
    }
}
