//! The agent against a real HTTP server on 127.0.0.1, a GPT disk image, file
//! slots and an ESP directory.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_updater::fixture::{self, NOW, World};
use cairn_updater::{Agent, Target};
use disk_layout::Slot;
use gpt_slots::Attrs;
use release_manifest::KeyPair;
use release_repo::{Root, Wave};
use sha2::{Digest, Sha256};

const USR: u64 = 1_200_000;
const CHUNK: u64 = 64 << 10;

/// Repository with 1.0.0 and 1.1.0; host booted from A running 1.0.0.
fn world() -> World {
    World::new(&[("1.0.0", 1), ("1.1.0", 2)], USR, CHUNK, 4 << 20)
}

fn fresh() -> (Attrs, Attrs) {
    (Attrs::new(1, 0, true), Attrs::new(0, 0, false))
}

/// Runs check + apply and returns the error text.
fn update_err(agent: &Agent) -> String {
    let result = agent.check().and_then(|c| {
        let e = c.decision.chosen.ok_or_else(|| {
            cairn_updater::Error::BadRelease(format!("nothing chosen: {:?}", c.decision.skipped))
        })?;
        agent.apply(&e, &mut |_| {})
    });
    match result {
        Ok(o) => panic!("the update should have been refused: {o:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_update_writes_only_the_inactive_slot() {
    let w = world();
    let before = w.snapshot(Slot::A);
    let agent = w.agent(Slot::A, "1.0.0");
    let check = agent.check().unwrap();
    let entry = check.decision.chosen.clone().unwrap();
    assert_eq!(entry.version.as_str(), "1.1.0");
    let mut chunks_seen = 0;
    let out = agent
        .apply(&entry, &mut |e| {
            if let cairn_updater::Event::Chunk { .. } = e {
                chunks_seen += 1;
            }
        })
        .unwrap();
    assert!(out.reboot_needed);
    assert_eq!(out.chunks_resumed, 0);
    assert_eq!(chunks_seen, out.chunks_total);
    // State machine step 3.
    assert_eq!(w.attrs(), (Attrs::new(1, 0, true), Attrs::new(2, 3, false)));
    // The slot holds the image, the ESP the boot files.
    let m = w.manifest("1.1.0");
    let usr = m.image("usr").unwrap();
    let b = fixture::read_all(&w.target.slot_b).unwrap();
    assert_eq!(Sha256::digest(&b[..usr.size as usize])[..], usr.sha256.0);
    for f in disk_layout::boot_files::ALL {
        assert!(w.target.esp_dir(Slot::B).join(f).exists(), "{f}");
        assert!(!w.target.esp_dir(Slot::B).join(format!("{f}.tmp")).exists());
    }
    assert_eq!(w.snapshot(Slot::A), before, "the active slot was touched");
    // The GPT is still valid for other tools.
    if let Ok(o) = std::process::Command::new("sgdisk")
        .arg("-v")
        .arg(&w.target.disk)
        .output()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }
    // Applying again is a no-op that still says "reboot needed".
    let again = agent.apply(&entry, &mut |_| {}).unwrap();
    assert!(again.already_installed);
    let status = agent.status().unwrap();
    assert!(status.reboot_needed);
    assert!(status.development_key);
}

#[test]
fn the_active_slot_is_never_opened_for_writing() {
    let w = world();
    let err = w
        .target
        .open_slot_for_write(Slot::A, Slot::A)
        .err()
        .unwrap();
    assert!(err.to_string().contains("booted slot"), "{err}");
    let aliased = Target {
        slot_b: w.target.slot_a.clone(),
        ..w.target.clone()
    };
    let err = aliased.open_slot_for_write(Slot::B, Slot::A).err().unwrap();
    assert!(err.to_string().contains("booted slot"), "{err}");
    let err = w
        .target
        .write_boot_files(Slot::A, Slot::A, &[], &[])
        .unwrap_err();
    assert!(err.to_string().contains("booted slot"), "{err}");
}

#[test]
fn resumes_after_the_server_drops_the_connection_mid_chunk() {
    let w = world();
    *w.server.faults.drop_once.lock().unwrap() = Some(("chunks/".into(), 20_000));
    let agent = w.agent(Slot::A, "1.0.0");
    let out = fixture::install(&agent);
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
    let log = w.server.faults.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.contains("chunks/") && l.ends_with("Some(20000)")),
        "no Range request resumed at byte 20000: {log:?}"
    );
    // Only the manifest, boot files and each chunk once: nothing re-downloaded.
    let m = w.manifest("1.1.0");
    let payload: u64 = m
        .images
        .iter()
        .flat_map(|i| &i.chunks)
        .map(|c| c.zsize)
        .sum();
    assert!(
        out.bytes_downloaded < payload + (64 << 10),
        "{} vs {payload}",
        out.bytes_downloaded
    );
}

