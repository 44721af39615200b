//! Rollout outcomes in etcd (I/O; the halt rule is in `outcome.rs`).

use crate::error::EtcdError;
use crate::etcd::EtcdClient;
use crate::keys::{GroupKeys, validate_id, validate_version};
use crate::outcome::{HaltThreshold, Outcome, OutcomeRecord, ReleaseReport};
use crate::semaphore::now;

/// The longest reason kept (bytes; longer ones are cut at a character).
pub const MAX_REASON: usize = 1024;

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
        self.etcd
            .put(&self.keys.outcome(version, id), &value, None)?;
        Ok(())
    }

    /// Every host's outcome of `version`, and whether it is halted.
    pub fn report(
        &self,
        version: &str,
        threshold: HaltThreshold,
    ) -> Result<ReleaseReport, EtcdError> {
        validate_version(version)?;
        let prefix = self.keys.release(version);
        let mut records = Vec::new();
        for kv in self.etcd.get_prefix(&prefix)?.kvs {
            let key = kv.key_str();
            let corrupt = |problem: String| EtcdError::Corrupt {
                key: key.clone(),
                problem,
                fix: "delete it (etcdctl del KEY) or let the host record its outcome again",
            };
            let id = key.strip_prefix(&prefix).unwrap_or_default();
            validate_id(id).map_err(|e| corrupt(format!("a key that is not a host's: {e}")))?;
            let record: OutcomeRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| corrupt(format!("no outcome record: {e}")))?;
            records.push((id.to_string(), record));
        }
        Ok(ReleaseReport::new(version, records, threshold))
    }

    /// Forgets every outcome of `version` (an operator resuming a halted
    /// release once its cause is fixed). Returns how many records went.
    pub fn clear(&self, version: &str) -> Result<i64, EtcdError> {
        validate_version(version)?;
        self.etcd.delete_prefix(&self.keys.release(version))
    }
}
