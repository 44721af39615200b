//! Convergence of the paths cairn-config manages from the host config
//! (`[[files]]`, `[[units]]`, `[network]`, `[sysctl]`, `kernel_modules`,
//! `timezone`, sudo rules): the wanted state of each path is compared with
//! what is there, and only a difference is written; a path a previous config
//! wanted and this one does not is put back as it was before Cairn first
//! touched it.
//!
//! # The record of owned paths
//! `/var/lib/cairn/host-config/owned.json` ([`OWNED`]) lists every path
//! Cairn changed, with what was there before: nothing (`absent`: the path is
//! removed again), a file (`file`: a copy is kept under [`BACKUP_DIR`] and
//! put back, mode and owner included), or a symbolic link (`link`: made
//! again). A path Cairn did not change is never in the record, so it is
//! never removed or rewritten when the config stops naming it; a path that
//! already was as wanted is not claimed either.
//!
//! The record (and any backup) is written durably *before* a path is
//! changed, and trimmed after a path is put back: a power cut in between
//! leaves a record that is a superset of the truth, and putting back a path
//! that already is as before only trims the record.
//!
//! A run that finds everything as wanted writes nothing, not even the
//! record.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The record of owned paths, on ROOT.
pub const OWNED: &str = "var/lib/cairn/host-config/owned.json";
/// Copies of files Cairn replaced, at `<BACKUP_DIR>/<absolute path>`.
pub const BACKUP_DIR: &str = "var/lib/cairn/host-config/backup";

/// The wanted state of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    File {
        bytes: Vec<u8>,
        mode: u32,
        owner: (u32, u32),
    },
    /// A symbolic link with this target.
    Link(String),
    Absent,
    /// Left as it is, neither written nor put back: its section could not
    /// be applied this time (the error says why), so the last applied
    /// state stays.
    Keep,
}

/// Every managed path (absolute) this config wants, and which part of the
/// config wants it (for messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub paths: BTreeMap<String, (Want, String)>,
}

impl Desired {
    /// Adds a path; two parts of the config wanting one path differently is
    /// an error (the first stays).
    pub fn want(&mut self, path: &str, want: Want, what: &str) -> Result<(), String> {
        match self.paths.get(path) {
            Some((w, by)) if *w != want => Err(format!(
                "{path}: wanted by {by} and by {what} differently; {what} is not applied"
            )),
            Some(_) => Ok(()),
            None => {
                self.paths
                    .insert(path.to_string(), (want, what.to_string()));
                Ok(())
            }
        }
    }

    pub fn keep(&mut self, path: &str, what: &str) {
        self.paths
            .insert(path.to_string(), (Want::Keep, what.to_string()));
    }
}

/// What was at a path before Cairn first changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "before", rename_all = "lowercase")]
pub enum Before {
    Absent,
    /// Its copy is under [`BACKUP_DIR`].
    File,
    Link {
        target: String,
    },
}

/// The record: owned paths, and the supplementary groups Cairn added users
/// to (`[[users]] groups`), which are removed again the same way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    #[serde(default)]
    pub paths: BTreeMap<String, Before>,
    #[serde(default)]
    pub memberships: BTreeMap<String, BTreeSet<String>>,
}

impl Owned {
    fn file(root: &Path) -> PathBuf {
        root.join(OWNED)
    }

