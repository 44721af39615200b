//! Image config + app settings → OCI runtime spec (`config.json`).
//!
//! Everything here is pure: the caller reads files (the image's /etc/passwd,
//! the host's cgroup layout) and passes their contents in.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::seccomp_profile;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("invalid --env {0:?}: expected KEY=VALUE with a non-empty KEY")]
    Env(String),
    #[error(
        "invalid --volume {0:?}: expected /host/path:/container/path[:ro|:rw] with absolute paths"
    )]
    Volume(String),
    #[error("invalid --publish {0:?}: expected HOSTPORT:CONTAINERPORT[/tcp|/udp]")]
    Publish(String),
    #[error(
        "--publish forwards host ports into the app's private network; with --net {0} {hint}",
        hint = publish_net_hint(.0)
    )]
    PublishNet(&'static str),
    #[error("host port {0}/{1} is published twice: give each --publish its own host port")]
    PublishTwice(u16, &'static str),
    #[error(
        "invalid --memory {0:?}: expected bytes with an optional k, m or g suffix (at least 6m)"
    )]
    Memory(String),
    #[error("invalid --cpus {0:?}: expected a positive number such as 0.5 or 2")]
    Cpus(String),
    #[error("invalid --net {0:?}: expected host, none or private")]
    Net(String),
    #[error(
        "user {0:?} not found in the image's /etc/passwd; use a numeric uid[:gid] or add the user to the image"
    )]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group; use a numeric gid")]
    UnknownGroup(String),
    #[error("the image has no entrypoint or cmd and no command was given after `--`")]
    NoCommand,
    #[error("generated spec does not parse: {0}")]
    Invalid(String),
    #[error("invalid --workdir {0:?}: it must be an absolute path inside the container")]
    Cwd(String),
    #[error("the container's config.json has no process to base the exec on")]
    NoProcess,
}

fn publish_net_hint(net: &str) -> &'static str {
    if net == "host" {
        "the app binds host ports itself: remove --publish"
    } else {
        "nothing can reach the app: use --net private"
    }
}

/// The parts of an image config that shape the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetMode {
    Host,
    None,
    /// A new network namespace with loopback only, like `none`, plus the
    /// `--publish` port forwards (see `portfwd`).
    #[default]
    Private,
}

impl std::str::FromStr for NetMode {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            "private" => Ok(Self::Private),
            _ => Err(SpecError::Net(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub host_port: u16,
    pub container_port: u16,
    pub udp: bool,
}

impl Publish {
    pub fn proto(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.proto()
        )
    }
}

/// What `cairn-run run --name` was asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppSettings {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub volumes: Vec<Volume>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub net: NetMode,
    pub publish: Vec<Publish>,
    pub read_write: bool,
    pub hostname: Option<String>,
}

/// Host facts the spec depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct HostContext {
    pub rootfs: PathBuf,
    /// Host directory holding the notify relay socket, mounted at
    /// [`NOTIFY_DIR`] in the container.
    pub notify_dir: Option<PathBuf>,
    pub cgroups_path: String,
    /// Rust `target_arch` of the host.
    pub arch: String,
    /// Whether device rules can be enforced (cgroup v1, or v2 with the eBPF
    /// device controller); see `cgroup_policy`.
    pub device_rules_enforced: bool,
}

/// Where the notify relay socket appears inside the container.
pub const NOTIFY_DIR: &str = "/run/cairn-notify";
pub const NOTIFY_SOCKET_NAME: &str = "notify.sock";

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The kernel's CFS period; --cpus is a quota relative to it.
const CPU_PERIOD: u64 = 100_000;

pub fn parse_env(s: &str) -> Result<String, SpecError> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains('\0') => Ok(s.to_string()),
        _ => Err(SpecError::Env(s.to_string())),
    }
}

pub fn parse_volume(s: &str) -> Result<Volume, SpecError> {
    let err = || SpecError::Volume(s.to_string());
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => return Err(err()),
    };
    let absolute_clean =
        |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.contains('\0');
    if !absolute_clean(host) || !absolute_clean(ctr) || ctr == "/" {
        return Err(err());
    }
    Ok(Volume {
        host: PathBuf::from(host),
        container: ctr.to_string(),
        read_only,
    })
}

