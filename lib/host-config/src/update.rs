//! `[update]` of the host config: where updates come from, when the host may
//! reboot into one, and how a fleet takes turns. cairn-updated reads this
//! typed section; it never parses the TOML itself.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::check::{ConfigError, Ctx, join, kind};

/// Agent state of cairn-updated on ROOT (absolute, as the updater uses it).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cairn/updater";
/// The repository root the image ships (the first link of the key-rotation chain).
pub const DEFAULT_ROOT: &str = "/usr/lib/cairn/update-root.json";
/// The FleetLock and etcd-lock group when none is given (Zincati's default).
pub const DEFAULT_GROUP: &str = "default";
/// How long an etcd-lock slot outlives a host that stopped renewing it: long
/// enough for a reboot into the new release and its health gate (the agent
/// renews it again once it runs), short enough that a host that never comes
/// back frees the fleet within the quarter hour.
pub const DEFAULT_LEASE_SECONDS: u64 = 900;

const KEYS: &[&str] = &[
    "url",
    "channel",
    "interval_minutes",
    "reboot",
    "windows",
    "wave_seed",
    "root",
    "ca_file",
    "halt_after_rollbacks",
    "delta",
    "etcd",
    "fleetlock",
];
const ETCD_KEYS: &[&str] = &[
    "endpoints",
    "group",
    "max_rebooting",
    "lease_seconds",
    "ca_file",
    "cert_file",
    "key_file",
];
const FLEETLOCK_KEYS: &[&str] = &["url", "group"];
const HALT_KEYS: &[&str] = &["hosts", "percent"];

/// When a staged update may reboot the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootStrategy {
    /// As soon as the update is verified.
    Immediate,
    /// Only inside `windows`.
    Window,
    /// Never by itself (an operator reboots).
    Off,
    /// After taking a slot of the fleet's semaphore in etcd (`[update.etcd]`).
    EtcdLock,
    /// After a FleetLock server grants a slot (`[update.fleetlock]`).
    FleetLock,
}

impl RebootStrategy {
    const ALL: [(&'static str, RebootStrategy); 5] = [
        ("immediate", RebootStrategy::Immediate),
        ("window", RebootStrategy::Window),
        ("off", RebootStrategy::Off),
        ("etcd-lock", RebootStrategy::EtcdLock),
        ("fleetlock", RebootStrategy::FleetLock),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("immediate", |(n, _)| n)
    }

    fn parse(s: &str) -> Option<RebootStrategy> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }
}

/// `[update.etcd]`: the fleet's reboot semaphore and rollout outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs, tried in turn (`https://etcd-1:2379`).
    pub endpoints: Vec<String>,
    pub group: String,
    /// Hosts of the group that may reboot at the same time.
    pub max_rebooting: u64,
    /// TTL of the lease a slot is bound to.
    pub lease_seconds: u64,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (both or neither).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[update.fleetlock]`: a FleetLock server (Zincati's protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockSettings {
    /// The base URL; the client posts to `<url>/v1/pre-reboot` and
    /// `<url>/v1/steady-state`.
    pub url: String,
    pub group: String,
}

/// When a release has rolled back on enough hosts, no further host installs
/// it: after `hosts` rollbacks or `percent` % of the hosts that installed it,
/// whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaltThreshold {
    pub hosts: u64,
    pub percent: u64,
}

impl Default for HaltThreshold {
    fn default() -> Self {
        HaltThreshold {
            hosts: 2,
            percent: 5,
        }
    }
}

/// Settings of the `[update]` table; every field has a default, and no `url`
/// means there is no repository: the agent stays idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    pub url: Option<String>,
    pub channel: String,
    pub interval_minutes: u64,
    pub reboot: RebootStrategy,
    /// Maintenance windows in the host's time zone (the `reboot-window`
    /// grammar: `"Sat,Sun 02:00-04:00"`); with a lock strategy a slot is
    /// only requested inside one.
    pub windows: Vec<String>,
    pub wave_seed: PathBuf,
    /// The trusted repository root shipped with the image.
    pub root: PathBuf,
    /// A PEM bundle of CA certificates for an `https://` repository behind a
    /// private CA. When set, these CAs are trusted *instead of* the public
    /// web PKI compiled into the updater: a host pointed at a private mirror
    /// has no reason to accept a certificate for it from any public CA.
    /// Updates stay authenticated by their signatures either way.
    pub ca_file: Option<PathBuf>,
    pub halt_after_rollbacks: HaltThreshold,
    /// Download only the blocks the active slot does not hold, when the
    /// release carries a block index (falls back to the full download on
    /// any doubt). Off until the delta path resumes an interrupted write
    /// part-way as the full download does.
    pub delta: bool,
    pub etcd: Option<EtcdSettings>,
    pub fleetlock: Option<FleetLockSettings>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            url: None,
            channel: "stable".into(),
            interval_minutes: 60,
            reboot: RebootStrategy::Immediate,
            windows: Vec::new(),
            wave_seed: Path::new(DEFAULT_STATE_DIR).join("wave-seed"),
            root: PathBuf::from(DEFAULT_ROOT),
            ca_file: None,
            halt_after_rollbacks: HaltThreshold::default(),
            delta: false,
            etcd: None,
            fleetlock: None,
        }
    }
}

