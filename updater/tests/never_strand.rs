//! Issue 11 at the host level: the agent against a loopback repository, a
//! file-backed GPT disk and file slots. Nothing writes the fallback while the
//! booted slot is on trial; a manual rollback sticks; expiry is judged against
//! a trusted clock floor and a wrong clock is named; a key rotation resets the
//! channel high-water marks.

use std::process::Command;
use std::time::Duration;

use cairn_updater::fixture::{self, NOW, World};
use cairn_updater::{Agent, Error};
use disk_layout::Slot;
use gpt_slots::Attrs;
use release_manifest::{KeyPair, Version};
use release_repo::{Channel, Wave};

const USR: u64 = 600_000;
const CHUNK: u64 = 64 << 10;

/// A host laid out as `fixture::cairnctl_args` expects, and a repository
/// offering 1.0.0 and 1.1.0.
fn world() -> World {
    World::new(&[("1.0.0", 1), ("1.1.0", 2)], USR, CHUNK, 2 << 20)
}

/// The state directory's files (none is written by a refused update).
fn state_files(w: &World) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.dir.join("state"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn cairnctl(w: &World, args: &[&str]) -> (bool, String, String) {
    fixture::output(
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .args(fixture::cairnctl_args(&w.dir, &w.server.url))
            .args(args),
    )
}

/// Re-signs the channel after `edit`, with `keys`.
fn rewrite_channel(w: &World, keys: &[KeyPair], edit: impl FnOnce(&mut Channel)) {
    let p = w.repo.join("channels/stable.json");
    let mut ch = Channel::from_json(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut ch);
    let root = release_repo::load_root(&w.repo).unwrap();
    release_repo::write_channel(&w.repo, &root, &ch, keys).unwrap();
}

/// 1.1.0 installed into B from A, booted and committed by cairn-mark-good
/// (A 1/3/1, B 2/3/1), and B's agent saw that: returns B's agent.
fn committed_on_b(w: &World) -> Agent {
    w.updated_agent(Slot::A, "1.0.0");
    w.set_attrs(Attrs::new(1, 3, true), Attrs::new(2, 3, true));
    let on_b = w.agent(Slot::B, "1.1.0");
    on_b.reconcile().unwrap();
    on_b
}

fn good() -> Attrs {
    Attrs::new(1, 0, true)
}

// ------------------------------------------------------------ item 1

/// v1.1.0 was installed into B and is booting on trial (the boot manager took
/// a try, cairn-mark-good has not run); 1.2.0 is published meanwhile. A, the
/// proven fallback, stays (1,0,1) and untouched until B is committed.
#[test]
fn nothing_writes_the_fallback_while_the_booted_slot_is_on_trial() {
    let w = world();
    let on_trial = Attrs::new(2, 2, false);
    w.set_attrs(good(), on_trial);
    w.publish("1.2.0", 3);
    let before = w.snapshot(Slot::A);

    let agent = w.agent(Slot::B, "1.1.0");
    // Checking is harmless and still says what is available...
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    assert_eq!(entry.version.as_str(), "1.2.0");
    let state_before = state_files(&w);
    // ...but applying it is refused before anything is fetched or written.
    let sent = w
        .server
        .faults
        .sent
        .load(std::sync::atomic::Ordering::SeqCst);
    let err = agent.apply(&entry, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::OnTrial { slot: "b" }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("slot b is on trial") && text.contains("cairn-mark-good"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert_eq!(w.attrs(), (good(), on_trial), "the fallback's bits changed");
    assert_eq!(w.snapshot(Slot::A), before, "the fallback was written");
    assert_eq!(state_files(&w), state_before, "state was written");
    assert_eq!(
        w.server
            .faults
            .sent
            .load(std::sync::atomic::Ordering::SeqCst),
        sent,
        "the manifest was fetched"
    );
    // Not a failure of 1.2.0: nothing recorded against it.
    assert!(agent.history().unwrap().failed.is_empty());

    // cairn-mark-good commits B: now A may be (and is) overwritten.
    w.set_attrs(good(), Attrs::new(2, 0, true));
    let out = agent.apply(&entry, &mut |_| {}).unwrap();
    assert_eq!(out.slot, "a");
    assert_eq!(w.attrs(), (Attrs::new(2, 3, false), Attrs::new(1, 0, true)));
}

/// `cairnctl update` on a trial boot: one line on stderr, exit status 1, the
/// other slot untouched.
#[test]
fn cairnctl_update_refuses_on_trial_in_one_line() {
    let w = world();
    // cairnctl_args boots slot a: a is the slot on trial, b the fallback.
    let on_trial = Attrs::new(2, 2, false);
    w.set_attrs(on_trial, good());
    let before = w.snapshot(Slot::B);
    let (ok, out, err) = cairnctl(&w, &["update", "--now"]);
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cairnctl: slot a is on trial"), "{err}");
    assert_eq!(w.attrs(), (on_trial, good()));
    assert_eq!(w.snapshot(Slot::B), before);
    // Committed: the same command installs.
    w.set_attrs(Attrs::new(1, 0, true), Attrs::new(0, 0, false));
    let (ok, out, err) = cairnctl(&w, &["update", "--now"]);
    assert!(ok, "{err}");
    assert!(out.contains("written to slot b"), "{out}");
}

// ------------------------------------------------------------ item 5

/// 1.1.0 installed, booted and committed; the operator rolls back to 1.0.0.
/// The next check does not bring 1.1.0 back; `cairnctl history` says why;
/// `cairnctl update --version 1.1` installs it on purpose and clears the mark.
#[test]
fn a_manual_rollback_sticks_until_the_version_is_asked_for() {
    let w = world();
    let _on_a = w.updated_agent(Slot::A, "1.0.0");
    // B booted and was marked good.
    w.target
        .set_attrs(&[(Slot::B, Attrs::new(2, 0, true))])
        .unwrap();
    let on_b = w.agent(Slot::B, "1.1.0");
    on_b.reconcile().unwrap();
    on_b.rollback().unwrap();
    let h = on_b.history().unwrap();
    let why = h.failed_reason(&Version::parse("1.1.0").unwrap()).unwrap();
    assert!(why.contains("abandoned by manual rollback"), "{why}");
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == "rollback" && e.version == "1.1.0"),
        "{:?}",
        h.events
    );

    // Rebooted into A (1.0.0).
    let on_a = w.agent(Slot::A, "1.0.0");
    assert!(on_a.reconcile().unwrap().is_empty());
    let c = on_a.check().unwrap();
    assert!(c.decision.chosen.is_none(), "{:?}", c.decision);
    let (ok, out, err) = cairnctl(&w, &["check", "--now"]);
    assert!(ok, "{err}");
    assert!(out.contains("no update for 1.0.0"), "{out}");
    let (ok, out, err) = cairnctl(&w, &["history"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("never again: 1.1.0: abandoned by manual rollback"),
        "{out}"
    );
    assert!(out.contains("rollback"), "{out}");

    // The operator wants it back, by name (another spelling of the version).
    let (ok, out, err) = cairnctl(&w, &["update", "--version", "1.1"]);
    assert!(ok, "{err}");
    assert!(out.contains("1.1.0 written to slot b"), "{out}");
    assert!(on_a.history().unwrap().failed.is_empty());
    // What the channel does not offer, or a downgrade, is refused by name.
    let (ok, _, err) = cairnctl(&w, &["update", "--version", "7.0.0"]);
    assert!(!ok);
    assert!(err.contains("version 7.0.0: not offered"), "{err}");
    let (ok, _, err) = cairnctl(&w, &["update", "--version", "1.0.0"]);
    assert!(!ok);
    assert!(err.contains("not newer than the booted 1.0.0"), "{err}");
}

// ------------------------------------------------------------ item 6

/// A clock far in the past: the floor (here the newest signed time seen, a
/// verified manifest's `created`) is used, so metadata that expired before it
/// is refused even though the clock says it is still valid.
#[test]
fn a_clock_far_in_the_past_is_raised_to_the_floor() {
    let w = world();
    let agent = w.updated_agent(Slot::A, "1.0.0");
    // The manifests are built at NOW - 1 day.
    let seen = agent.state.trust().unwrap().signed_time;
    assert_eq!(seen, NOW - 86_400);
    // A frozen channel: validly signed, expired two days before NOW.
    rewrite_channel(&w, &fixture::repo_keys(), |ch| {
        ch.version += 1;
        ch.expires = NOW - 2 * 86_400;
    });
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.clock = Some(1_000_000_000); // 2001
    assert!(agent.time_floor() >= seen);
    assert_eq!(agent.now(), agent.time_floor());
    let err = agent.check().unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("channels/stable.json expired at 2027-01-13 08:00:00 UTC")
            && text.contains("the system clock says 2001-09-09")
            && text.contains("already seen signed data from 2027-01-14 08:00:00 UTC"),
        "{text}"
    );
}

/// A clock far in the future makes everything look expired: the error names
/// the clock and what to do, nothing is stored from it, and fixing the clock
/// recovers.
#[test]
fn a_clock_far_in_the_future_is_named_and_does_not_lock_the_host_out() {
    let w = world();
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.clock = Some(3_881_605_445); // 2092-12-31
    let err = agent.check().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Expired { .. }), "{text}");
    assert!(
        text.contains("the system clock says 2092-12-31 23:44:05 UTC")
            && text.contains("if the clock is wrong, fix it (timedatectl"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(agent.state.trust().unwrap().signed_time, 0);
    agent.clock = Some(NOW);
    let c = agent.check().unwrap();
    assert_eq!(c.decision.chosen.unwrap().version.as_str(), "1.1.0");
}

// ------------------------------------------------------------ item 8

/// Stolen repository keys sign channel version 2^64-1; the host accepts it
/// (validly signed). After the publisher rotates the keys, a fresh channel
/// (version 1, new keys) is accepted: the marks recorded under the old keys
/// were reset. Without a rotation, the mark still holds.
#[test]
fn a_key_rotation_resets_the_channel_high_water_marks() {
    let w = world();
    let stolen = fixture::repo_keys();
    rewrite_channel(&w, &stolen, |ch| ch.version = u64::MAX);
    let agent = w.agent(Slot::A, "1.0.0");
    assert_eq!(agent.check().unwrap().channel_version, u64::MAX);
    // Before a rotation, the legitimate channel (version 2) is a rollback.
    rewrite_channel(&w, &stolen, |ch| ch.version = 2);
    let err = agent.check().unwrap_err().to_string();
    assert!(err.contains("rollback attack"), "{err}");

    let new = [KeyPair::from_seed([20; 32])];
    release_repo::rotate_keys(&w.repo, &stolen, &new, 1, NOW + 90 * 86_400).unwrap();
    rewrite_channel(&w, &new, |ch| ch.version = 1);
    let c = agent.check().unwrap();
    assert_eq!((c.root_version, c.channel_version), (2, 1));
    assert_eq!(c.decision.chosen.unwrap().version.as_str(), "1.1.0");
    assert_eq!(agent.state.trust().unwrap().channels["stable"], 1);
    // The new marks hold again: an older channel under the new keys is refused.
    rewrite_channel(&w, &new, |ch| ch.version = 0);
    let err = agent.check().unwrap_err().to_string();
    assert!(err.contains("rollback attack"), "{err}");
}

/// A trust.json written before the signers were recorded: its marks belong to
/// the root it trusted, and a rotation after the upgrade still resets them.
#[test]
fn marks_from_an_older_trust_file_are_reset_by_a_later_rotation() {
    let w = world();
    let stolen = fixture::repo_keys();
    rewrite_channel(&w, &stolen, |ch| ch.version = u64::MAX);
    let state = w.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let old = serde_json::json!({ "root": w.root, "channels": { "stable": u64::MAX } });
    std::fs::write(state.join("trust.json"), old.to_string()).unwrap();
    let new = [KeyPair::from_seed([21; 32])];
    release_repo::rotate_keys(&w.repo, &stolen, &new, 1, NOW + 90 * 86_400).unwrap();
    rewrite_channel(&w, &new, |ch| ch.version = 3);
    let c = w.agent(Slot::A, "1.0.0").check().unwrap();
    assert_eq!(c.channel_version, 3);
}

/// cairn-updated's periodic check on a trial boot: "not now", said once, no
/// failure status, nothing written; once the boot is committed, its next
/// cycle (here: the first one after a restart) installs the update.
#[test]
fn the_service_waits_for_the_trial_and_then_installs() {
    use std::io::Read;
    use std::os::unix::net::UnixDatagram;

    let w = world();
    std::fs::write(
        w.dir.join("config.toml"),
        "[update]\nchannel = \"stable\"\ninterval_minutes = 60\nreboot = \"off\"\n",
    )
    .unwrap();
    // The service runs on the real clock: a release whose wave has started.
    fixture::publish(&w.repo, &w.release("1.2.0", 4), Wave::immediate(0)).unwrap();
    let on_trial = Attrs::new(2, 2, false);
    w.set_attrs(on_trial, good());
    let before = w.snapshot(Slot::B);
    let notify = w.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = w.dir.join("updated.log");
    let run = |log: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_cairn-updated"))
            .args(fixture::cairnctl_args(&w.dir, &w.server.url))
            // No bus here: the timer works without one.
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .env("NOTIFY_SOCKET", &notify)
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    // Reads sd_notify messages until one starts with STATUS= and is not the
    // "installing" progress; returns it.
    let status = || {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            assert!(started.elapsed() < Duration::from_secs(30), "no STATUS");
            if let Ok(n) = sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(s) = m.strip_prefix("STATUS=")
                    && !s.starts_with("installing")
                {
                    return s.to_string();
                }
            }
        }
    };
    let mut daemon = run(&log);
    let s = status();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        s, "waiting for this boot to be marked good before updating",
        "{text}"
    );
    assert_eq!(text.matches("slot a is on trial").count(), 1, "{text}");
    assert!(
        text.contains("<5>not updating now: slot a is on trial"),
        "{text}"
    );
    assert!(!text.contains("<3>updating"), "{text}");
    assert_eq!(w.attrs(), (on_trial, good()));
    assert_eq!(w.snapshot(Slot::B), before);
    assert!(
        w.agent(Slot::A, "1.0.0")
            .history()
            .unwrap()
            .failed
            .is_empty()
    );

    // cairn-mark-good committed slot a.
    w.set_attrs(Attrs::new(2, 0, true), Attrs::new(1, 0, true));
    let mut daemon = run(&w.dir.join("updated2.log"));
    let s = status();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(s.contains("update ready"), "{s}");
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
}

