//! The host config (`config.toml`): parsing and validation.
//!
//! Validation is done by hand on a `toml::Table` rather than with serde
//! derives, so every error names the exact key (`users[1].name`) and the
//! source it came from; serde's messages name neither reliably.

use std::collections::BTreeSet;

use toml::{Table, Value};

pub use crate::check::ConfigError;
use crate::check::Ctx;
use crate::check::line_of;
use crate::files::File;
use crate::network::Network;
use crate::system::{Group, Sysctl};
use crate::units::Unit;
use crate::update::UpdateConfig;

/// Defaults of the `[health]` section (DESIGN "Boot chain" point 4).
pub const DEFAULT_SETTLE_SECONDS: u64 = 5;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 180;
/// Upper bounds: a typo like `settle_seconds = 50000` must not hold a slot
/// on trial for half a day.
pub const MAX_SETTLE_SECONDS: u64 = 3600;
pub const MAX_TIMEOUT_SECONDS: u64 = 86400;

/// Top-level keys, in the order they are documented.
pub const TOP_KEYS: &[&str] = &[
    "hostname",
    "timezone",
    "users",
    "groups",
    "network",
    "files",
    "units",
    "sysctl",
    "kernel_modules",
    "health",
    "update",
    "containers",
    "apps",
];
const USER_KEYS: &[&str] = &[
    "name",
    "password_hash",
    "ssh_authorized_keys",
    "groups",
    "sudo",
];
const HEALTH_KEYS: &[&str] = &["units", "commands", "settle_seconds", "timeout_seconds"];

/// A validated host config: every section typed, each read by the component
/// it configures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    /// An IANA zone name, checked against the image's zoneinfo when applied.
    pub timezone: Option<String>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub network: Network,
    pub files: Vec<File>,
    pub units: Vec<Unit>,
    pub sysctl: Sysctl,
    pub kernel_modules: Vec<String>,
    /// Why `[network]` was left out, when it was (see [`SetAside`]).
    pub network_error: SetAside,
    pub health: Health,
    pub update: UpdateConfig,
    /// `Some` when the config has a `[containers]` table: then the image
    /// trust policy is managed from the config (see [`crate::apps`]).
    pub containers: Option<Containers>,
    pub apps: Vec<App>,
}

pub use crate::apps::{App, Containers};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A crypt(3) hash (or a `!`/`*` locked marker), never a clear password.
    pub password_hash: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    /// Supplementary groups cairn-config adds the user to (and removes the
    /// user from again when they leave this list).
    pub groups: Vec<String>,
    /// A sudo rule (`NOPASSWD: ALL`) in /etc/sudoers.d/cairn-<name>.
    pub sudo: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Units that must be active.
    pub units: Vec<String>,
    /// Commands (argv) that must exit 0.
    pub commands: Vec<Vec<String>>,
    /// Wait before the first check.
    pub settle_seconds: u64,
    /// Give up this long after the first check.
    pub timeout_seconds: u64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            units: Vec::new(),
            commands: Vec::new(),
            settle_seconds: DEFAULT_SETTLE_SECONDS,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
        }
    }
}

impl Health {
    /// No units and no commands: the default system check applies
    /// (multi-user reached, no failed units).
    pub fn uses_default_check(&self) -> bool {
        self.units.is_empty() && self.commands.is_empty()
    }
}

impl HostConfig {
    /// Some user has SSH keys, so sshd must run.
    pub fn wants_ssh(&self) -> bool {
        self.users.iter().any(|u| !u.ssh_authorized_keys.is_empty())
    }
}

/// The error of a `[network]` section that [`HostConfig::parse`] set aside.
///
/// A typo in `[network]` must not leave a host unreachable: instead of
/// refusing the whole config, the section is left out (so the image's
/// default network applies: DHCP on the wired interfaces) and its error is
/// kept here for cairn-config to report (/run/cairn/config-error) and for
/// `cairn-config check` to refuse the file.
///
/// It compares equal to any other value: it says how a config was read, not
/// what the config sets, so the effective config (which has no `[network]`
/// then) still round-trips.
#[derive(Clone, Debug, Default)]
pub struct SetAside(pub Option<ConfigError>);

