//! `[network]` of the host config: interfaces, bonds and VLANs, which
//! cairn-config renders to systemd-networkd files under
//! /etc/systemd/network (host-setup/src/render.rs).
//!
//! ```toml
//! [[network.interfaces]]
//! name = "eth0"                  # a glob ("en*"), or `mac`, or both
//! dhcp = "no"                    # yes | no | ipv4 | ipv6; default: yes without addresses
//! addresses = ["10.0.0.5/24", "fd00::5/64"]
//! gateway = ["10.0.0.1", "fd00::1"]  # one per family (a string for one)
//! dns = ["10.0.0.1"]
//! mtu = 9000
//! routes = [{ destination = "10.1.0.0/16", gateway = "10.0.0.254", metric = 100 }]
//! [[network.bonds]]
//! name = "bond0"
//! mode = "802.3ad"
//! members = ["enp1s0f0", "52:54:00:12:34:57"]  # names (globs) or MACs
//! [[network.vlans]]
//! name = "vlan10"
//! id = 10
//! parent = "bond0"               # a bond, or an interface given by exact name
//! ```
//!
//! An interface no entry matches keeps the image's default (DHCP on wired
//! interfaces, /usr/lib/systemd/network/80-cairn-dhcp.network). A bad
//! `[network]` section is set aside rather than failing the whole config
//! ([`crate::config::SetAside`]): the host falls back to that default and
//! stays reachable.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use toml::{Table, Value};

use crate::check::{ConfigError, Ctx};

const KEYS: &[&str] = &["interfaces", "bonds", "vlans"];
const SETTING_KEYS: &[&str] = &["dhcp", "addresses", "gateway", "routes", "dns", "mtu"];
const INTERFACE_KEYS: &[&str] = &["name", "mac"];
const BOND_KEYS: &[&str] = &["name", "mode", "members"];
const VLAN_KEYS: &[&str] = &["name", "id", "parent"];
const ROUTE_KEYS: &[&str] = &["destination", "gateway", "metric"];

/// Entries of each list: the rendered file names carry a two-digit index.
pub const MAX_ENTRIES: usize = 100;
/// Linux `IFNAMSIZ` - 1.
pub const IFNAME_MAX: usize = 15;
pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 65535;

/// The bonding modes of systemd.netdev(5) `[Bond] Mode=`.
pub const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub bonds: Vec<Bond>,
    pub vlans: Vec<Vlan>,
}

impl Network {
    /// Nothing configured: the image's default network applies.
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.bonds.is_empty() && self.vlans.is_empty()
    }
}

/// `[[network.interfaces]]`: settings for the interfaces it matches (by
/// name glob, permanent MAC, or both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: Option<String>,
    pub mac: Option<Mac>,
    pub settings: Settings,
}

/// `[[network.bonds]]`: a bond device, its members and its own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bond {
    pub name: String,
    /// One of [`BOND_MODES`].
    pub mode: String,
    pub members: Vec<Member>,
    pub settings: Settings,
}

/// A bond member: an interface name (glob) or a permanent MAC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    Name(String),
    Mac(Mac),
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Name(n) => f.write_str(n),
            Member::Mac(m) => m.fmt(f),
        }
    }
}

/// `[[network.vlans]]`: a VLAN on a bond or an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vlan {
    pub name: String,
    /// 1..=4094.
    pub id: u16,
    /// The name of a bond or of an interface entry.
    pub parent: String,
    pub settings: Settings,
}

/// Addressing shared by interfaces, bonds and VLANs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub dhcp: Dhcp,
    pub addresses: Vec<IpNet>,
    /// At most one per address family.
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dhcp {
    Yes,
    No,
    Ipv4,
    Ipv6,
}

impl Dhcp {
    const ALL: [(&'static str, Dhcp); 4] = [
        ("yes", Dhcp::Yes),
        ("no", Dhcp::No),
        ("ipv4", Dhcp::Ipv4),
        ("ipv6", Dhcp::Ipv6),
    ];

    /// The value of networkd's `DHCP=`, which is also the config's.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, d)| *d == self)
            .map_or("yes", |(n, _)| n)
    }
}

