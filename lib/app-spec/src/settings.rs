//! What `cairn-run run --name` is asked for, the rules between settings,
//! and the argv that carries them.

use std::fmt;

use crate::env::{EnvVar, User};
use crate::limits::{Cpus, Memory, Pids};
use crate::modes::{Cgroups, Network};
use crate::name::{AbsPath, AppName};
use crate::publish::Publish;
use crate::volume::Bind;

/// Everything `cairn-run run --name` takes: what cairn-run's command line
/// parses into, and what the app generator turns each `[[apps]]` entry into.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSettings {
    pub name: AppName,
    /// An image reference (oci-image's grammar) or a stored image's name.
    pub image: String,
    /// Replaces the image's cmd (after `--`); empty keeps it.
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Bind>,
    pub network: Network,
    /// Private network only.
    pub publish: Vec<Publish>,
    pub memory: Option<Memory>,
    pub cpus: Option<Cpus>,
    pub pids: Option<Pids>,
    pub user: Option<User>,
    pub workdir: Option<AbsPath>,
    pub read_write: bool,
    /// The container's hostname; the app name when unset. (cairn-run's
    /// own: the host config has no such key.)
    pub hostname: Option<String>,
    pub cgroups: Cgroups,
}

impl AppSettings {
    /// An app with every setting at its default.
    pub fn new(name: AppName, image: impl Into<String>) -> Self {
        AppSettings {
            name,
            image: image.into(),
            command: Vec::new(),
            env: Vec::new(),
            volumes: Vec::new(),
            network: Network::default(),
            publish: Vec::new(),
            memory: None,
            cpus: None,
            pids: None,
            user: None,
            workdir: None,
            read_write: false,
            hostname: None,
            cgroups: Cgroups::default(),
        }
    }

    /// The rules between settings (each value is valid by its type).
    pub fn check(&self) -> Result<(), Conflict> {
        check_publish(self.network, &self.publish)?;
        check_targets(self.volumes.iter().map(|v| &v.target))
    }
}

/// Settings that cannot go together. Displayed in cairn-run's terms
/// (flags); the host config words them for its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Ports are forwarded into a private network; this app has another.
    PublishOutsidePrivate(Network),
    /// The `index`th port takes a host port an earlier one has (per protocol).
    HostPortTwice { index: usize, publish: Publish },
    /// The `index`th volume mounts where an earlier one does.
    TargetTwice { index: usize, target: AbsPath },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::PublishOutsidePrivate(net) => write!(
                f,
                "--publish forwards host ports into the app's private network; with --net {net} {}",
                match net {
                    Network::Host => "the app binds host ports itself: remove --publish",
                    _ => "nothing can reach the app: use --net private",
                }
            ),
            Conflict::HostPortTwice { publish, .. } => write!(
                f,
                "host port {}/{} is published twice: give each --publish its own host port",
                publish.host_port,
                publish.proto()
            ),
            Conflict::TargetTwice { target, .. } => write!(
                f,
                "{target} is mounted twice: give each --volume its own container path"
            ),
        }
    }
}

impl std::error::Error for Conflict {}

/// Port forwards only make sense into the app's own network namespace, and
/// a host port can be forwarded once per protocol.
pub fn check_publish(network: Network, publish: &[Publish]) -> Result<(), Conflict> {
    if network != Network::Private && !publish.is_empty() {
        return Err(Conflict::PublishOutsidePrivate(network));
    }
    for (index, p) in publish.iter().enumerate() {
        if publish[..index]
            .iter()
            .any(|o| o.host_port == p.host_port && o.udp == p.udp)
        {
            return Err(Conflict::HostPortTwice { index, publish: *p });
        }
    }
    Ok(())
}

/// One mount per container path (a second would hide the first).
pub fn check_targets<'a>(targets: impl IntoIterator<Item = &'a AbsPath>) -> Result<(), Conflict> {
    let mut seen: Vec<&AbsPath> = Vec::new();
    for (index, t) in targets.into_iter().enumerate() {
        if seen.contains(&t) {
            return Err(Conflict::TargetTwice {
                index,
                target: t.clone(),
            });
        }
        seen.push(t);
    }
    Ok(())
}

/// The arguments of `cairn-run` (after the program name) that run `s`:
/// `run --name <app> [--cgroups split] --net <net> [flags…] <image> [-- <command…>]`.
/// Every value is written in its canonical text, which the flag's parser
/// reads back to the same value.
pub fn run_args(s: &AppSettings) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "--name".into(), s.name.to_string()];
    let mut flag = |f: &str, v: &dyn fmt::Display| {
        a.push(f.to_string());
        a.push(v.to_string());
    };
    if s.cgroups != Cgroups::default() {
        flag("--cgroups", &s.cgroups);
    }
    flag("--net", &s.network);
    for p in &s.publish {
        flag("--publish", p);
    }
    for e in &s.env {
        flag("--env", e);
    }
    for v in &s.volumes {
        flag("--volume", v);
    }
    if let Some(m) = &s.memory {
        flag("--memory", m);
    }
    if let Some(c) = &s.cpus {
        flag("--cpus", c);
    }
    if let Some(p) = &s.pids {
        flag("--pids-limit", p);
    }
    if let Some(u) = &s.user {
        flag("--user", u);
    }
    if let Some(w) = &s.workdir {
        flag("--workdir", w);
    }
    if let Some(h) = &s.hostname {
        flag("--hostname", h);
    }
    if s.read_write {
        a.push("--read-write".into());
    }
    a.push(s.image.clone());
    if !s.command.is_empty() {
        a.push("--".into());
        a.extend(s.command.iter().cloned());
    }
    a
}
