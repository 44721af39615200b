//! Builds real images with cairn-build and checks them with the tools an
//! operator would use: sgdisk, cgpt, sfdisk, veritysetup, fsck.erofs,
//! systemd-dissect. Needs root, the host tools and the compiled boot manager
//! and init (`cargo xtask test` provides all three); without them the tests say
//! so and pass, unless CAIRN_REQUIRE_IMAGE_TESTS=1 (set by `cargo xtask test`)
//! turns that into a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// A read-only loop mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, at: &Path, fstype: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let (ok, text) = run(Command::new("mount")
            .args(["-o", "ro,loop", "-t", fstype])
            .arg(img)
            .arg(at));
        assert!(ok, "mount {}: {text}", img.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

struct Built {
    dir: PathBuf,
    info: Value,
}

impl Built {
    fn disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }

    /// (offset, size) in bytes of partition `number`.
    fn part(&self, number: u64) -> (u64, u64) {
        let sector = self.info["sector_size"].as_u64().unwrap();
        let p = self.info["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["number"].as_u64() == Some(number))
            .unwrap();
        let first = p["first_lba"].as_u64().unwrap();
        let last = p["last_lba"].as_u64().unwrap();
        (first * sector, (last - first + 1) * sector)
    }

    fn usr(&self, key: &str) -> u64 {
        self.info["usr_a"][key].as_u64().unwrap()
    }

    /// USR-A's filesystem plus hash tree, as a file of its own.
    fn extract_usr_a(&self, to: &Path) {
        let (offset, _) = self.part(2);
        let len = self.usr("hash_offset") + self.usr("hash_size");
        copy_range(&self.disk(), offset, len, to);
    }
}

fn copy_range(src: &Path, offset: u64, len: u64, to: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(src).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    std::fs::write(to, buf).unwrap();
}

fn required() -> bool {
    std::env::var_os("CAIRN_REQUIRE_IMAGE_TESTS").is_some_and(|v| v == "1")
}

fn skip(why: &str) -> Option<Built> {
    if required() {
        panic!("image tests cannot run: {why}");
    }
    eprintln!("SKIPPED image tests: {why} (cargo xtask test runs them)");
    None
}

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image-tests")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A loop device over a new sparse file of `bytes` in `d`, standing for a
/// disk larger than the image.
fn loop_disk(d: &Path, bytes: u64) -> host_tools::LoopDevice {
    let backing = d.join("loop-backing");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    host_tools::LoopDevice::attach(&backing)
}

/// Every file below `dir`, at any depth (folders themselves left out).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Builds `board` into a fresh folder named `name`.
fn build(board: &str, name: &str) -> Option<Built> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if !is_root {
        return skip("not running as root");
    }
    let dir = tmp().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-build"))
        .args(["build", "--dev-key", "--board", board, "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("not found (looked in")
            || stderr.contains("missing host tools")
            || stderr.contains("binfmt_misc")
        {
            return skip(stderr.lines().last().unwrap_or_default());
        }
        panic!("cairn-build failed for {board}:\n{stderr}");
    }
    assert!(
        stderr.contains("DEVELOPMENT key"),
        "a dev-key build must say so loudly:\n{stderr}"
    );
    let info: Value =
        serde_json::from_slice(&std::fs::read(dir.join("build-info.json")).unwrap()).unwrap();
    Some(Built { dir, info })
}

fn x86() -> Option<&'static Built> {
    static B: OnceLock<Option<Built>> = OnceLock::new();
    B.get_or_init(|| build("qemu-x86_64", "x86-a")).as_ref()
}

#[test]
fn gpt_is_clean_and_readable_by_standard_tools() {
    let Some(b) = x86() else { return };
    let disk = b.disk();
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(
        ok && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );

    // cgpt reads the ChromeOS-compatible bits we wrote: A (1,K,1) with the
    // board's K (3), armed like every committed slot; B (0,0,0).
    for (part, want) in [(2, ("1", "3", "1")), (3, ("0", "0", "0"))] {
        let field = |flag: &str| {
            let (ok, text) = run(Command::new("cgpt")
                .args(["show", "-i", &part.to_string(), flag])
                .arg(&disk));
            assert!(ok, "cgpt show: {text}");
            text.trim().to_string()
        };
        assert_eq!(
            (field("-P"), field("-T"), field("-S")),
            (want.0.into(), want.1.into(), want.2.into()),
            "partition {part}"
        );
    }

    let (ok, text) = run(Command::new("sfdisk").arg("--json").arg(&disk));
    assert!(ok, "{text}");
    let table: Value = serde_json::from_str(&text).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let got: Vec<(String, String)> = parts
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["type"].as_str().unwrap().to_lowercase(),
            )
        })
        .collect();
    let want = [
        ("ESP", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
        ("USR-A", "8484680c-9521-48c6-9c11-b0720656f69e"),
        ("USR-B", "8484680c-9521-48c6-9c11-b0720656f69e"),
        ("OEM", "0fc63daf-8483-4772-8e79-3d69d8477de4"),
        ("ROOT", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    for p in parts {
        assert_eq!(
            p["start"].as_u64().unwrap() % 2048,
            0,
            "1 MiB alignment: {p}"
        );
    }
}

#[test]
fn usr_a_verity_verifies_and_a_flipped_byte_fails() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir().unwrap();
    let usr = dir.path().join("usr-a.img");
    b.extract_usr_a(&usr);
    let root_hash = b.info["usr_a"]["root_hash"].as_str().unwrap().to_string();
    let verify = |img: &Path| {
        run(Command::new("veritysetup")
            .arg("verify")
            .arg(img)
            .arg(img)
            .arg(&root_hash)
            .arg(format!("--hash-offset={}", b.usr("hash_offset"))))
    };
    let (ok, text) = verify(&usr);
    assert!(ok, "veritysetup verify refused USR-A: {text}");

    let mut bytes = std::fs::read(&usr).unwrap();
    bytes[4096 * 7 + 123] ^= 0x01;
    std::fs::write(&usr, bytes).unwrap();
    let (ok, _) = verify(&usr);
    assert!(!ok, "veritysetup accepted a flipped data byte");
}

#[test]
fn erofs_is_clean_and_holds_the_rootfs_usr() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("usr.erofs");
    copy_range(&b.disk(), b.part(2).0, b.usr("data_size"), &img);
    let (ok, text) = run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", dir.path().join("x").display()))
        .arg(&img));
    assert!(ok, "fsck.erofs: {text}");
    // fsck.erofs --extract drops setuid bits when it restores owners, so the
    // comparison reads the filesystem through the kernel instead.
    let tree = dir.path().join("image");
    let _mount = Mount::new(&img, &tree, "erofs");

    // The rootfs tarball the build used, from the cache.
    let key = b.info["inputs"]["rootfs_key"].as_str().unwrap();
    let cache = cairn_build::cache_dir();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let (ok, text) = run(Command::new("tar")
        .args(["-x", "-p", "--numeric-owner", "-f"])
        .arg(cache.join("rootfs").join(format!("{key}.tar")))
        .arg("-C")
        .arg(&rootfs)
        .arg("./usr"));
    assert!(ok, "{text}");

    // Every file of the Debian /usr is in the image, byte for byte, with its
    // mode, except what the builder deliberately changes: modules, os-release,
    // the factory /etc, and the files systemd-units/usr installs over the
    // packages' own (e.g. a unit whose ordering Cairn changes).
    let mut changed: Vec<String> = ["lib/modules/", "lib/os-release", "share/factory/"]
        .map(String::from)
        .to_vec();
    let units_usr = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd-units/usr");
    for path in files_under(&units_usr) {
        let rel = path.strip_prefix(&units_usr).unwrap();
        changed.push(rel.to_string_lossy().into_owned());
    }
    let mut checked = 0;
    let mut stack = vec![rootfs.join("usr")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(rootfs.join("usr"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if changed.iter().any(|c| rel.starts_with(c.as_str())) {
                continue;
            }
            let theirs = tree.join(&rel);
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                assert_eq!(
                    std::fs::read_link(&path).unwrap(),
                    std::fs::read_link(&theirs).unwrap(),
                    "{rel}"
                );
            } else if ft.is_file() {
                use std::os::unix::fs::MetadataExt;
                let (m1, m2) = (
                    e.metadata().unwrap(),
                    std::fs::symlink_metadata(&theirs).unwrap(),
                );
                assert_eq!(m1.mode(), m2.mode(), "mode of /usr/{rel}");
                assert!(
                    std::fs::read(&path).unwrap() == std::fs::read(&theirs).unwrap(),
                    "content of /usr/{rel}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 3000, "only {checked} files compared");
    assert!(tree.join("lib/cairn/keys.json").is_file());
    // K for cairn-mark-good and cairnctl rollback: the board's boot_tries.
    assert_eq!(
        std::fs::read_to_string(tree.join("lib/cairn/boot-tries")).unwrap(),
        "3\n"
    );
    assert!(
        tree.join("share/factory/etc/passwd").is_file(),
        "the factory /etc ships in /usr"
    );
    assert!(
        !tree
            .join("share/factory/etc/ssh/ssh_host_ed25519_key")
            .exists(),
        "no shared host keys"
    );
}

#[test]
fn release_manifest_verifies_and_any_changed_byte_fails() {
    let Some(b) = x86() else { return };
    let release = b.dir.join("release");
    let doc = std::fs::read(release.join("manifest.json")).unwrap();
    let sigs = std::fs::read(release.join("manifest.json.sig")).unwrap();
    let key_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/cairn-DEVELOPMENT-ONLY.public");
    let key = release_manifest::PublicKey::load_public(key_file).unwrap();
    release_manifest::verify_signed(&doc, &sigs, &[key], 1).unwrap();
    let manifest = release_manifest::Manifest::from_json(&doc).unwrap();
    manifest.check().unwrap();
    let usr = manifest.image("usr").unwrap();
    let verity = usr.verity.as_ref().unwrap();
    assert_eq!(
        verity.root_hash.to_string(),
        b.info["usr_a"]["root_hash"].as_str().unwrap()
    );
    for name in ["vmlinuz", "initrd", "cmdline", "boot.sig"] {
        assert!(manifest.image(name).is_ok(), "{name} is in the release");
    }
    assert!(
        manifest
            .packages
            .iter()
            .any(|p| p.starts_with("systemd:") || p.starts_with("systemd=")),
        "lockfile in the manifest"
    );
    for at in [0, doc.len() / 3, doc.len() / 2, doc.len() - 2] {
        let mut bad = doc.clone();
        bad[at] ^= 0x20;
        assert!(
            release_manifest::verify_signed(&bad, &sigs, &[key], 1).is_err(),
            "changed byte {at} accepted"
        );
    }
    // The payload reassembles into exactly USR-A.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("usr");
    let mut f = std::fs::File::create(&out).unwrap();
    release_manifest::extract_image(&release, &manifest, "usr", &mut f).unwrap();
    let part = dir.path().join("usr-a");
    b.extract_usr_a(&part);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&part).unwrap(),
        "release usr != USR-A"
    );
}

#[test]
fn builds_are_reproducible() {
    let Some(a) = x86() else { return };
    let Some(b) = build("qemu-x86_64", "x86-b") else {
        return;
    };
    assert_eq!(
        a.info["outputs"], b.info["outputs"],
        "output hashes differ between two builds"
    );
    let list = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.join("release/chunks"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert!(list(&a.dir) == list(&b.dir), "release chunks differ");
    let (ok, text) = run(Command::new("cmp").arg(a.disk()).arg(b.disk()));
    assert!(ok, "disk.raw differs: {text}");
}

#[test]
fn systemd_dissect_finds_the_root_partition() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (ok, text) = run(Command::new("systemd-dissect")
        .args(["--mount", "--read-only"])
        .arg(b.disk())
        .arg(&mnt));
    // This host kernel may lack vfat, which makes the ESP (and so the whole
    // metadata probe) fail; ROOT must still be recognised by its DPS type.
    let mounted = std::fs::read_link(mnt.join("bin")).ok();
    let _ = Command::new("systemd-dissect")
        .arg("--umount")
        .arg(&mnt)
        .status();
    assert!(ok || mounted.is_some(), "systemd-dissect: {text}");
    assert_eq!(
        mounted.as_deref(),
        Some(Path::new("usr/bin")),
        "ROOT carries the merged-/usr links"
    );
}

#[test]
fn arm64_image_builds_with_aarch64_binaries() {
    let Some(b) = build("qemu-arm64", "arm64") else {
        return;
    };
    assert_eq!(b.info["arch"], "arm64");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("usr.erofs");
    copy_range(&b.disk(), b.part(2).0, b.usr("data_size"), &img);
    let tree = dir.path().join("image");
    let (ok, text) = run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg(&img));
    assert!(ok, "fsck.erofs: {text}");
    for bin in [
        "bin/bash",
        "lib/systemd/systemd",
        "lib/cairn/cairn-mark-good",
    ] {
        let elf = std::fs::read(tree.join(bin)).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF", "{bin}");
        assert_eq!(
            u16::from_le_bytes([elf[18], elf[19]]),
            183,
            "{bin} is not aarch64"
        );
    }
    let (ok, text) = run(Command::new("sfdisk").arg("--json").arg(b.disk()));
    assert!(
        ok && text
            .to_lowercase()
            .contains("b0e01050-ee5f-4390-949a-9101b17104e9"),
        "arm64 usr type: {text}"
    );
}