#[test]
fn resumes_from_the_first_unverified_chunk_after_a_restart() {
    let w = world();
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.stop_after_chunks = Some(5);
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let err = agent.apply(&entry, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("stopped after 5"), "{err}");
    // Interrupted mid-write: never bootable.
    assert_eq!(w.attrs(), fresh());
    let p = agent.state.progress().unwrap().unwrap();
    assert_eq!(p.chunks_verified, 5);

    // A new process: resumes at chunk 5, downloading each remaining chunk once.
    let agent = w.agent(Slot::A, "1.0.0");
    let sent_before = w.server.faults.sent.load(Ordering::SeqCst);
    let out = fixture::install(&agent);
    assert_eq!(out.chunks_resumed, 5);
    let m = w.manifest("1.1.0");
    let usr = m.image("usr").unwrap();
    let rest: u64 = usr.chunks[5..].iter().map(|c| c.zsize).sum();
    let done: u64 = usr.chunks[..5].iter().map(|c| c.zsize).sum();
    let boot: u64 = m
        .images
        .iter()
        .filter(|i| i.name != "usr")
        .flat_map(|i| &i.chunks)
        .map(|c| c.zsize)
        .sum();
    let sent = w.server.faults.sent.load(Ordering::SeqCst) - sent_before;
    let metadata = sent - rest - boot;
    eprintln!(
        "restart: {rest} chunk bytes fetched, {done} not re-downloaded, {metadata} metadata bytes"
    );
    assert!(
        metadata < 64 << 10,
        "re-downloaded verified chunks: {sent} sent"
    );
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
}

/// Every attack: refused with a message naming it, B stays (0,0,0), A untouched.
fn assert_refused(w: &World, agent: &Agent, expect: &str) {
    let before = w.snapshot(Slot::A);
    let err = update_err(agent);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(w.attrs(), fresh(), "after: {err}");
    assert_eq!(w.snapshot(Slot::A), before);
}

fn chunk_path(w: &World, version: &str, index: usize) -> PathBuf {
    w.repo
        .join(&w.manifest(version).image("usr").unwrap().chunks[index].file)
}

#[test]
fn attack_tampered_chunk() {
    let w = world();
    let p = chunk_path(&w, "1.1.0", 3);
    let mut b = std::fs::read(&p).unwrap();
    b[10] ^= 0xff;
    std::fs::write(&p, b).unwrap();
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "zsha256");
}

#[test]
fn attack_tampered_manifest() {
    let w = world();
    let p = w
        .repo
        .join(format!("releases/{}/1.1.0/manifest.json", fixture::BOARD));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"created\"", "\"created\" ");
    std::fs::write(&p, text).unwrap();
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "endless data");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"created\" ", "\"created\"");
    let text = text.replacen("\"board\"", "\"bOard\"", 1);
    std::fs::write(&p, text).unwrap();
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "channel's pin");
}

fn resign_channel(w: &World, keys: &[KeyPair]) {
    let p = w.repo.join("channels/stable.json");
    let doc = std::fs::read(&p).unwrap();
    let sig = release_manifest::sign_document(&doc, keys).unwrap();
    std::fs::write(w.repo.join("channels/stable.json.sig"), sig).unwrap();
}

#[test]
fn attack_wrong_key() {
    let w = world();
    resign_channel(
        &w,
        &[KeyPair::from_seed([66; 32]), KeyPair::from_seed([67; 32])],
    );
    assert_refused(
        &w,
        &w.agent(Slot::A, "1.0.0"),
        "no signature by a trusted key",
    );
}

#[test]
fn attack_too_few_signatures() {
    let w = world();
    resign_channel(&w, &fixture::repo_keys()[..1]);
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "only 1 of the 2 required");
}

#[test]
fn attack_expired_metadata() {
    let w = world();
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.clock = Some(NOW + 31 * 86_400);
    assert_refused(&w, &agent, "expired");
}

#[test]
fn attack_replayed_older_channel() {
    let w = world();
    let ch = w.repo.join("channels/stable.json");
    let old = (
        std::fs::read(&ch).unwrap(),
        std::fs::read(w.repo.join("channels/stable.json.sig")).unwrap(),
    );
    // The host sees a newer channel version once...
    w.publish("1.0.1", 3);
    w.agent(Slot::A, "1.0.0").check().unwrap();
    // ...then a mirror serves the old, validly signed one.
    std::fs::write(&ch, old.0).unwrap();
    std::fs::write(w.repo.join("channels/stable.json.sig"), old.1).unwrap();
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "rollback attack");
}

#[test]
fn attack_downgrade_release() {
    let w = world();
    // Booted 1.1.0: the validly signed 1.0.0 is never chosen.
    let agent = w.agent(Slot::A, "1.1.0");
    let c = agent.check().unwrap();
    assert!(c.decision.chosen.is_none());
    assert!(
        c.decision
            .skipped
            .iter()
            .all(|s| s.skip == cairn_updater::plan::Skip::NotNewer)
    );
    assert_refused(&w, &agent, "nothing chosen");
}

