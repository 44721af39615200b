//! Applying a host config to a system rooted at `root`.
//!
//! Users are created and passwords set with the image's shadow tools
//! (`useradd`, `chpasswd -e`): they take the locks, keep /etc/passwd,
//! /etc/shadow and /etc/group consistent and honour login.defs, which a
//! hand-written editor would have to re-implement. Everything is compared
//! first and only written when it differs, so a reboot with the same config
//! changes nothing in the persistent /etc overlay.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use app_units::units;

use crate::converge::Owned;
use disk_layout::etc as paths;
use host_config::apps::Containers;
use host_config::config::{HostConfig, User};

/// Marks an authorized_keys file as ours: it is rewritten from the config
/// and removed when the config no longer lists keys for the user, so a key
/// taken out of the config stops working.
pub const MANAGED_HEADER: &str =
    "# Managed by cairn-config from the host config; local edits are overwritten.";

/// What the system looks like to `apply` (the tests use a scratch root and
/// no tools).
pub struct System {
    pub root: PathBuf,
    /// Run the shadow tools, sethostname and systemctl (the real host).
    pub live: bool,
}

/// One /etc/passwd line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PwEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn parse_passwd(text: &str, name: &str) -> Option<PwEntry> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(PwEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(f[5]),
        })
    })
}

pub fn shadow_hash(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.next().unwrap_or("").to_string())
    })
}

