//! Applying the sections of the host config that become files, links and
//! kernel state: `[[groups]]` and `[[users]] groups` (shadow tools),
//! `[network]`, `[[files]]`, `[[units]]`, `[sysctl]`, `kernel_modules`,
//! `timezone` and `[[users]] sudo`.
//!
//! [`System::desired`] turns the config into the wanted state of every
//! managed path (pure but for reading the image: unit files, zoneinfo,
//! /etc/passwd for owners); [`crate::converge`] brings the paths there and
//! puts back what a previous config wanted and this one does not.
//! [`System::managed`] then makes the running system follow, only when
//! `live` (the tests use a scratch root and run nothing): `modprobe`,
//! /proc/sys, `networkctl reload`, `systemctl daemon-reload` and the units'
//! start, stop and restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use host_config::config::HostConfig;
use host_config::system::{Group, sysctl_proc_path};
use host_config::units::{UNIT_DIR, Unit, is_template, parse_install};

use crate::apply::{System, parse_passwd};
use crate::converge::{self, Action, Change, Desired, Owned, Want};
use crate::render;

/// Where unit files are looked up for `enabled`, in systemd's order.
const UNIT_SEARCH: &[&str] = &[UNIT_DIR, "/usr/lib/systemd/system"];
/// Link directories `systemctl disable` cleans.
const LINK_DIRS: &[&str] = &[".wants", ".requires", ".upholds"];

/// The paths of one `[[units]]` entry, to decide what the running systemd
/// must do after they change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitPaths {
    /// The name to start or stop: the entry's, or a template's default
    /// instance.
    pub unit: String,
    /// The unit file or mask link, and the drop-ins.
    pub own: Vec<String>,
    /// Links of [Install] (made for `enabled = true`, removed for `false`).
    pub links: Vec<String>,
    pub enabled: Option<bool>,
    pub mask: bool,
}

/// What the running systemd is asked to do after the unit files changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitActions {
    pub stop: Vec<String>,
    pub restart: Vec<String>,
    pub try_restart: Vec<String>,
    pub start: Vec<String>,
}

/// The unit a path under /etc/systemd/system is about, and whether it is a
/// drop-in.
fn unit_of_path(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix(UNIT_DIR)?.strip_prefix('/')?;
    let (dir, name) = match rest.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, rest),
    };
    match dir {
        Some(d) if d.ends_with(".d") => Some((d.trim_end_matches(".d").to_string(), true)),
        _ => Some((name.to_string(), false)),
    }
}

/// Decides the unit actions from the changes made (pure).
pub fn unit_actions(units: &[UnitPaths], changes: &[Change]) -> UnitActions {
    let changed: BTreeSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    let any = |v: &[String]| v.iter().any(|p| changed.contains(p.as_str()));
    let mut a = UnitActions::default();
    let mut claimed = BTreeSet::new();
    for u in units {
        claimed.extend(u.own.iter().chain(&u.links).map(String::as_str));
        let (own, links) = (any(&u.own), any(&u.links));
        let list = if u.mask && own {
            &mut a.stop
        } else if u.enabled == Some(true) && links {
            if own { &mut a.restart } else { &mut a.start }
        } else if u.enabled == Some(false) && links {
            &mut a.stop
        } else if own {
            &mut a.try_restart
        } else {
            continue;
        };
        list.push(u.unit.clone());
    }
    // Paths of entries the config no longer has: their units stop, or
    // restart without the drop-in.
    for c in changes {
        if claimed.contains(c.path.as_str())
            || !matches!(c.action, Action::Removed | Action::Restored)
        {
            continue;
        }
        if let Some((unit, dropin)) = unit_of_path(&c.path) {
            let list = if dropin {
                &mut a.try_restart
            } else {
                &mut a.stop
            };
            if !list.contains(&unit) {
                list.push(unit);
            }
        }
    }
    // Never this service itself, which is running this.
    for l in [
        &mut a.stop,
        &mut a.restart,
        &mut a.try_restart,
        &mut a.start,
    ] {
        l.retain(|u| u != "cairn-config.service");
    }
    a
}