impl PartialEq for SetAside {
    fn eq(&self, _: &SetAside) -> bool {
        true
    }
}

fn syntax(cx: &Ctx, text: &str) -> Result<Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| format!("line {}: ", line_of(text, s.start)))
            .unwrap_or_default();
        // The message is one line; Display would add a multi-line snippet.
        cx.err("", format!("{at}{}", e.message().trim()))
    })
}

impl HostConfig {
    /// Parses and validates `text`; `source` names it in errors. An error
    /// refuses the whole config, except in `[network]`: that section alone is
    /// then left out and its error kept in [`HostConfig::network_error`].
    pub fn parse(text: &str, source: &str) -> Result<HostConfig, ConfigError> {
        let cx = Ctx { source };
        Self::from_table(&cx, &syntax(&cx, text)?)
    }

    /// [`HostConfig::parse`], and a set-aside `[network]` is an error too:
    /// `cairn-config check`, where the operator must see every mistake.
    pub fn parse_strict(text: &str, source: &str) -> Result<HostConfig, ConfigError> {
        let cfg = Self::parse(text, source)?;
        match cfg.network_error.0 {
            Some(e) => Err(e),
            None => Ok(cfg),
        }
    }

    fn from_table(cx: &Ctx, table: &Table) -> Result<HostConfig, ConfigError> {
        cx.unknown_keys("", table, TOP_KEYS)?;
        let mut cfg = HostConfig::default();
        if let Some(v) = table.get("hostname") {
            let h = cx.string("hostname", v)?;
            check_hostname(&h).map_err(|m| cx.err("hostname", m))?;
            cfg.hostname = Some(h);
        }
        if let Some(v) = table.get("timezone") {
            let z = cx.string("timezone", v)?;
            crate::system::check_timezone(&z).map_err(|m| cx.err("timezone", m))?;
            cfg.timezone = Some(z);
        }
        if let Some(v) = table.get("users") {
            let mut seen = BTreeSet::new();
            for (i, u) in cx.array("users", v)?.iter().enumerate() {
                let key = format!("users[{i}]");
                let user = parse_user(cx, &key, u)?;
                if !seen.insert(user.name.clone()) {
                    return Err(cx.err(
                        &format!("{key}.name"),
                        format!("user {:?} is listed twice", user.name),
                    ));
                }
                cfg.users.push(user);
            }
        }
        if let Some(v) = table.get("groups") {
            cfg.groups = crate::system::parse_groups(cx, cx.array("groups", v)?)?;
        }
        if let Some(v) = table.get("network") {
            match cx.table("network", v).and_then(|t| Network::parse(cx, t)) {
                Ok(n) => cfg.network = n,
                Err(e) => cfg.network_error = SetAside(Some(e)),
            }
        }
        if let Some(v) = table.get("files") {
            cfg.files = crate::files::parse_files(cx, cx.array("files", v)?)?;
        }
        if let Some(v) = table.get("units") {
            cfg.units = crate::units::parse_units(cx, cx.array("units", v)?)?;
            let unit_paths: BTreeSet<String> = cfg.units.iter().flat_map(Unit::paths).collect();
            for (i, f) in cfg.files.iter().enumerate() {
                if unit_paths.contains(&f.path) {
                    return Err(cx.err(
                        &format!("files[{i}].path"),
                        format!("{:?} is written by [[units]]; give it there", f.path),
                    ));
                }
            }
        }
        if let Some(v) = table.get("sysctl") {
            cfg.sysctl = crate::system::parse_sysctl(cx, cx.table("sysctl", v)?)?;
        }
        if let Some(v) = table.get("kernel_modules") {
            cfg.kernel_modules = crate::system::parse_modules(cx, v)?;
        }
        if let Some(v) = table.get("health") {
            cfg.health = parse_health(cx, cx.table("health", v)?)?;
        }
        if let Some(v) = table.get("update") {
            cfg.update = UpdateConfig::parse(cx, cx.table("update", v)?)?;
        }
        if let Some(v) = table.get("containers") {
            cfg.containers = Some(crate::apps::parse_containers(
                cx,
                cx.table("containers", v)?,
            )?);
        }
        if let Some(v) = table.get("apps") {
            cfg.apps = crate::apps::parse_apps(cx, cx.array("apps", v)?, cfg.containers.as_ref())?;
        }
        Ok(cfg)
    }

