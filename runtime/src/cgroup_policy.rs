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