impl System {
    /// `(uid, gid)` of `user:group` (names or ids) under the root.
    pub fn owner_ids(&self, user: &str, group: &str) -> Result<(u32, u32)> {
        let uid = match user.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let text = std::fs::read_to_string(self.path("/etc/passwd"))
                    .context("cannot read /etc/passwd")?;
                parse_passwd(&text, user)
                    .with_context(|| format!("no user {user:?} in /etc/passwd"))?
                    .uid
            }
        };
        let gid = match group.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let text = std::fs::read_to_string(self.path("/etc/group"))
                    .context("cannot read /etc/group")?;
                converge::gid_of(&text, group)
                    .with_context(|| format!("no group {group:?} in /etc/group"))?
            }
        };
        Ok((uid, gid))
    }

    /// root:root as the root's files say (0:0 on a host).
    fn root_owner(&self) -> (u32, u32) {
        self.owner_ids("root", "root").unwrap_or((0, 0))
    }

    /// Creates the `[[groups]]` that are missing (groupadd). A group that
    /// exists with another gid is an error and left as it is: files may
    /// already belong to its gid.
    pub fn groups(&self, groups: &[Group]) -> (Vec<String>, Vec<String>) {
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        for g in groups {
            let text = std::fs::read_to_string(self.path("/etc/group")).unwrap_or_default();
            match (converge::gid_of(&text, &g.name), g.gid) {
                (Some(have), Some(want)) if have != want => errors.push(format!(
                    "group {}: exists with gid {have}, the config says {want}; not changed",
                    g.name
                )),
                (Some(_), _) => {}
                (None, gid) => {
                    let mut cmd = Command::new("/usr/sbin/groupadd");
                    if let Some(n) = gid {
                        cmd.args(["-g", &n.to_string()]);
                    }
                    cmd.arg("--").arg(&g.name);
                    match self.run(&mut cmd, None) {
                        Ok(()) => done.push(format!("created group {}", g.name)),
                        Err(e) => errors.push(format!("group {}: {e:#}", g.name)),
                    }
                }
            }
        }
        (done, errors)
    }

    /// Adds users to their `groups`, and removes them from the groups Cairn
    /// added them to that the config no longer lists (also for users the
    /// config no longer lists). Other memberships are never touched.
    pub fn memberships(&self, cfg: &HostConfig, owned: &mut Owned) -> (Vec<String>, Vec<String>) {
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        let mut names: BTreeSet<String> = owned.memberships.keys().cloned().collect();
        names.extend(cfg.users.iter().map(|u| u.name.clone()));
        for name in names {
            let wanted: Vec<String> = cfg
                .users
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.groups.clone())
                .unwrap_or_default();
            let text = std::fs::read_to_string(self.path("/etc/group")).unwrap_or_default();
            let added = owned.memberships.get(&name).cloned().unwrap_or_default();
            let plan = converge::membership(&text, &name, &wanted, &added);
            for g in &plan.missing {
                errors.push(format!(
                    "user {name}: group {g:?} does not exist (add it to [[groups]])"
                ));
            }
            let have = converge::groups_of(&text, &name);
            let Some(list) = plan.new_list(&have) else {
                if added != plan.claimed {
                    set_claim(owned, &name, plan.claimed);
                }
                continue;
            };
            // Record the claims before adding, drop them after removing.
            let mut before = added.clone();
            before.extend(plan.add.iter().cloned());
            set_claim(owned, &name, before);
            if let Err(e) = owned.save(&self.root) {
                errors.push(format!("user {name}: groups: {e:#}"));
                continue;
            }
            let exists = std::fs::read_to_string(self.path("/etc/passwd"))
                .ok()
                .and_then(|t| parse_passwd(&t, &name))
                .is_some();
            if !exists {
                // A user that could not be created (or was removed by hand).
                continue;
            }
            match self.run(
                Command::new("/usr/sbin/usermod")
                    .args(["-G", &list.join(","), "--"])
                    .arg(&name),
                None,
            ) {
                Ok(()) => {
                    set_claim(owned, &name, plan.claimed);
                    if !plan.add.is_empty() {
                        done.push(format!("added {name} to {}", plan.add.join(", ")));
                    }
                    if !plan.remove.is_empty() {
                        done.push(format!("removed {name} from {}", plan.remove.join(", ")));
                    }
                }
                Err(e) => errors.push(format!("user {name}: groups: {e:#}")),
            }
        }
        if let Err(e) = owned.save(&self.root) {
            errors.push(format!("groups: {e:#}"));
        }
        (done, errors)
    }

    /// The unit file `name` resolves to (an instance to its template):
    /// its host path and text. `Err` when masked.
    fn find_unit(&self, name: &str) -> Result<Option<(String, String)>> {
        let mut candidates = vec![name.to_string()];
        if let Some((prefix, rest)) = name.split_once('@')
            && let Some((_, ty)) = rest.rsplit_once('.')
            && !is_template(name)
        {
            candidates.push(format!("{prefix}@.{ty}"));
        }
        for c in &candidates {
            for dir in UNIT_SEARCH {
                let host = format!("{dir}/{c}");
                let p = self.path(&host);
                if std::fs::read_link(&p).is_ok_and(|t| t == Path::new("/dev/null")) {
                    bail!("{host} is masked");
                }
                if let Ok(text) = std::fs::read_to_string(&p) {
                    return Ok(Some((host, text)));
                }
            }
        }
        Ok(None)
    }

    /// Existing links named `name` in the .wants/.requires/.upholds
    /// directories of /etc/systemd/system.
    fn enable_links(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.path(UNIT_DIR)) else {
            return out;
        };
        for e in rd.flatten() {
            let dir = e.file_name().to_string_lossy().into_owned();
            if !LINK_DIRS.iter().any(|s| dir.ends_with(s)) {
                continue;
            }
            let host = format!("{UNIT_DIR}/{dir}/{name}");
            if std::fs::symlink_metadata(self.path(&host)).is_ok_and(|m| m.file_type().is_symlink())
            {
                out.push(host);
            }
        }
        out
    }

    /// The wanted paths of one `[[units]]` entry.
    fn unit_wants(&self, u: &Unit, owned: &Owned, d: &mut Desired) -> Result<UnitPaths, String> {
        let what = format!("units {}", u.name);
        let root = self.root_owner();
        let file = |text: &str| Want::File {
            bytes: text.as_bytes().to_vec(),
            mode: 0o644,
            owner: root,
        };
        let unit_file = format!("{UNIT_DIR}/{}", u.name);
        let mut paths = UnitPaths {
            unit: u.name.clone(),
            enabled: u.enabled,
            mask: u.mask,
            ..UnitPaths::default()
        };
        let mut wants: Vec<(String, Want)> = Vec::new();
        if let Some(c) = &u.contents {
            wants.push((unit_file.clone(), file(c)));
        }
        if u.mask {
            wants.push((unit_file.clone(), Want::Link("/dev/null".into())));
        }
        for dr in &u.dropins {
            wants.push((
                format!("{UNIT_DIR}/{}.d/{}", u.name, dr.name),
                file(&dr.contents),
            ));
        }
        paths.own = wants.iter().map(|(p, _)| p.clone()).collect();
        if let Some(enable) = u.enabled {
            let found = match &u.contents {
                Some(c) => Some((unit_file.clone(), c.clone())),
                None => self
                    .find_unit(&u.name)
                    .map_err(|e| format!("{what}: {e:#}"))?,
            };
            let install = match &found {
                Some((_, text)) => parse_install(text).map_err(|e| format!("{what}: {e}"))?,
                None if enable => {
                    return Err(format!(
                        "{what}: no such unit in /etc/systemd/system or /usr/lib/systemd/system (give its contents)"
                    ));
                }
                None => Default::default(),
            };
            let name = if is_template(&u.name) {
                match &install.default_instance {
                    Some(i) => u.name.replacen("@.", &format!("@{i}."), 1),
                    None if enable => {
                        return Err(format!(
                            "{what}: a template needs DefaultInstance= to be enabled; enable an instance instead"
                        ));
                    }
                    None => u.name.clone(),
                }
            } else {
                u.name.clone()
            };
            paths.unit = name.clone();
            let mut links: Vec<String> = install
                .wanted_by
                .iter()
                .map(|t| format!("{UNIT_DIR}/{t}.wants/{name}"))
                .chain(
                    install
                        .required_by
                        .iter()
                        .map(|t| format!("{UNIT_DIR}/{t}.requires/{name}")),
                )
                .chain(install.alias.iter().map(|a| format!("{UNIT_DIR}/{a}")))
                .collect();
            if enable {
                if install.is_empty() {
                    return Err(format!(
                        "{what}: no WantedBy=, RequiredBy= or Alias= in its [Install] section: nothing to enable"
                    ));
                }
                let target = found.map(|(p, _)| p).unwrap_or(unit_file);
                for l in &links {
                    wants.push((l.clone(), Want::Link(target.clone())));
                }
            } else {
                // What `systemctl disable` removes, and what we removed
                // before (so it stays removed).
                links.retain(|l| {
                    std::fs::symlink_metadata(self.path(l))
                        .is_ok_and(|m| m.file_type().is_symlink())
                });
                links.extend(self.enable_links(&name));
                let suffix = format!("/{name}");
                links.extend(
                    owned
                        .paths
                        .keys()
                        .filter(|p| {
                            p.ends_with(&suffix)
                                && p.strip_suffix(&suffix).is_some_and(|d| {
                                    LINK_DIRS.iter().any(|s| d.ends_with(s))
                                        && d.starts_with(UNIT_DIR)
                                })
                        })
                        .cloned(),
                );
                links.sort();
                links.dedup();
                for l in &links {
                    wants.push((l.clone(), Want::Absent));
                }
            }
            paths.links = links;
        }
        for (p, w) in wants {
            d.want(&p, w, &what)?;
        }
        Ok(paths)
    }

    /// The wanted state of every managed path, the units' paths, and the
    /// errors of the parts that cannot be applied (their paths are kept as
    /// they are).
    pub fn desired(
        &self,
        cfg: &HostConfig,
        owned: &Owned,
    ) -> (Desired, Vec<UnitPaths>, Vec<String>) {
        let mut d = Desired::default();
        let mut errors = Vec::new();
        let root = self.root_owner();
        let file = |text: &str, mode: u32| Want::File {
            bytes: text.as_bytes().to_vec(),
            mode,
            owner: root,
        };
        let add = |d: &mut Desired, errors: &mut Vec<String>, p: &str, w: Want, what: &str| {
            if let Err(e) = d.want(p, w, what) {
                errors.push(e);
            }
        };
        if cfg.network_error.0.is_none() {
            for (name, text) in render::network_files(&cfg.network) {
                let p = format!("{}/{name}", render::NETWORK_DIR);
                add(&mut d, &mut errors, &p, file(&text, 0o644), "network");
            }
        }
        for (i, f) in cfg.files.iter().enumerate() {
            let what = format!("files[{i}] {}", f.path);
            let owner = match &f.owner {
                None => Ok(root),
                Some(o) => self.owner_ids(&o.user, &o.group),
            };
            match owner {
                Ok(owner) => add(
                    &mut d,
                    &mut errors,
                    &f.path,
                    Want::File {
                        bytes: f.contents.clone(),
                        mode: f.mode,
                        owner,
                    },
                    &what,
                ),
                Err(e) => {
                    errors.push(format!(
                        "{what}: owner {}: {e:#}; left as it is",
                        f.owner
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ));
                    d.keep(&f.path, &what);
                }
            }
        }
        let mut units = Vec::new();
        for u in &cfg.units {
            let mut ud = Desired::default();
            match self.unit_wants(u, owned, &mut ud) {
                Ok(paths) => {
                    for (p, (w, what)) in ud.paths {
                        add(&mut d, &mut errors, &p, w, &what);
                    }
                    units.push(paths);
                }
                Err(e) => {
                    errors.push(format!("{e}; left as it is"));
                    // Keep what this entry owned: its file, drop-ins, links.
                    let prefix = format!("{UNIT_DIR}/{}", u.name);
                    let suffix = format!("/{}", u.name);
                    for p in owned.paths.keys() {
                        if p.starts_with(&prefix)
                            || (p.starts_with(UNIT_DIR) && p.ends_with(&suffix))
                        {
                            d.keep(p, &u.name);
                        }
                    }
                }
            }
        }
        if let Some(t) = render::sysctl_file(cfg) {
            add(
                &mut d,
                &mut errors,
                render::SYSCTL_FILE,
                file(&t, 0o644),
                "sysctl",
            );
        }
        if let Some(t) = render::modules_file(cfg) {
            add(
                &mut d,
                &mut errors,
                render::MODULES_FILE,
                file(&t, 0o644),
                "kernel_modules",
            );
        }
        let sudo_dir = self.path(render::SUDOERS_DIR).is_dir();
        for u in cfg.users.iter().filter(|u| u.sudo) {
            let (p, t) = render::sudoers(&u.name);
            if sudo_dir {
                add(
                    &mut d,
                    &mut errors,
                    &p,
                    file(&t, 0o440),
                    &format!("user {} sudo", u.name),
                );
            } else {
                errors.push(format!(
                    "user {}: sudo = true, but the image has no sudo ({} is missing): add \"sudo\" to [debian] packages in the board config",
                    u.name,
                    render::SUDOERS_DIR
                ));
                d.keep(&p, "sudo");
            }
        }
        if let Some(z) = &cfg.timezone {
            let zone = self.path(&format!("{}/{z}", render::ZONEINFO));
            if zone.is_file() {
                add(
                    &mut d,
                    &mut errors,
                    render::LOCALTIME,
                    Want::Link(render::localtime_target(z)),
                    "timezone",
                );
            } else if (z == "UTC" || z == "Etc/UTC") && !self.path(render::ZONEINFO).exists() {
                // No zoneinfo at all: no /etc/localtime is UTC.
                add(
                    &mut d,
                    &mut errors,
                    render::LOCALTIME,
                    Want::Absent,
                    "timezone",
                );
            } else {
                errors.push(if self.path(render::ZONEINFO).is_dir() {
                    format!("timezone: {z:?} is not a zone of this image ({}/{z} is missing); left as it is", render::ZONEINFO)
                } else {
                    format!("timezone: the image has no time zones ({} is missing): add \"tzdata\" to [debian] packages in the board config; left as it is", render::ZONEINFO)
                });
                d.keep(render::LOCALTIME, "timezone");
            }
        }
        (d, units, errors)
    }

    /// Whether `argv` exits 0 (live only).
    fn succeeds(&self, argv: &[&str]) -> bool {
        self.live
            && Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Converges the managed paths, then (live) the running system. Returns
    /// the changes made and the errors.
    pub fn managed(&self, cfg: &HostConfig, owned: &mut Owned) -> (Vec<String>, Vec<String>) {
        let (desired, units, mut errors) = self.desired(cfg, owned);
        let (changes, errs) = converge::converge(&self.root, owned, &desired);
        errors.extend(errs);
        let mut done: Vec<String> = changes.iter().map(ToString::to_string).collect();
        if !self.live {
            return (done, errors);
        }
        for m in &cfg.kernel_modules {
            if self
                .path(&format!("/sys/module/{}", m.replace('-', "_")))
                .exists()
            {
                continue;
            }
            match self.run(Command::new("/usr/sbin/modprobe").args(["--", m]), None) {
                Ok(()) => done.push(format!("loaded kernel module {m}")),
                Err(e) => errors.push(format!(
                    "kernel_modules {m}: {e:#} (the image has only the modules of the board config's kernel.modules)"
                )),
            }
        }
        for (k, v) in &cfg.sysctl {
            let p = self.path(&format!("/proc/sys/{}", sysctl_proc_path(k)));
            let have = match std::fs::read_to_string(&p) {
                Ok(h) => h,
                Err(e) => {
                    errors.push(format!(
                        "sysctl {k}: cannot read {}: {e} (a module not loaded yet? list it in kernel_modules)",
                        p.display()
                    ));
                    continue;
                }
            };
            if render::sysctl_normal(&have) == render::sysctl_normal(v) {
                continue;
            }
            match std::fs::write(&p, v) {
                Ok(()) => done.push(format!("set sysctl {k} = {v}")),
                Err(e) => errors.push(format!("sysctl {k} = {v}: {e}")),
            }
        }
        let in_dir = |dir: &str| {
            changes
                .iter()
                .filter(|c| Path::new(&c.path).parent() == Some(Path::new(dir)))
                .collect::<Vec<_>>()
        };
        let net = in_dir(render::NETWORK_DIR);
        // Not running (early boot: we order before it): it reads the files
        // when it starts. `networkctl reload` would start it over D-Bus.
        if !net.is_empty()
            && self.succeeds(&[
                "systemctl",
                "is-active",
                "--quiet",
                "systemd-networkd.service",
            ])
        {
            match self.run(Command::new("networkctl").arg("reload"), None) {
                Ok(()) => {
                    done.push("reloaded the network config (networkctl reload)".into());
                    if net.iter().any(|c| c.path.ends_with(".netdev")) {
                        done.push(
                            "a changed or removed bond or VLAN device is changed at the next boot (networkd does not change existing devices)"
                                .into(),
                        );
                    }
                }
                Err(e) => errors.push(format!("network: {e:#}")),
            }
        }
        if changes
            .iter()
            .any(|c| c.path.starts_with(&format!("{UNIT_DIR}/")))
        {
            match self.run(Command::new("systemctl").arg("daemon-reload"), None) {
                Ok(()) => done.push("reloaded the units (systemctl daemon-reload)".into()),
                Err(e) => errors.push(format!("units: {e:#}")),
            }
            let a = unit_actions(&units, &changes);
            for (verb, list) in [
                ("stop", &a.stop),
                ("try-restart", &a.try_restart),
                ("restart", &a.restart),
                ("start", &a.start),
            ] {
                if list.is_empty() {
                    continue;
                }
                // --no-block: we run early in the boot transaction.
                match self.run(
                    Command::new("systemctl")
                        .args([verb, "--no-block"])
                        .args(list),
                    None,
                ) {
                    Ok(()) => done.push(format!("systemctl {verb} {}", list.join(" "))),
                    Err(e) => errors.push(format!("units: {e:#}")),
                }
            }
        }
        (done, errors)
    }
}

fn set_claim(owned: &mut Owned, name: &str, claimed: BTreeSet<String>) {
    if claimed.is_empty() {
        owned.memberships.remove(name);
    } else {
        owned.memberships.insert(name.to_string(), claimed);
    }
}

#[cfg(test)]
mod tests;
