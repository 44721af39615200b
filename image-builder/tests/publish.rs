//! `cairn-build publish --wave`, `repo halt` and `repo resume` against a small
//! release in a temporary repository, signed with the development key. Needs
//! no built image.

use std::path::{Path, PathBuf};
use std::process::Command;

use release_manifest::{KeyPair, ManifestFields, ReleaseWriter, Version};
use release_repo::{Channel, Hold, Wave, channel_path, load_root, verify_channel};

const DEV_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../keys/cairn-DEVELOPMENT-ONLY.secret"
);
const START: u64 = 1_800_000_000;

fn cairn_build(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-build"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = cairn_build(args);
    assert!(ok, "{args:?} failed: {err}");
    out
}

fn release(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("rel-{version}"));
    if out.exists() {
        return out;
    }
    let mut w = ReleaseWriter::create(&out).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    w.add_image("usr", &data[..], 4096, None).unwrap();
    w.finish(
        ManifestFields {
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            version: Version::parse(version).unwrap(),
            created: START - 86_400,
            expires: None,
            packages: vec![],
        },
        &[KeyPair::from_seed([9; 32])],
    )
    .unwrap();
    out
}

struct World {
    _tmp: tempfile::TempDir,
    tmp: PathBuf,
    repo: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        ok(&["repo", "init", "--repo", s(&repo), "--key", DEV_KEY]);
        World {
            tmp: tmp.path().to_path_buf(),
            _tmp: tmp,
            repo,
        }
    }

    fn publish(&self, version: &str, wave: &[&str]) -> (bool, String, String) {
        let rel = release(&self.tmp, version);
        let mut args = vec![
            "publish",
            "--release",
            s(&rel),
            "--repo",
            s(&self.repo),
            "--channel",
            "stable",
            "--key",
            DEV_KEY,
        ];
        args.extend(wave);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cairn_build(&args)
    }

    fn files(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.repo.join(channel_path("stable"));
        let sig = PathBuf::from(format!("{}.sig", p.display()));
        (std::fs::read(&p).unwrap(), std::fs::read(sig).unwrap())
    }

    /// The channel as a host verifies it.
    fn channel(&self, highest_seen: u64) -> Result<Channel, release_repo::Error> {
        let (doc, sig) = self.files();
        let root = load_root(&self.repo).unwrap();
        verify_channel(&doc, &sig, "stable", &root, now(), highest_seen)
    }

    fn repo_cmd(&self, cmd: &str, version: &str, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec![
            "repo",
            cmd,
            version,
            "--repo",
            s(&self.repo),
            "--channel",
            "stable",
            "--key",
            DEV_KEY,
        ];
        args.extend(extra);
        cairn_build(&args)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn publish_with_steps_then_halt_and_resume() {
    let w = World::new();
    let (good, out, err) = w.publish(
        "1.1.0",
        &[
            "--wave-start",
            "1800000000",
            "--wave",
            "2h:1%,24h:10%,72h:100%",
        ],
    );
    assert!(good, "{err}");
    assert!(
        out.contains("wave 2h:1%,1d:10%,3d:100% from 1800000000"),
        "{out}"
    );
    let published = w.channel(0).unwrap();
    let e = &published.releases[0];
    assert_eq!(
        e.wave,
        Wave::parse(START, "2h:1%,24h:10%,72h:100%").unwrap()
    );
    assert_eq!(e.halted, None);
    let (pre_doc, pre_sig) = w.files();

    let (good, out, err) = w.repo_cmd("halt", "1.1.0", &["--reason", "boot loop on rev B"]);
    assert!(good, "{err}");
    assert!(out.contains("halted 1.1.0 on channel stable"), "{out}");
    let halted = w.channel(published.version).unwrap();
    assert!(halted.version > published.version);
    let h = halted.releases[0].halted.clone().expect("halted");
    assert_eq!(h.reason, "boot loop on rev B");
    assert!(h.at.abs_diff(now()) < 600);
    assert_eq!(
        halted.releases[0].hold(0.0, u64::MAX),
        Some(Hold::Halted(h))
    );
    // A host that saw the halt refuses the pre-halt channel.
    let root = load_root(&w.repo).unwrap();
    let err = verify_channel(&pre_doc, &pre_sig, "stable", &root, now(), halted.version)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollback attack"), "{err}");

    let (good, out, err) = w.repo_cmd("resume", "1.1.0", &["--restart-wave"]);
    assert!(good, "{err}");
    assert!(out.contains("resumed 1.1.0"), "{out}");
    let resumed = w.channel(halted.version).unwrap();
    let e = &resumed.releases[0];
    assert_eq!(e.halted, None);
    // Restarted: the same steps from about now.
    assert_eq!(e.wave.steps(), published.releases[0].wave.steps());
    assert!(e.wave.start().abs_diff(now()) < 600);
}

#[test]
fn wave_hours_is_the_one_step_wave() {
    let w = World::new();
    let (good, _, err) = w.publish(
        "1.0.0",
        &["--wave-start", "1800000000", "--wave-hours", "24"],
    );
    assert!(good, "{err}");
    let e = &w.channel(0).unwrap().releases[0];
    assert_eq!(e.wave, Wave::linear(START, 86_400));
    // Written the way agents that predate steps read.
    let doc = String::from_utf8(w.files().0).unwrap();
    assert!(doc.contains("\"duration\": 86400"), "{doc}");
    assert!(!doc.contains("steps"), "{doc}");
}

#[test]
fn bad_input_gets_one_line_that_says_what_to_do() {
    let w = World::new();
    let example = "a valid example: --wave \"2h:1%,24h:10%,72h:100%\"";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--wave", "2h:1%,24x:10%,72h:100%"],
            &["\"24x:10%\"", "d, h, m or s", example],
        ),
        (
            &["--wave", "2h:1%,1h:10%,72h:100%"],
            &["\"1h:10%\"", "strictly increase", example],
        ),
        (
            &["--wave", "2h:1%,24h:10%"],
            &["\"24h:10%\"", "not 100%", example],
        ),
        (
            &["--wave", "2h:1,3h:100%"],
            &["\"2h:1\"", "followed by %", example],
        ),
        (&["--wave", ""], &["no steps", example]),
        (
            &["--wave", "24h:100%", "--wave-hours", "24"],
            &["not both", example],
        ),
    ];
    for &(args, needles) in cases {
        let (good, _, err) = w.publish("1.0.0", args);
        assert!(!good, "{args:?} succeeded");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n}: {err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!w.repo.join(channel_path("stable")).exists());

    assert!(w.publish("1.0.0", &[]).0);
    let repo_cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "halt",
            "1.2.0",
            &["--reason", "x"],
            "offers no release 1.2.0",
        ),
        ("halt", "1.0.0", &["--reason", ""], "empty"),
        ("halt", "one", &["--reason", "x"], "version \"one\""),
        ("resume", "1.0.0", &[], "is not halted"),
    ];
    for &(cmd, version, extra, needle) in repo_cases {
        let (good, _, err) = w.repo_cmd(cmd, version, extra);
        assert!(!good, "{cmd} {version} succeeded");
        assert!(err.contains(needle), "{cmd} {version}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd} {version}: {err}");
    }
    assert_eq!(w.channel(0).unwrap().version, 1);
}
