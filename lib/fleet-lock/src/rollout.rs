//! Rollout outcomes in etcd (I/O; the halt rule is in `outcome.rs`).
//!
//! A record is written in one transaction with two more things:
//! - an index entry under its outcome (`outcomes/<version>/<outcome>/<id>`,
//!   the same record), the host's entries under the other outcomes deleted;
//! - the release's counters (`tally/<version>/<outcome>/entered|left`):
//!   a nested transaction per outcome rewrites `entered` when the host was
//!   not under that outcome yet, `left` when it was and is no more. etcd's
//!   compares all see the keys as they were before the transaction, and a
//!   key's version counts its writes; so the versions count hosts, each once
//!   under its latest outcome, with blind writes (no read first, nothing to
//!   retry when hosts record at once).
//!
//! So [`Rollout::halt_check`], which every agent runs before each install,
//! reads six counters and at most [`MAX_HALT_ROLLBACKS`] index entries,
//! however large the fleet; reading every record there made a fleet's
//! rollout quadratic. [`Rollout::report`] reads every record.

use crate::error::EtcdError;
use crate::etcd::{CmpOp, Compare, EtcdClient, KeyValue, Target, TxnOp, TxnOpResult};
use crate::keys::{GroupKeys, validate_id, validate_version};
use crate::outcome::{HaltThreshold, Outcome, OutcomeRecord, ReleaseReport, Tally};
use crate::semaphore::now;

/// The longest reason kept (bytes; longer ones are cut at a character).
pub const MAX_REASON: usize = 1024;

/// The most rollbacks (with their reasons) a halt check reads: enough to
/// see the pattern; `cairnctl fleet status` ([`Rollout::report`]) has all.
pub const MAX_HALT_ROLLBACKS: u32 = 16;

/// A group's release outcomes.
#[derive(Debug, Clone)]
pub struct Rollout {
    etcd: EtcdClient,
    keys: GroupKeys,
}

impl Rollout {
    pub fn new(etcd: EtcdClient, group: &str) -> Result<Rollout, EtcdError> {
        Ok(Rollout {
            keys: GroupKeys::new(group)?,
            etcd,
        })
    }

    /// Records that host `id` `outcome` release `version` now, replacing its
    /// previous record for that release.
    pub fn record(
        &self,
        version: &str,
        id: &str,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), EtcdError> {
        self.record_at(
            version,
            id,
            &OutcomeRecord {
                outcome,
                reason: reason.to_string(),
                time: now(),
            },
        )
    }

