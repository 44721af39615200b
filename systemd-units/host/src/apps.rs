//! `[[apps]]` and `[containers]` of the host config: the schema and its
//! validation. Each app becomes a systemd unit (see [`crate::units`]) whose
//! main process is `cairn-run run --name <app>`.
//!
//! Validation mirrors what `cairn-run` accepts (volume, port, memory and cpu
//! syntax) so a bad value is reported at boot against its key, not later as a
//! unit that fails to start.

use std::collections::BTreeMap;

use oci_image::{PublicKey, Reference, Requirement, TrustPolicy};
use toml::{Table, Value};

use crate::config::{ConfigError, Ctx, kind};

const APP_KEYS: &[&str] = &[
    "name",
    "image",
    "command",
    "env",
    "volumes",
    "network",
    "ports",
    "memory",
    "cpus",
    "pids",
    "restart",
    "health",
    "boot_health",
    "read_write",
    "user",
    "workdir",
    "notify",
];
const CONTAINERS_KEYS: &[&str] = &["insecure_registries", "trust"];
const TRUST_KEYS: &[&str] = &["prefix", "accept_anything", "key"];

/// Below this cairn-run cannot even set the container up (its own limit).
pub const MIN_MEMORY: u64 = 6 << 20;
pub const MAX_CPUS: f64 = 4096.0;
/// The kernel's pid_max ceiling.
pub const MAX_PIDS: u64 = 4_194_304;
/// App names become unit instance names, directory names and host names.
pub const MAX_NAME: usize = 63;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    Host,
    /// Its own network namespace; `ports` forward into it.
    #[default]
    Private,
    /// Its own network namespace with loopback only.
    None,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::Private => "private",
            Network::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    Always,
    /// The default: a crash restarts, a clean exit does not (a one-shot job
    /// that finished stays finished).
    #[default]
    OnFailure,
    No,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::No => "no",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// Kept under /var/lib/cairn/volumes/<app>/<name> on ROOT.
    Named(String),
    /// A host path, bind-mounted as is.
    Path(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
}

/// Where named volumes live (on ROOT, so they survive updates).
pub const VOLUMES_DIR: &str = "/var/lib/cairn/volumes";

impl Volume {
    /// The host side as cairn-run's `--volume` wants it.
    pub fn host_path(&self, app: &str) -> String {
        match &self.source {
            VolumeSource::Named(n) => format!("{VOLUMES_DIR}/{app}/{n}"),
            VolumeSource::Path(p) => p.clone(),
        }
    }

    /// `--volume HOST:CTR[:ro]`.
    pub fn to_flag(&self, app: &str) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.host_path(app), self.target)
    }
}

impl std::fmt::Display for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let src = match &self.source {
            VolumeSource::Named(n) | VolumeSource::Path(n) => n,
        };
        let ro = if self.read_only { ":ro" } else { "" };
        write!(f, "{src}:{}{ro}", self.target)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub host: u16,
    pub container: u16,
    pub udp: bool,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.udp { "udp" } else { "tcp" };
        write!(f, "{}:{}/{proto}", self.host, self.container)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub name: String,
    /// As written (`name:tag` or `name@sha256:…`); checked by oci-image.
    pub image: String,
    /// Replaces the image's entrypoint and cmd when not empty.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub network: Network,
    pub ports: Vec<Port>,
    /// Bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub restart: Restart,
    /// Run inside the app (`cairn-run exec`); must exit 0 when healthy.
    pub health: Vec<String>,
    /// Part of the boot health gate: a release that breaks it rolls back.
    pub boot_health: bool,
    pub read_write: bool,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// The app speaks sd_notify (Type=notify).
    pub notify: bool,
}