    /// The effective config as TOML, for /run/cairn/config.toml: defaults
    /// filled in, so readers need not know them.
    pub fn to_toml(&self) -> String {
        let mut t = Table::new();
        if let Some(h) = &self.hostname {
            t.insert("hostname".into(), Value::String(h.clone()));
        }
        let strs = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        let users = self
            .users
            .iter()
            .map(|u| {
                let mut ut = Table::new();
                ut.insert("name".into(), Value::String(u.name.clone()));
                if let Some(p) = &u.password_hash {
                    ut.insert("password_hash".into(), Value::String(p.clone()));
                }
                ut.insert("ssh_authorized_keys".into(), strs(&u.ssh_authorized_keys));
                if !u.groups.is_empty() {
                    ut.insert("groups".into(), strs(&u.groups));
                }
                if u.sudo {
                    ut.insert("sudo".into(), Value::Boolean(true));
                }
                Value::Table(ut)
            })
            .collect();
        t.insert("users".into(), Value::Array(users));
        if let Some(z) = &self.timezone {
            t.insert("timezone".into(), Value::String(z.clone()));
        }
        let tables = |v: Vec<Table>| Value::Array(v.into_iter().map(Value::Table).collect());
        if !self.groups.is_empty() {
            t.insert(
                "groups".into(),
                tables(self.groups.iter().map(Group::to_table).collect()),
            );
        }
        if !self.network.is_empty() {
            t.insert("network".into(), Value::Table(self.network.to_table()));
        }
        if !self.files.is_empty() {
            t.insert(
                "files".into(),
                tables(self.files.iter().map(File::to_table).collect()),
            );
        }
        if !self.units.is_empty() {
            t.insert(
                "units".into(),
                tables(self.units.iter().map(Unit::to_table).collect()),
            );
        }
        if !self.sysctl.is_empty() {
            t.insert(
                "sysctl".into(),
                Value::Table(crate::system::sysctl_table(&self.sysctl)),
            );
        }
        if !self.kernel_modules.is_empty() {
            t.insert("kernel_modules".into(), strs(&self.kernel_modules));
        }
        let mut h = Table::new();
        h.insert("units".into(), strs(&self.health.units));
        h.insert(
            "commands".into(),
            Value::Array(self.health.commands.iter().map(|c| strs(c)).collect()),
        );
        // Both are bounded far below i64::MAX by validation.
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        h.insert("settle_seconds".into(), int(self.health.settle_seconds));
        h.insert("timeout_seconds".into(), int(self.health.timeout_seconds));
        t.insert("health".into(), Value::Table(h));
        t.insert("update".into(), Value::Table(self.update.to_table()));
        t.extend(self.apps_table());
        toml::to_string(&t).unwrap_or_default()
    }

    /// `[containers]` and `[[apps]]` alone, as in the effective config: what
    /// the app generator needs (and nothing secret, unlike the whole config).
    pub fn apps_table(&self) -> Table {
        let mut t = Table::new();
        if let Some(c) = &self.containers {
            t.insert("containers".into(), Value::Table(c.to_table()));
        }
        t.insert(
            "apps".into(),
            Value::Array(
                self.apps
                    .iter()
                    .map(|a| Value::Table(a.to_table()))
                    .collect(),
            ),
        );
        t
    }

