//! Which cgroup manager to use, and whether a spec's device rules can be
//! enforced: libcgroups ignores `linux.resources.devices` on cgroup v2
//! unless built with `cgroupsv2_devices`, and we refuse rather than run a
//! container whose device policy would silently not apply.

use libcontainer::oci_spec::runtime::Spec;

/// The host's cgroup layout, as libcgroups classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified;
    /// libcgroups drives it with the v1 manager.
    Hybrid,
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
}

/// True when this build carries the eBPF device controller for cgroup v2.
pub const V2_DEVICES_BUILT_IN: bool = false;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "the spec has {0} device cgroup rule(s) (linux.resources.devices), but this host uses cgroup v2 \
         and cairn-run is built without the eBPF device controller, so they would not be enforced; \
         remove the rules from config.json (the default /dev devices need none) or run on a cgroup v1/hybrid host"
    )]
    UnenforceableDeviceRules(usize),
    #[error("--cgroups split needs cgroup v2 (this host is {0:?}); leave --cgroups at its default")]
    SplitNeedsUnified(CgroupMode),
    #[error(
        "--cgroups split needs to run as a systemd unit's main process, but cairn-run is in cgroup {0:?}; \
         run it from a unit with Delegate=yes, or leave --cgroups at its default"
    )]
    SplitNotInUnit(String),
    #[error(
        "--cgroups split: systemd did not delegate cgroup {0} (no trusted.delegate or user.delegate xattr); \
         add Delegate=yes to the unit, or leave --cgroups at its default"
    )]
    SplitNotDelegated(String),
}

/// Names of the two cgroups `--cgroups split` makes below the unit's own.
pub const SUPERVISOR_CGROUP: &str = "supervisor";
pub const PAYLOAD_CGROUP: &str = "payload";

/// Where an app's processes go when its systemd unit delegates its cgroup
/// (`Delegate=yes`): the container below the unit, so systemd's stop, kill
/// and accounting cover it, and cairn-run beside it (a cgroup with children
/// may not hold processes). The layout systemd's CGROUP_DELEGATION.md asks
/// of a delegated executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCgroups {
    /// The unit's cgroup, relative to the cgroup2 mount (`/system.slice/x.service`).
    pub unit: String,
}

impl SplitCgroups {
    /// Where cairn-run moves itself.
    pub fn supervisor(&self) -> String {
        format!("{}/{SUPERVISOR_CGROUP}", self.unit)
    }

    /// The container's cgroupsPath (cgroupfs form).
    pub fn payload(&self) -> String {
        format!("{}/{PAYLOAD_CGROUP}", self.unit)
    }
}

/// `--cgroups split` from `/proc/self/cgroup` (its `0::` line), the host's
/// layout, and whether systemd marked the unit's cgroup delegated (the
/// `trusted.delegate` xattr systemd sets for `Delegate=yes`).
pub fn split_cgroups(
    proc_self_cgroup: &str,
    mode: CgroupMode,
    delegated: impl FnOnce(&str) -> bool,
) -> Result<SplitCgroups, PolicyError> {
    if mode != CgroupMode::Unified {
        return Err(PolicyError::SplitNeedsUnified(mode));
    }
    let own = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .unwrap_or_default();
    if own.is_empty() || own == "/" {
        return Err(PolicyError::SplitNotInUnit(own.to_string()));
    }
    // Started again inside the same unit cgroup (e.g. by hand in a shell of
    // the unit): the unit is the parent, not the supervisor cgroup itself.
    let unit = own
        .strip_suffix(&format!("/{SUPERVISOR_CGROUP}"))
        .unwrap_or(own);
    if !delegated(unit) {
        return Err(PolicyError::SplitNotDelegated(unit.to_string()));
    }
    Ok(SplitCgroups {
        unit: unit.to_string(),
    })
}

/// Whether systemd delegated the cgroup at `unit` (relative to the cgroup2
/// mount) to its unit: the `trusted.delegate` xattr it sets for
/// `Delegate=yes` (v251+), or `user.delegate` (newer versions write both).
pub fn systemd_delegated(unit: &str) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("{CGROUP2_MOUNT}{unit}")) else {
        return false;
    };
    [c"trusted.delegate", c"user.delegate"].iter().any(|name| {
        let mut value = [0u8; 8];
        // SAFETY: NUL-terminated strings and a buffer of the length we pass.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        n == 1 && value[0] == b'1'
    })
}

pub const CGROUP2_MOUNT: &str = "/sys/fs/cgroup";

