//! The reboot semaphore in etcd (I/O; the decisions are in `slots.rs`).
//! The key layout and why it is correct are in the crate documentation.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::EtcdError;
use crate::etcd::{CmpOp, Compare, EtcdClient, KeyValue, LeaseId, Target, TxnOp, TxnOpResult};
use crate::keys::{GroupKeys, validate_id};
use crate::slots::{Decision, HolderRecord, decide, parse_max};

/// Transactions tried in a row before giving up when other hosts keep
/// changing the semaphore.
const ATTEMPTS: u32 = 16;

/// The semaphore's settings on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreOptions {
    /// The number of slots when the group has no `max` key yet: the first
    /// host to take a slot writes it; after that the key rules (`set_max`).
    pub max_rebooting: u32,
    /// A holder's lease. It must outlast a reboot: the slot is kept while the
    /// host reboots and until its new boot is committed, and the agent is not
    /// there to renew it from shutdown until it starts again.
    pub lease_ttl: Duration,
}

impl Default for SemaphoreOptions {
    /// 1 slot; 15 min: a slow server's firmware, a reboot and a health
    /// gate fit, and a host that never comes back blocks its group for at
    /// most 15 min.
    fn default() -> Self {
        SemaphoreOptions {
            max_rebooting: 1,
            lease_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// The answer to [`Semaphore::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// A slot is now this host's.
    Taken,
    /// This host held a slot already; its lease was renewed.
    AlreadyHeld,
    /// Every slot is taken (`max` 0: reboots are paused).
    Full { max: u32, holders: Vec<String> },
}

impl Acquire {
    /// Whether the host holds a slot now (and may reboot).
    pub fn holds(&self) -> bool {
        !matches!(self, Acquire::Full { .. })
    }
}

/// A slot holder as [`Semaphore::status`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    /// When the slot was taken (seconds since the Unix epoch; 0 if unknown).
    pub since: u64,
    pub lease: LeaseId,
    /// The lease's time left; `None` if it just expired (or the key has no
    /// lease: then only `unlock` frees it).
    pub ttl: Option<Duration>,
}

/// The semaphore of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub group: String,
    /// The `max` key; `None` until a host takes the first slot or an
    /// operator sets it.
    pub max: Option<u32>,
    /// Holders sorted by id.
    pub holders: Vec<Holder>,
}

/// A group's reboot semaphore.
#[derive(Debug, Clone)]
pub struct Semaphore {
    etcd: EtcdClient,
    group: String,
    keys: GroupKeys,
    options: SemaphoreOptions,
}

/// The semaphore's keys at one revision.
struct Snapshot {
    max: Option<KeyValue>,
    guard_mod: i64,
    holders: Vec<(String, KeyValue)>,
}

impl Snapshot {
    fn ids(&self) -> Vec<String> {
        self.holders.iter().map(|(id, _)| id.clone()).collect()
    }

    fn holder(&self, id: &str) -> Option<&KeyValue> {
        self.holders.iter().find(|(h, _)| h == id).map(|(_, kv)| kv)
    }
}

