//! The scenario registry.

use crate::runner::Scenario;
use disk_layout::Arch;

pub mod boot_chain;

const BOTH: &[Arch] = &[Arch::X86_64, Arch::Arm64];

static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "boot",
        arches: BOTH,
        run: boot_chain::boot,
    },
    Scenario {
        name: "fallback-bad-kernel",
        arches: BOTH,
        run: boot_chain::fallback_bad_kernel,
    },
    Scenario {
        name: "bad-signature",
        arches: BOTH,
        run: boot_chain::bad_signature,
    },
    Scenario {
        name: "verity-corruption",
        arches: BOTH,
        run: boot_chain::verity_corruption,
    },
];

/// All scenarios, in the order they are run and reported.
pub fn registry() -> &'static [Scenario] {
    SCENARIOS
}
