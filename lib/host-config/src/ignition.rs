//! Converting an Ignition v3 config (Flatcar, Fedora CoreOS) into a host
//! config: `cairn-config convert`.
//!
//! Pure: JSON text in, host config TOML and one note per thing that was left
//! out (or changed in meaning) out. What maps:
//!
//! | Ignition | host config |
//! |---|---|
//! | `passwd.users` (name, passwordHash, sshAuthorizedKeys, groups) | `[[users]]`; group `sudo` or `wheel` → `sudo = true` |
//! | `passwd.groups` (name, gid), groups users name | `[[groups]]` |
//! | `storage.files` under /etc and /var, `data:` contents (gzip too) | `[[files]]` |
//! | `storage.files` `/etc/hostname` | `hostname` |
//! | `storage.directories`, `storage.links` (symbolic) | lines of `/etc/tmpfiles.d/ignition.conf` in `[[files]]` |
//! | `systemd.units` (contents, enabled, mask, dropins) | `[[units]]` |
//!
//! Everything else (disks, RAID, filesystems, LUKS, kernel arguments, remote
//! `source` URLs, uids, shells, config merge/replace …) is left out with a
//! note that says why. Every entry is checked with the host config's own
//! validation, so one entry Cairn refuses is left out with the reason
//! instead of failing the whole conversion; the assembled output is parsed
//! again before it is returned.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde_json::{Map, Value as Json};
use toml::{Table, Value};

use crate::HostConfig;
use crate::check::ConfigError;
use crate::files::{MAX_SIZE, base64_decode, check_path};
use crate::units::{UNIT_DIR, parse_install};

/// The Ignition spec versions this converter reads: the stable 3.x releases.
/// Their fields that map here are the same in all of them.
pub const SPEC_VERSIONS: &[&str] = &[
    "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0",
];

/// Where directories and symbolic links go: the host config has neither, but
/// systemd-tmpfiles creates them at every boot from this file.
pub const TMPFILES_PATH: &str = "/etc/tmpfiles.d/ignition.conf";

/// A converted config: the host config text and the notes, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    pub toml: String,
    pub notes: Vec<String>,
}

/// Why a config could not be converted at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{origin}: not JSON ({message}): an Ignition config is a JSON document")]
    Json { origin: String, message: String },
    #[error("{origin}: not an Ignition config: {reason}")]
    NotIgnition { origin: String, reason: String },
    #[error(
        "{origin}: Ignition spec {version} is not read: cairn-config convert reads spec 3.0.0 to 3.6.0; {hint}"
    )]
    Version {
        origin: String,
        version: String,
        hint: String,
    },
    /// The assembled host config was refused: a bug in this converter, as
    /// every entry was checked on its own.
    #[error("{0} (in the converted config: please report this as a bug)")]
    Output(ConfigError),
}

const V2_HINT: &str = "translate it to spec 3 first with ign-converter (https://github.com/coreos/ign-converter), \
or rewrite it as a Butane config and run butane";