// ------------------------------------------------------------ items 2 and 5

/// 1.1.0 was installed into B, booted and committed; then B stopped booting
/// and the boot manager fell back to A, giving B up (priority 0, successful
/// kept). The agent on A records why, once, marks 1.1.0 failed, and the
/// next check installs nothing.
#[test]
fn a_committed_slot_the_boot_manager_gave_up_is_recorded_once() {
    let w = world();
    let _on_b = committed_on_b(&w);
    // K boots of B died; the boot manager chose A and gave B up.
    w.set_attrs(Attrs::new(1, 2, true), Attrs::new(0, 0, true));
    let on_a = w.agent(Slot::A, "1.0.0");
    let notes = on_a.reconcile().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("after it was committed"), "{notes:?}");
    let h = on_a.history().unwrap();
    let why = h.failed_reason(&Version::parse("1.1.0").unwrap()).unwrap();
    assert!(why.contains("fell back to slot a"), "{why}");
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == "fell-back" && e.version == "1.1.0")
    );
    // Once: a later cycle adds nothing.
    assert!(on_a.reconcile().unwrap().is_empty());
    assert_eq!(on_a.history().unwrap().events.len(), h.events.len());
    assert!(on_a.check().unwrap().decision.chosen.is_none());
    assert!(!on_a.status().unwrap().reboot_needed);
}

