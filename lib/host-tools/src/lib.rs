//! The host tools a test needs (sgdisk, cgpt, umoci, dbus-daemon, …) and the
//! one rule for a missing one: under `cargo xtask test` (CI sets
//! `CAIRN_REQUIRE_IMAGE_TESTS=1`) the test fails and names the Debian
//! package; run bare (`cargo test` on a laptop) it prints `SKIP:` with the
//! reason and the test returns early. A test that skips under CI is a test
//! that did not run.
//!
//! [`etcd::EtcdServer`] starts a real etcd for the tests of the fleet
//! coordination (fleet-lock, the updater) under the same rule.

use std::path::{Path, PathBuf};

pub mod etcd;
mod loop_device;

pub use loop_device::LoopDevice;

/// Set to `1` by `cargo xtask test`: every prerequisite must be there.
pub const REQUIRE_ENV: &str = "CAIRN_REQUIRE_IMAGE_TESTS";

/// Whether this run must not skip anything.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1")
}

/// Where `tool` is: `PATH`, then the folders a root shell has, since test
/// runners often start without the sbin folders.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether every `(tool, Debian package)` is installed. A missing one fails
/// the test under [`REQUIRE_ENV`], else is reported as a skip (false).
pub fn require(tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(t, _)| which(t).is_none())
        .map(|(t, p)| format!("{t} (Debian package {p})"))
        .collect();
    missing.is_empty() || unavailable(&format!("missing {}", missing.join(", ")))
}

/// A prerequisite that is not there (a tool, root, a kernel feature): panics
/// under [`REQUIRE_ENV`], else prints why the test is skipped. Returns false.
pub fn unavailable(what: &str) -> bool {
    if required() {
        panic!(
            "{what} ({REQUIRE_ENV}=1): run `cargo xtask setup`, which installs what the tests need"
        );
    }
    eprintln!("SKIP: {what}");
    false
}

/// `tool` as a path for a command, when [`require`] already said it is there.
pub fn path_of(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| Path::new(tool).to_path_buf())
}

/// Whether an unprivileged host user (nobody, 65534, no groups) can run
/// `path true`: how a test shows that files of images and apps are out of
/// reach of host users.
pub fn nobody_can_run(path: &Path) -> bool {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // Through a shell: setpriv itself keeps root's capabilities until
        // its execve (CAP_DAC_OVERRIDE would reach any path), the shell it
        // starts runs with none, as a host user's would.
        .args(["/bin/sh", "-c", "exec \"$0\" true"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_and_reports_a_missing_one() {
        assert!(which("sh").is_some());
        assert!(require(&[("sh", "dash")]));
        assert!(which("no-such-tool-cairn").is_none());
        if !required() {
            assert!(!require(&[("no-such-tool-cairn", "nothing")]));
        } else {
            let r = std::panic::catch_unwind(|| require(&[("no-such-tool-cairn", "nothing")]));
            assert!(r.is_err(), "a missing tool must fail under {REQUIRE_ENV}=1");
        }
    }
}
