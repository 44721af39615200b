//! cairn-updated's cycle (I/O; the reboot decision is [`crate::reboot`]).
//!
//! Each cycle:
//! 1. settles the last update ([`Agent::reconcile`](crate::Agent::reconcile)),
//!    and with etcd-lock sends the queued rollout outcomes;
//! 2. gives the fleet's reboot slot back once the booted slot is committed
//!    and nothing is staged (Zincati's steady-state at start-up once
//!    healthy): after the new release passed its health gate, or after the
//!    host fell back to its old slot. While this boot is on trial a held slot
//!    is kept (its etcd lease renewed) and looked at again every
//!    [`TRIAL_POLL`](crate::reboot::TRIAL_POLL) seconds;
//! 3. installs what the plan chooses, unless the fleet halted that release
//!    (etcd-lock; one line, nothing recorded, shown by `cairnctl status`);
//! 4. for an update staged in an earlier cycle whose rollout was halted
//!    since (by the fleet's outcomes or by the publisher): takes it back
//!    (its slot to (0,0,0)) and does not reboot;
//! 5. for a staged update: inside the windows, with the slot when a lock
//!    strategy is set, reboots; else returns when to look again: the next
//!    retry for a slot (back-off with jitter seeded from the node id), the
//!    next window opening, or the next check, whichever comes first.
//!
//! The caller ([`Env`]) supplies the clock, the windows, the reboot and the
//! log, so tests drive cycles of several hosts in one process.

use std::sync::Arc;

use anyhow::{Context, Result};
use fleet_lock::{Backoff, BackoffPolicy, KeepAlive, KeepAliveState};
use reboot_window::TimeZone;

use crate::Error;
use crate::config::{self, UpdateConfig};
use crate::dbus::Service;
use crate::fleet::{Coordinator, SlotAnswer};
use crate::pipeline::Event;
use crate::reboot::{Action, Inputs, Lock, Why, WindowState, decide, is_lock};

/// What a cycle needs from its host.
pub trait Env {
    /// Unix seconds.
    fn now(&self) -> i64;
    /// The maintenance windows at `now`.
    fn window(&mut self, cfg: &UpdateConfig, now: i64) -> WindowState;
    /// Reboots the host (`systemctl reboot`).
    fn reboot(&mut self) -> Result<(), String>;
    /// One journal line at sd-daemon priority `level`.
    fn log(&mut self, level: u8, msg: &str);
    /// The service status (sd_notify `STATUS=`), e.g. install progress.
    fn status(&mut self, msg: &str);
}

/// The windows of `cfg` at `now` in `tz`.
pub fn window_state(cfg: &UpdateConfig, tz: &TimeZone, now: i64) -> WindowState {
    WindowState {
        open: config::in_window(cfg, tz, now),
        next_open: config::next_window(cfg, tz, now),
    }
}

/// What a cycle ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// For the service status.
    pub status: String,
    /// When to run the next cycle (unix seconds).
    pub wake_at: i64,
}

/// What the install step came to.
enum Install {
    Installed,
    UpToDate,
    /// An update asked for over D-Bus holds the claim.
    Busy,
    Halted(String),
    NotNow(Error),
}

/// The cycle's memory between runs: the back-off, the keep-alive of a held
/// etcd slot, and what was logged (a wait is said once, a retry each time).
pub struct Cycle {
    fleet: Option<Arc<Coordinator>>,
    backoff: Backoff,
    /// When to ask for a slot again after a refusal.
    retry_at: i64,
    keep_alive: Option<KeepAlive>,
    /// FleetLock: steady-state went through since start-up. Until it did,
    /// it is sent even without a local record of a slot (the record may be
    /// lost; Zincati does the same at start-up once healthy).
    steady_sent: bool,
    last_wait: Option<&'static str>,
    last_not_now: Option<String>,
    last_halted: Option<String>,
}

impl Cycle {
    pub fn new(service: &Service) -> Cycle {
        let fleet = service.agent.fleet.clone();
        let seed = fleet.as_deref().map_or(0, Coordinator::backoff_seed);
        Cycle {
            fleet,
            backoff: Backoff::new(BackoffPolicy::default(), seed),
            retry_at: 0,
            keep_alive: None,
            steady_sent: false,
            last_wait: None,
            last_not_now: None,
            last_halted: None,
        }
    }