/// /etc/hosts with the Debian `127.0.1.1 <hostname>` line set to `host`
/// (added if missing), other lines untouched.
pub fn hosts_with(text: &str, host: &str) -> String {
    let line = format!("127.0.1.1\t{host}");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some("127.0.1.1") {
                found = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// The authorized_keys contents for `keys`.
pub fn authorized_keys_text(keys: &[String]) -> String {
    let mut s = format!("{MANAGED_HEADER}\n");
    for k in keys {
        s.push_str(k.trim());
        s.push('\n');
    }
    s
}

impl System {
    pub(crate) fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Writes `text` to `path` crash-safely, so a crash never leaves a
    /// half-written file in the persistent /etc.
    fn write_file(path: &Path, text: &str, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
        let opts = durable_file::Options {
            owner,
            ..durable_file::Options::new(mode)
        };
        Ok(durable_file::write(path, text.as_bytes(), opts)?)
    }

    /// Returns whether anything changed.
    pub fn hostname(&self, host: &str) -> Result<bool> {
        let mut changed = false;
        let etc_hostname = self.path("/etc/hostname");
        let want = format!("{host}\n");
        if std::fs::read_to_string(&etc_hostname).ok().as_deref() != Some(want.as_str()) {
            Self::write_file(&etc_hostname, &want, 0o644, None)?;
            changed = true;
        }
        let hosts = self.path("/etc/hosts");
        let old = std::fs::read_to_string(&hosts).unwrap_or_default();
        let new = hosts_with(&old, host);
        if new != old {
            Self::write_file(&hosts, &new, 0o644, None)?;
            changed = true;
        }
        if self.live {
            // sethostname(2) without a libc binding: the sysctl file is the
            // same call. systemd read /etc/hostname before we ran.
            std::fs::write("/proc/sys/kernel/hostname", host)
                .context("cannot set the running host name")?;
        }
        Ok(changed)
    }

    fn passwd_entry(&self, name: &str) -> Result<Option<PwEntry>> {
        let text =
            std::fs::read_to_string(self.path("/etc/passwd")).context("cannot read /etc/passwd")?;
        Ok(parse_passwd(&text, name))
    }

    pub(crate) fn run(&self, cmd: &mut Command, stdin: Option<&str>) -> Result<()> {
        let what = format!("{cmd:?}");
        if !self.live {
            bail!("not live: would run {what}");
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .with_context(|| format!("cannot feed {what}"))?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("{what} failed ({}): {}", out.status, err.trim());
        }
        Ok(())
    }

    /// Creates the user if missing and sets the password hash if it
    /// differs. Returns a description of each change.
    pub fn user(&self, u: &User) -> Result<Vec<String>> {
        let mut done = Vec::new();
        if self.passwd_entry(&u.name)?.is_none() {
            // -U: a group of the same name; -m: home from /etc/skel.
            self.run(
                Command::new("/usr/sbin/useradd")
                    .args(["-m", "-U", "-s", "/bin/bash", "--"])
                    .arg(&u.name),
                None,
            )?;
            done.push(format!("created user {}", u.name));
        }
        if let Some(hash) = &u.password_hash {
            let shadow = std::fs::read_to_string(self.path("/etc/shadow"))
                .context("cannot read /etc/shadow")?;
            if shadow_hash(&shadow, &u.name).as_deref() != Some(hash.as_str()) {
                // -e: the hash is stored as given; on stdin, so it never
                // appears in a process listing. Validation ruled out ':'
                // and newlines.
                self.run(
                    Command::new("/usr/sbin/chpasswd").arg("-e"),
                    Some(&format!("{}:{hash}\n", u.name)),
                )?;
                done.push(format!("set the password of {}", u.name));
            }
        }
        if let Some(c) = self.authorized_keys(u)? {
            done.push(c);
        }
        Ok(done)
    }

    /// Writes (or removes our) ~/.ssh/authorized_keys.
    pub fn authorized_keys(&self, u: &User) -> Result<Option<String>> {
        let pw = self
            .passwd_entry(&u.name)?
            .with_context(|| format!("user {} has no /etc/passwd entry", u.name))?;
        let home = self.path(&pw.home.to_string_lossy());
        let ssh = home.join(".ssh");
        let file = ssh.join("authorized_keys");
        let existing = std::fs::read_to_string(&file).ok();
        if u.ssh_authorized_keys.is_empty() {
            if existing.is_some_and(|t| t.starts_with(MANAGED_HEADER)) {
                std::fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
                return Ok(Some(format!("removed the SSH keys of {}", u.name)));
            }
            return Ok(None);
        }
        let want = authorized_keys_text(&u.ssh_authorized_keys);
        let owner = (pw.uid, pw.gid);
        // Never follow a symlink planted in the user's home: we run as root.
        for d in [&home, &ssh] {
            if let Ok(m) = std::fs::symlink_metadata(d)
                && !m.is_dir()
            {
                bail!("{} is not a directory", d.display());
            }
        }
        if !home.exists() {
            std::fs::create_dir_all(&home)?;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
            std::os::unix::fs::chown(&home, Some(owner.0), Some(owner.1))?;
        }
        if !ssh.exists() {
            std::fs::create_dir(&ssh)
                .with_context(|| format!("cannot create {}", ssh.display()))?;
        }
        let m = std::fs::metadata(&ssh)?;
        if m.mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
        }
        if (m.uid(), m.gid()) != owner {
            std::os::unix::fs::chown(&ssh, Some(owner.0), Some(owner.1))?;
        }
        let file_ok = std::fs::symlink_metadata(&file).is_ok_and(|m| {
            m.is_file() && m.mode() & 0o7777 == 0o600 && (m.uid(), m.gid()) == owner
        });
        if existing.as_deref() == Some(want.as_str()) && file_ok {
            return Ok(None);
        }
        Self::write_file(&file, &want, 0o600, Some(owner))?;
        Ok(Some(format!(
            "wrote {} SSH key(s) for {}",
            u.ssh_authorized_keys.len(),
            u.name
        )))
    }

    /// sshd runs only when some user has keys. The enable is `--runtime`
    /// (under /run): the config decides on every boot, and nothing stale
    /// stays enabled when keys are removed. `--no-block`: we run before
    /// ssh.service in the boot transaction, so waiting would deadlock.
    pub fn ssh(&self, wanted: bool) -> Result<Option<String>> {
        if !wanted || !self.live {
            return Ok(None);
        }
        self.run(
            Command::new("systemctl").args(["enable", "--runtime", "--no-reload", "ssh.service"]),
            None,
        )?;
        self.run(
            Command::new("systemctl").args(["start", "--no-block", "ssh.service"]),
            None,
        )?;
        Ok(Some("enabled and started ssh.service".into()))
    }

    /// Writes /etc/cairn/image-trust.json from `[containers]` when it
    /// differs. Without a `[containers]` table the file is left alone: it is
    /// then managed by hand (`cairn-run trust add`).
    pub fn image_trust(&self, containers: Option<&Containers>) -> Result<Option<String>> {
        let Some(c) = containers else {
            return Ok(None);
        };
        let path = self.root.join(paths::IMAGE_TRUST);
        let want = c.policy();
        // An unreadable or invalid file is replaced.
        if oci_image::TrustPolicy::load(&path).is_ok_and(|have| have == want) && path.exists() {
            return Ok(None);
        }
        want.save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(format!(
            "wrote {} image trust rule(s) to /{}",
            want.list().len(),
            paths::IMAGE_TRUST
        )))
    }

    /// Saves `[[apps]]` and `[containers]` on ROOT for cairn-app-generator
    /// (mode 0600: app environments may hold secrets). Returns whether it
    /// changed.
    pub fn save_apps(&self, cfg: &HostConfig) -> Result<bool> {
        let path = self.root.join(units::SAVED_CONFIG);
        let text = cfg.apps_toml();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let dir = path.parent().context("no parent directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Self::write_file(&path, &text, 0o600, None)?;
        Ok(true)
    }

    /// Saves the apps part of `cfg` (when the config was valid: `None` keeps
    /// the last valid apps running) and compares what the generator would
    /// make of the saved copy with what it recorded this boot.
    pub fn apps_plan(&self, cfg: Option<&HostConfig>) -> Result<units::Plan> {
        if let Some(c) = cfg {
            self.save_apps(c)?;
        }
        let saved = self.root.join(units::SAVED_CONFIG);
        let wanted = match std::fs::read_to_string(&saved) {
            Ok(t) => units::record_of(
                &HostConfig::parse(&t, &saved.display().to_string())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => units::Record::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", saved.display())),
        };
        let recorded = std::fs::read_to_string(self.root.join(units::GENERATED)).ok();
        Ok(units::plan(recorded.as_deref(), &wanted))
    }

    /// Brings the app units in line with the config: a daemon-reload
    /// re-runs cairn-app-generator, then removed apps stop, changed ones
    /// restart and cairn-apps.target starts the rest. `--no-block`: we run
    /// early in the boot transaction, waiting would deadlock.
    pub fn apps(&self, cfg: Option<&HostConfig>) -> Result<Vec<String>> {
        let plan = self.apps_plan(cfg)?;
        let mut done = Vec::new();
        if !self.live || plan == units::Plan::default() {
            return Ok(done);
        }
        if plan.reload {
            self.run(Command::new("systemctl").arg("daemon-reload"), None)?;
            done.push("regenerated the app units (systemctl daemon-reload)".to_string());
        }
        if !plan.stop.is_empty() {
            self.run(
                Command::new("systemctl")
                    .args(["stop", "--no-block"])
                    .args(&plan.stop),
                None,
            )?;
            done.push(format!("stopping removed apps: {}", plan.stop.join(" ")));
        }
        if !plan.restart.is_empty() {
            self.run(
                Command::new("systemctl")
                    .args(["try-restart", "--no-block"])
                    .args(&plan.restart),
                None,
            )?;
            done.push(format!(
                "restarting changed apps: {}",
                plan.restart.join(" ")
            ));
        }
        if plan.start_target {
            self.run(
                Command::new("systemctl").args(["start", "--no-block", units::TARGET]),
                None,
            )?;
            done.push(format!("starting {}", units::TARGET));
        }
        Ok(done)
    }

    /// Applies everything; a failing part does not stop the others. Returns
    /// the changes made and the errors. Only for a valid config: an invalid
    /// one changes nothing (what the last valid one set stays).
    pub fn apply(&self, cfg: &HostConfig) -> (Vec<String>, Vec<String>) {
        let mut done = Vec::new();
        let mut errors = Vec::new();
        if let Some(h) = &cfg.hostname {
            match self.hostname(h) {
                Ok(true) => done.push(format!("host name set to {h}")),
                Ok(false) => {}
                Err(e) => errors.push(format!("hostname: {e:#}")),
            }
        }
        // Before the users: their `groups` may name them.
        let (d, e) = self.groups(&cfg.groups);
        done.extend(d);
        errors.extend(e);
        for u in &cfg.users {
            match self.user(u) {
                Ok(c) => done.extend(c),
                Err(e) => errors.push(format!("user {}: {e:#}", u.name)),
            }
        }
        match self.ssh(cfg.wants_ssh()) {
            Ok(c) => done.extend(c),
            Err(e) => errors.push(format!("ssh: {e:#}")),
        }
        match self.image_trust(cfg.containers.as_ref()) {
            Ok(c) => done.extend(c),
            Err(e) => errors.push(format!("containers: {e:#}")),
        }
        match Owned::load(&self.root) {
            Ok((mut owned, warning)) => {
                errors.extend(warning);
                for (d, e) in [
                    self.memberships(cfg, &mut owned),
                    self.managed(cfg, &mut owned),
                ] {
                    done.extend(d);
                    errors.extend(e);
                }
            }
            Err(e) => errors.push(format!(
                "{e}; groups, network, files, units, sysctl, kernel_modules, timezone and sudo not applied"
            )),
        }
        (done, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_shadow_lookups() {
        let pw = "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\nbad:x:z:0::/:/bin/sh\n";
        assert_eq!(
            parse_passwd(pw, "ops"),
            Some(PwEntry {
                name: "ops".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/ops".into()
            })
        );
        assert_eq!(parse_passwd(pw, "op"), None);
        assert_eq!(parse_passwd(pw, "bad"), None);
        let sh = "root:*:19000:0:99999:7:::\nops:$6$x$y:1::::::\n";
        assert_eq!(shadow_hash(sh, "root").as_deref(), Some("*"));
        assert_eq!(shadow_hash(sh, "ops").as_deref(), Some("$6$x$y"));
        assert_eq!(shadow_hash(sh, "nobody"), None);
    }

    #[test]
    fn hosts_line_is_replaced_or_added() {
        let h = "127.0.0.1\tlocalhost\n127.0.1.1\tcairn\n::1\tlocalhost\n";
        assert_eq!(
            hosts_with(h, "web1"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n::1\tlocalhost\n"
        );
        assert_eq!(hosts_with("", "web1"), "127.0.1.1\tweb1\n");
        assert_eq!(hosts_with(&hosts_with(h, "x"), "x"), hosts_with(h, "x"));
    }

    fn scratch() -> Result<(tempfile::TempDir, System, u32, u32)> {
        let d = tempfile::tempdir()?;
        let root = d.path().to_path_buf();
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::create_dir_all(root.join("home/me"))?;
        // Our own uid/gid, so the chown works without privileges.
        let m = std::fs::metadata(&root)?;
        let (uid, gid) = (m.uid(), m.gid());
        std::fs::write(
            root.join("etc/passwd"),
            format!("me:x:{uid}:{gid}::/home/me:/bin/bash\n"),
        )?;
        std::fs::write(root.join("etc/hosts"), "127.0.1.1 cairn\n")?;
        Ok((d, System { root, live: false }, uid, gid))
    }

    #[test]
    fn hostname_is_idempotent() -> Result<()> {
        let (_d, sys, _, _) = scratch()?;
        assert!(sys.hostname("web1")?);
        assert_eq!(
            std::fs::read_to_string(sys.root.join("etc/hostname"))?,
            "web1\n"
        );
        assert!(!sys.hostname("web1")?);
        Ok(())
    }

    #[test]
    fn authorized_keys_written_once_then_removed() -> Result<()> {
        let (_d, sys, uid, gid) = scratch()?;
        let mut u = User {
            name: "me".into(),
            password_hash: None,
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA c".into()],
            groups: Vec::new(),
            sudo: false,
        };
        assert!(sys.authorized_keys(&u)?.is_some());
        let f = sys.root.join("home/me/.ssh/authorized_keys");
        let m = std::fs::metadata(&f)?;
        assert_eq!((m.mode() & 0o777, m.uid(), m.gid()), (0o600, uid, gid));
        let dm = std::fs::metadata(sys.root.join("home/me/.ssh"))?;
        assert_eq!(dm.mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_to_string(&f)?,
            format!("{MANAGED_HEADER}\nssh-ed25519 AAAA c\n")
        );
        // Unchanged: no rewrite.
        assert_eq!(sys.authorized_keys(&u)?, None);
        u.ssh_authorized_keys.clear();
        assert!(sys.authorized_keys(&u)?.is_some());
        assert!(!f.exists());
        // A hand-made file is not ours to remove.
        std::fs::write(&f, "ssh-rsa BBBB mine\n")?;
        assert_eq!(sys.authorized_keys(&u)?, None);
        assert!(f.exists());
        Ok(())
    }

    #[test]
    fn apply_collects_errors_and_continues() -> Result<()> {
        let (_d, sys, _, _) = scratch()?;
        let cfg = HostConfig::parse(
            "hostname = \"h1\"\n[[users]]\nname = \"ghost\"\n[[users]]\nname = \"me\"\nssh_authorized_keys = [\"ssh-ed25519 AAAA\"]\n",
            "t",
        )?;
        let (done, errors) = sys.apply(&cfg);
        // "ghost" would need useradd, which this scratch system does not run.
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("user ghost: not live"), "{errors:?}");
        assert_eq!(done, ["host name set to h1", "wrote 1 SSH key(s) for me"]);
        Ok(())
    }

    #[test]
    fn image_trust_is_written_from_containers_only() -> Result<()> {
        let (_d, sys, _, _) = scratch()?;
        let path = sys.root.join(paths::IMAGE_TRUST);
        // No [containers]: the file is not ours.
        assert_eq!(sys.image_trust(None)?, None);
        assert!(!path.exists());
        let cfg = HostConfig::parse(
            "[containers]\n[[containers.trust]]\nprefix = \"10.0.2.2:5000/test/\"\naccept_anything = true\n\
             [[containers.trust]]\nprefix = \"ghcr.io/acme\"\nkey = \"cairn-ed25519-public 02e55ad6cd7c1f0348df67ba845276cb1519a8882d8c7a9ef0f66836d4a89224\"\n",
            "t",
        )?;
        let c = cfg.containers.as_ref();
        assert_eq!(
            sys.image_trust(c)?.as_deref(),
            Some("wrote 2 image trust rule(s) to /etc/cairn/image-trust.json")
        );
        // In the format oci-image reads, with the same decisions.
        let loaded = oci_image::TrustPolicy::load(&path)?;
        assert_eq!(Some(&loaded), c.map(Containers::policy).as_ref());
        assert!(matches!(
            loaded.decide("10.0.2.2:5000/test/web"),
            oci_image::Decision::AcceptAnything { .. }
        ));
        assert_eq!(sys.image_trust(c)?, None, "unchanged: not rewritten");
        // A hand edit is put back; an empty [containers] empties the policy.
        std::fs::write(&path, "junk")?;
        assert!(sys.image_trust(c)?.is_some());
        assert_eq!(oci_image::TrustPolicy::load(&path)?, loaded);
        assert!(sys.image_trust(Some(&Containers::default()))?.is_some());
        assert!(oci_image::TrustPolicy::load(&path)?.list().is_empty());
        Ok(())
    }

    #[test]
    fn apps_copy_and_reload_decision() -> Result<()> {
        let (_d, sys, _, _) = scratch()?;
        let saved = sys.root.join(units::SAVED_CONFIG);
        let record = sys.root.join(units::GENERATED);
        std::fs::create_dir_all(record.parent().context("parent")?)?;
        let v1 = HostConfig::parse(
            "[[users]]\nname = \"me\"\npassword_hash = \"$6$x$y\"\n[[apps]]\nname = \"web\"\nimage = \"nginx:1\"\n",
            "t",
        )?;
        // First boot: the generator found no saved copy and recorded nothing.
        std::fs::write(&record, units::format_record(&units::Record::new()))?;
        let p = sys.apps_plan(Some(&v1))?;
        assert_eq!(
            p,
            units::Plan {
                reload: true,
                start_target: true,
                ..units::Plan::default()
            }
        );
        let text = std::fs::read_to_string(&saved)?;
        assert!(text.contains("nginx:1") && !text.contains("$6$"), "{text}");
        assert_eq!(std::fs::metadata(&saved)?.mode() & 0o777, 0o600);
        // The generator (after the reload) records what the copy gives.
        std::fs::write(&record, units::format_record(&units::record_of(&v1)))?;
        assert_eq!(sys.apps_plan(Some(&v1))?, units::Plan::default());
        assert!(!sys.save_apps(&v1)?, "unchanged copy is not rewritten");
        // An invalid config (None) keeps the last valid apps: nothing to do.
        assert_eq!(sys.apps_plan(None)?, units::Plan::default());
        assert_eq!(std::fs::read_to_string(&saved)?, text);
        // A changed image restarts the app.
        let v2 = HostConfig::parse("[[apps]]\nname = \"web\"\nimage = \"nginx:2\"\n", "t")?;
        let p = sys.apps_plan(Some(&v2))?;
        assert_eq!(p.restart, ["cairn-app@web.service"]);
        assert!(p.reload && p.stop.is_empty());
        // Not live: nothing is run.
        assert!(sys.apps(Some(&v2))?.is_empty());
        Ok(())
    }
}
