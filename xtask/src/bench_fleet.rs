//! `cargo xtask bench fleet`: a fleet of simulated hosts rolls out two
//! releases through the agent's own pure decisions (`plan::choose`,
//! `reboot::decide`, `release_repo::install_time`) and the real etcd
//! semaphore and rollout outcomes (`fleet_lock`) against a real etcd on
//! loopback.
//!
//! Time is simulated (a discrete-event queue of host wake-ups); etcd calls are
//! real. Leases are real too, so simulated time is tied to the wall clock
//! (`--speed` simulated seconds per second) only while a crashed host's slot
//! waits for its lease to run out; the rest of the time the clock jumps from
//! event to event. Live holders renew their lease at each of their decision
//! points, as the agent does.
//!
//! The scenario: release 1.1.0 (wave `--wave`) rolls back on `--rollback-pct`
//! of the hosts and must halt (default threshold: 2 hosts or 5 %); its fix
//! 1.2.0 is published `--fix-after` hours later with the same wave and rolls
//! back on one host only. `--crash-pct` of the hosts die on their first
//! reboot while holding a slot.
//!
//! Every install decision is a `Rollout::halt_check`: one read of the
//! release's counters, of the same size whatever the fleet's, so the run
//! grows with the number of hosts, not its square (10000 hosts: about 6 min
//! on the 2-core development machine; with a full read of every outcome
//! record per decision it took about 20).
//!
//! Options: `--hosts N` (10000), `--max-rebooting N` (50), `--speed S` (1000),
//! `--lease-ttl SECONDS` (real, 2), `--poll-every EVENTS` (20),
//! `--rollback-pct P` (2), `--crash-pct P` (1), `--fix-after HOURS` (6),
//! `--wave SPEC` (`2h:1%,24h:10%,72h:100%`), `--seed N`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cairn_updater::config::RebootStrategy;
use cairn_updater::plan::{self, HostView, Skip};
use cairn_updater::reboot::{self, Action, Inputs, Lock, TRIAL_POLL, WindowState};
use fleet_lock::keys::GroupKeys;
use fleet_lock::{
    Acquire, Backoff, BackoffPolicy, EtcdClient, Fleet, FleetConfig, HaltThreshold, Outcome, Status,
};
use release_manifest::{Hex32, Version};
use release_repo::{ReleaseEntry, Wave};

/// The wave's start: any fixed instant (simulated unix seconds).
const T0: u64 = 1_800_000_000;
const BOARD: &str = "qemu-x86_64";
const ARCH: &str = "x86_64";
/// The agent's default `interval_minutes`.
const CHECK_EVERY: u64 = 3600;

struct Opts {
    hosts: usize,
    max_rebooting: u32,
    speed: f64,
    lease_ttl: u64,
    poll_every: u64,
    rollback_pct: f64,
    crash_pct: f64,
    fix_after_h: u64,
    wave: String,
    seed: u64,
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} needs a value")),
    }
}

fn opts(args: &[String]) -> Result<Opts> {
    let known = [
        "--hosts",
        "--max-rebooting",
        "--speed",
        "--lease-ttl",
        "--poll-every",
        "--rollback-pct",
        "--crash-pct",
        "--fix-after",
        "--wave",
        "--seed",
    ];
    for a in args.iter().step_by(2) {
        if !known.contains(&a.as_str()) {
            bail!(
                "unknown option {a:?} of bench fleet (known: {})",
                known.join(" ")
            );
        }
    }
    let o = Opts {
        hosts: flag(args, "--hosts", 10_000)?,
        max_rebooting: flag(args, "--max-rebooting", 50)?,
        speed: flag(args, "--speed", 1000.0)?,
        lease_ttl: flag(args, "--lease-ttl", 2)?,
        poll_every: flag(args, "--poll-every", 20)?,
        rollback_pct: flag(args, "--rollback-pct", 2.0)?,
        crash_pct: flag(args, "--crash-pct", 1.0)?,
        fix_after_h: flag(args, "--fix-after", 6)?,
        wave: flag(args, "--wave", "2h:1%,24h:10%,72h:100%".to_string())?,
        seed: flag(args, "--seed", 1)?,
    };
    if o.hosts == 0 || o.max_rebooting == 0 || o.speed <= 0.0 || o.poll_every == 0 {
        bail!("--hosts, --max-rebooting, --speed and --poll-every must be positive");
    }
    Ok(o)
}

// ---------------------------------------------------------------- pure parts

/// SplitMix64 of one value: the simulation's only source of chance.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw in `[0, 1)` for (run seed, host, purpose).
fn unit(seed: u64, host: usize, salt: u64) -> f64 {
    let r = mix(mix(mix(seed) ^ host as u64) ^ salt);
    (r >> 11) as f64 / (1u64 << 53) as f64
}

