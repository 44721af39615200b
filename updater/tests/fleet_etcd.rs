//! Fleets that reboot in turn, against a real etcd (`host_tools::etcd`):
//! the service's cycles of several hosts, the rollout outcomes and the halt,
//! `cairnctl fleet` and cairn-updated as binaries.

mod fleet_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_updater::fixture::{self, Reaped};
use cairn_updater::reboot::WindowState;
use disk_layout::Slot;
use fleet_common::{Node, T0};
use fleet_lock::{
    EtcdClient, EtcdConfig, HaltThreshold, Outcome, Rollout, Semaphore, SemaphoreOptions,
};
use host_tools::etcd::EtcdServer;

const GROUP: &str = "workers";

fn etcd_update(etcd: &EtcdServer, extra: &str) -> String {
    format!(
        "reboot = \"etcd-lock\"\n{extra}\n[update.etcd]\nendpoints = [\"{}\"]\ngroup = \"{GROUP}\"\nmax_rebooting = 1\nlease_seconds = 60\n",
        etcd.url
    )
}

fn client(etcd: &EtcdServer) -> EtcdClient {
    EtcdClient::new(&EtcdConfig {
        timeout: Duration::from_secs(3),
        ..EtcdConfig::new([etcd.url.clone()])
    })
    .unwrap()
}

fn semaphore(etcd: &EtcdServer) -> Semaphore {
    Semaphore::new(
        client(etcd),
        GROUP,
        SemaphoreOptions {
            max_rebooting: 1,
            lease_ttl: Duration::from_secs(60),
        },
    )
    .unwrap()
}

fn rollout(etcd: &EtcdServer) -> Rollout {
    Rollout::new(client(etcd), GROUP).unwrap()
}

fn holders(etcd: &EtcdServer) -> Vec<String> {
    semaphore(etcd)
        .status()
        .unwrap()
        .holders
        .into_iter()
        .map(|h| h.id)
        .collect()
}