/// Every shipped board's module names exist in (or are built into) the kernel
/// its Debian kernel package installs: a typo or a driver Debian does not
/// build fails here, not on a user's first build of that board.
fn boards_resolve_against(b: &Built) {
    let key = b.info["inputs"]["rootfs_key"].as_str().unwrap();
    let kver = b.info["kernel"].as_str().unwrap();
    let cache = cairn_build::cache_dir();
    let tar = cache.join("rootfs").join(format!("{key}.tar"));
    let member = |name: &str| {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg(format!("./usr/lib/modules/{kver}/{name}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} not in {}", tar.display());
        String::from_utf8(out.stdout).unwrap()
    };
    let index =
        initrd_pack::ModuleIndex::parse(kver, &member("modules.dep"), &member("modules.builtin"))
            .unwrap();
    let dir = cairn_build::board::boards_dir();
    let arch = b.info["arch"].as_str().unwrap();
    let mut checked = 0;
    for name in cairn_build::board::list(&dir) {
        let board = cairn_build::board::load(&dir.join(format!("{name}.toml"))).unwrap();
        if board.board.arch != arch {
            continue;
        }
        let mut names = board.kernel.modules.clone();
        names.extend(board.initramfs.modules.iter().cloned());
        index
            .resolve(&names)
            .unwrap_or_else(|e| panic!("board {name}: {e}"));
        checked += 1;
    }
    assert!(checked >= 2, "{checked} {arch} boards checked");
}

#[test]
fn x86_64_boards_name_modules_the_kernel_has() {
    let Some(b) = x86() else { return };
    boards_resolve_against(b);
}

#[test]
fn bad_input_gets_one_line_that_says_what_to_do() {
    let bin = env!("CARGO_BIN_EXE_cairn-build");
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["build", "--dev-key", "--board", "no-such-board", "--out"],
            "unknown board",
        ),
        (
            &["build", "--board", "qemu-x86_64", "--out"],
            "cairn-build keygen",
        ),
        (
            &[
                "build",
                "--dev-key",
                "--board",
                "qemu-x86_64",
                "--version",
                "one",
                "--out",
            ],
            "--version",
        ),
        (
            &[
                "build",
                "--dev-key",
                "--key",
                "/nonexistent",
                "--board",
                "qemu-x86_64",
                "--out",
            ],
            "not both",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(bin)
            .args(args)
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!dir.path().join("out/build-info.json").exists());
    }
}