/// `cairnctl rollback` arms its target like any committed slot (tries K,
/// not 0, which would read as exhausted and lose to the slot left), and no
/// update writes over it before the reboot that finishes the rollback.
#[test]
fn a_rollback_arms_its_target_and_nothing_writes_it_before_the_reboot() {
    let w = world();
    let on_b = committed_on_b(&w);
    on_b.rollback().unwrap();
    let k = gpt_slots::DEFAULT_COMMITTED_TRIES;
    assert_eq!(w.attrs(), (Attrs::new(2, k, true), Attrs::new(1, 3, true)));
    let chosen = gpt_slots::choose(&[
        gpt_slots::SlotState {
            number: 2,
            attrs: w.attrs().0,
        },
        gpt_slots::SlotState {
            number: 3,
            attrs: w.attrs().1,
        },
    ]);
    assert_eq!(
        chosen.map(|c| c.number),
        Some(2),
        "the rollback target boots next"
    );

    w.publish("1.2.0", 3);
    let before = w.snapshot(Slot::A);
    let entry = on_b.check().unwrap().decision.chosen.unwrap();
    let err = on_b.apply(&entry, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::RollbackPending { slot: "a" }), "{err}");
    assert_eq!(w.snapshot(Slot::A), before);
    assert_eq!(w.attrs().0, Attrs::new(2, k, true));
}