#[test]
fn attack_mix_and_match() {
    let w = world();
    // 1.1.0's manifest replaced by 1.0.0's (validly signed by the build key).
    let d = |v: &str| w.repo.join(format!("releases/{}/{v}", fixture::BOARD));
    for f in ["manifest.json", "manifest.json.sig"] {
        std::fs::copy(d("1.0.0").join(f), d("1.1.0").join(f)).unwrap();
    }
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "1.1.0/manifest.json");

    // 1.1.0's manifest with 1.0.0's chunk bytes under its chunk names.
    let w = world();
    let (old, new) = (chunk_path(&w, "1.0.0", 2), chunk_path(&w, "1.1.0", 2));
    std::fs::copy(&old, &new).unwrap();
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "chunk 2");
}

#[test]
fn attack_endless_data() {
    let w = world();
    *w.server.faults.extra.lock().unwrap() = Some(("manifest.json".into(), 10 << 20));
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "endless data");
    *w.server.faults.extra.lock().unwrap() = Some(("chunks/".into(), 10 << 20));
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "endless data");
    // The client stopped reading: far less than the 10 MiB offered was sent.
    assert!(w.server.faults.sent.load(Ordering::SeqCst) < 8 << 20);
}

#[test]
fn attack_rotation_without_the_old_threshold() {
    let w = world();
    let attacker = KeyPair::from_seed([77; 32]);
    let next = Root::new(&[attacker.public()], 1, 2, NOW + 86_400);
    let doc = next.to_json();
    // One stolen old key (threshold 2) plus the attacker's own.
    let sig =
        release_manifest::sign_document(&doc, &[fixture::repo_keys()[0].clone(), attacker.clone()])
            .unwrap();
    std::fs::write(w.repo.join("roots/2.json"), &doc).unwrap();
    std::fs::write(w.repo.join("roots/2.json.sig"), &sig).unwrap();
    resign_channel(&w, &[attacker]);
    assert_refused(&w, &w.agent(Slot::A, "1.0.0"), "unauthorized key rotation");
}

#[test]
fn a_proper_rotation_is_followed() {
    let w = world();
    let new = [KeyPair::from_seed([20; 32])];
    release_repo::rotate_keys(&w.repo, &fixture::repo_keys(), &new, 1, NOW + 86_400 * 90).unwrap();
    let agent = w.agent(Slot::A, "1.0.0");
    let c = agent.check().unwrap();
    assert_eq!(c.root_version, 2);
    assert_eq!(agent.state.trust().unwrap().root.unwrap().version, 2);
}

#[test]
fn a_stalled_server_times_out_with_a_clear_error() {
    let mut w = world();
    w.server.faults.stall.store(true, Ordering::SeqCst);
    w.http.stall_timeout = Duration::from_millis(700);
    w.http.attempts = 2;
    let agent = w.agent(Slot::A, "1.0.0");
    let started = std::time::Instant::now();
    let err = agent.check().unwrap_err().to_string();
    assert!(err.contains("stalled server"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(w.attrs(), fresh());
}

#[test]
fn rollback_is_detected_and_the_version_never_retried() {
    let w = world();
    let _agent = w.updated_agent(Slot::A, "1.0.0");
    // Three failed boots of B: the boot manager used every try, A booted again.
    w.target
        .set_attrs(&[(Slot::B, Attrs::new(2, 0, false))])
        .unwrap();
    let agent = w.agent(Slot::A, "1.0.0");
    let notes = agent.reconcile().unwrap();
    assert!(notes.iter().any(|n| n.contains("rolled back")), "{notes:?}");
    assert!(agent.history().unwrap().failed.contains_key("1.1.0"));
    assert_eq!(w.attrs().1.priority, 0);
    assert!(agent.status().unwrap().pending.is_none());
    // The next check skips it (no update loop, Flatcar #1924)...
    let c = agent.check().unwrap();
    assert!(c.decision.chosen.is_none(), "{:?}", c.decision);
    assert!(c.decision.skipped.iter().any(|s| s.version == "1.1.0"
        && matches!(&s.skip, cairn_updater::plan::Skip::Failed { why } if why.contains("tries"))));
    // ...until a newer release appears.
    w.publish("1.2.0", 4);
    let c = agent.check().unwrap();
    assert_eq!(c.decision.chosen.unwrap().version.as_str(), "1.2.0");
}

#[test]
fn a_good_boot_is_committed_and_manual_rollback_goes_back() {
    let w = world();
    let agent = w.updated_agent(Slot::A, "1.0.0");
    // Before the reboot nothing is settled.
    assert!(agent.reconcile().unwrap().is_empty());
    // B booted and cairn-mark-good marked it.
    w.target
        .set_attrs(&[(Slot::B, Attrs::new(2, 0, true))])
        .unwrap();
    let on_b = w.agent(Slot::B, "1.1.0");
    let notes = on_b.reconcile().unwrap();
    assert!(notes.iter().any(|n| n.contains("is good")), "{notes:?}");
    let h = on_b.history().unwrap();
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == "booted" && e.version == "1.1.0")
    );
    // Manual rollback to A, which booted successfully before.
    let msg = on_b.rollback().unwrap();
    assert!(msg.contains("slot a boots next"), "{msg}");
    assert_eq!(
        w.attrs(),
        (
            Attrs::new(2, gpt_slots::DEFAULT_COMMITTED_TRIES, true),
            Attrs::new(1, 0, true)
        )
    );
}