    /// [`HostConfig::apps_table`] as TOML text.
    pub fn apps_toml(&self) -> String {
        toml::to_string(&self.apps_table()).unwrap_or_default()
    }
}

fn parse_user(cx: &Ctx, key: &str, v: &Value) -> Result<User, ConfigError> {
    let t = cx.table(key, v)?;
    cx.unknown_keys(key, t, USER_KEYS)?;
    let name_key = format!("{key}.name");
    let name = match t.get("name") {
        Some(v) => cx.string(&name_key, v)?,
        None => return Err(cx.err(&name_key, "missing (every user needs a name)")),
    };
    check_user_name(&name).map_err(|m| cx.err(&name_key, m))?;
    let password_hash = match t.get("password_hash") {
        Some(v) => {
            let k = format!("{key}.password_hash");
            let h = cx.string(&k, v)?;
            check_password_hash(&h).map_err(|m| cx.err(&k, m))?;
            Some(h)
        }
        None => None,
    };
    let ssh_authorized_keys = match t.get("ssh_authorized_keys") {
        Some(v) => {
            let k = format!("{key}.ssh_authorized_keys");
            let keys = cx.strings(&k, v)?;
            for (i, line) in keys.iter().enumerate() {
                check_ssh_key(line).map_err(|m| cx.err(&format!("{k}[{i}]"), m))?;
            }
            keys
        }
        None => Vec::new(),
    };
    let mut groups = Vec::new();
    if let Some(v) = t.get("groups") {
        let k = format!("{key}.groups");
        for (i, g) in cx.strings(&k, v)?.into_iter().enumerate() {
            let gk = format!("{k}[{i}]");
            check_user_name(&g).map_err(|m| cx.err(&gk, m.replace("user name", "group name")))?;
            if groups.contains(&g) {
                return Err(cx.err(&gk, format!("{g:?} is listed twice")));
            }
            groups.push(g);
        }
    }
    let sudo = match t.get("sudo") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(cx.err(
                &format!("{key}.sudo"),
                format!(
                    "expected true or false, found {}",
                    crate::check::kind(other)
                ),
            ));
        }
    };
    Ok(User {
        name,
        password_hash,
        ssh_authorized_keys,
        groups,
        sudo,
    })
}

fn parse_health(cx: &Ctx, t: &Table) -> Result<Health, ConfigError> {
    cx.unknown_keys("health", t, HEALTH_KEYS)?;
    let mut h = Health::default();
    if let Some(v) = t.get("units") {
        h.units = cx.strings("health.units", v)?;
        for (i, u) in h.units.iter().enumerate() {
            check_unit_name(u).map_err(|m| cx.err(&format!("health.units[{i}]"), m))?;
        }
    }
    if let Some(v) = t.get("commands") {
        for (i, c) in cx.array("health.commands", v)?.iter().enumerate() {
            let k = format!("health.commands[{i}]");
            let argv = cx.strings(&k, c)?;
            match argv.first() {
                None => return Err(cx.err(&k, "empty command")),
                Some(p) if !p.starts_with('/') => {
                    // No PATH lookup at boot: say exactly what runs.
                    return Err(cx.err(&k, format!("{p:?} must be an absolute path")));
                }
                Some(_) => {}
            }
            h.commands.push(argv);
        }
    }
    if let Some(v) = t.get("settle_seconds") {
        h.settle_seconds = cx.seconds("health.settle_seconds", v, 0, MAX_SETTLE_SECONDS)?;
    }
    if let Some(v) = t.get("timeout_seconds") {
        h.timeout_seconds = cx.seconds("health.timeout_seconds", v, 1, MAX_TIMEOUT_SECONDS)?;
    }
    Ok(h)
}

/// RFC 1123 host name, at most 64 bytes (the kernel's limit).
pub fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 64 {
        return Err(format!("{h:?} must be 1 to 64 characters"));
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!(
                "{h:?} is not a valid host name (letters, digits, '-' and '.')"
            ));
        }
    }
    Ok(())
}

