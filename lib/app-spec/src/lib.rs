//! The app grammar, in one place: every value an app is configured with,
//! whether written in the host config's `[[apps]]` (host-config) or given
//! to `cairn-run run --name` (runtime), and the argv between the two.
//!
//! Each value is a type whose `FromStr` checks it (an [`Error`] names the
//! grammar, says what is wrong and gives a valid example) and whose
//! `Display` is its canonical text, which `FromStr` reads back to the same
//! value:
//!
//! | type | text | host config | cairn-run |
//! |---|---|---|---|
//! | [`AppName`] | `[a-z0-9][a-z0-9-]*`, ≤ 63 | `name` | `--name` |
//! | [`Volume`] | `NAME:/path` or `/host:/path`, `:ro`/`:rw` | `volumes` | |
//! | [`Bind`] | `/host:/path`, `:ro`/`:rw` | | `--volume` |
//! | [`Publish`] | `HOST:CONTAINER[/tcp\|/udp]` | `ports` | `--publish` |
//! | [`Network`] | `host`, `private`, `none` | `network` | `--net` |
//! | [`Restart`] | `always`, `on-failure`, `no` | `restart` | (systemd's `Restart=`) |
//! | [`Memory`] | bytes or `256M`, `1GiB`, … ≥ 6M | `memory` | `--memory` |
//! | [`Cpus`] | `0.01` to `4096` | `cpus` | `--cpus` |
//! | [`Pids`] | `1` to `4194304` | `pids` | `--pids-limit` |
//! | [`EnvVar`] | `NAME=VALUE` | `env` (a table) | `--env` |
//! | [`User`] | `user[:group]` | `user` | `--user` |
//! | [`AbsPath`] | `/clean/path` | `workdir` | `--workdir` |
//! | [`Cgroups`] | `separate`, `split` | | `--cgroups` |
//!
//! [`AppSettings`] is what `cairn-run run --name` takes; [`run_args`] writes
//! it as cairn-run's arguments (cairn-app-generator's ExecStart), and
//! cairn-run's command line parses them back with these same types.
//! [`AppSettings::check`] holds the rules between settings (ports need the
//! private network; no host port or mount point twice).

mod env;
mod error;
mod limits;
mod modes;
mod name;
mod publish;
mod settings;
mod volume;

pub use env::{EnvVar, User};
pub use error::{Error, What};
pub use limits::{Cpus, MAX_CPUS, MAX_MEMORY, MAX_PIDS, MIN_CPUS, MIN_MEMORY, Memory, Pids};
pub use modes::{Cgroups, Network, Restart};
pub use name::{AbsPath, AppName, MAX_APP_NAME, MAX_VOLUME_NAME, VolumeName};
pub use publish::Publish;
pub use settings::{AppSettings, Conflict, check_publish, check_targets, run_args};
pub use volume::{Bind, VOLUMES_DIR, Volume, VolumeSource, volume_dir};

#[cfg(test)]
mod tests;