fn http_url(cx: &Ctx, key: &str, v: &Value) -> Result<String, ConfigError> {
    let s = cx.string(key, v)?;
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(s),
        _ => Err(cx.err(
            key,
            format!("{s:?} is not an http:// or https:// URL (like \"https://updates.example.com/cairn\")"),
        )),
    }
}

fn absolute(cx: &Ctx, key: &str, v: &Value, what: &str) -> Result<PathBuf, ConfigError> {
    let s = cx.string(key, v)?;
    let p = PathBuf::from(&s);
    if !p.is_absolute() {
        return Err(cx.err(key, format!("{s:?} must be an absolute path ({what})")));
    }
    Ok(p)
}

fn group(cx: &Ctx, key: &str, v: &Value) -> Result<String, ConfigError> {
    let g = cx.string(key, v)?;
    // FleetLock's rule, used for etcd too so a group name works with both.
    if g.is_empty()
        || !g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(cx.err(
            key,
            format!("{g:?} is not a group name (letters, digits, '.' and '-', like \"workers\")"),
        ));
    }
    Ok(g)
}

fn count(cx: &Ctx, key: &str, v: &Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    cx.seconds(key, v, min, max)
}

fn parse_etcd(cx: &Ctx, key: &str, t: &Table) -> Result<EtcdSettings, ConfigError> {
    cx.unknown_keys(key, t, ETCD_KEYS)?;
    let k = |s: &str| join(key, s);
    let mut e = EtcdSettings {
        endpoints: Vec::new(),
        group: DEFAULT_GROUP.into(),
        max_rebooting: 1,
        lease_seconds: DEFAULT_LEASE_SECONDS,
        ca_file: None,
        cert_file: None,
        key_file: None,
    };
    let Some(eps) = t.get("endpoints") else {
        return Err(cx.err(
            &k("endpoints"),
            "missing: list the etcd client URLs (like [\"https://10.0.0.10:2379\"])",
        ));
    };
    for (i, v) in cx.array(&k("endpoints"), eps)?.iter().enumerate() {
        e.endpoints
            .push(http_url(cx, &format!("{}[{i}]", k("endpoints")), v)?);
    }
    if e.endpoints.is_empty() {
        return Err(cx.err(&k("endpoints"), "needs at least one etcd client URL"));
    }
    if let Some(v) = t.get("group") {
        e.group = group(cx, &k("group"), v)?;
    }
    if let Some(v) = t.get("max_rebooting") {
        e.max_rebooting = count(cx, &k("max_rebooting"), v, 1, 100_000)?;
    }
    if let Some(v) = t.get("lease_seconds") {
        e.lease_seconds = count(cx, &k("lease_seconds"), v, 60, 86_400)?;
    }
    let file = |name: &str, what: &str| -> Result<Option<PathBuf>, ConfigError> {
        t.get(name)
            .map(|v| absolute(cx, &k(name), v, what))
            .transpose()
    };
    e.ca_file = file("ca_file", "a PEM bundle of CA certificates")?;
    e.cert_file = file("cert_file", "a PEM client certificate")?;
    e.key_file = file("key_file", "the PEM key of cert_file")?;
    if e.cert_file.is_some() != e.key_file.is_some() {
        return Err(cx.err(
            &k(if e.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            }),
            "cert_file and key_file go together: give both or neither",
        ));
    }
    Ok(e)
}

