//! Host config parsing and boot health checks.
//!
//! Binaries: `cairn-config` (applies the host config at boot; `status`;
//! `ensure-image` for app units), `cairn-mark-good` (`health` gates
//! boot-complete.target; without arguments it marks the booted slot
//! successful) and `cairn-app-generator` (a systemd generator: one unit per
//! `[[apps]]` entry). Everything that touches the system
//! takes a root directory so it can be tested on a scratch tree.

pub mod apply;
pub mod apps;
pub mod config;
pub mod health;
pub mod log;
pub mod slots;
pub mod source;
pub mod status;
pub mod units;

/// Files under /run/cairn (paths relative to `/`).
pub mod paths {
    /// Written by cairn-init: `a\n` or `b\n`.
    pub const BOOTED_SLOT: &str = "run/cairn/booted-slot";
    /// Written by cairn-init: the PARTUUID of the booted USR partition.
    pub const USR_PARTUUID: &str = "run/cairn/usr-partuuid";
    /// The effective host config (defaults filled in) for the other agents.
    pub const EFFECTIVE_CONFIG: &str = "run/cairn/config.toml";
    /// One line: where the config came from (`none` if nowhere).
    pub const CONFIG_SOURCE: &str = "run/cairn/config-source";
    /// One line, only when the config could not be (fully) applied.
    pub const CONFIG_ERROR: &str = "run/cairn/config-error";
    /// One line: the last health gate result.
    pub const HEALTH_RESULT: &str = "run/cairn/health";
    /// QEMU fw_cfg blob (`-fw_cfg name=opt/cairn/config,file=…`).
    pub const FW_CFG_DIR: &str = "sys/firmware/qemu_fw_cfg/by_name";
    /// Where oem.mount puts the OEM partition.
    pub const OEM_MOUNT: &str = "oem";
    /// The image trust policy cairn-run enforces, written from `[containers]`.
    pub const IMAGE_TRUST: &str = "etc/cairn/image-trust.json";
    /// Release keys as built into the image.
    pub const KEYS_JSON: &str = "usr/lib/cairn/keys.json";
}
