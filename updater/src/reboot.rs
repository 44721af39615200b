//! When a staged update reboots the host (pure). The reboot strategy, the
//! maintenance windows, the fleet's reboot slot and the state of this boot
//! decide; [`crate::daemon`] does the I/O (etcd, FleetLock, `systemctl
//! reboot`) and the waiting.
//!
//! The order with a lock strategy (`etcd-lock`, `fleetlock`): an update is
//! written and verified first; then, inside a maintenance window if windows
//! are set, the host asks for a slot; only with the slot does it reboot. A
//! host that gets no slot keeps its staged update and asks again after a
//! back-off with jitter, looking at the window again each time it wakes (a
//! window that closed meanwhile sends it back to waiting for the next one).
//! Once the booted slot is committed (the health gate passed and
//! cairn-mark-good ran) and nothing is staged, the slot goes back: whether
//! the new release booted, or the host fell back to its old slot.
//!
//! | # | boot | staged | strategy | window | slot held | lock asked | action |
//! |---|---|---|---|---|---|---|---|
//! | 1 | on trial | – | lock | – | yes / unknown | – | wait ≤ 30 s ([`TRIAL_POLL`]): the slot goes back soon after the commit |
//! | 2 | on trial | – | any other case | – | – | – | wait for the next check |
//! | 3 | committed | no | lock | – | yes / unknown | – | **release the slot** |
//! | 4 | committed | no | – | – | – | – | wait for the next check (nothing to reboot into) |
//! | 5 | committed | yes | off | – | – | – | wait: an operator reboots |
//! | 6 | committed | yes | immediate | – | – | – | **reboot** |
//! | 7 | committed | yes | lock | closed | yes | – | **release the slot** (not rebooting outside a window; do not block the group) |
//! | 8 | committed | yes | window, lock | closed | – | – | wait until the window opens |
//! | 9 | committed | yes | window | open | – | – | **reboot** |
//! | 10 | committed | yes | lock | open | – | not yet | **ask for a slot** |
//! | 11 | committed | yes | lock | open | – | granted | **reboot** |
//! | 12 | committed | yes | lock | open | – | all taken | wait until the retry (back-off), keep the update |
//! | 13 | committed | yes | lock | open | – | failed | wait until the retry (back-off), keep the update |
//!
//! Every wait ends at the next regular check at the latest, and never before
//! now.

use std::fmt;

use crate::config::RebootStrategy;
use crate::state::format_utc;

/// Seconds between looks at a boot on trial while a slot is held: the slot
/// goes back within this long after cairn-mark-good commits the boot
/// (cairn-updated starts before the health gate ends).
pub const TRIAL_POLL: i64 = 30;

/// Whether `s` coordinates reboots through a fleet lock.
pub fn is_lock(s: RebootStrategy) -> bool {
    matches!(s, RebootStrategy::EtcdLock | RebootStrategy::FleetLock)
}

/// The maintenance windows at the time of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// Inside a window (always, when none are set).
    pub open: bool,
    /// When the next window opens (unix seconds; `None`: never).
    pub next_open: Option<i64>,
}

impl WindowState {
    /// No windows set: always open.
    pub const ALWAYS: WindowState = WindowState {
        open: true,
        next_open: None,
    };
}

/// What the fleet lock said in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// Not asked yet.
    NotAsked,
    /// The slot is this host's (taken now, or held already).
    Granted,
    /// Every slot is taken (or reboots are paused): who holds them, as text.
    Full(String),
    /// The lock service could not be asked, or refused for another reason.
    Failed(String),
}

/// Everything a decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub strategy: RebootStrategy,
    /// The booted slot is committed (marked successful).
    pub committed: bool,
    /// An update is written, verified and set to boot next.
    pub staged: bool,
    /// Whether this host holds a reboot slot (`None`: not known).
    pub holds_slot: Option<bool>,
    pub window: WindowState,
    pub lock: Lock,
    /// Unix seconds.
    pub now: i64,
    /// When to ask for a slot again after a refusal (the back-off).
    pub retry_at: i64,
    /// The next regular check for updates.
    pub next_check: i64,
}