    /// The record under `root`; none yet is empty. A record that cannot be
    /// read is an error (nothing is converged: the record must not be
    /// overwritten). One that is not valid JSON is moved aside
    /// (`owned.json.bad`) and a warning returned with an empty record: what
    /// it listed is then left in place, never removed by guess.
    pub fn load(root: &Path) -> Result<(Owned, Option<String>), String> {
        let path = Self::file(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Owned::default(), None));
            }
            Err(e) => return Err(format!("cannot read /{OWNED}: {e}")),
        };
        match serde_json::from_str(&text) {
            Ok(o) => Ok((o, None)),
            Err(e) => {
                let aside = path.with_extension("json.bad");
                let moved = std::fs::rename(&path, &aside).is_ok();
                Ok((
                    Owned::default(),
                    Some(format!(
                        "/{OWNED} is not valid ({e}){}; the paths it listed are left as they are",
                        if moved { ", moved aside" } else { "" }
                    )),
                ))
            }
        }
    }

    fn text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Writes the record durably when it differs from the file (an empty
    /// record and no file are the same). Returns whether it wrote.
    pub fn save(&self, root: &Path) -> Result<bool> {
        let path = Self::file(root);
        let old = std::fs::read_to_string(&path).ok();
        let new = self.text();
        let empty = self.paths.is_empty() && self.memberships.is_empty();
        if old.as_deref() == Some(new.as_str()) || (old.is_none() && empty) {
            return Ok(false);
        }
        let opts = durable_file::Options {
            create_parents: true,
            ..durable_file::Options::new(0o600)
        };
        durable_file::write(&path, new.as_bytes(), opts)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(true)
    }
}

/// What is at a path now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Current {
    Absent,
    File {
        bytes: Vec<u8>,
        mode: u32,
        owner: (u32, u32),
    },
    Link(String),
    /// A directory or a special file: never replaced or removed.
    Other,
}

fn current(p: &Path) -> Result<Current> {
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::Absent),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", p.display())),
    };
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(p).with_context(|| format!("cannot read {}", p.display()))?;
        return Ok(Current::Link(t.to_string_lossy().into_owned()));
    }
    if !m.is_file() {
        return Ok(Current::Other);
    }
    Ok(Current::File {
        bytes: std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        mode: m.mode() & 0o7777,
        owner: (m.uid(), m.gid()),
    })
}

fn matches(want: &Want, cur: &Current) -> bool {
    match (want, cur) {
        (
            Want::File { bytes, mode, owner },
            Current::File {
                bytes: b,
                mode: m,
                owner: o,
            },
        ) => bytes == b && mode == m && owner == o,
        (Want::Link(t), Current::Link(c)) => t == c,
        (Want::Absent, Current::Absent) => true,
        _ => false,
    }
}

fn before_matches(before: &Before, cur: &Current, backup: &Path) -> bool {
    match (before, cur) {
        (Before::Absent, Current::Absent) => true,
        (Before::Link { target }, Current::Link(c)) => target == c,
        (Before::File, Current::File { .. }) => current(backup).is_ok_and(|b| b == *cur),
        _ => false,
    }
}

/// Under `root`, the host path `abs` (absolute).
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn backup_of(root: &Path, abs: &str) -> PathBuf {
    root.join(BACKUP_DIR).join(abs.trim_start_matches('/'))
}

/// No existing ancestor of `abs` below `root` is a symbolic link: we run as
/// root and write only where the path says (`/var/run` → `/run` is refused).
fn check_parents(root: &Path, abs: &str) -> Result<()> {
    let rel = Path::new(abs.trim_start_matches('/'));
    let mut p = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!(
                    "{} is a symbolic link; not followed",
                    Path::new("/")
                        .join(p.strip_prefix(root).unwrap_or(&p))
                        .display()
                )
            }
            Ok(m) if !m.is_dir() => bail!("{} is not a directory", p.display()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn write_file(p: &Path, bytes: &[u8], mode: u32, owner: (u32, u32)) -> Result<()> {
    let opts = durable_file::Options {
        owner: Some(owner),
        create_parents: true,
        ..durable_file::Options::new(mode)
    };
    durable_file::write(p, bytes, opts).with_context(|| format!("cannot write {}", p.display()))
}

fn make_link(p: &Path, target: &str) -> Result<()> {
    let dir = p.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = p.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.cairn-tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("cannot replace {}", p.display()))?;
    durable_file::sync_dir(dir)?;
    Ok(())
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
    if let Some(dir) = p.parent() {
        durable_file::sync_dir(dir)?;
    }
    Ok(())
}

