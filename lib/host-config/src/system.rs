//! Host-wide settings of the host config: `timezone`, `[sysctl]`,
//! `kernel_modules` and `[[groups]]`.
//!
//! ```toml
//! timezone = "Europe/Berlin"          # /etc/localtime -> /usr/share/zoneinfo/<zone>
//! kernel_modules = ["br_netfilter"]   # /etc/modules-load.d/cairn.conf; loaded at once
//! [sysctl]                            # /etc/sysctl.d/90-cairn.conf; applied at once
//! "net.ipv4.ip_forward" = 1
//! vm.swappiness = 10                  # TOML dotted keys work too
//! [[groups]]
//! name = "deploy"
//! gid = 2000                          # optional
//! ```

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

use crate::check::{ConfigError, Ctx, kind};
use crate::config::check_user_name;

/// `[sysctl]` key → value, keys as given (dots, or slashes when a
/// component itself has dots, as in sysctl.d(5)).
pub type Sysctl = BTreeMap<String, String>;

/// A time zone name of the IANA database: `UTC`, `Europe/Berlin`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+5`.
pub fn check_timezone(z: &str) -> Result<(), String> {
    let ok = !z.is_empty()
        && z.len() <= 255
        && z.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with(['-', '.'])
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{z:?} is not a time zone name (like \"UTC\" or \"Europe/Berlin\")"
        ))
    }
}

/// A sysctl key: components of `[A-Za-z0-9_-]` (and `.` when `/` separates).
pub fn check_sysctl_key(k: &str) -> Result<(), String> {
    let sep = if k.contains('/') { '/' } else { '.' };
    let ok = k.len() <= 255
        && k.split(sep).all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
        && !k.starts_with(sep);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a sysctl key (like \"net.ipv4.ip_forward\"; globs are not supported)"
        ))
    }
}

/// Where a key lives under /proc/sys.
pub fn sysctl_proc_path(k: &str) -> String {
    if k.contains('/') {
        k.to_string()
    } else {
        k.replace('.', "/")
    }
}

fn flatten(cx: &Ctx, prefix: &str, t: &Table, out: &mut Sysctl) -> Result<(), ConfigError> {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let ek = format!("sysctl.{key:?}");
        let value = match v {
            Value::Table(sub) => {
                flatten(cx, &key, sub, out)?;
                continue;
            }
            Value::String(s) => s.trim().to_string(),
            Value::Integer(n) => n.to_string(),
            other => {
                return Err(cx.err(
                    &ek,
                    format!("expected a string or an integer, found {}", kind(other)),
                ));
            }
        };
        check_sysctl_key(&key).map_err(|m| cx.err(&ek, m))?;
        if value.is_empty() || value.contains(['\n', '\r', '\0']) {
            return Err(cx.err(&ek, "the value must be one non-empty line"));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(cx.err(&ek, "is given twice"));
        }
    }
    Ok(())
}

pub(crate) fn parse_sysctl(cx: &Ctx, t: &Table) -> Result<Sysctl, ConfigError> {
    let mut out = Sysctl::new();
    flatten(cx, "", t, &mut out)?;
    Ok(out)
}

pub fn sysctl_table(s: &Sysctl) -> Table {
    s.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// A kernel module name as modprobe takes it (`-` and `_` are the same).
pub fn check_module(m: &str) -> Result<(), String> {
    let ok = !m.is_empty()
        && m.len() <= 55
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{m:?} is not a kernel module name (like \"br_netfilter\")"
        ))
    }
}

pub(crate) fn parse_modules(cx: &Ctx, v: &Value) -> Result<Vec<String>, ConfigError> {
    let list = cx.strings("kernel_modules", v)?;
    let mut seen = BTreeSet::new();
    for (i, m) in list.iter().enumerate() {
        let k = format!("kernel_modules[{i}]");
        check_module(m).map_err(|e| cx.err(&k, e))?;
        if !seen.insert(m.replace('-', "_")) {
            return Err(cx.err(&k, format!("{m:?} is listed twice")));
        }
    }
    Ok(list)
}

/// `[[groups]]`: a group cairn-config creates (groupadd) when missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// `None`: groupadd chooses.
    pub gid: Option<u32>,
}

const GROUP_KEYS: &[&str] = &["name", "gid"];
/// 0 is root's; 65534 and above are nogroup and the invalid ids.
pub const GID_MAX: u64 = 65533;

pub(crate) fn parse_groups(cx: &Ctx, list: &[Value]) -> Result<Vec<Group>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let key = format!("groups[{i}]");
        let t = cx.table(&key, v)?;
        cx.unknown_keys(&key, t, GROUP_KEYS)?;
        let nk = format!("{key}.name");
        let Some(nv) = t.get("name") else {
            return Err(cx.err(&nk, "missing (like name = \"deploy\")"));
        };
        let name = cx.string(&nk, nv)?;
        check_user_name(&name).map_err(|m| cx.err(&nk, m.replace("user name", "group name")))?;
        if !names.insert(name.clone()) {
            return Err(cx.err(&nk, format!("group {name:?} is listed twice")));
        }
        let gid = match t.get("gid") {
            Some(v) => {
                let gk = format!("{key}.gid");
                let g = cx.seconds(&gk, v, 1, GID_MAX)?;
                if !gids.insert(g) {
                    return Err(cx.err(&gk, format!("gid {g} is given twice")));
                }
                Some(u32::try_from(g).unwrap_or(0))
            }
            None => None,
        };
        out.push(Group { name, gid });
    }
    Ok(out)
}

