//! Why a pending release rolled back. The boot manager only counts tries, so
//! the agent gathers what it can afterwards, from the most specific cause to
//! the least:
//! 1. a health-check failure that cairn-health recorded on ROOT while the new
//!    slot was running (it names the failed checks);
//! 2. the slot's data no longer matching the dm-verity tree of the release
//!    the agent wrote and verified (corrupted on disk after the write);
//! 3. otherwise the slot never got as far as its health checks: the kernel,
//!    the initramfs or early boot failed.

use std::path::{Path, PathBuf};

use disk_layout::Slot;
use release_manifest::Verity;

use crate::Error;
use crate::state::write_file;

/// Verity geometry of the release being installed, kept beside progress.json
/// so a later boot can re-check the slot without the repository.
const PENDING_VERITY: &str = "pending-verity.json";

/// Records `verity` of the release about to be written.
pub fn remember(state_dir: &Path, verity: &Verity) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(verity).map_err(|e| Error::State(format!("{PENDING_VERITY}: {e}")))?;
    write_file(&state_dir.join(PENDING_VERITY), &bytes)
}

/// The health-check records: `<state_dir>/../health`, i.e.
/// `/var/lib/cairn/health` beside the agent's `/var/lib/cairn/updater`.
pub fn health_dir(state_dir: &Path) -> PathBuf {
    state_dir.parent().unwrap_or(Path::new("/")).join("health")
}

/// The health failure recorded for `slot` running `version`, if any.
fn health_failure(state_dir: &Path, slot: Slot, version: &str) -> Option<String> {
    let p = health_dir(state_dir).join(format!("failed-{}", slot.letter()));
    let text = std::fs::read_to_string(p).ok()?;
    let mut lines = text.lines();
    let v = lines.next()?.strip_prefix("version=")?;
    if v != version {
        return None;
    }
    let reasons: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    Some(reasons.join("; "))
}

/// Re-checks the slot against the remembered verity tree; `Some(error)` when
/// it does not verify.
fn verity_failure(state_dir: &Path, slot_path: &Path) -> Option<String> {
    let bytes = std::fs::read(state_dir.join(PENDING_VERITY)).ok()?;
    let verity: Verity = serde_json::from_slice(&bytes).ok()?;
    let mut f = match std::fs::File::open(slot_path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot read {}: {e}", slot_path.display())),
    };
    verity_tree::verify(&mut f, &verity.to_info())
        .err()
        .map(|e| e.to_string())
}

/// The reason recorded for a rollback of `version` from `slot`.
pub fn rollback_reason(state_dir: &Path, slot: Slot, slot_path: &Path, version: &str) -> String {
    let s = slot.letter();
    if let Some(why) = health_failure(state_dir, slot, version) {
        return format!("rolled back: health check failed on slot {s}: {why}");
    }
    if let Some(err) = verity_failure(state_dir, slot_path) {
        return format!(
            "rolled back: dm-verity: slot {s} no longer matches {version} on disk ({err})"
        );
    }
    format!(
        "rolled back: slot {s} used up its tries without reaching its health checks (kernel or early boot failed)"
    )
}

/// Forgets the remembered verity geometry once the update is settled.
pub fn forget(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(PENDING_VERITY));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_records_name_the_check_only_for_the_same_version() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("updater");
        std::fs::create_dir_all(health_dir(&state)).unwrap();
        std::fs::write(
            health_dir(&state).join("failed-b"),
            "version=2.0.0\ncommand /bin/app-check exited with 1\n",
        )
        .unwrap();
        let none = t.path().join("missing-slot");
        let r = rollback_reason(&state, Slot::B, &none, "2.0.0");
        assert!(
            r.contains("health check failed on slot b: command /bin/app-check"),
            "{r}"
        );
        // Another version's record says nothing about this one.
        let r = rollback_reason(&state, Slot::B, &none, "3.0.0");
        assert!(r.contains("without reaching its health checks"), "{r}");
    }
}
