//! `install --image <release folder>`: the disk is assembled from a signed
//! release the way `cairn-build build` assembles disk.raw, then installed
//! like any disk image.
//!
//! Order: the manifest's signature is checked against the `--key` public
//! keys (threshold 1, as cairn-updated checks a release against the keys in
//! /usr) before anything of the release is read; the board config is the
//! one the manifest names; the boot files are read through the chunk
//! verifier and boot.sig is checked against the signing keys (the boot
//! manager would refuse slot A otherwise); the target is inspected and the
//! size checked. Only then is the disk assembled in a scratch folder:
//! USR-A from the verified `usr` image (its dm-verity tree inside, checked
//! against the signed root hash), the ESP, OEM and ROOT by the build's own
//! functions, the GPT by `disk::plan` with fresh GUIDs (nothing in the boot
//! chain names a partition GUID: the boot manager appends the PARTUUID of
//! the slot it chose). The plan is printed and the device written only
//! after all of that succeeded, so a bad release never writes a byte.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use disk_layout::{Arch, Part, boot_files};
use release_manifest::{Manifest, PublicKey};

use super::{MIB, Options, Plan, inspect, write_plan};
use crate::build;
use crate::derive::Seed;
use crate::disk;
use crate::oem::OemFile;
use crate::tools;
use cairn_build::board::{self, Board};

/// What assembling a disk from a release runs, beyond the install itself.
const TOOLS: &[(&str, &str)] = &[
    ("dump.erofs", "erofs-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
];

/// Debian's merged-/usr directories (debootstrap's `merge_usr`), linked from
/// the root as `<dir> -> usr/<dir>` when /usr has them.
const MERGED_USR_DIRS: [&str; 7] = ["bin", "lib", "lib32", "lib64", "libo32", "libx32", "sbin"];

/// A folder is a release when it holds the signed manifest.
pub fn is_release(image: &Path) -> bool {
    image.is_dir() && image.join(release_manifest::MANIFEST_FILE).is_file()
}

/// Where the manifest's `chunks/<zsha256>.zst` paths resolve (pure, given
/// which folders have a chunks/ folder): the release folder as `build`
/// writes it, or the repository root of `releases/<board>/<version>/`.
/// Chunks are content-addressed and verified, so the first found is safe.
pub fn chunk_base(release: &Path, has_chunks: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    release
        .ancestors()
        .take(4)
        .find(|d| has_chunks(d))
        .map(Path::to_path_buf)
}

/// The board's name and arch must be the release's (pure).
pub fn check_board(
    manifest: (&str, &str),
    board: (&str, &str),
    board_file: &Path,
) -> Result<Arch, String> {
    let (release_board, release_arch) = manifest;
    let (name, arch) = board;
    if name != release_board {
        return Err(format!(
            "{} is board {name}, but the release is for board {release_board}: pass --board with the board file it was built from",
            board_file.display()
        ));
    }
    if arch != release_arch {
        return Err(format!(
            "{} is for {arch}, but the release is for {release_arch}",
            board_file.display()
        ));
    }
    Arch::from_name(release_arch)
        .ok_or_else(|| format!("the release is for an unknown architecture {release_arch:?}"))
}

/// The root's merged-/usr links from `dump.erofs --ls --path=/` of /usr
/// (pure): the `build` takes them from the rootfs, which a release does
/// not carry, and Debian links exactly these of /usr's directories.
pub fn merged_usr_links(dump_ls: &str) -> Vec<(String, String)> {
    // Rows under the "NID TYPE FILENAME" header; type 2 is a directory.
    let dirs: Vec<&str> = dump_ls
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NID"))
        .skip(1)
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "2", name] => Some(name),
            _ => None,
        })
        .collect();
    MERGED_USR_DIRS
        .iter()
        .filter(|d| dirs.contains(d))
        .map(|d| (d.to_string(), format!("usr/{d}")))
        .collect()
}

/// A release whose manifest signature verified.
struct Release {
    dir: PathBuf,
    chunks: PathBuf,
    manifest: Manifest,
    /// The given keys that signed it: they go into the boot manager.
    signers: Vec<PublicKey>,
}

