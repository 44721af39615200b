//! A fleet reboots in turn through a real etcd (lib/fleet-lock, the
//! agent's side in updater/src/daemon.rs): N hosts of the v1 test image, started
//! together, find v2 in the same repository, install it, and then reboot one
//! at a time because `[update] reboot = "etcd-lock"` with `max_rebooting = 1`
//! makes each take a slot of the group's semaphore first and give it back
//! only once its new boot is committed.
//!
//! etcd runs on the host's loopback (`host_tools::etcd::EtcdServer`); QEMU
//! user networking maps the guests' 10.0.2.2 to it. Two views of the slot,
//! kept independent on purpose:
//! - etcd itself: a poller reads the holders every 0.5 s through
//!   fleet-lock's client and records the most it ever saw at once;
//! - the consoles: each host's [took slot, released slot] interval on the
//!   host's clock (qemu spawn time + the line's host timestamp); no two may
//!   overlap.
//!
//! Each guest makes its own /etc/machine-id at first boot (the image ships
//! it empty), so each has its own node id in etcd. `CAIRN_FLEET_HOSTS`
//! (default 2, CI's budget) sets N; 3 is the manual proof.

use crate::scenarios::V2;
use crate::scenarios::boot_chain::{
    CHOSEN, ONE_ATTEMPT, SHELL_CMD, TO_LOGIN, expect_final_attrs, line_text, parse_chosen, say,
    wait_committed,
};
use crate::scenarios::update::{
    A_FALLBACK, B_GOOD, READY, TO_UPDATE, host_config, inputs, login, publish, spec,
};
use crate::vm::{HOST_ADDR_FROM_GUEST, Vm};
use crate::{Line, Pattern, runner::Ctx};
use anyhow::{Context, Result, anyhow, bail, ensure};
use cairn_updater::fixture::Server;
use fleet_lock::{EtcdClient, EtcdConfig, HaltThreshold, Outcome, Rollout, Semaphore};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How many hosts the scenario boots (an environment variable, like
/// `CAIRN_ACCEL`).
pub const HOSTS_ENV: &str = "CAIRN_FLEET_HOSTS";
/// CI has two cores and runs two scenarios at once: two guests here already
/// make three busy VMs.
const DEFAULT_HOSTS: usize = 2;
/// More TCG guests than this on a test host only measures the host.
const MAX_HOSTS: usize = 4;
const GROUP: &str = "qemu-fleet";
/// The slot's lease: long enough for a TCG reboot and health gate on a busy
/// host (the agent renews it once it runs again). Nothing here waits for it.
const LEASE_SECONDS: u64 = 600;
/// How often the poller reads the holders from etcd.
const POLL: Duration = Duration::from_millis(500);
/// cairn-updated's lines (journal, copied to the console;
/// updater/src/daemon.rs): "took reboot slot 1/1 in group G" (or "took a
/// reboot slot in …" when the count is unknown), "released reboot slot in
/// group G", and one "waiting for a reboot slot: …; retry in …" per refusal.
const TOOK: &str = r"took (a )?reboot slot";
const RELEASED: &str = "released reboot slot";
const WAITING: &str = "waiting for a reboot slot";
/// How far the poller's view of a holder may stray outside the host's
/// console interval: the key is written just before "took" is logged and
/// deleted just before "released" is, and a read takes a moment.
const SLACK: f64 = 5.0;
/// Waits are cut into slices this long, so a host whose neighbour failed
/// stops waiting soon instead of at its own timeout.
const SLICE: Duration = Duration::from_secs(5);

/// The number of hosts from `CAIRN_FLEET_HOSTS` (unset or empty: the default).
pub fn parse_hosts(v: Option<&str>) -> Result<usize> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_HOSTS);
    };
    match v.parse::<usize>() {
        Ok(n) if (2..=MAX_HOSTS).contains(&n) => Ok(n),
        _ => bail!("{HOSTS_ENV}={v:?}: expected a number of hosts from 2 to {MAX_HOSTS}"),
    }
}

/// One host's hold of the reboot slot, in seconds since the scenario began.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub host: String,
    pub took: f64,
    pub released: f64,
}