fn parse_fleetlock(cx: &Ctx, key: &str, t: &Table) -> Result<FleetLockSettings, ConfigError> {
    cx.unknown_keys(key, t, FLEETLOCK_KEYS)?;
    let k = |s: &str| join(key, s);
    let url = match t.get("url") {
        Some(v) => http_url(cx, &k("url"), v)?,
        None => {
            return Err(cx.err(
                &k("url"),
                "missing: the FleetLock server's base URL (like \"http://fleetlock.example.com:8080\")",
            ));
        }
    };
    let group = match t.get("group") {
        Some(v) => group(cx, &k("group"), v)?,
        None => DEFAULT_GROUP.into(),
    };
    Ok(FleetLockSettings {
        url: url.trim_end_matches('/').to_string(),
        group,
    })
}

fn parse_halt(cx: &Ctx, key: &str, v: &Value) -> Result<HaltThreshold, ConfigError> {
    let mut h = HaltThreshold::default();
    match v {
        // `halt_after_rollbacks = 3`: hosts, the percentage kept.
        Value::Integer(_) => h.hosts = count(cx, key, v, 1, 1_000_000)?,
        Value::Table(t) => {
            cx.unknown_keys(key, t, HALT_KEYS)?;
            if let Some(v) = t.get("hosts") {
                h.hosts = count(cx, &join(key, "hosts"), v, 1, 1_000_000)?;
            }
            if let Some(v) = t.get("percent") {
                h.percent = count(cx, &join(key, "percent"), v, 1, 100)?;
            }
        }
        other => {
            return Err(cx.err(
                key,
                format!(
                    "expected an integer or a table like {{ hosts = 2, percent = 5 }}, found {}",
                    kind(other)
                ),
            ));
        }
    }
    Ok(h)
}

