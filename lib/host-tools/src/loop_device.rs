//! Loop devices for tests that need a block device.

use std::path::{Path, PathBuf};

/// A loop device over a file, detached when dropped (tests run as root).
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// `losetup --find --show backing`; panics with losetup's words if it
    /// fails (a test helper).
    pub fn attach(backing: &Path) -> LoopDevice {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup {}: {}",
            backing.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        LoopDevice {
            path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .status();
    }
}