pub fn parse_publish(s: &str) -> Result<Publish, SpecError> {
    let err = || SpecError::Publish(s.to_string());
    let (ports, udp) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, false),
        Some((p, "udp")) => (p, true),
        Some(_) => return Err(err()),
        None => (s, false),
    };
    let (h, c) = ports.split_once(':').ok_or_else(err)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(err);
    Ok(Publish {
        host_port: port(h)?,
        container_port: port(c)?,
        udp,
    })
}

/// Port forwards only make sense into the app's own network namespace, and
/// a host port can be forwarded once per protocol (as the host config's
/// `ports` are checked).
pub fn check_publish(net: NetMode, publish: &[Publish]) -> Result<(), SpecError> {
    match (net, publish.is_empty()) {
        (_, true) | (NetMode::Private, false) => {}
        (NetMode::Host, false) => return Err(SpecError::PublishNet("host")),
        (NetMode::None, false) => return Err(SpecError::PublishNet("none")),
    }
    for (i, p) in publish.iter().enumerate() {
        if publish[..i]
            .iter()
            .any(|o| o.host_port == p.host_port && o.udp == p.udp)
        {
            return Err(SpecError::PublishTwice(p.host_port, p.proto()));
        }
    }
    Ok(())
}

/// Bytes with an optional binary suffix; below 6 MiB the container's own
/// runtime setup cannot fit, so such limits are refused up front.
pub fn parse_memory(s: &str) -> Result<i64, SpecError> {
    let err = || SpecError::Memory(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1i64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    let n: i64 = num.parse().map_err(|_| err())?;
    let bytes = n.checked_mul(mult).ok_or_else(err)?;
    if bytes < 6 << 20 {
        return Err(err());
    }
    Ok(bytes)
}

pub fn parse_cpus(s: &str) -> Result<f64, SpecError> {
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 && c <= 4096.0 => Ok(c),
        _ => Err(SpecError::Cpus(s.to_string())),
    }
}

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user[:group]` (names or numbers) against the image's
/// /etc/passwd and /etc/group contents, like Docker does.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, SpecError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() >= 4
                && (f[0] == user
                    || user.parse::<u32>().ok().map(|u| u.to_string()) == Some(f[2].to_string()))
        });
    let (uid, name, primary_gid) = match (user.parse::<u32>(), &passwd_entry) {
        (Ok(uid), Some(f)) => (uid, Some(f[0]), f[3].parse::<u32>().ok()),
        (Ok(uid), None) => (uid, None, None),
        (Err(_), Some(f)) => {
            let uid = f[2]
                .parse::<u32>()
                .map_err(|_| SpecError::UnknownUser(user.to_string()))?;
            (uid, Some(f[0]), f[3].parse::<u32>().ok())
        }
        (Err(_), None) => return Err(SpecError::UnknownUser(user.to_string())),
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    let mut additional_gids: Vec<u32> = match (grp, name) {
        (None, Some(name)) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse::<u32>().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Docker's rules: `-- cmd` replaces the image's cmd, the entrypoint stays.
pub fn process_args(image: &ImageDefaults, command: &[String]) -> Result<Vec<String>, SpecError> {
    let tail = if command.is_empty() {
        &image.cmd
    } else {
        command
    };
    let args: Vec<String> = image.entrypoint.iter().chain(tail).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Image env, then the app's env; a later KEY replaces an earlier one in place.
pub fn merge_env(layers: &[&[String]]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for var in layers.iter().flat_map(|l| l.iter()) {
        let key = var.split_once('=').map_or(var.as_str(), |(k, _)| k);
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = var.clone(),
            None => out.push(var.clone()),
        }
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

fn base_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// The default device rules: deny everything, then the devices every
/// container gets (null, zero, full, random, urandom, tty, ptmx, pts).
fn default_device_rules() -> Value {
    let allow = |typ: &str, major: i64, minor: Option<i64>| {
        let mut r = json!({"allow": true, "type": typ, "major": major, "access": "rwm"});
        if let Some(m) = minor {
            r["minor"] = json!(m);
        }
        r
    };
    json!([
        {"allow": false, "access": "rwm"},
        allow("c", 1, Some(3)),
        allow("c", 1, Some(5)),
        allow("c", 1, Some(7)),
        allow("c", 1, Some(8)),
        allow("c", 1, Some(9)),
        allow("c", 5, Some(0)),
        allow("c", 5, Some(2)),
        allow("c", 136, None),
    ])
}

/// Builds the complete spec of an app container.
pub fn app_spec(
    image: &ImageDefaults,
    app: &AppSettings,
    user: &ResolvedUser,
    host: &HostContext,
) -> Result<Spec, SpecError> {
    let args = process_args(image, &app.command)?;
    let mut extra_env = app.env.clone();
    if host.notify_dir.is_some() {
        extra_env.push(format!("NOTIFY_SOCKET={NOTIFY_DIR}/{NOTIFY_SOCKET_NAME}"));
    }
    let env = merge_env(&[&image.env, &extra_env]);
    let cwd = app
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty());

    let mut caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    if !host.device_rules_enforced {
        // Without an enforced device cgroup, CAP_MKNOD would let the app
        // create and open any host block device.
        caps.retain(|c| *c != "CAP_MKNOD");
    }

    let mut mounts = base_mounts();
    for v in &app.volumes {
        let mut opts = vec!["rbind", "nosuid", "nodev"];
        opts.push(if v.read_only { "ro" } else { "rw" });
        mounts.push(json!({"destination": v.container, "type": "bind",
                           "source": v.host, "options": opts}));
    }
    if let Some(dir) = &host.notify_dir {
        mounts.push(
            json!({"destination": NOTIFY_DIR, "type": "bind", "source": dir,
                           "options": ["bind", "nosuid", "nodev", "noexec"]}),
        );
    }
    if app.net == NetMode::Host {
        // Name resolution follows the host when sharing its network.
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f,
                                   "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}));
            }
        }
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if app.net != NetMode::Host {
        namespaces.push(json!({"type": "network"}));
    }

    let mut resources = json!({});
    if host.device_rules_enforced {
        resources["devices"] = default_device_rules();
    }
    if let Some(m) = app.memory {
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(c) = app.cpus {
        resources["cpu"] =
            json!({"quota": (c * CPU_PERIOD as f64).round() as i64, "period": CPU_PERIOD});
    }
    if let Some(p) = app.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let hostname = app.hostname.clone().unwrap_or_else(|| app.name.clone());
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    let caps_json = json!(caps);
    // No rlimits: the app inherits cairn-run's, i.e. the unit's Limit*=
    // settings, so they are managed where systemd users expect them.
    let value = json!({
        "ociVersion": "1.0.2",
        "root": {"path": host.rootfs, "readonly": !app.read_write},
        "hostname": hostname,
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": cwd.unwrap_or_else(|| "/".to_string()),
            "capabilities": {
                "bounding": caps_json, "effective": caps_json, "permitted": caps_json,
            },
            "noNewPrivileges": true,
        },
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": host.cgroups_path,
            "resources": resources,
            "seccomp": seccomp_profile::default_profile(&host.arch),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    serde_json::from_value(value).map_err(|e| SpecError::Invalid(e.to_string()))
}

/// The process `exec` starts from a command line: the container's own
/// (user, capabilities, rlimits, no_new_privileges, AppArmor), with the
/// command, extra env (KEY=VALUE, already checked by [`parse_env`]), working
/// directory and terminal asked for, as `runc exec` and `podman exec` do.
pub fn exec_process(
    container_process: Option<&Value>,
    args: &[String],
    env: &[String],
    cwd: Option<&Path>,
    terminal: bool,
) -> Result<Value, SpecError> {
    let mut p = container_process
        .filter(|p| p.is_object())
        .cloned()
        .ok_or(SpecError::NoProcess)?;
    let mut merged: Vec<String> = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for kv in env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        merged.retain(|old| old.split_once('=').map_or(old.as_str(), |(k, _)| k) != key);
        merged.push(kv.clone());
    }
    p["args"] = json!(args);
    p["env"] = json!(merged);
    p["terminal"] = json!(terminal);
    if let Some(c) = cwd {
        let text = c.to_string_lossy();
        if !c.is_absolute() || text.contains('\0') {
            return Err(SpecError::Cwd(text.into_owned()));
        }
        p["cwd"] = json!(text);
    }
    // The app's console size is not the caller's terminal's.
    if let Some(o) = p.as_object_mut() {
        o.remove("consoleSize");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn env_table() {
        for (input, ok) in [
            ("A=1", true),
            ("A=", true),
            ("A=b=c", true),
            ("=1", false),
            ("A", false),
        ] {
            assert_eq!(parse_env(input).is_ok(), ok, "{input}");
        }
    }

    #[test]
    fn volume_table() {
        let v = |h: &str, c: &str, ro| {
            Ok(Volume {
                host: h.into(),
                container: c.into(),
                read_only: ro,
            })
        };
        for (input, want) in [
            ("/a:/b", v("/a", "/b", false)),
            ("/a:/b:ro", v("/a", "/b", true)),
            ("/a:/b:rw", v("/a", "/b", false)),
            ("a:/b", Err(SpecError::Volume("a:/b".into()))),
            ("/a:b", Err(SpecError::Volume("/a:b".into()))),
            ("/a:/", Err(SpecError::Volume("/a:/".into()))),
            ("/a:/b/../c", Err(SpecError::Volume("/a:/b/../c".into()))),
            ("/a:/b:x", Err(SpecError::Volume("/a:/b:x".into()))),
            ("/a", Err(SpecError::Volume("/a".into()))),
        ] {
            assert_eq!(parse_volume(input), want, "{input}");
        }
    }

    #[test]
    fn publish_table() {
        for (input, want) in [
            ("8080:80", Some((8080, 80, false))),
            ("8080:80/tcp", Some((8080, 80, false))),
            ("53:53/udp", Some((53, 53, true))),
            ("0:80", None),
            ("80", None),
            ("80:80/sctp", None),
            ("70000:80", None),
        ] {
            let got = parse_publish(input)
                .ok()
                .map(|p| (p.host_port, p.container_port, p.udp));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn publish_check_table() {
        let p = |s: &str| parse_publish(s).unwrap();
        for (net, list, want) in [
            (NetMode::Private, vec![], Ok(())),
            (NetMode::Host, vec![], Ok(())),
            (NetMode::None, vec![], Ok(())),
            (
                NetMode::Private,
                vec![p("8080:80"), p("8080:80/udp")],
                Ok(()),
            ),
            (NetMode::Private, vec![p("8080:80"), p("8081:80")], Ok(())),
            (
                NetMode::Private,
                vec![p("53:53/udp"), p("8080:80"), p("53:5353/udp")],
                Err(SpecError::PublishTwice(53, "udp")),
            ),
            (
                NetMode::Host,
                vec![p("8080:80")],
                Err(SpecError::PublishNet("host")),
            ),
            (
                NetMode::None,
                vec![p("8080:80")],
                Err(SpecError::PublishNet("none")),
            ),
        ] {
            assert_eq!(check_publish(net, &list), want, "{net:?} {list:?}");
        }
        let msg = |e: SpecError| e.to_string();
        assert!(
            msg(SpecError::PublishNet("host"))
                .contains("--net host the app binds host ports itself")
        );
        assert!(msg(SpecError::PublishNet("none")).contains("use --net private"));
        assert_eq!(p("53:5353/udp").to_string(), "53:5353/udp");
        assert_eq!(p("8080:80").to_string(), "8080:80/tcp");
    }

    #[test]
    fn memory_table() {
        for (input, want) in [
            ("64m", Some(64 << 20)),
            ("64M", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("1gb", Some(1 << 30)),
            ("8192k", Some(8 << 20)),
            ("10485760", Some(10 << 20)),
            ("1m", None),
            ("abc", None),
            ("-5m", None),
            ("99999999999g", None),
        ] {
            assert_eq!(parse_memory(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn cpus_table() {
        for (input, ok) in [
            ("0.5", true),
            ("2", true),
            ("0", false),
            ("-1", false),
            ("nan", false),
            ("x", false),
        ] {
            assert_eq!(parse_cpus(input).is_ok(), ok, "{input}");
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\naudio:x:29:app,www\nvideo:x:44:app\n";

    #[test]
    fn user_table() {
        let r = |uid, gid, add: &[u32]| {
            Ok(ResolvedUser {
                uid,
                gid,
                additional_gids: add.to_vec(),
            })
        };
        for (input, want) in [
            ("root", r(0, 0, &[])),
            ("app", r(1000, 1000, &[29, 44])),
            ("www", r(33, 33, &[29])),
            ("1000", r(1000, 1000, &[29, 44])),
            ("4242", r(4242, 0, &[])),
            ("4242:4243", r(4242, 4243, &[])),
            ("app:video", r(1000, 44, &[])),
            ("nobody", Err(SpecError::UnknownUser("nobody".into()))),
            (
                "app:nogroup",
                Err(SpecError::UnknownGroup("nogroup".into())),
            ),
        ] {
            assert_eq!(resolve_user(input, PASSWD, GROUP), want, "{input}");
        }
    }

    #[test]
    fn args_table() {
        let img = |e: &[&str], c: &[&str]| ImageDefaults {
            entrypoint: s(e),
            cmd: s(c),
            ..Default::default()
        };
        for (image, command, want) in [
            (img(&[], &["/bin/sh"]), vec![], Ok(s(&["/bin/sh"]))),
            (img(&["/ep"], &["-x"]), vec![], Ok(s(&["/ep", "-x"]))),
            (img(&["/ep"], &["-x"]), s(&["-y"]), Ok(s(&["/ep", "-y"]))),
            (
                img(&[], &["/bin/sh"]),
                s(&["/bin/true"]),
                Ok(s(&["/bin/true"])),
            ),
            (img(&[], &[]), vec![], Err(SpecError::NoCommand)),
        ] {
            assert_eq!(process_args(&image, &command), want);
        }
    }

    #[test]
    fn env_merge_table() {
        for (image, app, want) in [
            (
                s(&["PATH=/x", "A=1"]),
                s(&["A=2", "B=3"]),
                s(&["PATH=/x", "A=2", "B=3"]),
            ),
            (s(&["A=1"]), s(&[]), s(&[DEFAULT_PATH, "A=1"])),
            (s(&[]), s(&["PATH=/y"]), s(&["PATH=/y"])),
        ] {
            assert_eq!(merge_env(&[&image, &app]), want);
        }
    }

    fn host(enforced: bool) -> HostContext {
        HostContext {
            rootfs: "/run/cairn/containers/web/rootfs".into(),
            notify_dir: Some("/run/cairn/containers/web/notify".into()),
            cgroups_path: "/cairn/web".into(),
            arch: "x86_64".into(),
            device_rules_enforced: enforced,
        }
    }

    fn app() -> AppSettings {
        AppSettings {
            name: "web".into(),
            env: s(&["MODE=prod"]),
            volumes: vec![parse_volume("/srv/data:/data:ro").unwrap()],
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids_limit: Some(100),
            ..Default::default()
        }
    }

    fn user() -> ResolvedUser {
        ResolvedUser {
            uid: 33,
            gid: 33,
            additional_gids: vec![29],
        }
    }

    #[test]
    fn app_spec_has_the_security_defaults() {
        let image = ImageDefaults {
            cmd: s(&["/bin/httpd", "-f"]),
            env: s(&["PATH=/bin"]),
            ..Default::default()
        };
        let spec = app_spec(&image, &app(), &user(), &host(true)).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["hostname"], "web");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["args"], json!(["/bin/httpd", "-f"]));
        assert_eq!(v["process"]["user"]["uid"], 33);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([29]));
        let env = v["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("MODE=prod")));
        assert!(env.contains(&json!("NOTIFY_SOCKET=/run/cairn-notify/notify.sock")));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            v["linux"]["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            v["linux"]["readonlyPaths"].as_array().unwrap().len(),
            READONLY_PATHS.len()
        );
        let mounts = v["mounts"].as_array().unwrap();
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["source"], "/srv/data");
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(mounts.iter().any(|m| m["destination"] == NOTIFY_DIR));
    }

    #[test]
    fn app_spec_variants_table() {
        let image = ImageDefaults {
            cmd: s(&["/bin/sh"]),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        type Check = fn(&Value);
        let cases: Vec<(&str, AppSettings, bool, Check)> = vec![
            (
                "host net has no netns",
                AppSettings {
                    net: NetMode::Host,
                    ..app()
                },
                true,
                |v| {
                    assert!(
                        !v["linux"]["namespaces"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["type"] == "network")
                    );
                },
            ),
            (
                "none net has a netns",
                AppSettings {
                    net: NetMode::None,
                    ..app()
                },
                true,
                |v| {
                    assert!(
                        v["linux"]["namespaces"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["type"] == "network")
                    );
                },
            ),
            (
                "read-write root",
                AppSettings {
                    read_write: true,
                    ..app()
                },
                true,
                |v| {
                    assert_eq!(v["root"]["readonly"], false);
                },
            ),
            (
                "hostname and workdir",
                AppSettings {
                    hostname: Some("h1".into()),
                    workdir: Some("/w".into()),
                    ..app()
                },
                true,
                |v| {
                    assert_eq!(v["hostname"], "h1");
                    assert_eq!(v["process"]["cwd"], "/w");
                },
            ),
            ("image workdir", app(), true, |v| {
                assert_eq!(v["process"]["cwd"], "/srv")
            }),
            (
                "no limits",
                AppSettings {
                    memory: None,
                    cpus: None,
                    pids_limit: None,
                    ..app()
                },
                true,
                |v| {
                    assert!(v["linux"]["resources"].get("memory").is_none());
                    assert!(v["linux"]["resources"].get("pids").is_none());
                },
            ),
            (
                "unenforceable devices: no rules and no CAP_MKNOD",
                app(),
                false,
                |v| {
                    assert!(v["linux"]["resources"].get("devices").is_none());
                    assert!(
                        !v["process"]["capabilities"]["bounding"]
                            .as_array()
                            .unwrap()
                            .contains(&json!("CAP_MKNOD"))
                    );
                },
            ),
        ];
        for (name, a, enforced, check) in cases {
            let spec = app_spec(&image, &a, &user(), &host(enforced))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check(&serde_json::to_value(&spec).unwrap());
        }
    }

    #[test]
    fn exec_process_keeps_the_apps_identity_and_takes_the_command() {
        let app = json!({
            "args": ["/app"], "env": ["PATH=/bin", "A=1"], "cwd": "/srv",
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": true, "terminal": false,
            "consoleSize": {"height": 1, "width": 1}
        });
        let p = exec_process(Some(&app), &s(&["sh"]), &s(&["A=2", "B=3"]), None, true).unwrap();
        assert_eq!(p["args"], json!(["sh"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["user"], app["user"]);
        assert_eq!(p["capabilities"], app["capabilities"]);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["terminal"], true);
        assert!(p.get("consoleSize").is_none());

        let p = exec_process(Some(&app), &s(&["ls"]), &[], Some(Path::new("/tmp")), false);
        assert_eq!(p.unwrap()["cwd"], "/tmp");
        for (cwd, want) in [("tmp", Err(SpecError::Cwd("tmp".into()))), ("/", Ok(()))] {
            let got = exec_process(Some(&app), &s(&["ls"]), &[], Some(Path::new(cwd)), false);
            assert_eq!(got.map(|_| ()), want, "{cwd}");
        }
        assert_eq!(
            exec_process(None, &s(&["ls"]), &[], None, false),
            Err(SpecError::NoProcess)
        );
    }
}