#[test]
fn two_hosts_with_one_slot_reboot_in_turn() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let mut h1 = Node::new(1, &etcd_update(&etcd, ""));
    let mut h2 = Node::new(2, &etcd_update(&etcd, ""));
    assert_ne!(h1.id, h2.id);
    // The id is the app-specific hash, never the machine id.
    assert!(!fleet_common::machine_id_text(1).contains(&h1.id));

    // Host 1 installs, records it, takes the only slot and reboots.
    let (s1, mut c1) = h1.start(Slot::A, "1.0.0");
    let next = h1.run(&s1, &mut c1);
    assert_eq!(next.status, "rebooting", "{}", h1.env.log_text());
    assert_eq!(h1.env.reboots, 1);
    assert!(
        h1.env.logged("took reboot slot 1/1 in group workers"),
        "{}",
        h1.env.log_text()
    );
    assert!(
        c1.renewing(),
        "the slot's lease is renewed until the reboot"
    );
    assert_eq!(holders(&etcd), [h1.id.as_str()]);

    // Host 2 installs too, but finds the slot taken: it keeps its update and
    // waits for the back-off, without rebooting.
    let (s2, mut c2) = h2.start(Slot::A, "1.0.0");
    let next = h2.run(&s2, &mut c2);
    let want = format!("waiting for a reboot slot: 1/1 held by {}; retry in", h1.id);
    assert!(next.status.starts_with(&want), "{next:?}");
    assert!(h2.env.logged(&want), "{}", h2.env.log_text());
    assert!(next.wake_at > T0 && next.wake_at <= T0 + 60, "{next:?}");
    assert_eq!(h2.env.reboots, 0);
    assert!(h2.staged(&s2.agent), "the staged update is kept");
    // Each retry asks again (and logs it), still without a reboot or a reinstall.
    h2.env.now = next.wake_at;
    let again = h2.run(&s2, &mut c2);
    assert!(again.status.starts_with(&want), "{again:?}");
    assert_eq!(h2.env.reboots, 0);
    assert_eq!(
        h2.env
            .lines
            .iter()
            .filter(|(_, l)| l.contains("ready in slot"))
            .count(),
        1
    );

    let r = rollout(&etcd)
        .report("1.1.0", HaltThreshold::default())
        .unwrap();
    assert_eq!((r.installed, r.committed, r.rolled_back), (2, 0, 0));

    // Host 1 comes back on slot b: on trial, it keeps (and renews) its slot
    // and looks again soon.
    drop((s1, c1));
    h1.boot_b_on_trial();
    let (s1, mut c1) = h1.start(Slot::B, "1.1.0");
    let next = h1.run(&s1, &mut c1);
    assert_eq!(
        next.status,
        "waiting for this boot to be marked good before updating"
    );
    assert_eq!(next.wake_at, T0 + cairn_updater::reboot::TRIAL_POLL);
    assert!(c1.renewing());
    assert_eq!(holders(&etcd), [h1.id.as_str()]);
    // Host 2 still waits.
    h2.env.now += 60;
    h2.run(&s2, &mut c2);
    assert_eq!(h2.env.reboots, 0);

    // cairn-mark-good commits b: the next look records it and gives the slot back.
    h1.commit_b();
    h1.env.now += 30;
    let next = h1.run(&s1, &mut c1);
    assert!(next.status.starts_with("up to date (1.1.0)"), "{next:?}");
    assert!(
        h1.env.logged("released reboot slot in group workers"),
        "{}",
        h1.env.log_text()
    );
    assert!(!c1.renewing());
    assert!(holders(&etcd).is_empty());
    let r = rollout(&etcd)
        .report("1.1.0", HaltThreshold::default())
        .unwrap();
    assert_eq!((r.installed, r.committed), (2, 1));
    let rec = &r.records.iter().find(|(id, _)| *id == h1.id).unwrap().1;
    assert_eq!(rec.outcome, Outcome::Committed);
    assert!(rec.reason.contains("slot b"), "{rec:?}");
    // Nothing left to release on later cycles (and nothing logged again).
    h1.env.now += 3600;
    h1.run(&s1, &mut c1);
    assert_eq!(
        h1.env
            .lines
            .iter()
            .filter(|(_, l)| l.contains("released"))
            .count(),
        1
    );

    // Host 2's next retry gets the slot and reboots.
    h2.env.now += 60;
    let next = h2.run(&s2, &mut c2);
    assert_eq!(next.status, "rebooting", "{}", h2.env.log_text());
    assert_eq!(h2.env.reboots, 1);
    assert_eq!(holders(&etcd), [h2.id.as_str()]);
    // cairnctl-facing status of host 2: it holds the slot.
    let st = s2.agent.status().unwrap().reboot;
    assert_eq!(st.holds_slot, Some(true));
    assert_eq!((st.held, st.max), (Some(1), Some(1)));
    assert!(st.lease_seconds_left.unwrap() > 30, "{st:?}");
}

#[test]
fn a_rollback_is_recorded_with_its_reason_and_the_slot_goes_back() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let mut h = Node::new(3, &etcd_update(&etcd, ""));
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    h.run(&s, &mut c);
    assert_eq!(h.env.reboots, 1, "{}", h.env.log_text());
    drop((s, c));
    // Every try of b died before its health checks: the boot manager went
    // back to a, which is committed.
    h.fail_b();
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    let next = h.run(&s, &mut c);
    assert!(
        h.env.logged("released reboot slot in group workers"),
        "{}",
        h.env.log_text()
    );
    assert!(holders(&etcd).is_empty());
    // And 1.1.0 is not installed again.
    assert!(next.status.starts_with("up to date"), "{next:?}");
    assert_eq!(h.env.reboots, 1);
    let r = rollout(&etcd)
        .report(
            "1.1.0",
            HaltThreshold {
                hosts: 2,
                percent: 0,
            },
        )
        .unwrap();
    assert_eq!((r.installed, r.rolled_back), (1, 1));
    assert!(!r.halted, "one of 2 hosts");
    assert_eq!(r.rollbacks[0].0, h.id);
    assert!(
        r.rollbacks[0].1.contains("used up its tries"),
        "{:?}",
        r.rollbacks
    );
}