/// What is wrong with a set of holds when at most one host may hold the slot
/// at a time: a hold that ends before it starts, or two that overlap (one
/// starts before the other ended). Touching ends are fine: a release and the
/// next take are ordered in etcd, the console times only say which came
/// first.
pub fn overlapping(holds: &[Hold]) -> Vec<String> {
    let mut problems = Vec::new();
    for h in holds {
        if h.released < h.took {
            problems.push(format!(
                "{} released its slot ({:.1} s) before it took it ({:.1} s)",
                h.host, h.released, h.took
            ));
        }
    }
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            let (first, second) = if a.took <= b.took { (a, b) } else { (b, a) };
            if second.took < first.released {
                problems.push(format!(
                    "{} took the slot at {:.1} s while {} held it ({:.1}-{:.1} s)",
                    second.host, second.took, first.host, first.took, first.released
                ));
            }
        }
    }
    problems
}

/// What the poller saw of the holders.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HolderLog {
    pub polls: usize,
    pub errors: usize,
    pub last_error: Option<String>,
    /// The most holders in one read.
    pub max: usize,
    /// Every id ever seen holding.
    pub seen: BTreeSet<String>,
    /// (seconds since the start, holders) whenever the set changed.
    pub changes: Vec<(f64, Vec<String>)>,
}

impl HolderLog {
    /// Records one read of the holders at `t`.
    pub fn record(&mut self, t: f64, mut ids: Vec<String>) {
        ids.sort();
        self.polls += 1;
        self.max = self.max.max(ids.len());
        self.seen.extend(ids.iter().cloned());
        if self.changes.last().map(|(_, l)| l) != Some(&ids) {
            self.changes.push((t, ids));
        }
    }

    pub fn error(&mut self, e: String) {
        self.errors += 1;
        self.last_error = Some(e);
    }
}

fn poll_holders(sem: &Semaphore, t0: Instant, stop: &AtomicBool) -> HolderLog {
    let mut log = HolderLog::default();
    while !stop.load(Ordering::SeqCst) {
        let t = t0.elapsed().as_secs_f64();
        match sem.status() {
            Ok(s) => log.record(t, s.holders.into_iter().map(|h| h.id).collect()),
            Err(e) => log.error(e.to_string()),
        }
        std::thread::sleep(POLL);
    }
    log
}

/// The rest of the first line of `out` that starts with `tag`.
fn tagged<'a>(out: &'a str, tag: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.trim().strip_prefix(tag))
}