fn set(p: &Path, want: &Want) -> Result<()> {
    match want {
        Want::File { bytes, mode, owner } => write_file(p, bytes, *mode, *owner),
        Want::Link(t) => make_link(p, t),
        Want::Absent => remove(p),
        Want::Keep => Ok(()),
    }
}

/// One change made to a managed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Wrote,
    Linked,
    Removed,
    /// Put back as it was before Cairn changed it.
    Restored,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.action {
            Action::Wrote => "wrote",
            Action::Linked => "linked",
            Action::Removed => "removed",
            Action::Restored => "restored",
        };
        write!(f, "{verb} {}", self.path)
    }
}

enum Step {
    Set(String, Want),
    Restore(String, Before),
    /// Already as before: only the record is trimmed.
    Forget(String),
}

/// Brings the managed paths under `root` to `desired`, using and updating
/// `owned`. Returns the changes made and the errors (a failing path does
/// not stop the others).
pub fn converge(root: &Path, owned: &mut Owned, desired: &Desired) -> (Vec<Change>, Vec<String>) {
    let mut errors = Vec::new();
    let mut steps = Vec::new();
    let mut claims: BTreeMap<String, (Before, Option<Current>)> = BTreeMap::new();
    for (path, (want, what)) in &desired.paths {
        if *want == Want::Keep {
            continue;
        }
        let p = under(root, path);
        let cur = match check_parents(root, path).and_then(|()| current(&p)) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{what}: {e:#}"));
                continue;
            }
        };
        if matches(want, &cur) {
            continue;
        }
        if !owned.paths.contains_key(path) {
            let before = match &cur {
                Current::Absent => Before::Absent,
                Current::File { .. } => Before::File,
                Current::Link(t) => Before::Link { target: t.clone() },
                Current::Other => {
                    errors.push(format!(
                        "{what}: {path} is a directory or a special file; not replaced"
                    ));
                    continue;
                }
            };
            let copy = matches!(before, Before::File).then_some(cur);
            claims.insert(path.clone(), (before, copy));
        }
        steps.push(Step::Set(path.clone(), want.clone()));
    }
    for (path, before) in &owned.paths {
        if desired.paths.contains_key(path) {
            continue;
        }
        let p = under(root, path);
        match current(&p) {
            Ok(cur) if before_matches(before, &cur, &backup_of(root, path)) => {
                steps.push(Step::Forget(path.clone()));
            }
            Ok(Current::Other) => errors.push(format!(
                "{path} is now a directory or a special file; not put back"
            )),
            Ok(_) => steps.push(Step::Restore(path.clone(), before.clone())),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if steps.is_empty() {
        return (Vec::new(), errors);
    }
    // Intent first: backups, then the record naming them.
    for (path, (before, copy)) in &claims {
        if let (Before::File, Some(Current::File { bytes, mode, owner })) = (before, copy)
            && let Err(e) = write_file(&backup_of(root, path), bytes, *mode, *owner)
        {
            errors.push(format!("{path}: cannot keep a copy, not changed: {e:#}"));
            steps.retain(|s| !matches!(s, Step::Set(p, _) if p == path));
            continue;
        }
        owned.paths.insert(path.clone(), before.clone());
    }
    if let Err(e) = owned.save(root) {
        errors.push(format!("{e:#}; nothing changed"));
        for path in claims.keys() {
            owned.paths.remove(path);
        }
        return (Vec::new(), errors);
    }
    let mut changes = Vec::new();
    for step in steps {
        match step {
            Step::Set(path, want) => {
                let action = match want {
                    Want::File { .. } => Action::Wrote,
                    Want::Link(_) => Action::Linked,
                    _ => Action::Removed,
                };
                match set(&under(root, &path), &want) {
                    Ok(()) => changes.push(Change { path, action }),
                    Err(e) => errors.push(format!("{}: {e:#}", desired.paths[&path].1)),
                }
            }
            Step::Restore(path, before) => {
                let p = under(root, &path);
                let backup = backup_of(root, &path);
                let r = match &before {
                    Before::Absent => remove(&p),
                    Before::Link { target } => make_link(&p, target),
                    Before::File => current(&backup).and_then(|c| match c {
                        Current::File { bytes, mode, owner } => write_file(&p, &bytes, mode, owner),
                        _ => bail!("the copy {} is gone; left as it is", backup.display()),
                    }),
                };
                match r {
                    Ok(()) => {
                        let action = if before == Before::Absent {
                            Action::Removed
                        } else {
                            Action::Restored
                        };
                        changes.push(Change {
                            path: path.clone(),
                            action,
                        });
                        owned.paths.remove(&path);
                        let _ = std::fs::remove_file(&backup);
                    }
                    Err(e) => {
                        errors.push(format!("{path}: {e:#}"));
                        // A missing copy can never be put back.
                        if before == Before::File && !backup.exists() {
                            owned.paths.remove(&path);
                        }
                    }
                }
            }
            Step::Forget(path) => {
                owned.paths.remove(&path);
                let _ = std::fs::remove_file(backup_of(root, &path));
            }
        }
    }
    if let Err(e) = owned.save(root) {
        errors.push(format!("{e:#}"));
    }
    (changes, errors)
}

/// The supplementary groups of `user` in /etc/group text.
pub fn groups_of(group_text: &str, user: &str) -> BTreeSet<String> {
    group_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user)).then(|| f[0].to_string())
        })
        .collect()
}