impl UpdateConfig {
    /// Validates the `[update]` table (`key` is its name in errors).
    pub(crate) fn parse(cx: &Ctx, t: &Table) -> Result<UpdateConfig, ConfigError> {
        const K: &str = "update";
        cx.unknown_keys(K, t, KEYS)?;
        let k = |s: &str| join(K, s);
        let mut c = UpdateConfig::default();
        if let Some(v) = t.get("url") {
            c.url = Some(http_url(cx, &k("url"), v)?);
        }
        if let Some(v) = t.get("channel") {
            let ch = cx.string(&k("channel"), v)?;
            if ch.is_empty()
                || !ch
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(cx.err(
                    &k("channel"),
                    format!("{ch:?} is not a channel name (letters, digits, '.', '_', '-', like \"stable\")"),
                ));
            }
            c.channel = ch;
        }
        if let Some(v) = t.get("interval_minutes") {
            c.interval_minutes = count(cx, &k("interval_minutes"), v, 1, 10_080)?;
        }
        if let Some(v) = t.get("reboot") {
            let s = cx.string(&k("reboot"), v)?;
            c.reboot = RebootStrategy::parse(&s).ok_or_else(|| {
                let names: Vec<&str> = RebootStrategy::ALL.iter().map(|(n, _)| *n).collect();
                cx.err(
                    &k("reboot"),
                    format!("unknown strategy {s:?} (use one of: {})", names.join(", ")),
                )
            })?;
        }
        if let Some(v) = t.get("windows") {
            for (i, w) in cx.strings(&k("windows"), v)?.into_iter().enumerate() {
                reboot_window::Window::parse(&w)
                    .map_err(|e| cx.err(&format!("{}[{i}]", k("windows")), e.to_string()))?;
                c.windows.push(w);
            }
        }
        if let Some(v) = t.get("wave_seed") {
            c.wave_seed = absolute(cx, &k("wave_seed"), v, "a file on ROOT")?;
        }
        if let Some(v) = t.get("root") {
            c.root = absolute(cx, &k("root"), v, "the repository's root.json")?;
        }
        if let Some(v) = t.get("ca_file") {
            c.ca_file = Some(absolute(
                cx,
                &k("ca_file"),
                v,
                "a PEM bundle of CA certificates",
            )?);
        }
        if let Some(v) = t.get("halt_after_rollbacks") {
            c.halt_after_rollbacks = parse_halt(cx, &k("halt_after_rollbacks"), v)?;
        }
        if let Some(v) = t.get("delta") {
            c.delta = cx.boolean(&k("delta"), v)?;
        }
        if let Some(v) = t.get("etcd") {
            c.etcd = Some(parse_etcd(cx, &k("etcd"), cx.table(&k("etcd"), v)?)?);
        }
        if let Some(v) = t.get("fleetlock") {
            c.fleetlock = Some(parse_fleetlock(
                cx,
                &k("fleetlock"),
                cx.table(&k("fleetlock"), v)?,
            )?);
        }
        match c.reboot {
            RebootStrategy::Window if c.windows.is_empty() => Err(cx.err(
                &k("windows"),
                "reboot = \"window\" needs at least one window (like [\"Sat,Sun 02:00-04:00\"])",
            )),
            RebootStrategy::EtcdLock if c.etcd.is_none() => Err(cx.err(
                &k("etcd"),
                "reboot = \"etcd-lock\" needs an [update.etcd] table with endpoints",
            )),
            RebootStrategy::FleetLock if c.fleetlock.is_none() => Err(cx.err(
                &k("fleetlock"),
                "reboot = \"fleetlock\" needs an [update.fleetlock] table with url",
            )),
            _ => Ok(c),
        }
    }

    /// The table again, every value spelled out (the effective config).
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let s = |v: &str| Value::String(v.to_string());
        let p = |v: &Path| Value::String(v.display().to_string());
        // Every number is bounded far below i64::MAX by validation.
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        if let Some(u) = &self.url {
            t.insert("url".into(), s(u));
        }
        t.insert("channel".into(), s(&self.channel));
        t.insert("interval_minutes".into(), int(self.interval_minutes));
        t.insert("reboot".into(), s(self.reboot.as_str()));
        t.insert(
            "windows".into(),
            Value::Array(self.windows.iter().map(|w| s(w)).collect()),
        );
        t.insert("wave_seed".into(), p(&self.wave_seed));
        t.insert("root".into(), p(&self.root));
        if let Some(c) = &self.ca_file {
            t.insert("ca_file".into(), p(c));
        }
        let mut h = Table::new();
        h.insert("hosts".into(), int(self.halt_after_rollbacks.hosts));
        h.insert("percent".into(), int(self.halt_after_rollbacks.percent));
        t.insert("halt_after_rollbacks".into(), Value::Table(h));
        t.insert("delta".into(), Value::Boolean(self.delta));
        if let Some(e) = &self.etcd {
            let mut et = Table::new();
            et.insert(
                "endpoints".into(),
                Value::Array(e.endpoints.iter().map(|u| s(u)).collect()),
            );
            et.insert("group".into(), s(&e.group));
            et.insert("max_rebooting".into(), int(e.max_rebooting));
            et.insert("lease_seconds".into(), int(e.lease_seconds));
            for (name, f) in [
                ("ca_file", &e.ca_file),
                ("cert_file", &e.cert_file),
                ("key_file", &e.key_file),
            ] {
                if let Some(f) = f {
                    et.insert(name.into(), p(f));
                }
            }
            t.insert("etcd".into(), Value::Table(et));
        }
        if let Some(f) = &self.fleetlock {
            let mut ft = Table::new();
            ft.insert("url".into(), s(&f.url));
            ft.insert("group".into(), s(&f.group));
            t.insert("fleetlock".into(), Value::Table(ft));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    fn parse(update: &str) -> Result<UpdateConfig, String> {
        HostConfig::parse(&format!("[update]\n{update}"), "t.toml")
            .map(|c| c.update)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_round_trip() {
        let c = parse("").expect("empty table");
        assert_eq!(c, UpdateConfig::default());
        assert_eq!(
            HostConfig::parse("", "t").map(|c| c.update),
            Ok(UpdateConfig::default())
        );
        let full = HostConfig::parse(crate::config::EXAMPLE, "t").expect("example");
        let again = HostConfig::parse(&full.to_toml(), "effective").expect("effective");
        assert_eq!(again.update, full.update);
    }

    #[test]
    fn valid_variants() {
        type Check = fn(&UpdateConfig) -> bool;
        let rows: &[(&str, Check)] = &[
            ("reboot = \"off\"", |c| c.reboot == RebootStrategy::Off),
            (
                "reboot = \"window\"\nwindows = [\"Mon..Fri 23:00 1h30m\"]",
                |c| c.windows.len() == 1,
            ),
            ("delta = true", |c| c.delta),
            ("halt_after_rollbacks = 4", |c| {
                c.halt_after_rollbacks
                    == HaltThreshold {
                        hosts: 4,
                        percent: 5,
                    }
            }),
            (
                "reboot = \"fleetlock\"\n[update.fleetlock]\nurl = \"http://10.0.2.2:9000/\"",
                |c| {
                    c.fleetlock.as_ref().is_some_and(|f| {
                        f.url == "http://10.0.2.2:9000" && f.group == DEFAULT_GROUP
                    })
                },
            ),
            (
                "reboot = \"etcd-lock\"\n[update.etcd]\nendpoints = [\"http://10.0.2.2:2379\"]",
                |c| {
                    c.etcd.as_ref().is_some_and(|e| {
                        e.max_rebooting == 1 && e.lease_seconds == DEFAULT_LEASE_SECONDS
                    })
                },
            ),
        ];
        for (text, ok) in rows {
            let c = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(ok(&c), "{text:?}: {c:?}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let rows = [
            ("urll = \"x\"", "update.urll: unknown key"),
            (
                "url = \"ftp://x\"",
                "update.url: \"ftp://x\" is not an http",
            ),
            ("channel = \"a b\"", "update.channel"),
            ("delta = \"yes\"", "update.delta: expected true or false"),
            (
                "interval_minutes = 0",
                "update.interval_minutes: 0 is out of range",
            ),
            (
                "reboot = \"sometimes\"",
                "update.reboot: unknown strategy \"sometimes\"",
            ),
            (
                "reboot = \"window\"",
                "update.windows: reboot = \"window\" needs",
            ),
            ("windows = [\"Funday 01:00-02:00\"]", "update.windows[0]:"),
            (
                "ca_file = \"ca.pem\"",
                "update.ca_file: \"ca.pem\" must be an absolute path",
            ),
            (
                "halt_after_rollbacks = \"2\"",
                "update.halt_after_rollbacks: expected an integer or a table",
            ),
            (
                "halt_after_rollbacks = { percent = 0 }",
                "update.halt_after_rollbacks.percent",
            ),
            (
                "reboot = \"etcd-lock\"",
                "update.etcd: reboot = \"etcd-lock\" needs",
            ),
            (
                "reboot = \"fleetlock\"",
                "update.fleetlock: reboot = \"fleetlock\" needs",
            ),
            (
                "[update.etcd]\ngroup = \"g\"",
                "update.etcd.endpoints: missing",
            ),
            (
                "[update.etcd]\nendpoints = []",
                "update.etcd.endpoints: needs at least one",
            ),
            (
                "[update.etcd]\nendpoints = [\"http://e:2379\"]\ngroup = \"a/b\"",
                "update.etcd.group",
            ),
            (
                "[update.etcd]\nendpoints = [\"http://e:2379\"]\ncert_file = \"/etc/c.pem\"",
                "update.etcd.key_file: cert_file and key_file go together",
            ),
            (
                "[update.etcd]\nendpoints = [\"http://e:2379\"]\nmax_rebooting = 0",
                "update.etcd.max_rebooting",
            ),
            (
                "[update.fleetlock]\ngroup = \"g\"",
                "update.fleetlock.url: missing",
            ),
            (
                "[update.fleetlock]\nurl = \"http://f\"\nid = \"x\"",
                "update.fleetlock.id: unknown key",
            ),
        ];
        for (text, want) in rows {
            match parse(text) {
                Ok(c) => panic!("accepted {text:?}: {c:?}"),
                Err(e) => assert!(e.contains(want), "{text:?}: {e}"),
            }
        }
    }
}