/// `cairn-build <args>`: (success, stdout, stderr).
fn cairn_build(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
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

/// A host config signed with a fresh key: (dir, host.toml, the key's public line).
fn signed_config(dir: &Path) -> (PathBuf, String) {
    let config = dir.join("host.toml");
    std::fs::write(&config, "hostname = \"provisioned\"\n").unwrap();
    let (ok, _, err) = cairn_build(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
        "--name".as_ref(),
        "config".as_ref(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cairn_build(&[
        "sign-config".as_ref(),
        "--key".as_ref(),
        dir.join("config.secret").as_os_str(),
        config.as_os_str(),
    ]);
    assert!(ok && out.contains("host.toml.sig"), "{out}{err}");
    let public = std::fs::read_to_string(dir.join("config.public")).unwrap();
    (config, public)
}

/// The OEM partition (number 4) of a disk laid out as `b`, checked by
/// e2fsck and read back with debugfs into a scratch root as a host sees it
/// (/oem), with the board's keys in /usr: host_config's loader must verify
/// and apply it.
fn check_oem(b: &Built, disk: &Path, public: &str, scratch: &Path) {
    let (offset, size) = b.part(4);
    let oem = scratch.join("oem.img");
    copy_range(disk, offset, size, &oem);
    let (ok, text) = run(Command::new("e2fsck").arg("-fn").arg(&oem));
    assert!(ok, "e2fsck -fn OEM:\n{text}");
    let root = scratch.join("root");
    std::fs::create_dir_all(root.join("oem")).unwrap();
    for name in ["config.toml", "config.toml.sig"] {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat /{name}")])
            .arg(&oem)
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(root.join("oem").join(name), &out.stdout).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(root.join("oem/config.toml")).unwrap(),
        "hostname = \"provisioned\"\n"
    );
    let keys = root.join(disk_layout::board_files::CONFIG_KEYS);
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::write(&keys, public).unwrap();
    std::fs::write(root.join(disk_layout::board_files::CONFIG_SOURCES), "oem\n").unwrap();
    let loaded = host_config::source::Sources::at(&root).load();
    assert!(
        matches!(
            loaded.signature,
            host_config::source::SignatureState::Verified { .. }
        ),
        "{:?}",
        loaded.signature
    );
    assert_eq!(
        loaded.config.unwrap().hostname.as_deref(),
        Some("provisioned")
    );
}

/// The checks of an installed disk: a clean GPT with the backup at the
/// end, and systemd-repart (with the image's own definitions) growing ROOT
/// into the rest, as it does on first boot.
fn check_installed(disk: &Path) {
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(disk));
    assert!(
        ok && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );
    let defs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd-units/usr/lib/repart.d");
    let (_, text) = run(Command::new("systemd-repart")
        .args(["--dry-run=yes", "--no-pager"])
        .arg(format!("--definitions={}", defs.display()))
        .arg(disk));
    let root = text
        .lines()
        .find(|l| l.contains("ROOT") && l.contains("50-cairn-root.conf"))
        .unwrap_or_else(|| panic!("systemd-repart did not match ROOT:\n{text}"));
    assert!(root.contains("1.0G → 1.5G"), "ROOT does not grow: {root}");
}

#[test]
fn oem_personalises_raw_and_qcow2_images_reproducibly() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let d = dir.path();
    let (config, public) = signed_config(d);
    let raw = d.join("disk.raw");
    let qcow2 = d.join("disk.qcow2");
    for (src, dst) in [(b.disk(), &raw), (b.dir.join("disk.qcow2"), &qcow2)] {
        let (ok, text) = run(Command::new("cp").arg("--sparse=always").arg(src).arg(dst));
        assert!(ok, "{text}");
    }
    let oem = |image: &Path| {
        let (ok, out, err) = cairn_build(&[
            "oem".as_ref(),
            "--image".as_ref(),
            image.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        assert!(ok, "oem {}: {err}", image.display());
        out
    };
    let out = oem(&raw);
    assert!(
        out.contains("config.toml.sig"),
        "the signature beside the config is placed: {out}"
    );
    check_oem(b, &raw, &public, d);
    let first = std::fs::read(&raw).unwrap();
    oem(&raw);
    assert!(
        std::fs::read(&raw).unwrap() == first,
        "oem twice gave other bytes"
    );

    oem(&qcow2);
    let back = d.join("back.raw");
    let (ok, text) = run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&qcow2)
        .arg(&back));
    assert!(ok, "{text}");
    check_oem(b, &back, &public, d);
    assert!(
        std::fs::read(&back).unwrap() == first,
        "qcow2 and raw personalised differently"
    );
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(&back));
    assert!(ok && text.contains("No problems found"), "{text}");

    // A bad config: one line, the image untouched.
    std::fs::write(d.join("bad.toml"), "hostname = 7\n").unwrap();
    let (ok, _, err) = cairn_build(&[
        "oem".as_ref(),
        "--image".as_ref(),
        raw.as_os_str(),
        "--config".as_ref(),
        d.join("bad.toml").as_os_str(),
    ]);
    assert!(
        !ok && err.contains("hostname") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(std::fs::read(&raw).unwrap() == first);
}

#[test]
fn install_writes_verifies_and_refuses_a_used_disk() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let d = dir.path();
    let (config, public) = signed_config(d);
    let image_bytes = std::fs::metadata(b.disk()).unwrap().len();
    let install = |device: &Path, image: &Path, force: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "install".as_ref(),
            "--image".as_ref(),
            image.as_os_str(),
            "--device".as_ref(),
            device.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        if force {
            args.push("--force".as_ref());
        }
        cairn_build(&args)
    };

    // A file larger than the image, from the build folder.
    let file = d.join("disk-file");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(image_bytes + (512 << 20))
        .unwrap();
    let (ok, _, err) = install(&file, &b.dir, false);
    assert!(ok, "install onto a file: {err}");
    assert!(
        err.contains("install plan:") && err.contains("wrote and verified"),
        "{err}"
    );
    check_installed(&file);
    check_oem(b, &file, &public, d);
    let (ok, _, err) = install(&file, &b.dir, false);
    assert!(!ok, "a disk holding a GPT was overwritten without --force");
    assert!(
        err.contains(
            "it holds a GPT with 5 partitions (ESP, USR-A, USR-B, OEM, ROOT); pass --force"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    drop(std::fs::remove_file(&file));

    // A loop device, from the qcow2.
    let loop_device = loop_disk(d, image_bytes + (512 << 20));
    let dev = loop_device.path.clone();
    let (ok, _, err) = install(&dev, &b.dir.join("disk.qcow2"), false);
    assert!(ok, "install onto {}: {err}", dev.display());
    check_installed(&dev);
    check_oem(b, &dev, &public, d);
    let (ok, _, err) = install(&dev, &b.disk(), false);
    assert!(!ok && err.contains("pass --force"), "{err}");
}

fn dev_public_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/cairn-DEVELOPMENT-ONLY.public")
}

