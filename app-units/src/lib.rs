//! Apps as systemd units. `cairn-app-generator` (src/main.rs) writes one
//! `cairn-app@<name>.service` per `[[apps]]` entry of the host config; the
//! library holds the unit text, the record of what was generated, the
//! reload/restart/stop decision cairn-config takes from it, and `ensure-image`
//! (an app's image from the store, the preloaded images or a registry).

pub mod units;
