//! cairn-updated: the update service. At start it settles the last update
//! (success or rollback) and takes its name on the system bus (the D-Bus API in
//! `cairn_updater::dbus`: Status, Check, Update, Rollback, History, and the
//! Progress and StateChanged signals). Then it checks the repository every
//! interval, applies what the plan chooses, and reboots according to the
//! `[update] reboot` strategy (`cairn_updater::daemon`: the cycle;
//! `cairn_updater::reboot`: the decision): with `etcd-lock` or `fleetlock`
//! only once it holds one of its group's reboot slots, which it gives back
//! once the booted slot is committed. An update asked for over D-Bus does
//! not reboot by itself: the caller decides, as with `cairnctl update`, or
//! the next cycle reboots into it as the strategy allows.
//!
//! Talks to systemd through sd_notify (READY once the name is on the bus,
//! STATUS, WATCHDOG). The watchdog is pinged by time, never by progress: the
//! main loop pings while it sleeps (also while an update asked for over D-Bus
//! runs on its own thread), and a [`Keepalive`] thread pings while the timer's
//! check and update run on the main thread, however long a step waits for
//! the network (the HTTP client bounds that, not the watchdog).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_updater::config::UpdateConfig;
use cairn_updater::daemon::{self, Cycle, Env};
use cairn_updater::dbus::Service;
use cairn_updater::notify::{Keepalive, notify, watchdog_interval};
use cairn_updater::reboot::WindowState;
use cairn_updater::setup::{self, OverrideArgs};
use clap::Parser;
use reboot_window::TimeZone;

#[derive(Parser)]
#[command(name = "cairn-updated", about = "The Cairn update service", version)]
struct Cli {
    /// Only act on D-Bus calls: no check on a timer (tests, manual control).
    #[arg(long)]
    manual: bool,
    /// A program to run instead of `systemctl reboot` (tests).
    #[arg(long, hide = true, value_name = "PROGRAM")]
    reboot_command: Option<String>,
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

/// The host as the cycle sees it: the system clock, the reboot windows in
/// the host's time zone, `systemctl reboot`, the journal and sd_notify.
struct Host {
    reboot_command: Vec<String>,
    tz_warned: bool,
}

impl Env for Host {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn window(&mut self, cfg: &UpdateConfig, now: i64) -> WindowState {
        // Read each time: a changed /etc/localtime counts from the next cycle.
        let tz = TimeZone::load(std::path::Path::new("/")).unwrap_or_else(|e| {
            if !self.tz_warned {
                log(4, &format!("{e}; reading reboot windows in UTC"));
                self.tz_warned = true;
            }
            TimeZone::utc()
        });
        daemon::window_state(cfg, &tz, now)
    }

    fn reboot(&mut self) -> Result<(), String> {
        let (program, args) = self
            .reboot_command
            .split_first()
            .ok_or("no reboot command")?;
        let st = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|e| format!("running {program}: {e}"))?;
        if !st.success() {
            return Err(format!("{} failed: {st}", self.reboot_command.join(" ")));
        }
        Ok(())
    }

    fn log(&mut self, level: u8, msg: &str) {
        log(level, msg);
    }

    fn status(&mut self, msg: &str) {
        status(msg);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let (agent, cfg) = setup::build(&cli.paths.overrides()).context("setting up the agent")?;
    for n in agent.reconcile().context("checking the last update")? {
        log(5, &n);
    }
    if let Some(f) = &agent.fleet {
        log(
            6,
            &format!(
                "reboot = \"{}\": reboots take a slot in {} as node {}",
                cfg.reboot.as_str(),
                f.describe(),
                f.id
            ),
        );
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
    let interval = (cfg.interval_minutes.max(1) * 60) as i64;
    let mut host = Host {
        reboot_command: match &cli.reboot_command {
            Some(p) => vec![p.clone()],
            None => vec!["systemctl".into(), "reboot".into()],
        },
        tz_warned: false,
    };
    let mut cycle = Cycle::new(&service);
    if cli.manual || cfg.url.is_none() {
        let why = if cli.manual {
            "manual mode: updates only when asked over D-Bus"
        } else {
            "idle: no update repository configured"
        };
        status(why);
        log(6, why);
        // Still settles the last update and gives the fleet's reboot slot
        // back once this boot is committed.
        loop {
            let wake_at = match cycle.settle(&service, &cfg, &mut host) {
                Ok(next) => next.wake_at,
                Err(e) => {
                    log(3, &format!("{e:#}"));
                    host.now() + interval
                }
            };
            sleep_until(&host, wake_at, interval);
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
        // The main thread is busy until the cycle ends: ping from another one.
        let alive = Keepalive::watchdog();
        let wake_at = match cycle.run(&service, &cfg, &mut host) {
            Ok(next) => {
                status(&next.status);
                next.wake_at
            }
            Err(e) => {
                log(3, &format!("{e:#}"));
                status(&format!("last check failed: {e:#}"));
                host.now() + interval
            }
        };
        drop(alive);
        sleep_until(&host, wake_at, interval);
    }
}

/// Sleeps until `wake_at` (at least 1 s, at most `interval`), pinging the
/// watchdog.
fn sleep_until(host: &Host, wake_at: i64, interval: i64) {
    let secs = daemon::sleep_for(host.now(), wake_at, interval);
    sleep_with_watchdog(Duration::from_secs(secs));
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