    /// [`Rollout::record`] with the whole record given.
    pub fn record_at(
        &self,
        version: &str,
        id: &str,
        record: &OutcomeRecord,
    ) -> Result<(), EtcdError> {
        validate_version(version)?;
        validate_id(id)?;
        let mut record = record.clone();
        if record.reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !record.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            record.reason.truncate(cut);
        }
        let value = serde_json::to_vec(&record).map_err(|e| EtcdError::Config(e.to_string()))?;
        // One transaction: the record, its index entry and the counters move
        // together, so every revision counts each host once, under its
        // latest outcome.
        let mut ops = vec![TxnOp::Put {
            key: self.keys.outcome(version, id),
            value: value.clone(),
            lease: None,
        }];
        for outcome in Outcome::ALL {
            let key = self.keys.indexed(version, outcome, id);
            let now_there = outcome == record.outcome;
            // Entering: the entry did not exist (version 0). Leaving: it did.
            let was_not = if now_there {
                CmpOp::Equal
            } else {
                CmpOp::Greater
            };
            ops.push(TxnOp::Txn {
                compare: vec![Compare::new(key.clone(), was_not, Target::Version(0))],
                success: vec![TxnOp::Put {
                    key: self.keys.counter(version, outcome, now_there),
                    value: Vec::new(),
                    lease: None,
                }],
                failure: Vec::new(),
            });
            ops.push(if now_there {
                TxnOp::Put {
                    key,
                    value: value.clone(),
                    lease: None,
                }
            } else {
                TxnOp::Delete { key, prefix: false }
            });
        }
        self.etcd.txn(&[], &ops, &[])?;
        Ok(())
    }

    /// Whether `version` is halted, from its counters (one read, whatever
    /// the fleet's size): the report's counts, and once halted the first
    /// [`MAX_HALT_ROLLBACKS`] rollbacks with their reasons; no records.
    /// Reads every record instead when the counters do not add up (keys
    /// edited by hand).
    pub fn halt_check(
        &self,
        version: &str,
        threshold: HaltThreshold,
    ) -> Result<ReleaseReport, EtcdError> {
        validate_version(version)?;
        let rolled_back = self.keys.with_outcome(version, Outcome::RolledBack);
        let reads = [
            TxnOp::Range {
                key: self.keys.tally(version),
                prefix: true,
            },
            TxnOp::First {
                prefix: rolled_back.clone(),
                limit: MAX_HALT_ROLLBACKS,
            },
        ];
        let r = self.etcd.txn(&[], &reads, &[])?;
        let mut ranges = r.responses.into_iter().filter_map(|o| match o {
            TxnOpResult::Range(r) => Some(r.kvs),
            _ => None,
        });
        let (Some(counters), Some(rollbacks)) = (ranges.next(), ranges.next()) else {
            return Err(EtcdError::BadResponse {
                endpoint: self.etcd.endpoints().join(", "),
                call: "txn",
                problem: format!("no answer to the read of release {version}'s counters"),
            });
        };
        let tally = tally(&self.keys.tally(version), &counters)?;
        let Some(mut report) = ReleaseReport::counted(version, &tally, threshold) else {
            // Shaped as if counted, so callers see one kind of answer.
            let mut report = self.report(version, threshold)?;
            report.records = Vec::new();
            if !report.halted {
                report.rollbacks.clear();
            }
            report.rollbacks.truncate(MAX_HALT_ROLLBACKS as usize);
            return Ok(report);
        };
        if report.halted {
            report.rollbacks = rollbacks
                .iter()
                .map(|kv| {
                    let (id, record) = parse(&rolled_back, &kv.key_str(), &kv.value)?;
                    Ok((id, record.reason))
                })
                .collect::<Result<_, EtcdError>>()?;
        }
        Ok(report)
    }

    /// Every host's outcome of `version`, and whether it is halted.
    pub fn report(
        &self,
        version: &str,
        threshold: HaltThreshold,
    ) -> Result<ReleaseReport, EtcdError> {
        validate_version(version)?;
        let prefix = self.keys.release(version);
        let records = self
            .etcd
            .get_prefix(&prefix)?
            .kvs
            .into_iter()
            .map(|kv| parse(&prefix, &kv.key_str(), &kv.value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReleaseReport::new(version, records, threshold))
    }

    /// Forgets every outcome of `version` (an operator resuming a halted
    /// release once its cause is fixed). Returns how many records went.
    pub fn clear(&self, version: &str) -> Result<i64, EtcdError> {
        validate_version(version)?;
        let delete = |key: String| TxnOp::Delete { key, prefix: true };
        let ops = [
            delete(self.keys.release(version)),
            delete(self.keys.by_outcome(version)),
            delete(self.keys.tally(version)),
        ];
        let r = self.etcd.txn(&[], &ops, &[])?;
        Ok(match r.responses.first() {
            Some(TxnOpResult::Delete { deleted }) => *deleted,
            _ => 0,
        })
    }
}

/// The counters under `prefix` (`…/tally/<version>/`): each key's version
/// is how many times it was written.
fn tally(prefix: &str, counters: &[KeyValue]) -> Result<Tally, EtcdError> {
    let mut tally = Tally::default();
    for kv in counters {
        let key = kv.key_str();
        let counter = key.strip_prefix(prefix).and_then(|rest| {
            let (outcome, way) = rest.split_once('/')?;
            let outcome = Outcome::ALL
                .into_iter()
                .find(|o| o.to_string() == outcome)?;
            let entered = match way {
                "entered" => true,
                "left" => false,
                _ => return None,
            };
            Some((outcome, entered))
        });
        let Some((outcome, entered)) = counter else {
            return Err(EtcdError::Corrupt {
                key,
                problem: "a key that is not a counter of this crate".into(),
                fix: "delete it (etcdctl del KEY)",
            });
        };
        tally.add(outcome, entered, u64::try_from(kv.version).unwrap_or(0));
    }
    Ok(tally)
}

/// A record or index entry under `prefix`: (host id, record).
fn parse(prefix: &str, key: &str, value: &[u8]) -> Result<(String, OutcomeRecord), EtcdError> {
    let corrupt = |problem: String| EtcdError::Corrupt {
        key: key.to_string(),
        problem,
        fix: "delete it (etcdctl del KEY) or let the host record its outcome again",
    };
    let id = key.strip_prefix(prefix).unwrap_or_default();
    validate_id(id).map_err(|e| corrupt(format!("a key that is not a host's: {e}")))?;
    let record: OutcomeRecord =
        serde_json::from_slice(value).map_err(|e| corrupt(format!("no outcome record: {e}")))?;
    Ok((id.to_string(), record))
}
