//! cairn-updated: the update service. At start it settles the last update
//! (success or rollback) and takes its name on the system bus (the D-Bus API in
//! `cairn_updater::dbus`: Status, Check, Update, Rollback, History, and the
//! Progress and StateChanged signals). Then it checks the repository every
//! interval, applies what the plan chooses, and reboots according to the
//! `[update] reboot` strategy. An update asked for over D-Bus does not reboot:
//! the caller decides, as with `cairnctl update`.
//!
//! Talks to systemd through sd_notify (READY once the name is on the bus,
//! STATUS, WATCHDOG). The watchdog is pinged by time, never by progress: the
//! main loop pings while it sleeps (also while an update asked for over D-Bus
//! runs on its own thread), and a [`Keepalive`] thread pings while the timer's
//! check and update run on the main thread, however long a step waits for
//! the network (the HTTP client bounds that, not the watchdog).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_updater::Event;
use cairn_updater::config::{RebootStrategy, UpdateConfig};
use cairn_updater::dbus::Service;
use cairn_updater::notify::{Keepalive, notify, watchdog_interval};
use cairn_updater::setup::{self, OverrideArgs};
use clap::Parser;

#[derive(Parser)]
#[command(name = "cairn-updated", about = "The Cairn update service", version)]
struct Cli {
    /// Only act on D-Bus calls: no check on a timer (tests, manual control).
    #[arg(long)]
    manual: bool,
    #[command(flatten)]
    paths: OverrideArgs,
}

/// Journal priorities as stderr prefixes (sd-daemon(3)).
fn log(level: u8, msg: &str) {
    eprintln!("<{level}>{msg}");
}

fn status(msg: &str) {
    if let Err(e) = notify(&format!("STATUS={msg}")) {
        log(4, &format!("sd_notify: {e}"));
    }
}

fn main() {
    if let Err(e) = run() {
        log(3, &format!("cairn-updated: {e:#}"));
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let (agent, cfg) = setup::build(&cli.paths.overrides()).context("setting up the agent")?;
    for n in agent.reconcile().context("checking the last update")? {
        log(5, &n);
    }
    let service = Service::new(agent);
    // Without the bus the timer still updates the host; cairnctl then works in
    // direct mode. A broken bus must not stop security updates.
    match service.serve() {
        Ok(()) => log(6, &format!("on the bus as {}", cairn_updater::dbus::NAME)),
        Err(e) => log(
            3,
            &format!(
                "no D-Bus API ({e}): is dbus running and /usr/share/dbus-1/system.d/{}.conf installed?",
                cairn_updater::dbus::NAME
            ),
        ),
    }
    notify("READY=1").context("sd_notify READY")?;
    let interval = Duration::from_secs(cfg.interval_minutes * 60);
    if cli.manual || cfg.url.is_none() {
        let why = if cli.manual {
            "manual mode: updates only when asked over D-Bus"
        } else {
            "idle: no update repository configured"
        };
        status(why);
        log(6, why);
        loop {
            sleep_with_watchdog(interval);
        }
    }
    log(
        6,
        &format!(
            "checking {} channel {} every {} min",
            cfg.url.as_deref().unwrap_or(""),
            cfg.channel,
            cfg.interval_minutes
        ),
    );
    loop {
        match cycle(&service, &cfg) {
            Ok(msg) => status(&msg),
            Err(e) => {
                log(3, &format!("{e:#}"));
                status(&format!("last check failed: {e:#}"));
            }
        }
        sleep_with_watchdog(interval);
    }
}

/// One check (+ apply, + reboot when allowed).
fn cycle(service: &Arc<Service>, cfg: &UpdateConfig) -> Result<String> {
    // The main thread is busy until the cycle ends: ping from another one.
    let _alive = Keepalive::watchdog();
    // Settle again each time: at start the new slot may still have been
    // waiting for its health checks (cairn-mark-good runs after us).
    for n in service
        .agent
        .reconcile()
        .context("checking the last update")?
    {
        log(5, &n);
    }
    // While this boot is on trial the other slot is the fallback: not now, and
    // not a failure (no error status, nothing recorded). Said once per trial;
    // a later cycle installs the update once cairn-mark-good committed the boot.
    static TRIAL_LOGGED: AtomicBool = AtomicBool::new(false);
    let not_now = |e: &cairn_updater::Error| {
        if !TRIAL_LOGGED.swap(true, Ordering::Relaxed) {
            log(5, &format!("not updating now: {e}"));
        }
        Ok(match e {
            cairn_updater::Error::RollbackPending { .. } => {
                "waiting for a reboot to finish the rollback before updating"
            }
            _ => "waiting for this boot to be marked good before updating",
        }
        .to_string())
    };
    match service.agent.refuse_if_on_trial() {
        Err(e) if e.waits_for_boot() => return not_now(&e),
        Err(e) => return Err(e).context("reading the slot attributes"),
        Ok(()) => TRIAL_LOGGED.store(false, Ordering::Relaxed),
    }
    let pending_reboot = service.agent.status()?.reboot_needed;
    if !pending_reboot {
        let mut last = 0;
        let r = service.run_update(false, &mut |e| match e {
            Event::Phase(p) => log(6, p),
            Event::Chunk {
                bytes_done,
                bytes_total,
                ..
            } => {
                let pct = bytes_done * 100 / (*bytes_total).max(1);
                if pct >= last + 10 {
                    last = pct;
                    status(&format!("installing: {pct}%"));
                }
            }
        });
        let Some(r) = r else {
            return Ok("an update asked for over D-Bus is running".into());
        };
        if let Err(e) = &r
            && e.waits_for_boot()
        {
            return not_now(e);
        }
        let Some(out) = r.context("updating")? else {
            return Ok(format!(
                "up to date ({})",
                service.agent.host.booted_version
            ));
        };
        log(
            5,
            &format!("{} ready in slot {}: reboot needed", out.version, out.slot),
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if cfg.reboot != RebootStrategy::Off && cfg.may_reboot(now) {
        log(5, "rebooting into the new slot");
        let st = std::process::Command::new("systemctl")
            .arg("reboot")
            .status()
            .context("running systemctl reboot")?;
        if !st.success() {
            anyhow::bail!("systemctl reboot failed: {st}");
        }
        return Ok("rebooting".into());
    }
    Ok(format!(
        "update ready; reboot strategy {:?} defers the reboot",
        cfg.reboot
    ))
}

/// Sleeps `total`, pinging the watchdog at half its interval.
fn sleep_with_watchdog(total: Duration) {
    let step = watchdog_interval().map_or(total, |w| (w / 2).max(Duration::from_secs(1)));
    let end = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep(step.min(end - now));
        let _ = notify("WATCHDOG=1");
    }
}