impl Group {
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(self.name.clone()));
        if let Some(g) = self.gid {
            t.insert("gid".into(), Value::Integer(i64::from(g)));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    #[test]
    fn names() {
        for z in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "Etc/GMT-14",
            "America/Port-au-Prince",
        ] {
            assert_eq!(check_timezone(z), Ok(()), "{z}");
        }
        for z in [
            "",
            "/Europe/Berlin",
            "Europe/",
            "../etc/passwd",
            "Europe/../x",
            "Europe Berlin",
            ".hidden",
        ] {
            assert!(check_timezone(z).is_err(), "{z}");
        }
        for k in [
            "net.ipv4.ip_forward",
            "kernel.pid_max",
            "net/ipv4/conf/eth0.10/rp_filter",
            "net.ipv6.conf.all.forwarding",
        ] {
            assert_eq!(check_sysctl_key(k), Ok(()), "{k}");
        }
        for k in [
            "",
            "net..x",
            "net.ipv4.conf.*.rp_filter",
            "/net/x",
            "net/../x",
            "a b",
        ] {
            assert!(check_sysctl_key(k).is_err(), "{k}");
        }
        assert_eq!(
            sysctl_proc_path("net.ipv4.ip_forward"),
            "net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_proc_path("net/ipv4/conf/eth0.10/rp_filter"),
            "net/ipv4/conf/eth0.10/rp_filter"
        );
    }

    #[test]
    fn sections() {
        let c = HostConfig::parse(
            "timezone = \"Europe/Berlin\"\nkernel_modules = [\"br_netfilter\", \"nf-conntrack\"]\n\
             [sysctl]\n\"net.ipv4.ip_forward\" = 1\nvm.swappiness = \"10\"\n\"net.ipv4.ip_local_port_range\" = \" 1024 65000 \"\n\
             [[groups]]\nname = \"deploy\"\ngid = 2000\n[[groups]]\nname = \"ops\"\n",
            "t",
        )
        .expect("valid");
        assert_eq!(c.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.kernel_modules, ["br_netfilter", "nf-conntrack"]);
        assert_eq!(
            c.sysctl
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            [
                "net.ipv4.ip_forward=1",
                "net.ipv4.ip_local_port_range=1024 65000",
                "vm.swappiness=10"
            ]
        );
        assert_eq!(
            c.groups,
            [
                Group {
                    name: "deploy".into(),
                    gid: Some(2000)
                },
                Group {
                    name: "ops".into(),
                    gid: None
                }
            ]
        );
        let cases: &[(&str, &[&str])] = &[
            (
                "timezone = \"Europe/../Berlin\"",
                &["timezone", "not a time zone"],
            ),
            ("timezone = 1", &["timezone", "expected a string"]),
            (
                "kernel_modules = \"br_netfilter\"",
                &["kernel_modules", "expected an array"],
            ),
            (
                "kernel_modules = [\"br netfilter\"]",
                &["kernel_modules[0]", "not a kernel module"],
            ),
            (
                "kernel_modules = [\"nf_nat\", \"nf-nat\"]",
                &["kernel_modules[1]", "twice"],
            ),
            ("sysctl = 1", &["sysctl", "expected a table"]),
            (
                "[sysctl]\n\"net.ipv4.ip_forward\" = true",
                &["sysctl.\"net.ipv4.ip_forward\"", "string or an integer"],
            ),
            (
                "[sysctl]\n\"net.ipv4.*.x\" = 1",
                &["sysctl.\"net.ipv4.*.x\"", "globs"],
            ),
            (
                "[sysctl]\n\"kernel.x\" = \"\"",
                &["sysctl.\"kernel.x\"", "non-empty"],
            ),
            (
                "[sysctl]\n\"kernel.x\" = \"1\\n2\"",
                &["sysctl.\"kernel.x\"", "one non-empty line"],
            ),
            (
                "[sysctl]\n\"a.b\" = 1\na.b = 2",
                &["sysctl.\"a.b\"", "twice"],
            ),
            ("[[groups]]\ngid = 5", &["groups[0].name", "missing"]),
            (
                "[[groups]]\nname = \"Ops\"",
                &["groups[0].name", "not a valid group name"],
            ),
            (
                "[[groups]]\nname = \"a\"\n[[groups]]\nname = \"a\"",
                &["groups[1].name", "twice"],
            ),
            (
                "[[groups]]\nname = \"a\"\ngid = 0",
                &["groups[0].gid", "out of range"],
            ),
            (
                "[[groups]]\nname = \"a\"\ngid = 65534",
                &["groups[0].gid", "out of range"],
            ),
            (
                "[[groups]]\nname = \"a\"\ngid = 7\n[[groups]]\nname = \"b\"\ngid = 7",
                &["groups[1].gid", "twice"],
            ),
            (
                "[[groups]]\nname = \"a\"\nmembers = []",
                &["groups[0].members", "unknown key"],
            ),
        ];
        crate::check::assert_refused(cases);
    }
}