impl App {
    pub fn unit_name(&self) -> String {
        unit_name(&self.name)
    }

    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let s = |v: &str| Value::String(v.to_string());
        let strs = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        t.insert("name".into(), s(&self.name));
        t.insert("image".into(), s(&self.image));
        if !self.command.is_empty() {
            t.insert("command".into(), strs(&self.command));
        }
        if !self.env.is_empty() {
            let env = self.env.iter().map(|(k, v)| (k.clone(), s(v))).collect();
            t.insert("env".into(), Value::Table(env));
        }
        if !self.volumes.is_empty() {
            let v: Vec<String> = self.volumes.iter().map(Volume::to_string).collect();
            t.insert("volumes".into(), strs(&v));
        }
        t.insert("network".into(), s(self.network.as_str()));
        if !self.ports.is_empty() {
            let p: Vec<String> = self.ports.iter().map(Port::to_string).collect();
            t.insert("ports".into(), strs(&p));
        }
        if let Some(m) = self.memory {
            t.insert("memory".into(), int(m));
        }
        if let Some(c) = self.cpus {
            t.insert("cpus".into(), Value::Float(c));
        }
        if let Some(p) = self.pids {
            t.insert("pids".into(), int(p));
        }
        t.insert("restart".into(), s(self.restart.as_str()));
        if !self.health.is_empty() {
            t.insert("health".into(), strs(&self.health));
        }
        t.insert("boot_health".into(), Value::Boolean(self.boot_health));
        t.insert("read_write".into(), Value::Boolean(self.read_write));
        if let Some(u) = &self.user {
            t.insert("user".into(), s(u));
        }
        if let Some(w) = &self.workdir {
            t.insert("workdir".into(), s(w));
        }
        t.insert("notify".into(), Value::Boolean(self.notify));
        t
    }
}

