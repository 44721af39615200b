//! The boot health gate: settle, then poll the checks until all pass or the
//! timeout runs out. The system is reached through [`Probe`] so the logic is
//! tested with fakes and a fake clock.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpt_slots::Attrs;

use host_config::config::{Health, HostConfig};

/// How often the checks are repeated while they fail.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// One health command may take at most this long per attempt.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub trait Probe {
    /// `systemctl is-active` output (`active`, `failed`, `activating`, …).
    fn unit_state(&mut self, unit: &str) -> String;
    /// Names of failed units.
    fn failed_units(&mut self) -> Result<Vec<String>, String>;
    /// Runs `argv`; `Err` says why it did not exit 0.
    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<(), String>;
    fn sleep(&mut self, d: Duration);
    /// Time since the probe was made.
    fn elapsed(&self) -> Duration;
}

/// An app in the boot health gate (`boot_health = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCheck {
    pub name: String,
    pub unit: String,
    /// `cairn-run exec <app> -- <health…>`; `None`: the unit being active
    /// is the check.
    pub command: Option<Vec<String>>,
}

/// The app checks of `cfg`, in config order. They add to the `[health]`
/// checks and do not replace the default check.
pub fn app_checks(cfg: &HostConfig) -> Vec<AppCheck> {
    cfg.apps
        .iter()
        .filter(|a| a.boot_health)
        .map(|a| AppCheck {
            name: a.name.to_string(),
            unit: a.unit_name(),
            command: (!a.health.is_empty()).then(|| {
                let mut argv = vec![
                    disk_layout::programs::CAIRN_RUN.to_string(),
                    "exec".into(),
                    a.name.to_string(),
                    "--".into(),
                ];
                argv.extend(a.health.iter().cloned());
                argv
            }),
        })
        .collect()
}

/// `cairn-app@<name>.service`.
fn is_app_unit(u: &str) -> bool {
    u.starts_with("cairn-app@") && u.ends_with(".service")
}

/// Every failing check, one reason each; empty when healthy.
pub fn check_once(h: &Health, apps: &[AppCheck], p: &mut dyn Probe) -> Vec<String> {
    let mut failures = Vec::new();
    if h.uses_default_check() {
        // `systemctl is-system-running` would say "starting" for as long as
        // this very check is queued, so ask for what "running" means instead:
        // multi-user reached and nothing failed.
        let s = p.unit_state("multi-user.target");
        if s != "active" {
            failures.push(format!("multi-user.target is {s}"));
        }
        // Apps are judged only by their own checks (boot_health): an app
        // that fails to pull must not roll the OS back unless it asked to.
        match p.failed_units().map(|f| {
            f.into_iter()
                .filter(|u| !is_app_unit(u))
                .collect::<Vec<_>>()
        }) {
            Ok(f) if f.is_empty() => {}
            Ok(f) => failures.push(format!("failed units: {}", f.join(" "))),
            Err(e) => failures.push(format!("cannot list failed units: {e}")),
        }
    }
    for u in &h.units {
        let s = p.unit_state(u);
        if s != "active" {
            failures.push(format!("unit {u} is {s}"));
        }
    }
    for argv in &h.commands {
        if let Err(e) = p.run(argv, COMMAND_TIMEOUT) {
            failures.push(format!("command {argv:?} {e}"));
        }
    }
    for a in apps {
        let s = p.unit_state(&a.unit);
        if s != "active" {
            // No point asking a container that is not running.
            failures.push(format!("app {}: {} is {s}", a.name, a.unit));
            continue;
        }
        if let Some(argv) = &a.command
            && let Err(e) = p.run(argv, COMMAND_TIMEOUT)
        {
            failures.push(format!("app {}: health command {e}", a.name));
        }
    }
    failures
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed at this many seconds after the gate started.
    Passed { after_seconds: u64 },
    /// Still failing at the timeout; the reasons of the last attempt.
    Failed { reasons: Vec<String> },
}

