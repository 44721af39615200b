//! Volumes: `NAME:/path` or `/host/path:/path`, optionally `:ro` or `:rw`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};
use crate::name::{AbsPath, AppName, VolumeName};

/// Where named volumes live (on ROOT, so they survive updates), relative to `/`.
pub use disk_layout::state::VOLUMES_DIR;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// Kept under `/var/lib/cairn/volumes/<app>/<name>`.
    Named(VolumeName),
    /// A host path, bind-mounted as is.
    Path(AbsPath),
}

/// A volume of the host config: named or a host path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub source: VolumeSource,
    /// Never `/`.
    pub target: AbsPath,
    pub read_only: bool,
}

/// A host path mounted into the app: cairn-run's `--volume`. The host
/// config's named volumes become binds of their directory ([`Volume::bind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub host: AbsPath,
    /// Never `/`.
    pub target: AbsPath,
    pub read_only: bool,
}

/// The directory of a named volume.
pub fn volume_dir(app: &AppName, volume: &VolumeName) -> String {
    format!("/{VOLUMES_DIR}/{app}/{volume}")
}

impl Volume {
    /// The bind cairn-run is given for this volume of `app`.
    pub fn bind(&self, app: &AppName) -> Bind {
        let host = match &self.source {
            VolumeSource::Path(p) => p.clone(),
            // An app name and a volume name are single clean components.
            VolumeSource::Named(n) => AbsPath::from_clean(volume_dir(app, n)),
        };
        Bind {
            host,
            target: self.target.clone(),
            read_only: self.read_only,
        }
    }
}

/// `SRC:TARGET[:ro|:rw]` split and checked; SRC is left to the caller.
fn split(what: What, s: &str) -> Result<(&str, AbsPath, bool), Error> {
    let bad = |problem: String| Error::new(what, s, problem);
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, read_only) = match parts.as_slice() {
        [a, b] => (*a, *b, false),
        [a, b, "ro"] => (*a, *b, true),
        [a, b, "rw"] => (*a, *b, false),
        [_, _, opt] => return Err(bad(format!("unknown option {opt:?}"))),
        [_] => return Err(bad("it has no ':/path' to mount on".into())),
        _ => return Err(bad("it has too many ':'".into())),
    };
    let target: AbsPath = target
        .parse()
        .map_err(|e: Error| bad(format!("the container path {}", e.problem())))?;
    if target.is_root() {
        return Err(bad("it would mount over the container's root".into()));
    }
    Ok((src, target, read_only))
}

impl FromStr for Volume {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (src, target, read_only) = split(What::Volume, s)?;
        let source = if src.starts_with('/') {
            VolumeSource::Path(src.parse().map_err(|e: Error| {
                Error::new(What::Volume, s, format!("the host path {}", e.problem()))
            })?)
        } else {
            VolumeSource::Named(src.parse().map_err(|e: Error| {
                Error::new(What::Volume, s, format!("the volume name {}", e.problem()))
            })?)
        };
        Ok(Volume {
            source,
            target,
            read_only,
        })
    }
}

impl FromStr for Bind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (src, target, read_only) = split(What::Bind, s)?;
        if !src.starts_with('/') {
            return Err(Error::new(
                What::Bind,
                s,
                format!(
                    "{src:?} is not an absolute host path (named volumes are the host config's: it mounts /{VOLUMES_DIR}/<app>/<name>)"
                ),
            ));
        }
        let host = src.parse().map_err(|e: Error| {
            Error::new(What::Bind, s, format!("the host path {}", e.problem()))
        })?;
        Ok(Bind {
            host,
            target,
            read_only,
        })
    }
}

fn ro(read_only: bool) -> &'static str {
    if read_only { ":ro" } else { "" }
}

impl fmt::Display for VolumeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeSource::Named(n) => n.fmt(f),
            VolumeSource::Path(p) => p.fmt(f),
        }
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.source, self.target, ro(self.read_only))
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.host, self.target, ro(self.read_only))
    }
}