/// `cairn-app@<name>.service`.
pub fn unit_name(app: &str) -> String {
    format!("cairn-app@{app}.service")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustEntry {
    pub prefix: String,
    /// A `cairn-ed25519-public <hex>` line; `None` accepts anything.
    pub key: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Containers {
    /// `host[:port]` of registries reached over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    pub trust: Vec<TrustEntry>,
}

impl Containers {
    /// The policy cairn-run enforces (/etc/cairn/image-trust.json).
    pub fn policy(&self) -> TrustPolicy {
        let mut p = TrustPolicy::new();
        for e in &self.trust {
            let req = match e.key.as_deref().map(PublicKey::parse) {
                None => Requirement::AcceptAnything,
                Some(Ok(k)) => Requirement::Signed(vec![k]),
                // Validation parsed every key; nothing else reaches here.
                Some(Err(_)) => continue,
            };
            // Validation checked every prefix with this same call.
            let _ = p.add(&e.prefix, req);
        }
        p
    }

    /// Whether pulls of `image` go over plain HTTP.
    pub fn is_insecure(&self, image: &str) -> bool {
        Reference::parse(image).is_ok_and(|r| self.insecure_registries.contains(&r.registry))
    }

    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert(
            "insecure_registries".into(),
            Value::Array(
                self.insecure_registries
                    .iter()
                    .map(|r| Value::String(r.clone()))
                    .collect(),
            ),
        );
        let rules = self
            .trust
            .iter()
            .map(|e| {
                let mut r = Table::new();
                r.insert("prefix".into(), Value::String(e.prefix.clone()));
                match &e.key {
                    Some(k) => r.insert("key".into(), Value::String(k.clone())),
                    None => r.insert("accept_anything".into(), Value::Boolean(true)),
                };
                Value::Table(r)
            })
            .collect();
        t.insert("trust".into(), Value::Array(rules));
        t
    }
}

pub(crate) fn parse_containers(cx: &Ctx, t: &Table) -> Result<Containers, ConfigError> {
    cx.unknown_keys("containers", t, CONTAINERS_KEYS)?;
    let mut c = Containers::default();
    if let Some(v) = t.get("insecure_registries") {
        let k = "containers.insecure_registries";
        c.insecure_registries = cx.strings(k, v)?;
        for (i, r) in c.insecure_registries.iter().enumerate() {
            check_registry(r).map_err(|m| cx.err(&format!("{k}[{i}]"), m))?;
        }
    }
    if let Some(v) = t.get("trust") {
        let mut policy = TrustPolicy::new();
        for (i, r) in cx.array("containers.trust", v)?.iter().enumerate() {
            let key = format!("containers.trust[{i}]");
            let rt = cx.table(&key, r)?;
            cx.unknown_keys(&key, rt, TRUST_KEYS)?;
            let pk = format!("{key}.prefix");
            let prefix = match rt.get("prefix") {
                Some(v) => cx.string(&pk, v)?,
                None => return Err(cx.err(&pk, "missing (the image name prefix it covers)")),
            };
            if c.trust.iter().any(|e| e.prefix == prefix) {
                return Err(cx.err(&pk, format!("prefix {prefix:?} is listed twice")));
            }
            let accept = match rt.get("accept_anything") {
                Some(&Value::Boolean(b)) => b,
                Some(other) => {
                    return Err(cx.err(
                        &format!("{key}.accept_anything"),
                        format!("expected a boolean, found {}", kind(other)),
                    ));
                }
                None => false,
            };
            let entry_key = match rt.get("key") {
                Some(v) => {
                    let kk = format!("{key}.key");
                    let line = cx.string(&kk, v)?;
                    PublicKey::parse(line.trim()).map_err(|e| cx.err(&kk, e.to_string()))?;
                    Some(line.trim().to_string())
                }
                None => None,
            };
            let req = match (accept, &entry_key) {
                (true, None) => Requirement::AcceptAnything,
                (false, Some(_)) => Requirement::Signed(Vec::new()),
                _ => {
                    return Err(cx.err(
                        &key,
                        "set either accept_anything = true or key = \"cairn-ed25519-public …\", not both or neither",
                    ));
                }
            };
            policy
                .add(&prefix, req)
                .map_err(|e| cx.err(&pk, oneline(&e.to_string())))?;
            c.trust.push(TrustEntry {
                prefix,
                key: entry_key,
            });
        }
    }
    Ok(c)
}

fn oneline(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

pub(crate) fn parse_apps(
    cx: &Ctx,
    list: &[Value],
    containers: Option<&Containers>,
) -> Result<Vec<App>, ConfigError> {
    let policy = containers.map(Containers::policy);
    let mut apps: Vec<App> = Vec::new();
    let mut ports: BTreeMap<(u16, bool), String> = BTreeMap::new();
    for (i, v) in list.iter().enumerate() {
        let key = format!("apps[{i}]");
        let app = parse_app(cx, &key, cx.table(&key, v)?)?;
        if apps.iter().any(|a| a.name == app.name) {
            return Err(cx.err(
                &format!("{key}.name"),
                format!("app {:?} is listed twice", app.name),
            ));
        }
        if let Some(p) = &policy {
            // Managed trust: an image no rule covers could never be pulled.
            let name = Reference::parse(&app.image)
                .map(|r| r.name())
                .unwrap_or_default();
            if p.decide(&name) == oci_image::Decision::Reject {
                return Err(cx.err(
                    &format!("{key}.image"),
                    format!(
                        "no containers.trust rule covers {name:?}: add one (prefix = {name:?}, with key = \"cairn-ed25519-public …\" or accept_anything = true)"
                    ),
                ));
            }
        }
        for (j, port) in app.ports.iter().enumerate() {
            if let Some(other) = ports.insert((port.host, port.udp), app.name.clone()) {
                return Err(cx.err(
                    &format!("{key}.ports[{j}]"),
                    format!(
                        "host port {}/{} is already published by app {other:?}",
                        port.host,
                        if port.udp { "udp" } else { "tcp" }
                    ),
                ));
            }
        }
        apps.push(app);
    }
    Ok(apps)
}

fn parse_app(cx: &Ctx, key: &str, t: &Table) -> Result<App, ConfigError> {
    cx.unknown_keys(key, t, APP_KEYS)?;
    let k = |sub: &str| format!("{key}.{sub}");
    let name = match t.get("name") {
        Some(v) => cx.string(&k("name"), v)?,
        None => return Err(cx.err(&k("name"), "missing (every app needs a name)")),
    };
    check_app_name(&name).map_err(|m| cx.err(&k("name"), m))?;
    let image = match t.get("image") {
        Some(v) => cx.string(&k("image"), v)?,
        None => {
            return Err(cx.err(
                &k("image"),
                "missing (an image reference such as \"docker.io/library/nginx:1.27\")",
            ));
        }
    };
    Reference::parse(&image).map_err(|e| cx.err(&k("image"), oneline(&e.to_string())))?;
    let argv = |sub: &str| -> Result<Vec<String>, ConfigError> {
        match t.get(sub) {
            None => Ok(Vec::new()),
            Some(v) => {
                let a = cx.strings(&k(sub), v)?;
                if a.is_empty() {
                    return Err(cx.err(&k(sub), "empty command (leave the key out instead)"));
                }
                for (i, s) in a.iter().enumerate() {
                    if s.contains('\0') {
                        return Err(cx.err(&format!("{}[{i}]", k(sub)), "contains a NUL byte"));
                    }
                }
                Ok(a)
            }
        }
    };
    let command = argv("command")?;
    let health = argv("health")?;
    let mut env = BTreeMap::new();
    if let Some(v) = t.get("env") {
        for (name, val) in cx.table(&k("env"), v)? {
            let ek = format!("{}.{name}", k("env"));
            check_env_name(name).map_err(|m| cx.err(&ek, m))?;
            let val = cx.string(&ek, val)?;
            if val.contains('\0') {
                return Err(cx.err(&ek, "contains a NUL byte"));
            }
            env.insert(name.to_string(), val);
        }
    }
    let mut volumes: Vec<Volume> = Vec::new();
    if let Some(v) = t.get("volumes") {
        for (i, s) in cx.strings(&k("volumes"), v)?.iter().enumerate() {
            let vk = format!("{}[{i}]", k("volumes"));
            let vol = parse_volume(s).map_err(|m| cx.err(&vk, m))?;
            if volumes.iter().any(|o| o.target == vol.target) {
                return Err(cx.err(&vk, format!("{} is mounted twice", vol.target)));
            }
            volumes.push(vol);
        }
    }
    let network = match t.get("network") {
        None => Network::default(),
        Some(v) => match cx.string(&k("network"), v)?.as_str() {
            "host" => Network::Host,
            "private" => Network::Private,
            "none" => Network::None,
            other => {
                return Err(cx.err(
                    &k("network"),
                    format!("{other:?}: use \"host\", \"private\" or \"none\""),
                ));
            }
        },
    };
    let mut ports: Vec<Port> = Vec::new();
    if let Some(v) = t.get("ports") {
        let list = cx.strings(&k("ports"), v)?;
        if !list.is_empty() && network != Network::Private {
            return Err(cx.err(
                &k("ports"),
                format!(
                    "ports are forwarded into a private network; with network = {:?} {}",
                    network.as_str(),
                    if network == Network::Host {
                        "the app binds host ports itself: remove ports"
                    } else {
                        "nothing can reach the app: use network = \"private\""
                    }
                ),
            ));
        }
        for (i, s) in list.iter().enumerate() {
            let pk = format!("{}[{i}]", k("ports"));
            let p = parse_port(s).map_err(|m| cx.err(&pk, m))?;
            if ports.iter().any(|o| o.host == p.host && o.udp == p.udp) {
                return Err(cx.err(&pk, format!("host port {} is listed twice", p.host)));
            }
            ports.push(p);
        }
    }
    let memory = match t.get("memory") {
        None => None,
        Some(v) => Some(parse_memory(v).map_err(|m| cx.err(&k("memory"), m))?),
    };
    let cpus = match t.get("cpus") {
        None => None,
        Some(v) => {
            let c = match v {
                Value::Float(f) => *f,
                Value::Integer(n) => *n as f64,
                other => {
                    return Err(cx.err(
                        &k("cpus"),
                        format!("expected a number, found {}", kind(other)),
                    ));
                }
            };
            if !(c.is_finite() && c > 0.0 && c <= MAX_CPUS) {
                return Err(cx.err(&k("cpus"), format!("{c} is out of range (0, {MAX_CPUS}]")));
            }
            Some(c)
        }
    };
    let pids = match t.get("pids") {
        None => None,
        Some(v) => Some(cx.seconds(&k("pids"), v, 1, MAX_PIDS)?),
    };
    let restart = match t.get("restart") {
        None => Restart::default(),
        Some(v) => match cx.string(&k("restart"), v)?.as_str() {
            "always" => Restart::Always,
            "on-failure" => Restart::OnFailure,
            "no" => Restart::No,
            other => {
                return Err(cx.err(
                    &k("restart"),
                    format!("{other:?}: use \"always\", \"on-failure\" or \"no\""),
                ));
            }
        },
    };
    let flag = |sub: &str| -> Result<bool, ConfigError> {
        match t.get(sub) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(cx.err(
                &k(sub),
                format!("expected a boolean, found {}", kind(other)),
            )),
        }
    };
    let user = match t.get("user") {
        None => None,
        Some(v) => {
            let u = cx.string(&k("user"), v)?;
            check_user(&u).map_err(|m| cx.err(&k("user"), m))?;
            Some(u)
        }
    };
    let workdir = match t.get("workdir") {
        None => None,
        Some(v) => {
            let w = cx.string(&k("workdir"), v)?;
            if !clean_absolute(&w) {
                return Err(cx.err(
                    &k("workdir"),
                    format!("{w:?} must be an absolute path without \"..\""),
                ));
            }
            Some(w)
        }
    };
    Ok(App {
        name,
        image,
        command,
        env,
        volumes,
        network,
        ports,
        memory,
        cpus,
        pids,
        restart,
        health,
        boot_health: flag("boot_health")?,
        read_write: flag("read_write")?,
        user,
        workdir,
        notify: flag("notify")?,
    })
}

pub fn check_app_name(n: &str) -> Result<(), String> {
    let mut b = n.bytes();
    let first = matches!(b.next(), Some(b'a'..=b'z' | b'0'..=b'9'));
    let rest = b.all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'));
    if first && rest && n.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a valid app name ([a-z0-9][a-z0-9-]*, at most {MAX_NAME})"
        ))
    }
}