/// `cairn-build install --image <release> --device <device> --config <config> <extra>`.
fn install_release(
    release: &Path,
    device: &Path,
    config: &Path,
    extra: &[&std::ffi::OsStr],
) -> (bool, String, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "install".as_ref(),
        "--image".as_ref(),
        release.as_os_str(),
        "--device".as_ref(),
        device.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    args.extend(extra);
    cairn_build(&args)
}

/// The partitions as sfdisk reads them: (name, type, start, size, attrs), and the UUIDs.
fn sfdisk_layout(disk: &Path) -> (Vec<[String; 5]>, Vec<String>) {
    let (ok, text) = run(Command::new("sfdisk").arg("--json").arg(disk));
    assert!(ok, "sfdisk {}: {text}", disk.display());
    let table: Value = serde_json::from_str(&text).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let field = |p: &Value, k: &str| match &p[k] {
        Value::String(s) => s.to_lowercase(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    (
        parts
            .iter()
            .map(|p| ["name", "type", "start", "size", "attrs"].map(|k| field(p, k)))
            .collect(),
        parts.iter().map(|p| field(p, "uuid")).collect(),
    )
}

/// Every file of a FAT image as (path, bytes), read with mtools.
fn esp_files(img: &Path, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let (ok, text) = run(Command::new("fsck.fat").arg("-n").arg(img));
    assert!(ok, "fsck.fat -n {}: {text}", img.display());
    let out = scratch
        .join(img.file_name().unwrap())
        .with_extension("files");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, text) = run(Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(img)
        .args(["::/EFI", "::/cairn"])
        .arg(&out)
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(ok, "mcopy from {}: {text}", img.display());
    let mut files = Vec::new();
    for p in files_under(&out) {
        let rel = p.strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        files.push((rel, std::fs::read(&p).unwrap()));
    }
    files.sort();
    files
}

/// The top of an ext4 image: (name, mode) of each entry, after `e2fsck -fn`.
fn ext4_top(img: &Path) -> Vec<(String, String)> {
    let (ok, text) = run(Command::new("e2fsck").arg("-fn").arg(img));
    assert!(ok, "e2fsck -fn {}:\n{text}", img.display());
    let out = Command::new("debugfs")
        .args(["-R", "ls -l /"])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.last()?.to_string(), f.get(1)?.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// A disk installed from `b`'s release has the built disk's layout and
/// contents: the same table but fresh GUIDs, USR-A byte for byte (and
/// verifying), the same ESP files, a ROOT with the same skeleton.
fn check_like_built(b: &Built, disk: &Path, scratch: &Path) {
    let (built, built_uuids) = sfdisk_layout(&b.disk());
    let (got, uuids) = sfdisk_layout(disk);
    assert_eq!(got, built, "the partition table differs from the build's");
    assert_eq!(got[1][4], "guid:48,52,53,56,60", "USR-A (1,3,1), read-only");
    assert_eq!(got[2][4], "guid:60,63", "USR-B (0,0,0), read-only, no-auto");
    for (a, b) in uuids.iter().zip(&built_uuids) {
        assert_ne!(a, b, "a partition GUID was not fresh");
    }

    let usr_len = b.usr("hash_offset") + b.usr("hash_size");
    let (ours, theirs) = (scratch.join("usr.ours"), scratch.join("usr.built"));
    copy_range(disk, b.part(2).0, usr_len, &ours);
    copy_range(&b.disk(), b.part(2).0, usr_len, &theirs);
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "USR-A differs from the built disk's"
    );
    let (ok, text) = run(Command::new("veritysetup")
        .arg("verify")
        .arg(&ours)
        .arg(&ours)
        .arg(b.info["usr_a"]["root_hash"].as_str().unwrap())
        .arg(format!("--hash-offset={}", b.usr("hash_offset"))));
    assert!(ok, "veritysetup verify refused the installed USR-A: {text}");

    let (esp_ours, esp_built) = (scratch.join("esp-ours.img"), scratch.join("esp-built.img"));
    let (offset, size) = b.part(1);
    copy_range(disk, offset, size, &esp_ours);
    copy_range(&b.disk(), offset, size, &esp_built);
    let files = esp_files(&esp_ours, scratch);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "cairn/a/boot.sig",
            "cairn/a/cmdline",
            "cairn/a/initrd",
            "cairn/a/vmlinuz"
        ]
    );
    assert!(
        files == esp_files(&esp_built, scratch),
        "the ESP files differ from the built disk's"
    );

    let (root_ours, root_built) = (
        scratch.join("root-ours.img"),
        scratch.join("root-built.img"),
    );
    let (offset, size) = b.part(5);
    copy_range(disk, offset, size, &root_ours);
    copy_range(&b.disk(), offset, size, &root_built);
    let top = ext4_top(&root_ours);
    assert!(
        top.contains(&("bin".to_string(), "120777".to_string())),
        "{top:?}"
    );
    assert_eq!(top, ext4_top(&root_built), "ROOT's skeleton differs");
    for f in [ours, theirs, esp_ours, esp_built, root_ours, root_built] {
        drop(std::fs::remove_file(f));
    }
}