/// Why the host waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Nothing is staged.
    NothingStaged,
    /// This boot is not committed yet.
    OnTrial,
    /// `reboot = "off"`: an operator reboots.
    RebootOff,
    /// Outside the maintenance windows.
    OutsideWindow { opens: Option<i64> },
    /// Every reboot slot is taken: `held` says by whom.
    SlotFull { held: String, retry_at: i64 },
    /// The lock service could not be asked.
    LockFailed { error: String, retry_at: i64 },
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reboot into the staged update.
    Reboot,
    /// Ask the fleet lock for a reboot slot, then decide again.
    AskSlot,
    /// Give the reboot slot back (FleetLock steady-state, etcd release),
    /// then decide again (knowing no slot is held).
    ReleaseSlot,
    /// Nothing until `until` (unix seconds).
    Wait { until: i64, why: Why },
}

/// The decision (see the table in the module documentation).
pub fn decide(i: &Inputs) -> Action {
    let lock = is_lock(i.strategy);
    let wait = |until: i64, why: Why| Action::Wait {
        until: until.min(i.next_check).max(i.now),
        why,
    };
    if !i.committed {
        // Any slot is kept: the boot it was taken for is still on trial.
        let soon = lock && i.holds_slot != Some(false);
        let until = if soon {
            i.now + TRIAL_POLL
        } else {
            i.next_check
        };
        return wait(until, Why::OnTrial);
    }
    if !i.staged {
        if lock && i.holds_slot != Some(false) {
            return Action::ReleaseSlot;
        }
        return wait(i.next_check, Why::NothingStaged);
    }
    match i.strategy {
        RebootStrategy::Off => return wait(i.next_check, Why::RebootOff),
        RebootStrategy::Immediate => return Action::Reboot,
        _ => {}
    }
    if !i.window.open {
        if lock && i.holds_slot == Some(true) {
            return Action::ReleaseSlot;
        }
        let opens = i.window.next_open;
        return wait(opens.unwrap_or(i.next_check), Why::OutsideWindow { opens });
    }
    if !lock {
        return Action::Reboot;
    }
    match &i.lock {
        Lock::NotAsked => Action::AskSlot,
        Lock::Granted => Action::Reboot,
        Lock::Full(held) => wait(
            i.retry_at,
            Why::SlotFull {
                held: held.clone(),
                retry_at: i.retry_at,
            },
        ),
        Lock::Failed(error) => wait(
            i.retry_at,
            Why::LockFailed {
                error: error.clone(),
                retry_at: i.retry_at,
            },
        ),
    }
}

/// `47 s`, `12 min`, `3 h 5 min`.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", (s + 59) / 60)
    } else {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    }
}

impl Why {
    /// The line for the log and the service status, as of `now`.
    pub fn message(&self, now: i64) -> String {
        match self {
            Why::NothingStaged => "nothing to reboot into".into(),
            Why::OnTrial => "waiting for this boot to be marked good".into(),
            Why::RebootOff => "update ready; reboot = \"off\": reboot the host to start it".into(),
            Why::OutsideWindow { opens: Some(t) } => format!(
                "update ready; waiting for the maintenance window (opens in {}, {})",
                span(t - now),
                format_utc(u64::try_from(*t).unwrap_or(0))
            ),
            Why::OutsideWindow { opens: None } => {
                "update ready; no maintenance window opens again".into()
            }
            Why::SlotFull { held, retry_at } => format!(
                "waiting for a reboot slot: {held}; retry in {}",
                span(retry_at - now)
            ),
            Why::LockFailed { error, retry_at } => format!(
                "cannot ask for a reboot slot: {error}; retry in {}",
                span(retry_at - now)
            ),
        }
    }

