//! Every attack of the DESIGN list against a crafted repository, plus the wave math.

use super::*;
use release_manifest::{ChunkVerifier, ManifestFields, ReleaseWriter};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn key(n: u8) -> KeyPair {
    KeyPair::from_seed([n; 32])
}

fn make_release(dir: &Path, version: &str, fill: u8) -> PathBuf {
    let out = dir.join(format!("rel-{version}"));
    let mut w = ReleaseWriter::create(&out).unwrap();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8 ^ fill).collect();
    w.add_image("usr", &data[..], 4096, None).unwrap();
    w.finish(
        ManifestFields {
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            version: Version::parse(version).unwrap(),
            created: NOW - DAY,
            expires: None,
            packages: vec![],
        },
        &[key(9)],
    )
    .unwrap();
    out
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: Root,
}

/// A repository with root keys 1,2,3 (threshold 2) and releases 1.0.0 and 1.1.0.
fn repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let root = init(&dir, &[key(1), key(2), key(3)], 2, NOW + 365 * DAY).unwrap();
    for (v, fill) in [("1.0.0", 0), ("1.1.0", 7)] {
        let rel = make_release(tmp.path(), v, fill);
        publish(
            &rel,
            &dir,
            "stable",
            &[key(1), key(2)],
            PublishOptions {
                wave: Wave::immediate(NOW - DAY),
                expires: NOW + 7 * DAY,
            },
        )
        .unwrap();
    }
    Repo {
        _tmp: tmp,
        dir,
        root,
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

fn channel_files(r: &Repo) -> (Vec<u8>, Vec<u8>) {
    let p = r.dir.join(channel_path("stable"));
    (read(&p), read(&sig_path(&p)))
}

fn entry(r: &Repo, version: &str) -> ReleaseEntry {
    let (doc, sig) = channel_files(r);
    let ch = verify_channel(&doc, &sig, "stable", &r.root, NOW, 0).unwrap();
    ch.releases
        .into_iter()
        .find(|e| e.version.as_str() == version)
        .unwrap()
}

fn manifest_files(r: &Repo, e: &ReleaseEntry) -> (Vec<u8>, Vec<u8>) {
    let p = r.dir.join(&e.manifest);
    (read(&p), read(&sig_path(&p)))
}

fn release_keys() -> Vec<PublicKey> {
    vec![key(9).public()]
}

fn msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn honest_repo_verifies_end_to_end() {
    let r = repo();
    let (doc, sig) = channel_files(&r);
    let ch = verify_channel(&doc, &sig, "stable", &r.root, NOW, 0).unwrap();
    assert_eq!(ch.version, 2);
    assert_eq!(ch.releases.len(), 2);
    let e = entry(&r, "1.1.0");
    let (m, s) = manifest_files(&r, &e);
    let manifest = verify_manifest(&m, &s, &e, &release_keys(), 1).unwrap();
    // Chunks resolve against the repository root.
    for c in &manifest.image("usr").unwrap().chunks {
        ChunkVerifier::new(c)
            .verify(&read(&r.dir.join(&c.file)))
            .unwrap();
    }
}

#[test]
fn tampered_chunk_is_refused() {
    let r = repo();
    let e = entry(&r, "1.1.0");
    let (m, s) = manifest_files(&r, &e);
    let manifest = verify_manifest(&m, &s, &e, &release_keys(), 1).unwrap();
    let c = &manifest.image("usr").unwrap().chunks[0];
    let mut bytes = read(&r.dir.join(&c.file));
    bytes[5] ^= 1;
    let err = ChunkVerifier::new(c)
        .verify(&bytes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("zsha256"), "{err}");
}

#[test]
fn tampered_manifest_is_refused() {
    let r = repo();
    let e = entry(&r, "1.1.0");
    let (mut m, s) = manifest_files(&r, &e);
    let at = m.len() / 2;
    m[at] ^= 0x20;
    let err = msg(verify_manifest(&m, &s, &e, &release_keys(), 1));
    assert!(err.contains("does not match the channel's pin"), "{err}");
}

#[test]
fn manifest_signed_by_an_untrusted_build_key_is_refused() {
    let r = repo();
    let e = entry(&r, "1.1.0");
    let (m, s) = manifest_files(&r, &e);
    let err = msg(verify_manifest(&m, &s, &e, &[key(8).public()], 1));
    assert!(err.contains("no signature by a trusted key"), "{err}");
}

#[test]
fn wrong_key_is_refused() {
    let r = repo();
    let (doc, _) = channel_files(&r);
    let forged = release_manifest::sign_document(&doc, &[key(5), key(6)]).unwrap();
    let err = msg(verify_channel(&doc, &forged, "stable", &r.root, NOW, 0));
    assert!(err.contains("no signature by a trusted key"), "{err}");
    // A modified document with the old (valid-looking) signatures.
    let (mut doc2, sig) = channel_files(&r);
    let at = doc2.len() / 2;
    doc2[at] ^= 1;
    let err = msg(verify_channel(&doc2, &sig, "stable", &r.root, NOW, 0));
    assert!(err.contains("do not match the document"), "{err}");
}

#[test]
fn too_few_signatures_are_refused() {
    let r = repo();
    let (doc, _) = channel_files(&r);
    let one = release_manifest::sign_document(&doc, &[key(1)]).unwrap();
    let err = msg(verify_channel(&doc, &one, "stable", &r.root, NOW, 0));
    assert!(err.contains("only 1 of the 2 required"), "{err}");
    // A key signing twice still counts once.
    let twice = format!(
        "[{0},{0}]",
        serde_json::to_string(&key(1).sign(&doc)).unwrap()
    );
    let err = msg(verify_channel(
        &doc,
        twice.as_bytes(),
        "stable",
        &r.root,
        NOW,
        0,
    ));
    assert!(err.contains("only 1 of the 2 required"), "{err}");
    // And publish refuses to write what hosts would refuse.
    let tmp = tempfile::tempdir().unwrap();
    let rel = make_release(tmp.path(), "1.2.0", 3);
    let opts = PublishOptions {
        wave: Wave::immediate(NOW),
        expires: NOW + DAY,
    };
    let err = msg(publish(&rel, &r.dir, "stable", &[key(1)], opts));
    assert!(err.contains("only 1 of the 2 required"), "{err}");
}

#[test]
fn expired_metadata_is_refused() {
    let r = repo();
    let (doc, sig) = channel_files(&r);
    let err = msg(verify_channel(
        &doc,
        &sig,
        "stable",
        &r.root,
        NOW + 7 * DAY,
        0,
    ));
    assert!(err.contains("expired"), "{err}");
    let err = msg(verify_root_chain(&r.root, &[], NOW + 400 * DAY));
    assert!(err.contains("root metadata version 1 expired"), "{err}");
}

#[test]
fn replayed_older_channel_is_refused() {
    let r = repo();
    let (doc, sig) = channel_files(&r);
    // The client has already seen version 3 (say); the mirror serves version 2.
    let err = msg(verify_channel(&doc, &sig, "stable", &r.root, NOW, 3));
    assert!(err.contains("rollback attack"), "{err}");
    // The same version again is fine (nothing changed).
    verify_channel(&doc, &sig, "stable", &r.root, NOW, 2).unwrap();
}

#[test]
fn older_release_is_a_downgrade() {
    let v = |s| Version::parse(s).unwrap();
    let err = msg(check_not_downgrade(&v("1.0.0"), &v("1.1.0")));
    assert!(err.contains("downgrade refused"), "{err}");
    assert!(check_not_downgrade(&v("1.1.0"), &v("1.1.0")).is_err());
    check_not_downgrade(&v("1.1.1"), &v("1.1.0")).unwrap();
}

#[test]
fn another_channels_file_is_refused() {
    let r = repo();
    let (doc, sig) = channel_files(&r);
    let err = msg(verify_channel(&doc, &sig, "beta", &r.root, NOW, 0));
    assert!(err.contains("expected \"beta\""), "{err}");
}

#[test]
fn mix_and_match_is_refused() {
    let r = repo();
    let old = entry(&r, "1.0.0");
    let new = entry(&r, "1.1.0");
    // 1.0.0's manifest served where the channel pins 1.1.0's.
    let (m_old, s_old) = manifest_files(&r, &old);
    let err = msg(verify_manifest(&m_old, &s_old, &new, &release_keys(), 1));
    assert!(
        err.contains("truncated or replaced") || err.contains("channel's pin"),
        "{err}"
    );
    // 1.1.0's manifest with 1.0.0's chunks: content addressing refuses every chunk.
    let (m_new, s_new) = manifest_files(&r, &new);
    let mn = verify_manifest(&m_new, &s_new, &new, &release_keys(), 1).unwrap();
    let (m_o, s_o) = manifest_files(&r, &old);
    let mo = verify_manifest(&m_o, &s_o, &old, &release_keys(), 1).unwrap();
    let c_new = &mn.image("usr").unwrap().chunks[0];
    let c_old = &mo.image("usr").unwrap().chunks[0];
    assert_ne!(c_new.zsha256, c_old.zsha256);
    let err = ChunkVerifier::new(c_new)
        .verify(&read(&r.dir.join(&c_old.file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("compressed bytes"), "{err}");
    // A channel entry whose pin is right but whose version is not the manifest's.
    let mut lying = new.clone();
    lying.version = Version::parse("1.1.0-rc1").unwrap();
    let err = msg(verify_manifest(&m_new, &s_new, &lying, &release_keys(), 1));
    assert!(err.contains("mix-and-match"), "{err}");
}

#[test]
fn endless_manifest_is_refused() {
    let r = repo();
    let e = entry(&r, "1.1.0");
    let (mut m, s) = manifest_files(&r, &e);
    m.extend(std::iter::repeat_n(b' ', 1 << 20));
    let err = msg(verify_manifest(&m, &s, &e, &release_keys(), 1));
    assert!(err.contains("endless data"), "{err}");
}

#[test]
fn endless_metadata_is_refused() {
    let r = repo();
    let big = vec![b' '; MAX_METADATA as usize + 1];
    let err = msg(verify_channel(&big, b"[]", "stable", &r.root, NOW, 0));
    assert!(err.contains("over"), "{err}");
}

fn chain(r: &Repo, from: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (from..)
        .map(|v| r.dir.join(root_path(v)))
        .take_while(|p| p.exists())
        .map(|p| (read(&p), read(&sig_path(&p))))
        .collect()
}

#[test]
fn rotation_by_the_old_threshold_is_followed() {
    let r = repo();
    let new = [key(11), key(12)];
    rotate_keys(&r.dir, &[key(2), key(3)], &new, 2, NOW + 365 * DAY).unwrap();
    let latest = verify_root_chain(&r.root, &chain(&r, 2), NOW).unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.keys.len(), 2);
    // Channels were re-signed: the old root no longer accepts them, the new one does.
    let (doc, sig) = channel_files(&r);
    verify_channel(&doc, &sig, "stable", &latest, NOW, 0).unwrap();
    assert!(verify_channel(&doc, &sig, "stable", &r.root, NOW, 0).is_err());
    // A second rotation: the host walks 1 -> 2 -> 3.
    rotate_keys(&r.dir, &new, &[key(13)], 1, NOW + 365 * DAY).unwrap();
    let latest = verify_root_chain(&r.root, &chain(&r, 2), NOW).unwrap();
    assert_eq!(latest.version, 3);
}

#[test]
fn rotation_without_the_old_threshold_is_refused() {
    let r = repo();
    // The publisher-side check refuses it...
    let err = msg(rotate_keys(&r.dir, &[key(1)], &[key(11)], 1, NOW + DAY));
    assert!(err.contains("unauthorized key rotation"), "{err}");
    // ...and a hand-crafted one (one old key plus the attacker's) is refused by clients.
    let next = Root::new(&[key(11).public()], 1, 2, NOW + DAY);
    let doc = next.to_json();
    let sig = release_manifest::sign_document(&doc, &[key(1), key(11)]).unwrap();
    let err = msg(verify_root_chain(&r.root, &[(doc, sig)], NOW));
    assert!(err.contains("unauthorized key rotation"), "{err}");
    assert!(err.contains("only 1 of the 2 required"), "{err}");
}

#[test]
fn rotation_must_be_signed_by_the_new_keys_and_be_contiguous() {
    let r = repo();
    let next = Root::new(&[key(11).public()], 1, 2, NOW + DAY);
    let doc = next.to_json();
    let sig = release_manifest::sign_document(&doc, &[key(1), key(2)]).unwrap();
    let err = msg(verify_root_chain(&r.root, &[(doc, sig)], NOW));
    assert!(err.contains("not signed by its own keys"), "{err}");
    let skip = Root::new(&[key(11).public()], 1, 3, NOW + DAY);
    let doc = skip.to_json();
    let sig = release_manifest::sign_document(&doc, &[key(1), key(2), key(11)]).unwrap();
    let err = msg(verify_root_chain(&r.root, &[(doc, sig)], NOW));
    assert!(err.contains("expected root version 2, found 3"), "{err}");
}

#[test]
fn init_refuses_bad_threshold_and_existing_repo() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(init(tmp.path(), &[key(1)], 2, NOW).is_err());
    assert!(init(tmp.path(), &[key(1)], 0, NOW).is_err());
    init(tmp.path(), &[key(1)], 1, NOW).unwrap();
    let err = msg(init(tmp.path(), &[key(1)], 1, NOW));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn republishing_replaces_the_entry_and_bumps_the_version() {
    let r = repo();
    let tmp = tempfile::tempdir().unwrap();
    let rel = make_release(tmp.path(), "1.1.0", 7);
    let ch = publish(
        &rel,
        &r.dir,
        "stable",
        &[key(2), key(3)],
        PublishOptions {
            wave: Wave::linear(NOW, DAY),
            expires: NOW + DAY,
        },
    )
    .unwrap();
    assert_eq!(ch.version, 3);
    assert_eq!(ch.releases.len(), 2);
    assert_eq!(ch.releases[1].wave.duration(), DAY);
}

#[test]
fn wave_table() {
    let w = Wave::linear(1000, 100);
    // (seed, now, reached)
    let rows = [
        (0.0, 999, false),
        (0.0, 1000, true),
        (0.5, 1049, false),
        (0.5, 1050, true),
        (0.999, 1099, true),
        (0.9999, 1099, true),
        (1.0, 1100, true), // clamped: never later than the end
        (-3.0, 1000, true),
        (f64::NAN, 1000, true),
        (0.25, 1024, false),
        (0.25, 1025, true),
    ];
    for (seed, now, reached) in rows {
        assert_eq!(wave_reached(w, seed, now), reached, "seed {seed} now {now}");
    }
    assert_eq!(install_time(Wave::immediate(5), 0.7), 5);
    assert_eq!(install_time(Wave::linear(u64::MAX - 1, 10), 0.9), u64::MAX);
}

#[test]
fn metadata_paths_cannot_escape() {
    for bad in ["/etc/passwd", "../x", "a/../../b", "a//b", "", "a/./b"] {
        assert!(check_relative_path(bad).is_err(), "{bad}");
    }
    check_relative_path("releases/b/1.0/manifest.json").unwrap();
}

// ---------------------------------------------------------------- halt / resume

fn halt_opts(now: u64) -> HaltOptions<'static> {
    HaltOptions {
        board: None,
        now,
        expires: now + 7 * DAY,
    }
}

fn resume_opts(now: u64) -> ResumeOptions<'static> {
    ResumeOptions {
        board: None,
        restart_wave_at: None,
        expires: now + 7 * DAY,
    }
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

#[test]
fn halt_and_resume_are_signed_channel_versions() {
    let r = repo();
    let keys = [key(1), key(2)];
    let ch = halt(
        &r.dir,
        "stable",
        &v("1.1.0"),
        "boot loops on rev B boards",
        &keys,
        halt_opts(NOW),
    )
    .unwrap();
    assert_eq!(ch.version, 3);
    // What a host sees: signed by the root threshold, the entry marked.
    let e = entry(&r, "1.1.0");
    let want = Halt {
        reason: "boot loops on rev B boards".into(),
        at: NOW,
    };
    assert_eq!(e.halted, Some(want.clone()));
    assert_eq!(e.hold(0.0, NOW + DAY), Some(Hold::Halted(want)));
    // Only that release.
    assert_eq!(entry(&r, "1.0.0").halted, None);
    assert_eq!(entry(&r, "1.0.0").hold(0.0, NOW), None);
    let (doc, _) = channel_files(&r);
    let text = String::from_utf8(doc).unwrap();
    assert_eq!(text.matches("\"halted\"").count(), 1, "{text}");

    let ch = resume(
        &r.dir,
        "stable",
        &v("1.1.0"),
        &[key(2), key(3)],
        resume_opts(NOW + 60),
    )
    .unwrap();
    assert_eq!(ch.version, 4);
    let e = entry(&r, "1.1.0");
    assert_eq!(e.halted, None);
    // The wave kept its start (a day ago): everyone may install again.
    assert_eq!(e.hold(0.99, NOW + 60), None);
    assert_eq!(e.wave, Wave::immediate(NOW - DAY));
    let (doc, _) = channel_files(&r);
    assert!(!String::from_utf8(doc).unwrap().contains("halted"));
}

#[test]
fn the_pre_halt_channel_cannot_be_replayed() {
    let r = repo();
    let keys = [key(1), key(2)];
    let (before_doc, before_sig) = channel_files(&r);
    let pre = verify_channel(&before_doc, &before_sig, "stable", &r.root, NOW, 0).unwrap();
    halt(
        &r.dir,
        "stable",
        &v("1.1.0"),
        "bad kernel",
        &keys,
        halt_opts(NOW),
    )
    .unwrap();
    let (halted_doc, halted_sig) = channel_files(&r);
    // A host checks the halted channel and persists its version as the highest seen...
    let seen = verify_channel(
        &halted_doc,
        &halted_sig,
        "stable",
        &r.root,
        NOW,
        pre.version,
    )
    .unwrap();
    assert!(seen.version > pre.version);
    // ...then a mirror (or an attacker) serves the validly signed pre-halt channel.
    let err = msg(verify_channel(
        &before_doc,
        &before_sig,
        "stable",
        &r.root,
        NOW,
        seen.version,
    ));
    assert!(err.contains("rollback attack"), "{err}");
    // Resuming moves forward too; the halted channel is then the stale one.
    resume(&r.dir, "stable", &v("1.1.0"), &keys, resume_opts(NOW)).unwrap();
    let (doc, sig) = channel_files(&r);
    let resumed = verify_channel(&doc, &sig, "stable", &r.root, NOW, seen.version).unwrap();
    assert!(resumed.version > seen.version);
    let err = msg(verify_channel(
        &halted_doc,
        &halted_sig,
        "stable",
        &r.root,
        NOW,
        resumed.version,
    ));
    assert!(err.contains("rollback attack"), "{err}");
    // The halt also refreshed the expiry: a halt is signed like a publish.
    assert_eq!(seen.expires, NOW + 7 * DAY);
}

#[test]
fn halt_and_resume_refusals() {
    let r = repo();
    let keys = [key(1), key(2)];
    let (doc0, _) = channel_files(&r);
    let refusals = [
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.2.0"),
                "x",
                &keys,
                halt_opts(NOW),
            )),
            "offers no release 1.2.0",
        ),
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.1.0"),
                "x",
                &keys,
                HaltOptions {
                    board: Some("rpi4"),
                    ..halt_opts(NOW)
                },
            )),
            "offers no release 1.1.0 for board rpi4",
        ),
        (
            msg(halt(
                &r.dir,
                "beta",
                &v("1.1.0"),
                "x",
                &keys,
                halt_opts(NOW),
            )),
            "has no channel \"beta\"",
        ),
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.1.0"),
                " ",
                &keys,
                halt_opts(NOW),
            )),
            "empty",
        ),
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.1.0"),
                "a\nb",
                &keys,
                halt_opts(NOW),
            )),
            "control characters",
        ),
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.1.0"),
                &"x".repeat(1025),
                &keys,
                halt_opts(NOW),
            )),
            "longer than 1024 bytes",
        ),
        // Keys below the root threshold: hosts would refuse it, so nothing is written.
        (
            msg(halt(
                &r.dir,
                "stable",
                &v("1.1.0"),
                "x",
                &[key(1)],
                halt_opts(NOW),
            )),
            "only 1 of the 2 required",
        ),
        (
            msg(resume(
                &r.dir,
                "stable",
                &v("1.1.0"),
                &keys,
                resume_opts(NOW),
            )),
            "is not halted",
        ),
    ];
    for (err, want) in refusals {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(
        channel_files(&r).0,
        doc0,
        "a refused halt changed the channel"
    );
    halt(
        &r.dir,
        "stable",
        &v("1.1.0"),
        "first",
        &keys,
        halt_opts(NOW),
    )
    .unwrap();
    let err = msg(halt(
        &r.dir,
        "stable",
        &v("1.1.0"),
        "second",
        &keys,
        halt_opts(NOW),
    ));
    assert!(
        err.contains("already halted") && err.contains("first"),
        "{err}"
    );
    // A channel file changed on disk is not re-signed.
    let p = r.dir.join(channel_path("stable"));
    let tampered = String::from_utf8(read(&p))
        .unwrap()
        .replace("first", "FIRST");
    fs::write(&p, tampered).unwrap();
    let err = msg(resume(
        &r.dir,
        "stable",
        &v("1.1.0"),
        &keys,
        resume_opts(NOW),
    ));
    assert!(err.contains("signature check failed"), "{err}");
}