#[test]
fn a_halted_release_is_not_installed() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let ro = rollout(&etcd);
    for (id, why) in [
        ("aaaa", "health check failed: web"),
        ("bbbb", "kernel panic"),
    ] {
        ro.record("1.1.0", id, Outcome::Installed, "").unwrap();
        ro.record("1.1.0", id, Outcome::RolledBack, why).unwrap();
    }
    let mut h = Node::new(4, &etcd_update(&etcd, ""));
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    let before = h.w.attrs();
    let next = h.run(&s, &mut c);
    let line = "not installing 1.1.0: its rollout is halted: 2 of 2 hosts in group workers that installed it rolled back (halts at 2 hosts or 5 %): aaaa: health check failed: web; bbbb: kernel panic";
    assert!(next.status.starts_with(line), "{next:?}");
    assert!(h.env.logged(line), "{}", h.env.log_text());
    // Nothing written, nothing recorded, no slot asked for.
    assert_eq!(h.w.attrs(), before);
    assert!(!h.staged(&s.agent));
    assert_eq!(h.env.reboots, 0);
    let r = ro.report("1.1.0", HaltThreshold::default()).unwrap();
    assert_eq!(r.installed, 2, "{:?}", r.records);
    assert!(holders(&etcd).is_empty());
    // Said once, shown in the status.
    h.env.now += 3600;
    h.run(&s, &mut c);
    assert_eq!(
        h.env
            .lines
            .iter()
            .filter(|(_, l)| l.contains("halted"))
            .count(),
        1,
        "{}",
        h.env.log_text()
    );
    let st = s.agent.status().unwrap().reboot;
    let halted = st.halted.expect("the halt in the status");
    assert_eq!(halted.version, "1.1.0");
    assert!(halted.detail.contains("kernel panic"), "{halted:?}");

    // An operator clears the outcomes: the release installs.
    ro.clear("1.1.0").unwrap();
    h.env.now += 3600;
    let next = h.run(&s, &mut c);
    assert_eq!(next.status, "rebooting", "{}", h.env.log_text());
    assert!(s.agent.status().unwrap().reboot.halted.is_none());
}

#[test]
fn outside_the_window_no_slot_is_asked_for() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let update = etcd_update(&etcd, "windows = [\"Sat 02:00-04:00\"]");
    let mut h = Node::new(5, &update);
    let opens = T0 + 7200;
    h.env.window = WindowState {
        open: false,
        next_open: Some(opens),
    };
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    let next = h.run(&s, &mut c);
    // Written and verified first, then waiting for the window (not the hour).
    assert!(h.staged(&s.agent));
    assert_eq!(next.wake_at, T0 + 3600, "the next check comes first");
    assert!(
        next.status
            .starts_with("update ready; waiting for the maintenance window (opens in 2 h 0 min"),
        "{next:?}"
    );
    assert!(holders(&etcd).is_empty());
    // The window is looked at again on waking: once it is open, the slot.
    h.env.now = opens;
    h.env.window = WindowState::ALWAYS;
    let next = h.run(&s, &mut c);
    assert_eq!(next.status, "rebooting");
    assert_eq!(holders(&etcd), [h.id.as_str()]);
}

/// Host 6, staged 1.1.0 outside its window: the update waits for it.
fn staged_outside_the_window(
    etcd: &EtcdServer,
) -> (
    Node,
    std::sync::Arc<cairn_updater::dbus::Service>,
    cairn_updater::daemon::Cycle,
) {
    let update = etcd_update(etcd, "windows = [\"Sat 02:00-04:00\"]");
    let mut h = Node::new(6, &update);
    h.env.window = WindowState {
        open: false,
        next_open: Some(T0 + 7200),
    };
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    h.run(&s, &mut c);
    assert!(h.staged(&s.agent), "{}", h.env.log_text());
    h.env.now = T0 + 7200;
    h.env.window = WindowState::ALWAYS;
    (h, s, c)
}

/// What a staged update that must not boot leaves: slot b (0,0,0), nothing
/// pending, no reboot, no slot held, and no reinstall at the next check.
fn assert_taken_back(
    h: &mut Node,
    s: &cairn_updater::dbus::Service,
    c: &mut cairn_updater::daemon::Cycle,
    etcd: &EtcdServer,
    next: &cairn_updater::daemon::Next,
    why: &str,
) {
    assert!(
        next.status.starts_with("not rebooting into 1.1.0: ") && next.status.contains(why),
        "{next:?}\n{}",
        h.env.log_text()
    );
    assert!(
        h.env.logged("slot b no longer boots next"),
        "{}",
        h.env.log_text()
    );
    assert_eq!(h.w.attrs().1, gpt_slots::Attrs::new(0, 0, false));
    assert!(!h.staged(&s.agent));
    assert_eq!(h.env.reboots, 0);
    assert!(holders(etcd).is_empty());
    h.env.now += 3600;
    let again = h.run(s, c);
    assert_ne!(again.status, "rebooting");
    assert!(!h.staged(&s.agent), "reinstalled: {}", h.env.log_text());
    assert_eq!(h.w.attrs().1, gpt_slots::Attrs::new(0, 0, false));
    assert_eq!(h.env.reboots, 0);
}

