//! `[[units]]` of the host config: systemd units and drop-ins under
//! /etc/systemd/system, enabled, disabled or masked.
//!
//! ```toml
//! [[units]]
//! name = "backup.timer"
//! enabled = true             # the links of its [Install] section; false removes them
//! contents = """
//! [Timer]
//! OnCalendar=daily
//! [Install]
//! WantedBy=timers.target
//! """
//! [[units]]
//! name = "systemd-journald.service"   # a unit of the image: a drop-in only
//! dropins = [{ name = "10-size.conf", contents = "[Journal]\nSystemMaxUse=200M\n" }]
//! [[units]]
//! name = "systemd-timesyncd.service"
//! mask = true
//! ```

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::check::{ConfigError, Ctx};

const KEYS: &[&str] = &["name", "contents", "enabled", "mask", "dropins"];
const DROPIN_KEYS: &[&str] = &["name", "contents"];

/// Unit types a file under /etc/systemd/system can define (devices and
/// scopes are made by systemd at runtime).
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "mount",
    "automount",
    "timer",
    "path",
    "swap",
    "slice",
];
/// systemd's UNIT_NAME_MAX.
pub const UNIT_NAME_MAX: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    /// The unit file in /etc/systemd/system; `None`: the image's unit (only
    /// drop-ins, enabling or masking).
    pub contents: Option<String>,
    /// `Some(true)`: the links of the [Install] section are made;
    /// `Some(false)`: they are removed; `None`: left as they are.
    pub enabled: Option<bool>,
    /// A link to /dev/null in /etc/systemd/system.
    pub mask: bool,
    pub dropins: Vec<Dropin>,
}

/// `<unit>.d/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropin {
    pub name: String,
    pub contents: String,
}

/// A unit file name systemd accepts: `stem.type`, the stem of
/// `[A-Za-z0-9:_.\-]` with at most one `@` (a template `foo@.service` or an
/// instance `foo@bar.service`).
pub fn check_unit_file_name(n: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{n:?} is not a unit name (like \"backup.service\" or \"getty@ttyS1.service\"; types: {})",
            UNIT_TYPES.join(", ")
        )
    };
    let Some((stem, ty)) = n.rsplit_once('.') else {
        return Err(bad());
    };
    let chars_ok = stem.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-' | b'\\' | b'@')
    });
    let at_ok = match stem.split_once('@') {
        None => true,
        Some((prefix, instance)) => !prefix.is_empty() && !instance.contains('@'),
    };
    if stem.is_empty()
        || n.len() > UNIT_NAME_MAX
        || !chars_ok
        || !at_ok
        || !UNIT_TYPES.contains(&ty)
    {
        return Err(bad());
    }
    Ok(())
}

/// `foo@.service`.
pub fn is_template(n: &str) -> bool {
    n.rsplit_once('.')
        .is_some_and(|(stem, _)| stem.ends_with('@'))
}

/// A drop-in file name: `*.conf`, no `/`.
pub fn check_dropin_name(n: &str) -> Result<(), String> {
    let ok = n.len() > 5
        && n.len() <= UNIT_NAME_MAX
        && n.ends_with(".conf")
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a drop-in name (like \"10-limits.conf\")"
        ))
    }
}

/// The [Install] section of a unit: what `systemctl enable` links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty() && self.required_by.is_empty() && self.alias.is_empty()
    }
}

