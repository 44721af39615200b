//! Installs what builds and tests need on a Debian 12 host, only when missing.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::sh;

/// (command that must exist, Debian package)
const HOST_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    // mmdebstrap only recommends it, and refuses a foreign (arm64) bootstrap
    // without it; installs here skip recommends.
    ("arch-test", "arch-test"),
    ("mkfs.erofs", "erofs-utils"),
    ("fsck.erofs", "erofs-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("fsck.fat", "dosfstools"),
    ("mtype", "mtools"),
    ("sgdisk", "gdisk"),
    // Its own package since Debian 12 (vboot-utils only recommends it).
    ("cgpt", "cgpt"),
    ("sfdisk", "fdisk"),
    ("veritysetup", "cryptsetup-bin"),
    ("systemd-dissect", "systemd-container"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-img", "qemu-utils"),
    ("qemu-aarch64-static", "qemu-user-static"),
    ("update-binfmts", "binfmt-support"),
    ("zstd", "zstd"),
    ("depmod", "kmod"),
    ("musl-gcc", "musl-tools"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    (
        "/usr/aarch64-linux-gnu/include/stdlib.h",
        "libc6-dev-arm64-cross",
    ),
    // OCI images for the container runtime's tests: made with umoci/skopeo
    // from busybox, served by a real registry on loopback.
    ("umoci", "umoci"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
    ("busybox", "busybox-static"),
    // cairn-run's tests compare it against runc and have podman (through
    // conmon) drive it as its OCI runtime.
    ("runc", "runc"),
    ("podman", "podman"),
    ("conmon", "conmon"),
    // The updater's D-Bus test runs a private dbus-daemon and drops to
    // `nobody` with setpriv.
    ("dbus-daemon", "dbus-daemon"),
    ("dbus-monitor", "dbus-bin"),
    ("setpriv", "util-linux"),
    ("systemd-analyze", "systemd"),
    // `cairn-build install` tests write to a loop device; the
    // `provision-cloud` scenario logs in over SSH with a key it makes.
    ("losetup", "mount"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    // Fleet coordination tests and the `fleet` VM scenario run a real etcd
    // on loopback.
    ("etcd", "etcd-server"),
];
const FILES: &[(&str, &str)] = &[
    // Time-zone tests read the system's TZif files.
    ("/usr/share/zoneinfo/Europe/Berlin", "tzdata"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64"),
    // cairn-run links libseccomp statically (see `artifacts`).
    ("/usr/lib/x86_64-linux-gnu/libseccomp.a", "libseccomp-dev"),
    (
        "/usr/lib/aarch64-linux-gnu/libseccomp.a",
        "libseccomp-dev:arm64",
    ),
];
pub const RUST_TARGETS: &[&str] = &[
    "x86_64-unknown-uefi",
    "aarch64-unknown-uefi",
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
];

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

pub fn setup() -> Result<()> {
    // An absolute path names a file that must exist; anything else a command.
    let present = |t: &str| {
        if t.starts_with('/') {
            std::path::Path::new(t).exists()
        } else {
            have(t)
        }
    };
    let mut missing: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(t, _)| !present(t))
        .map(|(_, p)| *p)
        .collect();
    missing.extend(
        FILES
            .iter()
            .filter(|(f, _)| !std::path::Path::new(f).exists())
            .map(|(_, p)| *p),
    );
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing packages; as root run: apt-get update && apt-get install -y {}",
                missing.join(" ")
            );
        }
        eprintln!("==> apt-get install {}", missing.join(" "));
        // The arm64 libseccomp for cross builds is a multiarch package.
        if missing.iter().any(|p| p.ends_with(":arm64")) && !foreign_arch_enabled("arm64") {
            sh(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        }
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        let mut install: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        // qemu-utils from backports (as on some cloud images) breaks the
        // install of Debian 12's qemu-system: pin it to the matching version.
        let mut extra = Vec::new();
        if let (Some(installed), Some(candidate)) = (
            dpkg_version("qemu-utils"),
            apt_candidate("qemu-system-common"),
        ) && installed != candidate
            && missing.iter().any(|p| p.starts_with("qemu-system"))
        {
            install.push(format!("qemu-utils={candidate}"));
            extra.push("--allow-downgrades");
        }
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&extra)
            .args(&install)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match installed {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => bail!(
            "rustup is needed for the UEFI and musl targets: install it from rustup.rs, then run: rustup target add {}",
            RUST_TARGETS.join(" ")
        ),
    };
    let want: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !want.is_empty() {
        eprintln!("==> rustup target add {}", want.join(" "));
        sh(Command::new("rustup").args(["target", "add"]).args(&want))?;
    }
    Ok(())
}

/// arm64 rootfs builds run maintainer scripts through qemu-user.
pub fn binfmt_arm64() -> Result<()> {
    if std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "as root run: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64"
        );
    }
    if !std::path::Path::new("/proc/sys/fs/binfmt_misc/register").exists() {
        sh(Command::new("mount").args([
            "-t",
            "binfmt_misc",
            "binfmt_misc",
            "/proc/sys/fs/binfmt_misc",
        ]))
        .context("cannot mount binfmt_misc")?;
    }
    sh(Command::new("update-binfmts").args(["--enable", "qemu-aarch64"]))
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn dpkg_version(pkg: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !v.is_empty()).then_some(v)
}

fn apt_candidate(pkg: &str) -> Option<String> {
    let o = Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Candidate:")
                .map(|v| v.trim().to_string())
        })
        .filter(|v| v != "(none)")
}

fn foreign_arch_enabled(arch: &str) -> bool {
    Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == arch)
        })
        .unwrap_or(false)
}