/// An address with its prefix length (`10.0.0.5/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    /// Parses `addr/prefix`; the prefix is required.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let Some((a, p)) = s.split_once('/') else {
            let example = if s.contains(':') { 64 } else { 24 };
            return Err(format!(
                "{s:?} needs a prefix length, like \"{s}/{example}\""
            ));
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(prefix) if prefix <= max && !p.starts_with('+') => Ok(IpNet { addr, prefix }),
            _ => Err(format!("{p:?} is not a prefix length 0..={max}")),
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// An Ethernet MAC address; written lower-case with colons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Mac {
    /// `52:54:00:12:34:56` or `52-54-00-12-34-56`, any case.
    pub fn parse(s: &str) -> Option<Mac> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(Mac(out))
    }
}

/// An exact interface name, as the kernel and networkd take it.
pub fn check_ifname(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= IFNAME_MAX
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not an interface name (1 to {IFNAME_MAX} of a-z, A-Z, 0-9, '_', '-', '.', like \"eth0\")"
        ))
    }
}

fn has_glob(n: &str) -> bool {
    n.contains(['*', '?', '['])
}

/// An interface name or a shell glob over names (`en*`, `eth[01]`).
pub fn check_ifglob(n: &str) -> Result<(), String> {
    if !has_glob(n) {
        return check_ifname(n);
    }
    let ok = n.len() <= 64
        && n.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*' | b'?' | b'[' | b']')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not an interface name or glob (like \"eth0\" or \"en*\")"
        ))
    }
}

fn bad_host_addr(a: &IpAddr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if let IpAddr::V4(v4) = a
        && v4.is_broadcast()
    {
        Some("the broadcast address")
    } else {
        None
    }
}

fn ip(cx: &Ctx, key: &str, v: &Value) -> Result<IpAddr, ConfigError> {
    let s = cx.string(key, v)?;
    let a: IpAddr = s.parse().map_err(|_| {
        let hint = if s.contains('/') {
            " (without a prefix length)"
        } else {
            ""
        };
        cx.err(
            key,
            format!("{s:?} is not an IPv4 or IPv6 address{hint}, like \"10.0.0.1\" or \"fd00::1\""),
        )
    })?;
    if let Some(why) = bad_host_addr(&a) {
        return Err(cx.err(key, format!("{s:?} is {why}")));
    }
    Ok(a)
}

fn u32_in(cx: &Ctx, key: &str, v: &Value, min: u32, max: u32) -> Result<u32, ConfigError> {
    let n = cx.seconds(key, v, u64::from(min), u64::from(max))?;
    Ok(u32::try_from(n).unwrap_or(max))
}

fn parse_settings(cx: &Ctx, key: &str, t: &Table) -> Result<Settings, ConfigError> {
    let k = |s: &str| format!("{key}.{s}");
    let mut addresses = Vec::new();
    if let Some(v) = t.get("addresses") {
        for (i, s) in cx.strings(&k("addresses"), v)?.iter().enumerate() {
            let ak = format!("{key}.addresses[{i}]");
            let net = IpNet::parse(s).map_err(|m| cx.err(&ak, m))?;
            if let Some(why) = bad_host_addr(&net.addr) {
                return Err(cx.err(&ak, format!("{s:?} is {why}")));
            }
            if addresses.contains(&net) {
                return Err(cx.err(&ak, format!("{s:?} is listed twice")));
            }
            addresses.push(net);
        }
    }
    let dhcp = match t.get("dhcp") {
        Some(v) => {
            let s = cx.string(&k("dhcp"), v)?;
            Dhcp::ALL
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, d)| *d)
                .ok_or_else(|| {
                    cx.err(
                        &k("dhcp"),
                        format!("{s:?} is not one of \"yes\", \"no\", \"ipv4\", \"ipv6\""),
                    )
                })?
        }
        // Static addresses mean no DHCP unless asked; nothing means DHCP.
        None if addresses.is_empty() => Dhcp::Yes,
        None => Dhcp::No,
    };
    let mut gateways = Vec::new();
    if let Some(v) = t.get("gateway") {
        let gk = k("gateway");
        let list: Vec<(String, &Value)> = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{gk}[{i}]"), e))
                .collect(),
            other => vec![(gk.clone(), other)],
        };
        for (ek, e) in list {
            let g = ip(cx, &ek, e)?;
            if gateways.iter().any(|o: &IpAddr| o.is_ipv4() == g.is_ipv4()) {
                return Err(cx.err(
                    &ek,
                    "one gateway per address family (add other routes under `routes`)",
                ));
            }
            gateways.push(g);
        }
    }
    let mut routes = Vec::new();
    if let Some(v) = t.get("routes") {
        for (i, r) in cx.array(&k("routes"), v)?.iter().enumerate() {
            routes.push(parse_route(cx, &format!("{key}.routes[{i}]"), r)?);
        }
    }
    let mut dns = Vec::new();
    if let Some(v) = t.get("dns") {
        for (i, e) in cx.array(&k("dns"), v)?.iter().enumerate() {
            dns.push(ip(cx, &format!("{key}.dns[{i}]"), e)?);
        }
    }
    let mtu = match t.get("mtu") {
        Some(v) => Some(u32_in(cx, &k("mtu"), v, MTU_MIN, MTU_MAX)?),
        None => None,
    };
    Ok(Settings {
        dhcp,
        addresses,
        gateways,
        routes,
        dns,
        mtu,
    })
}