/// Reads the [Install] section of a unit file (systemd's syntax: `#`/`;`
/// comments, backslash continuations, space-separated lists, an empty
/// assignment resets the list). Specifiers (`%i`) are refused: cairn-config
/// does not expand them.
pub fn parse_install(text: &str) -> Result<Install, String> {
    let mut inst = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        let l = raw.trim();
        if logical.is_empty() && (l.starts_with('#') || l.starts_with(';')) {
            continue;
        }
        if let Some(cont) = l.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(l);
        lines.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for l in lines {
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install || l.is_empty() {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let list = match k {
            "WantedBy" => &mut inst.wanted_by,
            "RequiredBy" => &mut inst.required_by,
            "Alias" => &mut inst.alias,
            "DefaultInstance" => {
                inst.default_instance = (!v.is_empty()).then(|| v.to_string());
                continue;
            }
            _ => continue,
        };
        if v.is_empty() {
            list.clear();
        }
        for name in v.split_whitespace() {
            if name.contains('%') {
                return Err(format!(
                    "[Install] {k}={name}: specifiers are not expanded by cairn-config"
                ));
            }
            check_unit_file_name(name).map_err(|e| format!("[Install] {k}=: {e}"))?;
            list.push(name.to_string());
        }
    }
    Ok(inst)
}

fn check_contents(cx: &Ctx, key: &str, s: &str) -> Result<(), ConfigError> {
    if s.contains('\0') {
        return Err(cx.err(key, "contains a NUL byte"));
    }
    if s.len() > crate::files::MAX_SIZE {
        return Err(cx.err(key, format!("at most {} bytes", crate::files::MAX_SIZE)));
    }
    Ok(())
}

pub(crate) fn parse_units(cx: &Ctx, list: &[Value]) -> Result<Vec<Unit>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let key = format!("units[{i}]");
        let t: &Table = cx.table(&key, v)?;
        cx.unknown_keys(&key, t, KEYS)?;
        let nk = format!("{key}.name");
        let Some(nv) = t.get("name") else {
            return Err(cx.err(&nk, "missing (like name = \"backup.service\")"));
        };
        let name = cx.string(&nk, nv)?;
        check_unit_file_name(&name).map_err(|m| cx.err(&nk, m))?;
        if !seen.insert(name.clone()) {
            return Err(cx.err(&nk, format!("{name:?} is listed twice")));
        }
        let contents = match t.get("contents") {
            Some(v) => {
                let k = format!("{key}.contents");
                let s = cx.string(&k, v)?;
                check_contents(cx, &k, &s)?;
                Some(s)
            }
            None => None,
        };
        let bool_of = |k: &str| -> Result<Option<bool>, ConfigError> {
            match t.get(k) {
                None => Ok(None),
                Some(Value::Boolean(b)) => Ok(Some(*b)),
                Some(other) => Err(cx.err(
                    &format!("{key}.{k}"),
                    format!(
                        "expected true or false, found {}",
                        crate::check::kind(other)
                    ),
                )),
            }
        };
        let enabled = bool_of("enabled")?;
        let mask = bool_of("mask")?.unwrap_or(false);
        let mut dropins = Vec::new();
        if let Some(v) = t.get("dropins") {
            let dk = format!("{key}.dropins");
            let mut names = BTreeSet::new();
            for (j, d) in cx.array(&dk, v)?.iter().enumerate() {
                let ek = format!("{dk}[{j}]");
                let dt = cx.table(&ek, d)?;
                cx.unknown_keys(&ek, dt, DROPIN_KEYS)?;
                let nk = format!("{ek}.name");
                let Some(nv) = dt.get("name") else {
                    return Err(cx.err(&nk, "missing (like name = \"10-limits.conf\")"));
                };
                let n = cx.string(&nk, nv)?;
                check_dropin_name(&n).map_err(|m| cx.err(&nk, m))?;
                if !names.insert(n.clone()) {
                    return Err(cx.err(&nk, format!("{n:?} is listed twice")));
                }
                let ck = format!("{ek}.contents");
                let Some(cv) = dt.get("contents") else {
                    return Err(cx.err(
                        &ck,
                        "missing (like contents = \"[Service]\\nLimitNOFILE=65536\\n\")",
                    ));
                };
                let c = cx.string(&ck, cv)?;
                check_contents(cx, &ck, &c)?;
                dropins.push(Dropin {
                    name: n,
                    contents: c,
                });
            }
        }
        if mask && (contents.is_some() || !dropins.is_empty() || enabled == Some(true)) {
            return Err(cx.err(
                &format!("{key}.mask"),
                "a masked unit cannot have contents, drop-ins or enabled = true",
            ));
        }
        if !mask && contents.is_none() && dropins.is_empty() && enabled.is_none() {
            return Err(cx.err(
                &key,
                "nothing to do: give contents, dropins, enabled or mask",
            ));
        }
        if name.starts_with("cairn-") && (mask || contents.is_some() || enabled.is_some()) {
            return Err(cx.err(
                &nk,
                format!("{name:?} is one of Cairn's own units: only drop-ins may change it"),
            ));
        }
        if enabled == Some(true)
            && let Some(c) = &contents
        {
            let inst = parse_install(c).map_err(|m| cx.err(&format!("{key}.contents"), m))?;
            if inst.is_empty() {
                return Err(cx.err(
                    &format!("{key}.enabled"),
                    "the unit has no [Install] section with WantedBy=, RequiredBy= or Alias=: nothing to enable",
                ));
            }
            if is_template(&name) && inst.default_instance.is_none() {
                return Err(cx.err(
                    &format!("{key}.enabled"),
                    "a template needs DefaultInstance= to be enabled; or enable an instance (\"name@instance.service\")",
                ));
            }
        }
        out.push(Unit {
            name,
            contents,
            enabled,
            mask,
            dropins,
        });
    }
    Ok(out)
}