#[test]
fn a_release_the_fleet_halts_after_it_was_staged_is_taken_back() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (mut h, s, mut c) = staged_outside_the_window(&etcd);
    let ro = rollout(&etcd);
    for id in ["aaaa", "bbbb"] {
        ro.record("1.1.0", id, Outcome::Installed, "").unwrap();
        ro.record("1.1.0", id, Outcome::RolledBack, "kernel panic")
            .unwrap();
    }
    let next = h.run(&s, &mut c);
    assert_taken_back(&mut h, &s, &mut c, &etcd, &next, "kernel panic");
}

#[test]
fn a_release_the_publisher_halts_after_it_was_staged_is_taken_back() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (mut h, s, mut c) = staged_outside_the_window(&etcd);
    release_repo::halt(
        &h.w.repo,
        "stable",
        &release_manifest::Version::parse("1.1.0").unwrap(),
        "bad NIC driver",
        &fixture::repo_keys(),
        release_repo::HaltOptions {
            board: None,
            now: fixture::NOW,
            expires: fixture::NOW + 30 * 86_400,
        },
    )
    .unwrap();
    let next = h.run(&s, &mut c);
    assert_taken_back(&mut h, &s, &mut c, &etcd, &next, "bad NIC driver");
}

#[test]
fn a_manual_rollback_is_recorded_as_a_rollback() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let mut h = Node::new(7, &etcd_update(&etcd, ""));
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    h.run(&s, &mut c);
    assert_eq!(h.env.reboots, 1, "{}", h.env.log_text());
    drop((s, c));
    h.commit_b();
    let (s, mut c) = h.start(Slot::B, "1.1.0");
    h.run(&s, &mut c);
    s.agent.rollback().unwrap();
    h.env.now += 60;
    h.run(&s, &mut c);
    let r = rollout(&etcd)
        .report("1.1.0", HaltThreshold::default())
        .unwrap();
    assert_eq!(
        (r.installed, r.committed, r.rolled_back),
        (1, 0, 1),
        "{:?}",
        r.records
    );
    assert!(
        r.rollbacks[0].1.contains("rolled back by an operator"),
        "{:?}",
        r.rollbacks
    );
}

// ---- binaries ----

fn cairnctl(dir: &Path, args: &[&str]) -> (bool, String, String) {
    fixture::output(
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--machine-id")
            .arg(dir.join("machine-id"))
            .args(args),
    )
}