fn parse_route(cx: &Ctx, key: &str, v: &Value) -> Result<Route, ConfigError> {
    let t = cx.table(key, v)?;
    cx.unknown_keys(key, t, ROUTE_KEYS)?;
    let dk = format!("{key}.destination");
    let Some(d) = t.get("destination") else {
        return Err(cx.err(
            &dk,
            "missing (like destination = \"10.1.0.0/16\"; \"0.0.0.0/0\" is the default route)",
        ));
    };
    let ds = cx.string(&dk, d)?;
    let destination = IpNet::parse(&ds).map_err(|m| cx.err(&dk, m))?;
    if destination.network() != destination.addr {
        return Err(cx.err(
            &dk,
            format!(
                "{ds:?} has host bits set: did you mean \"{}/{}\"?",
                destination.network(),
                destination.prefix
            ),
        ));
    }
    let gateway = match t.get("gateway") {
        Some(v) => {
            let gk = format!("{key}.gateway");
            let g = ip(cx, &gk, v)?;
            if g.is_ipv4() != destination.addr.is_ipv4() {
                return Err(cx.err(
                    &gk,
                    format!("{g} is not of the address family of the destination {destination}"),
                ));
            }
            Some(g)
        }
        None => None,
    };
    let metric = match t.get("metric") {
        Some(v) => Some(u32_in(cx, &format!("{key}.metric"), v, 0, u32::MAX)?),
        None => None,
    };
    Ok(Route {
        destination,
        gateway,
        metric,
    })
}

/// The entries of one list, each checked for unknown keys against its own
/// keys plus the shared settings.
fn entries<'v>(
    cx: &Ctx,
    t: &'v Table,
    list: &str,
    own: &[&str],
) -> Result<Vec<(String, &'v Table)>, ConfigError> {
    let Some(v) = t.get(list) else {
        return Ok(Vec::new());
    };
    let key = format!("network.{list}");
    let a = cx.array(&key, v)?;
    if a.len() > MAX_ENTRIES {
        return Err(cx.err(&key, format!("at most {MAX_ENTRIES} entries")));
    }
    let known: Vec<&str> = own.iter().chain(SETTING_KEYS).copied().collect();
    let mut out = Vec::new();
    for (i, e) in a.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let et = cx.table(&k, e)?;
        cx.unknown_keys(&k, et, &known)?;
        out.push((k, et));
    }
    Ok(out)
}

fn required_string(
    cx: &Ctx,
    key: &str,
    t: &Table,
    name: &str,
    example: &str,
) -> Result<String, ConfigError> {
    let k = format!("{key}.{name}");
    match t.get(name) {
        Some(v) => cx.string(&k, v),
        None => Err(cx.err(&k, format!("missing (like {name} = {example})"))),
    }
}

