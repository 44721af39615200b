//! Image config + app settings → OCI runtime spec (`config.json`).
//!
//! Everything here is pure: the caller reads files (the image's /etc/passwd,
//! the host's cgroup layout) and passes their contents in. The settings and
//! their grammar are app-spec's ([`AppSettings`]), shared with the host
//! config.

use std::path::{Path, PathBuf};

/// The port forwarder (`portfwd`) takes app-spec's type.
pub use ::app_spec::Publish;
use ::app_spec::{AppSettings, Network};
use libcontainer::oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::seccomp_profile;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
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

/// The parts of an image config that shape the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
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

/// `--publish` values for the port forwarder's tests.
#[cfg(test)]
pub(crate) fn parse_publish(s: &str) -> Result<Publish, ::app_spec::Error> {
    s.parse()
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
    let mut extra_env: Vec<String> = app.env.iter().map(ToString::to_string).collect();
    if host.notify_dir.is_some() {
        extra_env.push(format!("NOTIFY_SOCKET={NOTIFY_DIR}/{NOTIFY_SOCKET_NAME}"));
    }
    let env = merge_env(&[&image.env, &extra_env]);
    let cwd = app
        .workdir
        .as_ref()
        .map(ToString::to_string)
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
        mounts.push(json!({"destination": v.target.as_str(), "type": "bind",
                           "source": v.host.as_str(), "options": opts}));
    }
    if let Some(dir) = &host.notify_dir {
        mounts.push(
            json!({"destination": NOTIFY_DIR, "type": "bind", "source": dir,
                           "options": ["bind", "nosuid", "nodev", "noexec"]}),
        );
    }
    if app.network == Network::Host {
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
    if app.network != Network::Host {
        namespaces.push(json!({"type": "network"}));
    }

    let mut resources = json!({});
    if host.device_rules_enforced {
        resources["devices"] = default_device_rules();
    }
    if let Some(m) = app.memory {
        resources["memory"] = json!({"limit": m.bytes(), "swap": m.bytes()});
    }
    if let Some(c) = app.cpus {
        resources["cpu"] = json!({"quota": (c.get() * CPU_PERIOD as f64).round() as i64,
                                  "period": CPU_PERIOD});
    }
    if let Some(p) = app.pids {
        resources["pids"] = json!({"limit": p.get()});
    }

    let hostname = app.hostname.clone().unwrap_or_else(|| app.name.to_string());
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
/// command, extra env (KEY=VALUE, already checked by app-spec's `EnvVar`), working
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
            env: vec!["MODE=prod".parse().unwrap()],
            volumes: vec!["/srv/data:/data:ro".parse().unwrap()],
            memory: Some("64m".parse().unwrap()),
            cpus: Some("1.5".parse().unwrap()),
            pids: Some("100".parse().unwrap()),
            ..AppSettings::new("web".parse().unwrap(), "img")
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
                    network: Network::Host,
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
                    network: Network::None,
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
                    workdir: Some("/w".parse().unwrap()),
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
                    pids: None,
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