/// A duration in `[lo, hi)` seconds for (run seed, host, purpose).
fn span_in(seed: u64, host: usize, salt: u64, lo: u64, hi: u64) -> u64 {
    lo + (unit(seed, host, salt) * (hi - lo) as f64) as u64
}

/// The priority queue of host wake-ups: earliest time first, and events of
/// the same time in the order they were pushed (FIFO), so a run is
/// deterministic whatever the heap does with ties.
struct Queue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<u64, E>,
    seq: u64,
}

impl<E> Queue<E> {
    fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
        }
    }

    fn push(&mut self, at: u64, host: usize, event: E) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, host)));
        self.events.insert(self.seq, event);
    }

    fn pop(&mut self) -> Option<(u64, usize, E)> {
        let Reverse((at, seq, host)) = self.heap.pop()?;
        let e = self.events.remove(&seq)?;
        Some((at, host, e))
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The first check tick at or after `t` of a host whose checks fall at
/// `phase` modulo [`CHECK_EVERY`].
fn next_tick(t: u64, phase: u64) -> u64 {
    let base = t - t % CHECK_EVERY + phase;
    if base >= t { base } else { base + CHECK_EVERY }
}

/// When the `count`-th event (1-based) of `times` happened; `None` if fewer.
fn nth_time(times: &[u64], count: usize) -> Option<u64> {
    if count == 0 {
        return times.iter().min().copied();
    }
    let mut v = times.to_vec();
    v.sort_unstable();
    v.get(count - 1).copied()
}

/// The smallest `n` with `n >= share * total` (`share` in percent).
fn count_for(percent: f64, total: usize) -> usize {
    ((percent / 100.0 * total as f64) - 1e-9).ceil().max(0.0) as usize
}

/// Mean, 50th and 95th percentiles and maximum (nearest rank); NaNs if empty.
fn summary(values: &[f64]) -> (f64, f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, rank(0.50), rank(0.95), v[v.len() - 1])
}

/// `+1 h 05 min`, `-12 min`, `+40 s`.
fn signed_span(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    format!("{sign}{}", hm(secs.unsigned_abs()))
}

/// `3 h 05 min`, `12 min`, `40 s`.
fn hm(s: u64) -> String {
    if s < 120 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {:02} min", s / 3600, s % 3600 / 60)
    }
}

// ---------------------------------------------------------------- simulation

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A regular update check.
    Check,
    /// The update is written and verified (staged).
    Staged(usize),
    /// Ask for a slot again (the back-off ran out).
    Retry,
    /// Booted into the staged release, on trial.
    Booted,
    /// The health gate's verdict (at the trial poll after it).
    HealthDone,
    /// Back in the old slot after a failed health gate.
    FellBack,
}

struct Host {
    id: String,
    seed: f64,
    phase: u64,
    booted: Version,
    failed: BTreeMap<String, String>,
    backoff: Backoff,
    staged: Option<usize>,
    holds: bool,
    dead: bool,
    rebooted_once: bool,
}

struct Release {
    entry: ReleaseEntry,
    published: u64,
    /// Hosts whose health gate fails on it.
    rolls_back: Box<dyn Fn(usize) -> bool>,
    installed: Vec<u64>,
    committed: Vec<u64>,
    rolled_back: u64,
    /// Hosts that died without installing it.
    never: HashSet<usize>,
    /// Hosts that died rebooting into it.
    crashed: u64,
    halt_seen: Option<(u64, u64, u64)>,
}

/// A crashed host's slot, until etcd frees it.
struct Crashed {
    host: usize,
    taken_sim: u64,
    taken_wall: Instant,
}

#[derive(Default)]
struct Counts {
    acquire: u64,
    full: u64,
    failed: u64,
    release: u64,
    keep_alive: u64,
    record: u64,
    halt_check: u64,
    polls: u64,
    status: u64,
    status_requests: u64,
    lost_live: u64,
    events: u64,
}

struct Sim {
    o: Opts,
    fleet: Fleet,
    raw: EtcdClient,
    holder_keys: GroupKeys,
    threshold: HaltThreshold,
    hosts: Vec<Host>,
    releases: Vec<Release>,
    queue: Queue<Ev>,
    now: u64,
    /// The event time the clock is moving to (`now` outside `advance`).
    moving_to: u64,
    /// The most the simulated clock fell behind the paced wall clock (s).
    max_lag: f64,
    held: HashSet<usize>,
    crashed: Vec<Crashed>,
    /// (sim seconds held, wall seconds held) of slots freed by lease expiry.
    expired: Vec<(f64, f64)>,
    anchor: (u64, Instant),
    peak_sim: usize,
    peak_etcd: usize,
    violations: Vec<String>,
    c: Counts,
}

