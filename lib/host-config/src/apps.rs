//! `[[apps]]` and `[containers]` of the host config: the schema and its
//! validation. Each app becomes a systemd unit (see the app-units crate) whose
//! main process is `cairn-run run --name <app>`.
//!
//! This module walks the TOML and names the key in every error
//! (`apps[1].memory`); the value grammars (names, volumes, ports, network,
//! restart, limits, env, user, paths) are app-spec's, the same types
//! cairn-run's flags parse, so a value valid here is valid there.

use std::collections::BTreeMap;

use app_spec::{
    AbsPath, AppName, Conflict, Cpus, EnvVar, Memory, Network, Pids, Publish, Restart, User, Volume,
};
use oci_image::{PublicKey, Reference, Requirement, TrustPolicy};
use toml::{Table, Value};

use crate::check::{ConfigError, Ctx, kind};

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

#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub name: AppName,
    /// As written (`name:tag` or `name@sha256:…`); checked by oci-image.
    pub image: String,
    /// Replaces the image's entrypoint and cmd when not empty.
    pub command: Vec<String>,
    /// Names and values as [`EnvVar`] checks them.
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub network: Network,
    pub ports: Vec<Publish>,
    pub memory: Option<Memory>,
    pub cpus: Option<Cpus>,
    pub pids: Option<Pids>,
    pub restart: Restart,
    /// Run inside the app (`cairn-run exec`); must exit 0 when healthy.
    pub health: Vec<String>,
    /// Part of the boot health gate: a release that breaks it rolls back.
    pub boot_health: bool,
    pub read_write: bool,
    pub user: Option<User>,
    pub workdir: Option<AbsPath>,
    /// The app speaks sd_notify (Type=notify).
    pub notify: bool,
}

