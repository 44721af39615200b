//! Where a test run keeps what it produced:
//! `<root>/<scenario>-<arch>-<UTC timestamp>/` with console.log,
//! qemu-cmd.txt and qemu-stderr.log, plus the disk overlay while it matters.

use anyhow::{Context, Result};
use disk_layout::Arch;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Files of a VM folder that are only useful while the VM runs or to debug a
/// failure; the overlay can grow to gigabytes.
pub const DISPOSABLE_FILES: [&str; 2] = ["disk.qcow2", "efivars.fd"];

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = reboot_window::DateTime::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Creates a fresh `<root>/<scenario>-<arch>-<timestamp>` folder; a numeric
/// suffix keeps two runs in the same second apart.
pub fn new_artifacts_dir(root: &Path, scenario: &str, arch: Arch) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let base = format!(
        "{scenario}-{}-{}",
        arch.name(),
        utc_timestamp(SystemTime::now())
    );
    for i in 1.. {
        let name = if i == 1 {
            base.clone()
        } else {
            format!("{base}-{i}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("the suffix loop only ends by returning")
}

/// Deletes the disposable files of a VM folder, keeping the logs.
pub fn remove_disposable(dir: &Path) -> Result<()> {
    for name in DISPOSABLE_FILES {
        let f = dir.join(name);
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = |s| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "19700101-000000");
        assert_eq!(t(951_782_400), "20000229-000000");
        assert_eq!(t(1_767_225_599), "20251231-235959");
    }

    #[test]
    fn artifact_dirs_are_unique() -> Result<()> {
        let root = std::env::temp_dir().join(format!("qemu-tests-art-{}", std::process::id()));
        let a = new_artifacts_dir(&root, "smoke", Arch::Arm64)?;
        let b = new_artifacts_dir(&root, "smoke", Arch::Arm64)?;
        assert_ne!(a, b);
        let name = a
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(name.starts_with("smoke-arm64-"), "{name}");
        std::fs::write(a.join("disk.qcow2"), b"x")?;
        std::fs::write(a.join("console.log"), b"x")?;
        remove_disposable(&a)?;
        assert!(!a.join("disk.qcow2").exists() && a.join("console.log").exists());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