    /// [`Cycle::new`] with another back-off curve (tests).
    pub fn with_backoff(service: &Service, policy: BackoffPolicy) -> Cycle {
        let mut c = Cycle::new(service);
        let seed = c.fleet.as_deref().map_or(0, Coordinator::backoff_seed);
        c.backoff = Backoff::new(policy, seed);
        c
    }

    /// Whether an etcd slot's lease is being renewed now.
    pub fn renewing(&self) -> bool {
        self.keep_alive
            .as_ref()
            .is_some_and(|k| k.state() != KeepAliveState::SlotGone)
    }

    /// A cycle of the timer: settle, give the slot back, install, reboot.
    pub fn run(
        &mut self,
        service: &Service,
        cfg: &UpdateConfig,
        env: &mut dyn Env,
    ) -> Result<Next> {
        self.step(service, cfg, env, true)
    }

    /// Manual mode (or no repository): settle the last update and give the
    /// slot back once committed; nothing is installed or rebooted.
    pub fn settle(
        &mut self,
        service: &Service,
        cfg: &UpdateConfig,
        env: &mut dyn Env,
    ) -> Result<Next> {
        self.step(service, cfg, env, false)
    }

    fn step(
        &mut self,
        service: &Service,
        cfg: &UpdateConfig,
        env: &mut dyn Env,
        timer: bool,
    ) -> Result<Next> {
        let agent = &service.agent;
        let now = env.now();
        let next_check = now + (cfg.interval_minutes.max(1) * 60) as i64;
        // Settled under the claim, so not while an update asked for over
        // D-Bus writes progress.json (it is settled next time).
        if let Ok(_claim) = service.claim("checking the last update") {
            for n in agent.reconcile().context("checking the last update")? {
                env.log(5, &n);
            }
        }
        self.flush(env);
        // This boot on trial, or a rollback waiting for its reboot: "not now".
        let trial = match agent.refuse_if_on_trial() {
            Err(e) if !e.waits_for_boot() => {
                return Err(e).context("reading the slot attributes");
            }
            t => t,
        };
        let committed = !matches!(trial, Err(Error::OnTrial { .. }));
        // Manual mode never reboots by itself: nothing to keep a slot for.
        let staged = timer && agent.reboot_needed()?;
        let mut inputs = Inputs {
            strategy: cfg.reboot,
            committed,
            staged,
            holds_slot: self.holds_slot(cfg),
            window: env.window(cfg, now),
            lock: Lock::NotAsked,
            now,
            retry_at: self.retry_at.max(now),
            next_check,
        };
        // Give back a slot taken for a boot that is now committed.
        if decide(&inputs) == Action::ReleaseSlot {
            self.release(env);
            inputs.holds_slot = Some(false);
        }
        if let Err(e) = trial {
            let status = match e {
                Error::RollbackPending { .. } => {
                    "waiting for a reboot to finish the rollback before updating"
                }
                _ => "waiting for this boot to be marked good before updating",
            };
            self.not_now(env, &e);
            let wake_at = match decide(&inputs) {
                Action::Wait { until, .. } => until,
                _ => next_check,
            };
            return Ok(Next {
                status: status.into(),
                wake_at,
            });
        }
        self.last_not_now = None;
        if !timer {
            let wake_at = match decide(&inputs) {
                Action::Wait { until, .. } => until,
                _ => next_check,
            };
            return Ok(Next {
                status: "manual mode: updates only when asked over D-Bus".into(),
                wake_at,
            });
        }
        if !inputs.staged {
            let up_to_date = || Next {
                status: format!("up to date ({})", agent.host.booted_version),
                wake_at: next_check,
            };
            match self.install(service, env)? {
                Install::Installed => {
                    inputs.staged = true;
                    // "installed" reaches etcd before the slot is asked for.
                    self.flush(env);
                }
                Install::UpToDate => return Ok(up_to_date()),
                Install::Busy => {
                    return Ok(Next {
                        status: "an update asked for over D-Bus is running".into(),
                        wake_at: next_check,
                    });
                }
                Install::Halted(line) => {
                    return Ok(Next {
                        status: line,
                        wake_at: next_check,
                    });
                }
                Install::NotNow(e) => {
                    self.not_now(env, &e);
                    return Ok(Next {
                        status: format!("not updating now: {e}"),
                        wake_at: next_check,
                    });
                }
            }
        }
        // Staged earlier: a halt since then (fleet or publisher) takes the
        // update back instead of booting it.
        if staged && let Some(line) = self.unstage_if_halted(agent, env)? {
            if inputs.holds_slot == Some(true) {
                self.release(env);
            }
            return Ok(Next {
                status: line,
                wake_at: next_check,
            });
        }
        // Staged: the reboot, as the strategy, the windows and the slot say.
        for _ in 0..4 {
            match decide(&inputs) {
                Action::ReleaseSlot => {
                    self.release(env);
                    inputs.holds_slot = Some(false);
                }
                Action::AskSlot => {
                    inputs.lock = self.ask(env, now);
                    inputs.retry_at = self.retry_at;
                }
                Action::Reboot => {
                    let into = match agent.state.progress()? {
                        Some(p) => format!("{} (slot {})", p.version, p.slot),
                        None => "the new slot".into(),
                    };
                    env.log(5, &format!("rebooting into {into}"));
                    self.last_wait = None;
                    env.reboot()
                        .map_err(|e| anyhow::anyhow!("rebooting into {into}: {e}"))?;
                    return Ok(Next {
                        status: "rebooting".into(),
                        wake_at: next_check,
                    });
                }
                Action::Wait { until, why } => {
                    let line = why.message(now);
                    self.log_wait(env, &why, &line);
                    return Ok(Next {
                        status: line,
                        wake_at: until,
                    });
                }
            }
        }
        Ok(unreachable_next(next_check))
    }

