//! Pure rendering of host config sections to the files cairn-config writes:
//! systemd-networkd `.network`/`.netdev` files from `[network]`, the sysctl.d
//! and modules-load.d files, sudo rules. No I/O here: table-tested.
//!
//! # Network files
//! All in /etc/systemd/network, named `50-cairn-*` (so Cairn's files are
//! recognisable, and sort before the image's `80-cairn-dhcp.network`, which
//! keeps giving DHCP to the wired interfaces no entry matches). networkd
//! applies the first `.network` file, in file name order, that matches an
//! interface, so the names order the roles:
//!
//! | file | what |
//! |---|---|
//! | `50-cairn-1-<bond or vlan>.netdev` | the device (`Kind=bond`/`vlan`) |
//! | `50-cairn-1-<bond or vlan>.network` | the device's own addressing |
//! | `50-cairn-2-<bond>-m<k>.network` | bond member k: `Bond=<bond>` |
//! | `50-cairn-3-<nn>-<label>.network` | `[[network.interfaces]]` entry nn, in config order |
//!
//! Bond members come before the interface entries, so a glob entry (`en*`)
//! never takes a member; a VLAN's parent gets `VLAN=<vlan>` in its own file.
//! Interfaces matched by `mac` use `PermanentMACAddress=`: a VLAN or a bond
//! shares its parent's current MAC address, never its permanent one.

use std::fmt::Write as _;

use host_config::config::HostConfig;
use host_config::network::{Bond, Interface, Member, Network, Settings};

/// Where networkd reads the host's own files.
pub const NETWORK_DIR: &str = "/etc/systemd/network";
/// The prefix of every network file cairn-config writes.
pub const NETWORK_PREFIX: &str = "50-cairn-";
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-cairn.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/cairn.conf";
pub const SUDOERS_DIR: &str = "/etc/sudoers.d";
pub const LOCALTIME: &str = "/etc/localtime";
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

fn header(what: &str) -> String {
    format!(
        "# Managed by cairn-config from the host config ({what}); local edits are overwritten.\n"
    )
}