impl Sim {
    fn index_of(&self) -> HashMap<String, usize> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id.clone(), i))
            .collect()
    }

    fn sim_now_of_wall(&self) -> u64 {
        if self.crashed.is_empty() {
            return self.now;
        }
        // Where the paced clock is, but never past the event being moved
        // to: when the simulation lags, hosts see the slot free at `now`.
        let el = self.anchor.1.elapsed().as_secs_f64() * self.o.speed;
        (self.anchor.0 + el as u64).clamp(self.now, self.moving_to.max(self.now))
    }

    /// The holders etcd lists: peak, violations, and crashed and live slots
    /// that etcd let go.
    fn reconcile(&mut self, holders: &[String], index: &HashMap<String, usize>) {
        self.peak_etcd = self.peak_etcd.max(holders.len());
        if holders.len() > self.o.max_rebooting as usize {
            self.violations.push(format!(
                "etcd lists {} holders at t+{} (max {})",
                holders.len(),
                hm(self.now - T0),
                self.o.max_rebooting
            ));
        }
        let there: HashSet<usize> = holders
            .iter()
            .filter_map(|h| index.get(h).copied())
            .collect();
        let sim_now = self.sim_now_of_wall();
        let mut still = Vec::new();
        for c in std::mem::take(&mut self.crashed) {
            if there.contains(&c.host) {
                still.push(c);
            } else {
                self.held.remove(&c.host);
                self.expired.push((
                    sim_now.saturating_sub(c.taken_sim) as f64,
                    c.taken_wall.elapsed().as_secs_f64(),
                ));
            }
        }
        self.crashed = still;
        let lost: Vec<usize> = self
            .held
            .iter()
            .copied()
            .filter(|h| !there.contains(h) && !self.hosts[*h].dead)
            .collect();
        for h in lost {
            self.c.lost_live += 1;
            self.held.remove(&h);
            self.hosts[h].holds = false;
        }
    }

    /// The holders in etcd: one range read of `holders/`, and every tenth
    /// time `Semaphore::status` (which also asks each lease's time left).
    fn poll(&mut self, index: &HashMap<String, usize>) -> Result<()> {
        self.c.polls += 1;
        let ids: Vec<String> = if self.c.polls.is_multiple_of(10) {
            let s: Status = self.fleet.semaphore.status().context("semaphore status")?;
            self.c.status += 1;
            self.c.status_requests += 1 + s.holders.iter().filter(|h| h.lease != 0).count() as u64;
            s.holders.into_iter().map(|h| h.id).collect()
        } else {
            self.c.status_requests += 1;
            let prefix = self.holder_keys.holders();
            self.raw
                .get_prefix(&prefix)
                .context("holders range")?
                .kvs
                .iter()
                .map(|kv| kv.key_str().trim_start_matches(prefix.as_str()).to_string())
                .collect()
        };
        self.reconcile(&ids, index);
        Ok(())
    }

    /// Moves the clock to `t`, waiting for the wall clock while a crashed
    /// host's lease is running out (and polling etcd meanwhile).
    fn advance(&mut self, t: u64, index: &HashMap<String, usize>) -> Result<()> {
        self.moving_to = t;
        if !self.crashed.is_empty() {
            let target = self.anchor.1
                + Duration::from_secs_f64(t.saturating_sub(self.anchor.0) as f64 / self.o.speed);
            let behind = Instant::now().saturating_duration_since(target);
            self.max_lag = self.max_lag.max(behind.as_secs_f64() * self.o.speed);
            loop {
                let now = Instant::now();
                if now >= target || self.crashed.is_empty() {
                    break;
                }
                std::thread::sleep((target - now).min(Duration::from_millis(200)));
                self.poll(index)?;
            }
        }
        self.now = t;
        if self.crashed.is_empty() {
            self.anchor = (t, Instant::now());
        }
        Ok(())
    }

    fn record(&mut self, rel: usize, host: usize, outcome: Outcome, reason: &str) -> Result<()> {
        self.c.record += 1;
        let v = self.releases[rel].entry.version.to_string();
        self.fleet
            .rollout
            .record(&v, &self.hosts[host].id, outcome, reason)
            .with_context(|| format!("recording {outcome} of {v}"))
    }

    fn inputs(&self, host: usize, committed: bool, lock: Lock, retry_at: i64) -> Inputs {
        let h = &self.hosts[host];
        let now = self.now as i64;
        Inputs {
            strategy: RebootStrategy::EtcdLock,
            committed,
            staged: h.staged.is_some(),
            holds_slot: Some(h.holds),
            window: WindowState::ALWAYS,
            lock,
            now,
            retry_at,
            next_check: next_tick(self.now + 1, h.phase) as i64,
        }
    }

    /// The update check: the agent's choice, then the fleet's halt gate.
    fn check(&mut self, host: usize) -> Result<()> {
        let now = self.now;
        let visible: Vec<ReleaseEntry> = self
            .releases
            .iter()
            .filter(|r| r.published <= now)
            .map(|r| r.entry.clone())
            .collect();
        let h = &self.hosts[host];
        let d = plan::choose(
            &visible,
            &HostView {
                board: BOARD,
                arch: ARCH,
                booted_version: &h.booted,
                failed: &h.failed,
                seed: h.seed,
                now,
                ignore_wave: false,
            },
        );
        let phase = h.phase;
        let later_publish = self
            .releases
            .iter()
            .map(|r| r.published)
            .filter(|&p| p > now)
            .min();
        let turn = d
            .skipped
            .iter()
            .filter_map(|s| match s.skip {
                Skip::WaveNotReached { at } => Some(at),
                _ => None,
            })
            .min();
        let Some(chosen) = d.chosen else {
            if let Some(at) = [turn, later_publish].into_iter().flatten().min() {
                self.queue.push(next_tick(at, phase), host, Ev::Check);
            }
            return Ok(());
        };
        let rel = self
            .releases
            .iter()
            .position(|r| r.entry.version == chosen.version)
            .context("chosen release not in the channel")?;
        self.c.halt_check += 1;
        let report = self
            .fleet
            .rollout
            .halt_check(chosen.version.as_str(), self.threshold)
            .context("rollout halt check")?;
        if report.halted {
            let r = &mut self.releases[rel];
            if r.halt_seen.is_none() {
                r.halt_seen = Some((now, report.installed, report.rolled_back));
            }
            let next = [Some(now + 1), turn, later_publish]
                .into_iter()
                .flatten()
                .filter(|&t| t > now)
                .min()
                .unwrap_or(now + 1);
            self.queue.push(next_tick(next, phase), host, Ev::Check);
            return Ok(());
        }
        let took = span_in(self.o.seed, host, 10 + rel as u64, 300, 900);
        self.queue.push(now + took, host, Ev::Staged(rel));
        Ok(())
    }

    /// Staged, or the back-off ran out: `reboot::decide` and the semaphore.
    fn try_reboot(&mut self, host: usize, index: &HashMap<String, usize>) -> Result<()> {
        let mut lock = Lock::NotAsked;
        let mut retry_at = self.now as i64;
        for _ in 0..4 {
            match reboot::decide(&self.inputs(host, true, lock.clone(), retry_at)) {
                Action::AskSlot => {
                    self.c.acquire += 1;
                    let id = self.hosts[host].id.clone();
                    lock = match self.fleet.semaphore.acquire(&id) {
                        Ok(a @ (Acquire::Taken | Acquire::AlreadyHeld)) => {
                            self.hosts[host].holds = true;
                            self.hosts[host].backoff.reset();
                            if matches!(a, Acquire::Taken) {
                                self.took_slot(host, index)?;
                            }
                            Lock::Granted
                        }
                        Ok(Acquire::Full { holders, .. }) => {
                            self.c.full += 1;
                            self.reconcile(&holders, index);
                            Lock::Full(format!("{} holders", holders.len()))
                        }
                        Err(e) => {
                            self.c.failed += 1;
                            Lock::Failed(e.to_string())
                        }
                    };
                    if !matches!(lock, Lock::Granted) {
                        let d = self.hosts[host].backoff.next_delay();
                        retry_at = self.now as i64 + d.as_secs().max(1) as i64;
                    }
                }
                Action::Reboot => {
                    let h = &mut self.hosts[host];
                    let first = !h.rebooted_once;
                    h.rebooted_once = true;
                    if first && unit(self.o.seed, host, 3) * 100.0 < self.o.crash_pct {
                        // Dies with the slot: only the lease frees it.
                        h.dead = true;
                        for (i, r) in self.releases.iter_mut().enumerate() {
                            if Some(i) == h.staged {
                                r.crashed += 1;
                            } else {
                                r.never.insert(host);
                            }
                        }
                        if self.crashed.is_empty() {
                            self.anchor = (self.now, Instant::now());
                        }
                        self.crashed.push(Crashed {
                            host,
                            taken_sim: self.now,
                            taken_wall: Instant::now(),
                        });
                        return Ok(());
                    }
                    let took = span_in(self.o.seed, host, 20, 120, 360);
                    self.queue.push(self.now + took, host, Ev::Booted);
                    return Ok(());
                }
                Action::Wait { until, .. } => {
                    self.queue
                        .push(until.max(self.now as i64 + 1) as u64, host, Ev::Retry);
                    return Ok(());
                }
                Action::ReleaseSlot => bail!("decide released a slot of a staged host"),
            }
        }
        bail!("reboot::decide did not settle")
    }

    fn took_slot(&mut self, host: usize, index: &HashMap<String, usize>) -> Result<()> {
        self.held.insert(host);
        if self.held.len() > self.o.max_rebooting as usize {
            // Crashed slots may have expired since the last look.
            self.poll(index)?;
        }
        if self.held.len() > self.o.max_rebooting as usize {
            self.violations.push(format!(
                "{} hosts hold a slot at t+{} (max {})",
                self.held.len(),
                hm(self.now - T0),
                self.o.max_rebooting
            ));
        }
        self.peak_sim = self.peak_sim.max(self.held.len());
        Ok(())
    }

    /// The agent starts in the new boot: it renews its slot's lease.
    fn renew(&mut self, host: usize) -> Result<()> {
        self.c.keep_alive += 1;
        let id = self.hosts[host].id.clone();
        if self.fleet.semaphore.keep_alive(&id)?.is_none() && self.hosts[host].holds {
            self.c.lost_live += 1;
            self.hosts[host].holds = false;
            self.held.remove(&host);
        }
        Ok(())
    }

    /// Committed (the new release, or the old one after a fall-back): the
    /// slot goes back, then the host waits for its next check.
    fn settle(&mut self, host: usize) -> Result<()> {
        self.hosts[host].staged = None;
        for _ in 0..3 {
            match reboot::decide(&self.inputs(host, true, Lock::NotAsked, self.now as i64)) {
                Action::ReleaseSlot => {
                    self.c.release += 1;
                    let id = self.hosts[host].id.clone();
                    self.fleet.semaphore.release(&id).context("release")?;
                    self.hosts[host].holds = false;
                    self.held.remove(&host);
                }
                Action::Wait { until, .. } => {
                    let at = next_tick(until as u64, self.hosts[host].phase);
                    self.queue.push(at, host, Ev::Check);
                    return Ok(());
                }
                other => bail!("unexpected {other:?} after a commit"),
            }
        }
        bail!("reboot::decide did not settle after a commit")
    }

    fn step(&mut self, host: usize, ev: Ev, index: &HashMap<String, usize>) -> Result<()> {
        if self.hosts[host].dead {
            return Ok(());
        }
        match ev {
            Ev::Check => self.check(host)?,
            Ev::Staged(rel) => {
                self.hosts[host].staged = Some(rel);
                self.releases[rel].installed.push(self.now);
                self.record(rel, host, Outcome::Installed, "")?;
                self.try_reboot(host, index)?;
            }
            Ev::Retry => self.try_reboot(host, index)?,
            Ev::Booted => {
                self.renew(host)?;
                // On trial: decide says wait TRIAL_POLL; the verdict is seen
                // at the first poll after the gate (5 min).
                let a = reboot::decide(&self.inputs(host, false, Lock::NotAsked, 0));
                if !matches!(a, Action::Wait { .. }) {
                    bail!("unexpected {a:?} on trial");
                }
                let gate = 300u64.div_ceil(TRIAL_POLL as u64) * TRIAL_POLL as u64;
                self.queue.push(self.now + gate, host, Ev::HealthDone);
            }
            Ev::HealthDone => {
                let rel = self.hosts[host]
                    .staged
                    .context("on trial without a release")?;
                if (self.releases[rel].rolls_back)(host) {
                    let took = span_in(self.o.seed, host, 21, 120, 360);
                    self.queue.push(self.now + took, host, Ev::FellBack);
                } else {
                    self.record(rel, host, Outcome::Committed, "")?;
                    self.releases[rel].committed.push(self.now);
                    self.hosts[host].booted = self.releases[rel].entry.version.clone();
                    self.settle(host)?;
                }
            }
            Ev::FellBack => {
                self.renew(host)?;
                let rel = self.hosts[host]
                    .staged
                    .context("fell back without a release")?;
                let why = "health gate: app web did not answer (simulated)";
                self.record(rel, host, Outcome::RolledBack, why)?;
                self.releases[rel].rolled_back += 1;
                let v = self.releases[rel].entry.version.to_string();
                self.hosts[host].failed.insert(v, why.into());
                self.settle(host)?;
            }
        }
        Ok(())
    }
}