    /// Takes back a staged update whose rollout was halted; the line said.
    fn unstage_if_halted(
        &mut self,
        agent: &crate::Agent,
        env: &mut dyn Env,
    ) -> Result<Option<String>> {
        let Some((version, why)) = agent.staged_halt()? else {
            return Ok(None);
        };
        let line = agent
            .unstage(&version, &why)
            .with_context(|| format!("taking back the staged update to {version}"))?;
        env.log(4, &line);
        Ok(Some(line))
    }

    /// Whether this host holds a slot, keeping an etcd slot's lease renewed
    /// while it does.
    fn holds_slot(&mut self, cfg: &UpdateConfig) -> Option<bool> {
        if !is_lock(cfg.reboot) {
            return Some(false);
        }
        let f = self.fleet.clone()?;
        let held = f.holds_slot();
        match held {
            Some(true) if !self.renewing() => self.keep_alive = f.keep_alive().ok().flatten(),
            Some(false) => self.keep_alive = None,
            _ => {}
        }
        // FleetLock cannot be asked: steady-state is sent once anyway.
        if f.lease_ttl().is_none() && !self.steady_sent && held == Some(false) {
            return None;
        }
        held
    }

    fn release(&mut self, env: &mut dyn Env) {
        // The lease runs out by itself if the release fails.
        self.keep_alive = None;
        let Some(f) = self.fleet.clone() else { return };
        let released = f.release();
        self.steady_sent |= released.is_ok();
        match released {
            Ok(true) => env.log(5, &format!("released reboot slot in {}", f.describe())),
            Ok(false) => {}
            Err(e) => {
                let expiry = f
                    .lease_ttl()
                    .map(|t| format!("; its lease frees it within {} s otherwise", t.as_secs()))
                    .unwrap_or_default();
                env.log(
                    4,
                    &format!("cannot give the reboot slot back: {e}; trying again at the next check{expiry}"),
                );
            }
        }
    }