impl App {
    pub fn unit_name(&self) -> String {
        unit_name(self.name.as_str())
    }

    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let s = |v: &dyn std::fmt::Display| Value::String(v.to_string());
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
            let v = self.volumes.iter().map(|v| s(v)).collect();
            t.insert("volumes".into(), Value::Array(v));
        }
        t.insert("network".into(), s(&self.network));
        if !self.ports.is_empty() {
            let p = self.ports.iter().map(|p| s(p)).collect();
            t.insert("ports".into(), Value::Array(p));
        }
        if let Some(m) = self.memory {
            t.insert("memory".into(), int(m.bytes()));
        }
        if let Some(c) = self.cpus {
            t.insert("cpus".into(), Value::Float(c.get()));
        }
        if let Some(p) = self.pids {
            t.insert("pids".into(), int(p.get()));
        }
        t.insert("restart".into(), s(&self.restart));
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
                format!("app {:?} is listed twice", app.name.as_str()),
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
            if let Some(other) = ports.insert((port.host_port, port.udp), app.name.to_string()) {
                return Err(cx.err(
                    &format!("{key}.ports[{j}]"),
                    format!(
                        "host port {}/{} is already published by app {other:?}",
                        port.host_port,
                        port.proto()
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
    let at = AppTable { cx, key, t };
    let network: Network = at.typed_or_default("network")?;
    Ok(App {
        name: at.name()?,
        image: at.image()?,
        command: at.argv("command")?,
        env: at.env()?,
        volumes: at.volumes()?,
        ports: at.ports(network)?,
        network,
        memory: at.memory()?,
        cpus: at.cpus()?,
        pids: at.pids()?,
        restart: at.typed_or_default("restart")?,
        health: at.argv("health")?,
        boot_health: at.flag("boot_health")?,
        read_write: at.flag("read_write")?,
        user: at.typed_optional("user")?,
        workdir: at.typed_optional("workdir")?,
        notify: at.flag("notify")?,
    })
}

/// One `[[apps]]` entry being read: each setting's own rules, errors naming
/// `apps[i].<setting>`.
struct AppTable<'a> {
    cx: &'a Ctx<'a>,
    key: &'a str,
    t: &'a Table,
}

impl AppTable<'_> {
    fn k(&self, sub: &str) -> String {
        format!("{}.{sub}", self.key)
    }

    fn name(&self) -> Result<AppName, ConfigError> {
        let k = self.k("name");
        match self.t.get("name") {
            Some(v) => typed(self.cx, &k, &self.cx.string(&k, v)?),
            None => Err(self.cx.err(&k, "missing (every app needs a name)")),
        }
    }

    fn image(&self) -> Result<String, ConfigError> {
        let k = self.k("image");
        let image = match self.t.get("image") {
            Some(v) => self.cx.string(&k, v)?,
            None => {
                return Err(self.cx.err(
                    &k,
                    "missing (an image reference such as \"docker.io/library/nginx:1.27\")",
                ));
            }
        };
        Reference::parse(&image).map_err(|e| self.cx.err(&k, oneline(&e.to_string())))?;
        Ok(image)
    }

    /// `command` and `health`: absent is empty; present must not be.
    fn argv(&self, sub: &str) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.t.get(sub) else {
            return Ok(Vec::new());
        };
        let k = self.k(sub);
        let a = self.cx.strings(&k, v)?;
        if a.is_empty() {
            return Err(self.cx.err(&k, "empty command (leave the key out instead)"));
        }
        for (i, s) in a.iter().enumerate() {
            if s.contains('\0') {
                return Err(self.cx.err(&format!("{k}[{i}]"), "contains a NUL byte"));
            }
        }
        Ok(a)
    }

    fn env(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut env = BTreeMap::new();
        if let Some(v) = self.t.get("env") {
            for (name, val) in self.cx.table(&self.k("env"), v)? {
                let ek = format!("{}.{name}", self.k("env"));
                let val = self.cx.string(&ek, val)?;
                EnvVar::new(name, &val).map_err(|e| self.cx.err(&ek, e.to_string()))?;
                env.insert(name.to_string(), val);
            }
        }
        Ok(env)
    }

    fn volumes(&self) -> Result<Vec<Volume>, ConfigError> {
        let mut volumes: Vec<Volume> = Vec::new();
        let Some(v) = self.t.get("volumes") else {
            return Ok(volumes);
        };
        let k = self.k("volumes");
        for (i, s) in self.cx.strings(&k, v)?.into_iter().enumerate() {
            volumes.push(typed(self.cx, &format!("{k}[{i}]"), &s)?);
        }
        if let Err(Conflict::TargetTwice { index, target }) =
            app_spec::check_targets(volumes.iter().map(|v| &v.target))
        {
            return Err(self.cx.err(
                &format!("{k}[{index}]"),
                format!("{target} is mounted twice"),
            ));
        }
        Ok(volumes)
    }

    fn ports(&self, network: Network) -> Result<Vec<Publish>, ConfigError> {
        let mut ports: Vec<Publish> = Vec::new();
        let Some(v) = self.t.get("ports") else {
            return Ok(ports);
        };
        let k = self.k("ports");
        for (i, s) in self.cx.strings(&k, v)?.into_iter().enumerate() {
            ports.push(typed(self.cx, &format!("{k}[{i}]"), &s)?);
        }
        match app_spec::check_publish(network, &ports) {
            Ok(()) => Ok(ports),
            Err(Conflict::PublishOutsidePrivate(net)) => Err(self.cx.err(
                &k,
                format!(
                    "ports are forwarded into a private network; with network = \"{net}\" {}",
                    if net == Network::Host {
                        "the app binds host ports itself: remove ports"
                    } else {
                        "nothing can reach the app: use network = \"private\""
                    }
                ),
            )),
            Err(Conflict::HostPortTwice { index, publish }) => Err(self.cx.err(
                &format!("{k}[{index}]"),
                format!(
                    "host port {}/{} is listed twice",
                    publish.host_port,
                    publish.proto()
                ),
            )),
            Err(other) => Err(self.cx.err(&k, other.to_string())),
        }
    }

    fn memory(&self) -> Result<Option<Memory>, ConfigError> {
        let k = self.k("memory");
        match self.t.get("memory") {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(typed(self.cx, &k, s)?)),
            Some(Value::Integer(n)) => Ok(Some(typed(self.cx, &k, &n.to_string())?)),
            Some(other) => Err(self.cx.err(
                &k,
                format!(
                    "expected a size like \"256M\" or a number of bytes, found {}",
                    kind(other)
                ),
            )),
        }
    }

    fn cpus(&self) -> Result<Option<Cpus>, ConfigError> {
        let k = self.k("cpus");
        let c = match self.t.get("cpus") {
            None => return Ok(None),
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(n)) => *n as f64,
            Some(other) => {
                return Err(self
                    .cx
                    .err(&k, format!("expected a number, found {}", kind(other))));
            }
        };
        Ok(Some(
            Cpus::new(c).map_err(|e| self.cx.err(&k, e.to_string()))?,
        ))
    }

    fn pids(&self) -> Result<Option<Pids>, ConfigError> {
        let k = self.k("pids");
        match self.t.get("pids") {
            None => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(typed(self.cx, &k, &n.to_string())?)),
            Some(other) => Err(self
                .cx
                .err(&k, format!("expected an integer, found {}", kind(other)))),
        }
    }

    fn flag(&self, sub: &str) -> Result<bool, ConfigError> {
        match self.t.get(sub) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(self.cx.err(
                &self.k(sub),
                format!("expected a boolean, found {}", kind(other)),
            )),
        }
    }

    /// A string setting in app-spec's grammar, its default when absent.
    fn typed_or_default<T>(&self, sub: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr<Err = app_spec::Error> + Default,
    {
        Ok(self.typed_optional(sub)?.unwrap_or_default())
    }

    fn typed_optional<T>(&self, sub: &str) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr<Err = app_spec::Error>,
    {
        self.t
            .get(sub)
            .map(|v| typed_string(self.cx, &self.k(sub), v))
            .transpose()
    }
}