    /// The kind of wait, without times: a repeated wait of the same kind is
    /// logged once (a retry for a slot is logged every time).
    pub fn kind(&self) -> &'static str {
        match self {
            Why::NothingStaged => "nothing-staged",
            Why::OnTrial => "on-trial",
            Why::RebootOff => "reboot-off",
            Why::OutsideWindow { .. } => "outside-window",
            Why::SlotFull { .. } => "slot-full",
            Why::LockFailed { .. } => "lock-failed",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reboot => f.write_str("reboot"),
            Action::AskSlot => f.write_str("ask for a reboot slot"),
            Action::ReleaseSlot => f.write_str("release the reboot slot"),
            Action::Wait { until, why } => write!(f, "wait until {until}: {}", why.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RebootStrategy::{EtcdLock, FleetLock, Immediate, Off, Window};

    const NOW: i64 = 1_000_000;
    const CHECK: i64 = NOW + 3600;
    const RETRY: i64 = NOW + 47;
    const OPENS: i64 = NOW + 600;

    fn inputs(strategy: RebootStrategy) -> Inputs {
        Inputs {
            strategy,
            committed: true,
            staged: true,
            holds_slot: Some(false),
            window: WindowState::ALWAYS,
            lock: Lock::NotAsked,
            now: NOW,
            retry_at: RETRY,
            next_check: CHECK,
        }
    }

    const CLOSED: WindowState = WindowState {
        open: false,
        next_open: Some(OPENS),
    };

    #[test]
    fn decisions() {
        const OPEN: WindowState = WindowState::ALWAYS;
        let (y, n, unknown) = (Some(true), Some(false), None);
        let w = |until: i64, why: Why| Action::Wait { until, why };
        let full = || Lock::Full("1/1 held by a".into());
        let failed = || Lock::Failed("etcd down".into());
        let slot_full = || Why::SlotFull {
            held: "1/1 held by a".into(),
            retry_at: RETRY,
        };
        let lock_failed = || Why::LockFailed {
            error: "etcd down".into(),
            retry_at: RETRY,
        };
        let outside = Why::OutsideWindow { opens: Some(OPENS) };
        let soon = NOW + TRIAL_POLL;
        use Action::{AskSlot, Reboot, ReleaseSlot};
        use Lock::{Granted, NotAsked};
        use Why::{NothingStaged, OnTrial, RebootOff};
        #[rustfmt::skip]
        let table = [
            // row, strategy,  committed, staged, holds slot, window, lock,  action
            // On trial: a slot is kept (looked at again soon), never released.
            (1,  EtcdLock,  false, false, y,       OPEN,   NotAsked, w(soon, OnTrial)),
            (1,  FleetLock, false, false, unknown, OPEN,   NotAsked, w(soon, OnTrial)),
            (1,  EtcdLock,  false, false, y,       OPEN,   Granted,  w(soon, OnTrial)),
            (2,  EtcdLock,  false, false, n,       OPEN,   NotAsked, w(CHECK, OnTrial)),
            (2,  Immediate, false, false, unknown, OPEN,   NotAsked, w(CHECK, OnTrial)),
            // Committed, nothing staged: the slot goes back (even outside a window).
            (3,  EtcdLock,  true,  false, y,       OPEN,   NotAsked, ReleaseSlot),
            (3,  FleetLock, true,  false, unknown, OPEN,   NotAsked, ReleaseSlot),
            (3,  EtcdLock,  true,  false, y,       CLOSED, NotAsked, ReleaseSlot),
            (4,  EtcdLock,  true,  false, n,       OPEN,   NotAsked, w(CHECK, NothingStaged)),
            (4,  Immediate, true,  false, unknown, OPEN,   NotAsked, w(CHECK, NothingStaged)),
            (4,  Window,    true,  false, n,       CLOSED, NotAsked, w(CHECK, NothingStaged)),
            // Staged.
            (5,  Off,       true,  true,  n,       OPEN,   Granted,  w(CHECK, RebootOff)),
            (6,  Immediate, true,  true,  n,       CLOSED, NotAsked, Reboot),
            (7,  EtcdLock,  true,  true,  y,       CLOSED, NotAsked, ReleaseSlot),
            (7,  FleetLock, true,  true,  y,       CLOSED, NotAsked, ReleaseSlot),
            (8,  Window,    true,  true,  n,       CLOSED, NotAsked, w(OPENS, outside.clone())),
            (8,  EtcdLock,  true,  true,  n,       CLOSED, NotAsked, w(OPENS, outside.clone())),
            (8,  FleetLock, true,  true,  unknown, CLOSED, NotAsked, w(OPENS, outside.clone())),
            (9,  Window,    true,  true,  n,       OPEN,   full(),   Reboot),
            (10, EtcdLock,  true,  true,  n,       OPEN,   NotAsked, AskSlot),
            (10, FleetLock, true,  true,  unknown, OPEN,   NotAsked, AskSlot),
            (10, EtcdLock,  true,  true,  y,       OPEN,   NotAsked, AskSlot),
            (11, EtcdLock,  true,  true,  n,       OPEN,   Granted,  Reboot),
            (11, FleetLock, true,  true,  n,       OPEN,   Granted,  Reboot),
            (12, EtcdLock,  true,  true,  n,       OPEN,   full(),   w(RETRY, slot_full())),
            (12, FleetLock, true,  true,  n,       OPEN,   full(),   w(RETRY, slot_full())),
            (13, EtcdLock,  true,  true,  y,       OPEN,   failed(), w(RETRY, lock_failed())),
        ];
        for (row, strategy, committed, staged, holds_slot, window, lock, want) in table {
            let i = Inputs {
                committed,
                staged,
                holds_slot,
                window,
                lock,
                ..inputs(strategy)
            };
            assert_eq!(decide(&i), want, "row {row}: {i:?}");
        }
        // Waits end at the next check at the latest, and not before now.
        let cases = [
            (Some(CHECK + 99), CHECK),
            (None, CHECK),
            (Some(NOW - 5), NOW),
        ];
        for (next_open, until) in cases {
            let window = WindowState {
                open: false,
                next_open,
            };
            let i = Inputs {
                window,
                ..inputs(EtcdLock)
            };
            let want = w(until, Why::OutsideWindow { opens: next_open });
            assert_eq!(decide(&i), want, "{next_open:?}");
        }
        let late = Inputs {
            lock: full(),
            retry_at: CHECK + 10,
            ..inputs(EtcdLock)
        };
        let want = Why::SlotFull {
            held: "1/1 held by a".into(),
            retry_at: CHECK + 10,
        };
        assert_eq!(decide(&late), w(CHECK, want));
    }

    #[test]
    fn a_lock_strategy_never_reboots_without_the_slot() {
        let locks = [
            Lock::NotAsked,
            Lock::Granted,
            Lock::Full("x".into()),
            Lock::Failed("y".into()),
        ];
        let windows = [WindowState::ALWAYS, CLOSED];
        for strategy in [EtcdLock, FleetLock] {
            for lock in &locks {
                for window in windows {
                    for holds_slot in [None, Some(false), Some(true)] {
                        for (committed, staged) in
                            [(false, false), (true, false), (true, true), (false, true)]
                        {
                            let i = Inputs {
                                committed,
                                staged,
                                holds_slot,
                                window,
                                lock: lock.clone(),
                                ..inputs(strategy)
                            };
                            let a = decide(&i);
                            if a == Action::Reboot {
                                assert!(
                                    *lock == Lock::Granted && committed && staged && window.open,
                                    "{i:?}"
                                );
                            }
                            if let Action::Wait { until, .. } = a {
                                assert!((NOW..=CHECK).contains(&until), "{i:?} → {until}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn messages() {
        // (why, line)
        let table = [
            (
                Why::SlotFull {
                    held: "2/2 held by a, b".into(),
                    retry_at: NOW + 47,
                },
                "waiting for a reboot slot: 2/2 held by a, b; retry in 47 s",
            ),
            (
                Why::LockFailed {
                    error: "no etcd endpoint answered".into(),
                    retry_at: NOW + 600,
                },
                "cannot ask for a reboot slot: no etcd endpoint answered; retry in 10 min",
            ),
            (
                Why::OutsideWindow {
                    opens: Some(NOW + 3 * 3600 + 5 * 60),
                },
                "update ready; waiting for the maintenance window (opens in 3 h 5 min, 1970-01-12 16:51:40 UTC)",
            ),
            (Why::OnTrial, "waiting for this boot to be marked good"),
        ];
        for (why, line) in table {
            assert_eq!(why.message(NOW), line);
        }
        assert_eq!(span(-3), "0 s");
        assert_eq!(span(119), "119 s");
        assert_eq!(span(121), "3 min");
        assert_eq!(span(7200), "2 h 0 min");
    }
}
