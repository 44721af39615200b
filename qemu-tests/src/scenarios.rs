//! The scenario registry. Scenarios that boot Cairn images are added here
//! once the images boot (the lead wires them).

use crate::runner::Scenario;

static SCENARIOS: &[Scenario] = &[];

/// All scenarios, in the order they are run and reported.
pub fn registry() -> &'static [Scenario] {
    SCENARIOS
}