impl Network {
    /// Validates the `[network]` table.
    pub(crate) fn parse(cx: &Ctx, t: &Table) -> Result<Network, ConfigError> {
        cx.unknown_keys("network", t, KEYS)?;
        let mut net = Network::default();
        // Names of bonds and VLANs: the devices networkd creates.
        let mut devices = BTreeSet::new();
        for (key, et) in entries(cx, t, "interfaces", INTERFACE_KEYS)? {
            let name = match et.get("name") {
                Some(v) => {
                    let k = format!("{key}.name");
                    let n = cx.string(&k, v)?;
                    if n.starts_with('!') {
                        return Err(cx.err(
                            &k,
                            "an inverted match is not supported; list the interfaces to configure",
                        ));
                    }
                    check_ifglob(&n).map_err(|m| cx.err(&k, m))?;
                    Some(n)
                }
                None => None,
            };
            let mac = match et.get("mac") {
                Some(v) => {
                    let k = format!("{key}.mac");
                    let s = cx.string(&k, v)?;
                    Some(Mac::parse(&s).ok_or_else(|| {
                        cx.err(
                            &k,
                            format!("{s:?} is not a MAC address (like \"52:54:00:12:34:56\")"),
                        )
                    })?)
                }
                None => None,
            };
            if name.is_none() && mac.is_none() {
                return Err(cx.err(
                    &key,
                    "needs `name` (a name or glob, like \"eth0\" or \"en*\") or `mac`",
                ));
            }
            if net
                .interfaces
                .iter()
                .any(|o: &Interface| o.name == name && o.mac == mac)
            {
                return Err(cx.err(&key, "matches the same interfaces as an earlier entry"));
            }
            let settings = parse_settings(cx, &key, et)?;
            net.interfaces.push(Interface {
                name,
                mac,
                settings,
            });
        }
        let exact_ifnames: BTreeSet<&str> = net
            .interfaces
            .iter()
            .filter_map(|i| i.name.as_deref())
            .filter(|n| !has_glob(n))
            .collect();
        let exact_ifnames: BTreeSet<String> =
            exact_ifnames.into_iter().map(str::to_string).collect();
        let if_macs: BTreeSet<Mac> = net.interfaces.iter().filter_map(|i| i.mac).collect();
        let mut claimed = BTreeSet::new();
        for (key, et) in entries(cx, t, "bonds", BOND_KEYS)? {
            let nk = format!("{key}.name");
            let name = required_string(cx, &key, et, "name", "\"bond0\"")?;
            check_ifname(&name).map_err(|m| cx.err(&nk, m))?;
            if exact_ifnames.contains(&name) || !devices.insert(name.clone()) {
                return Err(cx.err(
                    &nk,
                    format!("{name:?} is already the name of another entry"),
                ));
            }
            let mk = format!("{key}.mode");
            let mode = required_string(cx, &key, et, "mode", "\"active-backup\"")?;
            if !BOND_MODES.contains(&mode.as_str()) {
                return Err(cx.err(
                    &mk,
                    format!(
                        "{mode:?} is not a bond mode (one of {})",
                        BOND_MODES.join(", ")
                    ),
                ));
            }
            let msk = format!("{key}.members");
            let Some(mv) = et.get("members") else {
                return Err(cx.err(&msk, "missing (like members = [\"eth0\", \"eth1\"])"));
            };
            let mut members = Vec::new();
            for (i, s) in cx.strings(&msk, mv)?.iter().enumerate() {
                let ek = format!("{msk}[{i}]");
                // ':' never occurs in an interface name.
                let m = if s.contains(':') {
                    Member::Mac(Mac::parse(s).ok_or_else(|| {
                        cx.err(
                            &ek,
                            format!("{s:?} is not a MAC address (like \"52:54:00:12:34:56\")"),
                        )
                    })?)
                } else {
                    check_ifglob(s).map_err(|e| cx.err(&ek, e))?;
                    Member::Name(s.clone())
                };
                let taken = match &m {
                    Member::Name(n) => exact_ifnames.contains(n) || devices.contains(n),
                    Member::Mac(mac) => if_macs.contains(mac),
                };
                if taken {
                    return Err(cx.err(
                        &ek,
                        format!("{s:?} is configured by another entry; a bond member takes only the bond's settings"),
                    ));
                }
                if !claimed.insert(m.to_string()) {
                    return Err(cx.err(&ek, format!("{s:?} is already a member of a bond")));
                }
                members.push(m);
            }
            if members.is_empty() {
                return Err(cx.err(&msk, "a bond needs at least one member"));
            }
            let settings = parse_settings(cx, &key, et)?;
            net.bonds.push(Bond {
                name,
                mode,
                members,
                settings,
            });
        }
        let mut vlan_ids = BTreeSet::new();
        for (key, et) in entries(cx, t, "vlans", VLAN_KEYS)? {
            let nk = format!("{key}.name");
            let name = required_string(cx, &key, et, "name", "\"vlan10\"")?;
            check_ifname(&name).map_err(|m| cx.err(&nk, m))?;
            if exact_ifnames.contains(&name) || !devices.insert(name.clone()) {
                return Err(cx.err(
                    &nk,
                    format!("{name:?} is already the name of another entry"),
                ));
            }
            let ik = format!("{key}.id");
            let Some(iv) = et.get("id") else {
                return Err(cx.err(&ik, "missing (like id = 10)"));
            };
            let id = u16::try_from(u32_in(cx, &ik, iv, 1, 4094)?).unwrap_or(1);
            let pk = format!("{key}.parent");
            let parent = required_string(cx, &key, et, "parent", "\"eth0\"")?;
            let is_bond = net.bonds.iter().any(|b| b.name == parent);
            if !is_bond && !exact_ifnames.contains(&parent) {
                return Err(cx.err(
                    &pk,
                    format!("{parent:?} is neither a [[network.bonds]] name nor the exact name of a [[network.interfaces]] entry"),
                ));
            }
            if !claimed.insert(format!("{parent}.{id}")) || !vlan_ids.insert((parent.clone(), id)) {
                return Err(cx.err(&ik, format!("VLAN {id} on {parent:?} is defined twice")));
            }
            let settings = parse_settings(cx, &key, et)?;
            net.vlans.push(Vlan {
                name,
                id,
                parent,
                settings,
            });
        }
        Ok(net)
    }

