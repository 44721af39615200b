//! The keyword settings: network, restart policy, cgroup placement.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};

macro_rules! keywords {
    ($(#[$m:meta])* $ty:ident, $what:expr, { $($(#[$vm:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$vm])* $variant),+
        }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    _ => Err(Error::new($what, s, "unknown keyword")),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keywords!(
    /// The app's network (`network` in the host config, `--net`).
    Network, What::Network, {
        /// The host's network stack.
        Host = "host",
        /// Its own network namespace with loopback, plus the published ports.
        #[default]
        Private = "private",
        /// Its own network namespace with loopback only.
        None = "none",
    }
);

keywords!(
    /// What systemd does when the app exits (`restart`, the unit's
    /// `Restart=`; the same words).
    Restart, What::Restart, {
        Always = "always",
        /// The default: a crash restarts, a clean exit does not (a one-shot
        /// job that finished stays finished).
        #[default]
        OnFailure = "on-failure",
        No = "no",
    }
);

keywords!(
    /// Where the app's cgroup goes (`--cgroups`).
    Cgroups, What::Cgroups, {
        /// A cgroup of its own: a systemd scope in machine.slice on cgroup
        /// v2, else `/cairn/<name>`.
        #[default]
        Separate = "separate",
        /// Below the calling unit's cgroup, which must have `Delegate=yes`,
        /// so the unit's stop, kill and accounting cover the app (as podman
        /// `--cgroups=split`). What app units use.
        Split = "split",
    }
);