#[test]
fn cairnctl_fleet_status_set_max_and_unlock() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(
        dir.join("config.toml"),
        format!("[update]\n{}", etcd_update(&etcd, "")),
    )
    .unwrap();
    std::fs::write(dir.join("machine-id"), fleet_common::machine_id_text(9)).unwrap();
    let me = fleet_lock::node_id(&fleet_common::machine_id_text(9)).unwrap();

    let (ok, out, err) = cairnctl(dir, &["fleet", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("group workers: 0 reboot slots held; the number of slots is not set yet"),
        "{out}"
    );
    assert!(out.contains("no release has rollout outcomes"), "{out}");

    let sem = semaphore(&etcd);
    sem.acquire("host-a").unwrap();
    sem.acquire(&me).unwrap(); // full: refused, nothing changes
    let (ok, out, err) = cairnctl(dir, &["fleet", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("group workers: 1 of 1 reboot slots held"),
        "{out}"
    );
    assert!(out.contains("  host-a  since 20"), "{out}");
    assert!(out.contains("s left"), "{out}");

    let (ok, out, _) = cairnctl(dir, &["--json", "fleet", "status"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["max"], 1);
    assert_eq!(v["holders"][0]["id"], "host-a");
    assert!(v["holders"][0]["lease_seconds_left"].as_u64().unwrap() > 50);
    assert_eq!(v["release"], serde_json::Value::Null);

    let (ok, out, err) = cairnctl(dir, &["fleet", "set-max", "2"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "group workers: reboot slots 1 → 2");
    assert_eq!(sem.acquire(&me).unwrap(), fleet_lock::Acquire::Taken);
    let (ok, out, _) = cairnctl(dir, &["fleet", "status"]);
    assert!(ok);
    assert!(out.contains(&format!("  {me} (this host)  since")), "{out}");
    let (ok, out, _) = cairnctl(dir, &["--json", "fleet", "set-max", "0"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["previous"].as_u64(), v["max"].as_u64()),
        (Some(2), Some(0))
    );

    let (ok, out, err) = cairnctl(dir, &["fleet", "unlock", "host-a"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "freed the reboot slot of host-a in group workers"
    );
    let (ok, out, _) = cairnctl(dir, &["--json", "fleet", "unlock", "host-a"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["released"], false);
    assert_eq!(holders(&etcd), [me.as_str()]);
    let (ok, _, err) = cairnctl(dir, &["fleet", "unlock", "a/b"]);
    assert!(!ok);
    assert!(err.contains("invalid host id"), "{err}");

    // Outcomes: the newest release with records, or the one asked for.
    let ro = rollout(&etcd);
    ro.record("1.2.0", "h1", Outcome::Committed, "").unwrap();
    ro.record("1.10.0", "h1", Outcome::Installed, "").unwrap();
    ro.record(
        "1.10.0",
        "h2",
        Outcome::RolledBack,
        "health check failed: web",
    )
    .unwrap();
    let (ok, out, err) = cairnctl(dir, &["fleet", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("release 1.10.0: 2 installed, 0 committed, 1 rolled back: HALTED (halts at 2 hosts or 5 %)"),
        "{out}"
    );
    assert!(
        out.contains("  rolled back on h2: health check failed: web"),
        "{out}"
    );
    let (ok, out, _) = cairnctl(dir, &["--json", "fleet", "status", "--version", "1.2.0"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["release"]["version"], "1.2.0");
    assert_eq!(v["release"]["committed"], 1);
    assert_eq!(v["release"]["halted"], false);

    // Without etcd-lock: one line saying what to configure.
    std::fs::write(
        dir.join("config.toml"),
        "[update]\nreboot = \"immediate\"\n",
    )
    .unwrap();
    let (ok, out, err) = cairnctl(dir, &["fleet", "status"]);
    assert!(!ok && out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("set [update] reboot = \"etcd-lock\" and configure [update.etcd]"),
        "{err}"
    );
}

#[test]
fn cairnctl_status_shows_the_strategy_and_the_slot() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let h = Node::new(6, &etcd_update(&etcd, ""));
    let args = |extra: &[&str]| {
        let mut a = fixture::cairnctl_args(&h.w.dir, &h.w.server.url);
        a.extend([
            "--machine-id".to_string(),
            h.machine_id.display().to_string(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        fixture::output(Command::new(env!("CARGO_BIN_EXE_cairnctl")).args(args(extra)))
    };
    let (ok, out, err) = run(&["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "reboot: etcd-lock, group workers: this host holds no reboot slot (0/1 slots held)"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("node id: {}", h.id)), "{out}");
    semaphore(&etcd).acquire(&h.id).unwrap();
    let (ok, out, _) = run(&["status"]);
    assert!(ok);
    assert!(
        out.contains("reboot: etcd-lock, group workers: this host holds a reboot slot since 20"),
        "{out}"
    );
    assert!(out.contains("s left (1/1 slots held)"), "{out}");
    let (ok, out, _) = run(&["--json", "status"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reboot"]["strategy"], "etcd-lock");
    assert_eq!(v["reboot"]["holds_slot"], true);

    // The node id needs a machine id: a missing or empty one is one clear line.
    std::fs::write(&h.machine_id, "").unwrap();
    let (ok, _, err) = run(&["status"]);
    assert!(!ok);
    assert!(
        err.contains("the fleet lock needs this host's node id, a hash of")
            && err.contains("not initialized"),
        "{err}"
    );
    std::fs::remove_file(&h.machine_id).unwrap();
    let (ok, _, err) = run(&["status"]);
    assert!(!ok);
    assert!(
        err.contains("cannot read") && err.contains("machine-id"),
        "{err}"
    );
}

/// A test host laid out for the binaries: `fixture::cairnctl_args` paths, a
/// machine id, and a reboot program that leaves `rebooted` behind.
struct BinHost {
    dir: tempfile::TempDir,
    id: String,
}

impl BinHost {
    fn new(n: u8, repo_url: &str, root: &release_repo::Root, update: &str) -> BinHost {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fixture::make_target(&d.join("host"), 2 << 20).unwrap();
        fixture::write_host_files(
            d,
            root,
            &format!("[update]\nurl = \"{repo_url}\"\n{update}"),
        )
        .unwrap();
        std::fs::write(d.join("machine-id"), fleet_common::machine_id_text(n)).unwrap();
        let script = d.join("reboot");
        std::fs::write(&script, "#!/bin/sh\ntouch \"$(dirname \"$0\")/rebooted\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        BinHost {
            id: fleet_lock::node_id(&fleet_common::machine_id_text(n)).unwrap(),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start(&self, repo_url: &str) -> Reaped {
        let d = self.path();
        let log = std::fs::File::create(d.join("updated.log")).unwrap();
        Reaped(
            Command::new(env!("CARGO_BIN_EXE_cairn-updated"))
                .args(fixture::cairnctl_args(d, repo_url))
                .arg("--machine-id")
                .arg(d.join("machine-id"))
                .arg("--reboot-command")
                .arg(d.join("reboot"))
                // No system bus: the timer works without it.
                .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start cairn-updated"),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("updated.log")).unwrap_or_default()
    }

    fn rebooted(&self) -> bool {
        self.path().join("rebooted").exists()
    }
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "no {what} within {limit:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cairn_updated_reboots_only_with_a_slot() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    // A repository whose wave started long ago: the service uses the real clock.
    let t = tempfile::tempdir().unwrap();
    let rel =
        fixture::make_release(&t.path().join("build"), "1.1.0", 300_000, 64 << 10, 3).unwrap();
    let repo = t.path().join("repo");
    let root = fixture::make_repo(&repo, &[]).unwrap();
    fixture::publish(&repo, &rel, release_repo::Wave::immediate(0)).unwrap();
    let server = fixture::Server::start(&repo).unwrap();
    let update = etcd_update(&etcd, "");
    let h1 = BinHost::new(11, &server.url, &root, &update);
    let h2 = BinHost::new(12, &server.url, &root, &update);

    let _d1 = h1.start(&server.url);
    wait_for(
        Duration::from_secs(60),
        "reboot of host 1",
        || h1.rebooted(),
        || h1.log(),
    );
    let log = h1.log();
    for line in [
        "<5>1.1.0 ready in slot b: reboot needed",
        "<5>took reboot slot 1/1 in group workers",
        "<5>rebooting into 1.1.0 (slot b)",
    ] {
        assert!(log.contains(line), "{line:?} in\n{log}");
    }
    assert_eq!(holders(&etcd), [h1.id.as_str()]);

    let _d2 = h2.start(&server.url);
    let waiting = format!(
        "<5>waiting for a reboot slot: 1/1 held by {}; retry in",
        h1.id
    );
    wait_for(
        Duration::from_secs(60),
        "wait for a slot",
        || h2.log().contains(&waiting),
        || h2.log(),
    );
    assert!(!h2.rebooted());

    // An operator frees host 1's slot: host 2 takes it at its next retry
    // (the default back-off: 7.5 to 15 s).
    let (ok, out, err) = cairnctl(h2.path(), &["fleet", "unlock", &h1.id]);
    assert!(ok, "{err}");
    assert!(out.contains("freed the reboot slot"), "{out}");
    wait_for(
        Duration::from_secs(30),
        "reboot of host 2",
        || h2.rebooted(),
        || h2.log(),
    );
    assert!(
        h2.log()
            .contains("<5>took reboot slot 1/1 in group workers"),
        "{}",
        h2.log()
    );
    assert_eq!(holders(&etcd), [h2.id.as_str()]);
    let r = rollout(&etcd)
        .report("1.1.0", HaltThreshold::default())
        .unwrap();
    assert_eq!(r.installed, 2);
}