fn entry(version: &str, wave: Wave) -> Result<ReleaseEntry> {
    Ok(ReleaseEntry {
        board: BOARD.into(),
        arch: ARCH.into(),
        version: Version::parse(version).map_err(|e| anyhow!("{e}"))?,
        manifest: format!("{version}/manifest.json"),
        manifest_sha256: Hex32([0; 32]),
        manifest_size: 0,
        wave,
        halted: None,
    })
}

/// The sum of `grpc_server_handled_total` in etcd's metrics: every request
/// the JSON gateway passed on.
fn etcd_requests(metrics_url: &str) -> Result<u64> {
    let host = metrics_url.strip_prefix("http://").context("metrics URL")?;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = opts(args)?;
    let wall = Instant::now();
    let Some(etcd) = host_tools::etcd::EtcdServer::start() else {
        bail!("etcd is not installed (Debian package etcd-server; cargo xtask setup)");
    };
    let mut cfg = FleetConfig::new([etcd.url.clone()], "bench");
    cfg.max_rebooting = o.max_rebooting;
    cfg.lease_ttl = Duration::from_secs(o.lease_ttl);
    let fleet = Fleet::new(&cfg).map_err(|e| anyhow!("{e}"))?;
    let requests_before = etcd_requests(&etcd.metrics_url).unwrap_or(0);

    let wave_a = Wave::parse(T0, &o.wave).map_err(|e| anyhow!("--wave: {e}"))?;
    let fix_at = T0 + o.fix_after_h * 3600;
    let wave_b = Wave::parse(fix_at, &o.wave).map_err(|e| anyhow!("--wave: {e}"))?;
    let (seed, rb) = (o.seed, o.rollback_pct);
    let one_bad = (mix(seed ^ 0xbad) % o.hosts as u64) as usize;
    let release = |entry, published, rolls_back: Box<dyn Fn(usize) -> bool>| Release {
        entry,
        published,
        rolls_back,
        installed: Vec::new(),
        committed: Vec::new(),
        rolled_back: 0,
        never: HashSet::new(),
        crashed: 0,
        halt_seen: None,
    };
    let releases = vec![
        release(
            entry("1.1.0", wave_a)?,
            T0,
            Box::new(move |h| unit(seed, h, 4) * 100.0 < rb),
        ),
        release(
            entry("1.2.0", wave_b)?,
            fix_at,
            Box::new(move |h| h == one_bad),
        ),
    ];
    let mut hosts = Vec::with_capacity(o.hosts);
    let mut queue = Queue::new();
    for i in 0..o.hosts {
        let machine_id = format!("{:016x}{:016x}", mix(seed ^ (i as u64) << 1), mix(i as u64));
        let id = fleet_lock::node_id(&machine_id).map_err(|e| anyhow!("{e}"))?;
        let phase = span_in(seed, i, 1, 0, CHECK_EVERY);
        hosts.push(Host {
            backoff: Backoff::new(BackoffPolicy::default(), mix(i as u64 ^ 0xb0ff)),
            id,
            seed: unit(seed, i, 2),
            phase,
            booted: Version::parse("1.0.0").map_err(|e| anyhow!("{e}"))?,
            failed: BTreeMap::new(),
            staged: None,
            holds: false,
            dead: false,
            rebooted_once: false,
        });
        queue.push(next_tick(T0, phase), i, Ev::Check);
    }
    let mut sim = Sim {
        fleet,
        raw: EtcdClient::new(&cfg.etcd).map_err(|e| anyhow!("{e}"))?,
        holder_keys: GroupKeys::new(&cfg.group).map_err(|e| anyhow!("{e}"))?,
        threshold: HaltThreshold::default(),
        hosts,
        releases,
        queue,
        now: T0,
        moving_to: T0,
        max_lag: 0.0,
        held: HashSet::new(),
        crashed: Vec::new(),
        expired: Vec::new(),
        anchor: (T0, Instant::now()),
        peak_sim: 0,
        peak_etcd: 0,
        violations: Vec::new(),
        c: Counts::default(),
        o,
    };
    let index = sim.index_of();
    println!(
        "fleet: {} hosts, max_rebooting {}, wave {}, lease TTL {} s real = {} simulated (speed {}x while a crashed slot is pending)",
        sim.o.hosts,
        sim.o.max_rebooting,
        sim.o.wave,
        sim.o.lease_ttl,
        hm((sim.o.lease_ttl as f64 * sim.o.speed) as u64),
        sim.o.speed
    );
    println!(
        "releases: 1.1.0 at t+0 rolls back on {} % of hosts; 1.2.0 at t+{} h rolls back on 1 host; {} % crash on their first reboot holding a slot",
        sim.o.rollback_pct, sim.o.fix_after_h, sim.o.crash_pct
    );
    // Past the fix's wave and a day: hosts still checking then only poll a
    // halted release (a host that rolled back from 1.2.0 is offered 1.1.0).
    let horizon = fix_at + wave_b.duration() + 24 * 3600;
    let mut last_print = Instant::now();
    while let Some((t, host, ev)) = sim.queue.pop() {
        if t > horizon {
            break;
        }
        sim.advance(t, &index)?;
        sim.step(host, ev, &index)?;
        sim.c.events += 1;
        if sim.c.events.is_multiple_of(sim.o.poll_every) {
            sim.poll(&index)?;
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            last_print = Instant::now();
            eprintln!(
                "  … t+{}, {} events, {} queued, {} holding, wall {:.0} s",
                hm(sim.now - T0),
                sim.c.events,
                sim.queue.len(),
                sim.held.len(),
                wall.elapsed().as_secs_f64()
            );
        }
    }
    // The last crashed slots: wait for their leases (bounded).
    let deadline = Instant::now() + Duration::from_secs(sim.o.lease_ttl * 3 + 5);
    while !sim.crashed.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        sim.poll(&index)?;
    }
    let requests = etcd_requests(&etcd.metrics_url)
        .map(|n| n.saturating_sub(requests_before))
        .ok();
    let tallies = sim
        .releases
        .iter()
        .map(|r| tally(&sim, r))
        .collect::<Result<Vec<_>>>()?;
    report(&sim, requests, &tallies, wall.elapsed())
}