/// Moves the calling process (all its threads: call it single-threaded)
/// into the supervisor cgroup, creating it.
pub fn enter_supervisor(split: &SplitCgroups) -> std::io::Result<()> {
    let dir = format!("{CGROUP2_MOUNT}{}", split.supervisor());
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot create cgroup {dir}: {e}"),
            ));
        }
    }
    // "0" names the writer itself and moves its whole thread group.
    std::fs::write(format!("{dir}/cgroup.procs"), "0").map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot move cairn-run into {dir}: {e}"))
    })
}

pub fn detect() -> std::io::Result<CgroupMode> {
    use libcgroups::common::{CgroupSetup, get_cgroup_setup};
    match get_cgroup_setup() {
        Ok(CgroupSetup::Legacy) => Ok(CgroupMode::Legacy),
        Ok(CgroupSetup::Hybrid) => Ok(CgroupMode::Hybrid),
        Ok(CgroupSetup::Unified) => Ok(CgroupMode::Unified),
        Err(e) => Err(std::io::Error::other(format!(
            "cannot tell the cgroup layout of /sys/fs/cgroup: {e}"
        ))),
    }
}

/// Whether device rules in a spec take effect on a host in `mode`.
pub fn device_rules_enforced(mode: CgroupMode, v2_devices: bool) -> bool {
    mode != CgroupMode::Unified || v2_devices
}

/// Refuses a spec whose device rules would be ignored.
pub fn check_device_rules(
    rules: usize,
    mode: CgroupMode,
    v2_devices: bool,
) -> Result<(), PolicyError> {
    if rules > 0 && !device_rules_enforced(mode, v2_devices) {
        return Err(PolicyError::UnenforceableDeviceRules(rules));
    }
    Ok(())
}

pub fn device_rule_count(spec: &Spec) -> usize {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .map_or(0, |d| d.len())
}

/// The systemd cgroup manager is used for apps only when systemd is PID 1
/// and owns a unified hierarchy; everywhere else the cgroupfs managers.
pub fn use_systemd(mode: CgroupMode, systemd_running: bool) -> bool {
    mode == CgroupMode::Unified && systemd_running
}

pub fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use CgroupMode::*;

    #[test]
    fn device_rule_decision_table() {
        for (rules, mode, feature, ok) in [
            (0, Unified, false, true),
            (3, Unified, false, false),
            (3, Unified, true, true),
            (3, Hybrid, false, true),
            (3, Legacy, false, true),
            (0, Legacy, false, true),
        ] {
            assert_eq!(
                check_device_rules(rules, mode, feature).is_ok(),
                ok,
                "{rules} {mode:?} {feature}"
            );
        }
    }

    #[test]
    fn systemd_decision_table() {
        for (mode, running, want) in [
            (Unified, true, true),
            (Unified, false, false),
            (Hybrid, true, false),
            (Legacy, true, false),
        ] {
            assert_eq!(use_systemd(mode, running), want, "{mode:?} {running}");
        }
    }

    #[test]
    fn split_cgroups_table() {
        let unit = "/system.slice/system-cairn\\x2dapp.slice/cairn-app@web.service";
        let procs = format!("0::{unit}\n");
        let again = format!("0::{unit}/supervisor\n");
        for (text, mode, delegated, want) in [
            (procs.as_str(), Unified, true, Ok(unit)),
            (again.as_str(), Unified, true, Ok(unit)),
            (procs.as_str(), Hybrid, true, Err("cgroup v2")),
            (procs.as_str(), Legacy, true, Err("cgroup v2")),
            (procs.as_str(), Unified, false, Err("Delegate=yes")),
            ("0::/\n", Unified, true, Err("main process")),
            ("", Unified, true, Err("main process")),
            (
                "12:pids:/x\n1:name=systemd:/x\n",
                Unified,
                true,
                Err("main process"),
            ),
        ] {
            let got = split_cgroups(text, mode, |_| delegated);
            match (got, want) {
                (Ok(s), Ok(u)) => {
                    assert_eq!(s.unit, u, "{text:?}");
                    assert_eq!(s.supervisor(), format!("{u}/supervisor"));
                    assert_eq!(s.payload(), format!("{u}/payload"));
                }
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{text:?} {mode:?}: {e}")
                }
                (got, want) => panic!("{text:?} {mode:?} {delegated}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn counts_rules_in_a_spec() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap();
        assert_eq!(device_rule_count(&spec), 1);
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"}, "linux": {}
        }))
        .unwrap();
        assert_eq!(device_rule_count(&spec), 0);
    }
}