/// The portable subset useradd accepts by default on Debian.
pub fn check_user_name(n: &str) -> Result<(), String> {
    let mut bytes = n.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if first_ok && rest_ok && n.len() <= 32 {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a valid user name ([a-z_][a-z0-9_-]*, at most 32)"
        ))
    }
}

/// A crypt(3) hash (`$id$...`) or a locked marker (`!`, `*`, `!$6$...`).
pub fn check_password_hash(h: &str) -> Result<(), String> {
    if h.contains([':', '\n', '\r']) || h.chars().any(char::is_whitespace) {
        return Err("must not contain ':' or whitespace".into());
    }
    let unlocked = h.trim_start_matches('!');
    if h == "*" || (h.starts_with('!') && unlocked.is_empty()) || unlocked.starts_with('$') {
        Ok(())
    } else {
        Err("must be a crypt(3) hash such as \"$6$salt$...\" (openssl passwd -6), not a clear-text password".into())
    }
}

/// One authorized_keys line: `[options] type base64 [comment]`.
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    if line.contains(['\n', '\r']) {
        return Err("must be a single line".into());
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let is_type = |f: &&str| {
        f.starts_with("ssh-")
            || f.starts_with("ecdsa-")
            || f.starts_with("sk-ssh-")
            || f.starts_with("sk-ecdsa-")
    };
    match fields.iter().position(is_type) {
        Some(i) if i + 1 < fields.len() => Ok(()),
        _ => Err("not an SSH public key line (\"ssh-ed25519 AAAA... comment\")".into()),
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "mount",
    "automount",
    "timer",
    "path",
    "device",
    "swap",
    "slice",
    "scope",
];

pub fn check_unit_name(u: &str) -> Result<(), String> {
    let ok = u
        .rsplit_once('.')
        .is_some_and(|(stem, suffix)| !stem.is_empty() && UNIT_SUFFIXES.contains(&suffix))
        && !u.contains('/')
        && !u.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{u:?} is not a unit name (like \"systemd-networkd.service\")"
        ))
    }
}