    fn ask(&mut self, env: &mut dyn Env, now: i64) -> Lock {
        let Some(f) = self.fleet.clone() else {
            return Lock::Failed("no fleet lock is set up".into());
        };
        let retry = |c: &mut Cycle| {
            let d = c.backoff.next_delay();
            c.retry_at = now + (d.as_millis().div_ceil(1000)) as i64;
        };
        match f.acquire() {
            SlotAnswer::Taken { held } => {
                self.backoff.reset();
                self.start_keep_alive(&f, env);
                let line = match held {
                    Some((n, max)) => format!("took reboot slot {n}/{max} in {}", f.describe()),
                    None => format!("took a reboot slot in {}", f.describe()),
                };
                env.log(5, &line);
                Lock::Granted
            }
            SlotAnswer::AlreadyHeld => {
                self.backoff.reset();
                if !self.renewing() {
                    self.start_keep_alive(&f, env);
                }
                env.log(
                    6,
                    &format!("holding a reboot slot in {} already", f.describe()),
                );
                Lock::Granted
            }
            SlotAnswer::Full(held) => {
                retry(self);
                Lock::Full(held)
            }
            SlotAnswer::Failed(e) => {
                retry(self);
                Lock::Failed(e)
            }
        }
    }

    fn start_keep_alive(&mut self, f: &Coordinator, env: &mut dyn Env) {
        match f.keep_alive() {
            Ok(k) => self.keep_alive = k,
            Err(e) => env.log(4, &format!("cannot renew the reboot slot's lease: {e}")),
        }
    }

    /// Sends queued rollout outcomes (etcd-lock).
    fn flush(&mut self, env: &mut dyn Env) {
        let Some(f) = &self.fleet else { return };
        match f.flush_outcomes() {
            Ok(0) => {}
            Ok(n) => env.log(
                6,
                &format!("recorded {n} rollout outcome(s) in {}", f.describe()),
            ),
            Err(e) => env.log(4, &e.to_string()),
        }
    }

    fn install(&mut self, service: &Service, env: &mut dyn Env) -> Result<Install> {
        let mut last = 0;
        let r = service.run_update(false, &mut |e| match e {
            Event::Phase(p) => env.log(6, p),
            Event::Chunk {
                bytes_done,
                bytes_total,
                ..
            } => {
                let pct = bytes_done * 100 / (*bytes_total).max(1);
                if pct >= last + 10 {
                    last = pct;
                    env.status(&format!("installing: {pct}%"));
                }
            }
        });
        let Some(r) = r else {
            return Ok(Install::Busy);
        };
        match r {
            Ok(Some(out)) => {
                env.log(
                    5,
                    &format!("{} ready in slot {}: reboot needed", out.version, out.slot),
                );
                self.last_halted = None;
                Ok(Install::Installed)
            }
            Ok(None) => {
                self.last_halted = None;
                Ok(Install::UpToDate)
            }
            Err(e) if e.waits_for_boot() => Ok(Install::NotNow(e)),
            Err(Error::Halted { version, detail }) => {
                let line = Error::Halted {
                    version: version.clone(),
                    detail,
                }
                .to_string();
                if self.last_halted.as_deref() != Some(line.as_str()) {
                    env.log(5, &line);
                    self.last_halted = Some(line.clone());
                }
                Ok(Install::Halted(line))
            }
            Err(e) => Err(e).context("updating"),
        }
    }

    /// "Not now" (this boot on trial, a rollback waiting for its reboot):
    /// said once until it changes.
    fn not_now(&mut self, env: &mut dyn Env, e: &Error) {
        let line = format!("not updating now: {e}");
        if self.last_not_now.as_deref() != Some(line.as_str()) {
            env.log(5, &line);
            self.last_not_now = Some(line);
        }
    }

    /// A wait for a slot is logged at every retry (each is a decision);
    /// other waits once until the kind of wait changes.
    fn log_wait(&mut self, env: &mut dyn Env, why: &Why, line: &str) {
        match why {
            Why::SlotFull { .. } => env.log(5, line),
            Why::LockFailed { .. } => env.log(4, line),
            _ if self.last_wait != Some(why.kind()) => env.log(5, line),
            _ => {}
        }
        self.last_wait = Some(why.kind());
    }
}

/// A wake-up at the next check: after four decisions without a wait or a
/// reboot (the table needs three at most: release, ask, then either).
fn unreachable_next(next_check: i64) -> Next {
    Next {
        status: "idle".into(),
        wake_at: next_check,
    }
}

/// Seconds to sleep until `wake_at`: at least 1, at most `interval`.
pub fn sleep_for(now: i64, wake_at: i64, interval: i64) -> u64 {
    (wake_at - now).clamp(1, interval.max(1)) as u64
}
