//! Rollout outcomes and the halt rule (pure).
//!
//! Each host records what became of a release on it: installed (staged, about
//! to reboot into it), committed (the new boot passed the health gate) or
//! rolled back (it did not; the reason says why). A release is halted once
//! enough of the hosts that installed it rolled back from it: hosts that have
//! not installed it yet must not.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a host did with a release. Each record replaces the host's previous
/// one for that release, so a host counts once, with its latest outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Installed,
    Committed,
    RolledBack,
}

impl Outcome {
    /// Every outcome, in the order a host goes through them.
    pub const ALL: [Outcome; 3] = [Outcome::Installed, Outcome::Committed, Outcome::RolledBack];
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Installed => "installed",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
        })
    }
}

/// The value of `cairn/fleet/<group>/releases/<version>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub outcome: Outcome,
    /// Why (free text; for a rollback, what failed).
    #[serde(default)]
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub time: u64,
}

/// When a release halts: after `hosts` rollbacks, or once rollbacks reach
/// `percent` % of the hosts that installed it, whichever comes first. 0 turns
/// that half of the rule off (both 0: never halt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltThreshold {
    pub hosts: u64,
    pub percent: u64,
}

impl Default for HaltThreshold {
    /// 2 hosts or 5 %: one rollback can be a host's own trouble (its disk,
    /// its network); two are a pattern. In a first wave of under 20 hosts the
    /// percentage comes first: 1 of 10 is already 10 %.
    fn default() -> Self {
        HaltThreshold {
            hosts: 2,
            percent: 5,
        }
    }
}

/// Whether a release that `installed` hosts installed and `rolled_back` of
/// them rolled back from is halted under `threshold`. No rollback never halts.
pub fn halted(installed: u64, rolled_back: u64, threshold: HaltThreshold) -> bool {
    if rolled_back == 0 {
        return false;
    }
    let by_hosts = threshold.hosts > 0 && rolled_back >= threshold.hosts;
    // rolled_back / installed >= percent / 100, without division or overflow.
    let by_share = threshold.percent > 0
        && (rolled_back as u128) * 100 >= (threshold.percent as u128) * (installed as u128);
    by_hosts || by_share
}

/// What the fleet did with one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseReport {
    pub version: String,
    /// Hosts that installed it (whatever came after): every host with a record.
    pub installed: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub halted: bool,
    /// Each rollback: (host id, reason), sorted by host id. From
    /// [`Rollout::halt_check`](crate::Rollout::halt_check): only once halted,
    /// and only the first [`MAX_HALT_ROLLBACKS`](crate::rollout::MAX_HALT_ROLLBACKS).
    pub rollbacks: Vec<(String, String)>,
    /// Every record: (host id, record), sorted by host id. Empty from
    /// [`Rollout::halt_check`](crate::Rollout::halt_check), which counts.
    pub records: Vec<(String, OutcomeRecord)>,
}

/// A release's counters in etcd: for each outcome (in [`Outcome::ALL`]'s
/// order), how many times a host's latest outcome became it and how many
/// times it stopped being it. Hosts with that outcome now: the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub entered: [u64; 3],
    pub left: [u64; 3],
}

impl Tally {
    fn slot(outcome: Outcome) -> usize {
        match outcome {
            Outcome::Installed => 0,
            Outcome::Committed => 1,
            Outcome::RolledBack => 2,
        }
    }

    /// Counts `times` more hosts entering (`entered`) or leaving `outcome`.
    pub fn add(&mut self, outcome: Outcome, entered: bool, times: u64) {
        let n = if entered {
            &mut self.entered[Self::slot(outcome)]
        } else {
            &mut self.left[Self::slot(outcome)]
        };
        *n = n.saturating_add(times);
    }

    /// Hosts whose latest outcome is `outcome`; `None` when more left it
    /// than entered (counters not written by this crate).
    pub fn hosts(&self, outcome: Outcome) -> Option<u64> {
        let i = Self::slot(outcome);
        self.entered[i].checked_sub(self.left[i])
    }
}