/// `text` in app-spec's grammar `T`; an error names `key`. (app-spec's
/// messages are one line: they quote the value.)
fn typed<T: std::str::FromStr<Err = app_spec::Error>>(
    cx: &Ctx,
    key: &str,
    text: &str,
) -> Result<T, ConfigError> {
    text.parse()
        .map_err(|e: app_spec::Error| cx.err(key, e.to_string()))
}

/// [`typed`] of a value that must be a string.
fn typed_string<T: std::str::FromStr<Err = app_spec::Error>>(
    cx: &Ctx,
    key: &str,
    v: &Value,
) -> Result<T, ConfigError> {
    typed(cx, key, &cx.string(key, v)?)
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

#[cfg(test)]
pub(crate) mod tests {
    use app_spec::VolumeSource;

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
                    source: VolumeSource::Named("data".parse().unwrap()),
                    target: "/data".parse().unwrap(),
                    read_only: false
                },
                Volume {
                    source: VolumeSource::Path("/srv/x".parse().unwrap()),
                    target: "/x".parse().unwrap(),
                    read_only: true
                }
            ]
        );
        assert_eq!(
            web.volumes[0].bind(&"web".parse().unwrap()).to_string(),
            "/var/lib/cairn/volumes/web/data:/data"
        );
        assert_eq!(
            web.ports,
            [Publish {
                host_port: 8080,
                container_port: 80,
                udp: false
            }]
        );
        assert_eq!(web.memory.map(Memory::bytes), Some(256 << 20));
        assert_eq!(web.cpus.map(Cpus::get), Some(0.5));
        assert_eq!(web.pids.map(Pids::get), Some(200));
        assert_eq!(web.restart, Restart::Always);
        assert!(web.boot_health && !web.read_write && !web.notify);
        assert_eq!(
            web.user.as_ref().map(ToString::to_string).as_deref(),
            Some("1000:1000")
        );
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
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nmemory = \"64m\"\ncpus = 0.01\npids = 4194304",
            "[[apps]]\nname = \"a\"\nimage = \"alpine\"\nvolumes = [\"/srv/:/d/\"]\nworkdir = \"/d/\"",
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
            (app("workdir = \"/a/../b\""), &["apps[0].workdir", "\"..\""]),
            // What cairn-run refused and this used to accept.
            (app("user = \"-x\""), &["apps[0].user", "starts with '-'"]),
            (
                app("cpus = 0.001"),
                &["apps[0].cpus", "out of range", "0.01"],
            ),
            (
                app("volumes = [\"d:/d\", \"/e:/d/\"]"),
                &["apps[0].volumes[1]", "/d is mounted twice"],
            ),
            (
                app("ports = [\"127.0.0.1:80:80\"]"),
                &["apps[0].ports[0]", "host address"],
            ),
            (app("ports = [\"+80:80\"]"), &["apps[0].ports[0]"]),
            (
                app("volumes = [\"d:/d:z\"]"),
                &["apps[0].volumes[0]", "unknown option"],
            ),
            (app("memory = \"6291456ib\""), &["apps[0].memory"]),
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