/// The gid of `name` in /etc/group text.
pub fn gid_of(group_text: &str, name: &str) -> Option<u32> {
    group_text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// How a user's supplementary groups change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Groups to add the user to (they exist).
    pub add: Vec<String>,
    /// Groups Cairn added the user to that the config no longer lists.
    pub remove: Vec<String>,
    /// Listed groups that do not exist.
    pub missing: Vec<String>,
    /// What Cairn will have added once done (the record's new entry).
    pub claimed: BTreeSet<String>,
}

impl Membership {
    /// The complete supplementary list for `usermod -G`, if anything changes.
    pub fn new_list(&self, have: &BTreeSet<String>) -> Option<Vec<String>> {
        if self.add.is_empty() && self.remove.is_empty() {
            return None;
        }
        let mut l: BTreeSet<String> = have.clone();
        l.extend(self.add.iter().cloned());
        for r in &self.remove {
            l.remove(r);
        }
        Some(l.into_iter().collect())
    }
}

/// Plans `user`'s groups: `wanted` from the config, `added` what Cairn
/// added before. A membership Cairn did not add is never removed.
pub fn membership(
    group_text: &str,
    user: &str,
    wanted: &[String],
    added: &BTreeSet<String>,
) -> Membership {
    let have = groups_of(group_text, user);
    let mut m = Membership::default();
    for g in wanted {
        if gid_of(group_text, g).is_none() {
            m.missing.push(g.clone());
        } else if !have.contains(g) {
            m.add.push(g.clone());
            m.claimed.insert(g.clone());
        } else if added.contains(g) {
            m.claimed.insert(g.clone());
        }
    }
    for g in added {
        if wanted.contains(g) {
            // Still wanted (or missing now: keep the claim for later).
            if m.missing.contains(g) {
                m.claimed.insert(g.clone());
            }
        } else if have.contains(g) {
            m.remove.push(g.clone());
        }
    }
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn mode_of(p: &Path) -> Option<u32> {
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    fn me() -> (u32, u32) {
        let m = std::fs::metadata("/proc/self").expect("proc");
        (m.uid(), m.gid())
    }

    fn file(text: &str) -> Want {
        Want::File {
            bytes: text.as_bytes().to_vec(),
            mode: 0o644,
            owner: me(),
        }
    }

    fn desired(list: &[(&str, Want)]) -> Desired {
        let mut d = Desired::default();
        for (p, w) in list {
            d.want(p, w.clone(), "test").expect("no conflict");
        }
        d
    }

    /// (path, inode, mtime) of everything under `root`: any write shows.
    pub(crate) fn snapshot(root: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).expect("meta");
                if m.is_dir() {
                    stack.push(p.clone());
                }
                out.push((p, m.ino(), m.mtime(), m.mtime_nsec()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn converges_and_puts_back() -> Result<()> {
        let d = tempfile::tempdir()?;
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/ssh"))?;
        std::fs::write(root.join("etc/ssh/sshd_config"), "factory\n")?;
        std::fs::set_permissions(
            root.join("etc/ssh/sshd_config"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        std::fs::write(root.join("etc/same"), "same\n")?;
        std::fs::set_permissions(
            root.join("etc/same"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        std::os::unix::fs::symlink("/usr/lib/x.service", root.join("etc/factory-link"))?;
        std::fs::write(root.join("etc/victim"), "v\n")?;
        let a = desired(&[
            ("/etc/new/a.conf", file("a\n")),
            ("/etc/ssh/sshd_config", file("mine\n")),
            ("/etc/same", file("same\n")),
            ("/etc/factory-link", Want::Absent),
            ("/etc/l", Want::Link("/dev/null".into())),
        ]);
        let mut owned = Owned::load(root).expect("load").0;
        let (changes, errors) = converge(root, &mut owned, &a);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "removed /etc/factory-link",
                "linked /etc/l",
                "wrote /etc/new/a.conf",
                "wrote /etc/ssh/sshd_config"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/ssh/sshd_config"))?,
            "mine\n"
        );
        assert_eq!(mode_of(&root.join("etc/ssh/sshd_config")), Some(0o644));
        assert_eq!(
            std::fs::read_link(root.join("etc/l"))?,
            Path::new("/dev/null")
        );
        // Already as wanted: not claimed.
        assert!(!owned.paths.contains_key("/etc/same"));
        assert_eq!(owned.paths["/etc/ssh/sshd_config"], Before::File);
        assert_eq!(owned.paths["/etc/new/a.conf"], Before::Absent);
        assert_eq!(
            owned.paths["/etc/factory-link"],
            Before::Link {
                target: "/usr/lib/x.service".into()
            }
        );
        assert_eq!(Owned::load(root), Ok((owned.clone(), None)));
        // Unchanged: nothing is written, not even the record.
        let snap = snapshot(root);
        let (changes, errors) = converge(root, &mut Owned::load(root).expect("load").0, &a);
        assert!(
            changes.is_empty() && errors.is_empty(),
            "{changes:?} {errors:?}"
        );
        assert_eq!(snapshot(root), snap);
        // A hand edit of an owned file is put back.
        std::fs::write(root.join("etc/new/a.conf"), "edited\n")?;
        let (changes, _) = converge(root, &mut owned, &a);
        assert_eq!(changes.len(), 1);
        assert_eq!(std::fs::read_to_string(root.join("etc/new/a.conf"))?, "a\n");
        // B names none of them: each is put back as it was, the rest untouched.
        let b = desired(&[]);
        let (changes, errors) = converge(root, &mut owned, &b);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "restored /etc/factory-link",
                "removed /etc/l",
                "removed /etc/new/a.conf",
                "restored /etc/ssh/sshd_config"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/ssh/sshd_config"))?,
            "factory\n"
        );
        assert_eq!(mode_of(&root.join("etc/ssh/sshd_config")), Some(0o600));
        assert_eq!(
            std::fs::read_link(root.join("etc/factory-link"))?,
            Path::new("/usr/lib/x.service")
        );
        assert!(!root.join("etc/new/a.conf").exists() && !root.join("etc/l").exists());
        assert!(root.join("etc/same").exists() && root.join("etc/victim").exists());
        assert!(owned.paths.is_empty());
        assert!(!root.join(BACKUP_DIR).join("etc/ssh/sshd_config").exists());
        let snap = snapshot(root);
        assert_eq!(converge(root, &mut owned, &b), (Vec::new(), Vec::new()));
        assert_eq!(snapshot(root), snap);
        Ok(())
    }

    #[test]
    fn keep_and_refusals() -> Result<()> {
        let d = tempfile::tempdir()?;
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/dir"))?;
        std::fs::create_dir_all(root.join("real"))?;
        std::os::unix::fs::symlink("../real", root.join("etc/sneaky"))?;
        let mut owned = Owned::default();
        let (changes, _) = converge(root, &mut owned, &desired(&[("/etc/k", file("1\n"))]));
        assert_eq!(changes.len(), 1);
        // Keep: an owned path is neither rewritten nor put back.
        let mut keep = Desired::default();
        keep.keep("/etc/k", "test");
        assert_eq!(converge(root, &mut owned, &keep), (Vec::new(), Vec::new()));
        assert!(root.join("etc/k").exists());
        let (changes, errors) = converge(
            root,
            &mut owned,
            &desired(&[
                ("/etc/dir", file("x")),
                ("/etc/sneaky/x", file("x")),
                ("/etc/k", file("1\n")),
            ]),
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("directory"), "{errors:?}");
        assert!(
            errors[1].contains("/etc/sneaky is a symbolic link"),
            "{errors:?}"
        );
        assert!(!root.join("real/x").exists());
        // Conflicting wants.
        let mut c = Desired::default();
        c.want("/etc/x", file("a"), "one").expect("first");
        assert!(c.want("/etc/x", file("b"), "two").is_err());
        assert!(c.want("/etc/x", file("a"), "three").is_ok());
        // A bad record is moved aside; nothing it listed is touched.
        std::fs::write(root.join(OWNED), "{")?;
        let (o, e) = Owned::load(root).expect("load");
        assert_eq!(o, Owned::default());
        assert!(e.is_some_and(|e| e.contains("moved aside")));
        Ok(())
    }

    #[test]
    fn memberships() {
        let g = "root:x:0:\nadm:x:4:syslog,ops\ndeploy:x:2000:\ndocker:x:2001:ops\nsudo:x:27:\n";
        assert_eq!(
            groups_of(g, "ops"),
            BTreeSet::from(["adm".into(), "docker".into()])
        );
        assert_eq!(gid_of(g, "deploy"), Some(2000));
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        // First: deploy is added and claimed; adm was there (not claimed);
        // wheel does not exist.
        let m = membership(g, "ops", &strs(&["deploy", "adm", "wheel"]), &set(&[]));
        assert_eq!(m.add, ["deploy"]);
        assert_eq!(m.missing, ["wheel"]);
        assert_eq!(m.claimed, set(&["deploy"]));
        assert_eq!(
            m.new_list(&groups_of(g, "ops")),
            Some(strs(&["adm", "deploy", "docker"]))
        );
        // Then the config drops deploy and adm: only deploy (ours) goes.
        let g2 = "root:x:0:\nadm:x:4:syslog,ops\ndeploy:x:2000:ops\ndocker:x:2001:ops\n";
        let m = membership(g2, "ops", &[], &set(&["deploy"]));
        assert_eq!(m.remove, ["deploy"]);
        assert!(m.claimed.is_empty());
        assert_eq!(
            m.new_list(&groups_of(g2, "ops")),
            Some(strs(&["adm", "docker"]))
        );
        // Unchanged: nothing to do.
        let m = membership(g2, "ops", &strs(&["deploy"]), &set(&["deploy"]));
        assert_eq!(m.new_list(&groups_of(g2, "ops")), None);
        assert_eq!(m.claimed, set(&["deploy"]));
    }
}