/// (installed, committed, rolled back) of one release: counted by the halt
/// check, read from every record, and as the simulation saw them.
type Tally = [(u64, u64, u64); 3];

fn tally(sim: &Sim, r: &Release) -> Result<Tally> {
    let v = r.entry.version.to_string();
    let t = |x: &fleet_lock::ReleaseReport| (x.installed, x.committed, x.rolled_back);
    let rollout = &sim.fleet.rollout;
    let check = rollout
        .halt_check(&v, sim.threshold)
        .context("halt check")?;
    let full = rollout
        .report(&v, sim.threshold)
        .context("rollout report")?;
    Ok([
        t(&check),
        t(&full),
        (
            r.installed.len() as u64,
            r.committed.len() as u64,
            r.rolled_back,
        ),
    ])
}

fn report(sim: &Sim, requests: Option<u64>, tallies: &[Tally], wall: Duration) -> Result<()> {
    let o = &sim.o;
    let n = o.hosts;
    let c = &sim.c;
    println!("simulated: t+{} in {} events", hm(sim.now - T0), c.events);
    println!(
        "slots held at once: {} measured in etcd ({} holder reads, {} of them Semaphore::status, + {} full answers), {} by the simulation; max_rebooting {} (goal: never above)",
        sim.peak_etcd, c.polls, c.status, c.full, sim.peak_sim, o.max_rebooting
    );
    if sim.violations.is_empty() {
        println!("limit violations: 0 (goal 0)");
    } else {
        println!(
            "!!!!!!!! LIMIT VIOLATIONS: {} (goal 0) !!!!!!!!",
            sim.violations.len()
        );
        for v in sim.violations.iter().take(10) {
            println!("!!!!!!!! {v}");
        }
    }
    println!(
        "slot requests: {} acquire ({} full, {} failed), {} release, {} keep-alive; live holders that lost their lease: {}",
        c.acquire, c.full, c.failed, c.release, c.keep_alive, c.lost_live
    );
    println!(
        "pacing: the simulated clock fell at most {} behind the paced wall clock while a crashed slot was pending (a lagging simulation sees leases expire sooner in simulated time)",
        hm(sim.max_lag as u64)
    );
    let sims: Vec<f64> = sim.expired.iter().map(|e| e.0).collect();
    let walls: Vec<f64> = sim.expired.iter().map(|e| e.1).collect();
    let (m, p50, p95, max) = summary(&sims);
    let (wm, _, _, wmax) = summary(&walls);
    let crashed = sim.hosts.iter().filter(|h| h.dead).count();
    println!(
        "crashed holders: {crashed}; slots freed by lease expiry: {} (still held at the end: {}); held for {} mean, {} p50, {} p95, {} max simulated ({wm:.1} s mean, {wmax:.1} s max wall; TTL {} s)",
        sim.expired.len(),
        sim.crashed.len(),
        hm(m as u64),
        hm(p50 as u64),
        hm(p95 as u64),
        hm(max as u64),
        o.lease_ttl
    );
    let mut miscounted = 0;
    for (r, tally) in sim.releases.iter().zip(tallies) {
        let eligible = n - r.never.len();
        println!(
            "release {} (published t+{}): installed by {} of {eligible} eligible hosts, committed {}, rolled back {}, crashed {} (committed targets leave rollbacks and crashes out)",
            r.entry.version,
            hm(r.published - T0),
            r.installed.len(),
            r.committed.len(),
            r.rolled_back,
            r.crashed
        );
        let halted_at = r.halt_seen.map(|h| h.0);
        for s in r.entry.wave.steps() {
            let planned = r.published + s.after_seconds;
            let need = count_for(s.percent, eligible);
            let need_commit = count_for(s.percent, eligible - (r.rolled_back + r.crashed) as usize);
            let show = |times: &[u64], need: usize| match nth_time(times, need) {
                Some(t) => format!(
                    "t+{} ({})",
                    hm(t - T0),
                    signed_span(t as i64 - planned as i64)
                ),
                None => match halted_at {
                    Some(_) => "not reached (halted)".into(),
                    None => "not reached".into(),
                },
            };
            println!(
                "  step {:>5}% by t+{}: {need} hosts installed at {}; {need_commit} committed at {}",
                s.percent,
                hm(planned - T0),
                show(&r.installed, need),
                show(&r.committed, need_commit)
            );
        }
        match r.halt_seen {
            Some((t, installed, rolled_back)) => println!(
                "  halted: first seen by a host at t+{} after {rolled_back} rollbacks, {installed} installed ({:.2} % of the fleet); finally {} installed ({:.2} %) (goal: below 5 %)",
                hm(t - T0),
                installed as f64 * 100.0 / n as f64,
                r.installed.len(),
                r.installed.len() as f64 * 100.0 / n as f64
            ),
            None => println!("  not halted"),
        }
        let [check, full, simulated] = *tally;
        let agree = check == full && full == simulated;
        miscounted += usize::from(!agree);
        println!(
            "  {}outcomes (installed, committed, rolled back): {check:?} by the halt check's counts, {full:?} from every record, {simulated:?} simulated{}",
            if agree { "" } else { "!!!!!!!! " },
            if agree {
                " (goal: equal)"
            } else {
                " (goal: equal: MISSED)"
            }
        );
    }
    let measuring = c.status_requests;
    match requests {
        Some(total) => println!(
            "etcd requests: {total} in all ({measuring} of them the bench's status polls): {:.2} per host without the polls (record {}, halt check {}, acquire/release/keep-alive calls {})",
            total.saturating_sub(measuring) as f64 / n as f64,
            c.record,
            c.halt_check,
            c.acquire + c.release + c.keep_alive
        ),
        None => println!("etcd requests: not read from etcd's metrics"),
    }
    let secs = wall.as_secs_f64();
    println!("wall time: {secs:.1} s (goal < 600 s)");
    let halt_ok =
        sim.releases[0].installed.len() * 100 < 5 * n && sim.releases[0].halt_seen.is_some();
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "goals: limit violations 0: {}; halt before 5 % installed: {}; wall < 10 min: {}; outcome counts agree: {}",
        met(sim.violations.is_empty()),
        met(halt_ok),
        met(secs < 600.0),
        met(miscounted == 0)
    );
    if !sim.violations.is_empty() {
        bail!("{} slot limit violation(s)", sim.violations.len());
    }
    if miscounted > 0 {
        bail!("the outcome counts of {miscounted} release(s) disagree");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_earliest_first_then_fifo() {
        let mut q = Queue::new();
        q.push(30, 1, 'a');
        q.push(10, 2, 'b');
        q.push(30, 3, 'c');
        q.push(10, 4, 'd');
        q.push(20, 5, 'e');
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (10, 2, 'b'),
                (10, 4, 'd'),
                (20, 5, 'e'),
                (30, 1, 'a'),
                (30, 3, 'c')
            ]
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn ticks() {
        assert_eq!(next_tick(7200, 0), 7200);
        assert_eq!(next_tick(7201, 0), 10800);
        assert_eq!(next_tick(7200, 100), 7300);
        assert_eq!(next_tick(7350, 100), 10900);
        assert_eq!(next_tick(7300, 100), 7300);
    }

    #[test]
    fn step_counts_and_times() {
        assert_eq!(count_for(1.0, 10_000), 100);
        assert_eq!(count_for(10.0, 9_901), 991);
        assert_eq!(count_for(100.0, 9_901), 9_901);
        assert_eq!(count_for(1.0, 50), 1);
        let times = [50, 10, 40, 20, 30];
        assert_eq!(nth_time(&times, 1), Some(10));
        assert_eq!(nth_time(&times, 3), Some(30));
        assert_eq!(nth_time(&times, 5), Some(50));
        assert_eq!(nth_time(&times, 6), None);
    }

    #[test]
    fn summaries() {
        let (m, p50, p95, max) = summary(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((m, p50, p95, max), (2.5, 2.0, 4.0, 4.0));
        assert!(summary(&[]).0.is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summary(&v).2, 95.0);
    }

    #[test]
    fn draws_are_stable_and_in_range() {
        for h in 0..1000 {
            let u = unit(7, h, 3);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, unit(7, h, 3));
            let s = span_in(7, h, 9, 300, 900);
            assert!((300..900).contains(&s));
        }
        let share = (0..10_000).filter(|&h| unit(1, h, 4) < 0.02).count();
        assert!((150..250).contains(&share), "{share}");
    }

    #[test]
    fn spans() {
        assert_eq!(hm(40), "40 s");
        assert_eq!(hm(720), "12 min");
        assert_eq!(hm(3900), "1 h 05 min");
        assert_eq!(signed_span(-720), "-12 min");
        assert_eq!(signed_span(40), "+40 s");
    }
}