    /// The `[network]` table of the effective config (defaults filled in).
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let list = |v: Vec<Table>| Value::Array(v.into_iter().map(Value::Table).collect());
        if !self.interfaces.is_empty() {
            let v = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut e = Table::new();
                    if let Some(n) = &i.name {
                        e.insert("name".into(), Value::String(n.clone()));
                    }
                    if let Some(m) = &i.mac {
                        e.insert("mac".into(), Value::String(m.to_string()));
                    }
                    i.settings.fill(&mut e);
                    e
                })
                .collect();
            t.insert("interfaces".into(), list(v));
        }
        if !self.bonds.is_empty() {
            let v = self
                .bonds
                .iter()
                .map(|b| {
                    let mut e = Table::new();
                    e.insert("name".into(), Value::String(b.name.clone()));
                    e.insert("mode".into(), Value::String(b.mode.clone()));
                    e.insert(
                        "members".into(),
                        Value::Array(
                            b.members
                                .iter()
                                .map(|m| Value::String(m.to_string()))
                                .collect(),
                        ),
                    );
                    b.settings.fill(&mut e);
                    e
                })
                .collect();
            t.insert("bonds".into(), list(v));
        }
        if !self.vlans.is_empty() {
            let v = self
                .vlans
                .iter()
                .map(|l| {
                    let mut e = Table::new();
                    e.insert("name".into(), Value::String(l.name.clone()));
                    e.insert("id".into(), Value::Integer(i64::from(l.id)));
                    e.insert("parent".into(), Value::String(l.parent.clone()));
                    l.settings.fill(&mut e);
                    e
                })
                .collect();
            t.insert("vlans".into(), list(v));
        }
        t
    }
}