impl Unit {
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(self.name.clone()));
        if let Some(c) = &self.contents {
            t.insert("contents".into(), Value::String(c.clone()));
        }
        if let Some(e) = self.enabled {
            t.insert("enabled".into(), Value::Boolean(e));
        }
        if self.mask {
            t.insert("mask".into(), Value::Boolean(true));
        }
        if !self.dropins.is_empty() {
            let d = self
                .dropins
                .iter()
                .map(|d| {
                    let mut dt = Table::new();
                    dt.insert("name".into(), Value::String(d.name.clone()));
                    dt.insert("contents".into(), Value::String(d.contents.clone()));
                    Value::Table(dt)
                })
                .collect();
            t.insert("dropins".into(), Value::Array(d));
        }
        t
    }

    /// The paths this entry writes under /etc/systemd/system (the unit file
    /// or mask link, the drop-ins), for conflict checks.
    pub fn paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.contents.is_some() || self.mask {
            v.push(format!("{UNIT_DIR}/{}", self.name));
        }
        for d in &self.dropins {
            v.push(format!("{UNIT_DIR}/{}.d/{}", self.name, d.name));
        }
        v
    }
}

/// Where `[[units]]` go.
pub const UNIT_DIR: &str = "/etc/systemd/system";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    #[test]
    fn unit_names() {
        for good in [
            "a.service",
            "getty@ttyS1.service",
            "foo@.service",
            "dev-disk-by\\x2dlabel-DATA.mount",
            "x.timer",
            "my.app.socket",
        ] {
            assert_eq!(check_unit_file_name(good), Ok(()), "{good}");
        }
        for bad in [
            "a",
            ".service",
            "a.device",
            "a b.service",
            "a/b.service",
            "@x.service",
            "a@b@c.service",
            "a.conf",
        ] {
            assert!(check_unit_file_name(bad).is_err(), "{bad}");
        }
        assert!(is_template("foo@.service") && !is_template("foo@a.service"));
        assert_eq!(check_dropin_name("10-x.conf"), Ok(()));
        for bad in [".conf", "x.cfg", "../x.conf", "a/b.conf", ".x.conf"] {
            assert!(check_dropin_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn install_sections() {
        let i = parse_install(
            "[Unit]\nWantedBy=x.target\n[Install]\n# c\nWantedBy=multi-user.target \\\n  b.target\nRequiredBy=c.target\nAlias=d.service\nAlso=e.service\n[X-Other]\nWantedBy=z.target\n",
        );
        assert_eq!(
            i,
            Ok(Install {
                wanted_by: vec!["multi-user.target".into(), "b.target".into()],
                required_by: vec!["c.target".into()],
                alias: vec!["d.service".into()],
                default_instance: None,
            })
        );
        assert_eq!(
            parse_install(
                "[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\nDefaultInstance=tty1\n"
            )
            .map(|i| (i.wanted_by, i.default_instance)),
            Ok((vec!["b.target".to_string()], Some("tty1".to_string())))
        );
        assert!(parse_install("[Install]\nWantedBy=%i.target\n").is_err());
        assert!(parse_install("[Unit]\n").is_ok_and(|i| i.is_empty()));
    }

    #[test]
    fn good_and_bad_entries() {
        let c = HostConfig::parse(
            "[[units]]\nname = \"b.timer\"\nenabled = true\ncontents = \"[Timer]\\nOnCalendar=daily\\n[Install]\\nWantedBy=timers.target\\n\"\n\
             [[units]]\nname = \"systemd-journald.service\"\ndropins = [{ name = \"10-size.conf\", contents = \"[Journal]\\n\" }]\n\
             [[units]]\nname = \"x.service\"\nmask = true\n\
             [[units]]\nname = \"cairn-updated.service\"\ndropins = [{ name = \"10-env.conf\", contents = \"[Service]\\n\" }]\n\
             [[units]]\nname = \"ssh.service\"\nenabled = false\n",
            "t",
        )
        .expect("valid");
        assert_eq!(c.units.len(), 5);
        assert_eq!(c.units[0].enabled, Some(true));
        assert_eq!(
            c.units[1].paths(),
            ["/etc/systemd/system/systemd-journald.service.d/10-size.conf"]
        );
        assert_eq!(c.units[2].paths(), ["/etc/systemd/system/x.service"]);
        let cases: &[(&str, &[&str])] = &[
            ("units = [1]", &["units[0]", "expected a table"]),
            ("[[units]]\ncontents = \"\"", &["units[0].name", "missing"]),
            (
                "[[units]]\nname = \"backup\"\nmask = true",
                &["units[0].name", "not a unit name"],
            ),
            (
                "[[units]]\nname = \"a.service\"",
                &["units[0]", "nothing to do"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nmask = true\ncontents = \"\"",
                &["units[0].mask", "cannot"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nmask = true\nenabled = true",
                &["units[0].mask"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nenabled = \"yes\"",
                &["units[0].enabled", "true or false"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nmask = 1",
                &["units[0].mask", "true or false"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nenabled = true\ncontents = \"[Service]\\nExecStart=/bin/true\\n\"",
                &["units[0].enabled", "no [Install]"],
            ),
            (
                "[[units]]\nname = \"a@.service\"\nenabled = true\ncontents = \"[Install]\\nWantedBy=a.target\\n\"",
                &["units[0].enabled", "DefaultInstance"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nenabled = true\ncontents = \"[Install]\\nWantedBy=%i.target\\n\"",
                &["units[0].contents", "specifiers"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nmask = true\n[[units]]\nname = \"a.service\"\nmask = true",
                &["units[1].name", "twice"],
            ),
            (
                "[[units]]\nname = \"a.service\"\ndropins = [{ name = \"x\", contents = \"\" }]",
                &["units[0].dropins[0].name", "drop-in name"],
            ),
            (
                "[[units]]\nname = \"a.service\"\ndropins = [{ name = \"x.conf\" }]",
                &["units[0].dropins[0].contents", "missing"],
            ),
            (
                "[[units]]\nname = \"a.service\"\ndropins = [{ name = \"x.conf\", contents = \"\" }, { name = \"x.conf\", contents = \"\" }]",
                &["units[0].dropins[1].name", "twice"],
            ),
            (
                "[[units]]\nname = \"a.service\"\ndropins = [{ name = \"x.conf\", text = \"\" }]",
                &["units[0].dropins[0].text", "unknown key"],
            ),
            (
                "[[units]]\nname = \"cairn-config.service\"\nmask = true",
                &["units[0].name", "Cairn's own units"],
            ),
            (
                "[[units]]\nname = \"a.service\"\nwanted_by = []",
                &["units[0].wanted_by", "unknown key"],
            ),
        ];
        crate::check::assert_refused(cases);
    }
}
