//! cairn-updated: the update service. At start it settles the last update
//! (success or rollback), then checks the repository every interval, applies
//! what the plan chooses, and reboots according to the `[update] reboot` strategy.
//!
//! Talks to systemd through sd_notify (READY, STATUS, WATCHDOG). The D-Bus API
//! (`cairnctl` as a client of the running service) is not implemented yet.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_updater::config::{RebootStrategy, UpdateConfig};
use cairn_updater::notify::{notify, watchdog_interval};
use cairn_updater::setup::{self, Overrides};
use cairn_updater::{Agent, Event};

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
    let (agent, cfg) = setup::build(&Overrides::default()).context("setting up the agent")?;
    for n in agent.reconcile().context("checking the last update")? {
        log(5, &n);
    }
    notify("READY=1").context("sd_notify READY")?;
    let interval = Duration::from_secs(cfg.interval_minutes * 60);
    let Some(url) = cfg.url.clone() else {
        status("idle: no update repository configured");
        log(6, "no [update] url configured: idle");
        loop {
            sleep_with_watchdog(interval);
        }
    };
    log(
        6,
        &format!(
            "checking {url} channel {} every {} min",
            cfg.channel, cfg.interval_minutes
        ),
    );
    loop {
        match cycle(&agent, &cfg) {
            Ok(msg) => status(&msg),
            Err(e) => {
                log(3, &format!("{e:#}"));
                status(&format!("last check failed: {e}"));
            }
        }
        sleep_with_watchdog(interval);
    }
}

/// One check (+ apply, + reboot when allowed).
fn cycle(agent: &Agent, cfg: &UpdateConfig) -> Result<String> {
    let pending_reboot = agent.status()?.reboot_needed;
    if !pending_reboot {
        let c = agent.check().context("checking for updates")?;
        let Some(entry) = c.decision.chosen else {
            return Ok(format!("up to date ({})", c.booted_version));
        };
        log(5, &format!("installing {}", entry.version));
        status(&format!("installing {}", entry.version));
        let mut last = 0;
        let out = agent
            .apply(&entry, &mut |e| match e {
                Event::Phase(p) => log(6, &p),
                Event::Chunk {
                    bytes_done,
                    bytes_total,
                    ..
                } => {
                    let pct = bytes_done * 100 / bytes_total.max(1);
                    if pct >= last + 10 {
                        last = pct;
                        status(&format!("installing {}: {pct}%", entry.version));
                        // Long downloads must not look like a hang to the watchdog.
                        let _ = notify("WATCHDOG=1");
                    }
                }
            })
            .context("applying the update")?;
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