/// Converts the Ignition config `json`; `origin` names it in errors.
pub fn convert(json: &str, origin: &str) -> Result<Converted, ConvertError> {
    let doc: Json = serde_json::from_str(json).map_err(|e| ConvertError::Json {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let not_ign = |reason: &str| ConvertError::NotIgnition {
        origin: origin.to_string(),
        reason: reason.to_string(),
    };
    let Json::Object(root) = &doc else {
        return Err(not_ign(
            "the document is not a JSON object ({\"ignition\": {\"version\": \"3.4.0\"}, ...})",
        ));
    };
    if let Some(v) = root.get("ignitionVersion") {
        return Err(ConvertError::Version {
            origin: origin.to_string(),
            version: format!("1 (ignitionVersion {v})"),
            hint: V2_HINT.to_string(),
        });
    }
    let version = root
        .get("ignition")
        .and_then(|i| i.get("version"))
        .and_then(Json::as_str)
        .ok_or_else(|| {
            not_ign(
                "ignition.version is missing (it starts {\"ignition\": {\"version\": \"3.4.0\"}})",
            )
        })?;
    let minor = spec_minor(version).map_err(|hint| ConvertError::Version {
        origin: origin.to_string(),
        version: short(version),
        hint,
    })?;
    let mut cv = Conv {
        minor,
        ..Conv::default()
    };
    cv.run(root);
    let text = cv.render(version);
    HostConfig::parse_strict(&text, "converted").map_err(ConvertError::Output)?;
    Ok(Converted {
        toml: text,
        notes: cv.notes,
    })
}

/// The minor version of a readable spec version, or the hint of the error.
fn spec_minor(v: &str) -> Result<u32, String> {
    if let Some(i) = SPEC_VERSIONS.iter().position(|s| *s == v) {
        return Ok(u32::try_from(i).unwrap_or(0));
    }
    let major = v.split('.').next().unwrap_or("");
    Err(match major {
        "1" | "2" => V2_HINT.to_string(),
        "3" if v.contains('-') => {
            "experimental spec versions are not read: use the stable version it became".to_string()
        }
        "3" => "it is newer than the versions read here, or not a spec version".to_string(),
        _ => "it is not an Ignition v3 config".to_string(),
    })
}

#[derive(Default)]
struct Conv {
    /// x of spec 3.x.0.
    minor: u32,
    notes: Vec<String>,
    hostname: Option<String>,
    timezone: Option<String>,
    users: Vec<Table>,
    /// Group name → its entry; BTreeMap for a stable order.
    groups: BTreeMap<String, Table>,
    files: Vec<(String, Table)>,
    units: Vec<Table>,
    tmpfiles: Vec<String>,
    /// Paths left out because they are outside /etc and /var: units that
    /// run them are pointed out.
    outside: Vec<String>,
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// The fields of an object by name: the notes come in the same order
/// whether or not serde_json keeps the document's order (its
/// `preserve_order` feature, which any crate of the build can turn on).
fn sorted(obj: Option<&Map<String, Json>>) -> Vec<(&String, &Json)> {
    let mut v: Vec<(&String, &Json)> = obj.into_iter().flatten().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// One line, whatever the input held.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `s` shortened for a note (a data URL can be a megabyte).
fn short(s: &str) -> String {
    let s = one_line(s);
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// The message of the host config's own check of one entry of `section`,
/// with the key inside the entry (`ssh_authorized_keys[0]: ...`).
fn refusal(section: &str, entry: &Table) -> Option<String> {
    let mut t = Table::new();
    t.insert(
        section.into(),
        Value::Array(vec![Value::Table(entry.clone())]),
    );
    let text = toml::to_string(&t).ok()?;
    let e = HostConfig::parse(&text, "entry").err()?;
    let prefix = format!("{section}[0]");
    let key = e.key.strip_prefix(&prefix).unwrap_or(&e.key);
    let key = key.trim_start_matches('.');
    Some(if key.is_empty() {
        e.message
    } else {
        format!("{key}: {}", e.message)
    })
}

impl Conv {
    fn note(&mut self, s: String) {
        self.notes.push(one_line(&s));
    }

    fn left_out(&mut self, what: &str, why: &str) {
        self.note(format!("left out {what}: {why}"));
    }

    fn run(&mut self, root: &Map<String, Json>) {
        for (k, v) in sorted(Some(root)) {
            match k.as_str() {
                "ignition" => self.ignition(v),
                "passwd" => self.passwd(v),
                "storage" => self.storage(v),
                "systemd" => self.systemd(v),
                "kernelArguments" => self.left_out(
                    "kernelArguments",
                    "Cairn's kernel command line is part of the signed boot files; set it with cmdline_add in the board config",
                ),
                _ => self.left_out(k, "not a section of Ignition spec 3"),
            }
        }
        self.point_out_units_running_left_out_paths();
        self.add_tmpfiles();
    }

    fn ignition(&mut self, v: &Json) {
        let Some(obj) = v.as_object() else { return };
        for (k, v) in sorted(Some(obj)) {
            match k.as_str() {
                "version" => {}
                "config" => {
                    let Some(c) = v.as_object() else { continue };
                    if let Some(list) = c.get("merge").and_then(Json::as_array) {
                        for (i, m) in list.iter().enumerate() {
                            let src = m.get("source").and_then(Json::as_str).unwrap_or("");
                            self.left_out(
                                &format!("ignition.config.merge[{i}] ({})", short(src)),
                                "convert that config too and combine the host configs by hand (cairn-config reads one config)",
                            );
                        }
                    }
                    if let Some(r) = c.get("replace") {
                        let src = r.get("source").and_then(Json::as_str).unwrap_or("");
                        self.left_out(
                            &format!("ignition.config.replace ({})", short(src)),
                            "convert the config it points to instead",
                        );
                    }
                }
                _ => self.left_out(
                    &format!("ignition.{k}"),
                    "it only tells Ignition how to fetch; the host config fetches nothing",
                ),
            }
        }
    }

    fn passwd(&mut self, v: &Json) {
        let Some(obj) = v.as_object() else { return };
        for (k, v) in sorted(Some(obj)) {
            match (k.as_str(), v.as_array()) {
                ("groups", Some(list)) => {
                    for (i, g) in list.iter().enumerate() {
                        self.group(i, g);
                    }
                }
                ("users", Some(list)) => {
                    for (i, u) in list.iter().enumerate() {
                        self.user(i, u);
                    }
                }
                _ => self.left_out(
                    &format!("passwd.{k}"),
                    &format!("not a list of users or groups ({})", kind(v)),
                ),
            }
        }
    }

    fn group(&mut self, i: usize, g: &Json) {
        let at = format!("passwd.groups[{i}]");
        let Some(name) = g.get("name").and_then(Json::as_str) else {
            return self.left_out(&at, "it has no name");
        };
        let field = |k: &str| format!("{at}.{k} ({name})");
        let at = format!("{at} ({name})");
        if g.get("shouldExist") == Some(&Json::Bool(false)) {
            return self.left_out(&at, "the host config does not delete groups");
        }
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.to_string()));
        for (k, v) in sorted(g.as_object()) {
            match k.as_str() {
                "name" | "shouldExist" => {}
                "gid" => match v.as_i64() {
                    Some(n) => {
                        t.insert("gid".into(), Value::Integer(n));
                    }
                    None => self.left_out(&field("gid"), "not an integer"),
                },
                "passwordHash" => self.left_out(
                    &field("passwordHash"),
                    "the host config sets no group passwords",
                ),
                "system" => self.left_out(
                    &field("system"),
                    "the host config has no system groups; give a gid below 1000 instead",
                ),
                _ => self.left_out(&field(k), "not a field of a group"),
            }
        }
        if let Some(Value::Integer(_)) = t.get("gid")
            && let Some(why) = refusal("groups", &t)
        {
            t.remove("gid");
            self.left_out(&field("gid"), &why);
        }
        match refusal("groups", &t) {
            Some(why) => self.left_out(&at, &why),
            None => {
                self.groups.insert(name.to_string(), t);
            }
        }
    }

    fn user(&mut self, i: usize, u: &Json) {
        let at = format!("passwd.users[{i}]");
        let Some(name) = u.get("name").and_then(Json::as_str) else {
            return self.left_out(&at, "it has no name");
        };
        let base = at;
        let at = format!("{base} ({name})");
        if u.get("shouldExist") == Some(&Json::Bool(false)) {
            return self.left_out(&at, "the host config does not delete users");
        }
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.to_string()));
        if let Some(why) = refusal("users", &t) {
            return self.left_out(&at, &why);
        }
        let mut groups = Vec::new();
        let mut sudo = false;
        for (k, v) in sorted(u.as_object()) {
            let field = format!("{base}.{k} ({name})");
            match k.as_str() {
                "name" | "shouldExist" => {}
                "passwordHash" => match v.as_str() {
                    Some(h) => {
                        let mut probe = t.clone();
                        probe.insert("password_hash".into(), Value::String(h.to_string()));
                        match refusal("users", &probe) {
                            Some(why) => self.left_out(&field, &why),
                            None => t = probe,
                        }
                    }
                    None => self.left_out(&field, &format!("expected a string, found {}", kind(v))),
                },
                "sshAuthorizedKeys" => {
                    let mut keys = Vec::new();
                    for (j, key) in v.as_array().into_iter().flatten().enumerate() {
                        let kf = format!("{base}.{k}[{j}] ({name})");
                        let Some(line) = key.as_str() else {
                            self.left_out(&kf, &format!("expected a string, found {}", kind(key)));
                            continue;
                        };
                        match crate::config::check_ssh_key(line) {
                            Ok(()) => keys.push(Value::String(line.to_string())),
                            Err(why) => self.left_out(&kf, &why),
                        }
                    }
                    t.insert("ssh_authorized_keys".into(), Value::Array(keys));
                }
                "groups" => {
                    for (j, g) in v.as_array().into_iter().flatten().enumerate() {
                        let gf = format!("{base}.{k}[{j}] ({name})");
                        match g.as_str() {
                            Some("sudo" | "wheel") => sudo = true,
                            Some(g) => match crate::config::check_user_name(g) {
                                Ok(()) if !groups.contains(&g.to_string()) => {
                                    groups.push(g.to_string())
                                }
                                Ok(()) => {}
                                Err(why) => {
                                    self.left_out(&gf, &why.replace("user name", "group name"))
                                }
                            },
                            None => {
                                self.left_out(&gf, &format!("expected a string, found {}", kind(g)))
                            }
                        }
                    }
                }
                "uid" => self.left_out(
                    &field,
                    "the host config does not choose uids (useradd does)",
                ),
                "primaryGroup" | "noUserGroup" => {
                    self.left_out(&field, "users get their own primary group of the same name")
                }
                "homeDir" | "noCreateHome" => {
                    self.left_out(&field, "homes are /home/<name>, created by cairn-config")
                }
                "shell" => self.left_out(&field, "users get the image's default shell"),
                "gecos" | "noLogInit" | "system" => {
                    self.left_out(&field, "the host config has no such user setting")
                }
                _ => self.left_out(&field, "not a field of a user"),
            }
        }
        if sudo {
            self.note(format!(
                "{at}: group sudo/wheel became sudo = true (a NOPASSWD rule in /etc/sudoers.d/cairn-{name})"
            ));
            t.insert("sudo".into(), Value::Boolean(true));
        }
        for g in &groups {
            if !self.groups.contains_key(g) {
                // groupadd runs only when the group is missing, so declaring
                // a group the image already has is harmless.
                let mut gt = Table::new();
                gt.insert("name".into(), Value::String(g.clone()));
                self.groups.insert(g.clone(), gt);
            }
        }
        if !groups.is_empty() {
            t.insert(
                "groups".into(),
                Value::Array(groups.into_iter().map(Value::String).collect()),
            );
        }
        match refusal("users", &t) {
            Some(why) => self.left_out(&at, &why),
            None => self.users.push(t),
        }
    }

    fn storage(&mut self, v: &Json) {
        let Some(obj) = v.as_object() else { return };
        for (k, v) in sorted(Some(obj)) {
            let list: &[Json] = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
            for (i, e) in list.iter().enumerate() {
                let at = format!("storage.{k}[{i}]");
                let s = |f: &str| e.get(f).and_then(Json::as_str).unwrap_or("?").to_string();
                match k.as_str() {
                    "files" => self.file(&at, e),
                    "directories" => self.directory(&at, e),
                    "links" => self.link(&at, e),
                    "disks" => self.left_out(
                        &format!("{at} ({})", s("device")),
                        "Cairn does not partition disks from the host config",
                    ),
                    "raid" => self.left_out(
                        &format!("{at} ({})", s("name")),
                        "Cairn does not build RAID arrays from the host config",
                    ),
                    "filesystems" => self.left_out(
                        &format!("{at} ({})", s("device")),
                        "Cairn does not create filesystems from the host config (a mount unit in systemd.units is converted)",
                    ),
                    "luks" => self.left_out(
                        &format!("{at} ({})", s("name")),
                        "Cairn does not create LUKS volumes from the host config",
                    ),
                    _ => self.left_out(&at, "not a section of Ignition spec 3 storage"),
                }
            }
        }
    }

    /// The path of a file, directory or link if Cairn may write there;
    /// otherwise the note is made.
    fn writable_path(&mut self, at: &str, e: &Json) -> Option<String> {
        let Some(path) = e.get("path").and_then(Json::as_str) else {
            self.left_out(at, "it has no path");
            return None;
        };
        match check_path(path) {
            Ok(()) => Some(path.to_string()),
            Err(why) => {
                if !path.starts_with("/etc/") && !path.starts_with("/var/") {
                    self.outside.push(path.to_string());
                }
                self.left_out(at, &why);
                None
            }
        }
    }

    /// `user:group` of a node (names preferred to ids, as Ignition does),
    /// root for a missing half; `None` when neither is given.
    fn owner(e: &Json) -> Option<(String, String)> {
        let part = |k: &str| -> Option<String> {
            let o = e.get(k)?;
            if let Some(n) = o.get("name").and_then(Json::as_str) {
                return Some(n.to_string());
            }
            o.get("id").and_then(Json::as_u64).map(|n| n.to_string())
        };
        match (part("user"), part("group")) {
            (None, None) => None,
            (u, g) => Some((
                u.unwrap_or_else(|| "root".into()),
                g.unwrap_or_else(|| "root".into()),
            )),
        }
    }

    fn mode(&mut self, at: &str, e: &Json, file: bool) -> Option<Option<u32>> {
        let Some(m) = e.get("mode") else {
            return Some(None);
        };
        let Some(n) = m.as_u64().and_then(|n| u32::try_from(n).ok()) else {
            self.left_out(at, &format!("mode {m} is not a permission mode"));
            return None;
        };
        if n > 0o7777 {
            self.left_out(at, &format!("mode {n} (0{n:o}) is not a permission mode"));
            return None;
        }
        // Before spec 3.6.0 Ignition ignored the special bits of files.
        if file && self.minor < 6 && n & 0o7000 != 0 {
            self.note(format!(
                "{at}: mode 0{n:o} written as 0{:o}: spec 3.{}.0 ignores setuid, setgid and sticky on files",
                n & 0o777,
                self.minor
            ));
            return Some(Some(n & 0o777));
        }
        Some(Some(n))
    }

    fn file(&mut self, at: &str, e: &Json) {
        let Some(path) = e.get("path").and_then(Json::as_str) else {
            return self.left_out(at, "it has no path");
        };
        let at = format!("{at} ({path})");
        if path == "/etc/hostname" {
            let Some(contents) = self.file_contents(&at, e) else {
                return;
            };
            let name = String::from_utf8_lossy(&contents);
            let name = name.lines().next().unwrap_or("").trim().to_string();
            match crate::config::check_hostname(&name) {
                Ok(()) => {
                    self.note(format!("{at}: became hostname = {name:?}"));
                    self.hostname = Some(name);
                }
                Err(why) => self.left_out(&at, &why),
            }
            return;
        }
        let Some(path) = self.writable_path(&at, e) else {
            return;
        };
        let Some(mode) = self.mode(&at, e, true) else {
            return;
        };
        let Some(contents) = self.file_contents(&at, e) else {
            return;
        };
        let mut t = Table::new();
        t.insert("path".into(), Value::String(path.clone()));
        if let Some(m) = mode {
            t.insert("mode".into(), Value::String(format!("{m:04o}")));
        }
        if let Some((u, g)) = Self::owner(e) {
            t.insert("owner".into(), Value::String(format!("{u}:{g}")));
        }
        match String::from_utf8(contents) {
            Ok(s) => t.insert("contents".into(), Value::String(s)),
            Err(b) => t.insert(
                "contents_base64".into(),
                Value::String(crate::files::base64_encode(b.as_bytes())),
            ),
        };
        match refusal("files", &t) {
            Some(why) => self.left_out(&at, &why),
            None => self.files.push((path, t)),
        }
    }

    /// The whole contents (`contents` then each `append` fragment), or
    /// `None` when the note was made.
    fn file_contents(&mut self, at: &str, e: &Json) -> Option<Vec<u8>> {
        let has_source = |r: &Json| {
            r.get("source")
                .and_then(Json::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        let mut out = match e.get("contents") {
            Some(c) if has_source(c) => match resource(c) {
                Ok(b) => b,
                Err(why) => {
                    self.left_out(at, &format!("contents: {why}"));
                    return None;
                }
            },
            _ => {
                let appends = e
                    .get("append")
                    .and_then(Json::as_array)
                    .is_some_and(|a| !a.is_empty());
                if appends {
                    self.left_out(
                        at,
                        "append without contents.source adds to a file already on the host; the host config writes whole files",
                    );
                    return None;
                }
                self.note(format!(
                    "{at}: no contents.source, written as an empty file (Ignition keeps a file already there)"
                ));
                Vec::new()
            }
        };
        for (j, r) in e
            .get("append")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match resource(r) {
                Ok(b) => out.extend(b),
                Err(why) => {
                    self.left_out(at, &format!("append[{j}]: {why}"));
                    return None;
                }
            }
        }
        Some(out)
    }

    fn directory(&mut self, at: &str, e: &Json) {
        let shown = format!(
            "{at} ({})",
            e.get("path").and_then(Json::as_str).unwrap_or("?")
        );
        let Some(path) = self.writable_path(&shown, e) else {
            return;
        };
        let Some(mode) = self.mode(&shown, e, false) else {
            return;
        };
        let (u, g) = match tmpfiles_owner(e) {
            Ok(o) => o,
            Err(why) => return self.left_out(&shown, &why),
        };
        let mode = mode.map_or("0755".to_string(), |m| format!("{m:04o}"));
        self.tmpfiles
            .push(format!("d {} {mode} {u} {g} -", tmpfiles_path(&path)));
        self.note(format!(
            "{shown}: became a line of {TMPFILES_PATH} (the host config has no directories)"
        ));
    }

    fn link(&mut self, at: &str, e: &Json) {
        let target = e.get("target").and_then(Json::as_str);
        let shown = format!(
            "{at} ({} -> {})",
            e.get("path").and_then(Json::as_str).unwrap_or("?"),
            target.unwrap_or("?")
        );
        if e.get("hard") == Some(&Json::Bool(true)) {
            return self.left_out(&shown, "the host config makes no hard links");
        }
        let Some(target) = target else {
            return self.left_out(&shown, "it has no target");
        };
        if e.get("path").and_then(Json::as_str) == Some("/etc/localtime") {
            let zone = target
                .strip_prefix("/usr/share/zoneinfo/")
                .or_else(|| target.strip_prefix("../usr/share/zoneinfo/"));
            match zone.map(|z| (z, crate::system::check_timezone(z))) {
                Some((z, Ok(()))) => {
                    self.note(format!("{shown}: became timezone = {z:?}"));
                    self.timezone = Some(z.to_string());
                }
                Some((_, Err(why))) => self.left_out(&shown, &why),
                None => self.left_out(&shown, "/etc/localtime is set by timezone, and the target is not under /usr/share/zoneinfo"),
            }
            return;
        }
        let Some(path) = self.writable_path(&shown, e) else {
            return;
        };
        // L+ replaces what is there, as overwrite does.
        let ty = if e.get("overwrite") == Some(&Json::Bool(true)) {
            "L+"
        } else {
            "L"
        };
        let (u, g) = match tmpfiles_owner(e) {
            Ok(o) => o,
            Err(why) => return self.left_out(&shown, &why),
        };
        let target = match tmpfiles_arg(target) {
            Ok(t) => t,
            Err(why) => return self.left_out(&shown, &why),
        };
        self.tmpfiles.push(format!(
            "{ty} {} - {u} {g} - {target}",
            tmpfiles_path(&path)
        ));
        self.note(format!(
            "{shown}: became a line of {TMPFILES_PATH} (the host config has no links)"
        ));
    }

    fn add_tmpfiles(&mut self) {
        if self.tmpfiles.is_empty() {
            return;
        }
        if self.files.iter().any(|(p, _)| p == TMPFILES_PATH) {
            let n = self.tmpfiles.len();
            self.left_out(
                &format!("{n} directories and links"),
                &format!("storage.files already writes {TMPFILES_PATH}, where they would go"),
            );
            return;
        }
        let mut text =
            String::from("# storage.directories and storage.links of the Ignition config\n");
        for l in &self.tmpfiles {
            text.push_str(l);
            text.push('\n');
        }
        let mut t = Table::new();
        t.insert("path".into(), Value::String(TMPFILES_PATH.into()));
        t.insert("contents".into(), Value::String(text));
        self.files.push((TMPFILES_PATH.into(), t));
    }

    fn systemd(&mut self, v: &Json) {
        let Some(obj) = v.as_object() else { return };
        for (k, v) in sorted(Some(obj)) {
            if k != "units" {
                self.left_out(
                    &format!("systemd.{k}"),
                    "not a section of Ignition spec 3 systemd",
                );
                continue;
            }
            for (i, u) in v.as_array().into_iter().flatten().enumerate() {
                self.unit(i, u);
            }
        }
    }

    fn unit(&mut self, i: usize, u: &Json) {
        let at = format!("systemd.units[{i}]");
        let Some(name) = u.get("name").and_then(Json::as_str) else {
            return self.left_out(&at, "it has no name");
        };
        let base = at;
        let at = format!("{base} ({name})");
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.to_string()));
        let contents = u.get("contents").and_then(Json::as_str);
        if let Some(c) = contents {
            t.insert("contents".into(), Value::String(c.to_string()));
        }
        match u.get("enabled").and_then(Json::as_bool) {
            Some(true)
                if contents.is_some_and(|c| parse_install(c).is_ok_and(|i| i.is_empty())) =>
            {
                self.left_out(
                    &format!("{base}.enabled ({name})"),
                    "the unit has no [Install] section, so there is nothing to enable (Ignition would do nothing either)",
                );
            }
            Some(e) => {
                t.insert("enabled".into(), Value::Boolean(e));
            }
            None => {}
        }
        if u.get("mask") == Some(&Json::Bool(true)) {
            t.insert("mask".into(), Value::Boolean(true));
        }
        let mut dropins = Vec::new();
        for (j, d) in u
            .get("dropins")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let dn = d.get("name").and_then(Json::as_str).unwrap_or("?");
            match d.get("contents").and_then(Json::as_str) {
                Some(c) => {
                    let mut dt = Table::new();
                    dt.insert("name".into(), Value::String(dn.to_string()));
                    dt.insert("contents".into(), Value::String(c.to_string()));
                    dropins.push(Value::Table(dt));
                }
                None => self.left_out(
                    &format!("{base}.dropins[{j}] ({name}, {dn})"),
                    "it has no contents, so Ignition writes nothing either",
                ),
            }
        }
        if !dropins.is_empty() {
            t.insert("dropins".into(), Value::Array(dropins));
        }
        if t.len() == 1 {
            // Only the name: Ignition changes nothing (mask false only unmasks).
            return self.left_out(
                &at,
                "nothing to convert (no contents, drop-ins, enabled or mask)",
            );
        }
        match refusal("units", &t) {
            Some(why) => self.left_out(&at, &why),
            None => self.units.push(t),
        }
    }

    /// Units that run a file Cairn could not write would fail at boot: say so.
    fn point_out_units_running_left_out_paths(&mut self) {
        let mut lines = Vec::new();
        for u in &self.units {
            let mut text = u
                .get("contents")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for d in u
                .get("dropins")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                text.push_str(d.get("contents").and_then(Value::as_str).unwrap_or(""));
            }
            let name = u.get("name").and_then(Value::as_str).unwrap_or("?");
            for p in &self.outside {
                if text.contains(p.as_str()) {
                    lines.push(format!(
                        "systemd unit {name} uses {p}, which was left out: put the file under /etc or /var and change the unit"
                    ));
                }
            }
        }
        for l in lines {
            self.note(l);
        }
    }

    /// The host config text: a header, then the sections in the order the
    /// host config documents them. A [[files]] entry that a unit also writes
    /// is left out here.
    fn render(&mut self, version: &str) -> String {
        let unit_paths: BTreeSet<String> = self
            .units
            .iter()
            .filter_map(|u| u.get("name").and_then(Value::as_str))
            .map(|n| format!("{UNIT_DIR}/{n}"))
            .collect();
        let mut files = Vec::new();
        for (p, t) in std::mem::take(&mut self.files) {
            if unit_paths.contains(&p) {
                self.left_out(
                    &format!("storage.files ({p})"),
                    "systemd.units writes the same unit file; the unit entry is kept",
                );
            } else {
                files.push(Value::Table(t));
            }
        }
        let mut out = format!(
            "# Converted from an Ignition spec {version} config by cairn-config convert.\n"
        );
        let mut section = |key: &str, v: Value| {
            let mut t = Table::new();
            t.insert(key.into(), v);
            if let Ok(s) = toml::to_string(&t) {
                out.push('\n');
                out.push_str(&s);
            }
        };
        let tables = |v: Vec<Table>| Value::Array(v.into_iter().map(Value::Table).collect());
        if let Some(h) = &self.hostname {
            section("hostname", Value::String(h.clone()));
        }
        if let Some(z) = &self.timezone {
            section("timezone", Value::String(z.clone()));
        }
        if !self.users.is_empty() {
            section("users", tables(self.users.clone()));
        }
        if !self.groups.is_empty() {
            section("groups", tables(self.groups.values().cloned().collect()));
        }
        if !files.is_empty() {
            section("files", Value::Array(files));
        }
        if !self.units.is_empty() {
            section("units", tables(self.units.clone()));
        }
        out
    }
}