impl ReleaseReport {
    /// The report of `records` (host id, record) under `threshold`.
    pub fn new(
        version: &str,
        mut records: Vec<(String, OutcomeRecord)>,
        threshold: HaltThreshold,
    ) -> ReleaseReport {
        records.sort_by(|a, b| a.0.cmp(&b.0));
        let count = |o: Outcome| records.iter().filter(|(_, r)| r.outcome == o).count() as u64;
        let installed = records.len() as u64;
        let committed = count(Outcome::Committed);
        let rolled_back = count(Outcome::RolledBack);
        let rollbacks = records
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::RolledBack)
            .map(|(id, r)| (id.clone(), r.reason.clone()))
            .collect();
        ReleaseReport {
            version: version.to_string(),
            installed,
            committed,
            rolled_back,
            halted: halted(installed, rolled_back, threshold),
            rollbacks,
            records,
        }
    }

    /// The report of a halt check: the counts from `tally` and the halt; no
    /// records, no rollbacks yet. `None` when the tally does not add up:
    /// read the records instead.
    pub fn counted(
        version: &str,
        tally: &Tally,
        threshold: HaltThreshold,
    ) -> Option<ReleaseReport> {
        let installed = tally.hosts(Outcome::Installed)?;
        let committed = tally.hosts(Outcome::Committed)?;
        let rolled_back = tally.hosts(Outcome::RolledBack)?;
        // Every host with a record is under exactly one outcome.
        let installed = installed.checked_add(committed)?.checked_add(rolled_back)?;
        Some(ReleaseReport {
            version: version.to_string(),
            installed,
            committed,
            rolled_back,
            halted: halted(installed, rolled_back, threshold),
            rollbacks: Vec::new(),
            records: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_rule() {
        let t = |hosts, percent| HaltThreshold { hosts, percent };
        let d = HaltThreshold::default();
        // (installed, rolled back, threshold, halted)
        let table = [
            (0, 0, d, false),
            (1000, 0, d, false),
            // 2 hosts come first in a big fleet.
            (1000, 1, d, false),
            (1000, 2, d, true),
            // 5 % comes first in a small one.
            (10, 1, d, true),
            (20, 1, d, true), // exactly 5 %
            (21, 1, d, false),
            (40, 1, d, false),
            (1, 1, d, true),
            // Counts that do not add up (a rollback without an install record) still halt.
            (0, 1, d, true),
            // Hosts only.
            (10, 1, t(2, 0), false),
            (10, 2, t(2, 0), true),
            // Share only.
            (1000, 10, t(0, 1), true),
            (1000, 9, t(0, 1), false),
            (100, 50, t(0, 50), true),
            (100, 49, t(0, 50), false),
            // Off.
            (10, 10, t(0, 0), false),
            // A threshold of 1 host: any rollback.
            (1_000_000, 1, t(1, 0), true),
            // No overflow at the edges.
            (u64::MAX, u64::MAX, t(0, 100), true),
            (u64::MAX, u64::MAX - 1, t(0, 100), false),
            (u64::MAX, 1, t(0, u64::MAX), false),
        ];
        for (installed, rolled_back, th, want) in table {
            assert_eq!(
                halted(installed, rolled_back, th),
                want,
                "{installed} installed, {rolled_back} rolled back, {th:?}"
            );
        }
    }

    fn rec(outcome: Outcome, reason: &str) -> OutcomeRecord {
        OutcomeRecord {
            outcome,
            reason: reason.into(),
            time: 1,
        }
    }

    #[test]
    fn report() {
        let records = vec![
            (
                "c".to_string(),
                rec(Outcome::RolledBack, "health gate: app web down"),
            ),
            ("a".to_string(), rec(Outcome::Committed, "")),
            ("b".to_string(), rec(Outcome::Installed, "")),
        ];
        let r = ReleaseReport::new("1.2.0", records, HaltThreshold::default());
        assert_eq!((r.installed, r.committed, r.rolled_back), (3, 1, 1));
        assert!(r.halted, "1 of 3 is over 5 %");
        assert_eq!(
            r.rollbacks,
            vec![("c".to_string(), "health gate: app web down".to_string())]
        );
        assert_eq!(r.records[0].0, "a");
        let none = ReleaseReport::new("1.2.0", vec![], HaltThreshold::default());
        assert!(!none.halted && none.installed == 0);
    }

    #[test]
    fn counted_reports() {
        use Outcome::*;
        // (entered, left) per outcome, in ALL's order.
        let t = |moves: [(u64, u64); 3]| {
            let mut t = Tally::default();
            for (o, (e, l)) in Outcome::ALL.into_iter().zip(moves) {
                t.add(o, true, e);
                t.add(o, false, l);
            }
            t
        };
        let d = HaltThreshold::default();
        // (tally, threshold, Some((installed, committed, rolled back, halted)) or None: read the records)
        let table = [
            (t([(0, 0), (0, 0), (0, 0)]), d, Some((0, 0, 0, false))),
            // 10,000 installed, 9,000 of them committed since, 1 rolled back.
            (
                t([(10_000, 9_001), (9_000, 0), (1, 0)]),
                d,
                Some((10_000, 9_000, 1, false)),
            ),
            (
                t([(10_000, 9_002), (9_000, 0), (2, 0)]),
                d,
                Some((10_000, 9_000, 2, true)),
            ),
            // A committed host that rolled back later (a later boot fell back).
            (t([(20, 20), (20, 1), (1, 0)]), d, Some((20, 19, 1, true))),
            (t([(21, 1), (0, 0), (1, 0)]), d, Some((21, 0, 1, false))),
            (
                t([(3, 3), (0, 0), (3, 0)]),
                HaltThreshold {
                    hosts: 0,
                    percent: 0,
                },
                Some((3, 0, 3, false)),
            ),
            // More left than entered: not this crate's counters.
            (t([(1, 2), (0, 0), (0, 0)]), d, None),
            (t([(5, 5), (0, 0), (0, 1)]), d, None),
            // Sums past u64.
            (t([(u64::MAX, 0), (1, 0), (0, 0)]), d, None),
        ];
        for (tally, th, want) in table {
            let got = ReleaseReport::counted("1.2.0", &tally, th)
                .map(|r| (r.installed, r.committed, r.rolled_back, r.halted));
            assert_eq!(got, want, "{tally:?} {th:?}");
        }
        let mut tally = Tally::default();
        tally.add(Installed, true, 3);
        tally.add(Installed, false, 2);
        tally.add(Committed, true, 1);
        tally.add(RolledBack, true, 1);
        assert_eq!(tally.hosts(Installed), Some(1));
        let r = ReleaseReport::counted("1.2.0", &tally, d).unwrap();
        assert_eq!((r.version.as_str(), r.installed), ("1.2.0", 3));
        assert!(r.rollbacks.is_empty() && r.records.is_empty());
    }

    #[test]
    fn record_json() {
        let r = rec(Outcome::RolledBack, "boot failed");
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"outcome":"rolled_back","reason":"boot failed","time":1}"#
        );
        assert_eq!(serde_json::from_str::<OutcomeRecord>(&j).unwrap(), r);
        assert!(serde_json::from_str::<OutcomeRecord>(r#"{"outcome":"gone","time":1}"#).is_err());
        assert_eq!(Outcome::RolledBack.to_string(), "rolled_back");
    }
}