#[test]
fn install_assembles_the_disk_from_a_signed_release() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let d = dir.path();
    let (config, public) = signed_config(d);
    let key = dev_public_key();
    let image_bytes = std::fs::metadata(b.disk()).unwrap().len();

    // A file larger than the image, from the build's release folder.
    let file = d.join("disk-file");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(image_bytes + (512 << 20))
        .unwrap();
    let (ok, out, err) = install_release(
        &b.dir.join("release"),
        &file,
        &config,
        &["--key".as_ref(), key.as_os_str()],
    );
    assert!(ok, "install of the release onto a file: {err}");
    assert!(out.contains("installed"), "{out}");
    for needle in [
        "install plan:",
        "manifest signed by",
        "USR-B 1536 MiB (empty, unbootable)",
        "boot.sig verified",
        "the build's artifact",
        "wrote and verified",
        "placed the host config",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    check_installed(&file);
    check_oem(b, &file, &public, d);
    check_like_built(b, &file, d);
    drop(std::fs::remove_file(&file));

    // A loop device, from the same release published into a repository
    // (its chunks at the repository's root).
    let repo = d.join("repo");
    let secret =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/cairn-DEVELOPMENT-ONLY.secret");
    let release = b.dir.join("release");
    let repo_args: [&[&std::ffi::OsStr]; 2] = [
        &[
            "repo".as_ref(),
            "init".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
        ],
        &[
            "publish".as_ref(),
            "--channel".as_ref(),
            "stable".as_ref(),
            "--release".as_ref(),
            release.as_os_str(),
            "--repo".as_ref(),
            repo.as_os_str(),
        ],
    ];
    for args in repo_args {
        let args = [args, &["--key".as_ref(), secret.as_os_str()]].concat();
        let (ok, _, err) = cairn_build(&args);
        assert!(ok, "{args:?}: {err}");
    }
    let version = b.info["version"].as_str().unwrap();
    let in_repo = repo.join("releases/qemu-x86_64").join(version);
    let loop_device = loop_disk(d, image_bytes + (512 << 20));
    let dev = loop_device.path.clone();
    let (ok, _, err) = install_release(
        &in_repo,
        &dev,
        &config,
        &["--key".as_ref(), key.as_os_str()],
    );
    assert!(
        ok,
        "install of {} onto {}: {err}",
        in_repo.display(),
        dev.display()
    );
    check_installed(&dev);
    check_oem(b, &dev, &public, d);
    check_like_built(b, &dev, d);
    let (ok, _, err) = install_release(
        &in_repo,
        &dev,
        &config,
        &["--key".as_ref(), key.as_os_str()],
    );
    assert!(!ok && err.contains("pass --force"), "{err}");
}