/// A tmpfiles.d path field: C-style escapes for what would split it.
fn tmpfiles_path(p: &str) -> String {
    // Quoted, as systemd-tmpfiles unquotes the path field (it does not
    // decode \x escapes); `%` starts a specifier.
    let mut s = String::from("\"");
    for c in p.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            '%' => s.push_str("%%"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The argument field (a link's target) is the rest of the line, taken as
/// it is but for specifiers.
fn tmpfiles_arg(t: &str) -> Result<String, String> {
    if t.is_empty() || t.chars().any(char::is_control) || t.starts_with(char::is_whitespace) {
        return Err(format!(
            "the target {t:?} cannot be written in a tmpfiles.d line"
        ));
    }
    Ok(t.replace('%', "%%"))
}

/// User and group fields of a tmpfiles.d line: names or ids, `-` for root.
fn tmpfiles_owner(e: &Json) -> Result<(String, String), String> {
    let Some((u, g)) = Conv::owner(e) else {
        return Ok(("-".into(), "-".into()));
    };
    for x in [&u, &g] {
        if !x.bytes().all(|b| b.is_ascii_digit()) {
            crate::config::check_user_name(x)?;
        }
    }
    Ok((u, g))
}

/// The bytes of an Ignition resource (`contents`, an `append` fragment):
/// a `data:` URL, gunzipped if `compression` says gzip.
fn resource(r: &Json) -> Result<Vec<u8>, String> {
    let src = r.get("source").and_then(Json::as_str).unwrap_or("");
    let bytes = if src
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
    {
        data_url(src)?
    } else {
        return Err(format!(
            "source {} is a remote URL: the host config carries contents inline; download it and give it as a data: URL",
            short(src)
        ));
    };
    match r.get("compression").and_then(Json::as_str) {
        None | Some("") => Ok(bytes),
        Some("gzip") => gunzip(&bytes),
        Some(other) => Err(format!("compression {other:?} is not gzip")),
    }
}

/// RFC 2397: `data:[<mediatype>][;base64],<data>`, the data percent-encoded.
pub fn data_url(url: &str) -> Result<Vec<u8>, String> {
    let rest = url.get(5..).unwrap_or("");
    let Some((meta, data)) = rest.split_once(',') else {
        return Err("the data: URL has no ',' before its data".into());
    };
    let raw = percent_decode(data)?;
    if meta
        .rsplit(';')
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("base64"))
    {
        let text =
            String::from_utf8(raw).map_err(|_| "the base64 data is not ASCII".to_string())?;
        base64_decode(&text).map_err(|e| format!("the data: URL's {e}"))
    } else {
        Ok(raw)
    }
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of the data: URL's data"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    // One byte past the limit tells "too big" from "exactly the limit"
    // without inflating a gzip bomb.
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_SIZE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip data: {e}"))?;
    if out.len() > MAX_SIZE {
        return Err(format!("more than {MAX_SIZE} bytes once decompressed"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            ($name, include_str!(concat!("../tests/ignition/", $name)))
        };
    }

    /// Examples from the Ignition documentation (coreos/ignition docs/
    /// examples.md and docs/migrating-configs.md, as published), and one
    /// Flatcar-style node config written for these tests.
    const FIXTURES: &[(&str, &str)] = &[
        fixture!("examples-start-services.json"),
        fixture!("examples-modify-services.json"),
        fixture!("examples-root-filesystem-file.json"),
        fixture!("examples-reformat-var-btrfs.json"),
        fixture!("examples-raid-data-volume.json"),
        fixture!("examples-replace-config.json"),
        fixture!("examples-hostname.json"),
        fixture!("examples-add-users.json"),
        fixture!("examples-luks-volume.json"),
        fixture!("examples-kernel-arguments.json"),
        fixture!("migrating-v3_0-append-fragments.json"),
        fixture!("migrating-v3_1-merge-and-ca-compression.json"),
        fixture!("migrating-v3_1-proxy.json"),
        fixture!("migrating-v3_2-gs-url.json"),
        fixture!("migrating-v3_2-luks-and-mount-units.json"),
        fixture!("migrating-v3_2-user-group-deletion.json"),
        fixture!("migrating-v3_6-special-mode-bits.json"),
        fixture!("composite-flatcar-node.json"),
    ];

    const ETC_OR_VAR: &str = "is outside /etc and /var, the only places [[files]] writes";

    fn converted(name: &str) -> (HostConfig, Vec<String>) {
        let (_, text) = FIXTURES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no fixture {name}"));
        let c = convert(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = HostConfig::parse_strict(&c.toml, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (cfg, c.notes)
    }

    /// Every fixture converts to a config the host config's own loader
    /// accepts, the same text every time, with one-line notes.
    #[test]
    fn every_fixture_converts_to_a_valid_config_deterministically() {
        for (name, text) in FIXTURES {
            let a = convert(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Err(e) = HostConfig::parse_strict(&a.toml, name) {
                panic!("{name}: the output is refused: {e}\n{}", a.toml);
            }
            assert_eq!(
                convert(text, name).as_ref(),
                Ok(&a),
                "{name}: not deterministic"
            );
            assert!(
                a.toml.starts_with("# Converted from an Ignition spec 3."),
                "{name}"
            );
            for n in &a.notes {
                assert!(!n.contains(['\n', '\r']) && !n.is_empty(), "{name}: {n:?}");
            }
        }
    }

    /// (fixture, what the converted config must hold, the notes: each
    /// expected note is a substring of the note at the same place).
    #[test]
    fn fixtures_convert_as_documented() {
        type Check = fn(&HostConfig);
        let cases: &[(&str, Check, &[&str])] = &[
            (
                "examples-start-services.json",
                |c| {
                    assert_eq!(c.units.len(), 1);
                    let u = &c.units[0];
                    assert_eq!(
                        (u.name.as_str(), u.enabled),
                        ("example.service", Some(true))
                    );
                    assert!(
                        u.contents
                            .as_deref()
                            .is_some_and(|t| t.contains("ExecStart=/usr/bin/echo Hello World"))
                    );
                },
                &[],
            ),
            (
                "examples-modify-services.json",
                |c| {
                    let u = &c.units[0];
                    assert_eq!(u.name, "systemd-journald.service");
                    assert_eq!((u.contents.as_deref(), u.enabled), (None, None));
                    assert_eq!(u.dropins[0].name, "debug.conf");
                    assert_eq!(
                        u.dropins[0].contents,
                        "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug"
                    );
                },
                &[],
            ),
            (
                "examples-root-filesystem-file.json",
                |c| {
                    let f = &c.files[0];
                    assert_eq!(
                        (f.path.as_str(), f.mode, &f.contents[..]),
                        ("/etc/someconfig", 0o644, &b"example file\n"[..])
                    );
                    assert_eq!(f.owner, None);
                },
                &[],
            ),
            (
                "examples-reformat-var-btrfs.json",
                |c| assert!(c.files.is_empty()),
                &[
                    "left out storage.files[0] (/var/example-asset): contents: source http://example.com/asset is a remote URL",
                    "left out storage.filesystems[0] (/dev/disk/by-label/VAR): Cairn does not create filesystems",
                ],
            ),
            (
                "examples-raid-data-volume.json",
                |c| {
                    assert_eq!(c.units[0].name, "var-lib-data.mount");
                    assert_eq!(c.units[0].enabled, Some(true));
                },
                &[
                    "left out storage.disks[0] (/dev/sdb): Cairn does not partition disks from the host config",
                    "left out storage.disks[1] (/dev/sdc): Cairn does not partition disks",
                    "left out storage.filesystems[0] (/dev/md/data)",
                    "left out storage.raid[0] (data): Cairn does not build RAID arrays",
                ],
            ),
            (
                "examples-replace-config.json",
                |c| assert_eq!(c, &HostConfig::default()),
                &[
                    "left out ignition.config.replace (http://example.com/config.json): convert the config it points to instead",
                ],
            ),
            (
                "examples-hostname.json",
                |c| {
                    assert_eq!(c.hostname.as_deref(), Some("core1"));
                    assert!(c.files.is_empty());
                },
                &["storage.files[0] (/etc/hostname): became hostname = \"core1\""],
            ),
            (
                "examples-add-users.json",
                |c| {
                    assert_eq!(c.users.len(), 1);
                    assert_eq!(c.users[0].name, "jenkins");
                },
                &[
                    "left out passwd.users[0] (systemUser): name: \"systemUser\" is not a valid user name",
                    "left out passwd.users[1].uid (jenkins): the host config does not choose uids",
                ],
            ),
            (
                "examples-luks-volume.json",
                |c| assert_eq!(c.units[0].name, "var-lib-data.mount"),
                &[
                    "left out storage.filesystems[0] (/dev/disk/by-id/dm-name-data)",
                    "left out storage.luks[0] (data): Cairn does not create LUKS volumes",
                ],
            ),
            (
                "examples-kernel-arguments.json",
                |c| assert_eq!(c, &HostConfig::default()),
                &[
                    "left out kernelArguments: Cairn's kernel command line is part of the signed boot files",
                ],
            ),
            (
                "migrating-v3_0-append-fragments.json",
                |c| assert!(c.files.is_empty()),
                &[ETC_OR_VAR],
            ),
            (
                "migrating-v3_1-merge-and-ca-compression.json",
                |c| assert_eq!(c, &HostConfig::default()),
                &[
                    "left out ignition.config.merge[0] (https://secure.example.com/example.ign.gz): convert that config too",
                    "left out ignition.security: it only tells Ignition how to fetch",
                ],
            ),
            (
                "migrating-v3_1-proxy.json",
                |c| assert!(c.files.is_empty()),
                &[
                    "left out ignition.proxy",
                    "left out storage.files[0] (/etc/hosts): \"/etc/hosts\" is managed by cairn-config",
                ],
            ),
            (
                "migrating-v3_2-gs-url.json",
                |c| assert!(c.files.is_empty()),
                &[
                    "left out storage.files[0] (/etc/example): contents: source gs://bucket/object is a remote URL",
                ],
            ),
            (
                "migrating-v3_2-luks-and-mount-units.json",
                |c| {
                    let names: Vec<&str> = c.units.iter().map(|u| u.name.as_str()).collect();
                    assert_eq!(
                        names,
                        [
                            "var-lib-static_key_example.mount",
                            "var-lib-tpm_example.mount",
                            "var-lib-tang_example.mount"
                        ]
                    );
                },
                &[
                    "left out storage.filesystems[0]",
                    "left out storage.filesystems[1]",
                    "left out storage.filesystems[2]",
                    "left out storage.luks[0] (static-key-example)",
                    "left out storage.luks[1] (tpm-example)",
                    "left out storage.luks[2] (tang-example)",
                ],
            ),
            (
                "migrating-v3_2-user-group-deletion.json",
                |c| assert!(c.users.is_empty() && c.groups.is_empty()),
                &[
                    "left out passwd.groups[0] (core): the host config does not delete groups",
                    "left out passwd.users[0] (core): the host config does not delete users",
                ],
            ),
            (
                "migrating-v3_6-special-mode-bits.json",
                |c| {
                    assert_eq!(c.files.len(), 1);
                    assert_eq!(c.files[0].path, TMPFILES_PATH);
                    assert!(
                        String::from_utf8_lossy(&c.files[0].contents)
                            .contains("\nd \"/var/local/tmp\" 1777 - - -\n")
                    );
                },
                &[
                    "storage.directories[0] (/var/local/tmp): became a line of /etc/tmpfiles.d/ignition.conf",
                    ETC_OR_VAR,
                ],
            ),
            (
                "composite-flatcar-node.json",
                |c| {
                    assert_eq!(c.hostname.as_deref(), Some("node-1.example.com"));
                    assert_eq!(c.timezone.as_deref(), Some("UTC"));
                    let core = &c.users[0];
                    assert_eq!((core.name.as_str(), core.sudo), ("core", true));
                    assert_eq!(core.groups, ["docker"]);
                    assert_eq!(core.ssh_authorized_keys.len(), 1);
                    let deploy = &c.users[1];
                    assert!(deploy.sudo && deploy.groups.is_empty());
                    assert!(
                        deploy
                            .password_hash
                            .as_deref()
                            .is_some_and(|h| h.starts_with("$6$rounds=4096$"))
                    );
                    assert_eq!(c.groups.len(), 1);
                    assert_eq!(
                        (c.groups[0].name.as_str(), c.groups[0].gid),
                        ("docker", Some(233))
                    );
                    let paths: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
                    assert_eq!(
                        paths,
                        [
                            "/etc/sysctl.d/90-forward.conf",
                            "/etc/systemd/journald.conf.d/10-persistent.conf",
                            "/var/lib/deploy/token",
                            TMPFILES_PATH,
                        ]
                    );
                    // ;base64, with a media type and parameters.
                    assert_eq!(c.files[0].contents, b"net.ipv4.ip_forward = 1\n");
                    // gzip, as Butane writes longer contents.
                    assert_eq!(
                        c.files[1].contents,
                        b"[Journal]\nStorage=persistent\nSystemMaxUse=200M\n"
                    );
                    // Percent-encoded UTF-8, mode 384 = 0600, owner by name and id.
                    let token = &c.files[2];
                    assert_eq!(
                        (&token.contents[..], token.mode),
                        ("s3cr\u{e9}t".as_bytes(), 0o600)
                    );
                    assert_eq!(
                        token.owner.as_ref().map(ToString::to_string).as_deref(),
                        Some("deploy:1500")
                    );
                    assert_eq!(
                        String::from_utf8_lossy(&c.files[3].contents),
                        "# storage.directories and storage.links of the Ignition config\n\
                         d \"/var/lib/deploy/cache\" 0700 deploy deploy -\n\
                         L \"/etc/kubernetes/current\" - - - - /var/lib/deploy/releases/1.31\n"
                    );
                    let units: Vec<(&str, Option<bool>, bool, usize)> = c
                        .units
                        .iter()
                        .map(|u| (u.name.as_str(), u.enabled, u.mask, u.dropins.len()))
                        .collect();
                    assert_eq!(
                        units,
                        [
                            ("kubelet.service", Some(true), false, 0),
                            ("locksmithd.service", None, true, 0),
                            ("containerd.service", Some(true), false, 1),
                        ]
                    );
                },
                &[
                    "left out passwd.groups[0].system (docker): the host config has no system groups",
                    "passwd.users[0] (core): group sudo/wheel became sudo = true (a NOPASSWD rule in /etc/sudoers.d/cairn-core)",
                    "left out passwd.users[1].shell (deploy)",
                    "left out passwd.users[1].uid (deploy)",
                    "passwd.users[1] (deploy): group sudo/wheel became sudo = true",
                    "storage.directories[0] (/var/lib/deploy/cache): became a line of /etc/tmpfiles.d/ignition.conf",
                    "storage.files[0] (/etc/hostname): became hostname = \"node-1.example.com\"",
                    "left out storage.files[4] (/opt/bin/kubelet-wrapper): \"/opt/bin/kubelet-wrapper\" is outside /etc and /var",
                    "storage.links[0] (/etc/localtime -> /usr/share/zoneinfo/UTC): became timezone = \"UTC\"",
                    "left out storage.links[1] (/etc/kubernetes/kubelet.env -> /var/lib/deploy/kubelet.env): the host config makes no hard links",
                    "storage.links[2] (/etc/kubernetes/current -> /var/lib/deploy/releases/1.31): became a line of",
                    "left out systemd.units[3] (update-engine.service): nothing to convert",
                    "systemd unit kubelet.service uses /opt/bin/kubelet-wrapper, which was left out",
                ],
            ),
        ];
        assert_eq!(cases.len(), FIXTURES.len(), "a fixture without a case");
        for (name, check, want) in cases {
            let (cfg, notes) = converted(name);
            check(&cfg);
            assert_eq!(notes.len(), want.len(), "{name}: notes {notes:#?}");
            for (n, w) in notes.iter().zip(*want) {
                assert!(n.contains(w), "{name}: note {n:?} lacks {w:?}");
            }
        }
    }

    /// The examples of the documentation that put a remote `source` in a
    /// file whose path is fine, the ones that convert without notes, and a
    /// config that is refused whole are all covered above; these are the
    /// refusals.
    #[test]
    fn configs_that_cannot_be_converted() {
        let v2 = include_str!("../tests/ignition/migrating-v2_3-filesystem-name.json");
        let cases: &[(&str, &[&str])] = &[
            (
                "{\"ignition\": ",
                &["c.ign: not JSON", "EOF while parsing", "line 1"],
            ),
            (
                "[1, 2]",
                &["c.ign: not an Ignition config", "not a JSON object"],
            ),
            (
                "{\"storage\": {}}",
                &[
                    "c.ign: not an Ignition config",
                    "ignition.version is missing",
                ],
            ),
            (
                v2,
                &[
                    "c.ign: Ignition spec 2.3.0 is not read",
                    "reads spec 3.0.0 to 3.6.0",
                    "ign-converter (https://github.com/coreos/ign-converter)",
                    "butane",
                ],
            ),
            (
                "{\"ignitionVersion\": 1}",
                &["Ignition spec 1 (ignitionVersion 1)", "ign-converter"],
            ),
            (
                "{\"ignition\": {\"version\": \"3.7.0-experimental\"}}",
                &["spec 3.7.0-experimental", "experimental"],
            ),
            (
                "{\"ignition\": {\"version\": \"3.9.0\"}}",
                &["spec 3.9.0", "newer"],
            ),
            (
                "{\"ignition\": {\"version\": \"4.0.0\"}}",
                &["spec 4.0.0", "reads spec 3.0.0 to 3.6.0"],
            ),
        ];
        for (text, wants) in cases {
            let e = convert(text, "c.ign").expect_err(text).to_string();
            assert!(!e.contains('\n'), "{e}");
            for w in *wants {
                assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
            }
        }
    }

    fn one(json: &str) -> (HostConfig, Vec<String>) {
        let text = format!("{{\"ignition\": {{\"version\": \"3.4.0\"}}, {json}}}");
        let c = convert(&text, "t").unwrap_or_else(|e| panic!("{json}: {e}"));
        (
            HostConfig::parse_strict(&c.toml, "t").expect("valid"),
            c.notes,
        )
    }

    /// Entries Cairn refuses are left out alone, with the host config's
    /// reason; the rest converts.
    #[test]
    fn refused_entries_are_left_out_alone() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#""passwd": {"users": [{"name": "a", "passwordHash": "hunter2", "sshAuthorizedKeys": ["AAAA", "ssh-rsa AAAA x"]}]}"#,
                &[
                    "left out passwd.users[0].passwordHash (a): password_hash: must be a crypt(3) hash",
                    "left out passwd.users[0].sshAuthorizedKeys[0] (a): not an SSH public key",
                ],
            ),
            (
                r#""systemd": {"units": [{"name": "a.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n"}, {"name": "cairn-config.service", "mask": true}, {"name": "b.service", "dropins": [{"name": "x.conf"}]}]}"#,
                &[
                    "left out systemd.units[0].enabled (a.service): the unit has no [Install] section",
                    "left out systemd.units[1] (cairn-config.service): name: \"cairn-config.service\" is one of Cairn's own units",
                    "left out systemd.units[2].dropins[0] (b.service, x.conf): it has no contents",
                    "left out systemd.units[2] (b.service): nothing to convert",
                ],
            ),
            (
                r#""storage": {"files": [{"path": "/etc/a", "mode": 99999, "contents": {"source": "data:,x"}}, {"path": "/etc/b", "contents": {"source": "data:;base64,!!"}}, {"path": "/etc/c", "contents": {"source": "data:,%zz"}}, {"path": "/etc/d", "contents": {"source": "data:,x", "compression": "gzip"}}, {"path": "/etc/e", "append": [{"source": "data:,x"}]}, {"path": "/etc/f", "user": {"name": "Bad"}, "contents": {"source": "data:,x"}}, {"path": "/etc/g", "mode": 2541, "contents": {"source": "data:,x"}}]}"#,
                &[
                    "left out storage.files[0] (/etc/a): mode 99999",
                    "left out storage.files[1] (/etc/b): contents: the data: URL's not base64",
                    "left out storage.files[2] (/etc/c): contents: bad percent escape",
                    "left out storage.files[3] (/etc/d): contents: not gzip data",
                    "left out storage.files[4] (/etc/e): append without contents.source",
                    "left out storage.files[5] (/etc/f): owner: \"Bad\" is not a valid user name",
                    "storage.files[6] (/etc/g): mode 04755 written as 0755: spec 3.4.0 ignores setuid, setgid and sticky on files",
                ],
            ),
        ];
        for (json, want) in cases {
            let (_, notes) = one(json);
            assert_eq!(notes.len(), want.len(), "{json}: {notes:#?}");
            for (n, w) in notes.iter().zip(*want) {
                assert!(n.contains(w), "note {n:?} lacks {w:?}");
            }
        }
        let (c, _) = one(
            r#""passwd": {"users": [{"name": "a", "passwordHash": "hunter2", "sshAuthorizedKeys": ["AAAA", "ssh-rsa AAAA x"]}]}"#,
        );
        assert_eq!(c.users[0].ssh_authorized_keys, ["ssh-rsa AAAA x"]);
        assert_eq!(c.users[0].password_hash, None);
        let (c, _) = one(
            r#""storage": {"files": [{"path": "/etc/g", "mode": 2541, "contents": {"source": "data:,x"}}]}"#,
        );
        assert_eq!(c.files[0].mode, 0o755);
    }

    #[test]
    fn contents_and_fragments() {
        let (c, notes) = one(r#""storage": {"files": [
                {"path": "/etc/a", "contents": {"source": "data:,hello"}, "append": [{"source": "data:,%20world"}, {"source": "data:;base64,IQo="}]},
                {"path": "/etc/b"},
                {"path": "/var/c", "contents": {"source": "data:application/octet-stream;base64,AAEC/w=="}},
                {"path": "/etc/systemd/system/x.service", "contents": {"source": "data:,%5BService%5D"}}]},
              "systemd": {"units": [{"name": "x.service", "mask": true}]}"#);
        assert_eq!(c.files[0].contents, b"hello world!\n");
        assert_eq!(c.files[1].contents, b"");
        assert_eq!(c.files[2].contents, [0, 1, 2, 255]);
        assert_eq!(c.files.len(), 3);
        assert_eq!(
            notes,
            [
                "storage.files[1] (/etc/b): no contents.source, written as an empty file (Ignition keeps a file already there)",
                "left out storage.files (/etc/systemd/system/x.service): systemd.units writes the same unit file; the unit entry is kept",
            ]
        );
        assert_eq!(data_url("data:,a%2Cb,c"), Ok(b"a,b,c".to_vec()));
        assert_eq!(
            data_url("data:text/plain;charset=US-ASCII,hi"),
            Ok(b"hi".to_vec())
        );
        assert_eq!(data_url("data:;BASE64,aGk%3D"), Ok(b"hi".to_vec()));
        assert!(data_url("data:hi").is_err());
    }

    /// The lines for directories and links, run by the real systemd-tmpfiles
    /// into a scratch root: what they make is what Ignition would have.
    #[test]
    fn tmpfiles_lines_work_with_systemd_tmpfiles() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        // Owners by id: the ids of whoever runs the test, so no root is needed.
        let me = std::fs::metadata(d.path()).expect("stat");
        let (uid, gid) = (me.uid(), me.gid());
        let (c, _) = one(&format!(
            r#""storage": {{"directories": [
                {{"path": "/var/lib/app/cache", "mode": 448, "user": {{"id": {uid}}}, "group": {{"id": {gid}}}}},
                {{"path": "/var/odd dir/100%"}}],
              "links": [
                {{"path": "/etc/app/current", "target": "/var/lib/app/releases/1 2%"}},
                {{"path": "/var/lib/app/latest", "target": "cache", "overwrite": true}}]}}"#
        ));
        let conf = d.path().join("ignition.conf");
        std::fs::write(&conf, &c.files[0].contents).expect("write");
        let out = std::process::Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", root.display()))
            .arg(&conf)
            .output()
            .expect("systemd-tmpfiles (Debian package systemd) is needed by this test");
        assert!(
            out.status.success(),
            "systemd-tmpfiles refused {}: {}",
            String::from_utf8_lossy(&c.files[0].contents),
            String::from_utf8_lossy(&out.stderr)
        );
        let cache = std::fs::metadata(root.join("var/lib/app/cache")).expect("cache");
        assert!(cache.is_dir());
        assert_eq!(cache.permissions().mode() & 0o7777, 0o700);
        assert_eq!((cache.uid(), cache.gid()), (uid, gid));
        let odd = std::fs::metadata(root.join("var/odd dir/100%")).expect("odd dir");
        assert_eq!(odd.permissions().mode() & 0o7777, 0o755);
        let link = |p: &str| std::fs::read_link(root.join(p)).expect("link");
        assert_eq!(
            link("etc/app/current"),
            Path::new("/var/lib/app/releases/1 2%")
        );
        assert_eq!(link("var/lib/app/latest"), Path::new("cache"));
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; MAX_SIZE + 1]).expect("gzip");
        let bomb = gz.finish().expect("gzip");
        assert!(bomb.len() < 8192);
        let e = gunzip(&bomb).expect_err("too big");
        assert!(e.contains("more than"), "{e}");
        assert_eq!(tmpfiles_path("/var/a b%\"\\"), r#""/var/a b%%\"\\""#);
    }
}
