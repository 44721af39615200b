//! Host tools the builder runs, and what to install when one is missing.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

/// (tool, Debian package providing it)
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("depmod", "kmod"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("systemctl", "systemd"),
    ("qemu-img", "qemu-utils"),
    ("tar", "tar"),
];

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fails with the one apt-get line that installs every missing tool.
pub fn require(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(t, _)| which(t).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    bail!(
        "missing host tools: {}; install them with: apt-get install -y {}",
        names.join(", "),
        pkgs.join(" ")
    )
}

/// Runs `cmd`; on failure the error carries the command and its stderr tail.
pub fn run(cmd: &mut Command) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{program} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(())
}
