//! The Debian root filesystem, made by mmdebstrap and cached by the hash of its
//! inputs, so an unchanged rebuild skips the bootstrap.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tools::run;
use cairn_build::board::Board;

/// Paths mmdebstrap leaves out of the image.
const EXCLUDES: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
    // Without this hook the kernel's postinst makes no initramfs-tools initrd:
    // Cairn packs its own, and building Debian's under qemu-user dominated the
    // arm64 bootstrap (tens of minutes).
    "/etc/kernel/postinst.d/initramfs-tools",
];
/// Bump when the way the tarball is made changes, to invalidate caches.
const RECIPE: &str = "cairn-rootfs-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rootfs {
    pub tar: PathBuf,
    /// Hex sha256 of the inputs; names the cache entry.
    pub key: String,
    /// `name=version` of every installed package, sorted: the lockfile.
    pub packages: Vec<String>,
    /// When the tarball was made (seconds since the epoch).
    pub created: u64,
    #[serde(skip)]
    pub cached: bool,
}

/// The inputs that decide the tarball's content.
pub fn key(board: &Board) -> String {
    let mut packages = board.debian.packages.clone();
    packages.push(board.debian.kernel.clone());
    packages.sort();
    let inputs = serde_json::json!({
        "recipe": RECIPE,
        "suite": board.debian.suite,
        "mirror": board.debian.mirror,
        "arch": board.arch().debian_arch(),
        "packages": packages,
        "excludes": EXCLUDES,
    });
    hex::encode(Sha256::digest(inputs.to_string().as_bytes()))
}

pub fn ensure(board: &Board, cache: &Path, epoch: Option<u64>) -> Result<Rootfs> {
    let key = key(board);
    let dir = cache.join("rootfs");
    let tar = dir.join(format!("{key}.tar"));
    let meta = dir.join(format!("{key}.json"));
    if tar.is_file() && meta.is_file() {
        let text = std::fs::read_to_string(&meta)
            .with_context(|| format!("cannot read {}", meta.display()))?;
        if let Ok(mut r) = serde_json::from_str::<Rootfs>(&text) {
            r.tar = tar;
            r.cached = true;
            return Ok(r);
        }
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    let tmp = dir.join(format!("{key}.tar.tmp"));
    let mut include = board.debian.packages.clone();
    include.push(board.debian.kernel.clone());
    let created = epoch.unwrap_or_else(now);
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=essential")
        .arg("--format=tar")
        .arg("--quiet")
        .arg(format!("--architectures={}", board.arch().debian_arch()))
        .arg(format!("--include={}", include.join(",")))
        .env("SOURCE_DATE_EPOCH", created.to_string());
    for e in EXCLUDES {
        cmd.arg(format!("--dpkgopt=path-exclude={e}"));
    }
    cmd.arg(&board.debian.suite)
        .arg(&tmp)
        .arg(&board.debian.mirror);
    run(&mut cmd).with_context(|| {
        format!(
            "mmdebstrap could not bootstrap {} {} from {}",
            board.debian.suite,
            board.arch().debian_arch(),
            board.debian.mirror
        )
    })?;
    let packages = lockfile(&tmp)?;
    // The tarball is on disk before its name and the record that marks the
    // entry complete: a power cut never leaves a cache hit on a truncated tar.
    durable_file::sync_file(&tmp)?;
    std::fs::rename(&tmp, &tar)
        .with_context(|| format!("cannot move {} into the cache", tmp.display()))?;
    durable_file::sync_dir(&dir)?;
    let r = Rootfs {
        tar,
        key,
        packages,
        created,
        cached: false,
    };
    let text = serde_json::to_string_pretty(&r)?;
    durable_file::write(&meta, text.as_bytes(), durable_file::Options::new(0o644))?;
    Ok(r)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `name=version` of the installed packages, from dpkg's status file in the tarball.
fn lockfile(tar: &Path) -> Result<Vec<String>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg("./var/lib/dpkg/status")
        .output()
        .with_context(|| format!("cannot read {}", tar.display()))?;
    if !out.status.success() {
        bail!(
            "{} has no ./var/lib/dpkg/status: not a Debian rootfs",
            tar.display()
        );
    }
    Ok(parse_status(&String::from_utf8_lossy(&out.stdout)))
}

pub fn parse_status(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        if let (Some(p), Some(v), Some(s)) = (field("Package"), field("Version"), field("Status"))
            && s.ends_with(" installed")
        {
            {
                let arch = field("Architecture").filter(|a| *a != "all");
                let name = match arch {
                    Some(a) => format!("{p}:{a}"),
                    None => p.to_string(),
                };
                out.push(format!("{name}={v}"));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_becomes_a_sorted_lockfile() {
        let status = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13\n\n\
                      Package: base-files\nStatus: install ok installed\nArchitecture: all\nVersion: 12.4\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        assert_eq!(
            parse_status(status),
            ["base-files=12.4", "zlib1g:amd64=1:1.2.13"]
        );
    }

    #[test]
    fn key_depends_on_packages_not_their_order() {
        let path = cairn_build::board::boards_dir().join("qemu-x86_64.toml");
        let mut b = cairn_build::board::load(&path).unwrap();
        let k1 = key(&b);
        b.debian.packages.reverse();
        assert_eq!(key(&b), k1);
        b.debian.packages.push("htop".into());
        assert_ne!(key(&b), k1);
        b.board.arch = "arm64".into();
        assert_ne!(key(&b), k1);
    }
}