fn check_env_name(n: &str) -> Result<(), String> {
    let mut b = n.bytes();
    let first = matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_');
    if first && b.all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        Ok(())
    } else {
        Err("not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)".into())
    }
}

/// `host[:port]`, as in an image reference.
fn check_registry(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 255
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{r:?} is not a registry host (like \"10.0.2.2:5000\"; no scheme or path)"
        ))
    }
}

/// `user[:group]`, names or numbers, as cairn-run resolves them in the image.
fn check_user(u: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    };
    let ok = match u.split_once(':') {
        Some((a, g)) => part_ok(a) && part_ok(g),
        None => part_ok(u),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{u:?} is not user[:group] (names or numbers)"))
    }
}

fn clean_absolute(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.contains(['\0', ':'])
}

fn check_volume_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
        && n.len() <= 64
}

/// `SRC:DST[:ro|:rw]`; SRC is a named volume or an absolute host path.
pub fn parse_volume(s: &str) -> Result<Volume, String> {
    let bad = || {
        format!(
            "{s:?} is not NAME:/path or /host/path:/path (optionally :ro or :rw); NAME is [a-z0-9][a-z0-9_.-]*"
        )
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, read_only) = match parts.as_slice() {
        [a, b] => (*a, *b, false),
        [a, b, "ro"] => (*a, *b, true),
        [a, b, "rw"] => (*a, *b, false),
        _ => return Err(bad()),
    };
    if !clean_absolute(target) || target == "/" {
        return Err(bad());
    }
    let source = if src.starts_with('/') {
        if !clean_absolute(src) {
            return Err(bad());
        }
        VolumeSource::Path(src.to_string())
    } else if check_volume_name(src) {
        VolumeSource::Named(src.to_string())
    } else {
        return Err(bad());
    };
    Ok(Volume {
        source,
        target: target.to_string(),
        read_only,
    })
}