/// A host config that uses every section and every app setting: the
/// reference example of the tests (config, apps, units) and a seed of the
/// host-config fuzz target.
pub const EXAMPLE: &str = r#"hostname = "cairn-test"
timezone = "Europe/Berlin"
kernel_modules = ["br_netfilter"]
[[users]]
name = "root"
password_hash = "$6$cairntest$abc"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3Nza c@d"]
[[users]]
name = "ops"
groups = ["deploy", "adm"]
sudo = true
[[groups]]
name = "deploy"
gid = 2000
[[network.interfaces]]
name = "eth0"
addresses = ["10.0.0.5/24", "fd00::5/64"]
gateway = ["10.0.0.1", "fd00::1"]
dns = ["10.0.0.1"]
mtu = 1500
routes = [{ destination = "10.1.0.0/16", gateway = "10.0.0.254", metric = 100 }]
[[network.interfaces]]
mac = "52:54:00:12:34:56"
dhcp = "ipv4"
[[network.bonds]]
name = "bond0"
mode = "802.3ad"
members = ["enp1s0f0", "52:54:00:12:34:57"]
dhcp = "yes"
[[network.vlans]]
name = "vlan10"
id = 10
parent = "bond0"
addresses = ["192.168.10.5/24"]
[[files]]
path = "/etc/motd"
contents = "Welcome to cairn-test\n"
[[files]]
path = "/var/lib/acme/token"
mode = "0600"
owner = "ops:deploy"
contents_base64 = "c2VjcmV0Cg=="
[[units]]
name = "hello.service"
enabled = true
contents = """
[Service]
Type=oneshot
ExecStart=/usr/bin/echo hello
[Install]
WantedBy=multi-user.target
"""
[[units]]
name = "systemd-journald.service"
dropins = [{ name = "10-size.conf", contents = "[Journal]\nSystemMaxUse=200M\n" }]
[[units]]
name = "systemd-timesyncd.service"
mask = true
[sysctl]
"net.ipv4.ip_forward" = 1
vm.swappiness = 10
[health]
units = ["systemd-networkd.service"]
commands = [["/usr/bin/true"]]
settle_seconds = 5
timeout_seconds = 180
[update]
url = "https://updates.example.invalid/cairn"
channel = "beta"
interval_minutes = 30
reboot = "etcd-lock"
windows = ["Sat,Sun 02:00-04:00", "22:30-01:00"]
wave_seed = "/var/lib/cairn/updater/wave-seed"
root = "/usr/lib/cairn/update-root.json"
ca_file = "/etc/cairn/update-ca.pem"
halt_after_rollbacks = { hosts = 3, percent = 10 }
[update.etcd]
endpoints = ["https://10.0.0.10:2379", "https://10.0.0.11:2379"]
group = "workers"
max_rebooting = 2
lease_seconds = 900
ca_file = "/etc/cairn/etcd-ca.pem"
cert_file = "/etc/cairn/etcd.pem"
key_file = "/etc/cairn/etcd-key.pem"
[update.fleetlock]
url = "http://fleetlock.example.invalid:8080"
group = "workers"
[containers]
insecure_registries = ["10.0.2.2:5000"]
[[containers.trust]]
prefix = "10.0.2.2:5000/test/"
accept_anything = true
[[containers.trust]]
prefix = "ghcr.io/acme"
key = "cairn-ed25519-public 02e55ad6cd7c1f0348df67ba845276cb1519a8882d8c7a9ef0f66836d4a89224"
[[apps]]
name = "web"
image = "10.0.2.2:5000/test/web:1"
command = ["/bin/httpd", "-f"]
env = { KEY = "value" }
volumes = ["data:/data", "/srv/x:/x:ro"]
network = "private"
ports = ["8080:80/tcp"]
memory = "256M"
cpus = 0.5
pids = 200
restart = "always"
health = ["/bin/sh", "-c", "test -f /data/ok"]
boot_health = true
read_write = false
user = "1000:1000"
[[apps]]
name = "db"
image = "ghcr.io/acme/db@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
network = "host"
notify = true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "test.toml";

    fn err(text: &str) -> String {
        match HostConfig::parse(text, SRC) {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_example_parses() {
        let text = EXAMPLE;
        let c = HostConfig::parse(text, SRC).expect("valid");
        assert_eq!(c.hostname.as_deref(), Some("cairn-test"));
        assert_eq!(c.users.len(), 2);
        assert_eq!(
            c.users[0].password_hash.as_deref(),
            Some("$6$cairntest$abc")
        );
        assert!(c.users[1].ssh_authorized_keys.is_empty());
        assert!(c.wants_ssh());
        assert_eq!(c.health.units, ["systemd-networkd.service"]);
        assert_eq!(c.health.commands, [["/usr/bin/true"]]);
        assert!(!c.health.uses_default_check());
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.update.reboot, crate::update::RebootStrategy::EtcdLock);
        assert_eq!(
            c.update
                .etcd
                .as_ref()
                .map(|e| (e.group.as_str(), e.max_rebooting)),
            Some(("workers", 2))
        );
        assert_eq!(c.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.kernel_modules, ["br_netfilter"]);
        assert_eq!(c.users[1].groups, ["deploy", "adm"]);
        assert!(c.users[1].sudo && !c.users[0].sudo);
        assert_eq!(c.groups.len(), 1);
        assert_eq!(
            (
                c.network.interfaces.len(),
                c.network.bonds.len(),
                c.network.vlans.len()
            ),
            (2, 1, 1)
        );
        assert!(c.network_error.0.is_none());
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[1].contents, b"secret\n");
        assert_eq!(c.units.len(), 3);
        assert_eq!(c.sysctl.len(), 2);
        // Every top-level key is in the example.
        let t: Table = EXAMPLE.parse().expect("toml");
        for k in TOP_KEYS {
            assert!(t.contains_key(*k), "EXAMPLE lacks {k}");
        }
        // The effective config round-trips, and says the same again.
        let text = c.to_toml();
        let back = HostConfig::parse(&text, "effective").expect("effective");
        assert_eq!(back.to_toml(), text);
        assert_eq!(back, c);
    }

    #[test]
    fn a_bad_network_section_is_set_aside() {
        let text = "hostname = \"h\"\n[[network.interfaces]]\nname = \"eth0\"\naddresses = [\"10.0.0.5\"]\n";
        let c = HostConfig::parse(text, SRC).expect("the rest applies");
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert!(c.network.is_empty());
        let e = c.network_error.0.clone().expect("kept");
        assert_eq!(e.key, "network.interfaces[0].addresses[0]");
        assert_eq!(HostConfig::parse_strict(text, SRC), Err(e));
        // The effective config has no [network]: what is applied.
        let back = HostConfig::parse(&c.to_toml(), "effective").expect("effective");
        assert!(back.network_error.0.is_none() && back.network.is_empty());
        // A bad section elsewhere still refuses everything.
        let e = err(&format!("{text}[health]\nsettle_seconds = -1\n"));
        assert!(e.contains("health.settle_seconds"), "{e}");
        assert!(HostConfig::parse("network = 1", SRC).is_ok_and(|c| c.network_error.0.is_some()));
    }

    #[test]
    fn empty_config_is_defaults() {
        let c = HostConfig::parse("", SRC).expect("valid");
        assert_eq!(c, HostConfig::default());
        assert!(c.health.uses_default_check());
        assert_eq!(c.health.settle_seconds, 5);
        assert_eq!(c.health.timeout_seconds, 180);
        assert!(!c.wants_ssh());
        assert_eq!(HostConfig::parse(&c.to_toml(), "effective"), Ok(c));
    }

    #[test]
    fn valid_variants() {
        for text in [
            "hostname = \"a\"",
            "hostname = \"node-1.example.com\"",
            "[[users]]\nname = \"_svc\"\npassword_hash = \"!\"",
            "[[users]]\nname = \"x\"\npassword_hash = \"*\"",
            "[[users]]\nname = \"x\"\npassword_hash = \"!$6$s$h\"",
            "[[users]]\nname = \"x\"\nssh_authorized_keys = [\"from=\\\"10.0.0.1\\\" ssh-rsa AAAA\"]",
            "[[users]]\nname = \"x\"\nssh_authorized_keys = []",
            "[health]\nsettle_seconds = 0\ntimeout_seconds = 1",
            "[health]\ncommands = [[\"/bin/sh\", \"-c\", \"exit 0\"]]",
            "[update]\n",
            "apps = []",
        ] {
            if let Err(e) = HostConfig::parse(text, SRC) {
                panic!("{text:?} refused: {e}");
            }
        }
    }

    /// (config, substrings the one-line error must contain)
    #[test]
    fn errors_name_the_key_and_the_source() {
        let cases: &[(&str, &[&str])] = &[
            ("hostnme = \"x\"", &["test.toml", "hostnme", "unknown key"]),
            (
                "hostname = 5",
                &["hostname", "expected a string, found an integer"],
            ),
            (
                "hostname = \"-bad\"",
                &["hostname", "not a valid host name"],
            ),
            ("hostname = \"a_b\"", &["hostname"]),
            (
                &format!("hostname = \"{}\"", "a".repeat(65)),
                &["hostname", "1 to 64"],
            ),
            ("users = 1", &["users", "expected an array"]),
            ("users = [1]", &["users[0]", "expected a table"]),
            (
                "[[users]]\npassword_hash = \"$6$x\"",
                &["users[0].name", "missing"],
            ),
            (
                "[[users]]\nname = \"Root\"",
                &["users[0].name", "not a valid user name"],
            ),
            (
                "[[users]]\nname = \"a\"\n[[users]]\nname = \"a\"",
                &["users[1].name", "twice"],
            ),
            (
                "[[users]]\nname = \"a\"\nshell = \"/bin/sh\"",
                &["users[0].shell", "unknown key"],
            ),
            (
                "[[users]]\nname = \"a\"\npassword_hash = \"hunter2\"",
                &["users[0].password_hash", "clear-text"],
            ),
            (
                "[[users]]\nname = \"a\"\npassword_hash = \"$6$a:b\"",
                &["users[0].password_hash"],
            ),
            (
                "[[users]]\nname = \"a\"\nssh_authorized_keys = \"ssh-ed25519 AAAA\"",
                &["users[0].ssh_authorized_keys", "expected an array"],
            ),
            (
                "[[users]]\nname = \"a\"\nssh_authorized_keys = [\"AAAA\"]",
                &["users[0].ssh_authorized_keys[0]", "not an SSH public key"],
            ),
            (
                "[[users]]\nname = \"a\"\nssh_authorized_keys = [\"ssh-ed25519\"]",
                &["ssh_authorized_keys[0]"],
            ),
            (
                "[[users]]\nname = \"a\"\nssh_authorized_keys = [\"ssh-ed25519 AAAA\\nssh-rsa B\"]",
                &["single line"],
            ),
            ("health = 1", &["health", "expected a table"]),
            ("[health]\nunit = []", &["health.unit", "unknown key"]),
            (
                "[health]\nunits = [\"networkd\"]",
                &["health.units[0]", "not a unit name"],
            ),
            (
                "[health]\nunits = \"a.service\"",
                &["health.units", "expected an array"],
            ),
            (
                "[health]\ncommands = [[]]",
                &["health.commands[0]", "empty command"],
            ),
            (
                "[health]\ncommands = [\"/bin/true\"]",
                &["health.commands[0]", "expected an array"],
            ),
            (
                "[health]\ncommands = [[\"true\"]]",
                &["health.commands[0]", "absolute path"],
            ),
            (
                "[health]\ncommands = [[\"/bin/x\", 1]]",
                &["health.commands[0][1]", "expected a string"],
            ),
            (
                "[health]\nsettle_seconds = -1",
                &["health.settle_seconds", "out of range"],
            ),
            (
                "[health]\nsettle_seconds = 3601",
                &["health.settle_seconds", "out of range"],
            ),
            (
                "[health]\ntimeout_seconds = 0",
                &["health.timeout_seconds", "out of range"],
            ),
            (
                "[health]\ntimeout_seconds = \"60\"",
                &["health.timeout_seconds", "expected an integer"],
            ),
            ("update = 1", &["update", "expected a table"]),
            (
                "[[users]]\nname = \"a\"\ngroups = [\"Wheel\"]",
                &["users[0].groups[0]", "not a valid group name"],
            ),
            (
                "[[users]]\nname = \"a\"\ngroups = [\"adm\", \"adm\"]",
                &["users[0].groups[1]", "twice"],
            ),
            (
                "[[users]]\nname = \"a\"\nsudo = \"yes\"",
                &["users[0].sudo", "true or false"],
            ),
            (
                "[[files]]\npath = \"/etc/systemd/system/a.service\"\ncontents = \"\"\n[[units]]\nname = \"a.service\"\nmask = true",
                &["files[0].path", "written by [[units]]"],
            ),
            ("timezone = \"Mars/\"", &["timezone", "not a time zone"]),
            (
                "kernel_modules = [1]",
                &["kernel_modules[0]", "expected a string"],
            ),
            ("apps = [1]", &["apps[0]", "expected a table"]),
            ("apps = {}", &["apps", "expected an array"]),
            (
                "hostname = \"x\"\nhostname = \"y\"",
                &["test.toml", "line 2"],
            ),
            ("\n\nhostname = ", &["test.toml", "line 3"]),
        ];
        for (text, wants) in cases {
            let e = err(text);
            assert!(!e.contains('\n'), "multi-line error for {text:?}: {e}");
            assert!(e.starts_with("test.toml: "), "{e}");
            for w in *wants {
                assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
            }
        }
    }
}