impl Release {
    fn open(dir: &Path, key_files: &[PathBuf]) -> Result<Release> {
        if key_files.is_empty() {
            bail!(
                "{} is a release: pass --key <release public key> (the .public of the key that signed it; keys/cairn-DEVELOPMENT-ONLY.public for a --dev-key build) so its signature is checked before anything is written",
                dir.display()
            );
        }
        let keys = key_files
            .iter()
            .map(|p| PublicKey::load_public(p).with_context(|| format!("--key {}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        let manifest = Manifest::load(dir, &keys, 1).with_context(|| {
            format!(
                "release {} does not verify against the --key given, nothing written",
                dir.display()
            )
        })?;
        let signers: Vec<PublicKey> = keys
            .iter()
            .filter(|k| Manifest::load(dir, std::slice::from_ref(k), 1).is_ok())
            .copied()
            .collect();
        manifest
            .check_expiry(now())
            .with_context(|| format!("release {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let chunks = chunk_base(&dir, &|d| d.join(release_manifest::CHUNKS_DIR).is_dir())
            .with_context(|| {
                format!(
                    "release {} has no chunks/ folder beside its manifest or at its repository's root",
                    dir.display()
                )
            })?;
        Ok(Release {
            dir,
            chunks,
            manifest,
            signers,
        })
    }

    /// A small image (a boot file), every chunk verified.
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        release_manifest::extract_image(&self.chunks, &self.manifest, name, &mut out)
            .with_context(|| format!("release {}: image {name}", self.dir.display()))?;
        Ok(out)
    }

    /// An image into a file, every chunk verified before it is written.
    fn extract(&self, name: &str, to: &Path) -> Result<()> {
        let mut f = File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
        release_manifest::extract_image(&self.chunks, &self.manifest, name, &mut f)
            .with_context(|| format!("release {}: image {name}", self.dir.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", to.display()))
    }
}

/// The board config: `--board`, else board-configs/<the release's board>.toml.
fn board_for(m: &Manifest, given: Option<&Path>) -> Result<(Board, PathBuf, Arch)> {
    let file = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = board::boards_dir();
            // The signed manifest's board is a plain name (no '/', no leading
            // '.'), so this stays inside the boards folder.
            let file = dir.join(format!("{}.toml", m.board));
            if !file.is_file() {
                bail!(
                    "the release is for board {}, which {} does not have: pass --board <the board .toml it was built from>",
                    m.board,
                    dir.display()
                );
            }
            file
        }
    };
    let b = board::load(&file)?;
    let arch = check_board((&m.board, &m.arch), (&b.board.name, &b.board.arch), &file)
        .map_err(anyhow::Error::msg)?;
    Ok((b, file, arch))
}

/// `dump.erofs --ls --path=/` of the /usr image.
fn list_usr_top(usr: &Path) -> Result<String> {
    let out = std::process::Command::new("dump.erofs")
        .args(["--ls", "--path=/"])
        .arg(usr)
        .output()
        .context("cannot run dump.erofs: install erofs-utils")?;
    if !out.status.success() {
        bail!(
            "dump.erofs cannot list {} ({}): {}",
            usr.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn random_seed() -> Result<Seed> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for fresh partition GUIDs")?;
    Ok(Seed(bytes))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_ids(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(PublicKey::key_id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the release, assembles its disk in a scratch folder, then installs it.
pub fn install(opts: &Options, oem_files: Vec<OemFile>, say: &mut dyn FnMut(&str)) -> Result<Plan> {
    let rel = Release::open(&opts.image, &opts.keys)?;
    let m = &rel.manifest;
    let (board, board_file, arch) = board_for(m, opts.board.as_deref())?;
    tools::require(TOOLS)?;
    let usr = m
        .image("usr")
        .with_context(|| format!("release {}", rel.dir.display()))?;
    let Some(verity) = usr.verity else {
        bail!(
            "release {}: its usr image has no dm-verity description, so it cannot boot",
            rel.dir.display()
        );
    };
    if usr.size > board.disk.usr_mib * MIB {
        bail!(
            "release {}: usr is {} MiB but {} gives USR partitions {} MiB",
            rel.dir.display(),
            usr.size.div_ceil(MIB),
            board_file.display(),
            board.disk.usr_mib
        );
    }
    let slot_files = build::SLOT_FILES
        .iter()
        .map(|&name| Ok((name, rel.read(name)?)))
        .collect::<Result<Vec<(&'static str, Vec<u8>)>>>()?;
    let signer_keys: Vec<[u8; 32]> = rel.signers.iter().map(PublicKey::to_bytes).collect();
    let file = |name: &str| {
        slot_files
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, d)| d.as_slice())
    };
    boot_sig::verify(
        &signer_keys,
        file(boot_files::SIGNATURE),
        file(boot_files::KERNEL),
        file(boot_files::INITRD),
        file(boot_files::CMDLINE),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "release {}: {e} ({}): the boot manager would refuse slot A",
            rel.dir.display(),
            key_ids(&rel.signers)
        )
    })?;
    let (efi_path, efi_bytes) = build::boot_manager(opts.boot_efi.as_deref(), arch)?;
    let efi = build::keyed_boot_manager(&efi_path, &efi_bytes, &signer_keys)?;

    let layout = disk::plan(&board.disk, arch, &random_seed()?, board.board.boot_tries);
    let target = inspect(&opts.device, opts.force)?;
    let mut plan = Plan::new(layout.total_bytes, layout.sector_size, target, oem_files)
        .map_err(anyhow::Error::msg)?;

    let work = tempfile::Builder::new()
        .prefix("cairn-install-release.")
        .tempdir()
        .context("cannot create a scratch folder to assemble the disk")?;
    let w = |name: &str| work.path().join(name);
    rel.extract("usr", &w("usr.img"))?;
    let mut usr_file = File::open(w("usr.img"))
        .with_context(|| format!("cannot open {}", w("usr.img").display()))?;
    verity_tree::verify(&mut usr_file, &verity.to_info()).with_context(|| {
        format!(
            "release {}: usr does not verify against its signed dm-verity root hash",
            rel.dir.display()
        )
    })?;
    let links = merged_usr_links(&list_usr_top(&w("usr.img"))?);
    // The build's epoch: timestamps in the new filesystems are the ones a
    // built disk has. The seed only names the new filesystems.
    let epoch = m.created;
    let fs_seed = random_seed()?;
    build::esp_image(&w("esp.img"), &board.disk, arch, &efi, &slot_files, epoch)?;
    build::oem_image(&w("oem.img"), &board.disk, &fs_seed, epoch)?;
    build::root_image(&w("root.img"), &board.disk, &fs_seed, epoch, &links)?;
    let contents: Vec<(Part, PathBuf)> = vec![
        (Part::Esp, w("esp.img")),
        (Part::UsrA, w("usr.img")),
        (Part::Oem, w("oem.img")),
        (Part::Root, w("root.img")),
    ];
    let contents: Vec<(Part, &Path)> = contents.iter().map(|(p, f)| (*p, f.as_path())).collect();
    disk::write(&layout, &contents, &w("disk.raw"))?;

    let mib = |p: Part| layout.get(p).size(layout.sector_size) / MIB;
    plan.assembly = vec![
        format!(
            "release {} {} for {} ({}), manifest signed by {}: verified",
            m.board,
            m.version,
            board_file.display(),
            arch.name(),
            key_ids(&rel.signers)
        ),
        format!(
            "GPT as the board's: ESP {} MiB, USR-A {} MiB (good, booted first), USR-B {} MiB (empty, unbootable), OEM {} MiB, ROOT {} MiB (grows on first boot); fresh GUIDs",
            mib(Part::Esp),
            mib(Part::UsrA),
            mib(Part::UsrB),
            mib(Part::Oem),
            mib(Part::Root)
        ),
        format!(
            "USR-A: the release's usr ({} MiB), every chunk and the dm-verity tree (root hash {}) verified",
            usr.size.div_ceil(MIB),
            verity.root_hash
        ),
        format!(
            "ESP: boot manager {} (not in a release: the build's artifact) with key {} in its key slot; slot A's {} from the release, boot.sig verified",
            efi_path.display(),
            key_ids(&rel.signers),
            build::SLOT_FILES.join(", ")
        ),
        format!(
            "OEM and ROOT: new empty ext4 filesystems (ROOT with the /usr links {})",
            links
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    say(&format!(
        "install plan:\n{}",
        plan.describe(Path::new("the disk assembled from it"))
    ));
    let src = File::open(w("disk.raw"))
        .with_context(|| format!("cannot open {}", w("disk.raw").display()))?;
    write_plan(&plan, &src, say)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_resolve_beside_the_manifest_or_at_the_repository_root() {
        let has =
            |dirs: &'static [&'static str]| move |d: &Path| dirs.iter().any(|x| Path::new(x) == d);
        let cases: [(&str, &[&str], Option<&str>); 4] = [
            ("/out/release", &["/out/release"], Some("/out/release")),
            (
                "/repo/releases/qemu-x86_64/1.0.0",
                &["/repo"],
                Some("/repo"),
            ),
            // Beside the manifest wins over an outer store.
            (
                "/repo/releases/b/1.0",
                &["/repo", "/repo/releases/b/1.0"],
                Some("/repo/releases/b/1.0"),
            ),
            // No further up than a repository root.
            ("/a/b/c/d/e", &["/a"], None),
        ];
        for (release, dirs, want) in cases {
            assert_eq!(
                chunk_base(Path::new(release), &has(dirs)),
                want.map(PathBuf::from),
                "{release}"
            );
        }
    }

    #[test]
    fn the_board_must_be_the_releases() {
        let f = Path::new("board-configs/x.toml");
        type Case<'a> = (
            (&'a str, &'a str),
            (&'a str, &'a str),
            Result<Arch, &'a str>,
        );
        let cases: [Case; 4] = [
            (
                ("qemu-x86_64", "x86_64"),
                ("qemu-x86_64", "x86_64"),
                Ok(Arch::X86_64),
            ),
            (
                ("qemu-arm64", "arm64"),
                ("qemu-arm64", "arm64"),
                Ok(Arch::Arm64),
            ),
            (
                ("mine", "x86_64"),
                ("qemu-x86_64", "x86_64"),
                Err("is board qemu-x86_64, but the release is for board mine: pass --board"),
            ),
            (
                ("mine", "x86_64"),
                ("mine", "arm64"),
                Err("is for arm64, but the release is for x86_64"),
            ),
        ];
        for (m, b, want) in cases {
            match (check_board(m, b, f), want) {
                (Ok(a), Ok(w)) => assert_eq!(a, w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{m:?} {b:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn merged_usr_links_follow_the_dirs_of_usr() {
        let dump = "File : /\nSize: 194  On-disk size: 194  directory\n\n       NID TYPE  FILENAME\n        36    2  .\n        36    2  ..\n       256    2  bin\n    991559    2  games\n    993478    2  lib\n   2824312    2  lib64\n   2825461    2  libexec\n   2964736    2  sbin\n   3147392    2  share\n       400    7  lib32\n";
        let links = |s: &str| -> Vec<String> {
            merged_usr_links(s)
                .into_iter()
                .map(|(l, t)| format!("{l}->{t}"))
                .collect()
        };
        let cases: [(&str, &[&str]); 3] = [
            // libexec is not linked; lib32 here is a symlink, not a directory.
            (
                dump,
                &[
                    "bin->usr/bin",
                    "lib->usr/lib",
                    "lib64->usr/lib64",
                    "sbin->usr/sbin",
                ],
            ),
            ("", &[]),
            // Rows before the header are not entries.
            (
                "bin 2 bin\n NID TYPE FILENAME\n 5 2 sbin\n",
                &["sbin->usr/sbin"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(links(text), want.to_vec(), "{text}");
        }
    }
}