#[test]
fn republishing_keeps_a_halt_and_resume_can_restart_the_wave() {
    let r = repo();
    let keys = [key(1), key(2)];
    halt(&r.dir, "stable", &v("1.1.0"), "bad", &keys, halt_opts(NOW)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rel = make_release(tmp.path(), "1.1.0", 7);
    let steps = Wave::parse(NOW, "2h:1%,24h:10%,72h:100%").unwrap();
    let opts = PublishOptions {
        wave: steps,
        expires: NOW + DAY,
    };
    let ch = publish(&rel, &r.dir, "stable", &keys, opts).unwrap();
    assert_eq!(ch.version, 4);
    let e = entry(&r, "1.1.0");
    assert_eq!(e.wave, steps);
    assert!(e.halted.is_some(), "republishing lifted the halt");
    let later = NOW + 10 * DAY;
    resume(
        &r.dir,
        "stable",
        &v("1.1.0"),
        &keys,
        ResumeOptions {
            restart_wave_at: Some(later),
            ..resume_opts(NOW)
        },
    )
    .unwrap();
    let e = entry(&r, "1.1.0");
    assert_eq!(e.wave, steps.with_start(later));
    assert_eq!(e.hold(0.0, later), None);
    assert_eq!(
        e.hold(0.5, later),
        Some(Hold::WaveNotReached {
            at: later + 24 * 3600 + 76_800
        })
    );
    assert_eq!(e.turn_at(0.5), later + 24 * 3600 + 76_800);
}

fn two_board_channel() -> Channel {
    let e = |board: &str, version: &str| ReleaseEntry {
        board: board.into(),
        arch: "x86_64".into(),
        version: v(version),
        manifest: format!("releases/{board}/{version}/manifest.json"),
        manifest_sha256: Hex32([1; 32]),
        manifest_size: 10,
        wave: Wave::linear(NOW, DAY),
        halted: None,
    };
    Channel {
        kind: CHANNEL_TYPE.into(),
        channel: "stable".into(),
        version: 7,
        expires: NOW + DAY,
        releases: vec![e("a", "2.0.0"), e("b", "2.0.0"), e("a", "2.1.0")],
    }
}

#[test]
fn halting_one_board_or_all() {
    let halt = |reason: &str| Halt {
        reason: reason.into(),
        at: NOW,
    };
    let halted =
        |c: &Channel| -> Vec<bool> { c.releases.iter().map(|r| r.halted.is_some()).collect() };
    let mut c = two_board_channel();
    c.halt_release(&v("2.0.0"), Some("b"), halt("b only"))
        .unwrap();
    assert_eq!(halted(&c), [false, true, false]);
    // Halting the version everywhere: refused while one board's entry is halted.
    assert!(c.halt_release(&v("2.0.0"), None, halt("all")).is_err());
    c.resume_release(&v("2.0.0"), None, None).unwrap();
    assert_eq!(halted(&c), [false, false, false]);
    // Versions compare as versions: 2.0 is 2.0.0.
    c.halt_release(&v("2.0"), None, halt("all")).unwrap();
    assert_eq!(halted(&c), [true, true, false]);
    // The pure edits leave the version to the signing step.
    assert_eq!(c.version, 7);
}

/// A channel exactly as the code before multi-step waves and halts wrote it.
const OLD_CHANNEL: &str = r#"{
  "type": "cairn-channel",
  "channel": "stable",
  "version": 9,
  "expires": 1800604800,
  "releases": [
    {
      "board": "qemu-x86_64",
      "arch": "x86_64",
      "version": "1.0.0",
      "manifest": "releases/qemu-x86_64/1.0.0/manifest.json",
      "manifest_sha256": "0101010101010101010101010101010101010101010101010101010101010101",
      "manifest_size": 1234,
      "wave": {
        "start": 1800000000,
        "duration": 0
      }
    },
    {
      "board": "qemu-x86_64",
      "arch": "x86_64",
      "version": "1.1.0",
      "manifest": "releases/qemu-x86_64/1.1.0/manifest.json",
      "manifest_sha256": "0202020202020202020202020202020202020202020202020202020202020202",
      "manifest_size": 1235,
      "wave": {
        "start": 1800000000,
        "duration": 86400
      }
    }
  ]
}
"#;