impl Settings {
    fn fill(&self, e: &mut Table) {
        let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        e.insert("dhcp".into(), Value::String(self.dhcp.as_str().into()));
        if !self.addresses.is_empty() {
            e.insert(
                "addresses".into(),
                strs(self.addresses.iter().map(ToString::to_string).collect()),
            );
        }
        if !self.gateways.is_empty() {
            e.insert(
                "gateway".into(),
                strs(self.gateways.iter().map(ToString::to_string).collect()),
            );
        }
        if !self.dns.is_empty() {
            e.insert(
                "dns".into(),
                strs(self.dns.iter().map(ToString::to_string).collect()),
            );
        }
        if let Some(m) = self.mtu {
            e.insert("mtu".into(), Value::Integer(i64::from(m)));
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| {
                    let mut rt = Table::new();
                    rt.insert(
                        "destination".into(),
                        Value::String(r.destination.to_string()),
                    );
                    if let Some(g) = r.gateway {
                        rt.insert("gateway".into(), Value::String(g.to_string()));
                    }
                    if let Some(m) = r.metric {
                        rt.insert("metric".into(), Value::Integer(i64::from(m)));
                    }
                    Value::Table(rt)
                })
                .collect();
            e.insert("routes".into(), Value::Array(routes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    fn net(text: &str) -> Network {
        match HostConfig::parse_strict(text, "t") {
            Ok(c) => c.network,
            Err(e) => panic!("{text:?} refused: {e}"),
        }
    }

    /// The error of the set-aside section; the rest of the config stands.
    fn err(text: &str) -> String {
        let c = HostConfig::parse(&format!("hostname = \"h\"\n{text}"), "t")
            .unwrap_or_else(|e| panic!("{text:?}: a [network] error refused the config: {e}"));
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert!(c.network.is_empty(), "{text:?}: {c:?}");
        assert_eq!(
            HostConfig::parse_strict(text, "t").err(),
            c.network_error.0.clone()
        );
        match c.network_error.0 {
            None => panic!("accepted {text:?}: {c:?}"),
            Some(e) => e.to_string(),
        }
    }

    #[test]
    fn values_parse() {
        assert_eq!(
            IpNet::parse("10.0.0.5/24"),
            Ok(IpNet {
                addr: "10.0.0.5".parse().unwrap(),
                prefix: 24
            })
        );
        assert_eq!(
            IpNet::parse("fd00::5/64").map(|n| n.network().to_string()),
            Ok("fd00::".into())
        );
        assert_eq!(
            IpNet::parse("10.1.2.3/16").map(|n| n.network().to_string()),
            Ok("10.1.0.0".into())
        );
        assert_eq!(
            IpNet::parse("0.0.0.0/0").map(|n| n.network().to_string()),
            Ok("0.0.0.0".into())
        );
        for bad in [
            "10.0.0.5",
            "10.0.0.5/33",
            "fd00::/129",
            "x/8",
            "10.0.0.5/+8",
            "10.0.0.5/",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Mac::parse("52:54:00:AB:cd:0f").map(|m| m.to_string()),
            Some("52:54:00:ab:cd:0f".into())
        );
        assert_eq!(
            Mac::parse("52-54-00-ab-cd-0f"),
            Mac::parse("52:54:00:ab:cd:0f")
        );
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5254.00ab.cd0f",
            "52:54:00:ab:cd:0g",
            "52:54-00:ab:cd:0f",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
        for good in [
            "eth0",
            "enp1s0f0",
            "bond0.10",
            "a",
            "x_y-z",
            "abcdefghijklmno",
        ] {
            assert_eq!(check_ifname(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "eth 0",
            "eth0:1",
            "a/b",
            "en*",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
        for good in ["en*", "eth[01]", "wl?", "eth0"] {
            assert_eq!(check_ifglob(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn good_sections() {
        let n = net(
            "[[network.interfaces]]\nname = \"eth0\"\naddresses = [\"10.0.0.5/24\", \"fd00::5/64\"]\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\", \"fd00::1\"]\nmtu = 9000\nroutes = [{ destination = \"10.1.0.0/16\", gateway = \"10.0.0.254\", metric = 100 }, { destination = \"192.168.0.0/24\" }]\n",
        );
        let i = &n.interfaces[0];
        assert_eq!(
            i.settings.dhcp,
            Dhcp::No,
            "static addresses: no DHCP by default"
        );
        assert_eq!(i.settings.gateways, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.settings.routes[0].metric, Some(100));
        assert_eq!(i.settings.routes[1].gateway, None);
        assert_eq!(i.settings.mtu, Some(9000));
        let n = net("[[network.interfaces]]\nmac = \"52:54:00:12:34:56\"\n");
        assert_eq!(
            n.interfaces[0].settings.dhcp,
            Dhcp::Yes,
            "nothing given: DHCP"
        );
        let n = net(
            "[[network.interfaces]]\nname = \"en*\"\ndhcp = \"ipv6\"\naddresses = [\"10.0.0.5/24\"]\ngateway = [\"10.0.0.1\", \"fe80::1\"]\n",
        );
        assert_eq!(n.interfaces[0].settings.dhcp, Dhcp::Ipv6);
        assert_eq!(n.interfaces[0].settings.gateways.len(), 2);
        let n = net("[[network.interfaces]]\nname = \"eth2\"\n\
             [[network.bonds]]\nname = \"bond0\"\nmode = \"802.3ad\"\nmembers = [\"eth0\", \"52:54:00:12:34:57\"]\naddresses = [\"10.0.0.5/24\"]\n\
             [[network.vlans]]\nname = \"vlan10\"\nid = 10\nparent = \"bond0\"\n\
             [[network.vlans]]\nname = \"vlan20\"\nid = 20\nparent = \"eth2\"\ndhcp = \"no\"\n");
        assert_eq!(
            n.bonds[0].members,
            [
                Member::Name("eth0".into()),
                Member::Mac(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x57]))
            ]
        );
        assert_eq!(n.vlans[1].id, 20);
        assert_eq!(n.vlans[0].settings.dhcp, Dhcp::Yes);
        for mode in BOND_MODES {
            net(&format!(
                "[[network.bonds]]\nname = \"b\"\nmode = \"{mode}\"\nmembers = [\"eth0\"]\n"
            ));
        }
        assert!(net("[network]\n").is_empty());
    }

    /// (config, substrings of the one-line error)
    #[test]
    fn errors_name_the_key() {
        let i = "[[network.interfaces]]\nname = \"eth0\"\n";
        let cases: Vec<(String, &[&str])> = vec![
            ("network = 1".into(), &["network", "expected a table"]),
            ("[network]\nlinks = []".into(), &["network.links", "unknown key"]),
            ("[[network.interfaces]]\ndhcp = \"yes\"".into(), &["network.interfaces[0]", "needs `name`"]),
            ("[[network.interfaces]]\nname = \"eth0\"\nipv4 = 1".into(), &["network.interfaces[0].ipv4", "unknown key"]),
            ("[[network.interfaces]]\nname = \"averyveryverylongname\"".into(), &["network.interfaces[0].name", "not an interface name"]),
            ("[[network.interfaces]]\nname = \"!eth0\"".into(), &["network.interfaces[0].name", "inverted"]),
            ("[[network.interfaces]]\nname = \"eth 0\"".into(), &["network.interfaces[0].name"]),
            ("[[network.interfaces]]\nmac = \"52:54:00\"".into(), &["network.interfaces[0].mac", "not a MAC"]),
            (format!("{i}dhcp = \"true\""), &["network.interfaces[0].dhcp", "\"ipv4\""]),
            (format!("{i}dhcp = true"), &["network.interfaces[0].dhcp", "expected a string"]),
            (format!("{i}addresses = [\"10.0.0.5\"]"), &["network.interfaces[0].addresses[0]", "prefix length", "10.0.0.5/24"]),
            (format!("{i}addresses = [\"10.0.0.500/24\"]"), &["addresses[0]", "not an IPv4 or IPv6 address"]),
            (format!("{i}addresses = [\"10.0.0.5/40\"]"), &["addresses[0]", "0..=32"]),
            (format!("{i}addresses = [\"0.0.0.0/0\"]"), &["addresses[0]", "unspecified"]),
            (format!("{i}addresses = [\"10.0.0.5/24\", \"10.0.0.5/24\"]"), &["addresses[1]", "twice"]),
            (format!("{i}addresses = \"10.0.0.5/24\""), &["network.interfaces[0].addresses", "expected an array"]),
            (format!("{i}gateway = \"10.0.0.1/24\""), &["network.interfaces[0].gateway", "without a prefix"]),
            (format!("{i}gateway = [\"10.0.0.1\", \"10.0.0.2\"]"), &["network.interfaces[0].gateway[1]", "one gateway per address family"]),
            (format!("{i}gateway = \"224.0.0.1\""), &["gateway", "multicast"]),
            (format!("{i}dns = [\"10.0.0.1\", \"dns.example\"]"), &["network.interfaces[0].dns[1]", "not an IPv4"]),
            (format!("{i}mtu = 20"), &["network.interfaces[0].mtu", "out of range"]),
            (format!("{i}routes = [{{ gateway = \"10.0.0.1\" }}]"), &["network.interfaces[0].routes[0].destination", "missing"]),
            (format!("{i}routes = [{{ destination = \"10.1.2.3/16\" }}]"), &["routes[0].destination", "host bits", "10.1.0.0/16"]),
            (format!("{i}routes = [{{ destination = \"10.1.0.0/16\", gateway = \"fd00::1\" }}]"), &["routes[0].gateway", "family"]),
            (format!("{i}routes = [{{ destination = \"10.1.0.0/16\", metric = -1 }}]"), &["routes[0].metric", "out of range"]),
            (format!("{i}routes = [{{ destination = \"10.1.0.0/16\", via = \"x\" }}]"), &["routes[0].via", "unknown key"]),
            (format!("{i}[[network.interfaces]]\nname = \"eth0\""), &["network.interfaces[1]", "same interfaces"]),
            ("[[network.bonds]]\nmode = \"802.3ad\"\nmembers = [\"eth0\"]".into(), &["network.bonds[0].name", "missing"]),
            ("[[network.bonds]]\nname = \"bond0\"\nmembers = [\"eth0\"]".into(), &["network.bonds[0].mode", "missing"]),
            ("[[network.bonds]]\nname = \"bond0\"\nmode = \"lacp\"\nmembers = [\"eth0\"]".into(), &["network.bonds[0].mode", "not a bond mode", "802.3ad"]),
            ("[[network.bonds]]\nname = \"bond0\"\nmode = \"802.3ad\"".into(), &["network.bonds[0].members", "missing"]),
            ("[[network.bonds]]\nname = \"bond0\"\nmode = \"802.3ad\"\nmembers = []".into(), &["network.bonds[0].members", "at least one"]),
            ("[[network.bonds]]\nname = \"bond0\"\nmode = \"802.3ad\"\nmembers = [\"52:54:00:zz:34:56\"]".into(), &["network.bonds[0].members[0]", "not a MAC"]),
            (format!("{i}[[network.bonds]]\nname = \"bond0\"\nmode = \"802.3ad\"\nmembers = [\"eth0\"]"), &["network.bonds[0].members[0]", "another entry"]),
            ("[[network.bonds]]\nname = \"b0\"\nmode = \"802.3ad\"\nmembers = [\"eth0\"]\n[[network.bonds]]\nname = \"b1\"\nmode = \"802.3ad\"\nmembers = [\"eth0\"]".into(), &["network.bonds[1].members[0]", "already a member"]),
            (format!("{i}[[network.bonds]]\nname = \"eth0\"\nmode = \"802.3ad\"\nmembers = [\"eth1\"]"), &["network.bonds[0].name", "already the name"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 4095\nparent = \"eth0\""), &["network.vlans[0].id", "out of range"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 0\nparent = \"eth0\""), &["network.vlans[0].id", "out of range"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nparent = \"eth0\""), &["network.vlans[0].id", "missing"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 5\nparent = \"eth1\""), &["network.vlans[0].parent", "neither"]),
            ("[[network.interfaces]]\nname = \"en*\"\n[[network.vlans]]\nname = \"v\"\nid = 5\nparent = \"en*\"".into(), &["network.vlans[0].parent", "exact name"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 5\nparent = \"eth0\"\n[[network.vlans]]\nname = \"w\"\nid = 5\nparent = \"eth0\""), &["network.vlans[1].id", "twice"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 5\nparent = \"eth0\"\n[[network.vlans]]\nname = \"v\"\nid = 6\nparent = \"eth0\""), &["network.vlans[1].name", "already the name"]),
            (format!("{i}[[network.vlans]]\nname = \"v\"\nid = 5\nparent = \"eth0\"\nmtu = \"1500\""), &["network.vlans[0].mtu", "expected an integer"]),
        ];
        for (text, wants) in &cases {
            let e = err(text);
            assert!(!e.contains('\n'), "multi-line error for {text:?}: {e}");
            for w in *wants {
                assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
            }
        }
    }
}
