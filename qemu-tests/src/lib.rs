//! QEMU VM test harness and scenarios.
//!
//! [`Vm`] boots a disk image under real UEFI firmware (OVMF / AAVMF) on a
//! copy-on-write overlay, captures the serial console with host timestamps,
//! logs in and runs shell commands over it, and controls power through QMP.
//! [`run_scenarios`] runs registered [`Scenario`]s, at most two VMs at once,
//! and prints `N passed, N failed`.

pub mod artifacts;
mod console;
pub mod host;
mod pattern;
pub mod prep;
mod qmp;
pub mod relay;
pub mod runner;
pub mod scenarios;
pub mod shell;
pub mod vm;

pub use console::{Line, Mark};
pub use host::{Accel, Firmware, accel_for, missing_requirements};
pub use pattern::Pattern;
pub use qmp::QmpEvent;
pub use runner::{
    Ctx, CtxFactory, CtxTemplate, DEFAULT_PARALLEL, ImageSet, Report, Scenario, ScenarioResult,
    UpdateInputs, run_scenarios_in,
};
pub use scenarios::run_scenarios;
pub use vm::{HOST_ADDR_FROM_GUEST, HostFwd, OnReboot, Vm, VmSpec, default_cpu, host_url};