/// A copy of the release folder whose chunks are links to the originals.
fn linked_release(release: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("chunks")).unwrap();
    for name in ["manifest.json", "manifest.json.sig"] {
        std::fs::copy(release.join(name), to.join(name)).unwrap();
    }
    for e in std::fs::read_dir(release.join("chunks")).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::symlink(&p, to.join("chunks").join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn install_refuses_an_unverifiable_release_and_another_board() {
    let Some(b) = x86() else { return };
    let dir = tempfile::tempdir_in(tmp()).unwrap();
    let d = dir.path();
    let release = b.dir.join("release");
    let config = d.join("host.toml");
    std::fs::write(&config, "hostname = \"r\"\n").unwrap();
    let key = dev_public_key();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(release.join("manifest.json")).unwrap()).unwrap();

    // Another key: a fresh one that signed nothing.
    let (ok, _, err) = cairn_build(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        d.as_os_str(),
        "--name".as_ref(),
        "other".as_ref(),
    ]);
    assert!(ok, "{err}");
    let other = d.join("other.public");

    // Tampered: one byte of the manifest.
    let tampered = d.join("tampered");
    linked_release(&release, &tampered);
    let mut doc = std::fs::read(tampered.join("manifest.json")).unwrap();
    let at = doc.len() / 2;
    doc[at] ^= 0x01;
    std::fs::write(tampered.join("manifest.json"), doc).unwrap();
    // Unsigned: no signature file.
    let unsigned = d.join("unsigned");
    linked_release(&release, &unsigned);
    std::fs::remove_file(unsigned.join("manifest.json.sig")).unwrap();
    // A corrupted chunk of usr: the signature holds, the chunk hash does not.
    let bad_chunk = d.join("bad-chunk");
    linked_release(&release, &bad_chunk);
    let usr = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "usr")
        .unwrap();
    let chunk = usr["chunks"][1]["file"].as_str().unwrap();
    let mut bytes = std::fs::read(release.join(chunk)).unwrap();
    bytes[100] ^= 0x01;
    std::fs::remove_file(bad_chunk.join(chunk)).unwrap();
    std::fs::write(bad_chunk.join(chunk), bytes).unwrap();
    // Another board: the manifest re-signed (by the fresh key) naming a
    // board board-configs/ does not have.
    let elsewhere = d.join("elsewhere");
    linked_release(&release, &elsewhere);
    let text = std::fs::read_to_string(elsewhere.join("manifest.json")).unwrap();
    let text = text.replacen("\"board\": \"qemu-x86_64\"", "\"board\": \"my-board\"", 1);
    assert!(text.contains("my-board"));
    std::fs::write(elsewhere.join("manifest.json"), &text).unwrap();
    let signer = release_manifest::KeyPair::load_secret(d.join("other.secret")).unwrap();
    let sig = release_manifest::sign_document(text.as_bytes(), &[signer]).unwrap();
    std::fs::write(elsewhere.join("manifest.json.sig"), sig).unwrap();

    let board_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs/qemu-x86_64.toml");
    let k = |p: &Path| -> Vec<std::ffi::OsString> { vec!["--key".into(), p.into()] };
    let cases: Vec<(&Path, Vec<std::ffi::OsString>, &[&str])> = vec![
        (
            &release,
            vec![],
            &["is a release: pass --key", "DEVELOPMENT-ONLY.public"],
        ),
        (
            &release,
            k(&other),
            &[
                "does not verify against the --key",
                "no signature by a trusted key",
            ],
        ),
        (
            &tampered,
            k(&key),
            &["does not verify against the --key", "signature"],
        ),
        (
            &unsigned,
            k(&key),
            &["does not verify against the --key", "manifest.json.sig"],
        ),
        (&bad_chunk, k(&key), &["image usr", "chunk 1"]),
        (
            &elsewhere,
            k(&other),
            &["for board my-board", "pass --board"],
        ),
        (
            &elsewhere,
            [k(&other), vec!["--board".into(), board_file.clone().into()]].concat(),
            &["is board qemu-x86_64, but the release is for board my-board"],
        ),
    ];
    let device = d.join("device");
    std::fs::File::create(&device)
        .unwrap()
        .set_len(std::fs::metadata(b.disk()).unwrap().len())
        .unwrap();
    for (image, extra, needles) in cases {
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|s| s.as_os_str()).collect();
        let (ok, _, err) = install_release(image, &device, &config, &extra);
        assert!(!ok, "{} {extra:?} was installed", image.display());
        for needle in needles {
            assert!(
                err.contains(needle),
                "{} {extra:?}: {needle:?} missing: {err}",
                image.display()
            );
        }
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("install plan"), "{err}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&device).unwrap().blocks(),
            0,
            "{} {extra:?}: bytes were written",
            image.display()
        );
    }
}
