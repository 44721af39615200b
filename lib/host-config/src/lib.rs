//! The host config (`config.toml`), the one place that documents and
//! validates it: [`config`] holds the schema of every section and
//! [`config::EXAMPLE`] the full example, [`apps`] the `[[apps]]` and
//! `[containers]` sections, [`source`] where the config comes from at boot.
//!
//! Components read their typed section from a parsed [`HostConfig`]:
//! cairn-config (host-setup/) applies users, hostname and the image trust
//! policy, cairn-mark-good (boot-health/) runs `[health]`,
//! cairn-app-generator (app-units/) turns `[[apps]]` into units.

pub mod apps;
mod check;
pub mod config;
pub mod files;
pub mod ignition;
pub mod network;
pub mod source;
pub mod system;
pub mod units;
pub mod update;

pub use config::{ConfigError, HostConfig};
