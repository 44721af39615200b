//! Boot counting, systemd style.
//!
//! `cairn-mark-good health` (cairn-health.service, before
//! boot-complete.target): waits for the configured health checks; if they
//! fail on a slot still on trial it reboots, so the boot manager's tries
//! decide; on a slot that already passed it only reports (no reboot loop).
//!
//! `cairn-mark-good` (cairn-mark-good.service, after boot-complete.target):
//! sets the booted slot successful with a crash-safe GPT commit.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use disk_layout::run as paths;
use gpt_slots::FileDevice;
use gpt_slots::booted::{self, Booted};
use health::{OnFailure, Outcome, SystemProbe};
use host_config::HostConfig;
use service_log as log;

mod health;

const USAGE: &str = "usage: cairn-mark-good [health]";

/// How long a GPT writer waits for another (an update flipping slots).
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Sets the booted slot successful and re-arms its tries (see
/// `gpt_slots::booted::commit_booted`), under the disk's lock.
fn commit_boot(root: &Path, booted: &Booted) -> Result<()> {
    let disk = booted.disk(root)?;
    let mut dev = FileDevice::open_locked(&disk, true, LOCK_WAIT)
        .with_context(|| format!("cannot open {}", disk.display()))?;
    let tries = gpt_slots::committed_tries(root);
    let m = booted::commit_booted(&mut dev, &disk, booted.slot, booted.usr_partuuid, tries)?;
    log::notice(&format!("cairn-mark-good: {}", m.message(booted.slot)));
    Ok(())
}

fn mark_good() -> Result<()> {
    let root = Path::new("/");
    let booted = Booted::read(root)?;
    commit_boot(root, &booted)?;
    // A failure recorded by an earlier boot of this slot is history now.
    let _ = std::fs::remove_file(health_record(root, booted.slot.letter()));
    Ok(())
}

/// Where a health failure of `slot` is recorded on ROOT for the updater.
fn health_record(root: &Path, slot: &str) -> std::path::PathBuf {
    root.join(disk_layout::state::HEALTH_DIR)
        .join(format!("failed-{slot}"))
}

/// Records the failed checks of the running version on ROOT, so that after
/// a rollback the updater can say which check failed (the boot manager only
/// sees tries run out).
fn record_failure(root: &Path, slot: &str, reasons: &[String]) {
    let version = std::fs::read_to_string(root.join("usr/lib/os-release"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("IMAGE_VERSION=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    let p = health_record(root, slot);
    let text = format!("version={version}\n{}\n", reasons.join("\n"));
    let opts = durable_file::Options {
        create_parents: true,
        ..durable_file::Options::new(0o644)
    };
    if let Err(e) = durable_file::write(&p, text.as_bytes(), opts) {
        log::warn(&format!(
            "cairn-health: cannot record the failure in {}: {e}",
            p.display()
        ));
    }
}

/// The effective config cairn-config wrote; the defaults if there is none
/// (cairn-config failed or did not run: the health gate must still work).
fn health_config() -> HostConfig {
    let p = Path::new("/").join(paths::EFFECTIVE_CONFIG);
    let loaded = std::fs::read_to_string(&p)
        .map_err(|e| e.to_string())
        .and_then(|t| HostConfig::parse(&t, &p.display().to_string()).map_err(|e| e.to_string()));
    loaded.unwrap_or_else(|e| {
        log::warn(&format!("cairn-health: {e}; using the default checks"));
        HostConfig::default()
    })
}

fn write_result(line: &str) {
    let p = Path::new("/").join(paths::HEALTH_RESULT);
    let opts = durable_file::Options {
        sync: false,
        ..durable_file::Options::new(0o644)
    };
    if let Err(e) = durable_file::write(&p, format!("{line}\n").as_bytes(), opts) {
        log::warn(&format!("cairn-health: cannot write {}: {e}", p.display()));
    }
}

fn health() -> ExitCode {
    let cfg = health_config();
    let apps = health::app_checks(&cfg);
    let h = cfg.health;
    let mut what = if h.uses_default_check() {
        "default check: multi-user.target active, no failed units".to_string()
    } else {
        format!("{} unit(s), {} command(s)", h.units.len(), h.commands.len())
    };
    if !apps.is_empty() {
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        what.push_str(&format!(", app(s): {}", names.join(" ")));
    }
    log::info(&format!(
        "cairn-health: settling {}s, then checking ({what}) for up to {}s",
        h.settle_seconds, h.timeout_seconds
    ));
    let reasons = match health::wait_healthy(&h, &apps, &mut SystemProbe::new()) {
        Outcome::Passed { after_seconds } => {
            let line = format!("passed after {after_seconds}s ({what})");
            log::notice(&format!("cairn-health: {line}"));
            write_result(&line);
            return ExitCode::SUCCESS;
        }
        Outcome::Failed { reasons } => reasons,
    };
    for r in &reasons {
        log::err(&format!("cairn-health: failed: {r}"));
    }
    write_result(&format!("failed: {}", reasons.join("; ")));
    let root = Path::new("/");
    let booted = Booted::read(root);
    let attrs = booted.as_ref().map_err(|e| format!("{e:#}")).and_then(|b| {
        booted::read_booted_disk(root, b)
            .map(|(_, a)| (b.slot, a.get(b.slot)))
            .map_err(|e| format!("{e:#}"))
    });
    let (slot, a) = match &attrs {
        Ok((s, a)) => (s.letter(), Some(*a)),
        Err(e) => {
            log::err(&format!(
                "cairn-health: cannot read the booted slot's state: {e}"
            ));
            ("?", None)
        }
    };
    if a.is_some() {
        record_failure(root, slot, &reasons);
    }
    match health::on_failure(a) {
        OnFailure::Reboot => {
            log::err(&format!(
                "cairn-health: slot {slot} is on trial and unhealthy: rebooting so the boot manager's tries decide"
            ));
            // systemctl reboot queues the job and returns.
            match Command::new("systemctl").arg("reboot").status() {
                Ok(s) if s.success() => {}
                Ok(s) => log::err(&format!("cairn-health: systemctl reboot: {s}")),
                Err(e) => log::err(&format!("cairn-health: systemctl reboot: {e}")),
            }
        }
        OnFailure::Stay => {
            log::err(&format!(
                "cairn-health: slot {slot} is already successful: not rebooting (that would only loop); fix the host or its health checks"
            ));
            // The boot reached its gate: the OS itself starts, so later
            // reboots must not count towards falling back to the other slot.
            if let Ok(b) = &booted
                && let Err(e) = commit_boot(root, b)
            {
                log::err(&format!("cairn-health: cannot re-arm slot {slot}: {e:#}"));
            }
        }
        OnFailure::StayUnknown => log::err("cairn-health: slot state unknown: not rebooting"),
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => match mark_good() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::err(&format!("cairn-mark-good: {e:#}"));
                ExitCode::FAILURE
            }
        },
        ["health"] => health(),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