/// A file-name-safe form of an interface glob or MAC address.
fn label(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn section(out: &mut String, name: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[{name}]");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// The `[Link]`, `[Network]` and `[Route]` sections of `s`, with `extra`
/// lines (`VLAN=`) in `[Network]`.
fn settings(out: &mut String, s: &Settings, extra: &[String]) {
    section(
        out,
        "Link",
        &s.mtu
            .map(|m| format!("MTUBytes={m}"))
            .into_iter()
            .collect::<Vec<_>>(),
    );
    let mut net = vec![format!("DHCP={}", s.dhcp.as_str())];
    net.extend(s.addresses.iter().map(|a| format!("Address={a}")));
    net.extend(s.gateways.iter().map(|g| format!("Gateway={g}")));
    net.extend(s.dns.iter().map(|d| format!("DNS={d}")));
    net.extend(extra.iter().cloned());
    section(out, "Network", &net);
    for r in &s.routes {
        let mut l = vec![format!("Destination={}", r.destination)];
        l.extend(r.gateway.map(|g| format!("Gateway={g}")));
        l.extend(r.metric.map(|m| format!("Metric={m}")));
        section(out, "Route", &l);
    }
}

/// The VLAN= lines of the entry named `parent`.
fn vlans_of(net: &Network, parent: &str) -> Vec<String> {
    net.vlans
        .iter()
        .filter(|v| v.parent == parent)
        .map(|v| format!("VLAN={}", v.name))
        .collect()
}

fn bond_files(net: &Network, b: &Bond, files: &mut Vec<(String, String)>) {
    let what = format!("[[network.bonds]] {}", b.name);
    let netdev = format!(
        "{}\n[NetDev]\nName={}\nKind=bond\n\n[Bond]\nMode={}\n# Notice a dead link.\nMIIMonitorSec=100ms\n",
        header(&what),
        b.name,
        b.mode
    );
    files.push((format!("{NETWORK_PREFIX}1-{}.netdev", b.name), netdev));
    let mut own = format!("{}\n[Match]\nName={}\n", header(&what), b.name);
    settings(&mut own, &b.settings, &vlans_of(net, &b.name));
    files.push((format!("{NETWORK_PREFIX}1-{}.network", b.name), own));
    for (k, m) in b.members.iter().enumerate() {
        let matching = match m {
            Member::Name(n) => format!("Name={n}"),
            Member::Mac(mac) => format!("PermanentMACAddress={mac}"),
        };
        let text = format!(
            "{}\n[Match]\n{matching}\n\n[Network]\nBond={}\n",
            header(&format!("member {m} of [[network.bonds]] {}", b.name)),
            b.name
        );
        files.push((format!("{NETWORK_PREFIX}2-{}-m{k}.network", b.name), text));
    }
}

fn interface_file(net: &Network, n: usize, i: &Interface) -> (String, String) {
    let what = format!("[[network.interfaces]] {n}");
    let mut text = format!("{}\n[Match]\n", header(&what));
    if let Some(name) = &i.name {
        let _ = writeln!(text, "Name={name}");
    }
    if let Some(mac) = &i.mac {
        let _ = writeln!(text, "PermanentMACAddress={mac}");
    }
    let vlans = i
        .name
        .as_deref()
        .map(|p| vlans_of(net, p))
        .unwrap_or_default();
    settings(&mut text, &i.settings, &vlans);
    let l = match (&i.name, &i.mac) {
        (Some(name), _) => label(name),
        (None, Some(mac)) => label(&mac.to_string()),
        (None, None) => String::new(),
    };
    (format!("{NETWORK_PREFIX}3-{n:02}-{l}.network"), text)
}

/// Every networkd file of `[network]`: (file name in [`NETWORK_DIR`], text).
/// Empty when nothing is configured: the image's default applies.
pub fn network_files(net: &Network) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for b in &net.bonds {
        bond_files(net, b, &mut files);
    }
    for v in &net.vlans {
        let what = format!("[[network.vlans]] {}", v.name);
        files.push((
            format!("{NETWORK_PREFIX}1-{}.netdev", v.name),
            format!(
                "{}\n[NetDev]\nName={}\nKind=vlan\n\n[VLAN]\nId={}\n",
                header(&what),
                v.name,
                v.id
            ),
        ));
        let mut own = format!("{}\n[Match]\nName={}\n", header(&what), v.name);
        settings(&mut own, &v.settings, &[]);
        files.push((format!("{NETWORK_PREFIX}1-{}.network", v.name), own));
    }
    for (n, i) in net.interfaces.iter().enumerate() {
        files.push(interface_file(net, n, i));
    }
    files
}

/// /etc/sysctl.d/90-cairn.conf, `None` without `[sysctl]`.
pub fn sysctl_file(cfg: &HostConfig) -> Option<String> {
    if cfg.sysctl.is_empty() {
        return None;
    }
    let mut s = header("[sysctl]");
    for (k, v) in &cfg.sysctl {
        let _ = writeln!(s, "{k} = {v}");
    }
    Some(s)
}

/// /etc/modules-load.d/cairn.conf, `None` without `kernel_modules`.
pub fn modules_file(cfg: &HostConfig) -> Option<String> {
    if cfg.kernel_modules.is_empty() {
        return None;
    }
    let mut s = header("kernel_modules");
    for m in &cfg.kernel_modules {
        let _ = writeln!(s, "{m}");
    }
    Some(s)
}

/// The sudo rule of a `sudo = true` user: /etc/sudoers.d/cairn-<user>
/// (no `.` in the name: sudo skips such files), mode 0440.
pub fn sudoers(user: &str) -> (String, String) {
    (
        format!("{SUDOERS_DIR}/cairn-{user}"),
        format!(
            "{}{user} ALL=(ALL) NOPASSWD: ALL\n",
            header("[[users]] sudo")
        ),
    )
}

/// The `/etc/localtime` link target for a zone, relative as timedatectl
/// makes it.
pub fn localtime_target(zone: &str) -> String {
    format!("..{ZONEINFO}/{zone}")
}

/// The normalized form of a sysctl value, to compare with /proc/sys.
pub fn sysctl_normal(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One INI section of a rendered file: name and `key=value` pairs.
    pub(crate) type IniSection = (String, Vec<(String, String)>);

    /// Parses systemd's INI syntax (for the tests' round trip and checks).
    pub(crate) fn parse_ini(text: &str) -> Result<Vec<IniSection>, String> {
        let mut out: Vec<IniSection> = Vec::new();
        for (n, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                out.push((name.to_string(), Vec::new()));
                continue;
            }
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("line {}: not key=value: {l:?}", n + 1))?;
            let sec = out
                .last_mut()
                .ok_or_else(|| format!("line {}: a key outside a section", n + 1))?;
            sec.1.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(out)
    }

    fn cfg(text: &str) -> HostConfig {
        HostConfig::parse_strict(text, "t").unwrap_or_else(|e| panic!("{e}"))
    }

    fn files(text: &str) -> Vec<(String, String)> {
        network_files(&cfg(text).network)
    }

    /// The sections and keys networkd 252 accepts in what we render
    /// (systemd.network(5), systemd.netdev(5)); `network_keys_are_documented`
    /// checks them against the installed man pages.
    pub(crate) const NETWORK_KEYS: &[(&str, &[&str])] = &[
        ("Match", &["Name", "PermanentMACAddress"]),
        ("Link", &["MTUBytes"]),
        (
            "Network",
            &["DHCP", "Address", "Gateway", "DNS", "VLAN", "Bond"],
        ),
        ("Route", &["Destination", "Gateway", "Metric"]),
    ];
    pub(crate) const NETDEV_KEYS: &[(&str, &[&str])] = &[
        ("NetDev", &["Name", "Kind"]),
        ("Bond", &["Mode", "MIIMonitorSec"]),
        ("VLAN", &["Id"]),
    ];

    /// Every rendered file parses, with only known sections and keys, the
    /// sections once each except [Route].
    fn check_keys(name: &str, text: &str) {
        let allowed = if name.ends_with(".netdev") {
            NETDEV_KEYS
        } else {
            NETWORK_KEYS
        };
        let secs = parse_ini(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut seen = Vec::new();
        for (s, kvs) in &secs {
            let keys = allowed
                .iter()
                .find(|(n, _)| n == s)
                .unwrap_or_else(|| panic!("{name}: unknown section [{s}]"))
                .1;
            assert!(s == "Route" || !seen.contains(s), "{name}: [{s}] twice");
            seen.push(s.clone());
            for (k, v) in kvs {
                assert!(keys.contains(&k.as_str()), "{name}: [{s}] {k}=");
                assert!(
                    !v.is_empty() && !v.contains(char::is_whitespace) || k == "Name",
                    "{name}: {k}={v:?}"
                );
            }
        }
        assert!(
            secs.first()
                .is_some_and(|(s, _)| s == "Match" || s == "NetDev"),
            "{name}"
        );
    }

    /// (config, [(file, text)]) exactly.
    #[test]
    fn network_rendering() {
        let h = |w: &str| header(w);
        let cases: Vec<(&str, Vec<(String, String)>)> = vec![
            ("", vec![]),
            ("[network]\n", vec![]),
            (
                "[[network.interfaces]]\nname = \"eth0\"\n",
                vec![(
                    "50-cairn-3-00-eth0.network".into(),
                    format!(
                        "{}\n[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n",
                        h("[[network.interfaces]] 0")
                    ),
                )],
            ),
            (
                "[[network.interfaces]]\nname = \"en*\"\nmac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.0.5/24\", \"fd00::5/64\"]\ngateway = [\"10.0.0.1\", \"fd00::1\"]\ndns = [\"10.0.0.1\"]\nmtu = 9000\nroutes = [{ destination = \"10.1.0.0/16\", gateway = \"10.0.0.254\", metric = 100 }, { destination = \"192.168.0.0/24\" }]\n\
                 [[network.interfaces]]\nmac = \"52:54:00:AB:CD:EF\"\ndhcp = \"ipv6\"\n",
                vec![
                    (
                        "50-cairn-3-00-en_.network".into(),
                        format!(
                            "{}\n[Match]\nName=en*\nPermanentMACAddress=52:54:00:12:34:56\n\n[Link]\nMTUBytes=9000\n\n[Network]\nDHCP=no\nAddress=10.0.0.5/24\nAddress=fd00::5/64\nGateway=10.0.0.1\nGateway=fd00::1\nDNS=10.0.0.1\n\n[Route]\nDestination=10.1.0.0/16\nGateway=10.0.0.254\nMetric=100\n\n[Route]\nDestination=192.168.0.0/24\n",
                            h("[[network.interfaces]] 0")
                        ),
                    ),
                    (
                        "50-cairn-3-01-525400abcdef.network".into(),
                        format!(
                            "{}\n[Match]\nPermanentMACAddress=52:54:00:ab:cd:ef\n\n[Network]\nDHCP=ipv6\n",
                            h("[[network.interfaces]] 1")
                        ),
                    ),
                ],
            ),
            (
                "[[network.interfaces]]\nname = \"eth2\"\ndhcp = \"no\"\n\
                 [[network.bonds]]\nname = \"bond0\"\nmode = \"active-backup\"\nmembers = [\"eth0\", \"52:54:00:12:34:57\"]\naddresses = [\"10.0.0.5/24\"]\ngateway = \"10.0.0.1\"\n\
                 [[network.vlans]]\nname = \"vlan10\"\nid = 10\nparent = \"bond0\"\n\
                 [[network.vlans]]\nname = \"vlan20\"\nid = 20\nparent = \"eth2\"\naddresses = [\"192.168.20.5/24\"]\n",
                vec![
                    (
                        "50-cairn-1-bond0.netdev".into(),
                        format!(
                            "{}\n[NetDev]\nName=bond0\nKind=bond\n\n[Bond]\nMode=active-backup\n# Notice a dead link.\nMIIMonitorSec=100ms\n",
                            h("[[network.bonds]] bond0")
                        ),
                    ),
                    (
                        "50-cairn-1-bond0.network".into(),
                        format!(
                            "{}\n[Match]\nName=bond0\n\n[Network]\nDHCP=no\nAddress=10.0.0.5/24\nGateway=10.0.0.1\nVLAN=vlan10\n",
                            h("[[network.bonds]] bond0")
                        ),
                    ),
                    (
                        "50-cairn-2-bond0-m0.network".into(),
                        format!(
                            "{}\n[Match]\nName=eth0\n\n[Network]\nBond=bond0\n",
                            h("member eth0 of [[network.bonds]] bond0")
                        ),
                    ),
                    (
                        "50-cairn-2-bond0-m1.network".into(),
                        format!(
                            "{}\n[Match]\nPermanentMACAddress=52:54:00:12:34:57\n\n[Network]\nBond=bond0\n",
                            h("member 52:54:00:12:34:57 of [[network.bonds]] bond0")
                        ),
                    ),
                    (
                        "50-cairn-1-vlan10.netdev".into(),
                        format!(
                            "{}\n[NetDev]\nName=vlan10\nKind=vlan\n\n[VLAN]\nId=10\n",
                            h("[[network.vlans]] vlan10")
                        ),
                    ),
                    (
                        "50-cairn-1-vlan10.network".into(),
                        format!(
                            "{}\n[Match]\nName=vlan10\n\n[Network]\nDHCP=yes\n",
                            h("[[network.vlans]] vlan10")
                        ),
                    ),
                    (
                        "50-cairn-1-vlan20.netdev".into(),
                        format!(
                            "{}\n[NetDev]\nName=vlan20\nKind=vlan\n\n[VLAN]\nId=20\n",
                            h("[[network.vlans]] vlan20")
                        ),
                    ),
                    (
                        "50-cairn-1-vlan20.network".into(),
                        format!(
                            "{}\n[Match]\nName=vlan20\n\n[Network]\nDHCP=no\nAddress=192.168.20.5/24\n",
                            h("[[network.vlans]] vlan20")
                        ),
                    ),
                    (
                        "50-cairn-3-00-eth2.network".into(),
                        format!(
                            "{}\n[Match]\nName=eth2\n\n[Network]\nDHCP=no\nVLAN=vlan20\n",
                            h("[[network.interfaces]] 0")
                        ),
                    ),
                ],
            ),
        ];
        for (text, want) in cases {
            let got = files(text);
            assert_eq!(got, want, "{text}");
            for (name, body) in &got {
                check_keys(name, body);
            }
        }
    }

    /// Roles sort as networkd must see them; every name is ours and unique.
    #[test]
    fn file_names_order_the_roles() {
        let got = files(host_config::config::EXAMPLE);
        let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(NETWORK_PREFIX) && n.as_bytes()[9].is_ascii_digit())
        );
        // Every member file sorts before every interface entry, and all
        // before the image default.
        let last_member = names
            .iter()
            .rposition(|n| n.starts_with("50-cairn-2-"))
            .expect("members");
        let first_if = names
            .iter()
            .position(|n| n.starts_with("50-cairn-3-"))
            .expect("interfaces");
        assert!(last_member < first_if);
        assert!(names.iter().all(|n| *n < "80-cairn-dhcp.network"));
        for (n, t) in &got {
            check_keys(n, t);
        }
        // 100 entries keep their config order in file name order.
        let many: String = (0..100)
            .map(|i| format!("[[network.interfaces]]\nname = \"e{i}\"\n"))
            .collect();
        let got = files(&many);
        let order: Vec<String> = got.iter().map(|(n, _)| n.clone()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn other_files() {
        let c = cfg(
            "kernel_modules = [\"br_netfilter\", \"nf_nat\"]\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\nvm.swappiness = 10\n",
        );
        assert_eq!(
            sysctl_file(&c).as_deref(),
            Some(
                format!(
                    "{}net.ipv4.ip_forward = 1\nvm.swappiness = 10\n",
                    header("[sysctl]")
                )
                .as_str()
            )
        );
        assert_eq!(
            modules_file(&c).as_deref(),
            Some(format!("{}br_netfilter\nnf_nat\n", header("kernel_modules")).as_str())
        );
        assert_eq!(sysctl_file(&cfg("")), None);
        assert_eq!(modules_file(&cfg("")), None);
        let (p, t) = sudoers("ops");
        assert_eq!(p, "/etc/sudoers.d/cairn-ops");
        assert!(t.ends_with("\nops ALL=(ALL) NOPASSWD: ALL\n"), "{t}");
        assert_eq!(
            localtime_target("Europe/Berlin"),
            "../usr/share/zoneinfo/Europe/Berlin"
        );
        assert_eq!(sysctl_normal(" 1024\t65000\n"), "1024 65000");
    }

    /// The keys we render are in the man pages of the systemd this host
    /// runs (Debian 12: 252), when they are installed.
    #[test]
    fn network_keys_are_documented() {
        for (page, keys) in [
            ("systemd.network", NETWORK_KEYS),
            ("systemd.netdev", NETDEV_KEYS),
        ] {
            let path = format!("/usr/share/man/man5/{page}.5.gz");
            if !std::path::Path::new(&path).exists() {
                eprintln!("SKIP: {path} is not installed (man pages excluded)");
                return;
            }
            let Ok(out) = std::process::Command::new("zcat").arg(&path).output() else {
                eprintln!("SKIP: no zcat");
                return;
            };
            let man = String::from_utf8_lossy(&out.stdout);
            for (sec, ks) in keys {
                let head = format!("[{}] SECTION OPTIONS", sec.to_uppercase());
                let start = man
                    .find(&head)
                    .unwrap_or_else(|| panic!("{page}: no {head}"));
                let rest = &man[start + head.len()..];
                let end = rest.find("SECTION OPTIONS").unwrap_or(rest.len());
                for k in *ks {
                    assert!(
                        rest[..end].contains(&format!("{k}=")),
                        "{page} [{sec}] lacks {k}="
                    );
                }
            }
        }
    }
}