/// `HOST:CTR[/tcp|/udp]`.
pub fn parse_port(s: &str) -> Result<Port, String> {
    let bad = || format!("{s:?} is not HOST:CONTAINER[/tcp|/udp] (ports 1-65535)");
    let (ports, udp) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, false),
        Some((p, "udp")) => (p, true),
        Some(_) => return Err(bad()),
        None => (s, false),
    };
    let (h, c) = ports.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    Ok(Port {
        host: port(h)?,
        container: port(c)?,
        udp,
    })
}

/// Bytes, or a string with a binary suffix (`256M`, `1g`, `512KiB`).
fn parse_memory(v: &Value) -> Result<u64, String> {
    let bytes = match v {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::String(s) => {
            let l = s.trim().to_ascii_lowercase();
            let l = l
                .strip_suffix("ib")
                .or_else(|| l.strip_suffix('b'))
                .unwrap_or(&l);
            let (num, shift) = match l.char_indices().last() {
                Some((i, 'k')) => (&l[..i], 10),
                Some((i, 'm')) => (&l[..i], 20),
                Some((i, 'g')) => (&l[..i], 30),
                Some((i, 't')) => (&l[..i], 40),
                _ => (l, 0),
            };
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(1 << shift))
        }
        other => {
            return Err(format!(
                "expected a size like \"256M\" or a number of bytes, found {}",
                kind(other)
            ));
        }
    };
    match bytes {
        Some(b) if b >= MIN_MEMORY && i64::try_from(b).is_ok() => Ok(b),
        _ => Err(format!(
            "{v} is not a size of at least 6M (like \"256M\", \"1G\" or bytes)"
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::HostConfig;

    use super::*;

    const SRC: &str = "test.toml";
    const KEY: &str =
        "cairn-ed25519-public 02e55ad6cd7c1f0348df67ba845276cb1519a8882d8c7a9ef0f66836d4a89224";

    /// The full example: every section, every app setting.
    pub(crate) const FULL: &str = crate::config::EXAMPLE;

    fn err(text: &str) -> String {
        match HostConfig::parse(text, SRC) {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_example_parses_and_round_trips() {
        let c = HostConfig::parse(FULL, SRC).expect("valid");
        let ct = c.containers.as_ref().expect("containers");
        assert_eq!(ct.insecure_registries, ["10.0.2.2:5000"]);
        assert_eq!(ct.trust.len(), 2);
        assert!(ct.is_insecure("10.0.2.2:5000/test/web:1"));
        assert!(!ct.is_insecure("ghcr.io/acme/db:1"));
        let web = &c.apps[0];
        assert_eq!(web.command, ["/bin/httpd", "-f"]);
        assert_eq!(web.env.get("KEY").map(String::as_str), Some("value"));
        assert_eq!(
            web.volumes,
            [
                Volume {
                    source: VolumeSource::Named("data".into()),
                    target: "/data".into(),
                    read_only: false
                },
                Volume {
                    source: VolumeSource::Path("/srv/x".into()),
                    target: "/x".into(),
                    read_only: true
                }
            ]
        );
        assert_eq!(
            web.volumes[0].to_flag("web"),
            "/var/lib/cairn/volumes/web/data:/data"
        );
        assert_eq!(
            web.ports,
            [Port {
                host: 8080,
                container: 80,
                udp: false
            }]
        );
        assert_eq!(web.memory, Some(256 << 20));
        assert_eq!(web.cpus, Some(0.5));
        assert_eq!(web.pids, Some(200));
        assert_eq!(web.restart, Restart::Always);
        assert!(web.boot_health && !web.read_write && !web.notify);
        assert_eq!(web.user.as_deref(), Some("1000:1000"));
        let db = &c.apps[1];
        assert_eq!(db.network, Network::Host);
        assert_eq!(db.restart, Restart::OnFailure, "the default");
        assert!(db.notify && !db.boot_health && db.command.is_empty());
        // The effective config and the saved apps copy both round-trip.
        assert_eq!(HostConfig::parse(&c.to_toml(), "effective"), Ok(c.clone()));
        let apps_only = HostConfig::parse(&c.apps_toml(), "saved").expect("valid");
        assert_eq!(
            (apps_only.apps, apps_only.containers),
            (c.apps.clone(), c.containers.clone())
        );
        assert!(
            !c.apps_toml().contains("users"),
            "no secrets of other sections"
        );
        // The policy has both rules, and decides like cairn-run will.
        let p = ct.policy();
        assert_eq!(p.list().len(), 2);
        assert!(matches!(
            p.decide("ghcr.io/acme/db"),
            oci_image::Decision::RequireSignature { .. }
        ));
        assert_eq!(p.decide("docker.io/library/x"), oci_image::Decision::Reject);
    }

    #[test]
    fn valid_variants() {
        for text in [
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"",
            "[[apps]]\nname = \"0-x\"\nimage = \"alpine:3\"\nmemory = 6291456",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nmemory = \"1GiB\"\ncpus = 2",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nnetwork = \"none\"\nrestart = \"no\"",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nports = [\"53:53/udp\", \"53:53/tcp\"]",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nports = []\nnetwork = \"host\"",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nvolumes = [\"v.1_x:/d:rw\"]\nworkdir = \"/d\"",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nenv = { _X = \"a b $HOME %h \\\"q\\\"\\n\" }",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nuser = \"nobody\"",
            "[containers]\n[[apps]]\nname = \"a\"\nimage = \"x\"\n[[containers.trust]]\nprefix = \"*\"\naccept_anything = true",
            "[containers]\ntrust = []\ninsecure_registries = [\"[::1]:5000\"]",
            "apps = []",
        ] {
            if let Err(e) = HostConfig::parse(text, SRC) {
                panic!("{text:?} refused: {e}");
            }
        }
    }

    /// Every bad key: (config, substrings the one-line error must contain).
    #[test]
    fn errors_name_the_key() {
        let app = |extra: &str| format!("[[apps]]\nname = \"a\"\nimage = \"alpine\"\n{extra}");
        let trust = |extra: &str| format!("[containers]\n[[containers.trust]]\n{extra}");
        let cases: Vec<(String, &[&str])> = vec![
            ("containers = 1".into(), &["containers", "expected a table"]),
            (
                "[containers]\nregistries = []".into(),
                &["containers.registries", "unknown key"],
            ),
            (
                "[containers]\ninsecure_registries = \"x\"".into(),
                &["containers.insecure_registries", "expected an array"],
            ),
            (
                "[containers]\ninsecure_registries = [\"http://x\"]".into(),
                &["containers.insecure_registries[0]", "not a registry host"],
            ),
            (
                "[containers]\ntrust = {}".into(),
                &["containers.trust", "expected an array"],
            ),
            (
                trust("accept_anything = true"),
                &["containers.trust[0].prefix", "missing"],
            ),
            (
                trust("prefix = 1"),
                &["containers.trust[0].prefix", "expected a string"],
            ),
            (
                trust("prefix = \"a b\"\naccept_anything = true"),
                &["containers.trust[0].prefix", "invalid prefix"],
            ),
            (
                trust("prefix = \"x\""),
                &["containers.trust[0]", "either accept_anything"],
            ),
            (
                trust(&format!(
                    "prefix = \"x\"\naccept_anything = true\nkey = \"{KEY}\""
                )),
                &["containers.trust[0]", "not both"],
            ),
            (
                trust("prefix = \"x\"\naccept_anything = \"yes\""),
                &["containers.trust[0].accept_anything", "expected a boolean"],
            ),
            (
                trust("prefix = \"x\"\nkey = \"ssh-ed25519 AAAA\""),
                &["containers.trust[0].key"],
            ),
            (
                trust("prefix = \"x\"\nkeys = []"),
                &["containers.trust[0].keys", "unknown key"],
            ),
            (
                format!(
                    "{}\n[[containers.trust]]\nprefix = \"x\"\naccept_anything = true",
                    trust("prefix = \"x\"\naccept_anything = true")
                ),
                &["containers.trust[1].prefix", "twice"],
            ),
            ("apps = {}".into(), &["apps", "expected an array"]),
            ("apps = [1]".into(), &["apps[0]", "expected a table"]),
            (
                "[[apps]]\nimage = \"x\"".into(),
                &["apps[0].name", "missing"],
            ),
            (
                "[[apps]]\nname = \"Web\"\nimage = \"x\"".into(),
                &["apps[0].name", "not a valid app name"],
            ),
            (
                "[[apps]]\nname = \"-w\"\nimage = \"x\"".into(),
                &["apps[0].name"],
            ),
            (
                format!("[[apps]]\nname = \"{}\"\nimage = \"x\"", "a".repeat(64)),
                &["apps[0].name", "at most 63"],
            ),
            (
                "[[apps]]\nname = \"a\"".into(),
                &["apps[0].image", "missing"],
            ),
            (
                "[[apps]]\nname = \"a\"\nimage = \"UPPER/x\"".into(),
                &["apps[0].image"],
            ),
            (
                "[[apps]]\nname = \"a\"\nimage = 3".into(),
                &["apps[0].image", "expected a string"],
            ),
            (
                "[[apps]]\nname = \"a\"\nimage = \"x\"\n[[apps]]\nname = \"a\"\nimage = \"y\""
                    .into(),
                &["apps[1].name", "twice"],
            ),
            (app("imgae = \"x\""), &["apps[0].imgae", "unknown key"]),
            (app("command = []"), &["apps[0].command", "empty command"]),
            (
                app("command = \"/bin/sh\""),
                &["apps[0].command", "expected an array"],
            ),
            (
                app("command = [\"/bin/sh\", 1]"),
                &["apps[0].command[1]", "expected a string"],
            ),
            (app("env = [\"A=1\"]"), &["apps[0].env", "expected a table"]),
            (
                app("env = { 1A = \"x\" }"),
                &["apps[0].env.1A", "variable name"],
            ),
            (
                app("env = { A = 1 }"),
                &["apps[0].env.A", "expected a string"],
            ),
            (
                app("volumes = [\"data\"]"),
                &["apps[0].volumes[0]", "NAME:/path"],
            ),
            (app("volumes = [\"Data:/d\"]"), &["apps[0].volumes[0]"]),
            (app("volumes = [\"d:/\"]"), &["apps[0].volumes[0]"]),
            (app("volumes = [\"d:rel\"]"), &["apps[0].volumes[0]"]),
            (app("volumes = [\"/a/../b:/d\"]"), &["apps[0].volumes[0]"]),
            (app("volumes = [\"d:/d:rx\"]"), &["apps[0].volumes[0]"]),
            (
                app("volumes = [\"d:/d\", \"/e:/d\"]"),
                &["apps[0].volumes[1]", "twice"],
            ),
            (
                app("network = \"bridge\""),
                &["apps[0].network", "\"host\", \"private\" or \"none\""],
            ),
            (
                app("network = \"host\"\nports = [\"80:80\"]"),
                &["apps[0].ports", "remove ports"],
            ),
            (
                app("network = \"none\"\nports = [\"80:80\"]"),
                &["apps[0].ports", "network = \"private\""],
            ),
            (
                app("ports = [\"80\"]"),
                &["apps[0].ports[0]", "HOST:CONTAINER"],
            ),
            (app("ports = [\"0:80\"]"), &["apps[0].ports[0]"]),
            (app("ports = [\"80:80/sctp\"]"), &["apps[0].ports[0]"]),
            (app("ports = [\"70000:80\"]"), &["apps[0].ports[0]"]),
            (
                app("ports = [\"80:80\", \"80:81/tcp\"]"),
                &["apps[0].ports[1]", "twice"],
            ),
            (
                format!(
                    "{}\n[[apps]]\nname = \"b\"\nimage = \"x\"\nports = [\"80:1\"]",
                    app("ports = [\"80:80\"]")
                ),
                &["apps[1].ports[0]", "already published by app \"a\""],
            ),
            (app("memory = \"5M\""), &["apps[0].memory", "at least 6M"]),
            (app("memory = \"lots\""), &["apps[0].memory"]),
            (app("memory = -1"), &["apps[0].memory"]),
            (app("memory = 1.5"), &["apps[0].memory", "expected a size"]),
            (app("cpus = 0"), &["apps[0].cpus", "out of range"]),
            (app("cpus = 5000"), &["apps[0].cpus", "out of range"]),
            (app("cpus = \"1\""), &["apps[0].cpus", "expected a number"]),
            (app("pids = 0"), &["apps[0].pids", "out of range"]),
            (
                app("pids = \"10\""),
                &["apps[0].pids", "expected an integer"],
            ),
            (
                app("restart = \"unless-stopped\""),
                &["apps[0].restart", "\"always\""],
            ),
            (app("health = []"), &["apps[0].health", "empty command"]),
            (
                app("health = \"/bin/true\""),
                &["apps[0].health", "expected an array"],
            ),
            (
                app("boot_health = \"yes\""),
                &["apps[0].boot_health", "expected a boolean"],
            ),
            (
                app("read_write = 1"),
                &["apps[0].read_write", "expected a boolean"],
            ),
            (app("notify = 1"), &["apps[0].notify", "expected a boolean"]),
            (app("user = \"a b\""), &["apps[0].user", "user[:group]"]),
            (app("user = \"a:\""), &["apps[0].user"]),
            (app("workdir = \"rel\""), &["apps[0].workdir", "absolute"]),
            (
                format!(
                    "{}\n[containers]\n[[containers.trust]]\nprefix = \"ghcr.io\"\naccept_anything = true",
                    app("")
                ),
                &[
                    "apps[0].image",
                    "no containers.trust rule covers \"docker.io/library/alpine\"",
                ],
            ),
        ];
        for (text, wants) in &cases {
            let e = err(text);
            assert!(!e.contains('\n'), "multi-line error for {text:?}: {e}");
            assert!(e.starts_with("test.toml: "), "{e}");
            for w in *wants {
                assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
            }
        }
    }
}