/// Where the poller saw a holder outside its host's console interval
/// (`SLACK` allowed): `holds` pairs each node id with its host's hold.
pub fn holders_outside_holds(
    changes: &[(f64, Vec<String>)],
    holds: &[(String, Hold)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (t, ids) in changes {
        for id in ids {
            match holds.iter().find(|(i, _)| i == id) {
                None => problems.push(format!(
                    "at {t:.1} s etcd showed {id} holding, no host of ours"
                )),
                Some((_, h)) if *t < h.took - SLACK || *t > h.released + SLACK => {
                    problems.push(format!(
                        "at {t:.1} s etcd showed {} holding, outside its console's {:.1}-{:.1} s",
                        h.host, h.took, h.released
                    ))
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// What one host did, times in seconds since the scenario began.
#[derive(Debug)]
struct HostRun {
    name: String,
    machine_id: String,
    ready: f64,
    hold: Hold,
    /// "waiting for a reboot slot" lines between ready and took.
    waits: usize,
}

/// `wait_for_any` in slices, giving up early once `abort` is set (another
/// host failed: its scenario is lost anyway) or qemu is gone for good.
fn wait_any(
    vm: &mut Vm,
    pats: &[Pattern],
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<(usize, Line)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match vm.wait_for_any(pats, left.min(SLICE)) {
            Ok(found) => return Ok(found),
            Err(e) => {
                if abort.load(Ordering::SeqCst) {
                    bail!("stopped waiting: another host of the fleet failed");
                }
                if left <= SLICE || !vm.is_running() {
                    let what: Vec<String> = pats.iter().map(|p| p.to_string()).collect();
                    return Err(e.context(format!("waiting {timeout:?} for {}", what.join(" or "))));
                }
            }
        }
    }
}

fn wait_one(
    vm: &mut Vm,
    pat: impl Into<Pattern>,
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<Line> {
    wait_any(vm, &[pat.into()], timeout, abort).map(|(_, l)| l)
}

/// Seconds from `t0` to when `line` arrived on the host.
fn at(vm: &Vm, t0: Instant, line: &Line) -> Result<f64> {
    let i = vm
        .line_instant(line)
        .context("a console line of an unknown qemu process")?;
    Ok(i.saturating_duration_since(t0).as_secs_f64())
}

/// One host from its first boot to power-off on committed v2.
fn one_host(
    ctx: &Ctx,
    name: &str,
    vm: &mut Vm,
    t0: Instant,
    hosts: usize,
    abort: &AtomicBool,
) -> Result<HostRun> {
    let chosen = Pattern::regex(CHOSEN)?;
    let first = wait_one(vm, chosen.clone(), TO_LOGIN, abort)?;
    ensure!(
        parse_chosen(&first.text)?.0 == "a",
        "{name}: the first boot is not slot a"
    );
    let l = wait_one(vm, READY, TO_UPDATE, abort)?;
    let ready = at(vm, t0, &l)?;
    say(
        ctx,
        &format!("{name}: v2 written and verified at {ready:.1} s"),
    );
    let from = vm.cursor();
    // A reboot without the slot is the failure this scenario is about.
    let (i, l) = wait_any(
        vm,
        &[Pattern::regex(TOOK)?, chosen.clone()],
        TO_UPDATE * hosts as u32,
        abort,
    )?;
    ensure!(
        i == 0,
        "{name} rebooted without taking a reboot slot: {:?}",
        l.text
    );
    let took = at(vm, t0, &l)?;
    let waits = vm
        .lines_since(from)
        .iter()
        .filter(|l| l.text.contains(WAITING))
        .count();
    let took_n = l.n;
    say(
        ctx,
        &format!("{name}: took the slot at {took:.1} s (after {waits} refusals)"),
    );
    let b = wait_one(vm, chosen, TO_LOGIN, abort).context("waiting for the reboot into v2")?;
    ensure!(
        parse_chosen(&b.text)?.0 == "b",
        "{name}: after the update the boot manager chose {:?}",
        b.text
    );
    wait_one(
        vm,
        "cairn-boot: slot b boot files verified",
        ONE_ATTEMPT,
        abort,
    )?;
    let l = wait_one(vm, RELEASED, TO_UPDATE, abort)?;
    let released = at(vm, t0, &l)?;
    let released_n = l.n;
    say(
        ctx,
        &format!("{name}: released the slot at {released:.1} s"),
    );

    login(vm)?;
    // One line each, found by its tag: the agent's journal lines share the
    // serial console with the shell and can land in a command's output.
    let out = vm.run_ok(
        ". /usr/lib/os-release; echo \"facts $(cat /run/cairn/booted-slot) $IMAGE_VERSION $(cat /etc/machine-id)\"",
        SHELL_CMD,
    )?;
    let facts: Vec<&str> = tagged(&out, "facts ")
        .with_context(|| format!("{name}: no facts in {out:?}"))?
        .split_whitespace()
        .collect();
    let [slot, version, machine_id] = facts[..] else {
        bail!("{name}: unexpected facts {facts:?}");
    };
    ensure!(
        (slot, version) == ("b", V2),
        "{name} runs slot {slot} with {version}, expected slot b with {V2}"
    );
    wait_committed(vm)?;
    let out = vm.run_ok("cairnctl status --json | tr -d '\\n'; echo", SHELL_CMD)?;
    let st: serde_json::Value = tagged(&out, "{")
        .and_then(|j| serde_json::from_str(&format!("{{{j}")).ok())
        .with_context(|| format!("{name}: cairnctl status --json gave {out:?}"))?;
    let b = &st["slots"]["b"];
    ensure!(
        st["booted_slot"] == "b"
            && st["booted_version"] == V2
            && b["successful"] == true
            && st["pending"].is_null(),
        "{name}: cairnctl status does not show v2 committed in slot b: {st}"
    );
    let text = vm.run_ok("cairnctl status", SHELL_CMD)?;
    // The whole lines by now (`wait_for` may return a line still arriving).
    say(
        ctx,
        &format!(
            "{name}: console:\n    {}\n    {}\n  cairnctl status:\n{}",
            line_text(vm, took_n).trim(),
            line_text(vm, released_n).trim(),
            text.trim_end()
        ),
    );
    vm.send_line("systemctl poweroff")?;
    vm.wait_exit(TO_LOGIN)
        .with_context(|| format!("{name}: waiting for power-off"))?;
    Ok(HostRun {
        name: name.to_string(),
        machine_id: machine_id.to_string(),
        ready,
        hold: Hold {
            host: name.to_string(),
            took,
            released,
        },
        waits,
    })
}

/// N hosts install v2 and reboot into it one at a time, coordinated by a
/// real etcd; every host ends committed on v2 and the slot is free.
pub fn fleet(ctx: &mut Ctx) -> Result<()> {
    let hosts = parse_hosts(std::env::var(HOSTS_ENV).ok().as_deref())?;
    let v2 = inputs(ctx)?.v2;
    let etcd = host_tools::etcd::EtcdServer::start()
        .context("the fleet scenario needs etcd (Debian package etcd-server)")?;
    let r = with_etcd(ctx, hosts, &v2, &etcd);
    // etcd's warnings and errors, next to the consoles.
    let _ = std::fs::write(ctx.artifacts.join("etcd.log"), etcd.log());
    r
}

fn with_etcd(
    ctx: &mut Ctx,
    hosts: usize,
    v2: &std::path::Path,
    etcd: &host_tools::etcd::EtcdServer,
) -> Result<()> {
    let port = etcd
        .url
        .rsplit(':')
        .next()
        .context("etcd URL without a port")?;
    let repo = publish(ctx, &v2.join("release"))?;
    let server = Server::start(&repo)?;
    let extra = format!(
        "\n[update.etcd]\nendpoints = [\"http://{HOST_ADDR_FROM_GUEST}:{port}\"]\n\
         group = \"{GROUP}\"\nmax_rebooting = 1\nlease_seconds = {LEASE_SECONDS}\n"
    );
    let cfg = host_config(ctx, &server, "etcd-lock", &extra)?;
    let client = EtcdClient::new(&EtcdConfig::new([etcd.url.clone()]))?;
    let sem = Semaphore::new(client.clone(), GROUP, Default::default())?;
    let rollout = Rollout::new(client, GROUP)?;
    say(
        ctx,
        &format!(
            "{hosts} hosts, etcd at {} (guests: {HOST_ADDR_FROM_GUEST}:{port})",
            etcd.url
        ),
    );

    let t0 = Instant::now();
    let mut vms = Vec::new();
    for _ in 0..hosts {
        let s = spec(ctx, cfg.clone())?;
        vms.push(ctx.vm(s)?);
    }
    let names: Vec<String> = (1..=hosts).map(|i| format!("host{i}")).collect();
    let (stop, abort) = (AtomicBool::new(false), AtomicBool::new(false));
    let shared: &Ctx = ctx;
    let (runs, log) = std::thread::scope(|s| {
        let poller = s.spawn(|| poll_holders(&sem, t0, &stop));
        let threads: Vec<_> = vms
            .iter_mut()
            .zip(&names)
            .map(|(vm, name)| {
                let abort = &abort;
                s.spawn(move || {
                    let r = one_host(shared, name, vm, t0, hosts, abort);
                    if r.is_err() {
                        abort.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        let runs: Vec<Result<HostRun>> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("the host's thread panicked")))
            })
            .collect();
        stop.store(true, Ordering::SeqCst);
        let log = poller.join().unwrap_or_default();
        (runs, log)
    });
    let wall = t0.elapsed().as_secs_f64();
    for (t, ids) in &log.changes {
        say(ctx, &format!("etcd holders at {t:.1} s: {ids:?}"));
    }
    let mut failed: Vec<String> = Vec::new();
    let mut ok = Vec::new();
    for (name, r) in names.iter().zip(runs) {
        match r {
            Ok(run) => ok.push(run),
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    say(
        ctx,
        &format!(
            "all {hosts} hosts on v2 after {wall:.1} s; etcd polled {} times ({} errors), at most {} holder(s) at once",
            log.polls, log.errors, log.max
        ),
    );

    ensure!(
        log.polls > 0 && log.errors * 10 <= log.polls,
        "the poller could not read etcd: {} of {} reads failed, last: {:?}",
        log.errors,
        log.polls + log.errors,
        log.last_error
    );
    // Who they were: one machine id each, and the node ids etcd knows.
    let mut by_id: Vec<(String, Hold)> = Vec::new();
    for r in &ok {
        let id = fleet_lock::node_id(&r.machine_id)
            .with_context(|| format!("{}: machine id {:?}", r.name, r.machine_id))?;
        say(
            ctx,
            &format!("{}: machine id {} -> node id {id}", r.name, r.machine_id),
        );
        by_id.push((id, r.hold.clone()));
    }
    let ids: BTreeSet<String> = by_id.iter().map(|(id, _)| id.clone()).collect();
    ensure!(
        ids.len() == hosts,
        "the hosts share a machine id: {:?}",
        ok.iter().map(|r| &r.machine_id).collect::<Vec<_>>()
    );
    ensure!(
        log.seen == ids,
        "etcd's holders {:?} are not the hosts' node ids {ids:?}",
        log.seen
    );
    // The slot as etcd saw it, as the consoles saw it, and whether the two
    // agree: all problems at once.
    let mut problems = Vec::new();
    if log.max != 1 {
        problems.push(format!(
            "etcd showed {} holders at once (max_rebooting = 1): {:?}",
            log.max, log.changes
        ));
    }
    let holds: Vec<Hold> = ok.iter().map(|r| r.hold.clone()).collect();
    problems.extend(overlapping(&holds));
    problems.extend(holders_outside_holds(&log.changes, &by_id));
    ensure!(
        problems.is_empty(),
        "the hosts did not reboot one at a time:\n  {}",
        problems.join("\n  ")
    );
    ensure!(
        ok.iter().any(|r| r.waits > 0),
        "no host was ever refused a slot: the hosts never competed for it ({:?})",
        ok.iter()
            .map(|r| (&r.name, r.ready, &r.hold))
            .collect::<Vec<_>>()
    );
    let report = rollout.report(V2, HaltThreshold::default())?;
    for (id, rec) in &report.records {
        say(
            ctx,
            &format!("etcd outcome of {V2} for {id}: {}", rec.outcome),
        );
    }
    let committed: BTreeSet<String> = report
        .records
        .iter()
        .filter(|(_, r)| r.outcome == Outcome::Committed)
        .map(|(id, _)| id.clone())
        .collect();
    ensure!(
        committed == ids && report.records.len() == hosts,
        "etcd's outcomes of {V2} are not `committed` for each host: {:?}",
        report.records
    );
    let left = sem.status()?;
    ensure!(
        left.holders.is_empty(),
        "holders left in etcd at the end: {:?}",
        left.holders
    );
    // And the GPT each host left: v2's slot committed, v1 the fallback.
    for (vm, name) in vms.iter_mut().zip(&names) {
        expect_final_attrs(ctx, vm, A_FALLBACK, B_GOOD)
            .with_context(|| format!("{name}'s disk"))?;
    }
    let mut order = holds;
    order.sort_by(|a, b| a.took.total_cmp(&b.took));
    say(
        ctx,
        &format!(
            "slot holds: {}",
            order
                .iter()
                .map(|h| format!("{} {:.1}-{:.1} s", h.host, h.took, h.released))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(host: &str, took: f64, released: f64) -> Hold {
        Hold {
            host: host.into(),
            took,
            released,
        }
    }

    #[test]
    fn host_count() {
        assert_eq!(parse_hosts(None).unwrap(), 2);
        assert_eq!(parse_hosts(Some("")).unwrap(), 2);
        assert_eq!(parse_hosts(Some(" 3 ")).unwrap(), 3);
        assert_eq!(parse_hosts(Some("4")).unwrap(), 4);
        for bad in ["1", "0", "5", "-2", "two", "2.5"] {
            let e = parse_hosts(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(HOSTS_ENV) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn holds_in_turn_pass() {
        // In turn, given in any order; a take at the very moment of the
        // previous release is in turn.
        let holds = [
            hold("host2", 200.0, 300.0),
            hold("host1", 100.0, 200.0),
            hold("host3", 300.5, 400.0),
        ];
        assert!(overlapping(&holds).is_empty());
        assert!(overlapping(&[]).is_empty());
        assert!(overlapping(&[hold("host1", 1.0, 1.0)]).is_empty());
    }

    #[test]
    fn overlapping_holds_are_named() {
        let p = overlapping(&[hold("host1", 100.0, 200.0), hold("host2", 150.0, 250.0)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("host2 took the slot at 150.0 s while host1 held it"),
            "{p:?}"
        );
        // One inside another, reported whichever comes first in the list.
        let p = overlapping(&[hold("host2", 120.0, 130.0), hold("host1", 100.0, 200.0)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("host2") && p[0].contains("host1 held it"),
            "{p:?}"
        );
        // Three at once: every pair.
        let p = overlapping(&[
            hold("a", 0.0, 10.0),
            hold("b", 1.0, 10.0),
            hold("c", 2.0, 10.0),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        // Same start.
        assert_eq!(
            overlapping(&[hold("a", 5.0, 6.0), hold("b", 5.0, 7.0)]).len(),
            1
        );
    }

    #[test]
    fn tagged_lines_survive_interleaved_journal_lines() {
        let out = "[  12.3] cairn-updated[1]: checking\nfacts b 2.0.0 0123\n{\"a\":1}\n";
        assert_eq!(tagged(out, "facts "), Some("b 2.0.0 0123"));
        assert_eq!(tagged(out, "{"), Some("\"a\":1}"));
        assert_eq!(tagged(out, "nothing"), None);
    }

    #[test]
    fn the_pollers_holders_fit_the_consoles() {
        let holds = [
            ("id1".to_string(), hold("host1", 100.0, 200.0)),
            ("id2".to_string(), hold("host2", 210.0, 300.0)),
        ];
        let changes = vec![
            (0.0, vec![]),
            (99.0, vec!["id1".to_string()]),
            (204.0, vec![]),
            (210.5, vec!["id2".to_string()]),
            (300.5, vec![]),
        ];
        assert!(holders_outside_holds(&changes, &holds).is_empty());
        // id2 seen long before its host took the slot, and a stranger.
        let changes = vec![
            (150.0, vec!["id1".to_string(), "id2".to_string()]),
            (400.0, vec!["id9".to_string()]),
        ];
        let p = holders_outside_holds(&changes, &holds);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("host2") && p[0].contains("150.0"), "{p:?}");
        assert!(p[1].contains("id9"), "{p:?}");
    }

    #[test]
    fn a_release_before_the_take_is_wrong() {
        let p = overlapping(&[hold("host1", 10.0, 5.0)]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("before it took it"), "{p:?}");
    }

    #[test]
    fn holder_log_keeps_the_peak_and_the_changes() {
        let mut log = HolderLog::default();
        log.record(0.0, vec![]);
        log.record(0.5, vec![]);
        log.record(1.0, vec!["b".into()]);
        log.error("connection refused".into());
        log.record(2.0, vec!["b".into(), "a".into()]);
        log.record(2.5, vec!["a".into(), "b".into()]);
        log.record(3.0, vec![]);
        assert_eq!(log.polls, 6);
        assert_eq!(log.errors, 1);
        assert_eq!(log.max, 2);
        assert_eq!(log.seen, BTreeSet::from(["a".to_string(), "b".to_string()]));
        let changes: Vec<(f64, usize)> = log.changes.iter().map(|(t, l)| (*t, l.len())).collect();
        assert_eq!(changes, [(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 0)]);
    }
}