#[test]
fn channel_json_old_and_new() {
    let old = Channel::from_json(OLD_CHANNEL.as_bytes()).unwrap();
    assert_eq!(old.releases[0].wave, Wave::immediate(NOW));
    assert_eq!(old.releases[1].wave, Wave::linear(NOW, DAY));
    assert_eq!(old.releases[1].halted, None);
    // The same meaning: seed s at start + floor(s * duration).
    assert_eq!(install_time(old.releases[1].wave, 0.5), NOW + DAY / 2);
    // Written back byte for byte: channels without steps or halts stay readable
    // by agents that predate them.
    assert_eq!(String::from_utf8(old.to_json()).unwrap(), OLD_CHANNEL);

    let mut new = old.clone();
    new.releases[1].wave = Wave::parse(NOW, "2h:1%,24h:10%,72h:100%").unwrap();
    new.releases[1].halted = Some(Halt {
        reason: "regression in 1.1.0".into(),
        at: NOW + 5,
    });
    let json = new.to_json();
    let text = String::from_utf8(json.clone()).unwrap();
    for part in [
        r#""steps": ["#,
        r#""after_seconds": 7200,"#,
        r#""percent": 1.0"#,
        r#""halted": {"#,
        r#""reason": "regression in 1.1.0","#,
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert_eq!(Channel::from_json(&json).unwrap(), new);

    // Refused on parse: invalid steps, a halt with unknown fields or a bad reason.
    for (from, to, want) in [
        (r#""percent": 100.0"#, r#""percent": 99.0"#, "not 100%"),
        (
            r#""at": 1800000005"#,
            r#""at": 1800000005, "by": "x""#,
            "unknown field",
        ),
        ("regression in 1.1.0", r"line\nbreak", "control characters"),
        (r#""duration": 0"#, r#""duration": 0, "steps": []"#, "both"),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        let err = msg(Channel::from_json(bad.as_bytes()));
        assert!(err.contains(want), "{want}: {err}");
    }
}