#[test]
fn rollback_refused_without_a_good_other_slot() {
    let w = world();
    let agent = w.agent(Slot::A, "1.0.0");
    let err = agent.rollback().unwrap_err().to_string();
    assert!(
        err.contains("does not hold an OS that booted successfully"),
        "{err}"
    );
    assert_eq!(w.attrs(), fresh());
}

#[test]
fn waves_hold_a_release_back_until_the_hosts_turn() {
    let w = world();
    fixture::publish(
        &w.repo,
        &w.release("1.2.0", 5),
        Wave::linear(NOW - 100, 1000),
    )
    .unwrap();
    // Seed 0.5: allowed from NOW + 400.
    let mut agent = w.agent(Slot::A, "1.0.0");
    assert_eq!(
        agent
            .check()
            .unwrap()
            .decision
            .chosen
            .unwrap()
            .version
            .as_str(),
        "1.1.0"
    );
    agent.clock = Some(NOW + 400);
    assert_eq!(
        agent
            .check()
            .unwrap()
            .decision
            .chosen
            .unwrap()
            .version
            .as_str(),
        "1.2.0"
    );
    agent.clock = Some(NOW);
    agent.ignore_wave = true;
    assert_eq!(
        agent
            .check()
            .unwrap()
            .decision
            .chosen
            .unwrap()
            .version
            .as_str(),
        "1.2.0"
    );
}

#[test]
fn boot_files_signed_by_an_untrusted_key_are_refused() {
    let w = world();
    // A 1.2.0 whose manifest is signed by the build key but whose boot.sig is not.
    let r = fixture::make_release_with(
        &w.dir.join("build"),
        "1.2.0",
        USR,
        CHUNK,
        6,
        &KeyPair::from_seed([99; 32]),
    )
    .unwrap();
    fixture::publish(&w.repo, &r, Wave::immediate(NOW)).unwrap();
    assert_refused(
        &w,
        &w.agent(Slot::A, "1.0.0"),
        "not signed by any trusted key",
    );
    // No boot file of it is left on the ESP, not even a temporary one.
    let b = w.target.esp_dir(Slot::B);
    let left: Vec<_> = std::fs::read_dir(&b)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_resume_onto_corrupted_bytes_fails_the_read_back_and_starts_over() {
    let w = world();
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.stop_after_chunks = Some(4);
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    assert!(agent.apply(&entry, &mut |_| {}).is_err());
    // Something scribbles over a chunk that progress.json says is verified.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&w.target.slot_b)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"corrupt", 1000).unwrap();
    drop(f);
    let agent = w.agent(Slot::A, "1.0.0");
    let before = w.snapshot(Slot::A);
    let err = agent.apply(&entry, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("read-back check failed"), "{err}");
    assert_eq!(w.attrs(), fresh(), "an unverified slot was made bootable");
    assert_eq!(w.snapshot(Slot::A), before);
    assert_eq!(agent.state.progress().unwrap().unwrap().chunks_verified, 0);
    // The next run rewrites every chunk and succeeds.
    let out = agent.apply(&entry, &mut |_| {}).unwrap();
    assert_eq!(out.chunks_resumed, 0);
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
}

#[test]
fn a_crash_after_the_flip_is_settled_at_the_next_boot() {
    let w = world();
    let agent = w.updated_agent(Slot::A, "1.0.0");
    // Simulate the crash window: the GPT says (2,3,0) but progress still says writing.
    let mut p = agent.state.progress().unwrap().unwrap();
    p.phase = cairn_updater::state::Phase::Writing;
    agent.state.set_progress(Some(&p)).unwrap();
    w.target
        .set_attrs(&[(Slot::B, Attrs::new(2, 0, true))])
        .unwrap();
    let on_b = w.agent(Slot::B, "1.1.0");
    let notes = on_b.reconcile().unwrap();
    assert!(notes.iter().any(|n| n.contains("is good")), "{notes:?}");
    assert!(on_b.state.progress().unwrap().is_none());
}