/// Waits `settle_seconds`, then checks every [`POLL_INTERVAL`] until all
/// pass or `timeout_seconds` (counted from the first check) run out.
pub fn wait_healthy(h: &Health, apps: &[AppCheck], p: &mut dyn Probe) -> Outcome {
    p.sleep(Duration::from_secs(h.settle_seconds));
    let first = p.elapsed();
    let deadline = first + Duration::from_secs(h.timeout_seconds);
    loop {
        let reasons = check_once(h, apps, p);
        if reasons.is_empty() {
            return Outcome::Passed {
                after_seconds: p.elapsed().as_secs(),
            };
        }
        let now = p.elapsed();
        if now >= deadline {
            return Outcome::Failed { reasons };
        }
        p.sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// What to do when the gate fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The slot is on trial: reboot so the boot manager's tries decide.
    Reboot,
    /// The slot already passed once: rebooting would only loop.
    Stay,
    /// The slot state is unknown: do not reboot blindly; a trial slot that
    /// is never marked good still loses its tries on the next boot.
    StayUnknown,
}

pub fn on_failure(booted: Option<Attrs>) -> OnFailure {
    match booted {
        Some(a) if !a.successful => OnFailure::Reboot,
        Some(_) => OnFailure::Stay,
        None => OnFailure::StayUnknown,
    }
}

/// The real system: systemctl and child processes.
pub struct SystemProbe {
    start: Instant,
}

impl SystemProbe {
    pub fn new() -> SystemProbe {
        SystemProbe {
            start: Instant::now(),
        }
    }
}

impl Default for SystemProbe {
    fn default() -> Self {
        SystemProbe::new()
    }
}

fn stdout_of(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Probe for SystemProbe {
    fn unit_state(&mut self, unit: &str) -> String {
        match stdout_of(Command::new("systemctl").arg("is-active").arg(unit)) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => "unknown".into(),
            Err(e) => format!("unknown (systemctl: {e})"),
        }
    }

    fn failed_units(&mut self) -> Result<Vec<String>, String> {
        let out = stdout_of(Command::new("systemctl").args([
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<(), String> {
        let (prog, args) = argv.split_first().ok_or("is empty")?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own diagnostics go to the journal next to ours; a pipe we
            // do not drain could block a chatty command.
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("failed with {status}")),
                Ok(None) if started.elapsed() >= timeout => {
                    // Best effort: it is abandoned either way.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("timed out after {}s", timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(format!("cannot wait: {e}")),
            }
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Units become active, and commands start passing, at given times.
    #[derive(Default)]
    struct Fake {
        now: Duration,
        units_active_at: BTreeMap<String, u64>,
        cmds_pass_at: BTreeMap<String, u64>,
        failed: Vec<(String, u64)>,
        sleeps: Vec<u64>,
    }

    impl Probe for Fake {
        fn unit_state(&mut self, unit: &str) -> String {
            match self.units_active_at.get(unit) {
                Some(&t) if self.now.as_secs() >= t => "active".into(),
                Some(_) => "activating".into(),
                None if unit == "multi-user.target" => "active".into(),
                None => "inactive".into(),
            }
        }
        fn failed_units(&mut self) -> Result<Vec<String>, String> {
            let now = self.now.as_secs();
            Ok(self
                .failed
                .iter()
                .filter(|(_, until)| now < *until)
                .map(|(u, _)| u.clone())
                .collect())
        }
        fn run(&mut self, argv: &[String], _t: Duration) -> Result<(), String> {
            match self.cmds_pass_at.get(&argv[0]) {
                Some(&t) if self.now.as_secs() >= t => Ok(()),
                _ => Err("failed with exit status: 1".into()),
            }
        }
        fn sleep(&mut self, d: Duration) {
            self.sleeps.push(d.as_secs());
            self.now += d;
        }
        fn elapsed(&self) -> Duration {
            self.now
        }
    }

    fn health(units: &[&str], cmds: &[&str], settle: u64, timeout: u64) -> Health {
        Health {
            units: units.iter().map(|s| s.to_string()).collect(),
            commands: cmds.iter().map(|c| vec![c.to_string()]).collect(),
            settle_seconds: settle,
            timeout_seconds: timeout,
        }
    }

    #[test]
    fn default_check_passes_on_a_clean_system_after_settling() {
        let mut p = Fake::default();
        let out = wait_healthy(&Health::default(), &[], &mut p);
        assert_eq!(out, Outcome::Passed { after_seconds: 5 });
        assert_eq!(p.sleeps, [5]);
    }

    #[test]
    fn default_check_names_failed_units() {
        let mut p = Fake {
            failed: vec![("foo.service".into(), u64::MAX)],
            ..Fake::default()
        };
        let out = wait_healthy(&health(&[], &[], 5, 10), &[], &mut p);
        assert_eq!(
            out,
            Outcome::Failed {
                reasons: vec!["failed units: foo.service".into()]
            }
        );
        // 5 settle, then polls at 5, 7, 9, 11 -> the deadline is 15.
        assert_eq!(p.sleeps, [5, 2, 2, 2, 2, 2]);
        assert_eq!(p.now.as_secs(), 15);
    }

    #[test]
    fn a_unit_that_recovers_in_time_passes() {
        let mut p = Fake {
            failed: vec![("flaky.service".into(), 8)],
            ..Fake::default()
        };
        let out = wait_healthy(&Health::default(), &[], &mut p);
        assert_eq!(out, Outcome::Passed { after_seconds: 9 });
    }

    #[test]
    fn configured_checks_replace_the_default_and_say_what_failed() {
        let mut p = Fake {
            units_active_at: [("net.service".to_string(), 20)].into(),
            cmds_pass_at: [("/ok".to_string(), 0)].into(),
            // Ignored: configured checks replace the default check.
            failed: vec![("other.service".into(), u64::MAX)],
            ..Fake::default()
        };
        let h = health(&["net.service"], &["/ok"], 0, 60);
        assert_eq!(
            wait_healthy(&h, &[], &mut p),
            Outcome::Passed { after_seconds: 20 }
        );

        let mut p = Fake::default();
        let h = health(&["net.service"], &["/ok", "/bad"], 1, 3);
        assert_eq!(
            wait_healthy(&h, &[], &mut p),
            Outcome::Failed {
                reasons: vec![
                    "unit net.service is inactive".into(),
                    "command [\"/ok\"] failed with exit status: 1".into(),
                    "command [\"/bad\"] failed with exit status: 1".into(),
                ]
            }
        );
        assert_eq!(p.now.as_secs(), 4);
    }

    #[test]
    fn app_checks_come_from_boot_health_apps() {
        let cfg = HostConfig::parse(
            "[[apps]]\nname = \"web\"\nimage = \"x\"\nboot_health = true\nhealth = [\"/bin/sh\", \"-c\", \"test -f /ok\"]\n\
             [[apps]]\nname = \"db\"\nimage = \"y\"\nboot_health = true\n\
             [[apps]]\nname = \"batch\"\nimage = \"z\"\nhealth = [\"/bin/false\"]\n",
            "t",
        )
        .expect("valid");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            app_checks(&cfg),
            [
                AppCheck {
                    name: "web".into(),
                    unit: "cairn-app@web.service".into(),
                    command: Some(s(&[
                        "/usr/bin/cairn-run",
                        "exec",
                        "web",
                        "--",
                        "/bin/sh",
                        "-c",
                        "test -f /ok"
                    ])),
                },
                AppCheck {
                    name: "db".into(),
                    unit: "cairn-app@db.service".into(),
                    command: None,
                },
            ]
        );
    }

    /// (what, unit active at, health command passes at, settle, timeout, outcome)
    #[test]
    fn apps_in_the_gate() {
        let app = |cmd: bool| AppCheck {
            name: "web".into(),
            unit: "cairn-app@web.service".into(),
            command: cmd.then(|| vec!["/usr/bin/cairn-run".to_string(), "exec".into()]),
        };
        let failed = |r: &[&str]| Outcome::Failed {
            reasons: r.iter().map(|x| x.to_string()).collect(),
        };
        type Case = (&'static str, Option<u64>, Option<u64>, bool, Outcome);
        let cases: [Case; 6] = [
            (
                "active, no command",
                Some(0),
                None,
                false,
                Outcome::Passed { after_seconds: 5 },
            ),
            (
                "active late",
                Some(30),
                None,
                false,
                Outcome::Passed { after_seconds: 31 },
            ),
            (
                "never active: the command is not even tried",
                None,
                Some(0),
                true,
                failed(&["app web: cairn-app@web.service is inactive"]),
            ),
            (
                "active, healthy later",
                Some(0),
                Some(20),
                true,
                Outcome::Passed { after_seconds: 21 },
            ),
            (
                "active, never healthy",
                Some(0),
                None,
                true,
                failed(&["app web: health command failed with exit status: 1"]),
            ),
            (
                "activating (restarting) until the timeout",
                Some(1000),
                Some(0),
                true,
                failed(&["app web: cairn-app@web.service is activating"]),
            ),
        ];
        for (what, active_at, healthy_at, cmd, want) in cases {
            let mut p = Fake::default();
            if let Some(t) = active_at {
                p.units_active_at.insert("cairn-app@web.service".into(), t);
            }
            if let Some(t) = healthy_at {
                p.cmds_pass_at.insert("/usr/bin/cairn-run".into(), t);
            }
            // The default check still applies next to the apps.
            let out = wait_healthy(&Health::default(), &[app(cmd)], &mut p);
            assert_eq!(out, want, "{what}");
        }
        // A failed app outside the gate does not fail the default check.
        let mut p = Fake {
            failed: vec![("cairn-app@batch.service".into(), u64::MAX)],
            ..Fake::default()
        };
        assert_eq!(
            wait_healthy(&Health::default(), &[], &mut p),
            Outcome::Passed { after_seconds: 5 }
        );
        // Apps add to the default check: a failed unit still fails the gate.
        let mut p = Fake {
            failed: vec![("other.service".into(), u64::MAX)],
            ..Fake::default()
        };
        p.units_active_at.insert("cairn-app@web.service".into(), 0);
        assert_eq!(
            wait_healthy(&health(&[], &[], 0, 2), &[app(false)], &mut p),
            failed(&["failed units: other.service"])
        );
    }

    #[test]
    fn reboot_only_on_trial() {
        assert_eq!(on_failure(Some(Attrs::new(2, 2, false))), OnFailure::Reboot);
        // tries already used up by this boot: still on trial.
        assert_eq!(on_failure(Some(Attrs::new(2, 0, false))), OnFailure::Reboot);
        assert_eq!(on_failure(Some(Attrs::new(1, 0, true))), OnFailure::Stay);
        assert_eq!(on_failure(None), OnFailure::StayUnknown);
    }

    #[test]
    fn system_probe_runs_commands() {
        let mut p = SystemProbe::new();
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p.run(&argv(&["/bin/sh", "-c", "exit 0"]), COMMAND_TIMEOUT),
            Ok(())
        );
        let e = p.run(
            &argv(&["/bin/sh", "-c", "echo nope >&2; exit 3"]),
            COMMAND_TIMEOUT,
        );
        assert_eq!(e, Err("failed with exit status: 3".into()));
        let e = p.run(&argv(&["/bin/sleep", "5"]), Duration::from_millis(300));
        assert_eq!(e, Err("timed out after 0s".into()));
        assert!(p.run(&argv(&["/nonexistent"]), COMMAND_TIMEOUT).is_err());
    }
}