impl Semaphore {
    pub fn new(
        etcd: EtcdClient,
        group: &str,
        options: SemaphoreOptions,
    ) -> Result<Semaphore, EtcdError> {
        if options.lease_ttl < Duration::from_secs(2) {
            return Err(EtcdError::Config(format!(
                "lease TTL {:?} is below etcd's minimum of 2 s",
                options.lease_ttl
            )));
        }
        Ok(Semaphore {
            keys: GroupKeys::new(group)?,
            group: group.to_string(),
            etcd,
            options,
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn options(&self) -> SemaphoreOptions {
        self.options
    }

    /// Takes a reboot slot for `id` (FleetLock's pre-reboot). Re-entrant: a
    /// holder asking again gets [`Acquire::AlreadyHeld`] and its lease renewed.
    pub fn acquire(&self, id: &str) -> Result<Acquire, EtcdError> {
        validate_id(id)?;
        let mut lease: Option<LeaseId> = None;
        let result = self.acquire_with(id, &mut lease);
        // A lease granted but not bound (full, or an error) is not needed.
        if let (Some(l), Ok(Acquire::Full { .. }) | Err(_)) = (lease, &result) {
            let _ = self.etcd.lease_revoke(l);
        }
        result
    }

    fn acquire_with(&self, id: &str, lease: &mut Option<LeaseId>) -> Result<Acquire, EtcdError> {
        for _ in 0..ATTEMPTS {
            let snap = self.snapshot()?;
            let max = match &snap.max {
                Some(kv) => self.max_value(kv)?,
                None => self.options.max_rebooting,
            };
            match decide(max, &snap.ids(), id) {
                Decision::AlreadyHeld => {
                    let held = snap.holder(id).map_or(0, |kv| kv.lease);
                    if held == 0 || self.etcd.lease_keep_alive(held)?.is_some() {
                        if let Some(l) = lease.take() {
                            let _ = self.etcd.lease_revoke(l);
                        }
                        return Ok(Acquire::AlreadyHeld);
                    }
                    // Its lease just expired: the key is on its way out.
                }
                Decision::Full => {
                    return Ok(Acquire::Full {
                        max,
                        holders: snap.ids(),
                    });
                }
                Decision::Take => {
                    let l = match *lease {
                        Some(l) => l,
                        None => {
                            let l = self.etcd.lease_grant(self.options.lease_ttl)?.id;
                            *lease = Some(l);
                            l
                        }
                    };
                    match self.take(id, l, max, &snap) {
                        Ok(true) => {
                            *lease = None; // bound to the holder key now
                            return Ok(Acquire::Taken);
                        }
                        Ok(false) => {} // someone else changed it first: look again
                        Err(EtcdError::Refused { code: 5, .. }) => *lease = None, // lease gone
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(EtcdError::Contended {
            group: self.group.clone(),
            attempts: ATTEMPTS,
        })
    }

    /// The transaction that adds `id` to the holders, if nothing that the
    /// decision read has changed since `snap`.
    fn take(&self, id: &str, lease: LeaseId, max: u32, snap: &Snapshot) -> Result<bool, EtcdError> {
        let record = HolderRecord { since: now() };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let compare = [
            // No slot was taken since the snapshot (every take rewrites the guard).
            Compare::new(self.keys.guard(), CmpOp::Equal, Target::Mod(snap.guard_mod)),
            // The number of slots is the one decided with.
            Compare::new(
                self.keys.max(),
                CmpOp::Equal,
                Target::Mod(snap.max.as_ref().map_or(0, |kv| kv.mod_revision)),
            ),
            // Not taken by the same id meanwhile (another process of this host).
            Compare::new(self.keys.holder(id), CmpOp::Equal, Target::Version(0)),
        ];
        let mut success = vec![
            TxnOp::Put {
                key: self.keys.holder(id),
                value,
                lease: Some(lease),
            },
            TxnOp::Put {
                key: self.keys.guard(),
                value: id.as_bytes().to_vec(),
                lease: None,
            },
        ];
        if snap.max.is_none() {
            success.push(TxnOp::Put {
                key: self.keys.max(),
                value: max.to_string().into_bytes(),
                lease: None,
            });
        }
        Ok(self.etcd.txn(&compare, &success, &[])?.succeeded)
    }

    /// Renews `id`'s lease to its full TTL and returns it. `None`: `id` holds
    /// no slot (or its lease just expired). A holder key without a lease
    /// (written by hand) gives `Duration::MAX`: it never expires.
    pub fn keep_alive(&self, id: &str) -> Result<Option<Duration>, EtcdError> {
        validate_id(id)?;
        match self.etcd.get(&self.keys.holder(id))? {
            None => Ok(None),
            Some(kv) if kv.lease == 0 => Ok(Some(Duration::MAX)),
            Some(kv) => self.etcd.lease_keep_alive(kv.lease),
        }
    }

    /// Renews `id`'s lease every `every` on a thread until the handle is
    /// dropped (or its slot is gone). Use a third of the TTL or less.
    pub fn spawn_keep_alive(&self, id: &str, every: Duration) -> Result<KeepAlive, EtcdError> {
        validate_id(id)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let state = Arc::new(Mutex::new(KeepAliveState::Running));
        let (sem, id, shared) = (self.clone(), id.to_string(), state.clone());
        let thread = std::thread::Builder::new()
            .name("fleet-keepalive".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = match sem.keep_alive(&id) {
                        Ok(Some(_)) => KeepAliveState::Running,
                        Ok(None) => KeepAliveState::SlotGone,
                        Err(e) => KeepAliveState::Failing(e.to_string()),
                    };
                    let gone = now == KeepAliveState::SlotGone;
                    if let Ok(mut s) = shared.lock() {
                        *s = now;
                    }
                    if gone {
                        return;
                    }
                }
            })
            .map_err(|e| EtcdError::Config(format!("cannot start the keep-alive thread: {e}")))?;
        Ok(KeepAlive {
            stop: Some(stop),
            thread: Some(thread),
            state,
        })
    }

    /// Gives `id`'s slot back (FleetLock's steady-state). False if it held
    /// none (not an error: a host calls this on every start).
    pub fn release(&self, id: &str) -> Result<bool, EtcdError> {
        validate_id(id)?;
        let key = self.keys.holder(id);
        let Some(kv) = self.etcd.get(&key)? else {
            return Ok(false);
        };
        let deleted = self.etcd.delete(&key)?;
        if kv.lease != 0 {
            // The lease served only this key.
            self.etcd.lease_revoke(kv.lease)?;
        }
        Ok(deleted > 0)
    }

    /// An operator frees `id`'s slot (locksmithctl unlock): for a host known
    /// to be gone, without waiting for its lease to run out.
    pub fn unlock(&self, id: &str) -> Result<bool, EtcdError> {
        self.release(id)
    }

    /// The number of slots and who holds them, with their leases' time left.
    pub fn status(&self) -> Result<Status, EtcdError> {
        let snap = self.snapshot()?;
        let max = snap.max.as_ref().map(|kv| self.max_value(kv)).transpose()?;
        let mut holders = Vec::new();
        for (id, kv) in snap.holders {
            let since = serde_json::from_slice::<HolderRecord>(&kv.value).map_or(0, |r| r.since);
            let ttl = match kv.lease {
                0 => None,
                l => self.etcd.lease_time_to_live(l)?,
            };
            holders.push(Holder {
                id,
                since,
                lease: kv.lease,
                ttl,
            });
        }
        Ok(Status {
            group: self.group.clone(),
            max,
            holders,
        })
    }

    /// Sets the number of slots (locksmithctl set-max); 0 pauses reboots.
    /// Lowering it frees nobody: holders keep their slots, new ones wait until
    /// the count is below the new number. Returns the previous value.
    pub fn set_max(&self, max: u32) -> Result<Option<u32>, EtcdError> {
        let prev = self
            .etcd
            .put(&self.keys.max(), max.to_string().as_bytes(), None)?;
        Ok(prev.and_then(|kv| parse_max(&kv.value).ok()))
    }

    /// max, guard and holders at one revision (a transaction of reads).
    fn snapshot(&self) -> Result<Snapshot, EtcdError> {
        let reads = [
            TxnOp::Range {
                key: self.keys.max(),
                prefix: false,
            },
            TxnOp::Range {
                key: self.keys.guard(),
                prefix: false,
            },
            TxnOp::Range {
                key: self.keys.holders(),
                prefix: true,
            },
        ];
        let r = self.etcd.txn(&[], &reads, &[])?;
        let mut ranges = r.responses.into_iter().map(|o| match o {
            TxnOpResult::Range(r) => r.kvs,
            _ => Vec::new(),
        });
        let max = ranges.next().unwrap_or_default().into_iter().next();
        let guard_mod = ranges
            .next()
            .unwrap_or_default()
            .first()
            .map_or(0, |kv| kv.mod_revision);
        let prefix = self.keys.holders();
        let holders = ranges
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|kv| {
                let id = kv
                    .key_str()
                    .strip_prefix(&prefix)
                    .unwrap_or_default()
                    .to_string();
                (id, kv)
            })
            .collect();
        Ok(Snapshot {
            max,
            guard_mod,
            holders,
        })
    }

    fn max_value(&self, kv: &KeyValue) -> Result<u32, EtcdError> {
        parse_max(&kv.value).map_err(|problem| EtcdError::Corrupt {
            key: kv.key_str(),
            problem,
            fix: "set it again with set_max (a number of slots, 0 pauses reboots)",
        })
    }
}

/// How a [`KeepAlive`] thread fares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAliveState {
    /// Renewing (or not yet renewed).
    Running,
    /// The slot is gone (expired, released, or unlocked): the thread stopped.
    SlotGone,
    /// The last renewal failed; it tries again at the next tick.
    Failing(String),
}

/// Renews a slot's lease on a thread; dropping it stops the thread.
pub struct KeepAlive {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<KeepAliveState>>,
}

impl KeepAlive {
    pub fn state(&self) -> KeepAliveState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
